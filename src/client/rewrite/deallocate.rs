//! A `DEALLOCATE [PREPARE] name` of a statement the client prepared through the protocol,
//! handled like a protocol Close (transaction and statement mode), whether it comes as a
//! simple Query or through the extended protocol (Parse/Bind/Execute of its text).
//!
//! libpq 16 and older have no Close for prepared statements, so drivers on them (psycopg
//! past `prepared_max`) deallocate by sending this SQL. The client's name exists only in
//! pgfunnel (the server knows the pool-wide `PGFUNNEL_n` name, shared with other clients),
//! so forwarding it would fail with `26000` on the server. The name is forgotten for this
//! client, as a Close does, and the server runs an empty query in its place through the
//! extended protocol: its EmptyQueryResponse is replaced by `DEALLOCATE`'s CommandComplete,
//! its ReadyForQuery (with the real transaction status) reaches the client. In a failed
//! transaction the server refuses that Bind with its own `25P02`, as Postgres refuses the
//! DEALLOCATE itself, and the client keeps the statement.
//!
//! Through the extended protocol the statement's text is prepared as an empty query (its
//! Describe answers as DEALLOCATE's does: no parameters, no data) and its Execute does the
//! deallocation, the same way.
//!
//! `DEALLOCATE ALL` keeps going to the server: its CommandComplete makes the rewriter forget
//! every statement of the client and of that server (see `server_message`).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Expect, Kind, Rewriter, Undo};
use crate::client::words::{identifier, keyword, skip_space, Ident};
use crate::error::ErrorKind;
use crate::protocol::messages::{put_cstr, put_message, take_cstr};

/// What a lone DEALLOCATE statement names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One statement (the name as Postgres folds it: unquoted names in lower case).
    Name(Vec<u8>),
    /// `DEALLOCATE ALL`.
    All,
}

/// Reads `DEALLOCATE [PREPARE] { name | ALL } [;]` (any case, surrounding white space);
/// None for anything else, several statements included.
pub(crate) fn recognise(text: &[u8]) -> Option<Target> {
    let mut rest = skip_space(text);
    rest = keyword(rest, b"deallocate")?;
    let mut name = identifier(rest)?;
    if matches!(&name, (Ident::Bare(w), _) if w == b"prepare") {
        if let Some(next) = identifier(name.1) {
            name = next;
        }
    }
    let (ident, after) = name;
    let mut tail = skip_space(after);
    if let Some(t) = tail.strip_prefix(b";") {
        tail = skip_space(t);
    }
    if !tail.is_empty() {
        return None;
    }
    Some(match ident {
        Ident::Bare(w) if w == b"all" => Target::All,
        Ident::Bare(w) | Ident::Quoted(w) => Target::Name(w),
    })
}

impl Rewriter {
    /// Handles a simple Query (`msg`, header included) that deallocates one of this
    /// client's protocol statements; false (nothing done) for any other query.
    pub(super) fn deallocate(&mut self, msg: &[u8], out: &mut BytesMut) -> bool {
        if self.statements.is_empty() {
            return false; // nothing it could deallocate (the usual simple-protocol client)
        }
        let body = &msg[5..];
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        let Some(Target::Name(name)) = recognise(text) else {
            return false;
        };
        let Some(stmt) = self.statements.remove(name.as_slice()) else {
            // Not a protocol statement of this client: the server answers (26000, or an
            // SQL-level statement of the same transaction).
            return false;
        };
        // A simple Query drops the unnamed statement and portal, and so does this.
        self.deallocs.remove(&b""[..]);
        self.dealloc_portals.remove(&b""[..]);
        put_message(out, b'P', |b| {
            b.put_slice(b"\0\0");
            b.put_i16(0);
        });
        put_message(out, b'B', |b| {
            b.put_slice(b"\0\0");
            b.put_i16(0);
            b.put_i16(0);
            b.put_i16(0);
        });
        put_message(out, b'E', |b| {
            b.put_u8(0);
            b.put_i32(0);
        });
        put_message(out, b'S', |_| {});
        for kind in [Kind::Parse, Kind::Bind] {
            let undo = Undo::None;
            self.expect.push_back(Expect::Skip { kind, undo });
        }
        self.expect_deallocated(Bytes::from(name), stmt);
        // The Query's ReadyForQuery: a Sync's, so a failed Bind skips to it.
        self.expect.push_back(Expect::Forward {
            kind: Kind::Sync,
            undo: Undo::None,
            stmt: None,
        });
        self.batch_executed = false;
        true
    }

