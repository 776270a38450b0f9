//! PgBouncer's pool behaviours around a connection's life: the reuse order
//! (`server_round_robin`), why a server is closed (logged in PgBouncer's words), the
//! reserve_pool warning, live option changes on RELOAD, and dropping unused pools after
//! `pool_idle_timeout` ([`IdlePools`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use super::{Pool, PoolKey};
use crate::logging::close_reason::{log_idle_pool_dropped, log_reserve_taken, CloseReason};
use crate::server::{ServerConnection, ServerTarget};

impl Pool {
    /// The next idle connection to reuse: the most recently returned one (LIFO, warm
    /// connections stay warm), or with `server_round_robin` the one idle longest, so
    /// load spreads over every connection (and the servers behind a load balancer).
    pub(super) fn take_idle(&self) -> Option<Box<ServerConnection>> {
        let round_robin = self.target.load().options.round_robin;
        self.queue.take_idle(round_robin)
    }

    /// Why an idle or returned connection cannot be reused; `idle_too_long` when
    /// server_idle_timeout passed.
    pub(super) fn stale_reason(
        &self,
        conn: &mut ServerConnection,
        idle_too_long: bool,
    ) -> CloseReason {
        if !conn.is_usable() {
            CloseReason::ServerConnectionClosed
        } else if self.close_needed(conn.created) {
            CloseReason::ObsoleteConnection
        } else if idle_too_long {
            CloseReason::ServerIdleTimeout
        } else if self.expired(conn) {
            CloseReason::ServerLifetimeOver
        } else {
            CloseReason::TestQueryFailed
        }
    }

    /// Closes a connection that cannot be reused, logging why.
    pub(super) fn close_stale(&self, mut conn: Box<ServerConnection>, idle_too_long: bool) {
        let reason = self.stale_reason(&mut conn, idle_too_long);
        tokio::spawn(conn.close_because(reason));
    }

    /// Closes every idle connection, logging `reason` for each.
    pub fn close_idle_because(&self, reason: CloseReason) {
        for conn in self.queue.with_idle(std::mem::take) {
            tokio::spawn(conn.close_because(reason.clone()));
        }
    }

    /// Logs PgBouncer's `taking connection from reserve_pool`.
    pub(super) fn note_reserve_taken(&self) {
        log_reserve_taken(&self.key.database, &self.key.user);
    }

    /// Takes the options of `target` that apply without reconnecting (round robin, socket
    /// options, logging, pool_idle_timeout) after a RELOAD or SET.
    pub fn refresh_options(&self, target: &ServerTarget) {
        let current = self.target();
        if current.options == target.options {
            return;
        }
        let mut next = (*current).clone();
        next.options = target.options.clone();
        self.target.store(Arc::new(next));
    }

    /// True when no client uses the pool and it has no server connection.
    fn is_unused(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.idle_count() == 0
            && self.stats.active.load(Relaxed) == 0
            && self.stats.waiting.load(Relaxed) == 0
            && self.stats.logging_in.load(Relaxed) == 0
    }
}

/// Drops pools that stayed unused (no client, no server) for `pool_idle_timeout`, as
/// PgBouncer 1.26 does: a pool per (database, user) seen once is not kept forever. Pools
/// keeping `min_pool_size` are left alone. Called by the janitor every tick.
#[derive(Debug, Default)]
pub struct IdlePools {
    since: HashMap<PoolKey, Instant>,
}

impl IdlePools {
    /// One janitor pass over `pools`.
    pub fn sweep(&mut self, pools: &DashMap<PoolKey, Arc<Pool>>) {
        let mut seen = Vec::new();
        for entry in pools.iter() {
            let pool = entry.value();
            let timeout = pool.target.load().options.pool_idle_timeout;
            // Only the map holds an unused pool: every client keeps its pool alive.
            let unused = !timeout.is_zero()
                && pool.settings.min_pool_size == 0
                && Arc::strong_count(pool) == 1
                && pool.is_unused();
            if unused {
                let since = *self
                    .since
                    .entry(entry.key().clone())
                    .or_insert_with(Instant::now);
                if since.elapsed() >= timeout {
                    seen.push((entry.key().clone(), since));
                }
            } else {
                self.since.remove(entry.key());
            }
        }
        for (key, since) in seen {
            // Checked again under the map's lock: a client may have just taken the pool.
            let removed = pools.remove_if(&key, |_, p| Arc::strong_count(p) == 1 && p.is_unused());
            self.since.remove(&key);
            if removed.is_some() {
                log_idle_pool_dropped(&key.database, &key.user, since.elapsed());
            }
        }
        self.since.retain(|k, _| pools.contains_key(k));
    }
}

/// Logs PgBouncer's `registered new auto-database: <name>` when `entry` comes from the
/// `*` fallback and no pool of that database exists yet (called before the first pool of
/// a database is created).
pub fn note_auto_database(
    pools: &DashMap<PoolKey, Arc<Pool>>,
    entry: &crate::config::DatabaseEntry,
) {
    if entry.auto && !pools.iter().any(|p| p.key().database == entry.name) {
        crate::logging::close_reason::log_auto_database(&entry.name);
    }
}
