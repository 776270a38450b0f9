//! Byte-stream wrappers that split traffic at random places and read slowly: `Chop` wraps a
//! test client's socket, `forward` is a loopback TCP forwarder put between pgfunnel and
//! Postgres, and `Buffering` mimics a TLS writer that takes bytes into its own buffer and
//! says Ok before they reach the socket. All randomness comes from a seeded `StdRng`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// How a side moves bytes: chunk sizes and pauses.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Largest read or write in one call.
    pub max_chunk: usize,
    /// Chance (per mille) that a call is a 1..16-byte sliver.
    pub sliver_permille: u32,
    /// Chance (per mille) that a read first pauses for up to 2 ms (a slow reader).
    pub pause_permille: u32,
}

impl Pace {
    /// A random pace: half the time fast (big chunks, no pauses), else slow.
    pub fn random(rng: &mut StdRng) -> Pace {
        if rng.gen_bool(0.5) {
            Pace {
                max_chunk: 64 * 1024,
                sliver_permille: rng.gen_range(0..20),
                pause_permille: 0,
            }
        } else {
            Pace {
                max_chunk: rng.gen_range(1..=8 * 1024),
                sliver_permille: rng.gen_range(0..100),
                pause_permille: rng.gen_range(1..60),
            }
        }
    }

    fn chunk(&self, rng: &mut StdRng, want: usize) -> usize {
        let cap = if rng.gen_ratio(self.sliver_permille, 1000) {
            rng.gen_range(1..=16)
        } else {
            rng.gen_range(1..=self.max_chunk)
        };
        want.min(cap).max(1)
    }

    fn pause(&self, rng: &mut StdRng) -> Option<Duration> {
        rng.gen_ratio(self.pause_permille, 1000)
            .then(|| Duration::from_micros(rng.gen_range(50..2000)))
    }
}

/// A client socket that writes in random pieces and reads slowly or fast.
pub struct Chop {
    io: TcpStream,
    rng: StdRng,
    pace: Pace,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Chop {
    /// Wraps `io`; `seed` drives every split and pause.
    pub fn new(io: TcpStream, seed: u64) -> Chop {
        let mut rng = StdRng::seed_from_u64(seed);
        let pace = Pace::random(&mut rng);
        Chop {
            io,
            rng,
            pace,
            sleep: None,
        }
    }
}

impl AsyncRead for Chop {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sleep.is_none() {
            if let Some(d) = this.pace.pause(&mut this.rng) {
                this.sleep = Some(Box::pin(tokio::time::sleep(d)));
            }
        }
        if let Some(s) = this.sleep.as_mut() {
            std::task::ready!(s.as_mut().poll(cx));
            this.sleep = None;
        }
        let n = this.pace.chunk(&mut this.rng, buf.remaining());
        let mut small = buf.take(n);
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut small))?;
        let got = small.filled().len();
        // SAFETY: `small` wrote `got` initialised bytes into `buf`'s unfilled part.
        unsafe { buf.assume_init(got) };
        buf.advance(got);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chop {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = this.pace.chunk(&mut this.rng, buf.len());
        Pin::new(&mut this.io).poll_write(cx, &buf[..n])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Listens on loopback and forwards every connection to `target`, each direction moving
/// bytes in random pieces at its own random pace (a slow or fast Postgres, as pgfunnel
/// sees it). TLS passes through untouched, its records split anywhere.
pub async fn forward(target: SocketAddr, seed: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let addr = listener.local_addr().expect("forwarder addr");
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        while let Ok((near, _)) = listener.accept().await {
            let Ok(far) = TcpStream::connect(target).await else {
                continue;
            };
            let (nr, nw) = near.into_split();
            let (fr, fw) = far.into_split();
            tokio::spawn(pump(nr, fw, rng.gen()));
            tokio::spawn(pump(fr, nw, rng.gen()));
        }
    });
    addr
}

async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let pace = Pace::random(&mut rng);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(d) = pace.pause(&mut rng) {
            tokio::time::sleep(d).await;
        }
        let want = pace.chunk(&mut rng, buf.len());
        let n = match from.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut at = 0;
        while at < n {
            let piece = pace.chunk(&mut rng, n - at);
            if to.write_all(&buf[at..at + piece]).await.is_err() {
                return;
            }
            at += piece;
        }
    }
    let _ = to.shutdown().await;
}

/// A writer that behaves as tokio-rustls does: `poll_write` takes bytes into a buffer of
/// up to `limit` bytes and returns Ok even when the socket below could not take them;
/// only a later `poll_write` or `poll_flush` moves them on.
pub struct Buffering<W> {
    inner: W,
    held: Vec<u8>,
    limit: usize,
}

impl<W: AsyncWrite + Unpin> Buffering<W> {
    /// Wraps `inner` with a buffer of `limit` bytes.
    pub fn new(inner: W, limit: usize) -> Self {
        Buffering {
            inner,
            held: Vec::new(),
            limit,
        }
    }

    /// Moves held bytes down; Pending when the writer below is full.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for Buffering<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Buffering<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() >= this.limit {
            std::task::ready!(this.drain(cx))?;
        }
        let taken = buf.len().min(this.limit - this.held.len());
        this.held.extend_from_slice(&buf[..taken]);
        // As tokio-rustls: bytes taken are reported written whether or not they moved on.
        match this.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(taken)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<W> pgfunnel::net::PollReadReady for Buffering<W> {
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        None
    }
}
