//! Rewrites a client's extended-protocol traffic for shared servers (transaction and
//! statement mode): client statement names become pool-wide server names, missing
//! statements are prepared on the fly, evicted ones closed, and the replies are put back
//! in the order the client expects (synthetic ParseComplete/CloseComplete, errors that
//! Postgres itself would give, injected replies dropped). Bytes of other messages are
//! moved unchanged; large messages stream through without being buffered whole.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::link_stats::PreparedCounts;
use super::prepared::{ServerStatements, Statement, StatementRegistry};
use super::tracker::{CopyInWatch, CopyStep, MAX_INSPECTED};
use crate::protocol::messages::{
    self, parse_error_fields, put_cstr, put_message, take_cstr, Severity,
};

/// Messages up to this size are handled whole; larger ones of other types stream through.
const WHOLE_LIMIT: usize = 64 * 1024;
/// A large Bind whose portal and statement names end within this many bytes streams
/// through (names rewritten); otherwise it is gathered whole.
const MAX_STREAMED_NAMES: usize = 8 * 1024;
/// Default for the largest Parse/Bind gathered whole (`max_prepared_message_size`).
pub const DEFAULT_MAX_GATHERED: usize = 16 * 1024 * 1024;

/// What answers a request (and so completes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    Query,
}

/// Bookkeeping to reverse when a request is skipped or fails on the server.
#[derive(Debug, Clone)]
enum Undo {
    None,
    /// A Parse did not happen: the server lacks the statement (and the client its name).
    Parse {
        id: u64,
        client_name: Option<Bytes>,
    },
    /// An injected Close did not happen: the server still has the statement.
    Close(Arc<Statement>),
}

#[derive(Debug)]
enum Expect {
    /// A client request; its replies go to the client.
    Forward {
        kind: Kind,
        undo: Undo,
        stmt: Option<Arc<Statement>>,
    },
    /// A request pgfunnel injected; its replies are dropped.
    Skip { kind: Kind, undo: Undo },
    /// A reply pgfunnel makes up, sent when it reaches the head.
    Fake(Bytes),
    /// An injected failing Parse whose error is replaced by this one (so the server
    /// aborts the pipeline exactly as Postgres would for the client's own mistake).
    Replace(Bytes),
}

/// Per-client rewriting state.
#[derive(Debug)]
pub struct Rewriter {
    registry: Arc<StatementRegistry>,
    statements: HashMap<Bytes, Arc<Statement>>,
    portals: HashMap<Bytes, Arc<Statement>>,
    expect: VecDeque<Expect>,
    client_streaming: usize,
    /// The bytes of `client_streaming` are dropped, not forwarded (a refused message).
    client_discarding: bool,
    server_streaming: usize,
    /// Largest client message gathered whole; a larger one that must be is refused (54000).
    max_gathered: usize,
    /// Messages refused for their size since `take_refusals` was last called.
    refusals: u32,
    /// Prepared-statement traffic since `take_counts` was last called.
    counts: PreparedCounts,
    /// A Parse too large for the statement recogniser went to the server since
    /// `take_large_parse` was last called (the session then does not reuse that server).
    large_parse: bool,
    /// A message that must be handled whole (Parse/Bind/Describe/Close of any size, others up
    /// to WHOLE_LIMIT), gathered here across reads. The relay stops reading a side once its
    /// input buffer passes its back-pressure limit, so a message larger than that limit left
    /// in the input buffer would never complete (a 5 MB Bind parameter hung the client and
    /// its server for good). Bounded by max_packet_size, which the scanner enforces.
    client_partial: BytesMut,
    /// The same for server messages handled whole (an ErrorResponse larger than WHOLE_LIMIT).
    server_partial: BytesMut,
    /// Syncs sent in copy-in mode get no ReadyForQuery: expect none for them.
    copy: CopyInWatch,
    /// The message being gathered is such a Sync.
    ignored_sync: bool,
    /// The server reported an error and ignores everything up to the next Sync; client
    /// messages in that stretch pass unchanged and change no bookkeeping (as in Postgres,
    /// where they have no effect).
    aborted: bool,
}

