//! Cancel routing: every client gets a pgfunnel-issued BackendKeyData; while the client
//! is linked to a server, its entry points at that server's own key and address, so a
//! CancelRequest reaches exactly the query that client is running and nothing else.
//! Keys follow PgBouncer's peering layout (`fleet::key`): with `peer_id` set they name this
//! instance, so a peer that receives the CancelRequest can forward it here.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use dashmap::DashMap;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::fleet::key::CancelKey;
use crate::protocol::messages;
use crate::server::{BackendKey, CancelAddr};

/// The server a client is currently linked to, as needed to cancel its query.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Where the server listens.
    pub addr: CancelAddr,
    /// The server's own key.
    pub key: BackendKey,
}

#[derive(Debug, Default)]
struct CancelLink {
    target: Option<CancelTarget>,
    cancelled: bool,
}

/// One client's cancel entry: the server it is linked to, if any. Its lock is a plain
/// mutex held for a few stores (never across an await), so linking and unlinking cost no
/// task wake-up; the link cycle and CancelRequests are its only users.
#[derive(Debug)]
pub struct CancelEntry {
    key: CancelKey,
    state: Mutex<CancelLink>,
}

impl CancelEntry {
    /// Points the entry at the server the client was just linked to.
    pub async fn link(&self, target: CancelTarget) {
        let mut s = crate::panic::lock(&self.state);
        s.target = Some(target);
        s.cancelled = false;
    }

    /// Points the entry at server connection `conn` (its cancel address and key).
    pub async fn link_server(&self, conn: &crate::server::ServerConnection) {
        self.link(CancelTarget {
            addr: conn.cancel_addr.clone(),
            key: conn.key.clone(),
        })
        .await;
    }

    /// Clears the entry when the client gives its server back, and returns true when a
    /// cancel was sent (or is being sent) during this link: such a server must not serve
    /// another client, since Postgres delivers a cancel asynchronously and it could still
    /// interrupt the next client's query. A CancelRequest marks the entry before it
    /// sends, so a cancel that found the server linked is always seen here.
    pub async fn unlink(&self) -> bool {
        let mut s = crate::panic::lock(&self.state);
        s.target = None;
        std::mem::take(&mut s.cancelled)
    }
}

/// All clients' cancel keys, by the whole key (the map hashes with random keys, so lookup
/// time says nothing about how much of a guessed key was right).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: DashMap<u64, Arc<CancelEntry>>,
    peer_id: u16,
}

/// A registered key; the entry is removed when this handle drops (client gone).
#[derive(Debug)]
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    /// The pid part of the client's key.
    pub pid: i32,
    /// The entry.
    pub entry: Arc<CancelEntry>,
}

impl CancelHandle {
    /// The secret part of the client's key as an i32 for BackendKeyData.
    pub fn secret_i32(&self) -> i32 {
        self.entry.key.secret()
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.entry.key.as_u64());
    }
}

impl CancelRegistry {
    /// A registry issuing keys that name `peer_id` (0 = no peering: fully random keys).
    pub fn new(peer_id: u16) -> CancelRegistry {
        CancelRegistry {
            entries: DashMap::new(),
            peer_id,
        }
    }

    /// The peer id this registry's keys carry (0 = none).
    pub fn peer_id(&self) -> u16 {
        self.peer_id
    }

