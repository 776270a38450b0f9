//! One client's life after the handshake: authentication, login replies, then the loop
//! idle -> checkout -> parameter sync -> relay -> release, and cleanup so that a server
//! never goes back to the pool dirty.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tracing::{debug, info, warn, Instrument};

use super::access::{self, Denied};
use super::link_stats::LinkStats;
use super::params::{ClientParams, Reported};
use super::registry::{ClientEntry, ClientState};
use super::relay::{IdleEnd, LinkState, Relay, RelayEnd, RelayMode};
use super::rewrite::Rewriter;
use super::statement::{recognise, recognise_listen, PinReason, Recognised};
use super::timeouts::{Expired, LinkTimeouts};
use crate::app::App;
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::PoolMode;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::pool::listen::{Subscription, QUEUE_FULL_SQLSTATE};
use crate::pool::{Pool, PoolError, PooledServer, Tell};
use crate::protocol::messages::{self, Severity};
use crate::server::ServerError;

/// How waiting for an idle client's next request ended.
enum Idle {
    /// The relay's outcome (a request, or the client left or misbehaved).
    End(IdleEnd),
    /// client_idle_timeout passed.
    Timeout,
    /// A notification for this client could not be queued; `mid_message` when one was
    /// being written to the client at that moment.
    QueueFull { mid_message: bool },
}

/// A client that finished the handshake.
pub struct Session {
    id: u64,
    app: Arc<App>,
    stream: Stream,
    user: String,
    database: String,
    startup: Vec<(String, String)>,
    /// Set for a replication client (served by `client::replication`, never pooled).
    replication: Option<super::replication::ReplicationKind>,
    /// This client's registry entry (SHOW CLIENTS state), set by `client::handle`.
    pub entry: Option<Arc<ClientEntry>>,
    /// The client's span (the one current when the session was created), named as the
    /// parent of the session's events.
    span: tracing::Span,
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
pub async fn send_error(
    stream: &mut Stream,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut buf = BytesMut::new();
    messages::put_error(&mut buf, severity, code, message, hint);
    let _ = stream.send(&buf).await;
}

async fn send_fatal(stream: &mut Stream, kind: ErrorKind, message: &str) {
    send_error(stream, Severity::Fatal, kind.sqlstate(), message, None).await;
}

/// Forwards a server-side failure to the client: the server's own SQLSTATE and message
/// when it sent one, otherwise 08006 without internal addresses.
async fn send_server_error(stream: &mut Stream, e: &ServerError, span: &tracing::Span) {
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
        ServerError::Auth(_) => {
            // pgfunnel cannot do what the server asks (a static reason, no secrets).
            warn!(parent: span, error = %e, "server login failed");
            send_fatal(stream, ErrorKind::ServerUnavailable, &e.to_string()).await
        }
        ServerError::Tls(io) => {
            warn!(parent: span, error = %e, "server login failed");
            let text = crate::server::tls::failure_message(io);
            send_fatal(stream, ErrorKind::ServerUnavailable, &text).await
        }
        other => {
            warn!(parent: span, error = %other, "server login failed");
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
        id: u64,
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
        let replication = match super::replication::take_kind(&mut startup) {
            Ok(kind) => kind,
            Err(msg) => return Err((stream, msg)),
        };
        let ignored = app.config().settings.ignore_startup_parameters.clone();
        crate::protocol::startup::drop_ignored(&mut startup, &ignored);
        Ok(Session {
            id,
            app,
            stream,
            user,
            database,
            startup,
            replication,
            entry: None,
            span: tracing::Span::current(),
        })
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let config = self.app.config();
        let login_timeout = config.settings.client_login_timeout;
        let admitted = Box::pin(
            access::admit_for(
                &self.app,
                &mut self.stream,
                &self.user,
                &self.database,
                self.replication,
            )
            .instrument(self.span.clone()),
        );
        let admitted = if login_timeout.is_zero() {
            admitted.await
        } else {
            match tokio::time::timeout(login_timeout, admitted).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(parent: &self.span, "client_login_timeout during authentication");
                    return;
                }
            }
        };
        let (secret, outcome) = match admitted {
            Ok(a) => (a.secret, a.outcome),
            Err(Denied::Protocol(e)) => {
                debug!(parent: &self.span, error = %e, "client left or misbehaved during authentication");
                let msg = "invalid authentication exchange";
                return send_fatal(&mut self.stream, ErrorKind::Protocol, msg).await;
            }
            Err(denied) => {
                warn!(parent: &self.span, user = %self.user, reason = %denied, "client authentication failed");
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
            pool.target().credential.learn(secret.as_ref(), key);
        }
        let _slot = match self.app.admit_client(&self.database, &self.user) {
            Ok(slot) => slot,
            Err(limit) => {
                warn!(parent: &self.span, limit, "client limit reached");
                let msg = format!("client connections exceeded ({limit})");
                return send_fatal(&mut self.stream, ErrorKind::TooManyClients, &msg).await;
            }
        };
        pool.stats.client_logged_in();
        let mode = self.app.pool_mode_for(&self.database, &self.user);
        drop(config);
        if config_logs_connections(&self.app) {
            info!(parent: &self.span, user = %self.user, db = %self.database, "login");
        }
        if let Some(kind) = self.replication {
            return self.serve_replication(&pool, kind).await;
        }
        let cancel = self.app.cancel.register();
        // Login replies need the server's parameters; the first client of a pool waits
        // for a server connection, later ones are answered from the cached values.
        let mut held = None;
        if mode == PoolMode::Session {
            // Its own server before the login replies (real pid, server's values).
            let Some(server) = Box::pin(self.checkout(&pool)).await else {
                return;
            };
            held = Some(server);
        }
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
        let own_key = match mode {
            PoolMode::Session => {
                let adopted = self.adopt_server(&pool, &mut params, &mut held, &cancel);
                let Some(key) = Box::pin(adopted).await else {
                    return;
                };
                Some(key)
            }
            _ => None,
        };
        let mut buf = BytesMut::new();
        let mut names: Vec<_> = params.expected.iter().collect();
        names.sort();
        for (k, v) in names {
            messages::put_parameter_status(&mut buf, k, v);
        }
        let pid = own_key.as_ref().map_or(cancel.pid, |k| k.pid());
        messages::put_backend_key(&mut buf, pid, cancel.secret_i32());
        messages::put_ready(&mut buf, b'I');
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
        drop((buf, welcome, secret));
        self.startup = Vec::new();
        Box::pin(self.serve(&pool, mode, &mut params, &cancel, held)).await;
    }

