//! One client's login after the handshake: authentication, admission (pool, client
//! limits), the login replies, then the link cycle (`super::link`). Also the one place
//! where errors are written to a client ([`send_client_error`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tracing::{debug, info, warn, Instrument};

use super::access::{self, Admitted, Denied};
use super::context::ClientGuard;
use super::context::SessionContext;
use super::params::ClientParams;
use super::registry::{ClientEntry, ClientState};
use crate::cancel::CancelHandle;
use crate::config::PoolMode;
use crate::error::{ClientError, ErrorKind};
use crate::net::Stream;
use crate::pool::{Pool, PoolError, PooledServer, Tell};
use crate::protocol::messages;
use crate::server::ServerError;

/// A client that finished the handshake.
pub struct Session {
    pub(super) id: u64,
    pub(super) ctx: Arc<dyn SessionContext>,
    pub(super) stream: Stream,
    pub(super) user: String,
    pub(super) database: String,
    startup: Vec<(String, String)>,
    /// This client's registry entry (SHOW CLIENTS state), set by `client::handle`.
    pub entry: Option<Arc<ClientEntry>>,
    /// The client's span (the one current when the session was created), named as the
    /// parent of the session's events.
    pub(super) span: tracing::Span,
}

impl Drop for Session {
    /// A killed client (KILL, KILL_CLIENT, shutdown: its task is aborted) is told why
    /// before its socket closes, best effort and without waiting.
    fn drop(&mut self) {
        if let Some(bye) = self.entry.as_ref().and_then(|e| e.farewell()) {
            self.stream.write_now(&bye);
        }
    }
}

/// Sends an error to the client; write failures are ignored (the client may be gone).
/// Every error pgfunnel itself reports to a client goes through here.
pub async fn send_client_error(stream: &mut Stream, error: &ClientError) {
    let _ = stream.send(&error.to_message()).await;
}

/// Runs `fut` within `limit` (zero: no limit); `None` when the limit passed first.
pub async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    if limit.is_zero() {
        Some(fut.await)
    } else {
        tokio::time::timeout(limit, fut).await.ok()
    }
}

/// What a client is told about a server-side failure: the server's own SQLSTATE and
/// message when it sent one, otherwise 08006 without internal addresses.
pub fn server_client_error(e: &ServerError) -> ClientError {
    let kind = ErrorKind::ServerUnavailable;
    match e {
        ServerError::Rejected(f) => {
            ClientError::fatal(kind, f.message.clone()).with_code(f.code.clone())
        }
        ServerError::Timeout => ClientError::fatal(kind, "server connect timed out"),
        // pgfunnel cannot do what the server asks (a static reason, no secrets).
        ServerError::Auth(_) => ClientError::fatal(kind, e.to_string()),
        ServerError::Tls(io) => ClientError::fatal(kind, crate::server::tls::failure_message(io)),
        _ => ClientError::fatal(
            kind,
            "server login failed: could not reach the database server",
        ),
    }
}

impl Session {
    /// Creates a session for a client whose startup parameters were read.
    pub fn new(
        id: u64,
        ctx: Arc<dyn SessionContext>,
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
        let ignored = ctx.config().settings.ignore_startup_parameters.clone();
        startup.retain(|(k, _)| !ignored.iter().any(|i| i.eq_ignore_ascii_case(k)));
        Ok(Session {
            id,
            ctx,
            stream,
            user,
            database,
            startup,
            entry: None,
            span: tracing::Span::current(),
        })
    }

