//! The peers a CancelRequest can be forwarded to (`[peers]` and `peers_dns`), each with a
//! bound on forwards in flight (`pool_size`), and the forward itself: a new connection to
//! the peer (TLS per `server_tls_sslmode`, as PgBouncer treats a peer like a server), the
//! CancelRequest with its TTL spent, then wait for the peer to close.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::debug;

use super::key::CancelKey;
use crate::config::SslMode;
use crate::net::dns::DnsCache;
use crate::net::{Stream, TlsConfigs};
use crate::protocol::messages;
use crate::server::tls::{self as server_tls, TlsAttempt};

/// Where a peer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSource {
    /// A `[peers]` entry.
    Config,
    /// An address of `peers_dns` (id learned from the peer).
    Dns,
}

impl PeerSource {
    /// As shown in SHOW PEERS.
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerSource::Config => "config",
            PeerSource::Dns => "dns",
        }
    }
}

/// Counters of one peer for SHOW PEER_POOLS.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Forwards waiting for a slot.
    pub waiting: AtomicUsize,
    /// Forwards connected or connecting.
    pub active: AtomicUsize,
    /// Forwards sent.
    pub forwarded: AtomicU64,
    /// Forwards that failed (connect, TLS, timeout) or found no slot in time.
    pub failed: AtomicU64,
}

/// One peer.
#[derive(Debug)]
pub struct Peer {
    /// Its `peer_id`.
    pub id: u16,
    /// Address, DNS name or Unix socket directory.
    pub host: String,
    /// Port (also names the Unix socket file).
    pub port: u16,
    /// Forwards in flight at most.
    pub pool_size: u32,
    /// Where it was found.
    pub source: PeerSource,
    slots: Arc<Semaphore>,
    /// Counters.
    pub stats: PeerStats,
}

impl Peer {
    /// A peer allowing `pool_size` forwards in flight (at least one).
    pub fn new(id: u16, host: String, port: u16, pool_size: u32, source: PeerSource) -> Peer {
        let pool_size = pool_size.max(1);
        Peer {
            id,
            host,
            port,
            pool_size,
            source,
            slots: Arc::new(Semaphore::new(pool_size as usize)),
            stats: PeerStats::default(),
        }
    }

    /// True when `other` points at the same place with the same bound (kept across reloads,
    /// with its counters).
    pub fn same_as(&self, other: &Peer) -> bool {
        self.id == other.id
            && self.host == other.host
            && self.port == other.port
            && self.pool_size == other.pool_size
            && self.source == other.source
    }
}

/// Peers by id.
pub type PeerMap = BTreeMap<u16, Arc<Peer>>;

/// Forwards `key` to `peer` with no hop left (the peer must be the key's owner), waiting at
/// most `wait` for a slot and then for the whole exchange. Failures are logged and counted,
/// never returned: the requester gets no answer either way.
pub async fn forward(
    peer: &Peer,
    key: CancelKey,
    tls: &TlsConfigs,
    dns: &DnsCache,
    wait: Duration,
) {
    let wait = if wait.is_zero() {
        Duration::from_secs(10)
    } else {
        wait
    };
    let deadline = tokio::time::Instant::now() + wait;
    peer.stats.waiting.fetch_add(1, Ordering::Relaxed);
    let permit = tokio::time::timeout_at(deadline, peer.slots.clone().acquire_owned()).await;
    peer.stats.waiting.fetch_sub(1, Ordering::Relaxed);
    let Ok(Ok(_permit)) = permit else {
        peer.stats.failed.fetch_add(1, Ordering::Relaxed);
        debug!(
            peer = peer.id,
            "cancel forward dropped: no free slot in time"
        );
        return;
    };
    peer.stats.active.fetch_add(1, Ordering::Relaxed);
    let sent = tokio::time::timeout_at(deadline, send(peer, key.with_ttl(0), tls, dns)).await;
    peer.stats.active.fetch_sub(1, Ordering::Relaxed);
    match sent {
        Ok(Ok(())) => {
            peer.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            debug!(peer = peer.id, "cancel request forwarded");
        }
        Ok(Err(e)) => {
            peer.stats.failed.fetch_add(1, Ordering::Relaxed);
            debug!(peer = peer.id, error = %e, "cancel forward failed");
        }
        Err(_) => {
            peer.stats.failed.fetch_add(1, Ordering::Relaxed);
            debug!(peer = peer.id, "cancel forward timed out");
        }
    }
}

async fn send(
    peer: &Peer,
    key: CancelKey,
    tls: &TlsConfigs,
    dns: &DnsCache,
) -> std::io::Result<()> {
    let mut stream = connect(peer, tls, dns).await?;
    let mut buf = BytesMut::new();
    messages::put_cancel_request(&mut buf, key.pid(), &key.secret_bytes());
    stream.write_all(&buf).await?;
    stream.flush().await?;
    // Sent. Hold the slot until the peer closes, once it has passed the cancel on (over TLS
    // without close_notify, as PgBouncer and pgfunnel close: an error that changes nothing).
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
    Ok(())
}

async fn connect(peer: &Peer, tls: &TlsConfigs, dns: &DnsCache) -> std::io::Result<Stream> {
    if peer.host.starts_with('/') {
        let path = std::path::Path::new(&peer.host).join(format!(".s.PGSQL.{}", peer.port));
        return Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?));
    }
    let addrs = dns.resolve(&peer.host, peer.port).await?;
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for addr in addrs.iter() {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => return start_tls(tcp, &peer.host, tls).await,
            Err(e) => last = e,
        }
    }
    dns.forget(&peer.host, peer.port);
    Err(last)
}

async fn start_tls(
    tcp: tokio::net::TcpStream,
    host: &str,
    tls: &TlsConfigs,
) -> std::io::Result<Stream> {
    let side = tls.server();
    let attempt = match side.mode {
        SslMode::Disable | SslMode::Allow => TlsAttempt::Off,
        SslMode::Prefer => TlsAttempt::IfOffered,
        _ => TlsAttempt::Required,
    };
    server_tls::start(tcp, host, side.connector.as_ref(), attempt)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}
