//! The client side of a WebSocket connection as a byte stream: the edge listener moves the
//! payload of binary frames into one end of an in-memory pipe and the session reads the
//! other end like a socket (see `crate::edge::websocket`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Most bytes [`EdgeStream::ready_input`] takes ahead of the session's reads.
const READ_AHEAD: usize = 16 * 1024;

/// A WebSocket client's byte stream, with where it came from.
#[derive(Debug)]
pub struct EdgeStream {
    io: DuplexStream,
    peer: SocketAddr,
    tls: bool,
    /// Bytes taken out of the pipe by [`EdgeStream::ready_input`], served first.
    ahead: BytesMut,
}

impl EdgeStream {
    /// Wraps the session's end of the pipe; `tls` when the WebSocket came over `wss://`.
    pub fn new(io: DuplexStream, peer: SocketAddr, tls: bool) -> Self {
        EdgeStream {
            io,
            peer,
            tls,
            ahead: BytesMut::new(),
        }
    }

    /// The client's TCP address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True when the WebSocket came over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// What the client has sent that nobody read yet, without waiting (at most 16 KiB is
    /// looked at). A client that sent its password before being asked for it has it here.
    pub fn ready_input(&mut self) -> &[u8] {
        let mut cx = Context::from_waker(Waker::noop());
        while self.ahead.len() < READ_AHEAD {
            let mut chunk = [0u8; 4096];
            let room = (READ_AHEAD - self.ahead.len()).min(chunk.len());
            let mut rb = ReadBuf::new(&mut chunk[..room]);
            match Pin::new(&mut self.io).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    self.ahead.extend_from_slice(rb.filled())
                }
                _ => break,
            }
        }
        &self.ahead
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn input_looked_at_ahead_is_still_read_in_order() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut s = EdgeStream::new(a, "127.0.0.1:1".parse().expect("addr"), false);
        assert!(s.ready_input().is_empty());
        b.write_all(b"hello ").await.expect("write");
        assert_eq!(s.ready_input(), b"hello ");
        b.write_all(b"world").await.expect("write");
        drop(b);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"hello world");
    }
}
