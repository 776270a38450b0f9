//! Shutdown with PgBouncer 1.23+ semantics: immediate (SIGQUIT, SHUTDOWN), WAIT_FOR_SERVERS
//! (SIGINT: clients starting a transaction or waiting for a server get `server shutting
//! down`, running transactions finish, then exit) and WAIT_FOR_CLIENTS (SIGTERM: keep serving
//! connected clients, exit when the last one left). TCP listeners close at once; the Unix
//! socket stays open for the console until the end. A second request while waiting turns
//! into an immediate exit.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::App;
use crate::control::is_console;
use crate::net::Stream;
use crate::protocol::messages::Severity;

/// How to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Close everything now.
    Immediate,
    /// Wait until every server is back in its pool (running transactions finish).
    WaitForServers,
    /// Wait until every pooled client disconnected.
    WaitForClients,
}

/// Shutdown requests and completion.
#[derive(Debug)]
pub struct ShutdownCtl {
    requested: watch::Sender<Option<ShutdownMode>>,
    /// Fired once shutdown finished: the process (or test) may exit.
    pub finished: CancellationToken,
}

impl Default for ShutdownCtl {
    fn default() -> Self {
        ShutdownCtl {
            requested: watch::Sender::new(None),
            finished: CancellationToken::new(),
        }
    }
}

impl ShutdownCtl {
    /// Asks for a shutdown. A second request of any kind escalates to `Immediate`.
    /// Returns the mode now in force.
    pub fn request(&self, mode: ShutdownMode) -> ShutdownMode {
        let mut now = mode;
        self.requested.send_modify(|r| {
            now = match *r {
                None => mode,
                Some(_) => ShutdownMode::Immediate,
            };
            *r = Some(now);
        });
        now
    }

    /// The mode requested so far, if any.
    pub fn requested(&self) -> Option<ShutdownMode> {
        *self.requested.borrow()
    }
}

/// Spawns the task that carries out shutdown requests.
pub fn spawn_driver(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move { drive(&app).await });
}

async fn drive(app: &Arc<App>) {
    let mut rx = app.stopping.requested.subscribe();
    let Ok(mode) = rx.wait_for(Option::is_some).await.map(|m| *m) else {
        return;
    };
    let mode = mode.unwrap_or(ShutdownMode::Immediate);
    info!(?mode, "shutting down");
    app.shutdown.cancel();
    let escalated = async {
        let _ = rx.wait_for(|m| *m == Some(ShutdownMode::Immediate)).await;
    };
    match mode {
        ShutdownMode::Immediate => {}
        ShutdownMode::WaitForClients => {
            tokio::select! {
                _ = wait_for_pooled_clients(app) => {}
                _ = escalated => info!("second shutdown request: exiting now"),
            }
        }
        ShutdownMode::WaitForServers => {
            let pools: Vec<_> = app.pools.iter().map(|p| p.clone()).collect();
            for p in &pools {
                p.gate.set_paused(true);
            }
            let all_back = async {
                for p in &pools {
                    p.stats.wait_all_returned().await;
                }
            };
            tokio::select! {
                _ = all_back => {}
                _ = escalated => info!("second shutdown request: exiting now"),
            }
        }
    }
    app.clients.kill_where(|_| true);
    for p in app.pools.iter() {
        p.close_idle();
    }
    app.stopping.finished.cancel();
}

/// During a shutdown only admin-console clients log in (over the Unix socket, which stays
/// open while TCP listeners are closed): a pooled client is told `server shutting down`
/// (FATAL 08P01, as PgBouncer) and true is returned.
pub async fn refuse_pooled_login(app: &App, stream: &mut Stream) -> bool {
    if app.stopping.requested().is_none() {
        return false;
    }
    info!("login refused: shutting down");
    let code = crate::error::ErrorKind::Protocol.sqlstate();
    let msg = crate::client::server_wait::SHUTTING_DOWN;
    crate::client::session::send_error(stream, Severity::Fatal, code, msg, None).await;
    true
}

/// Returns once no client other than admin-console ones is connected.
async fn wait_for_pooled_clients(app: &App) {
    app.clients
        .wait_until_none(|e| e.identity().is_none_or(|i| !is_console(&i.database)))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_request_escalates() {
        let c = ShutdownCtl::default();
        assert_eq!(c.requested(), None);
        assert_eq!(
            c.request(ShutdownMode::WaitForClients),
            ShutdownMode::WaitForClients
        );
        assert_eq!(
            c.request(ShutdownMode::WaitForClients),
            ShutdownMode::Immediate
        );
        assert_eq!(c.requested(), Some(ShutdownMode::Immediate));
    }
}
