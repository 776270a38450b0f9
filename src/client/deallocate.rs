//! A simple-query `DEALLOCATE [PREPARE] name` of a statement the client prepared through the
//! protocol, handled like a protocol Close (transaction and statement mode).
//!
//! libpq 16 and older have no Close for prepared statements, so drivers on them (psycopg
//! past `prepared_max`) deallocate by sending this SQL. The client's name exists only in
//! pgfunnel (the server knows the pool-wide `PGFUNNEL_n` name, shared with other clients),
//! so forwarding it would fail with `26000` on the server. The name is forgotten for this
//! client, as a Close does, and the server runs an empty query in its place: its
//! EmptyQueryResponse is replaced by `DEALLOCATE`'s CommandComplete and its ReadyForQuery
//! (with the real transaction status) reaches the client.
//!
//! `DEALLOCATE ALL` keeps going to the server: its CommandComplete makes the rewriter forget
//! every statement of the client and of that server (see `server_message`).

use bytes::{Bytes, BytesMut};

use super::{Expect, Kind, Rewriter, Undo};
use crate::client::words::{identifier, keyword, skip_space, Ident};
use crate::protocol::messages::{put_cstr, put_message, put_query};

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
        let body = &msg[5..];
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        let Some(Target::Name(name)) = recognise(text) else {
            return false;
        };
        if self.statements.remove(name.as_slice()).is_none() {
            // Not a protocol statement of this client: the server answers (26000, or an
            // SQL-level statement of the same transaction).
            return false;
        }
        let mut done = BytesMut::new();
        put_message(&mut done, b'C', |b| put_cstr(b, "DEALLOCATE"));
        self.expect.push_back(Expect::Fake(Bytes::from(done)));
        // The empty query's EmptyQueryResponse is dropped (it completes this), its
        // ReadyForQuery goes to the client.
        self.expect.push_back(Expect::Skip {
            kind: Kind::Execute,
            undo: Undo::None,
        });
        self.expect.push_back(Expect::Forward {
            kind: Kind::Query,
            undo: Undo::None,
            stmt: None,
        });
        put_query(out, "");
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