    /// Issues a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let mut rng = rand::thread_rng();
        loop {
            let key = CancelKey::issue(self.peer_id, &mut rng);
            if key.pid() == 0 {
                continue;
            }
            let entry = Arc::new(CancelEntry {
                key,
                state: Mutex::new(CancelLink::default()),
            });
            if let dashmap::Entry::Vacant(v) = self.entries.entry(key.as_u64()) {
                v.insert(entry.clone());
                return CancelHandle {
                    registry: self.clone(),
                    pid: key.pid(),
                    entry,
                };
            }
        }
    }

    /// Serves a CancelRequest: when the key is known and its client is linked, marks the
    /// link cancelled (so its server is not reused) and sends a cancel to that server.
    /// Unknown keys, wrong secrets and idle clients do nothing. With peering the TTL bits
    /// of the received key are ignored (a forwarded key has spent some). Returns whether
    /// a cancel was sent.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) -> bool {
        let Some(mut key) = CancelKey::from_request(pid, secret) else {
            return false;
        };
        if self.peer_id > 0 {
            key = key.as_issued();
        }
        let Some(entry) = self.entries.get(&key.as_u64()).map(|e| e.clone()) else {
            return false;
        };
        if !bool::from(entry.key.0.ct_eq(&key.0)) {
            return false;
        }
        let target = {
            let mut state = crate::panic::lock(&entry.state);
            let Some(target) = state.target.clone() else {
                return false;
            };
            state.cancelled = true;
            target
        };
        send_cancel(target).await;
        true
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no client is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Sends a CancelRequest to the server; errors are logged, never returned (the protocol
/// gives the requester no answer either way).
pub async fn send_cancel(target: CancelTarget) {
    let mut buf = BytesMut::new();
    messages::put_cancel_request(&mut buf, target.key.pid, &target.key.secret);
    let result = async {
        match &target.addr {
            CancelAddr::Tcp(a) => {
                tokio::net::TcpStream::connect(a)
                    .await?
                    .write_all(&buf)
                    .await
            }
            CancelAddr::Unix(p) => {
                tokio::net::UnixStream::connect(p)
                    .await?
                    .write_all(&buf)
                    .await
            }
        }
    };
    if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(10), result)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        debug!(error = %e, "cancel request to server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: i32) -> CancelTarget {
        CancelTarget {
            addr: CancelAddr::Tcp("127.0.0.1:1".parse().expect("addr")),
            key: BackendKey {
                pid,
                secret: bytes::Bytes::from_static(&[0; 4]),
            },
        }
    }

    #[tokio::test]
    async fn peered_keys_name_the_peer_and_match_whatever_ttl_is_left() {
        let reg = Arc::new(CancelRegistry::new(0x1234));
        let h = reg.register();
        let key = h.entry.key;
        assert_eq!((key.peer_id(), key.ttl()), (0x1234, 3));
        h.entry.link(target(42)).await;
        // A PgBouncer peer forwards with the TTL decremented; pgfunnel peers spend it all.
        for ttl in [2u8, 1, 0] {
            let sent = key.with_ttl(ttl);
            assert!(
                reg.cancel(sent.pid(), &sent.secret_bytes()).await,
                "ttl {ttl}"
            );
        }
        let mut other = key.0;
        other[5] ^= 0x10;
        let other = crate::fleet::key::CancelKey(other);
        assert!(!reg.cancel(other.pid(), &other.secret_bytes()).await);
    }

    #[tokio::test]
    async fn routes_only_while_linked_and_with_the_right_secret() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        let secret = h.entry.key.secret_bytes();
        assert!(!reg.cancel(h.pid, &secret).await, "not linked yet");
        h.entry.link(target(42)).await;
        let mut wrong = secret;
        wrong[0] ^= 1;
        assert!(!reg.cancel(h.pid, &wrong).await);
        assert!(!reg.cancel(h.pid.wrapping_add(1), &secret).await);
        assert!(
            !h.entry.unlink().await,
            "no cancel was sent during this link"
        );
        h.entry.link(target(42)).await;
        assert!(reg.cancel(h.pid, &secret).await, "linked: cancel is sent");
        assert!(
            h.entry.unlink().await,
            "the server had a cancel: must not be reused"
        );
        assert!(
            !reg.cancel(h.pid, &secret).await,
            "released: late cancel does nothing"
        );
        let pid = h.pid;
        drop(h);
        assert!(reg.is_empty());
        assert!(!reg.cancel(pid, &secret).await);
    }
}
