//! The I/O pump of a linked client: bytes flow both ways between the client and its server
//! through two bounded buffers (back-pressure at `MAX_PENDING`, the pipeline bound),
//! through the rewriter when one is set, until the link must end.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use super::{LinkState, Relay, RelayEnd, RelayMode, MAX_PENDING};
use crate::client::buffers::{self, READ_CHUNK};
use crate::client::rewrite::Rewriter;

impl Relay {
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

    /// One poll of the pump: rewrite, write both ways, check whether the link ends, read
    /// both ways; loops while anything moved.
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
            self.rewrite_client_input(link);
            let mut progress = match self.write_both(cx, client, server) {
                Ok(moved) => moved,
                Err(end) => return Poll::Ready(end),
            };
            if let Some(end) = self.link_end(release_when_idle, epoch) {
                return Poll::Ready(end);
            }
            // read server
            if self.s2c.len() + self.sin.len() < MAX_PENDING {
                match self.read_server(cx, server, link) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(end)) => return Poll::Ready(end),
                    Poll::Pending => {}
                }
            }
            match self.read_client(cx, client) {
                Poll::Ready(Ok(())) => progress = true,
                Poll::Ready(Err(end)) => return Poll::Ready(end),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Passes what the client sent through the rewriter (when one is set).
    fn rewrite_client_input(&mut self, link: &mut LinkState<'_>) {
        if let Some(rw) = self.rewriter.as_mut() {
            if !self.cin.is_empty() {
                rw.client_to_server(&mut self.cin, &mut self.c2s, link.prepared, &mut self.s2c);
                for _ in 0..rw.take_refusals() {
                    self.stats.refused();
                }
                for back in rw.take_refused_requests() {
                    self.tracker.refused(back);
                }
                self.stats.prepared(rw.take_counts());
                if rw.take_large_parse() {
                    self.tracker.uninspected_parse = true;
                }
            }
        }
    }

    /// Writes client -> server (all but a held-back partial header) and server -> client;
    /// returns whether bytes moved, or how the link ends when a socket failed.
    fn write_both<C, S>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        server: &mut S,
    ) -> Result<bool, RelayEnd>
    where
        C: AsyncWrite + Unpin,
        S: AsyncWrite + Unpin,
    {
        let ready = self.forwardable();
        let unflushed = &mut self.server_unflushed;
        let to_server = poll_send(cx, &mut *server, &mut self.c2s, ready, unflushed)
            .map_err(RelayEnd::ServerGone)?;
        let all = self.s2c.len();
        let unflushed = &mut self.client_unflushed;
        let to_client = poll_send(cx, &mut *client, &mut self.s2c, all, unflushed)
            .map_err(RelayEnd::ClientIo)?;
        Ok(to_server || to_client)
    }

    /// How the link ends now, if it does: a transaction block in statement mode, the
    /// server released (idle, owing nothing, every byte delivered), the client gone once
    /// its last bytes are out, or a timer tick.
    fn link_end(&mut self, release_when_idle: bool, epoch: u64) -> Option<RelayEnd> {
        if self.statement_violation {
            self.statement_violation = false;
            return Some(RelayEnd::TransactionInStatementMode);
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
            return Some(RelayEnd::Released);
        }
        if self.client_terminated
            && !self.server_unflushed
            && self.c2s.is_empty()
            && self.s2c.is_empty()
            && self.cin.is_empty()
        {
            return Some(RelayEnd::ClientGone);
        }
        (self.timed && self.clock.epoch != epoch).then_some(RelayEnd::Tick)
    }

    /// Reads the client, unless too many of its requests await answers (back-pressure,
    /// counted once per stretch) or too many of its bytes await writing.
    fn read_client<C: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
    ) -> Poll<Result<(), RelayEnd>> {
        let full = self.pipeline_full();
        if full && !self.held_back {
            self.stats.pipeline_full();
        }
        self.held_back = full;
        if self.c2s.len() + self.cin.len() >= MAX_PENDING || self.client_terminated || full {
            return Poll::Pending;
        }
        match poll_fill(cx, &mut *client, self.client_in()) {
            Poll::Ready(Ok((_, 0))) => Poll::Ready(Err(RelayEnd::ClientGone)),
            Poll::Ready(Ok((before, n))) => match self.scan_client(before, n) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => Poll::Ready(Err(RelayEnd::ClientProtocol(e))),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(RelayEnd::ClientIo(e))),
            Poll::Pending => Poll::Pending,
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
