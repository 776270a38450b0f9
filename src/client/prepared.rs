//! Protocol-level named prepared statements in transaction and statement mode: statements
//! are de-duplicated per pool by query text and parameter types and get a server-side name
//! `PGFUNNEL_<id>`; each server keeps an LRU of what it has prepared (closing what it
//! evicts); each client keeps its own name -> statement map. Owns the bookkeeping only;
//! the byte rewriting lives in `rewrite`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;

/// One distinct statement (query text + parameter types).
#[derive(Debug)]
pub struct Statement {
    /// Unique id within the pool.
    pub id: u64,
    /// Name used on servers.
    pub server_name: String,
    /// Parse body after the name: query text, NUL, parameter count and type OIDs.
    pub rest: Bytes,
}

/// Distinct statements a pool remembers by default (`max_pool_prepared_statements`).
pub const DEFAULT_REGISTRY_LIMIT: usize = 10_000;

/// Statements of one pool, shared by its clients, at most `limit` of them. Past the limit
/// the entries no client or server holds go first, then the oldest: an evicted entry only
/// means the next Parse of that text gets a new id (and server name); clients and servers
/// that hold the old one keep using it, so eviction never breaks a statement in use.
#[derive(Debug)]
pub struct StatementRegistry {
    by_text: DashMap<Bytes, Arc<Statement>>,
    next: AtomicU64,
    limit: AtomicUsize,
    /// max_prepared_statements: the LRU size of each server connection of the pool. Shared
    /// so that SET and RELOAD apply to open clients and servers (see `set_server_capacity`).
    server_capacity: AtomicUsize,
    evictions: prometheus::IntCounter,
    sweeping: Mutex<()>,
}

impl Default for StatementRegistry {
    fn default() -> Self {
        StatementRegistry {
            by_text: DashMap::new(),
            next: AtomicU64::new(0),
            limit: AtomicUsize::new(DEFAULT_REGISTRY_LIMIT),
            server_capacity: AtomicUsize::new(200),
            evictions: prometheus::IntCounter::new("statement_evictions", "detached")
                .expect("static counter options are valid"),
            sweeping: Mutex::new(()),
        }
    }
}

impl StatementRegistry {
    /// An empty registry whose evictions are counted in `evictions` (the pool's
    /// `pgfunnel_prepared_statement_evictions_total`).
    pub fn counting(evictions: prometheus::IntCounter) -> StatementRegistry {
        StatementRegistry {
            evictions,
            ..StatementRegistry::default()
        }
    }
}

impl StatementRegistry {
    /// The statement for this Parse body (after the name), created on first sight.
    pub fn get_or_insert(&self, rest: &[u8]) -> Arc<Statement> {
        if let Some(s) = self.by_text.get(rest) {
            return s.clone();
        }
        if self.by_text.len() >= self.limit() {
            self.sweep();
        }
        let key = Bytes::copy_from_slice(rest);
        self.by_text
            .entry(key.clone())
            .or_insert_with(|| {
                let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                Arc::new(Statement {
                    id,
                    server_name: format!("PGFUNNEL_{id}"),
                    rest: key,
                })
            })
            .clone()
    }

    /// Sets max_prepared_statements for every server connection of the pool, open ones
    /// included: each shrinks to it at its next Parse.
    pub fn set_server_capacity(&self, capacity: usize) {
        self.server_capacity.store(capacity, Ordering::Relaxed);
    }

    /// How many statements each server connection of the pool keeps prepared (at least 1).
    pub fn server_capacity(&self) -> usize {
        self.server_capacity.load(Ordering::Relaxed).max(1)
    }

    /// Sets the most distinct statements kept (at least 1); applies from the next insert.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Shrinks the registry to 7/8 of its limit (so sweeps are rare): unheld entries first,
    /// oldest first. One sweep at a time; a concurrent inserter skips it.
    fn sweep(&self) {
        let Ok(_one_at_a_time) = self.sweeping.try_lock() else {
            return;
        };
        let limit = self.limit();
        let keep = limit - limit / 8;
        let len = self.by_text.len();
        if len < limit {
            return;
        }
        let mut all: Vec<(bool, u64, Bytes)> = self
            .by_text
            .iter()
            .map(|e| {
                (
                    Arc::strong_count(e.value()) > 1,
                    e.value().id,
                    e.key().clone(),
                )
            })
            .collect();
        all.sort_unstable_by_key(|(held, id, _)| (*held, *id));
        let mut evicted = 0;
        for (_, _, key) in all.into_iter().take(len.saturating_sub(keep)) {
            if self.by_text.remove(&key).is_some() {
                evicted += 1;
            }
        }
        self.evictions.inc_by(evicted);
        tracing::debug!(
            evicted,
            kept = self.by_text.len(),
            "prepared statement registry swept"
        );
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    /// Number of distinct statements.
    pub fn len(&self) -> usize {
        self.by_text.len()
    }

    /// True when no statement was prepared yet.
    pub fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }
}

