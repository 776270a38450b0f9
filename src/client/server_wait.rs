//! A client waiting for a server, bounded as PgBouncer bounds it: besides the pool's own
//! `query_wait_timeout`, the client's `query_timeout` (a query waiting for a server counts
//! as running, the first server login of a pool included), and `SHUTDOWN WAIT_FOR_SERVERS`
//! (a client that starts a transaction or is queued gets `server shutting down`).
//! Both end the client with `08P01`, the code PgBouncer uses for every disconnect it
//! initiates, so drivers drop the connection and reconnect as they do behind PgBouncer.

use std::time::Duration;

use tracing::warn;

use super::registry::ClientEntry;
use super::session::send_error;
use crate::app::App;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::pool::{Pool, PoolError, PooledServer, Tell};
use crate::protocol::messages::Severity;
use crate::shutdown::ShutdownMode;

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

/// Whether a shutdown that stops lending servers is under way (WAIT_FOR_SERVERS or
/// immediate; WAIT_FOR_CLIENTS keeps serving connected clients).
pub fn lends_no_servers(app: &App) -> bool {
    app.stopping
        .requested()
        .is_some_and(|m| m != ShutdownMode::WaitForClients)
}

/// Checks a server out of `pool`, bounded by `query_timeout` (0 = off) and by a shutdown
/// that stops lending servers.
pub async fn wait_for_server(
    app: &App,
    pool: &Pool,
    notice: Option<(Duration, Tell<'_>)>,
    query_timeout: Duration,
) -> Result<PooledServer, WaitEnd> {
    if lends_no_servers(app) {
        return Err(WaitEnd::ShuttingDown);
    }
    let stopping = async {
        loop {
            app.shutdown.cancelled().await;
            if lends_no_servers(app) {
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

/// Ends a client whose wait ended with `QueryTimeout` or `ShuttingDown`: FATAL `08P01`
/// with PgBouncer's words. (Pool failures are reported by the session.)
pub async fn refuse(stream: &mut Stream, end: &WaitEnd, entry: Option<&ClientEntry>) {
    let (message, hint) = match end {
        WaitEnd::QueryTimeout => (
            QUERY_TIMEOUT,
            Some("query_timeout passed while the client waited for a server; raise query_timeout or pool_size, or find what holds the servers (SHOW POOLS)"),
        ),
        WaitEnd::ShuttingDown => (SHUTTING_DOWN, None),
        WaitEnd::Pool(_) => return,
    };
    warn!(
        reason = message,
        "closing client while it waited for a server"
    );
    if let Some(e) = entry {
        e.set_close_reason(message);
    }
    let code = ErrorKind::Timeout.sqlstate();
    send_error(stream, Severity::Fatal, code, message, hint).await;
}
