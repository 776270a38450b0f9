//! A loopback TCP relay a test puts between pgfunnel and Postgres to break the network
//! path on purpose: `stall` stops moving bytes (both ways, on open and new connections)
//! without closing anything, `drop_all` resets every open connection, `heal` resumes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay; dropping it stops accepting (open pairs end when their sockets do).
pub struct Relay {
    /// Where pgfunnel should connect.
    pub addr: SocketAddr,
    stalled: watch::Sender<bool>,
    generation: watch::Sender<u64>,
    accepting: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let (stalled, stalled_rx) = watch::channel(false);
        let (generation, generation_rx) = watch::channel(0u64);
        let accepting = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicU64::new(0));
        let (acc, count) = (accepting.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !acc.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                count.fetch_add(1, Ordering::Relaxed);
                let (st, gen) = (stalled_rx.clone(), generation_rx.clone());
                tokio::spawn(pair(client, target, st, gen));
            }
        });
        Relay {
            addr,
            stalled,
            generation,
            accepting,
            accepted,
            task,
        }
    }

    /// Stops moving bytes; connections stay open and new ones are accepted but stalled.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Resumes moving bytes and accepting connections.
    pub fn heal(&self) {
        self.accepting.store(true, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }

    /// Closes every open connection (both sides see a reset/EOF) and refuses new ones
    /// until `heal`.
    pub fn drop_all(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn pair(
    client: TcpStream,
    target: SocketAddr,
    stalled: watch::Receiver<bool>,
    mut generation: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    generation.borrow_and_update();
    tokio::select! {
        _ = pump(cr, sw, stalled.clone()) => {}
        _ = pump(sr, cw, stalled) => {}
        _ = generation.changed() => {}
    }
    // Dropping all four halves closes both sockets.
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While stalled, read nothing: the sender's kernel buffers fill up, as on a dead path.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stalled.wait_for(|s| *s) => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
