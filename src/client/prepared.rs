//! Protocol-level named prepared statements in transaction and statement mode: statements
//! are de-duplicated per pool by query text and parameter types and get a server-side name
//! `PGFUNNEL_<id>`; each server keeps an LRU of what it has prepared (closing what it
//! evicts); each client keeps its own name -> statement map. Owns the bookkeeping only;
//! the byte rewriting lives in `rewrite`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Statements of one pool, shared by its clients.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    by_text: DashMap<Bytes, Arc<Statement>>,
    next: AtomicU64,
}

impl StatementRegistry {
    /// The statement for this Parse body (after the name), created on first sight.
    pub fn get_or_insert(&self, rest: &[u8]) -> Arc<Statement> {
        if let Some(s) = self.by_text.get(rest) {
            return s.clone();
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
