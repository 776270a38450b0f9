//! Session mode as transparent as Postgres: the client's BackendKeyData carries the pid
//! of the server it owns for its whole session, so `pg_backend_pid()`, the pid in
//! NotificationResponse and `pg_terminate_backend()` of its own backend agree with it.
//!
//! The secret stays pgfunnel's (the one `cancel` issued for the client): the server's own
//! secret never reaches a client, whose key must not cancel that server once it serves
//! someone else. A CancelRequest carrying such a key is found here by (server pid,
//! secret) and routed through the client's ordinary `cancel` entry, so a cancel during
//! the session behaves exactly as one with a pgfunnel-issued pid. Pids of different
//! Postgres servers may coincide; the secret tells their clients apart.

use std::sync::Arc;

use dashmap::DashMap;
use subtle::ConstantTimeEq;

use crate::cancel::{CancelHandle, CancelRegistry};

/// Keys handed out with a server's real pid: server pid -> (secret, registry pid) of each
/// client using one.
#[derive(Debug, Default)]
pub struct SessionKeys {
    by_pid: DashMap<i32, Vec<([u8; 4], i32)>>,
}

/// A key handed out with a real pid; dropping it (client gone) forgets it.
#[derive(Debug)]
pub struct SessionKey {
    keys: Arc<SessionKeys>,
    pid: i32,
    registry_pid: i32,
}

impl SessionKey {
    /// The pid the client was given (its server's).
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl SessionKeys {
    /// Hands `cancel`'s client a key with `server_pid` in place of the pgfunnel pid.
    pub fn register(self: &Arc<Self>, server_pid: i32, cancel: &CancelHandle) -> SessionKey {
        let secret = cancel.secret_i32().to_be_bytes();
        self.by_pid
            .entry(server_pid)
            .or_default()
            .push((secret, cancel.pid));
        SessionKey {
            keys: self.clone(),
            pid: server_pid,
            registry_pid: cancel.pid,
        }
    }

    /// Serves a CancelRequest whose pid is a server's: true when it named a session-mode
    /// client's key and the cancel went to its server.
    pub async fn cancel(&self, registry: &CancelRegistry, pid: i32, secret: &[u8]) -> bool {
        let Some(owner) = self.by_pid.get(&pid).and_then(|clients| {
            clients
                .iter()
                .find(|(s, _)| bool::from(s.as_slice().ct_eq(secret)))
                .map(|(_, registry_pid)| *registry_pid)
        }) else {
            return false;
        };
        registry.cancel(owner, secret).await
    }

    /// Keys currently handed out.
    pub fn len(&self) -> usize {
        self.by_pid.iter().map(|e| e.value().len()).sum()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.keys.by_pid.entry(self.pid) {
            e.get_mut().retain(|(_, r)| *r != self.registry_pid);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelTarget;
    use crate::server::{BackendKey, CancelAddr};

    #[tokio::test]
    async fn a_real_pid_key_reaches_the_clients_own_entry_only_with_its_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let keys = Arc::new(SessionKeys::default());
        let a = registry.register();
        let b = registry.register();
        // Two servers of different Postgres hosts with the same pid.
        let ka = keys.register(4242, &a);
        let kb = keys.register(4242, &b);
        assert_eq!(ka.pid(), 4242);
        let target = CancelTarget {
            addr: CancelAddr::Tcp("127.0.0.1:1".parse().expect("addr")),
            key: BackendKey {
                pid: 4242,
                secret: bytes::Bytes::from_static(&[0; 4]),
            },
        };
        b.entry.link(target).await;
        let b_secret = b.secret_i32().to_be_bytes();
        let a_secret = a.secret_i32().to_be_bytes();
        assert!(!keys.cancel(&registry, 4242, &a_secret).await, "a is idle");
        assert!(keys.cancel(&registry, 4242, &b_secret).await, "b is linked");
        assert!(b.entry.unlink().await, "the cancel went through b's entry");
        assert!(!keys.cancel(&registry, 4243, &b_secret).await, "other pid");
        drop(kb);
        assert!(!keys.cancel(&registry, 4242, &b_secret).await, "b is gone");
        assert_eq!(keys.len(), 1);
        drop(ka);
        assert!(keys.is_empty());
    }
}
