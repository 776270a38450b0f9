//! A byte stream that is TCP, a Unix socket, or TLS over TCP toward a client or a server,
//! so the client and server code is written once for all of them.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::{client, server};

use crate::net::edge_stream::EdgeStream;

/// A connected stream to a client or a server.
#[derive(Debug)]
pub enum Stream {
    /// TCP (IPv4 or IPv6).
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
    /// TLS with a client: pgfunnel is the TLS server (`client_tls_*`).
    ClientTls(Box<server::TlsStream<TcpStream>>),
    /// TLS with a Postgres server: pgfunnel is the TLS client (`server_tls_*`).
    ServerTls(Box<client::TlsStream<TcpStream>>),
    /// A client's Postgres byte stream carried in WebSocket frames (`edge_listen`).
    Edge(Box<EdgeStream>),
}

/// Dispatches one expression over every variant (each binds `$s` to its inner stream).
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::ClientTls($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::Edge($s) => $e,
        }
    };
}

impl Stream {
    /// True for a Unix-domain socket (used for `local` HBA rules and peer auth).
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// The peer's IP address (IPv4-mapped IPv6 shown as IPv4); `None` on a Unix socket.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        if let Stream::Edge(e) = self {
            return Some(e.peer().ip().to_canonical());
        }
        let addr = self.tcp()?.peer_addr();
        addr.ok().map(|a| a.ip().to_canonical())
    }

    /// The TCP socket under the stream (`None` for a Unix socket).
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::ServerTls(s) => Some(s.get_ref().0),
            Stream::Unix(_) | Stream::Edge(_) => None,
        }
    }

    /// True for a client that came through the edge listener (WebSocket).
    pub fn is_edge(&self) -> bool {
        matches!(self, Stream::Edge(_))
    }

    /// True when the stream is encrypted (either side).
    /// (A WebSocket client counts as encrypted when it came over `wss://`.)
    pub fn is_tls(&self) -> bool {
        match self {
            Stream::Edge(e) => e.is_tls(),
            other => matches!(other, Stream::ClientTls(_) | Stream::ServerTls(_)),
        }
    }

    /// The verified certificate chain a TLS client presented, leaf first (`None` without
    /// TLS or without a client certificate).
    pub fn client_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Stream::ClientTls(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// Writes all of `buf` and flushes. A TLS stream takes bytes into its own buffer and
    /// may report them written while the socket is full; without the flush they would
    /// wait there for the next write, which a peer waiting for this message never causes.
    pub async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await?;
        self.flush().await
    }

    /// Writes `buf` if the socket takes it now, without waiting (a best-effort NOTICE to a
    /// client that is waiting for its own reply and so is not sending). Returns whether
    /// every byte was taken.
    pub fn write_now(&mut self, buf: &[u8]) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut pinned = Pin::new(self);
        let mut done = 0;
        while done < buf.len() {
            match pinned.as_mut().poll_write(&mut cx, &buf[done..]) {
                Poll::Ready(Ok(n)) if n > 0 => done += n,
                _ => break,
            }
        }
        let _ = pinned.poll_flush(&mut cx);
        done == buf.len()
    }

    /// Checks without blocking whether the peer closed the stream or sent something
    /// unexpected. An idle server must have nothing to say: any byte (say, a FATAL from
    /// `idle_session_timeout`) or EOF means it is no longer usable.
    ///
    /// The kernel is asked (recv with MSG_PEEK) only when tokio's reactor has seen the
    /// socket become readable since its last read: an idle server that closed or spoke
    /// produced an epoll event, and the reactor processes events as they arrive when the
    /// runtime is idle and every few dozen task polls when it is busy. This keeps the
    /// check off the syscall path of every checkout; the window it leaves (an event not
    /// yet processed) is of the same order as the race every check has, a server that
    /// dies right after it.
    pub fn is_idle_and_open(&mut self) -> bool {
        let peeked = match (self.tcp(), &*self) {
            (Some(tcp), _) => tcp.try_io(Interest::READABLE, || peek(tcp.as_raw_fd())),
            (None, Stream::Unix(s)) => s.try_io(Interest::READABLE, || peek(s.as_raw_fd())),
            (None, _) => return false,
        };
        match peeked {
            Ok(()) => return false, // EOF or unexpected bytes
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return false,
            Err(_) => {}
        }
        if !self.is_tls() {
            return true;
        }
        // Plaintext the TLS layer may already hold counts as unexpected too.
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut rb), Poll::Pending)
    }
}

/// recv(MSG_PEEK) of one byte: `Ok` when the socket holds a byte or EOF, `WouldBlock`
/// when it is open and quiet.
fn peek(fd: std::os::fd::RawFd) -> io::Result<()> {
    let mut byte = 0u8;
    // SAFETY: fd is a socket owned by the caller's stream and open for the duration of the
    // call; the buffer is one valid byte; MSG_PEEK leaves any data in place.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waiting until a stream has bytes to read without lending it a buffer, so an idle client
/// holds no read buffer while it thinks.
pub trait PollReadReady {
    /// Ready when a read would not block; `None` when the stream cannot tell (a server's
    /// TLS, WebSocket frames, test pipes): the caller then reads into a buffer instead.
    /// A client's TLS reports its socket's readiness, which is only meaningful right after
    /// a read returned `Pending` (rustls then holds no decrypted bytes); a partial TLS
    /// record makes the next read pend again.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>>;
}

impl PollReadReady for Stream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        match self {
            Stream::Tcp(s) => Some(s.poll_read_ready(cx)),
            Stream::Unix(s) => Some(s.poll_read_ready(cx)),
            // An idle TLS client then holds no read buffer while it waits.
            Stream::ClientTls(s) => Some(s.get_ref().0.poll_read_ready(cx)),
            Stream::ServerTls(_) | Stream::Edge(_) => None,
        }
    }
}

impl PollReadReady for tokio::io::DuplexStream {
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        None
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}
