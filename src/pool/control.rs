//! Operator actions on one pool (RECONNECT, live pool_size and target changes) and the
//! views SHOW SERVERS needs. Kept apart from the checkout/checkin path in `mod.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pool;
use crate::logging::close_reason::CloseReason;
use crate::server::{ServerInfo, ServerTarget};

impl Pool {
    /// Whether a connection created at `created` was marked for closing by RECONNECT.
    pub(super) fn close_needed(&self, created: Instant) -> bool {
        match self.close_before_us.load(Ordering::Relaxed) {
            0 => false,
            us => created.saturating_duration_since(self.born) < Duration::from_micros(us),
        }
    }

    /// Where new connections go.
    pub fn target(&self) -> Arc<ServerTarget> {
        self.target.load_full()
    }

    /// Points new connections at `target` (reload changed host, port, dbname or password)
    /// and retires the existing ones as with [`Pool::reconnect`].
    pub fn retarget(&self, target: ServerTarget) {
        self.target.store(Arc::new(target));
        self.mark_all_close_needed();
        self.close_idle_because(CloseReason::DatabaseConfigChanged);
    }

    /// RECONNECT: closes idle connections now and every lent one when it comes back.
    pub fn reconnect(&self) {
        self.mark_all_close_needed();
        self.close_idle_because(CloseReason::ObsoleteConnection);
    }

    fn mark_all_close_needed(&self) {
        let us = self.born.elapsed().as_micros() as u64 + 1;
        self.close_before_us.store(us, Ordering::Relaxed);
    }

    /// The effective pool_size (0 = unlimited).
    pub fn pool_size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Applies a new pool_size to later checkouts; lent connections stay. Changes to or from
    /// 0 (unlimited) are not applied live (returns false).
    pub fn resize(&self, new_size: usize) -> bool {
        let old = self.size.load(Ordering::Relaxed);
        if old == new_size {
            return true;
        }
        if old == 0 || new_size == 0 {
            return false;
        }
        self.size.store(new_size, Ordering::Relaxed);
        // Growing hands the new slots to queued clients first; slots on loan beyond a
        // shrunk size are retired as they come back.
        self.queue.resize(old, new_size);
        true
    }

    /// Idle connections for SHOW SERVERS: identity, last use and whether RECONNECT marked it.
    pub fn idle_servers(&self) -> Vec<(Arc<ServerInfo>, Instant, bool)> {
        self.queue.with_idle(|idle| {
            idle.iter()
                .map(|c| (c.info.clone(), c.last_used, self.close_needed(c.created)))
                .collect()
        })
    }

    /// Whether a lent connection created at `created` will be closed on release.
    pub fn is_close_needed(&self, created: Instant) -> bool {
        self.close_needed(created)
    }

    /// Waits until no lent connection is marked for closing (WAIT_CLOSE). Cancel safe.
    pub async fn wait_marked_returned(&self) {
        let _watch = self.stats.watch_releases();
        loop {
            let notified = self.stats.released_signal();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let marked = self
                .stats
                .on_loan()
                .iter()
                .any(|i| self.close_needed(i.created));
            if !marked {
                return;
            }
            notified.await;
        }
    }
}