impl Rewriter {
    /// Creates the state for one client of a pool; `capacity` (max_prepared_statements)
    /// becomes the pool's per-server LRU size, for its open connections too.
    pub fn new(registry: Arc<StatementRegistry>, capacity: usize) -> Self {
        registry.set_server_capacity(capacity);
        Rewriter {
            registry,
            statements: HashMap::new(),
            portals: HashMap::new(),
            expect: VecDeque::new(),
            client_streaming: 0,
            client_discarding: false,
            server_streaming: 0,
            max_gathered: DEFAULT_MAX_GATHERED,
            refusals: 0,
            counts: PreparedCounts::default(),
            large_parse: false,
            client_partial: BytesMut::new(),
            server_partial: BytesMut::new(),
            copy: CopyInWatch::default(),
            ignored_sync: false,
            aborted: false,
        }
    }

    /// True when every reply the client expects has been delivered or made up.
    pub fn is_settled(&self) -> bool {
        self.expect.is_empty()
            && self.client_streaming == 0
            && self.server_streaming == 0
            && self.client_partial.is_empty()
            && self.server_partial.is_empty()
    }

    /// Sets the largest Parse/Bind gathered whole (bytes, header included); a larger one is
    /// refused with 54000 and its bytes dropped, the client stays connected.
    pub fn set_max_gathered(&mut self, bytes: usize) {
        self.max_gathered = bytes.max(WHOLE_LIMIT);
    }

    /// Messages refused for their size since the last call (for the refusal counter).
    pub fn take_refusals(&mut self) -> u32 {
        std::mem::take(&mut self.refusals)
    }

    /// The parse and bind counts since the last call (for SHOW STATS); resets them.
    pub fn take_counts(&mut self) -> PreparedCounts {
        std::mem::take(&mut self.counts)
    }

    /// Whether a Parse too large to inspect (over `MAX_INSPECTED`) was written toward the
    /// server since the last call, forwarded or prepared on the fly for a Bind; resets it.
    pub fn take_large_parse(&mut self) -> bool {
        std::mem::take(&mut self.large_parse)
    }

