//! A client waiting for a server, bounded as PgBouncer bounds it: besides the pool's own
//! `query_wait_timeout`, the client's `query_timeout` (a query waiting for a server counts
//! as running, the first server login of a pool included), and `SHUTDOWN WAIT_FOR_SERVERS`
//! (a client that starts a transaction or is queued gets `server shutting down`).
//! Both bounds end the client with `08P01`, the code PgBouncer uses for every disconnect
//! it initiates, so drivers drop the connection and reconnect as they do behind PgBouncer.
//! `Session::checkout` is that wait as a session sees it: notices while queued, then the
//! server, or the client told why none came.

use std::time::Duration;

use tracing::warn;

use super::context::SessionContext;
use super::registry::{ClientEntry, ClientState};
use crate::error::{ClientError, ErrorKind};
use crate::logging::close_reason::{note_close, CloseReason};
use crate::pool::{Pool, PoolError, PooledServer, Stop, Tell};
use crate::protocol::messages;
use bytes::BytesMut;

/// Message of a client that waited for a server longer than its query_timeout.
pub const QUERY_TIMEOUT: &str = "query timeout";
/// Message of a client refused a server during `SHUTDOWN WAIT_FOR_SERVERS`.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// Why waiting for a server ended without one.
#[derive(Debug)]
pub enum WaitEnd {
    /// The pool's own failure (query_wait_timeout, connect failure, closed pool).
    Pool(PoolError),
    /// query_timeout passed while waiting.
    QueryTimeout,
    /// pgfunnel is shutting down and lends no more servers.
    ShuttingDown,
}

/// Checks a server out of `pool`, bounded by `query_timeout` (0 = off) and by a shutdown
/// that stops lending servers.
pub async fn wait_for_server(
    ctx: &dyn SessionContext,
    pool: &Pool,
    notice: Option<(Duration, Tell<'_>)>,
    query_timeout: Duration,
) -> Result<PooledServer, WaitEnd> {
    if ctx.lends_no_servers() {
        return Err(WaitEnd::ShuttingDown);
    }
    // The pool wakes its waiting clients at shutdown: no subscription per checkout.
    let lends_none = || ctx.lends_no_servers();
    let stop = Stop {
        signal: ctx.shutdown_signal(),
        lends_none: &lends_none,
    };
    let timer = async {
        if query_timeout.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(query_timeout).await;
    };
    tokio::select! {
        biased;
        r = pool.checkout_noticed(notice, Some(&stop)) => r.map_err(|e| match e {
            PoolError::Closed => WaitEnd::ShuttingDown,
            e => WaitEnd::Pool(e),
        }),
        _ = timer => Err(WaitEnd::QueryTimeout),
    }
}

/// What ends a client whose wait ended with `QueryTimeout` or `ShuttingDown`: FATAL
/// `08P01` with PgBouncer's words (logged, and noted as the client's close reason).
/// `None` for pool failures, which the session reports itself.
pub fn refusal(end: &WaitEnd, entry: Option<&ClientEntry>) -> Option<ClientError> {
    let (message, hint) = match end {
        WaitEnd::QueryTimeout => (
            QUERY_TIMEOUT,
            Some("query_timeout passed while the client waited for a server; raise query_timeout or pool_size, or find what holds the servers (SHOW POOLS)"),
        ),
        WaitEnd::ShuttingDown => (SHUTTING_DOWN, None),
        WaitEnd::Pool(_) => return None,
    };
    warn!(
        reason = message,
        "closing client while it waited for a server"
    );
    if let Some(e) = entry {
        e.set_close_reason(crate::logging::close_reason::CloseReason::Other(
            message.into(),
        ));
    }
    let error = ClientError::fatal(ErrorKind::Timeout, message);
    Some(match hint {
        Some(h) => error.with_hint(h),
        None => error,
    })
}

impl super::session::Session {
    /// Waits for a server of `pool` as a queued client: `query_wait_notify` notices while
    /// waiting, then the server, or the client told why none came (and `None`).
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
        let query_timeout = self.ctx.link_timeouts(&self.user).query;
        let waited = wait_for_server(&*self.ctx, pool, notice, query_timeout);
        let result = match waited.await {
            Ok(s) => Ok(s),
            Err(WaitEnd::Pool(e)) => Err(e),
            Err(end) => {
                let error = refusal(&end, self.entry.as_deref());
                if let Some(error) = error {
                    self.tell(&error).await;
                }
                return None;
            }
        };
        match result {
            Ok(s) => {
                self.mark(ClientState::Active);
                Some(s)
            }
            Err(PoolError::Timeout) => {
                note_close(&self.entry, CloseReason::QueryWaitTimeout);
                let msg = "query_wait_timeout: no server connection became free in time";
                let hint = "raise pool_size or query_wait_timeout, or find what holds the \
                            servers (SHOW POOLS)";
                let error = ClientError::fatal(ErrorKind::PoolTimeout, msg).with_hint(hint);
                self.tell(&error).await;
                None
            }
            Err(PoolError::Connect(e)) => {
                note_close(&self.entry, CloseReason::ServerLoginFailed);
                self.tell_server_error(&e).await;
                None
            }
            Err(PoolError::Closed) => {
                note_close(&self.entry, CloseReason::ShuttingDown);
                let error = ClientError::fatal(ErrorKind::Shutdown, "pgfunnel is shutting down");
                self.tell(&error).await;
                None
            }
        }
    }
}