    /// A replication client: a dedicated server, bytes passed through (`client::replication`).
    async fn serve_replication(
        &mut self,
        pool: &Arc<Pool>,
        kind: super::replication::ReplicationKind,
    ) {
        let cancel = self.app.cancel.register();
        let client = super::replication::ReplicationClient {
            kind,
            startup: &self.startup,
            cancel: &cancel,
            entry: self.entry.as_ref(),
            span: &self.span,
        };
        Box::pin(super::replication::serve(&mut self.stream, pool, client)).await;
    }

    fn mark(&self, state: ClientState) {
        if let Some(e) = &self.entry {
            e.set_state(state);
        }
    }

    async fn checkout(&mut self, pool: &Pool) -> Option<PooledServer> {
        self.mark(ClientState::Waiting);
        let notify = self.app.config().settings.query_wait_notify;
        let stream = &mut self.stream;
        // query_wait_notify: tell a queued client why it waits, then keep waiting.
        let mut tell = || {
            let mut buf = BytesMut::new();
            let msg = "no server connection available yet, client being queued";
            messages::put_notice(&mut buf, msg);
            stream.write_now(&buf);
        };
        let notice = (!notify.is_zero()).then_some((notify, &mut tell as Tell<'_>));
        let query_timeout = self.app.link_timeouts(&self.user).query;
        let waited = super::server_wait::wait_for_server(&self.app, pool, notice, query_timeout);
        let result = match waited.await {
            Ok(s) => Ok(s),
            Err(super::server_wait::WaitEnd::Pool(e)) => Err(e),
            Err(end) => {
                super::server_wait::refuse(&mut self.stream, &end, self.entry.as_deref()).await;
                return None;
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
                    Some(
                        "raise pool_size or query_wait_timeout, or find what holds the servers (SHOW POOLS)",
                    ),
                )
                .await;
                None
            }
            Err(PoolError::Connect(e)) => {
                if let Some(entry) = &self.entry {
                    entry.set_close_reason("server login failed");
                }
                send_server_error(&mut self.stream, &e, &self.span).await;
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
        relay.max_pipeline = self.app.config().settings.max_client_pipeline as usize;
        let mut listener: Option<Subscription> = None;
        let max_prepared = self.app.config().settings.max_prepared_statements as usize;
        if mode != PoolMode::Session && max_prepared > 0 {
            let registry_limit = self.app.config().settings.max_pool_prepared_statements;
            pool.statements.set_limit(registry_limit as usize);
            let mut rw = Rewriter::new(pool.statements.clone(), max_prepared);
            rw.set_max_gathered(self.app.config().settings.max_prepared_message_size as usize);
            relay.rewriter = Some(rw);
        }
        relay.stats = LinkStats::for_pool(&pool.stats, self.span.clone());
        loop {
            let mut server = match linked.take() {
                Some(s) => s,
                None => {
                    self.mark(ClientState::Idle);
                    let was_pinned = relay.tracker.pin.is_some();
                    match self
                        .wait_idle(&mut relay, timers.client_idle, &mut listener)
                        .await
                    {
                        Idle::End(IdleEnd::Request) => {
                            // A LISTEN seen while reading marks a pin; a lone one outside a
                            // transaction is served by the shared listener instead.
                            if mode != PoolMode::Session
                                && !was_pinned
                                && Box::pin(self.serve_listen(pool, &mut relay, &mut listener))
                                    .await
                            {
                                relay.tracker.pin = None;
                                continue;
                            }
                            // A lone NOTIFY of a listening client: its own notification first.
                            if mode != PoolMode::Session
                                && !was_pinned
                                && Box::pin(self.serve_notify(
                                    pool,
                                    &mut relay,
                                    &mut listener,
                                    cancel.pid,
                                ))
                                .await
                            {
                                continue;
                            }
                        }
                        Idle::End(IdleEnd::ClientGone | IdleEnd::ClientIo(_)) => return,
                        Idle::End(IdleEnd::ClientProtocol(e)) => {
                            warn!(parent: &self.span, error = %e, "client protocol violation");
                            relay.stats.refused();
                            return send_fatal(
                                &mut self.stream,
                                ErrorKind::Protocol,
                                &e.to_string(),
                            )
                            .await;
                        }
                        Idle::QueueFull { mid_message } => {
                            relay.stats.notification_overflow();
                            return self.notification_queue_full(mid_message).await;
                        }
                        Idle::Timeout => {
                            warn!(parent: &self.span, "client_idle_timeout");
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
                return send_server_error(&mut self.stream, &e, &self.span).await;
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
            if std::mem::take(&mut relay.params_changed) {
                params.invalidate();
                server.conn.synced_fp = None;
            }
            for change in relay.tracker.changes.drain(..) {
                params.apply_change(change, &mut server.conn);
            }
            if let Some((code, msg)) = timed_out {
                warn!(parent: &self.span, reason = msg, "closing client and server");
                pool.discard(server);
                return send_error(&mut self.stream, Severity::Fatal, code, msg, None).await;
            }
            match end {
                RelayEnd::Released if cancelled => {
                    debug!(
                        parent: &self.span,
                        server = server.conn.id,
                        "server had a cancel during this link: not reused"
                    );
                    pool.discard(server);
                }
                RelayEnd::Released if std::mem::take(&mut relay.tracker.uninspected_parse) => {
                    debug!(
                        parent: &self.span,
                        server = server.conn.id,
                        "a Parse too large to inspect reached this server: not reused"
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
                    warn!(parent: &self.span, error = %e, "client protocol violation");
                    relay.stats.refused();
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
                    debug!(parent: &self.span, error = %e, "server connection lost while linked");
                    pool.discard(server);
                    return send_fatal(
                        &mut self.stream,
                        ErrorKind::ServerGone,
                        "server conn crashed?",
                    )
                    .await;
                }
                RelayEnd::ServerProtocol(e) => {
                    warn!(parent: &self.span, error = %e, "server protocol violation");
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

    /// Waits for the client's next request, delivering notifications meanwhile; ends early
    /// when client_idle_timeout passed or the client's notification queue overflowed.
    async fn wait_idle(
        &mut self,
        relay: &mut Relay,
        client_idle: Duration,
        listener: &mut Option<Subscription>,
    ) -> Idle {
        let deadline = (!client_idle.is_zero()).then(|| tokio::time::Instant::now() + client_idle);
        let overflow = listener.as_ref().map(Subscription::overflow);
        let lost = || async {
            match &overflow {
                Some(o) => o.wait().await,
                None => std::future::pending().await,
            }
        };
        loop {
            let idle_timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let note = async {
                match listener.as_mut() {
                    Some(l) => l.rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A lost notification ends the client before anything else.
                biased;
                _ = lost() => return Idle::QueueFull { mid_message: false },
                end = relay.wait_for_request(&mut self.stream) => return Idle::End(end),
                _ = idle_timer => return Idle::Timeout,
                Some(msg) = note => {
                    // A client that stops reading blocks this write: the overflow ends it.
                    tokio::select! {
                        biased;
                        r = self.stream.send(&msg) => if r.is_err() {
                            return Idle::End(IdleEnd::ClientGone);
                        },
                        _ = lost() => return Idle::QueueFull { mid_message: true },
                    }
                }
            }
        }
    }

    /// Disconnects a client that lost a notification (its queue of `listen_queue_size` was
    /// full): 53200 unless a notification was half written, then just the close.
    async fn notification_queue_full(&mut self, mid_message: bool) {
        warn!(parent: &self.span, "notification queue full: closing the client");
        if mid_message {
            return;
        }
        let mut buf = BytesMut::new();
        let msg = "notification queue full: the client did not read its notifications \
                   (listen_queue_size), some were lost";
        messages::put_error(&mut buf, Severity::Fatal, QUEUE_FULL_SQLSTATE, msg, None);
        // The client may not be reading at all: do not wait for it long.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.send(&buf)).await;
    }

    /// Answers a lone `LISTEN`/`UNLISTEN` outside a transaction through the pool's shared
    /// listener. Returns false when the request is something else.
    async fn serve_listen(
        &mut self,
        pool: &Pool,
        relay: &mut Relay,
        listener: &mut Option<Subscription>,
    ) -> bool {
        let (tag, action) = match relay.lone_query().and_then(recognise_listen) {
            Some(Recognised::Listen(ch)) => ("LISTEN", Ok(ch)),
            Some(Recognised::Unlisten(ch)) => ("UNLISTEN", Err(ch)),
            _ => return false,
        };
        relay.consume_lone_query();
        let queue = self.app.config().settings.listen_queue_size as usize;
        let sub = listener.get_or_insert_with(|| pool.listen_hub().subscribe(self.id, queue));
        let confirmed = match action {
            Ok(ch) => sub.listen(ch, pool.settings.connect_timeout).await,
            Err(ch) => {
                sub.unlisten(ch.as_deref());
                true
            }
        };
        let mut buf = BytesMut::new();
        if confirmed {
            messages::put_message(&mut buf, b'C', |b| messages::put_cstr(b, tag));
        } else {
            let msg = "could not LISTEN: the shared listener connection is not available";
            messages::put_error(&mut buf, Severity::Error, "08006", msg, None);
        }
        messages::put_ready(&mut buf, b'I');
        let _ = self.stream.send(&buf).await;
        true
    }

    /// Relays one link, enforcing query_timeout (cancel), idle_transaction_timeout and
    /// transaction_timeout. Returns the relay's end and, when a timeout ends the link, the
    /// SQLSTATE and message for the client.
    async fn relay_linked(
        &mut self,
        relay: &mut Relay,
        server: &mut PooledServer,
        timers: &LinkTimeouts,
        expected: &mut Reported,
    ) -> (RelayEnd, Option<(&'static str, &'static str)>) {
        let release = relay.tracker.pin.is_none();
        let conn = &mut server.conn;
        let mut link = LinkState {
            params: &mut conn.params,
            seen: expected,
            prepared: &mut conn.prepared,
        };
        if !relay.timed {
            let end = relay
                .run(&mut self.stream, &mut conn.stream, release, &mut link)
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
                end = relay.run(&mut self.stream, &mut conn.stream, release, &mut link) => return (end, None),
                _ = sleep => {}
            }
            match timers.expired(&relay.clock, &relay.tracker) {
                Some(Expired::Query) => {
                    warn!(parent: &self.span, "query_timeout: cancelling the running query");
                    crate::cancel::send_cancel(CancelTarget {
                        addr: conn.cancel_addr.clone(),
                        key: conn.key.clone(),
                    })
                    .await;
                    relay.clock.busy_since = Some(std::time::Instant::now());
                }
                Some(Expired::IdleTransaction) => {
                    return (
                        RelayEnd::Tick,
                        Some((ErrorKind::Timeout.sqlstate(), "idle transaction timeout")),
                    )
                }
                Some(Expired::Transaction) => {
                    return (
                        RelayEnd::Tick,
                        Some((ErrorKind::Timeout.sqlstate(), "transaction timeout")),
                    )
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
        let clean = relay.server_clean() && !cancelled && !relay.tracker.uninspected_parse;
        if !clean {
            debug!(
                parent: &self.span,
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
        let pin = relay.tracker.pin;
        let must_reset =
            mode == PoolMode::Session || pin.is_some() || config.settings.server_reset_query_always;
        drop(config);
        // Only DISCARD ALL is known to undo everything a pin stands for (identity included);
        // with another reset query such a server is closed instead of reused.
        let strict = pin.is_some_and(|p| mode != PoolMode::Session || p == PinReason::Identity);
        if strict && !reset.as_deref().is_some_and(is_discard_all) {
            debug!(
                parent: &self.span,
                server = server.conn.id,
                reason = pin.map(PinReason::label),
                "pinned client left and server_reset_query is not DISCARD ALL: closing server"
            );
            return pool.discard(server);
        }
        if let (true, Some(q)) = (must_reset, reset) {
            match server.conn.run_internal(&q).await {
                Ok(b'I') => {
                    server.conn.applied.clear();
                    server.conn.synced_fp = None;
                    server.conn.prepared.clear();
                }
                _ => return pool.discard(server),
            }
        }
        if !identity_matches_pool(pool, &server) {
            debug!(
                parent: &self.span,
                server = server.conn.id,
                "server runs as another role than the pool's user: closing it"
            );
            return pool.discard(server);
        }
        pool.checkin(server);
    }
}

/// True for a reset query that is `DISCARD ALL` (any case, optional `;`).
fn is_discard_all(q: &str) -> bool {
    matches!(recognise(q.as_bytes()), Some(Recognised::ResetAll))
        && q.trim_start()
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("discard"))
}

/// True when the server reports the same `session_authorization` and `is_superuser` as
/// the pool's first server did (no identity change survived).
fn identity_matches_pool(pool: &Pool, server: &PooledServer) -> bool {
    let Some(welcome) = pool.welcome() else {
        return true;
    };
    ["session_authorization", "is_superuser"]
        .iter()
        .all(|k| welcome.get(*k) == server.conn.params.get(*k))
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
    let fp = params.fingerprint();
    if server.conn.synced_fp == Some(fp) {
        return Ok(());
    }
    let Some(sql) = params.sync_sql(&server.conn) else {
        server.conn.synced_fp = Some(fp);
        return Ok(());
    };
    let wanted: Vec<String> = params.expected.keys().cloned().collect();
    server.conn.run_internal(&sql).await?;
    params.mark_applied(&mut server.conn);
    for k in wanted {
        if let (Some(now), Some(exp)) = (server.conn.params.get(&k), params.expected.get(&k)) {
            if now != exp {
                messages::put_parameter_status(&mut relay.s2c, &k, now);
                params.expected.insert(k, now.clone());
            }
        }
    }
    params.invalidate();
    server.conn.synced_fp = Some(params.fingerprint());
    Ok(())
}

#[path = "own_server.rs"]
mod own_server;
#[path = "self_notify.rs"]
mod self_notify;
