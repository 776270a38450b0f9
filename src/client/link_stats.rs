//! Query and transaction accounting for the relay: bytes each way, queries and transactions
//! with their durations, added to the pool's counters and histograms as they finish. Costs
//! two clock reads per query; no allocation, no lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::pool::PoolStats;

/// Prepared-statement traffic seen by the rewriter since it was last drained (SHOW STATS
/// `client_parse_count`, `server_parse_count`, `bind_count`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PreparedCounts {
    /// Named Parse messages from the client.
    pub client_parses: u32,
    /// Parse messages pgfunnel sent to the server (the client's, or re-prepared for a Bind).
    pub server_parses: u32,
    /// Bind messages of named statements.
    pub binds: u32,
}

/// Per-client accounting state; `None` pool = counting off (tests, admin console).
#[derive(Debug)]
pub struct LinkStats {
    pool: Option<Arc<PoolStats>>,
    /// The client's span, parent of the pin event.
    span: tracing::Span,
    query_start: Option<Instant>,
    xact_start: Option<Instant>,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            pool: None,
            span: tracing::Span::none(),
            query_start: None,
            xact_start: None,
        }
    }
}

impl LinkStats {
    /// Accounting into `pool`'s counters.
    pub fn for_pool(pool: &Arc<PoolStats>, span: tracing::Span) -> LinkStats {
        LinkStats {
            pool: Some(pool.clone()),
            span,
            query_start: None,
            xact_start: None,
        }
    }

    /// `n` bytes arrived from the client.
    #[inline]
    pub fn client_bytes(&self, n: usize) {
        if let Some(p) = &self.pool {
            p.received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Adds the rewriter's prepared-statement counts.
    pub fn prepared(&self, counts: PreparedCounts) {
        if let Some(p) = &self.pool {
            p.count_prepared(counts);
        }
    }

    /// `n` bytes arrived from the server.
    #[inline]
    pub fn server_bytes(&self, n: usize) {
        if let Some(p) = &self.pool {
            p.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Counts a client pinned to its server (once per client; the caller guarantees that).
    pub fn pinned(&self, reason: &'static str) {
        if let Some(pool) = &self.pool {
            pool.timers.pins.inc();
        }
        tracing::info!(parent: &self.span, reason, "client pinned to its server");
    }

    /// Counts a client held back by `max_client_pipeline` (once each time it fills up).
    pub fn pipeline_full(&self) {
        if let Some(pool) = &self.pool {
            pool.timers.pipeline_full.inc();
        }
    }

    /// Counts a client disconnected for overflowing its notification queue.
    pub fn notification_overflow(&self) {
        if let Some(pool) = &self.pool {
            pool.timers.notification_overflows.inc();
        }
    }

    /// Counts a client message refused before reaching a server.
    pub fn refused(&self) {
        if let Some(pool) = &self.pool {
            pool.timers.refusals.inc();
        }
    }

    /// The client sent a message that starts or continues a request (Query, Parse, Bind,
    /// Execute, Sync, FunctionCall...): starts the query and transaction clocks if stopped.
    #[inline]
    pub fn request(&mut self) {
        if self.pool.is_none() || self.query_start.is_some() {
            return;
        }
        let now = Instant::now();
        self.query_start = Some(now);
        self.xact_start.get_or_insert(now);
    }

    /// The server sent ReadyForQuery with `status`: a query ended, and a transaction too
    /// when the status is `I`.
    #[inline]
    pub fn ready(&mut self, status: u8) {
        let Some(p) = &self.pool else { return };
        let Some(q) = self.query_start.take() else {
            return;
        };
        let now = Instant::now();
        let took = now.duration_since(q);
        p.queries.fetch_add(1, Ordering::Relaxed);
        p.query_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        p.timers.query.observe(took.as_secs_f64());
        if status == b'I' {
            if let Some(x) = self.xact_start.take() {
                let took = now.duration_since(x);
                p.xacts.fetch_add(1, Ordering::Relaxed);
                p.xact_us
                    .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                p.timers.xact.observe(took.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Timers;

    #[test]
    fn counts_queries_and_transactions() {
        let stats = Arc::new(PoolStats::new(Timers::detached()));
        let mut l = LinkStats::for_pool(&stats, tracing::Span::none());
        l.client_bytes(10);
        l.request();
        l.request(); // a pipeline: still one query until ReadyForQuery
        l.ready(b'T');
        l.request();
        l.ready(b'I');
        l.ready(b'I'); // a stray ReadyForQuery without a request counts nothing
        l.server_bytes(20);
        let t = stats.totals();
        assert_eq!((t.query_count, t.xact_count), (2, 1));
        assert_eq!((t.bytes_received, t.bytes_sent), (10, 20));
        assert_eq!(stats.timers.query.get_sample_count(), 2);
        assert_eq!(stats.timers.xact.get_sample_count(), 1);
        let mut off = LinkStats::default();
        off.request();
        off.ready(b'I');
    }
}
