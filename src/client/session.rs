//! One client's life after the handshake: authentication, login replies, then the loop
//! idle -> checkout -> parameter sync -> relay -> release, and cleanup so that a server
//! never goes back to the pool dirty.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::access::{self, Denied};
use super::params::ClientParams;
use super::relay::{IdleEnd, Relay, RelayEnd};
use crate::app::App;
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::PoolMode;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::pool::{Pool, PoolError, PooledServer};
use crate::protocol::messages::{self, Severity};
use crate::server::ServerError;

/// A client that finished the handshake.
pub struct Session {
    app: Arc<App>,
    stream: Stream,
    user: String,
    database: String,
    startup: Vec<(String, String)>,
}

/// Sends an error to the client; write failures are ignored (the client may be gone).
pub async fn send_error(
    stream: &mut Stream,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut buf = BytesMut::new();
    messages::put_error(&mut buf, severity, code, message, hint);
    let _ = stream.write_all(&buf).await;
}

async fn send_fatal(stream: &mut Stream, kind: ErrorKind, message: &str) {
    send_error(stream, Severity::Fatal, kind.sqlstate(), message, None).await;
}

/// Forwards a server-side failure to the client: the server's own SQLSTATE and message
/// when it sent one, otherwise 08006 without internal addresses.
async fn send_server_error(stream: &mut Stream, e: &ServerError) {
    match e {
        ServerError::Rejected(f) => {
            send_error(stream, Severity::Fatal, &f.code, &f.message, None).await
        }
        ServerError::Timeout => {
            send_fatal(
                stream,
                ErrorKind::ServerUnavailable,
                "server connect timed out",
            )
            .await
        }
        other => {
            warn!(error = %other, "server login failed");
            send_fatal(
                stream,
                ErrorKind::ServerUnavailable,
                "server login failed: could not reach the database server",
            )
            .await
        }
    }
}

impl Session {
    /// Creates a session for a client whose startup parameters were read.
    pub fn new(
        app: Arc<App>,
        stream: Stream,
        mut startup: Vec<(String, String)>,
    ) -> Result<Self, (Stream, &'static str)> {
        let take = |startup: &mut Vec<(String, String)>, key: &str| {
            startup
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| startup.remove(i).1)
        };
        let Some(user) = take(&mut startup, "user").filter(|u| !u.is_empty()) else {
            return Err((
                stream,
                "no PostgreSQL user name specified in startup packet",
            ));
        };
        let database = take(&mut startup, "database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        if take(&mut startup, "replication").is_some_and(|r| r != "false" && r != "0" && r != "off")
        {
            return Err((
                stream,
                "replication connections are not supported by pgfunnel",
            ));
        }
        let ignored = app.config().settings.ignore_startup_parameters.clone();
        startup.retain(|(k, _)| !ignored.iter().any(|i| i.eq_ignore_ascii_case(k)));
        Ok(Session {
            app,
            stream,
            user,
            database,
            startup,
        })
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let config = self.app.config();
        let admitted = access::admit(&self.app, &mut self.stream, &self.user, &self.database);
        let (secret, outcome) = match admitted.await {
            Ok(a) => (a.secret, a.outcome),
            Err(Denied::Protocol(e)) => {
                debug!(error = %e, "client left or misbehaved during authentication");
                let msg = "invalid authentication exchange";
                return send_fatal(&mut self.stream, ErrorKind::Protocol, msg).await;
            }
            Err(denied) => {
                warn!(user = %self.user, reason = %denied, "client authentication failed");
                let code = denied.sqlstate();
                let msg = denied.to_string();
                return send_error(&mut self.stream, Severity::Fatal, code, &msg, None).await;
            }
        };
        let pool = match self.app.pool_for(&self.database, &self.user) {
            Some(p) => p,
            None => {
                let msg = format!("no such database: {}", self.database);
                return send_fatal(&mut self.stream, ErrorKind::UnknownDatabase, &msg).await;
            }
        };
        if pool.key.user == self.user {
            // SCRAM pass-through: the pool logs in with what this client just proved.
            let key = outcome.scram_client_key;
            pool.target.credential.learn(secret.as_ref(), key);
        }
        let mode = self.app.pool_mode_for(&self.database, &self.user);
        drop(config);
        if config_logs_connections(&self.app) {
            info!(user = %self.user, db = %self.database, "login");
        }
        let cancel = self.app.cancel.register();
        // Login replies need the server's parameters; the first client of a pool waits
        // for a server connection, later ones are answered from the cached values.
        let mut held = None;
        let welcome = match pool.welcome() {
            Some(w) => w,
            None => match self.checkout(&pool).await {
                Some(server) => {
                    held = Some(server);
                    pool.welcome().unwrap_or_default()
                }
                None => return,
            },
        };
        let mut params = ClientParams::from_startup(&welcome, &self.startup);
        let mut buf = BytesMut::new();
        let mut names: Vec<_> = params.expected.iter().collect();
        names.sort();
        for (k, v) in names {
            messages::put_parameter_status(&mut buf, k, v);
        }
        messages::put_backend_key(&mut buf, cancel.pid, cancel.secret_i32());
        messages::put_ready(&mut buf, b'I');
        if self.stream.write_all(&buf).await.is_err() {
            if let Some(s) = held {
                pool.checkin(s);
            }
            return;
        }
        if mode != PoolMode::Session {
            if let Some(s) = held.take() {
                pool.checkin(s);
            }
        }
        self.serve(&pool, mode, &mut params, &cancel, held).await;
    }