/// What one server connection has prepared, as an LRU bounded by max_prepared_statements.
#[derive(Debug, Default)]
pub struct ServerStatements {
    entries: HashMap<u64, (Arc<Statement>, u64)>,
    tick: u64,
    /// Statements to close before anything else is sent (stale plans after DDL).
    pub pending_close: Vec<Arc<Statement>>,
}

impl ServerStatements {
    /// True when the server has this statement; marks it recently used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.1 = tick;
                true
            }
            None => false,
        }
    }

    /// Records a statement as prepared on the server.
    pub fn insert(&mut self, stmt: Arc<Statement>) {
        self.tick += 1;
        self.entries.insert(stmt.id, (stmt, self.tick));
    }

    /// Forgets a statement (it was closed, or its Parse failed).
    pub fn remove(&mut self, id: u64) -> Option<Arc<Statement>> {
        self.entries.remove(&id).map(|(s, _)| s)
    }

    /// Removes and returns the least recently used statement other than `keep`, when
    /// holding one more would exceed `capacity`.
    pub fn evict_for(&mut self, capacity: usize, keep: u64) -> Option<Arc<Statement>> {
        if self.entries.len() < capacity.max(1) {
            return None;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(id, _)| **id != keep)
            .min_by_key(|(_, (_, t))| *t)
            .map(|(id, _)| *id)?;
        self.remove(victim)
    }

    /// Forgets everything (DISCARD ALL / DEALLOCATE ALL ran on the server).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.pending_close.clear();
    }

    /// Number of statements prepared on the server.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is prepared.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_share_one_statement() {
        let r = StatementRegistry::default();
        let a = r.get_or_insert(b"select 1\0\0\0");
        let b = r.get_or_insert(b"select 1\0\0\0");
        let c = r.get_or_insert(b"select 1\0\0\x01\0\0\0\x17");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id, "parameter types are part of the key");
        assert_eq!(r.len(), 2);
        assert_eq!(a.server_name, format!("PGFUNNEL_{}", a.id));
    }

    #[test]
    fn registry_stays_bounded_and_keeps_what_is_held() {
        let r = StatementRegistry::default();
        r.set_limit(16);
        let held = r.get_or_insert(b"held\0\0\0");
        for i in 0..1000 {
            r.get_or_insert(format!("select {i}\0\0\0").as_bytes());
            assert!(r.len() <= 16, "registry grew to {}", r.len());
        }
        assert!(r.evictions() >= 1000 - 16);
        let again = r.get_or_insert(b"held\0\0\0");
        assert_eq!(again.id, held.id, "a statement in use is not evicted");
        let fresh = r.get_or_insert(b"select 0\0\0\0");
        assert!(
            fresh.id > 1000,
            "an evicted text gets a new id, never an old one"
        );
    }

    #[test]
    fn lru_evicts_least_recently_used_but_never_the_one_in_use() {
        let r = StatementRegistry::default();
        let s: Vec<_> = (0..3)
            .map(|i| r.get_or_insert(format!("q{i}\0\0\0").as_bytes()))
            .collect();
        let mut srv = ServerStatements::default();
        srv.insert(s[0].clone());
        srv.insert(s[1].clone());
        assert!(srv.touch(s[0].id));
        assert_eq!(srv.evict_for(2, s[2].id).map(|v| v.id), Some(s[1].id));
        assert_eq!(srv.evict_for(2, s[2].id).map(|v| v.id), None, "room now");
        srv.insert(s[2].clone());
        assert_eq!(srv.evict_for(2, s[2].id).map(|v| v.id), Some(s[0].id));
        assert!(!srv.touch(s[0].id));
    }
}
