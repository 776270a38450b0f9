//! The hot loop: bytes flow both ways between a client and its linked server through two
//! bounded buffers, forwarded as read (no re-encoding). Only message headers are looked
//! at, plus the bodies of ReadyForQuery and ParameterStatus from the server.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use super::buffers::{self, READ_CHUNK};
use super::link_stats::LinkStats;
use super::params::Reported;
use super::prepared::ServerStatements;
use super::rewrite::Rewriter;
use super::tracker::Tracker;
use super::validate::{ClientViolation, Validator};
use crate::net::PollReadReady;
use crate::protocol::messages::{parse_parameter_status, tag};
use crate::protocol::{Capture, FrameError, ScanEvent, Scanner};

/// Buffer for an idle client's next request when its stream cannot report readiness
/// (TLS); grown when a bigger request arrives.
const IDLE_READ: usize = 1024;
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

/// What the idle wait for a client produced.
#[derive(Debug)]
pub enum IdleEnd {
    /// The client sent bytes that need a server (they sit in `c2s`).
    Request,
    /// The client left.
    ClientGone,
    /// The client's socket failed.
    ClientIo(io::Error),
    /// The client broke the protocol (nothing of the offending message is kept).
    ClientProtocol(ClientViolation),
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

    /// Hands buffer memory back while the client holds no server (idle clients stay
    /// small; the next busy client reuses it).
    fn release_idle_memory(&mut self) {
        for buf in [&mut self.c2s, &mut self.s2c, &mut self.cin, &mut self.sin] {
            buffers::give_back(buf);
        }
        self.client_scan.release_idle_memory();
        self.server_scan.release_idle_memory();
    }

    /// The body of the client's pending request when it is exactly one complete simple
    /// Query (nothing else buffered), for statements pgfunnel answers itself.
    pub fn lone_query(&self) -> Option<&[u8]> {
        let buf = if self.rewriter.is_some() {
            &self.cin
        } else {
            &self.c2s
        };
        if buf.len() < 5 || buf[0] != b'Q' || !self.client_scan.at_boundary() {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        (buf.len() == len + 1).then(|| &buf[5..])
    }

    /// Drops the lone query returned by `lone_query` (pgfunnel answered it).
    pub fn consume_lone_query(&mut self) {
        self.cin.clear();
        self.c2s.clear();
        self.tracker.forget_last_request();
        self.clock.busy_since = None;
    }

    /// Waits until the client sends something that needs a server.
    /// Cancel safe: bytes read are kept in `c2s` and already accounted.
    pub async fn wait_for_request<C: AsyncRead + PollReadReady + Unpin>(
        &mut self,
        client: &mut C,
    ) -> IdleEnd {
        loop {
            if !self.c2s.is_empty() || !self.cin.is_empty() {
                return IdleEnd::Request;
            }
            if self.client_terminated {
                return IdleEnd::ClientGone;
            }
            let buf = self.client_in();
            let before = buf.len();
            buffers::lend(buf);
            if buf.capacity() - buf.len() < 64 {
                buf.reserve(IDLE_READ);
            }
            // A busy client's next request is often already there; otherwise it is idle:
            // give the relay buffers back and wait for bytes without holding any.
            let first =
                poll_fn(|cx| Poll::Ready(poll_read_buf(Pin::new(&mut *client), cx, &mut *buf)))
                    .await;
            let read = match first {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    self.release_idle_memory();
                    let ready = poll_fn(|cx| match client.poll_read_ready(cx) {
                        None => Poll::Ready(None),
                        Some(p) => p.map(Some),
                    })
                    .await;
                    match ready {
                        Some(Ok(())) => continue,
                        Some(Err(e)) => return IdleEnd::ClientIo(e),
                        None => {
                            let buf = self.client_in();
                            buf.reserve(IDLE_READ);
                            poll_fn(|cx| poll_read_buf(Pin::new(&mut *client), cx, &mut *buf)).await
                        }
                    }
                }
            };
            let n = match read {
                Ok(0) => return IdleEnd::ClientGone,
                Ok(n) => n,
                Err(e) => return IdleEnd::ClientIo(e),
            };
            if let Err(e) = self.scan_client(before, n) {
                return IdleEnd::ClientProtocol(e);
            }
        }
    }