    async fn checkout(&mut self, pool: &Pool) -> Option<PooledServer> {
        let notify = self.app.config().settings.query_wait_notify;
        let waiting = pool.checkout();
        tokio::pin!(waiting);
        let result = tokio::select! {
            r = &mut waiting => r,
            _ = tokio::time::sleep(notify), if !notify.is_zero() => {
                // query_wait_notify: tell a queued client why it waits, then keep waiting.
                let mut buf = BytesMut::new();
                messages::put_notice(&mut buf, "no server connection available yet, client being queued");
                let _ = self.stream.write_all(&buf).await;
                waiting.await
            }
        };
        match result {
            Ok(s) => Some(s),
            Err(PoolError::Timeout) => {
                let msg = "query_wait_timeout: no server connection became free in time";
                send_error(
                    &mut self.stream,
                    Severity::Fatal,
                    ErrorKind::PoolTimeout.sqlstate(),
                    msg,
                    Some("raise pool_size or query_wait_timeout, or find what holds the servers (SHOW POOLS)"),
                )
                .await;
                None
            }
            Err(PoolError::Connect(e)) => {
                send_server_error(&mut self.stream, &e).await;
                None
            }
            Err(PoolError::Closed) => {
                send_fatal(
                    &mut self.stream,
                    ErrorKind::Shutdown,
                    "pgfunnel is shutting down",
                )
                .await;
                None
            }
        }
    }

