//! One client's life after the handshake: authentication, login replies, then the loop
//! idle -> checkout -> parameter sync -> relay -> release, and cleanup so that a server
//! never goes back to the pool dirty.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::link_stats::LinkStats;
use super::login::{self, LoginError};
use super::params::ClientParams;
use super::registry::{ClientEntry, ClientState};
use super::relay::{IdleEnd, Relay, RelayEnd, RelayMode};
use super::timeouts::{Expired, LinkTimeouts};
use crate::app::App;
use crate::auth::{self, ClientAuthMethod};
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::{AuthType, PoolMode};
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
    /// This client's registry entry (SHOW CLIENTS state), set by `client::handle`.
    pub entry: Option<Arc<ClientEntry>>,
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
            entry: None,
        })
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let config = self.app.config();
        let secret = self.app.secret_for(&self.user);
        let method = match config.settings.auth_type {
            AuthType::Trust | AuthType::Any => ClientAuthMethod::Trust,
            other => auth::choose_method(other.as_str(), secret.as_ref()),
        };
        let login =
            if method == ClientAuthMethod::Trust && secret.is_none() && self.app.has_auth_file() {
                // trust still requires the user to exist in the auth_file, as PgBouncer
                Err(LoginError::Failed(self.user.clone()))
            } else {
                login::authenticate(
                    &mut self.stream,
                    &self.user,
                    method,
                    secret.as_ref(),
                    &self.app.scram_mock_key,
                )
                .await
            };
        match login {
            Ok(_) => {}
            Err(LoginError::Failed(_)) => {
                warn!(user = %self.user, "client authentication failed");
                let msg = format!("password authentication failed for user \"{}\"", self.user);
                return send_fatal(&mut self.stream, ErrorKind::Auth, &msg).await;
            }
            Err(e) => {
                debug!(error = %e, "client left or misbehaved during authentication");
                return send_fatal(
                    &mut self.stream,
                    ErrorKind::Protocol,
                    "invalid authentication exchange",
                )
                .await;
            }
        }
        let pool = match self.app.pool_for(&self.database, &self.user) {
            Some(p) => p,
            None => {
                let msg = format!("no such database: {}", self.database);
                return send_fatal(&mut self.stream, ErrorKind::UnknownDatabase, &msg).await;
            }
        };
        let _slot = match self.app.admit_client(&self.database, &self.user) {
            Ok(slot) => slot,
            Err(limit) => {
                warn!(limit, "client limit reached");
                let msg = format!("no more connections allowed ({limit})");
                return send_fatal(&mut self.stream, ErrorKind::TooManyClients, &msg).await;
            }
        };
        pool.stats.client_logged_in();
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

    fn mark(&self, state: ClientState) {
        if let Some(e) = &self.entry {
            e.set_state(state);
        }
    }

    async fn checkout(&mut self, pool: &Pool) -> Option<PooledServer> {
        self.mark(ClientState::Waiting);
        let notify = self.app.config().settings.query_wait_notify;
        let wait = pool.checkout();
        tokio::pin!(wait);
        let result = if notify.is_zero() {
            wait.await
        } else {
            tokio::select! {
                r = &mut wait => r,
                _ = tokio::time::sleep(notify) => {
                    let mut buf = BytesMut::new();
                    let msg = format!(
                        "no server connection available in pool {}/{} yet, waiting (query_wait_notify)",
                        pool.key.database, pool.key.user
                    );
                    messages::put_notice(&mut buf, &msg);
                    let _ = self.stream.write_all(&buf).await;
                    wait.await
                }
            }
        };
        match result {
            Ok(s) => {
                self.mark(ClientState::Active);
                Some(s)
            }
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
        let timers = self.app.link_timeouts(&self.user);
        let mut relay = Relay::new(max_packet);
        relay.mode = match mode {
            PoolMode::Session => RelayMode::Session,
            PoolMode::Transaction => RelayMode::Transaction,
            PoolMode::Statement => RelayMode::Statement,
        };
        relay.timed = timers.any_linked();
        relay.stats = LinkStats::for_pool(&pool.stats);
        loop {
            let mut server = match linked.take() {
                Some(s) => s,
                None => {
                    self.mark(ClientState::Idle);
                    match self.wait_idle(&mut relay, timers.client_idle).await {
                        Some(IdleEnd::Request) => {}
                        Some(IdleEnd::ClientGone) | Some(IdleEnd::ClientIo(_)) => return,
                        Some(IdleEnd::ClientProtocol(e)) => {
                            warn!(error = %e, "client protocol violation");
                            return send_fatal(
                                &mut self.stream,
                                ErrorKind::Protocol,
                                &e.to_string(),
                            )
                            .await;
                        }
                        None => {
                            warn!("client_idle_timeout");
                            return send_fatal(
                                &mut self.stream,
                                ErrorKind::Timeout,
                                "client_idle_timeout: client was idle too long",
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
            cancel
                .entry
                .link(CancelTarget {
                    addr: server.conn.cancel_addr.clone(),
                    key: server.conn.key.clone(),
                })
                .await;
            let (end, timed_out) = self
                .relay_linked(&mut relay, &mut server, &timers, &mut params.expected)
                .await;
            let cancelled = cancel.entry.unlink().await;
            for change in relay.tracker.changes.drain(..) {
                params.apply_change(change, &mut server.conn);
            }
            if let Some((code, msg)) = timed_out {
                warn!(reason = msg, "closing client and server");
                pool.discard(server);
                return send_error(&mut self.stream, Severity::Fatal, code, msg, None).await;
            }
            match end {
                RelayEnd::Released if cancelled => {
                    debug!(
                        server = server.conn.id,
                        "server had a cancel during this link: not reused"
                    );
                    pool.discard(server);
                }
                RelayEnd::Released => pool.checkin(server),
                RelayEnd::Tick => linked = Some(server),
                RelayEnd::ClientGone | RelayEnd::ClientIo(_) => {
                    return self
                        .release_after_client(pool, mode, server, &relay, cancelled)
                        .await;
                }
                RelayEnd::ClientProtocol(e) => {
                    warn!(error = %e, "client protocol violation");
                    send_fatal(&mut self.stream, ErrorKind::Protocol, &e.to_string()).await;
                    return self
                        .release_after_client(pool, mode, server, &relay, cancelled)
                        .await;
                }
                RelayEnd::TransactionInStatementMode => {
                    pool.discard(server);
                    return send_fatal(
                        &mut self.stream,
                        ErrorKind::Protocol,
                        "transaction blocks not allowed in statement pooling mode",
                    )
                    .await;
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

    /// Waits for the client's next request; `None` when client_idle_timeout passed.
    async fn wait_idle(&mut self, relay: &mut Relay, client_idle: Duration) -> Option<IdleEnd> {
        if client_idle.is_zero() {
            return Some(relay.wait_for_request(&mut self.stream).await);
        }
        tokio::time::timeout(client_idle, relay.wait_for_request(&mut self.stream))
            .await
            .ok()
    }

    /// Relays one link, enforcing query_timeout (cancel), idle_transaction_timeout and
    /// transaction_timeout. Returns the relay's end and, when a timeout ends the link, the
    /// SQLSTATE and message for the client.
    async fn relay_linked(
        &mut self,
        relay: &mut Relay,
        server: &mut PooledServer,
        timers: &LinkTimeouts,
        expected: &mut HashMap<String, String>,
    ) -> (RelayEnd, Option<(&'static str, &'static str)>) {
        let release = relay.tracker.pin.is_none();
        if relay.tracker.pin.is_some() {
            debug!(
                reason = relay.tracker.pin.map(|p| p.label()),
                "client pinned to its server"
            );
        }
        let conn = &mut server.conn;
        if !relay.timed {
            let end = relay
                .run(
                    &mut self.stream,
                    &mut conn.stream,
                    release,
                    &mut conn.params,
                    expected,
                )
                .await;
            return (end, None);
        }
        loop {
            let deadline = timers.next_deadline(&relay.clock, &relay.tracker);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = relay.run(&mut self.stream, &mut conn.stream, release, &mut conn.params, expected) => return (end, None),
                _ = sleep => {}
            }
            match timers.expired(&relay.clock, &relay.tracker) {
                Some(Expired::Query) => {
                    warn!("query_timeout: cancelling the running query");
                    crate::cancel::send_cancel(CancelTarget {
                        addr: conn.cancel_addr.clone(),
                        key: conn.key.clone(),
                    })
                    .await;
                    relay.clock.busy_since = Some(std::time::Instant::now());
                }
                Some(Expired::IdleTransaction) => {
                    return (RelayEnd::Tick, Some(("25P03", "idle transaction timeout")))
                }
                Some(Expired::Transaction) => {
                    return (RelayEnd::Tick, Some(("25P04", "transaction timeout")))
                }
                None => {}
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
        cancelled: bool,
    ) {
        let clean = relay.tracker.is_idle() && relay.c2s.is_empty() && !cancelled;
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
        // Pinned clients (temp tables, advisory locks...) left session state behind.
        let must_reset = mode == PoolMode::Session
            || relay.tracker.pin.is_some()
            || config.settings.server_reset_query_always;
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