    /// Scans `n` client bytes read at `start`; a refused message is cut from the buffer
    /// with everything after it (the caller ends the link).
    fn scan_client(&mut self, start: usize, n: usize) -> Result<(), ClientViolation> {
        let buf = if self.rewriter.is_some() {
            &mut self.cin
        } else {
            &mut self.c2s
        };
        let tracker = &mut self.tracker;
        let timed = self.timed;
        let clock = &mut self.clock;
        if timed {
            clock.last_activity = Instant::now();
        }
        let stats = &mut self.stats;
        stats.client_bytes(n);
        let validator = &mut self.validator;
        let mut terminate_at = None;
        let mut refused = None;
        let consumed = self.client_scan.feed(
            &buf[start..start + n],
            |tag, len| {
                if Tracker::wants_client_body(tag, len) {
                    Capture::Body
                } else {
                    Capture::Skip
                }
            },
            |ev| {
                match ev {
                    ScanEvent::Header { tag, len } if refused.is_none() => {
                        tracker.client_length(tag, len);
                        let unanswered = !tracker.nothing_outstanding();
                        if let Err(e) = validator.client_message(tag, len, unanswered) {
                            refused = Some(e);
                            return false;
                        }
                        if tag == b'X' {
                            terminate_at = Some(());
                            return false;
                        }
                        if matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'S' | b'F') {
                            stats.request();
                        }
                        if timed && matches!(tag, b'Q' | b'S' | b'F') && clock.busy_since.is_none()
                        {
                            clock.busy_since = Some(Instant::now());
                            clock.epoch += 1;
                        }
                        tracker.client_message(tag)
                    }
                    ScanEvent::Header { .. } => return false,
                    ScanEvent::Message { tag, body } => tracker.client_body(tag, body),
                }
                true
            },
        );
        let consumed = match consumed {
            Ok(c) => c,
            Err(e) => {
                refused = Some(e.into());
                self.client_scan.consumed_before_error()
            }
        };
        if let Some(e) = refused {
            // Partial headers are held back from the server (see `forwardable`), so the
            // whole header is still in the buffer: drop it and everything after it.
            buf.truncate((start + consumed).saturating_sub(5));
            return Err(e);
        }
        if terminate_at.is_some() {
            // Terminate is for pgfunnel, never for the server; drop it and what follows.
            buf.truncate((start + consumed).saturating_sub(5));
            self.client_terminated = true;
        }
        Ok(())
    }

    fn scan_server(
        &mut self,
        start: usize,
        n: usize,
        params: &mut HashMap<String, String>,
        seen: &mut Reported,
    ) -> Result<(), FrameError> {
        let buf = if self.rewriter.is_some() {
            &self.sin
        } else {
            &self.s2c
        };
        let tracker = &mut self.tracker;
        let statement_mode = self.mode == RelayMode::Statement;
        let violation = &mut self.statement_violation;
        let params_changed = &mut self.params_changed;
        let timed = self.timed;
        let clock = &mut self.clock;
        if timed {
            clock.last_activity = Instant::now();
        }
        let stats = &mut self.stats;
        stats.server_bytes(n);
        let validator = &mut self.validator;
        self.server_scan.feed(
            &buf[start..start + n],
            |t, _| {
                if Tracker::wants_server_body(t) {
                    Capture::Body
                } else {
                    Capture::Skip
                }
            },
            |ev| {
                let (tag, body) = match ev {
                    ScanEvent::Header { tag, .. } => {
                        validator.server_message(tag);
                        return true;
                    }
                    ScanEvent::Message { tag, body } => (tag, body),
                };
                match tag {
                    tag::READY_FOR_QUERY => {
                        let status = body.first().copied().unwrap_or(b'I');
                        if statement_mode && status != b'I' {
                            *violation = true;
                        }
                        tracker.ready_for_query(status);
                        stats.ready(status);
                        if timed {
                            clock.tick(status, tracker.nothing_outstanding());
                        }
                    }
                    tag::PARAMETER_STATUS => {
                        *params_changed = true;
                        if let Some((k, v)) = parse_parameter_status(body) {
                            tracker.parameter_status(&k, params.get(&k), &v);
                            seen.insert(k.clone(), v.clone());
                            params.insert(k, v);
                        }
                    }
                    tag::ERROR_RESPONSE => tracker.server_error(),
                    b'C' => tracker.command_complete(body),
                    _ => {}
                }
                true
            },
        )?;
        Ok(())
    }

    /// Relays until the link must end. In transaction and statement mode (`self.mode`) it
    /// returns `Released` as soon as the server is idle, owes nothing and every byte has
    /// been delivered; `release_when_idle = false` keeps the link (a pinned client).
    /// `link` holds the server's reported parameters, the client's, and the server's
    /// prepared statements; all are kept current. Cancel safe: all state lives in `self`.
    pub async fn run<C, S>(
        &mut self,
        client: &mut C,
        server: &mut S,
        release_when_idle: bool,
        link: &mut LinkState<'_>,
    ) -> RelayEnd
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let release = release_when_idle && self.mode != RelayMode::Session;
        let epoch = self.clock.epoch;
        // The rewriter writes into c2s/s2c itself: give them memory from the spares now.
        if self.rewriter.is_some() {
            buffers::lend(&mut self.c2s);
            buffers::lend(&mut self.s2c);
        }
        poll_fn(|cx| self.poll_relay(cx, client, server, release, epoch, link)).await
    }

    /// How much of `c2s` may go to the server: all of it but the bytes of a client header
    /// not yet complete (so not yet validated). With the rewriter, incomplete headers stay
    /// in `cin`.
    fn forwardable(&self) -> usize {
        if self.rewriter.is_some() {
            self.c2s.len()
        } else {
            self.c2s.len() - self.client_scan.partial_header_len()
        }
    }

    fn settled(&self) -> bool {
        self.c2s.is_empty()
            && self.s2c.is_empty()
            && self.cin.is_empty()
            && self.sin.is_empty()
            && !self.client_unflushed
            && !self.server_unflushed
            && self.rewriter.as_ref().is_none_or(Rewriter::is_settled)
    }

    fn poll_relay<C, S>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        server: &mut S,
        release_when_idle: bool,
        epoch: u64,
        link: &mut LinkState<'_>,
    ) -> Poll<RelayEnd>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut progress = false;
            if let Some(rw) = self.rewriter.as_mut() {
                if !self.cin.is_empty() {
                    rw.client_to_server(&mut self.cin, &mut self.c2s, link.prepared, &mut self.s2c);
                    for _ in 0..rw.take_refusals() {
                        self.stats.refused();
                    }
                    self.stats.prepared(rw.take_counts());
                    if rw.take_large_parse() {
                        self.tracker.uninspected_parse = true;
                    }
                }
            }
            // client -> server (all but a held-back partial header), server -> client
            let ready = self.forwardable();
            match poll_send(
                cx,
                &mut *server,
                &mut self.c2s,
                ready,
                &mut self.server_unflushed,
            ) {
                Ok(moved) => progress |= moved,
                Err(e) => return Poll::Ready(RelayEnd::ServerGone(e)),
            }
            let all = self.s2c.len();
            match poll_send(
                cx,
                &mut *client,
                &mut self.s2c,
                all,
                &mut self.client_unflushed,
            ) {
                Ok(moved) => progress |= moved,
                Err(e) => return Poll::Ready(RelayEnd::ClientIo(e)),
            }
            if self.statement_violation {
                self.statement_violation = false;
                return Poll::Ready(RelayEnd::TransactionInStatementMode);
            }
            // A pin can appear mid-link (BEGIN; CREATE TEMP TABLE ...; COMMIT): from then on
            // the client keeps this server.
            if let (Some(reason), false) = (self.tracker.pin, self.pin_noted) {
                self.pin_noted = true;
                self.stats.pinned(reason.label());
            }
            if release_when_idle
                && self.tracker.pin.is_none()
                && self.tracker.is_idle()
                && self.settled()
                && self.client_scan.at_boundary()
                && self.server_scan.at_boundary()
            {
                return Poll::Ready(RelayEnd::Released);
            }
            if self.client_terminated
                && !self.server_unflushed
                && self.c2s.is_empty()
                && self.s2c.is_empty()
                && self.cin.is_empty()
            {
                return Poll::Ready(RelayEnd::ClientGone);
            }
            if self.timed && self.clock.epoch != epoch {
                return Poll::Ready(RelayEnd::Tick);
            }
            // read server
            if self.s2c.len() + self.sin.len() < MAX_PENDING {
                match self.read_server(cx, server, link) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(end)) => return Poll::Ready(end),
                    Poll::Pending => {}
                }
            }
            // read client (back-pressure: not while too many requests await answers)
            let full = self.pipeline_full();
            if full && !self.held_back {
                self.stats.pipeline_full();
            }
            self.held_back = full;
            if self.c2s.len() + self.cin.len() < MAX_PENDING && !self.client_terminated && !full {
                match poll_fill(cx, &mut *client, self.client_in()) {
                    Poll::Ready(Ok((_, 0))) => return Poll::Ready(RelayEnd::ClientGone),
                    Poll::Ready(Ok((before, n))) => {
                        if let Err(e) = self.scan_client(before, n) {
                            return Poll::Ready(RelayEnd::ClientProtocol(e));
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientIo(e)),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn read_server<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        server: &mut S,
        link: &mut LinkState<'_>,
    ) -> Poll<Result<(), RelayEnd>> {
        match poll_fill(cx, &mut *server, self.server_in()) {
            Poll::Ready(Ok((_, 0))) => Poll::Ready(Err(RelayEnd::ServerGone(
                io::ErrorKind::UnexpectedEof.into(),
            ))),
            Poll::Ready(Ok((before, n))) => {
                if let Err(e) = self.scan_server(before, n, link.params, link.seen) {
                    return Poll::Ready(Err(RelayEnd::ServerProtocol(e)));
                }
                if let Some(rw) = self.rewriter.as_mut() {
                    rw.server_to_client(&mut self.sin, &mut self.s2c, link.prepared);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(RelayEnd::ServerGone(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes the first `ready` bytes of `buf` to `io` (the rest, a client header not yet whole,
/// is held back) and, once those are written, flushes: returns whether bytes moved. Flushing is not optional here. A TLS stream (tokio-rustls) takes plaintext
/// into its own buffer and returns Ok even when the socket below is full; those bytes move
/// on only at its next write or flush. Without the flush, the last bytes of a message (the
/// end of a COPY, a ReadyForQuery) sat in that buffer while both sockets were empty: the
/// socket's wake-up came, there was nothing left in `buf` to write, and nothing else
/// would ever write. A flush that cannot finish registers the same wake-up and is retried.
fn poll_send<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    io: &mut W,
    buf: &mut BytesMut,
    ready: usize,
    unflushed: &mut bool,
) -> io::Result<bool> {
    let mut moved = false;
    let mut left = ready;
    if ready > 0 {
        match Pin::new(&mut *io).poll_write(cx, &buf[..ready]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                left -= n;
                *unflushed = true;
                moved = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    if left == 0 && *unflushed {
        match Pin::new(io).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok(moved)
}

/// Reads once from `io` into `buf` (growing it by a chunk when little room is left); returns the length
/// before the read and the bytes read (0 = end of stream).
fn poll_fill<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    io: &mut R,
    buf: &mut BytesMut,
) -> Poll<io::Result<(usize, usize)>> {
    let before = buf.len();
    buffers::lend(buf);
    if buf.capacity() - before < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    poll_read_buf(Pin::new(io), cx, buf).map_ok(|n| (before, n))
}

/// What a link updates besides the byte buffers.
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
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn link<'a>(
        params: &'a mut HashMap<String, String>,
        seen: &'a mut Reported,
        prepared: &'a mut ServerStatements,
    ) -> LinkState<'a> {
        LinkState {
            params,
            seen,
            prepared,
        }
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Runs the relay with fresh link state for at most `ms` milliseconds; None when it was
    /// still running then.
    async fn run_for(
        relay: &mut Relay,
        client: &mut DuplexStream,
        server: &mut DuplexStream,
        ms: u64,
    ) -> Option<RelayEnd> {
        let (mut p, mut s) = (HashMap::new(), Reported::default());
        let mut ps = ServerStatements::default();
        let mut state = link(&mut p, &mut s, &mut ps);
        let run = relay.run(client, server, true, &mut state);
        tokio::time::timeout(std::time::Duration::from_millis(ms), run)
            .await
            .ok()
    }

    /// A transaction-mode relay whose client (far end `client_far`) sent the Query `sql`,
    /// read as the request that asks for a server (far end `server_far`).
    async fn requested(
        sql: &[u8],
    ) -> (
        Relay,
        DuplexStream,
        DuplexStream,
        DuplexStream,
        DuplexStream,
    ) {
        let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
        let (server, server_far) = tokio::io::duplex(1 << 16);
        let mut relay = Relay::new(1 << 20);
        relay.mode = RelayMode::Transaction;
        client_far.write_all(&msg(b'Q', sql)).await.unwrap();
        assert!(matches!(
            relay.wait_for_request(&mut client).await,
            IdleEnd::Request
        ));
        (relay, client, client_far, server, server_far)
    }

    #[tokio::test]
    async fn releases_server_on_ready_for_query_idle() {
        let (mut relay, mut client, mut client_far, mut server, mut server_far) =
            requested(b"select 1\0").await;
        let server_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 14];
            server_far.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf[0], b'Q');
            let mut reply = msg(b'T', b"\0\0");
            reply.extend(msg(b'C', b"SELECT 1\0"));
            reply.extend(msg(b'Z', b"I"));
            server_far.write_all(&reply).await.unwrap();
            server_far
        });
        let (mut p, mut s) = (HashMap::new(), Reported::default());
        let mut ps = ServerStatements::default();
        let end = relay
            .run(
                &mut client,
                &mut server,
                true,
                &mut link(&mut p, &mut s, &mut ps),
            )
            .await;
        assert!(matches!(end, RelayEnd::Released), "{end:?}");
        let mut got = vec![0u8; 7 + 14 + 6];
        client_far.read_exact(&mut got).await.unwrap();
        assert_eq!(got[got.len() - 6..], msg(b'Z', b"I")[..]);
        drop(server_task.await.unwrap());
    }

    #[tokio::test]
    async fn keeps_server_while_in_transaction_and_tracks_parameters() {
        let (mut relay, mut client, mut client_far, mut server, mut server_far) =
            requested(b"begin\0").await;
        let mut reply = msg(b'S', b"TimeZone\0UTC\0");
        reply.extend(msg(b'Z', b"T"));
        server_far.write_all(&reply).await.unwrap();
        let (mut p, mut s) = (HashMap::new(), Reported::default());
        let mut ps = ServerStatements::default();
        let end = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            relay.run(
                &mut client,
                &mut server,
                true,
                &mut link(&mut p, &mut s, &mut ps),
            ),
        )
        .await;
        assert!(end.is_err(), "must stay linked inside a transaction");
        assert_eq!(p.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(s.get("TimeZone").map(String::as_str), Some("UTC"));
        // the client leaves mid-transaction: reported as ClientGone, tracker not idle
        client_far.write_all(&msg(b'X', b"")).await.unwrap();
        let end = relay
            .run(
                &mut client,
                &mut server,
                true,
                &mut link(&mut p, &mut s, &mut ps),
            )
            .await;
        assert!(matches!(end, RelayEnd::ClientGone), "{end:?}");
        assert!(!relay.tracker.is_idle());
        let mut fwd = vec![0u8; 11];
        server_far.read_exact(&mut fwd).await.unwrap();
        assert_eq!(fwd[0], b'Q', "Terminate must not reach the server");
    }

    #[tokio::test]
    async fn unknown_message_type_is_refused_while_idle() {
        let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
        let mut relay = Relay::new(1 << 20);
        client_far.write_all(&msg(b'z', b"")).await.unwrap();
        assert!(matches!(
            relay.wait_for_request(&mut client).await,
            IdleEnd::ClientProtocol(ClientViolation::UnknownType { tag: b'z' })
        ));
        assert!(relay.c2s.is_empty(), "nothing of it is kept");
    }

    #[tokio::test]
    async fn refused_message_split_across_reads_never_reaches_the_server() {
        let (mut relay, mut client, mut client_far, mut server, mut server_far) =
            requested(b"begin\0").await;
        server_far.write_all(&msg(b'Z', b"T")).await.unwrap();
        let password = msg(b'p', b"secret\0");
        client_far.write_all(&password[..2]).await.unwrap();
        let end = run_for(&mut relay, &mut client, &mut server, 100).await;
        assert!(end.is_none(), "half a header: still linked");
        client_far.write_all(&password[2..]).await.unwrap();
        let end = run_for(&mut relay, &mut client, &mut server, 10_000).await;
        let end = end.expect("the relay ends");
        assert!(
            matches!(
                end,
                RelayEnd::ClientProtocol(ClientViolation::PasswordAfterLogin)
            ),
            "{end:?}"
        );
        assert!(!relay.server_clean(), "inside a transaction: not reusable");
        drop(server);
        let mut got = Vec::new();
        server_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            msg(b'Q', b"begin\0"),
            "not a byte of the password message"
        );
    }

    #[tokio::test]
    async fn client_is_not_read_while_its_pipeline_is_full() {
        let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
        let (mut server, mut server_far) = tokio::io::duplex(1 << 16);
        let mut relay = Relay::new(1 << 20);
        relay.mode = RelayMode::Transaction;
        relay.max_pipeline = 3;
        let pool = std::sync::Arc::new(crate::pool::stats::PoolStats::new(
            crate::pool::stats::Timers::detached(),
        ));
        relay.stats = LinkStats::for_pool(&pool, tracing::Span::none());
        let syncs = msg(b'S', b"").repeat(3);
        client_far.write_all(&syncs).await.unwrap();
        assert!(matches!(
            relay.wait_for_request(&mut client).await,
            IdleEnd::Request
        ));
        assert!(run_for(&mut relay, &mut client, &mut server, 100)
            .await
            .is_none());
        client_far.write_all(&syncs).await.unwrap();
        assert!(run_for(&mut relay, &mut client, &mut server, 100)
            .await
            .is_none());
        let mut got = vec![0u8; 15];
        server_far.read_exact(&mut got).await.unwrap();
        assert_eq!(
            relay.tracker.outstanding(),
            3,
            "the next three are not read"
        );
        server_far
            .write_all(&msg(b'Z', b"I").repeat(3))
            .await
            .unwrap();
        assert!(run_for(&mut relay, &mut client, &mut server, 100)
            .await
            .is_none());
        assert_eq!(relay.tracker.outstanding(), 3, "read once answers drained");
        server_far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, syncs);
        assert_eq!(
            pool.timers.pipeline_full.get(),
            2,
            "each stretch of back-pressure is counted once"
        );
    }

    #[tokio::test]
    async fn oversized_client_message_is_a_protocol_error() {
        let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
        let mut relay = Relay::new(100);
        client_far.write_all(&[b'Q', 0, 1, 0, 0]).await.unwrap();
        assert!(matches!(
            relay.wait_for_request(&mut client).await,
            IdleEnd::ClientProtocol(ClientViolation::Frame(FrameError::TooLarge { .. }))
        ));
    }
}
