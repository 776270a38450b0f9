//! Pool maintenance: idle connections closed past server_idle_timeout or server_lifetime
//! (the janitor's `reap`), on RECONNECT or shutdown, or one at a time to free a slot of a
//! shared limit.

use std::time::Instant;

use tracing::debug;

use super::Pool;
use crate::server::ServerConnection;

impl Pool {
    /// Closes one idle connection (to free a shared-limit slot); false when none is idle.
    pub fn close_one_idle(&self) -> bool {
        // the least recently used one
        let conn = self
            .queue
            .with_idle(|idle| (!idle.is_empty()).then(|| idle.remove(0)));
        let Some(mut conn) = conn else {
            return false;
        };
        // Free the shared-limit slots now, not after the goodbye round trip.
        conn.slots.clear();
        tokio::spawn(conn.close_because(crate::logging::close_reason::CloseReason::Evicted));
        true
    }

    pub(super) fn expired(&self, conn: &ServerConnection) -> bool {
        self.expired_at(conn, Instant::now())
    }

    /// [`Pool::expired`] against a time the caller already read (one clock read per checkin).
    pub(super) fn expired_at(&self, conn: &ServerConnection, now: Instant) -> bool {
        let life = self.settings.server_lifetime;
        (!life.is_zero() && now.saturating_duration_since(conn.created) >= life)
            || self.close_needed(conn.created)
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime and those the
    /// server closed. Called periodically by the janitor.
    pub fn reap(&self) {
        let idle_limit = self.settings.server_idle_timeout;
        self.queue.with_idle(|idle| {
            let mut keep = Vec::with_capacity(idle.len());
            for mut conn in idle.drain(..) {
                let too_idle = !idle_limit.is_zero() && conn.last_used.elapsed() >= idle_limit;
                if too_idle || self.expired(&conn) || !conn.is_usable() {
                    debug!(server = conn.id, "closing idle server");
                    self.close_stale(conn, too_idle);
                } else {
                    keep.push(conn);
                }
            }
            *idle = keep;
        });
    }

    /// Closes every idle connection (RECONNECT, shutdown).
    pub fn close_idle(&self) {
        self.close_idle_because(crate::logging::close_reason::CloseReason::ObsoleteConnection);
    }
}
