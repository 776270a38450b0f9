//! Client messages too large to handle whole by default: streamed through unchanged
//! (names rewritten for a Bind), gathered whole when the rewriter must read them, or
//! refused and dropped when larger than `max_prepared_message_size`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::framing::{bind_names, put_bytes_cstr};
use super::{Expect, Kind, Rewriter, Undo, MAX_STREAMED_NAMES};
use crate::error::ErrorKind;
use crate::pool::prepared::ServerStatements;
use crate::protocol::messages::put_cstr;

impl Rewriter {
    /// Decides what happens to a client message too large to handle whole by default
    /// (its header is at the start of `input`): true when it now streams through (or is
    /// dropped), false when it must be gathered whole.
    pub(super) fn start_streaming(
        &mut self,
        tag: u8,
        len: usize,
        input: &mut BytesMut,
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> bool {
        if self.large_skipped(tag, len, input) {
            return true;
        }
        if tag == b'B' && !self.aborted {
            if let Some((portal, name)) = bind_names(input) {
                self.stream_bind(len, portal, name, input, out, server);
                return true;
            }
        }
        // Unnamed statements are forwarded unchanged; while the server skips to Sync
        // after an error, everything is.
        let unchanged = !matches!(tag, b'P' | b'B' | b'D' | b'C')
            || (tag == b'P' && input[5] == 0)
            || self.aborted;
        if unchanged {
            match tag {
                b'P' if !self.aborted => self.expect.push_back(Expect::Forward {
                    kind: Kind::Parse,
                    undo: Undo::None,
                    stmt: None,
                }),
                _ if !self.aborted => self.note_plain(tag),
                _ => {}
            }
            out.extend_from_slice(&input[..5]);
        } else if len + 1 > self.max_gathered {
            let what = match tag {
                b'P' => "Parse",
                b'B' => "Bind",
                b'D' => "Describe",
                _ => "Close",
            };
            let text = format!(
                "{what} message of {} bytes exceeds max_prepared_message_size ({} bytes)",
                len + 1,
                self.max_gathered
            );
            self.refuse(out, ErrorKind::TooLarge, text);
            self.client_discarding = true;
            self.refusals += 1;
        } else {
            return false;
        }
        input.advance(5);
        self.client_streaming = len - 4;
        true
    }

    /// Whether enough of a large message's start is in `input` to decide how to handle it:
    /// a Parse's first body byte (unnamed or not), a Bind's two names (or so many bytes
    /// without them that it is gathered whole instead).
    pub(super) fn head_ready(&self, tag: u8, input: &[u8]) -> bool {
        match tag {
            b'P' => input.len() > 5,
            b'B' if !self.aborted => {
                bind_names(input).is_some() || input.len() >= 5 + MAX_STREAMED_NAMES
            }
            _ => true,
        }
    }

    /// Streams a large Bind (its names, `portal_end`/`name_end` offsets into `input`, are
    /// there): the statement name is rewritten in a new header and the parameters follow
    /// unchanged, never gathered. A Bind of an unknown statement is dropped (its error
    /// injected, as for a whole one).
    pub(super) fn stream_bind(
        &mut self,
        len: usize,
        portal_end: usize,
        name_end: usize,
        input: &mut BytesMut,
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        let portal = Bytes::copy_from_slice(&input[5..portal_end]);
        let name = input[portal_end + 1..name_end].to_vec();
        self.note_dealloc_portal(&portal, &name);
        let rest = len - 4 - (name_end + 1 - 5);
        if name.is_empty() {
            self.portals.remove(&portal);
            self.expect.push_back(Expect::Forward {
                kind: Kind::Bind,
                undo: Undo::None,
                stmt: None,
            });
            out.extend_from_slice(&input[..name_end + 1]);
        } else if let Some(stmt) = self.lookup(out, &name, server) {
            self.portals.insert(portal.clone(), stmt.clone());
            let new_len = 4 + portal.len() + 1 + stmt.server_name.len() + 1 + rest;
            out.put_u8(b'B');
            out.put_u32(new_len as u32);
            put_bytes_cstr(out, &portal);
            put_cstr(out, &stmt.server_name);
            self.expect.push_back(Expect::Forward {
                kind: Kind::Bind,
                undo: Undo::None,
                stmt: Some(stmt),
            });
        } else {
            self.client_discarding = true;
        }
        input.advance(name_end + 1);
        self.client_streaming = rest;
    }
}
