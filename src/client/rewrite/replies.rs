//! The rewriter's server side: replies to the client's requests delivered in order,
//! replies to injected requests dropped, made-up replies inserted, and the bookkeeping of
//! requests the server skipped or failed undone.

use bytes::{Buf, BytesMut};

use super::framing::{next_whole, stream_part, Kept, Next, Sent};
use super::{completes, is_async, Expect, Kind, Rewriter, Undo, WHOLE_LIMIT};
use crate::pool::prepared::ServerStatements;
use crate::protocol::messages::parse_error_fields;

impl Rewriter {
    pub(super) fn flush_fakes(&mut self, s2c: &mut BytesMut) {
        while let Some(Expect::Fake(bytes)) = self.expect.front() {
            s2c.extend_from_slice(bytes);
            self.expect.pop_front();
        }
    }

    /// Moves server messages from `input` to `out`, dropping replies to injected requests,
    /// replacing injected errors and inserting made-up replies in order.
    pub fn server_to_client(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        let mut kept = Kept::default();
        loop {
            if matches!(self.expect.front(), Some(Expect::Fake(_))) {
                kept.flush(input, out);
                self.flush_fakes(out);
            }
            if self.server_streaming > 0 {
                kept.flush(input, out);
                if !stream_part(&mut self.server_streaming, input, out) {
                    break;
                }
                continue;
            }
            if self.server_partial.is_empty() {
                let head = &input[kept.end()..];
                if head.len() < 5 {
                    break;
                }
                let tag = head[0];
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                if len > WHOLE_LIMIT && !matches!(tag, b'E' | b'1' | b'3') {
                    // Rows and copy data: they never complete a request except by their end.
                    kept.flush(input, out);
                    out.extend_from_slice(&input[..5]);
                    input.advance(5);
                    self.server_streaming = len - 4;
                    continue;
                }
            }
            let at = kept.end();
            match next_whole(&mut self.server_partial, input, at) {
                Next::Incomplete => break,
                Next::InInput(total) => {
                    let written = out.len();
                    let sent = self.server_message(&input[at..at + total], out, server);
                    kept.after(sent, total, input, out, written);
                }
                Next::Gathered(msg) => {
                    if self.server_message(&msg, out, server) == Sent::Unchanged {
                        out.extend_from_slice(&msg);
                    }
                }
            }
        }
        kept.flush(input, out);
        self.flush_fakes(out);
    }

    /// Handles one whole server message (`msg` includes its header).
    pub(super) fn server_message(
        &mut self,
        msg: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> Sent {
        // No made-up reply is at the head: the caller's loop delivered them.
        let tag = msg[0];
        if tag == b'Z' {
            self.last_ready = msg.get(5).copied().unwrap_or(b'I');
        }
        if tag == b'C' {
            let body = &msg[5..];
            if body.starts_with(b"DISCARD ALL") || body.starts_with(b"DEALLOCATE ALL") {
                server.clear();
                self.statements.clear();
            }
        }
        if tag == b'E' {
            self.server_error(msg, out, server);
            return Sent::Handled;
        }
        let Some(head) = self.expect.front() else {
            return self.deliver(msg, out);
        };
        let (kind, forward) = match head {
            Expect::Forward { kind, .. } => (*kind, true),
            Expect::Skip { kind, .. } => (*kind, false),
            Expect::Replace(_) => (Kind::Parse, false),
            // the caller delivered made-up replies at the head before this message
            Expect::Fake(_) => (Kind::Sync, true),
        };
        let delivered = forward || !completes(kind, tag) && is_async(tag);
        if completes(kind, tag) {
            self.expect.pop_front();
        }
        if delivered {
            self.deliver(msg, out)
        } else {
            Sent::Handled
        }
    }

    /// A server message for the client: unchanged, but for a notification the linked
    /// server sent of its own (written here with the client's pid).
    #[inline]
    fn deliver(&self, msg: &[u8], out: &mut BytesMut) -> Sent {
        if msg[0] != b'A' || self.notify_pids.is_none() {
            return Sent::Unchanged;
        }
        let at = out.len();
        out.extend_from_slice(msg);
        self.show_own_pid(&mut out[at + 5..]);
        Sent::Handled
    }

    pub(super) fn server_error(
        &mut self,
        msg: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        self.flush_fakes(out);
        let Some(head) = self.expect.pop_front() else {
            out.extend_from_slice(msg);
            return;
        };
        match head {
            // Query, FunctionCall and Sync are completed by their ReadyForQuery.
            Expect::Forward {
                kind: Kind::Query | Kind::Sync,
                ..
            } => {
                self.expect.push_front(head);
                out.extend_from_slice(msg);
                return;
            }
            Expect::Forward { undo, stmt, .. } => {
                self.undo(undo, server);
                if let Some(stmt) = stmt {
                    let f = parse_error_fields(&msg[5..]);
                    if f.code == crate::error::sqlstate::FEATURE_NOT_SUPPORTED
                        && f.message
                            .contains("cached plan must not change result type")
                    {
                        // The statement's plan is stale after DDL: re-prepare it next time.
                        if server.remove(stmt.id).is_some() {
                            server.pending_close.push(stmt);
                        }
                    }
                }
                out.extend_from_slice(msg);
            }
            Expect::Skip { undo, .. } => {
                self.undo(undo, server);
                out.extend_from_slice(msg);
            }
            Expect::Replace(err) => out.extend_from_slice(&err),
            Expect::Fake(bytes) => {
                out.extend_from_slice(&bytes);
                out.extend_from_slice(msg);
            }
        }
        self.skip_to_sync(server);
        self.aborted = self.expect.is_empty();
    }

    /// A NotificationResponse body the linked server sent of its own: the client's pid.
    fn show_own_pid(&self, body: &mut [u8]) {
        if let (Some((server, client)), Some(pid)) = (self.notify_pids, body.get_mut(..4)) {
            if *pid == server {
                pid.copy_from_slice(&client);
            }
        }
    }

    /// After an error the server ignores everything up to the next Sync: the replies
    /// expected before it are dropped and what their requests did is undone.
    fn skip_to_sync(&mut self, server: &mut ServerStatements) {
        while let Some(next) = self.expect.front() {
            if matches!(
                next,
                Expect::Forward {
                    kind: Kind::Sync,
                    ..
                }
            ) {
                break;
            }
            if let Some(Expect::Forward { undo, .. } | Expect::Skip { undo, .. }) =
                self.expect.pop_front()
            {
                self.undo(undo, server);
            }
        }
    }

    pub(super) fn undo(&mut self, undo: Undo, server: &mut ServerStatements) {
        match undo {
            Undo::None => {}
            Undo::Parse { id, client_name } => {
                server.remove(id);
                if let Some(n) = client_name {
                    self.statements.remove(&n);
                }
            }
            Undo::Close(stmt) => server.insert(stmt),
            Undo::Restore { name, stmt } => {
                self.statements.entry(name).or_insert(stmt);
            }
        }
    }
}