    /// The empty query's EmptyQueryResponse is dropped, `DEALLOCATE`'s CommandComplete sent
    /// in its place; if the server fails first, the client keeps `stmt` as `name`.
    fn expect_deallocated(
        &mut self,
        name: Bytes,
        stmt: std::sync::Arc<crate::pool::prepared::Statement>,
    ) {
        let undo = Undo::Restore { name, stmt };
        let kind = Kind::Execute;
        self.expect.push_back(Expect::Skip { kind, undo });
        let mut done = BytesMut::new();
        put_message(&mut done, b'C', |b| put_cstr(b, "DEALLOCATE"));
        self.expect.push_back(Expect::Fake(done.freeze()));
    }

    /// A Parse (statement `name`, `rest` = query text and parameter types): when its text
    /// deallocates one of the client's protocol statements, the rest to prepare instead
    /// (an empty query, same parameter types). Records what the statement deallocates.
    pub(super) fn deallocate_parse(&mut self, name: &[u8], rest: &[u8]) -> Option<Vec<u8>> {
        if !self.deallocs.is_empty() {
            self.deallocs.remove(name);
        }
        if self.statements.is_empty() {
            return None; // nothing it could deallocate
        }
        let mut tail = rest;
        let text = take_cstr(&mut tail)?;
        let Some(Target::Name(target)) = recognise(text) else {
            return None;
        };
        // In a failed transaction the server refuses the text itself (25P02), as Postgres.
        let failed = self.known_status() == Some(b'E');
        if failed || !self.statements.contains_key(target.as_slice()) {
            return None;
        }
        self.deallocs.insert(Bytes::copy_from_slice(name), target);
        let mut empty = Vec::with_capacity(1 + tail.len());
        empty.push(0);
        empty.extend_from_slice(tail);
        Some(empty)
    }

    /// A Bind of `portal` to statement `stmt` (client names): remembers whether executing
    /// the portal deallocates. Free unless the client prepared such a statement.
    pub(super) fn note_dealloc_portal(&mut self, portal: &[u8], stmt: &[u8]) {
        if self.deallocs.is_empty() && self.dealloc_portals.is_empty() {
            return;
        }
        match self.deallocs.get(stmt) {
            Some(target) => {
                let target = target.clone();
                self.dealloc_portals
                    .insert(Bytes::copy_from_slice(portal), target);
            }
            None => {
                self.dealloc_portals.remove(portal);
            }
        }
    }

    /// An Execute (`msg`, header included) of a portal bound to a DEALLOCATE statement:
    /// forwarded (the server runs the empty query) and the statement deallocated; false for
    /// any other Execute. A statement deallocated already is Postgres's `26000`.
    pub(super) fn execute_deallocate(&mut self, msg: &[u8], out: &mut BytesMut) -> bool {
        if self.dealloc_portals.is_empty() {
            return false;
        }
        let mut body = &msg[5..];
        let portal = take_cstr(&mut body).unwrap_or_default();
        let Some(target) = self.dealloc_portals.get(portal).cloned() else {
            return false;
        };
        let Some(stmt) = self.statements.remove(target.as_slice()) else {
            let text = format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(&target)
            );
            self.refuse(out, ErrorKind::UnknownStatement, text);
            return true;
        };
        self.expect_deallocated(Bytes::from(target), stmt);
        out.extend_from_slice(msg);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<Target> {
        Some(Target::Name(s.as_bytes().to_vec()))
    }

    #[test]
    fn reads_the_forms_drivers_send() {
        assert_eq!(recognise(b"DEALLOCATE _pg3_12"), name("_pg3_12"));
        assert_eq!(recognise(b"  deallocate prepare S1 ; "), name("s1"));
        assert_eq!(recognise(b"DEALLOCATE \"My\"\"Stmt\";"), name("My\"Stmt"));
        assert_eq!(recognise(b"DEALLOCATE\"x\""), name("x"));
        assert_eq!(recognise(b"DEALLOCATE prepare"), name("prepare"));
        assert_eq!(recognise(b"DEALLOCATE ALL"), Some(Target::All));
        assert_eq!(recognise(b"deallocate prepare all;"), Some(Target::All));
        assert_eq!(recognise(b"DEALLOCATE \"all\""), name("all"));
    }

    #[test]
    fn anything_else_is_not_recognised() {
        for q in [
            &b"DEALLOCATE a; SELECT 1"[..],
            b"DEALLOCATE a b",
            b"DEALLOCATE",
            b"DEALLOCATE \"\"",
            b"DEALLOCATE \"open",
            b"DEALLOCATEx",
            b"SELECT 'DEALLOCATE a'",
            b"DEALLOCATE 1abc",
        ] {
            assert_eq!(recognise(q), None, "{}", String::from_utf8_lossy(q));
        }
    }
}
