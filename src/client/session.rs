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
use crate::logging::close_reason::{self, note_close, CloseReason};
use crate::net::Stream;
use crate::pool::{Pool, PooledServer};
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
    /// Set for a replication client (served by `client::replication`, never pooled).
    replication: Option<super::replication::ReplicationKind>,
    /// A startup parameter value Postgres refuses (`replication=maybe`): told with 22023
    /// before authentication, as Postgres does.
    refused: Option<&'static str>,
    /// This client's registry entry (SHOW CLIENTS state), set by `client::handle`.
    pub entry: Option<Arc<ClientEntry>>,
    /// The client's span (the one current when the session was created), named as the
    /// parent of the session's events.
    pub(super) span: tracing::Span,
}

/// What a logged-in client keeps for its link cycle: nothing else of the login (secrets,
/// startup packet, verifier state) outlives it.
struct LoggedIn {
    pool: Arc<Pool>,
    mode: PoolMode,
    params: ClientParams,
    cancel: CancelHandle,
    /// The server already linked (session mode), if any.
    held: Option<PooledServer>,
    /// Session mode: the key with the server's pid.
    own_key: Option<super::backend_key::SessionKey>,
    /// The client's place under the client limits.
    admission: ClientGuard,
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
        let (replication, refused) = match super::replication::take_kind(&mut startup) {
            Ok(kind) => (kind, None),
            Err(msg) => (None, Some(msg)),
        };
        let ignored = ctx.config().settings.ignore_startup_parameters.clone();
        crate::protocol::startup::drop_ignored(&mut startup, &ignored);
        Ok(Session {
            id,
            ctx,
            stream,
            user,
            database,
            startup,
            replication,
            refused,
            entry: None,
            span: tracing::Span::current(),
        })
    }

    /// Runs the session to its end: authentication, admission, login replies, then the
    /// link cycle.
    ///
    /// Memory: an idle client is this future inside its task. The login runs in a box
    /// freed before the first query, and each link in a box freed when it ends (see
    /// `serve`), so the task keeps only what a parked client needs.
    pub async fn run(mut self) {
        let Some(login) = Box::pin(self.log_in()).await else {
            return;
        };
        let LoggedIn {
            pool,
            mode,
            mut params,
            cancel,
            held,
            own_key,
            admission,
        } = login;
        // What only the login needed goes before the client idles (the registry entry
        // keeps its identity for SHOW CLIENTS).
        self.startup = Vec::new();
        self.database = String::new();
        self.serve(&pool, mode, &mut params, &cancel, held).await;
        drop((own_key, admission));
    }

    /// Authenticates and admits the client and sends its login replies; `None` when the
    /// session ended during login (refused, left, or a replication client served to its
    /// end).
    async fn log_in(&mut self) -> Option<LoggedIn> {
        if let Some(msg) = self.refused {
            self.tell(&ClientError::fatal(ErrorKind::InvalidParameter, msg))
                .await;
            return None;
        }
        let admitted = self.authenticate().await?;
        let (pool, admission) = self.admit(&admitted).await?;
        let mode = self.ctx.pool_mode_for(&self.database, &self.user);
        if config_logs_connections(&*self.ctx) {
            info!(parent: &self.span, user = %self.user, db = %self.database, "login");
        }
        if let Some(kind) = self.replication {
            self.serve_replication(&pool, kind).await;
            return None;
        }
        let cancel = self.ctx.cancel().register();
        let mut held = self.first_server(&pool, mode).await?;
        // Login replies need the server's parameters; the first client of a pool waits
        // for a server connection, later ones are answered from the cached values.
        let welcome = match pool.welcome() {
            Some(w) => w,
            None => {
                held = Some(Box::pin(self.checkout(&pool)).await?);
                pool.welcome().unwrap_or_default()
            }
        };
        let mut params = ClientParams::from_startup(&welcome, &self.startup);
        // Session mode: the key carries the server's real pid; it lives as long as the
        // session.
        let own_key = match mode {
            PoolMode::Session if held.is_some() => {
                let adopted = self.adopt_server(&pool, &mut params, &mut held, &cancel);
                Some(Box::pin(adopted).await?)
            }
            _ => None,
        };
        let pid = own_key.as_ref().map_or(cancel.pid, |k| k.pid());
        let notice = self.ctx.config().settings.login_notify_message.clone();
        let buf = login_replies(&params, pid, &cancel, notice.as_deref());
        let sent = self.stream.send(&buf).await.is_ok();
        if !sent || mode != PoolMode::Session {
            if let Some(s) = held.take() {
                pool.checkin(s);
            }
        }
        sent.then_some(LoggedIn {
            pool,
            mode,
            params,
            cancel,
            held,
            own_key,
            admission,
        })
    }

    /// Session mode: the client's own server before the login replies (real pid, the
    /// server's values) when one is free; otherwise the client logs in now and gets a
    /// server at its first query, as in PgBouncer (its key then carries pgfunnel's pid).
    /// `None` when the checkout failed (the client was told).
    async fn first_server(&mut self, pool: &Pool, mode: PoolMode) -> Option<Option<PooledServer>> {
        if mode == PoolMode::Session && pool.has_free_slot() {
            return Some(Some(Box::pin(self.checkout(pool)).await?));
        }
        Some(None)
    }

    /// A replication client: a dedicated server, bytes passed through (`client::replication`).
    async fn serve_replication(
        &mut self,
        pool: &Arc<Pool>,
        kind: super::replication::ReplicationKind,
    ) {
        let cancel = self.ctx.cancel().register();
        let client = super::replication::ReplicationClient {
            kind,
            startup: &self.startup,
            cancel: &cancel,
            entry: self.entry.as_ref(),
            span: &self.span,
        };
        Box::pin(super::replication::serve(&mut self.stream, pool, client)).await;
    }

    /// Authenticates the client within client_login_timeout; `None` when it was refused
    /// (and told why), left, or ran out of time.
    async fn authenticate(&mut self) -> Option<Admitted> {
        let login_timeout = self.ctx.config().settings.client_login_timeout;
        let admitted = Box::pin(
            access::admit_for(
                &*self.ctx,
                &mut self.stream,
                &self.user,
                &self.database,
                self.replication,
            )
            .instrument(self.span.clone()),
        );
        let Some(admitted) = within(login_timeout, admitted).await else {
            warn!(parent: &self.span, "client_login_timeout during authentication");
            return None;
        };
        let error = match admitted {
            Ok(a) => return Some(a),
            Err(Denied::Protocol(e)) => {
                note_close(&self.entry, close_reason::for_broken_login(&e));
                debug!(parent: &self.span, error = %e, "client left or misbehaved during authentication");
                let msg = "invalid authentication exchange";
                ClientError::fatal(ErrorKind::Protocol, msg)
            }
            Err(denied) => {
                warn!(parent: &self.span, user = %self.user, reason = %denied, "client authentication failed");
                note_close(&self.entry, close_reason::for_denied(&denied));
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
            let reason = CloseReason::NoSuchDatabase(self.database.clone());
            note_close(&self.entry, reason);
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
                note_close(&self.entry, CloseReason::ConnectionsExceeded(limit));
                let msg = format!("client connections exceeded ({limit})");
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
}

/// The login replies: the parameters the client expects (sorted), its cancel key (with
/// `pid`), login_notify_message as a notice when set, and ReadyForQuery.
fn login_replies(
    params: &ClientParams,
    pid: i32,
    cancel: &CancelHandle,
    notice: Option<&str>,
) -> BytesMut {
    // How many parameters a Postgres 15 server reports at login (a usual welcome).
    const LOGIN_PARAMETERS_USUAL: usize = 16;
    let mut names = Vec::with_capacity(LOGIN_PARAMETERS_USUAL);
    names.extend(params.expected.iter());
    // Names are unique: an unstable sort gives the same order, without its scratch space.
    names.sort_unstable();
    // Each ParameterStatus is a tag, a length and two NULs around its name and value;
    // BackendKeyData and ReadyForQuery add 19 bytes. One allocation for the whole reply.
    let statuses: usize = names.iter().map(|(k, v)| k.len() + v.len() + 7).sum();
    let notice_room = notice.map_or(0, |n| n.len() + 64);
    let mut buf = BytesMut::with_capacity(statuses + 19 + notice_room);
    for (k, v) in names {
        messages::put_parameter_status(&mut buf, k, v);
    }
    messages::put_backend_key(&mut buf, pid, cancel.secret_i32());
    if let Some(notice) = notice {
        messages::put_notice(&mut buf, notice);
    }
    messages::put_ready(&mut buf, b'I');
    buf
}

fn config_logs_connections(app: &dyn SessionContext) -> bool {
    app.config().settings.log_connections
}

#[path = "own_server.rs"]
mod own_server;
#[path = "self_notify.rs"]
mod self_notify;
#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
