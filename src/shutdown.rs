//! Shutdown with PgBouncer 1.23+ semantics: immediate (SIGQUIT, SHUTDOWN), WAIT_FOR_SERVERS
//! (SIGINT: clients starting a transaction or waiting for a server get `server shutting
//! down`, running transactions finish, then exit) and WAIT_FOR_CLIENTS (SIGTERM: keep serving
//! connected clients, exit when the last one left). TCP listeners close at once; the Unix
//! socket stays open for the console until the end. A second request while waiting turns
//! into an immediate exit.
//!
//! Restarts without drops: before a graceful shutdown closes a TCP listener it accepts what
//! the kernel already queued on it (`net::listener`), and the shutdown waits for those
//! clients and for every client still in its handshake or login: WAIT_FOR_CLIENTS serves
//! them as usual, WAIT_FOR_SERVERS refuses them with `server shutting down` (bounded by
//! `client_login_timeout`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::App;
use crate::client::registry::{ClientEntry, ClientState};
use crate::control::is_console;
use crate::net::Stream;

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
    /// TCP accept loops not yet closed (each drains its queue before it closes).
    open_listeners: watch::Sender<usize>,
    /// Fired once shutdown finished: the process (or test) may exit.
    pub finished: CancellationToken,
}

impl Default for ShutdownCtl {
    fn default() -> Self {
        ShutdownCtl {
            requested: watch::Sender::new(None),
            open_listeners: watch::Sender::new(0),
            finished: CancellationToken::new(),
        }
    }
}

/// Held by a TCP accept loop until its listener is drained and closed.
#[derive(Debug)]
pub struct ListenerOpen(watch::Sender<usize>);

impl Drop for ListenerOpen {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Longest wait for the TCP listeners to drain their queues and close.
const LISTENER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Longest wait, in WAIT_FOR_SERVERS, for clients still logging in to be refused when
/// client_login_timeout is 0 (disabled).
const LOGIN_REFUSAL_LIMIT: Duration = Duration::from_secs(10);

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

    /// Counts an open TCP listener until the returned guard drops; a graceful shutdown
    /// waits for every one to be drained and closed before it counts the clients left.
    pub fn listener_open(&self) -> ListenerOpen {
        self.open_listeners.send_modify(|n| *n += 1);
        ListenerOpen(self.open_listeners.clone())
    }

    /// True when a graceful shutdown (not an immediate one) is in force: TCP listeners
    /// accept what the kernel queued on them before they close.
    pub fn drains_listeners(&self) -> bool {
        matches!(
            self.requested(),
            Some(ShutdownMode::WaitForClients | ShutdownMode::WaitForServers)
        )
    }

    async fn listeners_closed(&self) {
        let mut rx = self.open_listeners.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
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
    if mode != ShutdownMode::Immediate {
        // The clients the listeners drain are registered before they close, so the waits
        // below count them.
        let closed = app.stopping.listeners_closed();
        if tokio::time::timeout(LISTENER_DRAIN_LIMIT, closed)
            .await
            .is_err()
        {
            info!("listeners not closed in time");
        }
    }
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
                refuse_logins_in_progress(app).await;
            };
            tokio::select! {
                _ = all_back => {}
                _ = escalated => info!("second shutdown request: exiting now"),
            }
        }
    }
    app.clients.kill_where(|_| true);
    for p in app.pools.iter() {
        p.close_idle_because(crate::logging::close_reason::CloseReason::ShuttingDown);
    }
    app.stopping.finished.cancel();
}

/// During a shutdown only admin-console clients log in (over the Unix socket, which stays
/// open while TCP listeners are closed): a pooled client is told `server shutting down`
/// (FATAL 08P01, as PgBouncer) and true is returned.
///
/// WAIT_FOR_CLIENTS serves a client accepted before the listeners closed (or drained from
/// their queue) as usual; `late` marks one accepted after the request (the Unix socket),
/// which is refused.
pub async fn refuse_pooled_login(app: &App, stream: &mut Stream, late: bool) -> bool {
    match app.stopping.requested() {
        None => return false,
        Some(ShutdownMode::WaitForClients) if !late => return false,
        Some(_) => {}
    }
    info!("login refused: shutting down");
    let msg = crate::client::server_wait::SHUTTING_DOWN;
    let error = crate::error::ClientError::fatal(crate::error::ErrorKind::Protocol, msg);
    app.metrics.client_error(error.kind);
    crate::client::session::send_client_error(stream, &error).await;
    true
}

/// Waits (within client_login_timeout) until the pooled clients still in their handshake
/// or login were told `server shutting down`, so that WAIT_FOR_SERVERS refuses them cleanly
/// instead of cutting them.
async fn refuse_logins_in_progress(app: &App) {
    let limit = app.config().settings.client_login_timeout;
    let limit = if limit.is_zero() {
        LOGIN_REFUSAL_LIMIT
    } else {
        limit
    };
    let logging_in = app
        .clients
        .wait_until_none(|e| e.state() == ClientState::Login && is_pooled_or_unknown(e));
    if tokio::time::timeout(limit, logging_in).await.is_err() {
        info!("clients still logging in at shutdown are closed");
    }
}

/// Returns once no client other than admin-console ones is connected; a client still in its
/// handshake (no identity yet) counts.
async fn wait_for_pooled_clients(app: &App) {
    app.clients.wait_until_none(is_pooled_or_unknown).await;
}

fn is_pooled_or_unknown(e: &ClientEntry) -> bool {
    e.identity().is_none_or(|i| !is_console(&i.database))
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