    /// Replies the client still expects (each costs a little memory until it arrives).
    pub fn pending_replies(&self) -> usize {
        self.expect.len()
    }

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
        loop {
            if self.client_streaming > 0 {
                let done = if self.client_discarding {
                    let n = self.client_streaming.min(input.len());
                    input.advance(n);
                    self.client_streaming -= n;
                    self.client_streaming == 0
                } else {
                    stream_part(&mut self.client_streaming, input, out)
                };
                if !done {
                    break;
                }
                self.client_discarding = false;
                continue;
            }
            if self.client_partial.is_empty() {
                if input.len() < 5 {
                    break;
                }
                let tag = input[0];
                let len = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
                if len > WHOLE_LIMIT && !self.head_ready(tag, input) {
                    break;
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
            match next_whole(&mut self.client_partial, input) {
                Next::Incomplete => break,
                Next::InInput(total) => {
                    self.client_message(&input[..total], out, server);
                    input.advance(total);
                }
                Next::Gathered(msg) => self.client_message(&msg, out, server),
            }
        }
        self.flush_fakes(s2c);
    }

    /// Decides what happens to a client message too large to handle whole by default
    /// (its header is at the start of `input`): true when it now streams through (or is
    /// dropped), false when it must be gathered whole.
    fn start_streaming(
        &mut self,
        tag: u8,
        len: usize,
        input: &mut BytesMut,
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) -> bool {
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
            self.inject_error(out, "54000", &text);
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
    fn head_ready(&self, tag: u8, input: &[u8]) -> bool {
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
    fn stream_bind(
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

    /// Handles one whole client message (`msg` includes its header).
    fn client_message(&mut self, msg: &[u8], out: &mut BytesMut, server: &mut ServerStatements) {
        let tag = msg[0];
        if std::mem::take(&mut self.ignored_sync) {
            out.extend_from_slice(msg);
            return;
        }
        if self.aborted {
            if tag == b'S' {
                self.aborted = false;
                self.note_plain(tag);
            }
            out.extend_from_slice(msg);
            return;
        }
        let body = &msg[5..];
        match tag {
            b'P' => self.parse(msg, body, out, server),
            b'B' => self.bind(msg, body, out, server),
            b'D' => self.describe(msg, body, out, server),
            b'C' => self.close(msg, body, out),
            b'Q' if self.deallocate(msg, out) => {}
            _ => {
                self.note_plain(tag);
                if tag == b'E' {
                    let mut rest = body;
                    let portal = take_cstr(&mut rest).unwrap_or_default();
                    if let Some(Expect::Forward { stmt, .. }) = self.expect.back_mut() {
                        *stmt = self.portals.get(portal).cloned();
                    }
                }
                out.extend_from_slice(msg);
            }
        }
    }

    /// Drops the expectations of the newest `n` Syncs (the server ignored them in copy-in
    /// mode). Nothing after the COPY's Execute was answered, so they are still queued.
    fn forget_syncs(&mut self, mut n: usize) {
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

    fn note_plain(&mut self, tag: u8) {
        let kind = match tag {
            b'E' => Kind::Execute,
            b'S' => Kind::Sync,
            b'Q' | b'F' => Kind::Query,
            _ => return,
        };
        self.expect.push_back(Expect::Forward {
            kind,
            undo: Undo::None,
            stmt: None,
        });
    }

    fn parse(
        &mut self,
        msg: &[u8],
        body: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        let mut rest = body;
        let name = take_cstr(&mut rest).unwrap_or_default();
        if name.is_empty() {
            self.expect.push_back(Expect::Forward {
                kind: Kind::Parse,
                undo: Undo::None,
                stmt: None,
            });
            self.large_parse |= msg.len() > MAX_INSPECTED as usize;
            out.extend_from_slice(msg);
            return;
        }
        if self.statements.contains_key(name) {
            let text = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            );
            return self.inject_error(out, "42P05", &text);
        }
        self.counts.client_parses += 1;
        let stmt = self.registry.get_or_insert(rest);
        let name = Bytes::copy_from_slice(name);
        self.statements.insert(name.clone(), stmt.clone());
        if server.touch(stmt.id) {
            self.expect
                .push_back(Expect::Fake(Bytes::from_static(b"1\0\0\0\x04")));
            return;
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
    }

    fn bind(&mut self, msg: &[u8], body: &[u8], out: &mut BytesMut, server: &mut ServerStatements) {
        let mut rest = body;
        let (Some(portal), Some(name)) = (take_cstr(&mut rest), take_cstr(&mut rest)) else {
            return self.forward(out, msg, Kind::Bind);
        };
        let portal = Bytes::copy_from_slice(portal);
        if name.is_empty() {
            self.portals.remove(&portal);
            return self.forward(out, msg, Kind::Bind);
        }
        let Some(stmt) = self.lookup(out, name, server) else {
            return;
        };
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
    }

    fn describe(
        &mut self,
        msg: &[u8],
        body: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        let mut rest = &body[1.min(body.len())..];
        let name = take_cstr(&mut rest).unwrap_or_default();
        if body.first() != Some(&b'S') || name.is_empty() {
            return self.forward(out, msg, Kind::Describe);
        }
        let Some(stmt) = self.lookup(out, name, server) else {
            return;
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
    }

    fn close(&mut self, msg: &[u8], body: &[u8], out: &mut BytesMut) {
        let mut rest = &body[1.min(body.len())..];
        let name = take_cstr(&mut rest).unwrap_or_default();
        if body.first() != Some(&b'S') || name.is_empty() {
            return self.forward(out, msg, Kind::Close);
        }
        // Closing is local: other clients may use the same server statement.
        self.statements.remove(name);
        self.expect
            .push_back(Expect::Fake(Bytes::from_static(b"3\0\0\0\x04")));
    }

    fn forward(&mut self, out: &mut BytesMut, msg: &[u8], kind: Kind) {
        self.expect.push_back(Expect::Forward {
            kind,
            undo: Undo::None,
            stmt: None,
        });
        out.extend_from_slice(msg);
    }

    /// The client's statement `name`, prepared on this server (injecting a Parse when the
    /// server lacks it). An unknown name injects Postgres's own 26000 error.
    fn lookup(
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
            self.inject_error(out, "26000", &text);
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

    fn make_room(&mut self, out: &mut BytesMut, server: &mut ServerStatements, keep: u64) {
        let capacity = self.registry.server_capacity();
        while let Some(victim) = server.evict_for(capacity, keep) {
            self.inject_close(out, victim);
        }
    }

    fn inject_close(&mut self, out: &mut BytesMut, stmt: Arc<Statement>) {
        put_message(out, b'C', |b| {
            b.put_u8(b'S');
            put_cstr(b, &stmt.server_name);
        });
        self.expect.push_back(Expect::Skip {
            kind: Kind::Close,
            undo: Undo::Close(stmt),
        });
    }

    /// Makes the server fail the pipeline here (so it skips to Sync and aborts the
    /// transaction, as Postgres would for the client's own error) and shows the client
    /// `code`/`text` instead of that failure. No SQL is sent: the request is a Describe of a
    /// statement name pgfunnel never creates, which Postgres answers with 26000.
    fn inject_error(&mut self, out: &mut BytesMut, code: &str, text: &str) {
        put_message(out, b'D', |b| {
            b.put_u8(b'S');
            put_cstr(b, "pgfunnel: statement refused");
        });
        let mut err = BytesMut::new();
        messages::put_error(&mut err, Severity::Error, code, text, None);
        self.expect.push_back(Expect::Replace(err.freeze()));
    }

    fn flush_fakes(&mut self, s2c: &mut BytesMut) {
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
        loop {
            self.flush_fakes(out);
            if self.server_streaming > 0 {
                if !stream_part(&mut self.server_streaming, input, out) {
                    break;
                }
                continue;
            }
            if self.server_partial.is_empty() {
                if input.len() < 5 {
                    break;
                }
                let tag = input[0];
                let len = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
                if len > WHOLE_LIMIT && !matches!(tag, b'E' | b'1' | b'3') {
                    // Rows and copy data: they never complete a request except by their end.
                    out.extend_from_slice(&input[..5]);
                    input.advance(5);
                    self.server_streaming = len - 4;
                    continue;
                }
            }
            match next_whole(&mut self.server_partial, input) {
                Next::Incomplete => break,
                Next::InInput(total) => {
                    self.server_message(input[0], &input[..total], out, server);
                    input.advance(total);
                }
                Next::Gathered(msg) => self.server_message(msg[0], &msg, out, server),
            }
        }
        self.flush_fakes(out);
    }

    fn server_message(
        &mut self,
        tag: u8,
        msg: &[u8],
        out: &mut BytesMut,
        server: &mut ServerStatements,
    ) {
        self.flush_fakes(out);
        if tag == b'C' {
            let body = &msg[5..];
            if body.starts_with(b"DISCARD ALL") || body.starts_with(b"DEALLOCATE ALL") {
                server.clear();
                self.statements.clear();
            }
        }
        if tag == b'E' {
            return self.server_error(msg, out, server);
        }
        let Some(head) = self.expect.front() else {
            out.extend_from_slice(msg);
            return;
        };
        let (kind, forward) = match head {
            Expect::Forward { kind, .. } => (*kind, true),
            Expect::Skip { kind, .. } => (*kind, false),
            Expect::Replace(_) => (Kind::Parse, false),
            // flush_fakes ran just above, so no made-up reply is at the head
            Expect::Fake(_) => (Kind::Sync, true),
        };
        if forward || !completes(kind, tag) && is_async(tag) {
            out.extend_from_slice(msg);
        }
        if completes(kind, tag) {
            self.expect.pop_front();
        }
    }

    fn server_error(&mut self, msg: &[u8], out: &mut BytesMut, server: &mut ServerStatements) {
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
                    if f.code == "0A000"
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
        // After an error the server ignores everything up to the next Sync.
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
        self.aborted = self.expect.is_empty();
    }

    fn undo(&mut self, undo: Undo, server: &mut ServerStatements) {
        match undo {
            Undo::None => {}
            Undo::Parse { id, client_name } => {
                server.remove(id);
                if let Some(n) = client_name {
                    self.statements.remove(&n);
                }
            }
            Undo::Close(stmt) => server.insert(stmt),
        }
    }
}

/// Whether a server message with `tag` completes a request of `kind`.
fn completes(kind: Kind, tag: u8) -> bool {
    match kind {
        Kind::Parse => tag == b'1',
        Kind::Bind => tag == b'2',
        Kind::Close => tag == b'3',
        Kind::Describe => matches!(tag, b'T' | b'n'),
        Kind::Execute => matches!(tag, b'C' | b'I' | b's'),
        Kind::Sync | Kind::Query => tag == b'Z',
    }
}

/// Messages a server may send at any time; they always reach the client.
fn is_async(tag: u8) -> bool {
    matches!(tag, b'N' | b'A' | b'S')
}

#[path = "deallocate.rs"]
mod deallocate;
#[path = "rewrite_framing.rs"]
mod framing;
use framing::{bind_names, next_whole, put_bytes_cstr, put_parse, stream_part, Next};

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