    /// Runs the session to its end: authentication, admission, login replies, then the
    /// link cycle.
    pub async fn run(mut self) {
        let Some(admitted) = self.authenticate().await else {
            return;
        };
        let Some((pool, _admitted)) = self.admit(&admitted).await else {
            return;
        };
        let mode = self.ctx.pool_mode_for(&self.database, &self.user);
        if config_logs_connections(&*self.ctx) {
            info!(parent: &self.span, user = %self.user, db = %self.database, "login");
        }
        let cancel = self.ctx.cancel().register();
        // Login replies need the server's parameters; the first client of a pool waits
        // for a server connection, later ones are answered from the cached values.
        let mut held = None;
        let welcome = match pool.welcome() {
            Some(w) => w,
            None => match Box::pin(self.checkout(&pool)).await {
                Some(server) => {
                    held = Some(server);
                    pool.welcome().unwrap_or_default()
                }
                None => return,
            },
        };
        let mut params = ClientParams::from_startup(&welcome, &self.startup);
        let buf = login_replies(&params, &cancel);
        if self.stream.send(&buf).await.is_err() {
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
        // Nothing of the login stays with an idle client.
        drop((buf, welcome, admitted));
        self.startup = Vec::new();
        Box::pin(self.serve(&pool, mode, &mut params, &cancel, held)).await;
    }

    /// Authenticates the client within client_login_timeout; `None` when it was refused
    /// (and told why), left, or ran out of time.
    async fn authenticate(&mut self) -> Option<Admitted> {
        let login_timeout = self.ctx.config().settings.client_login_timeout;
        let admitted = Box::pin(
            access::admit(&*self.ctx, &mut self.stream, &self.user, &self.database)
                .instrument(self.span.clone()),
        );
        let Some(admitted) = within(login_timeout, admitted).await else {
            warn!(parent: &self.span, "client_login_timeout during authentication");
            return None;
        };
        let error = match admitted {
            Ok(a) => return Some(a),
            Err(Denied::Protocol(e)) => {
                debug!(parent: &self.span, error = %e, "client left or misbehaved during authentication");
                let msg = "invalid authentication exchange";
                ClientError::fatal(ErrorKind::Protocol, msg)
            }
            Err(denied) => {
                warn!(parent: &self.span, user = %self.user, reason = %denied, "client authentication failed");
                ClientError::fatal(denied.kind(), denied.to_string())
            }
        };
        self.tell(&error).await;
        None
    }

    /// Finds the client's pool and counts the client against the client limits; `None`
    /// when the database is unknown or a limit is full (the client is told).
    async fn admit(&mut self, admitted: &Admitted) -> Option<(Arc<Pool>, ClientGuard)> {
        let Some(pool) = self.ctx.pool_for(&self.database, &self.user) else {
            let msg = format!("no such database: {}", self.database);
            let error = ClientError::fatal(ErrorKind::UnknownDatabase, msg);
            self.tell(&error).await;
            return None;
        };
        if pool.key.user == self.user {
            // SCRAM pass-through: the pool logs in with what this client just proved.
            let key = admitted.outcome.scram_client_key;
            pool.target()
                .credential
                .learn(admitted.secret.as_ref(), key);
        }
        match self.ctx.admit_client(&self.database, &self.user) {
            Ok(guard) => {
                pool.stats.client_logged_in();
                Some((pool, guard))
            }
            Err(limit) => {
                warn!(parent: &self.span, limit, "client limit reached");
                let msg = format!("no more connections allowed ({limit})");
                let error = ClientError::fatal(ErrorKind::TooManyClients, msg);
                self.tell(&error).await;
                None
            }
        }
    }

    /// Tells the client about `error`, counted by its kind: every error a session reports
    /// goes through here.
    pub(super) async fn tell(&mut self, error: &ClientError) {
        self.ctx.client_error(error.kind);
        send_client_error(&mut self.stream, error).await;
    }

    /// Forwards a server-side failure to the client (see [`server_client_error`]), logging
    /// the failures that are pgfunnel's to report.
    pub(super) async fn tell_server_error(&mut self, e: &ServerError) {
        if !matches!(e, ServerError::Rejected(_) | ServerError::Timeout) {
            warn!(parent: &self.span, error = %e, "server login failed");
        }
        self.tell(&server_client_error(e)).await;
    }

    pub(super) fn mark(&self, state: ClientState) {
        if let Some(e) = &self.entry {
            e.set_state(state);
        }
    }

    pub(super) async fn checkout(&mut self, pool: &Pool) -> Option<PooledServer> {
        self.mark(ClientState::Waiting);
        let notify = self.ctx.config().settings.query_wait_notify;
        let stream = &mut self.stream;
        // query_wait_notify: tell a queued client why it waits, then keep waiting.
        let mut tell = || {
            let mut buf = BytesMut::new();
            let msg = "no server connection available yet, client being queued";
            messages::put_notice(&mut buf, msg);
            stream.write_now(&buf);
        };
        let notice = (!notify.is_zero()).then_some((notify, &mut tell as Tell<'_>));
        let result = pool.checkout_noticed(notice).await;
        match result {
            Ok(s) => {
                self.mark(ClientState::Active);
                Some(s)
            }
            Err(PoolError::Timeout) => {
                let msg = "query_wait_timeout: no server connection became free in time";
                let hint = "raise pool_size or query_wait_timeout, or find what holds the \
                            servers (SHOW POOLS)";
                let error = ClientError::fatal(ErrorKind::PoolTimeout, msg).with_hint(hint);
                self.tell(&error).await;
                None
            }
            Err(PoolError::Connect(e)) => {
                if let Some(entry) = &self.entry {
                    entry.set_close_reason("server login failed");
                }
                self.tell_server_error(&e).await;
                None
            }
            Err(PoolError::Closed) => {
                let error = ClientError::fatal(ErrorKind::Shutdown, "pgfunnel is shutting down");
                self.tell(&error).await;
                None
            }
        }
    }
}

/// The login replies: the parameters the client expects (sorted), its cancel key, and
/// ReadyForQuery.
fn login_replies(params: &ClientParams, cancel: &CancelHandle) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut names: Vec<_> = params.expected.iter().collect();
    names.sort();
    for (k, v) in names {
        messages::put_parameter_status(&mut buf, k, v);
    }
    messages::put_backend_key(&mut buf, cancel.pid, cancel.secret_i32());
    messages::put_ready(&mut buf, b'I');
    buf
}

fn config_logs_connections(app: &dyn SessionContext) -> bool {
    app.config().settings.log_connections
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
