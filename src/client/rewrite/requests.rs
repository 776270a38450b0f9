//! The rewriter's client side: client messages toward the server, statement names mapped
//! to pool-wide ones, missing statements prepared on the fly, evicted ones closed, and
//! messages too large to handle whole streamed or refused.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::framing::{next_whole, put_bytes_cstr, put_parse, stream_part, Kept, Next, Sent};
use super::{Expect, Kind, Rewriter, Undo, WHOLE_LIMIT};
use crate::client::tracker::{CopyStep, MAX_INSPECTED};
use crate::error::ErrorKind;
use crate::pool::prepared::{ServerStatements, Statement};
use crate::protocol::messages::{put_cstr, put_message, take_cstr};

impl Rewriter {
    /// Moves whole client messages from `input` to `out` (rewritten where needed).
    /// A message that must be handled whole but is incomplete moves into the rewriter, so
    /// `input` is left holding at most an incomplete 5-byte header: the caller may keep
    /// reading whatever its own buffer limits are. Framing was validated by the scanner.
    pub fn client_to_server(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        server: &mut ServerStatements,
        s2c: &mut BytesMut,
    ) {
        for stmt in std::mem::take(&mut server.pending_close) {
            self.inject_close(out, stmt);
        }
        let mut kept = Kept::default();
        loop {
            if self.client_streaming > 0 {
                kept.flush(input, out);
                if !self.stream_client_part(input, out) {
                    break;
                }
                continue;
            }
            if self.client_partial.is_empty() {
                let head = &input[kept.end()..];
                if head.len() < 5 {
                    break;
                }
                let tag = head[0];
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                if len > WHOLE_LIMIT {
                    // Rare: the large message's handling reads `input` from its start.
                    kept.flush(input, out);
                    if !self.head_ready(tag, input) {
                        break;
                    }
                }
                match self.copy.client_message(tag) {
                    CopyStep::Normal => {}
                    CopyStep::IgnoredSync => self.ignored_sync = true,
                    CopyStep::Began { ignored_syncs } => self.forget_syncs(ignored_syncs),
                }
                if len > WHOLE_LIMIT && self.start_streaming(tag, len, input, out, server) {
                    continue;
                }
            }
            let at = kept.end();
            match next_whole(&mut self.client_partial, input, at) {
                Next::Incomplete => break,
                Next::InInput(total) => {
                    let written = out.len();
                    let sent = self.client_message(&input[at..at + total], out, server);
                    kept.after(sent, total, input, out, written);
                }
                Next::Gathered(msg) => {
                    if self.client_message(&msg, out, server) == Sent::Unchanged {
                        out.extend_from_slice(&msg);
                    }
                }
            }
        }
        kept.flush(input, out);
        self.flush_fakes(s2c);
    }

