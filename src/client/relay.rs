//! The relay of one client: its state between and during links ([`Relay`]), how a run
//! ends ([`RelayEnd`]) and the clock its timeouts read. The work is split by concern:
//! `idle` waits for an idle client's next request, `observe` scans the bytes that pass
//! (headers of every message; bodies only of the few messages the tracker, validator and
//! parameter tracking read), and `pump` moves bytes both ways through bounded buffers,
//! forwarded as read (no re-encoding).

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use bytes::BytesMut;

use super::link_stats::LinkStats;
use super::params::Reported;
use super::rewrite::Rewriter;
use super::tracker::Tracker;
use super::validate::{ClientViolation, Validator};
use crate::pool::prepared::ServerStatements;
use crate::protocol::{FrameError, Scanner};

mod idle;
mod observe;
mod pump;

pub use idle::IdleEnd;

/// A direction stops reading once this much awaits writing (back-pressure).
const MAX_PENDING: usize = 64 * 1024;
/// Default for `max_pipeline` (the `max_client_pipeline` setting).
pub const DEFAULT_MAX_PIPELINE: usize = 4096;

/// How a relay run ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The transaction finished: the server is idle and owes nothing.
    Released,
    /// The client sent Terminate or closed its socket.
    ClientGone,
    /// The client's socket failed.
    ClientIo(io::Error),
    /// The client broke the protocol (framing, a message type or length that is refused);
    /// nothing of the offending message was forwarded.
    ClientProtocol(ClientViolation),
    /// The server closed or its socket failed.
    ServerGone(io::Error),
    /// The server broke framing.
    ServerProtocol(FrameError),
    /// Statement mode: the client opened a transaction block.
    TransactionInStatementMode,
    /// Timers are on and the request/transaction state changed: recompute deadlines.
    Tick,
}

/// Timestamps the session's timeouts are computed from (kept only when `timed` is on).
#[derive(Debug, Clone, Copy)]
pub struct LinkClock {
    /// When the oldest unanswered request was sent (None: nothing outstanding).
    pub busy_since: Option<Instant>,
    /// When the server's transaction block started (None: idle).
    pub txn_since: Option<Instant>,
    /// Last byte read from either side.
    pub last_activity: Instant,
    epoch: u64,
}

impl LinkClock {
    /// Updates the clock after a ReadyForQuery with `status`.
    fn tick(&mut self, status: u8, nothing_outstanding: bool) {
        self.epoch += 1;
        if nothing_outstanding {
            self.busy_since = None;
        }
        match (status, self.txn_since) {
            (b'I', _) => self.txn_since = None,
            (_, None) => self.txn_since = Some(Instant::now()),
            _ => {}
        }
    }
}

/// How long a link lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Until the client leaves.
    Session,
    /// Until the transaction ends.
    Transaction,
    /// Until the statement ends; a transaction block is an error.
    Statement,
}

/// Per-client relay state, reused across transactions.
#[derive(Debug)]
pub struct Relay {
    /// Client bytes not yet written to the server.
    pub c2s: BytesMut,
    /// Server bytes not yet written to the client.
    pub s2c: BytesMut,
    client_scan: Scanner,
    server_scan: Scanner,
    /// Request/response accounting for the current link.
    pub tracker: Tracker,
    client_terminated: bool,
    /// Link duration rule for `run`.
    pub mode: RelayMode,
    statement_violation: bool,
    /// Keep `clock` current and return `Tick` on state changes (timeouts configured).
    pub timed: bool,
    /// Timestamps for timeouts.
    pub clock: LinkClock,
    /// Prepared-statement rewriting (transaction/statement mode); client bytes then land in
    /// `cin` and server bytes in `sin` before being rewritten into `c2s`/`s2c`.
    pub rewriter: Option<Rewriter>,
    cin: BytesMut,
    sin: BytesMut,
    /// Query/transaction/bytes accounting (SHOW STATS, histograms).
    pub stats: LinkStats,
    /// Set when the server reported a parameter change during the link.
    pub params_changed: bool,
    pin_noted: bool,
    /// Bytes were written to the client (or server) and not flushed since: a TLS stream
    /// may still hold them (see `poll_send`).
    client_unflushed: bool,
    server_unflushed: bool,
    /// Checks every client message before it may be forwarded.
    validator: Validator,
    /// Unanswered requests (Query, Sync, FunctionCall) at which the relay stops reading the
    /// client until answers drain (`max_client_pipeline`).
    pub max_pipeline: usize,
    /// The client is not being read because its pipeline is full (counted once per stretch).
    held_back: bool,
}

impl Relay {
    /// Creates relay state; messages longer than `max_packet_size` are refused.
    pub fn new(max_packet_size: u32) -> Self {
        Relay {
            c2s: BytesMut::new(),
            s2c: BytesMut::new(),
            client_scan: Scanner::new(max_packet_size),
            server_scan: Scanner::new(u32::MAX >> 1),
            tracker: Tracker::default(),
            client_terminated: false,
            mode: RelayMode::Session,
            statement_violation: false,
            timed: false,
            clock: LinkClock {
                busy_since: None,
                txn_since: None,
                last_activity: Instant::now(),
                epoch: 0,
            },
            rewriter: None,
            cin: BytesMut::new(),
            sin: BytesMut::new(),
            stats: LinkStats::default(),
            params_changed: false,
            pin_noted: false,
            client_unflushed: false,
            server_unflushed: false,
            validator: Validator::default(),
            max_pipeline: DEFAULT_MAX_PIPELINE,
            held_back: false,
        }
    }

    /// True when the client may not send more before answers drain: its unanswered
    /// requests reached `max_pipeline` (or, with the rewriter, four times as many pending
    /// replies of any kind; Parse/Bind/Describe replies may sit unflushed in the server
    /// until a Sync, so that bound is looser).
    fn pipeline_full(&self) -> bool {
        self.tracker.outstanding() >= self.max_pipeline
            || self
                .rewriter
                .as_ref()
                .is_some_and(|rw| rw.pending_replies() >= self.max_pipeline.saturating_mul(4))
    }

    /// True when the server may go back to the pool after the client left: everything
    /// sent to it was answered, nothing is half-sent or half-read.
    pub fn server_clean(&self) -> bool {
        self.tracker.is_idle()
            && self.c2s.is_empty()
            && self.cin.is_empty()
            && self.sin.is_empty()
            && self.server_scan.at_boundary()
            && self.rewriter.as_ref().is_none_or(Rewriter::is_settled)
    }

    /// Where client bytes land when read: `cin` when the rewriter sits between the client
    /// and `c2s`, else `c2s` itself.
    fn client_in(&mut self) -> &mut BytesMut {
        if self.rewriter.is_some() {
            &mut self.cin
        } else {
            &mut self.c2s
        }
    }

    /// Where server bytes land when read (`sin` or `s2c`, as for the client side).
    fn server_in(&mut self) -> &mut BytesMut {
        if self.rewriter.is_some() {
            &mut self.sin
        } else {
            &mut self.s2c
        }
    }
}

/// The linked server's state a relay run updates besides the byte buffers (its reported
/// parameters, the client's view of them, its prepared statements).
#[derive(Debug)]
pub struct LinkState<'a> {
    /// The server's reported parameters.
    pub params: &'a mut HashMap<String, String>,
    /// The reported parameters as the client has seen them.
    pub seen: &'a mut Reported,
    /// The server's prepared statements.
    pub prepared: &'a mut ServerStatements,
}

#[cfg(test)]
mod tests;
