//! Rewrites a client's extended-protocol traffic for shared servers (transaction and
//! statement mode): client statement names become pool-wide server names, missing
//! statements are prepared on the fly, evicted ones closed, and the replies are put back
//! in the order the client expects (synthetic ParseComplete/CloseComplete, errors that
//! Postgres itself would give, injected replies dropped). Bytes of other messages are
//! moved unchanged; large messages stream through without being buffered whole.
//!
//! This file holds the rewriter's state and what it expects back; `requests` rewrites
//! client messages (`streaming` those too large to handle whole, `refuse` those pgfunnel
//! answers with an error itself, `deallocate` DEALLOCATE of protocol statements),
//! `replies` server messages, `framing` finds, gathers and streams messages and writes the
//! few the rewriter builds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::link_stats::PreparedCounts;
use super::tracker::CopyInWatch;
use crate::pool::prepared::{Statement, StatementRegistry};

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
    /// A DEALLOCATE did not happen: the client still has the statement under `name`.
    Restore {
        name: Bytes,
        stmt: Arc<Statement>,
    },
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
    /// An injected failing request whose error is replaced by this one (so the server
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
    /// pgfunnel refused a client message itself: everything up to the next Sync is dropped
    /// (as Postgres skips to Sync after an error), the Sync goes to the server.
    refused: bool,
    /// Status of the last ReadyForQuery the server sent (the client's transaction state
    /// once every earlier request is answered).
    last_ready: u8,
    /// An Execute went to the server since the last Sync or Query (work a refusal would
    /// have to roll back).
    batch_executed: bool,
    /// Client Sync, Query and FunctionCall messages handled so far, as the tracker counts
    /// them (each awaits one ReadyForQuery).
    requests_seen: u64,
    /// `requests_seen` of each Sync that ended a batch pgfunnel refused itself, until
    /// `take_refused_requests` hands them to the relay (its tracker must not count a
    /// statement of that batch as done).
    refused_requests: Vec<u64>,
    /// Statements (client names, "" for the unnamed one) that are `DEALLOCATE name` of one
    /// of the client's protocol statements: the server prepares an empty query instead.
    deallocs: HashMap<Bytes, Vec<u8>>,
    /// Portals bound to such a statement, with the name their Execute deallocates.
    dealloc_portals: HashMap<Bytes, Vec<u8>>,
    /// (linked server's pid, pid the client was given), big-endian: a notification the
    /// server sends of its own shows the client's pid (see `set_notify_pids`).
    notify_pids: Option<([u8; 4], [u8; 4])>,
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
            refused: false,
            last_ready: b'I',
            batch_executed: false,
            requests_seen: 0,
            refused_requests: Vec::new(),
            deallocs: HashMap::new(),
            dealloc_portals: HashMap::new(),
            notify_pids: None,
        }
    }

    /// True when every reply the client expects has been delivered or made up.
    pub fn is_settled(&self) -> bool {
        self.expect.is_empty()
            && !self.refused
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

    /// For the next link: notifications sent by the server itself (pid `server_pid`: a
    /// client pinned by a LISTEN on it, NOTIFY or `pg_notify()` in its session) show
    /// `client_pid`, the pid in the client's BackendKeyData, as Postgres shows a session's
    /// own notifications with that session's pid. Other backends' keep theirs.
    pub fn set_notify_pids(&mut self, server_pid: i32, client_pid: i32) {
        self.notify_pids = Some((server_pid.to_be_bytes(), client_pid.to_be_bytes()));
    }

    /// Replies the client still expects (each costs a little memory until it arrives).
    pub fn pending_replies(&self) -> usize {
        self.expect.len()
    }

    /// The requests (counted back from the newest the tracker has seen, 0 = newest) whose
    /// batch pgfunnel refused without the server failing it, since the last call: the
    /// tracker must treat them as failed. Empty (and free) unless a refusal happened.
    pub fn take_refused_requests(&mut self) -> impl Iterator<Item = usize> + '_ {
        // A Query or FunctionCall still being gathered was counted by the tracker already.
        let partial = matches!(self.client_partial.first(), Some(b'Q' | b'F'));
        let newest = self.requests_seen + u64::from(partial);
        self.refused_requests
            .drain(..)
            .map(move |i| newest.saturating_sub(i) as usize)
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

mod deallocate;
mod framing;
mod refuse;
mod replies;
mod requests;
mod streaming;

#[cfg(test)]
mod tests;
