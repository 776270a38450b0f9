//! The min_pool_size filler. The janitor calls [`Pool::fill_min`] every second; each call
//! makes single connect attempts (one connect_timeout at most each) and holds a pool slot
//! only during an attempt. While the server is down, calls after a failure are skipped
//! for a backoff that doubles up to [`MAX_BACKOFF`], so an outage costs one attempt every
//! few seconds and never a slot between attempts. An attempt in progress gives its slot
//! up as soon as a client queues for one; clients always come first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::retry::Retry;
use super::Pool;

/// First pause after a failed fill attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between fill attempts while the server stays unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often an attempt in progress checks whether a client queued for its slot.
const YIELD_CHECK: Duration = Duration::from_millis(25);

/// Creates the pools of forced-user databases with a min_pool_size, so the janitor keeps
/// them warm before any client comes, as PgBouncer does (other pools exist once a client
/// logged in). The `*` fallback entry is a template, not a database: skipped.
pub fn open_forced_pools(app: &crate::app::App) {
    let config = app.config();
    for db in &config.databases {
        let Some(user) = &db.user else { continue };
        if db.name == crate::config::FALLBACK_NAME || config.effective_min_pool_size(db) == 0 {
            continue;
        }
        let key = super::PoolKey {
            database: db.name.clone(),
            user: user.clone(),
        };
        if !app.pools.contains_key(&key) {
            let _ = app.pool_as(&db.name, user);
        }
    }
}

/// A pool's filler state: whether a fill runs, and the backoff after failures.
#[derive(Debug, Default)]
pub(super) struct Filler {
    running: AtomicBool,
    /// No attempt before this; the pause to use after the next failure.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

/// Marks a fill as running until dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Filler {
    /// Claims the filler unless a fill runs already or a backoff is still due.
    fn start(&self) -> Option<Running<'_>> {
        let backing_off = crate::panic::lock(&self.backoff)
            .as_ref()
            .is_some_and(|(until, _)| Instant::now() < *until);
        if backing_off || self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Running(&self.running))
    }

    fn failed(&self) {
        let mut b = crate::panic::lock(&self.backoff);
        let pause = b.map_or(FIRST_BACKOFF, |(_, last)| (last * 2).min(MAX_BACKOFF));
        *b = Some((Instant::now() + pause, pause));
    }

    fn succeeded(&self) {
        *crate::panic::lock(&self.backoff) = None;
    }
}

impl Pool {
    /// Opens connections until min_pool_size is reached (called by the janitor), one
    /// attempt each; stops at the first failure, when the pool is paused or full, or when a
    /// client is waiting.
    pub async fn fill_min(&self) {
        let want = self.settings.min_pool_size;
        if want == 0 {
            return;
        }
        let Some(_running) = self.filler.start() else {
            return;
        };
        while self.idle_count() + self.stats.active.load(Ordering::Relaxed) < want {
            if self.gate.is_paused() || self.client_waits() {
                return;
            }
            let Some(permit) = self.queue.try_slot() else {
                return;
            };
            let Some(slots) = self.try_limit_slots() else {
                return;
            };
            let opened = tokio::select! {
                r = self.open(Retry::Never) => r,
                () = self.client_queued() => {
                    debug!("min_pool_size connect abandoned: a client waits for the slot");
                    return;
                }
            };
            match opened {
                Ok(conn) => {
                    let mut conn = Box::new(conn);
                    conn.slots = slots;
                    conn.last_used = std::time::Instant::now();
                    self.note_welcome(&conn);
                    // To a client that queued meanwhile, else idle.
                    self.queue.checkin(permit, Some(conn));
                    self.returned.notify_one();
                    self.filler.succeeded();
                }
                Err(e) => {
                    debug!(error = %e, "min_pool_size connect failed; backing off");
                    self.filler.failed();
                    return;
                }
            }
        }
    }

    fn client_waits(&self) -> bool {
        self.stats.waiting.load(Ordering::Relaxed) > 0
    }

    /// Resolves once a client is waiting for a slot.
    async fn client_queued(&self) {
        while !self.client_waits() {
            tokio::time::sleep(YIELD_CHECK).await;
        }
    }
}

#[cfg(test)]
mod tests;