    /// Moves (or, for a refused message, drops) the next part of a large message being
    /// streamed through; true when it is through.
    fn stream_client_part(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> bool {
        let done = if self.client_discarding {
            let n = self.client_streaming.min(input.len());
            input.advance(n);
            self.client_streaming -= n;
            self.client_streaming == 0
        } else {
            stream_part(&mut self.client_streaming, input, out)
        };
        if done {
            self.client_discarding = false;
        }
        done
    }

    /// Handles one whole client message (`msg` includes its header).
    pub(super) fn client_message(
        &mut self,
        msg: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> Sent {
        let tag = msg[0];
        if std::mem::take(&mut self.ignored_sync) {
            return Sent::Unchanged;
        }
        if matches!(tag, b'S' | b'Q' | b'F') {
            self.requests_seen += 1;
        }
        if self.refused {
            return self.skip_refused(msg);
        }
        if self.aborted {
            if tag == b'S' {
                self.aborted = false;
                self.note_plain(tag);
            }
            return Sent::Unchanged;
        }
        let body = &msg[5..];
        match tag {
            b'P' => self.parse(msg, body, out, server),
            b'B' => self.bind(body, out, server),
            b'D' => self.describe(body, out, server),
            b'C' => self.close(body),
            b'Q' if self.deallocate(msg, out) => Sent::Handled,
            b'E' if self.execute_deallocate(msg, out) => Sent::Handled,
            _ => {
                self.note_plain(tag);
                if tag == b'E' {
                    let mut rest = body;
                    let portal = take_cstr(&mut rest).unwrap_or_default();
                    if let Some(Expect::Forward { stmt, .. }) = self.expect.back_mut() {
                        *stmt = self.portals.get(portal).cloned();
                    }
                }
                Sent::Unchanged
            }
        }
    }

    /// Drops the expectations of the newest `n` Syncs (the server ignored them in copy-in
    /// mode). Nothing after the COPY's Execute was answered, so they are still queued.
    pub(super) fn forget_syncs(&mut self, mut n: usize) {
        self.requests_seen = self.requests_seen.saturating_sub(n as u64);
        let mut i = self.expect.len();
        while n > 0 && i > 0 {
            i -= 1;
            if matches!(
                self.expect[i],
                Expect::Forward {
                    kind: Kind::Sync,
                    ..
                }
            ) {
                self.expect.remove(i);
                n -= 1;
            }
        }
    }

    pub(super) fn note_plain(&mut self, tag: u8) {
        let kind = match tag {
            b'E' => Kind::Execute,
            b'S' => Kind::Sync,
            b'Q' | b'F' => Kind::Query,
            _ => return,
        };
        self.batch_executed = kind == Kind::Execute;
        self.expect.push_back(Expect::Forward {
            kind,
            undo: Undo::None,
            stmt: None,
        });
    }

    pub(super) fn parse(
        &mut self,
        msg: &[u8],
        body: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> Sent {
        let mut rest = body;
        let name = take_cstr(&mut rest).unwrap_or_default();
        if !name.is_empty() && self.statements.contains_key(name) {
            let text = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            );
            self.refuse(out, ErrorKind::DuplicateStatement, text);
            return Sent::Handled;
        }
        let empty = self.deallocate_parse(name, rest);
        let rest = empty.as_deref().unwrap_or(rest);
        if name.is_empty() {
            self.expect.push_back(Expect::Forward {
                kind: Kind::Parse,
                undo: Undo::None,
                stmt: None,
            });
            self.large_parse |= msg.len() > MAX_INSPECTED as usize;
            let Some(rest) = &empty else {
                return Sent::Unchanged;
            };
            put_message(out, b'P', |b| {
                b.put_u8(0);
                b.put_slice(rest);
            });
            return Sent::Handled;
        }
        self.counts.client_parses += 1;
        let stmt = self.registry.get_or_insert(rest);
        let name = Bytes::copy_from_slice(name);
        self.statements.insert(name.clone(), stmt.clone());
        if server.touch(stmt.id) {
            self.expect
                .push_back(Expect::Fake(Bytes::from_static(b"1\0\0\0\x04")));
            return Sent::Handled;
        }
        self.make_room(out, server, stmt.id);
        server.insert(stmt.clone());
        self.large_parse |= stmt.rest.len() > MAX_INSPECTED as usize;
        put_parse(out, &stmt);
        self.counts.server_parses += 1;
        let undo = Undo::Parse {
            id: stmt.id,
            client_name: Some(name),
        };
        self.expect.push_back(Expect::Forward {
            kind: Kind::Parse,
            undo,
            stmt: Some(stmt),
        });
        Sent::Handled
    }

    pub(super) fn bind(
        &mut self,
        body: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> Sent {
        let mut rest = body;
        let (Some(portal), Some(name)) = (take_cstr(&mut rest), take_cstr(&mut rest)) else {
            return self.forward(Kind::Bind);
        };
        self.note_dealloc_portal(portal, name);
        if name.is_empty() {
            if !self.portals.is_empty() {
                self.portals.remove(portal);
            }
            return self.forward(Kind::Bind);
        }
        let Some(stmt) = self.lookup(out, name, server) else {
            return Sent::Handled;
        };
        let portal = Bytes::copy_from_slice(portal);
        self.counts.binds += 1;
        self.portals.insert(portal.clone(), stmt.clone());
        put_message(out, b'B', |b| {
            put_bytes_cstr(b, &portal);
            put_cstr(b, &stmt.server_name);
            b.put_slice(rest);
        });
        self.expect.push_back(Expect::Forward {
            kind: Kind::Bind,
            undo: Undo::None,
            stmt: Some(stmt),
        });
        Sent::Handled
    }

    pub(super) fn describe(
        &mut self,
        body: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> Sent {
        let mut rest = &body[1.min(body.len())..];
        let name = take_cstr(&mut rest).unwrap_or_default();
        if body.first() != Some(&b'S') || name.is_empty() {
            return self.forward(Kind::Describe);
        }
        let Some(stmt) = self.lookup(out, name, server) else {
            return Sent::Handled;
        };
        put_message(out, b'D', |b| {
            b.put_u8(b'S');
            put_cstr(b, &stmt.server_name);
        });
        self.expect.push_back(Expect::Forward {
            kind: Kind::Describe,
            undo: Undo::None,
            stmt: Some(stmt),
        });
        Sent::Handled
    }

    pub(super) fn close(&mut self, body: &[u8]) -> Sent {
        let mut rest = &body[1.min(body.len())..];
        let name = take_cstr(&mut rest).unwrap_or_default();
        if body.first() != Some(&b'S') || name.is_empty() {
            return self.forward(Kind::Close);
        }
        // Closing is local: other clients may use the same server statement.
        self.statements.remove(name);
        if !self.deallocs.is_empty() {
            self.deallocs.remove(name);
        }
        self.expect
            .push_back(Expect::Fake(Bytes::from_static(b"3\0\0\0\x04")));
        Sent::Handled
    }

    /// A request that goes to the server unchanged; its replies go to the client.
    pub(super) fn forward(&mut self, kind: Kind) -> Sent {
        self.expect.push_back(Expect::Forward {
            kind,
            undo: Undo::None,
            stmt: None,
        });
        Sent::Unchanged
    }

    /// The client's statement `name`, prepared on this server (injecting a Parse when the
    /// server lacks it). An unknown name injects Postgres's own 26000 error.
    pub(super) fn lookup(
        &mut self,
        out: &mut BytesMut,
        name: &[u8],
        server: &mut ServerStatements,
    ) -> Option<Arc<Statement>> {
        let Some(stmt) = self.statements.get(name).cloned() else {
            let text = format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            );
            self.refuse(out, ErrorKind::UnknownStatement, text);
            return None;
        };
        if !server.touch(stmt.id) {
            self.make_room(out, server, stmt.id);
            server.insert(stmt.clone());
            self.large_parse |= stmt.rest.len() > MAX_INSPECTED as usize;
            put_parse(out, &stmt);
            self.counts.server_parses += 1;
            let undo = Undo::Parse {
                id: stmt.id,
                client_name: None,
            };
            self.expect.push_back(Expect::Skip {
                kind: Kind::Parse,
                undo,
            });
        }
        Some(stmt)
    }

    pub(super) fn make_room(
        &mut self,
        out: &mut BytesMut,
        server: &mut ServerStatements,
        keep: u64,
    ) {
        let capacity = self.registry.server_capacity();
        while let Some(victim) = server.evict_for(capacity, keep) {
            self.inject_close(out, victim);
        }
    }

    pub(super) fn inject_close(&mut self, out: &mut BytesMut, stmt: Arc<Statement>) {
        put_message(out, b'C', |b| {
            b.put_u8(b'S');
            put_cstr(b, &stmt.server_name);
        });
        self.expect.push_back(Expect::Skip {
            kind: Kind::Close,
            undo: Undo::Close(stmt),
        });
    }
}