    /// The idle/linked loop.
    async fn serve(
        &mut self,
        pool: &Arc<Pool>,
        mode: PoolMode,
        params: &mut ClientParams,
        cancel: &CancelHandle,
        mut linked: Option<PooledServer>,
    ) {
        let max_packet = self.app.config().settings.max_packet_size;
        let mut relay = Relay::new(max_packet);
        loop {
            let mut server = match linked.take() {
                Some(s) => s,
                None => {
                    match relay.wait_for_request(&mut self.stream).await {
                        IdleEnd::Request => {}
                        IdleEnd::ClientGone | IdleEnd::ClientIo(_) => return,
                        IdleEnd::ClientProtocol(e) => {
                            warn!(error = %e, "client protocol violation");
                            return send_fatal(
                                &mut self.stream,
                                ErrorKind::Protocol,
                                &e.to_string(),
                            )
                            .await;
                        }
                    }
                    match self.checkout(pool).await {
                        Some(s) => s,
                        None => return,
                    }
                }
            };
            if let Err(e) = sync_parameters(params, &mut server, &mut relay).await {
                match e {
                    ServerError::Rejected(_) => pool.checkin(server),
                    _ => pool.discard(server),
                }
                return send_server_error(&mut self.stream, &e).await;
            }
            cancel.entry.set_target(Some(CancelTarget {
                addr: server.conn.cancel_addr.clone(),
                key: server.conn.key.clone(),
            }));
            let conn = &mut server.conn;
            let end = relay
                .run(
                    &mut self.stream,
                    &mut conn.stream,
                    mode != PoolMode::Session,
                    &mut conn.params,
                    &mut params.expected,
                )
                .await;
            cancel.entry.set_target(None);
            match end {
                RelayEnd::Released => {
                    pool.checkin(server);
                }
                RelayEnd::ClientGone | RelayEnd::ClientIo(_) => {
                    return self.release_after_client(pool, mode, server, &relay).await;
                }
                RelayEnd::ClientProtocol(e) => {
                    warn!(error = %e, "client protocol violation");
                    send_fatal(&mut self.stream, ErrorKind::Protocol, &e.to_string()).await;
                    return self.release_after_client(pool, mode, server, &relay).await;
                }
                RelayEnd::ServerGone(e) => {
                    debug!(error = %e, "server connection lost while linked");
                    pool.discard(server);
                    return send_fatal(
                        &mut self.stream,
                        ErrorKind::ServerGone,
                        "server conn crashed?",
                    )
                    .await;
                }
                RelayEnd::ServerProtocol(e) => {
                    warn!(error = %e, "server protocol violation");
                    pool.discard(server);
                    return send_fatal(
                        &mut self.stream,
                        ErrorKind::ServerGone,
                        "server protocol violation",
                    )
                    .await;
                }
            }
        }
    }

    /// The client is gone: return the server only if it is idle and the reset succeeds.
    async fn release_after_client(
        &mut self,
        pool: &Arc<Pool>,
        mode: PoolMode,
        mut server: PooledServer,
        relay: &Relay,
    ) {
        let clean = relay.tracker.is_idle() && relay.c2s.is_empty();
        if !clean {
            debug!(
                server = server.conn.id,
                "client left mid-transaction: closing server"
            );
            return pool.discard(server);
        }
        let config = self.app.config();
        let reset = config
            .settings
            .server_reset_query
            .clone()
            .filter(|q| !q.trim().is_empty());
        let must_reset = mode == PoolMode::Session || config.settings.server_reset_query_always;
        drop(config);
        if let (true, Some(q)) = (must_reset, reset) {
            match server.conn.run_internal(&q).await {
                Ok(b'I') => server.conn.applied.clear(),
                _ => return pool.discard(server),
            }
        }
        pool.checkin(server);
    }
}

fn config_logs_connections(app: &App) -> bool {
    app.config().settings.log_connections
}

/// Brings the server's session parameters in line with the client's before any client
/// byte reaches it. Values the server normalised (`iso` -> `ISO, MDY`) are reported to
/// the client through ParameterStatus queued ahead of the server's replies.
async fn sync_parameters(
    params: &mut ClientParams,
    server: &mut PooledServer,
    relay: &mut Relay,
) -> Result<(), ServerError> {
    let Some(sql) = params.sync_sql(&server.conn) else {
        return Ok(());
    };
    let wanted: Vec<String> = params.expected.keys().cloned().collect();
    server.conn.run_internal(&sql).await?;
    params.mark_applied(&mut server.conn);
    for k in wanted {
        if let (Some(now), Some(exp)) = (server.conn.params.get(&k), params.expected.get_mut(&k)) {
            if now != exp {
                *exp = now.clone();
                messages::put_parameter_status(&mut relay.s2c, &k, now);
            }
        }
    }
    Ok(())
}
