//! A client waiting for a server, bounded as PgBouncer bounds it: besides the pool's own
//! `query_wait_timeout`, the client's `query_timeout` (a query waiting for a server counts
//! as running, the first server login of a pool included), and `SHUTDOWN WAIT_FOR_SERVERS`
//! (a client that starts a transaction or is queued gets `server shutting down`).
//! Both end the client with `08P01`, the code PgBouncer uses for every disconnect it
//! initiates, so drivers drop the connection and reconnect as they do behind PgBouncer.

use std::time::Duration;

use tracing::warn;

use super::context::SessionContext;
use super::registry::ClientEntry;
use crate::error::{ClientError, ErrorKind};
use crate::pool::{Pool, PoolError, PooledServer, Tell};

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
    let stopping = async {
        loop {
            ctx.shutdown_signal().cancelled().await;
            if ctx.lends_no_servers() {
                return;
            }
            // WAIT_FOR_CLIENTS: keep waiting (a later request may escalate).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let timer = async {
        if query_timeout.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(query_timeout).await;
    };
    tokio::select! {
        biased;
        r = pool.checkout_noticed(notice) => r.map_err(WaitEnd::Pool),
        _ = timer => Err(WaitEnd::QueryTimeout),
        _ = stopping => Err(WaitEnd::ShuttingDown),
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
