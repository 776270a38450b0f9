//! Connected clients by id: what SHOW CLIENTS lists and what KILL / KILL_CLIENT / shutdown
//! end. Each client task registers on accept and is removed when its entry guard drops.
//! The registry never touches sockets: ending a client marks its entry killed (a flag read
//! by [`ClientEntry::farewell`]) and aborts the client's task, attached by `app::spawn`;
//! the session's drop then writes the farewell ErrorResponse. Every idle client has an
//! entry, so it stays one small allocation besides its strings.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dashmap::DashMap;
use tokio::task::AbortHandle;

use crate::logging::close_reason::CloseReason;
use crate::protocol::messages::{self, Severity};

/// SQLSTATE admin_shutdown, sent to a killed client.
pub const ADMIN_SHUTDOWN: &str = crate::error::ErrorKind::Shutdown.sqlstate();

/// Postgres's message for a session ended by an administrator.
pub const KILLED_MESSAGE: &str = "terminating connection due to administrator command";

/// Where a client is in its life (SHOW CLIENTS `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Handshake or authentication not finished.
    Login = 0,
    /// Logged in, holding no server.
    Idle = 1,
    /// Waiting for a server.
    Waiting = 2,
    /// Linked to a server.
    Active = 3,
}

impl ClientState {
    /// PgBouncer's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            3 => ClientState::Active,
            _ => ClientState::Login,
        }
    }
}

/// Who a client is, set once the startup packet was read.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// Login user.
    pub user: String,
    /// Requested database.
    pub database: String,
    /// `application_name` from the startup packet.
    pub application_name: String,
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    /// Stable id (SHOW CLIENTS `id`, KILL_CLIENT argument).
    pub id: u64,
    /// Peer address (`unix` for the Unix socket).
    pub addr: String,
    /// Peer port (0 for the Unix socket).
    pub port: u16,
    /// pgfunnel's end of a TCP connection (empty for the Unix socket).
    pub local_addr: String,
    /// Local port (0 for the Unix socket).
    pub local_port: u16,
    /// Wall-clock accept time.
    pub connect_time: SystemTime,
    /// Set to end the client (KILL, KILL_CLIENT, shutdown); see [`ClientEntry::kill`].
    killed: AtomicBool,
    /// The client's task, aborted by a kill: ending a client costs its task nothing
    /// until it happens (no kill signal polled at every wake-up).
    task: OnceLock<AbortHandle>,
    identity: OnceLock<ClientIdentity>,
    close_reason: OnceLock<CloseReason>,
    replication: OnceLock<&'static str>,
    transport: OnceLock<&'static str>,
    state: AtomicU8,
    request_us: AtomicU64,
}

impl ClientEntry {
    /// Ends the client: its task's future is dropped, so its sockets close and a linked
    /// server is discarded, never returned to the pool.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        // Pairs with the fence in `attach`: one of the two sees the other's store.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }

    /// The ErrorResponse a killed client gets before its socket closes (FATAL 57P01
    /// `terminating connection due to administrator command`, as Postgres sends on
    /// pg_terminate_backend and shutdown); `None` while the client was not killed.
    pub fn farewell(&self) -> Option<BytesMut> {
        if !self.is_killed() {
            return None;
        }
        let mut buf = BytesMut::new();
        messages::put_error(
            &mut buf,
            Severity::Fatal,
            ADMIN_SHUTDOWN,
            KILLED_MESSAGE,
            None,
        );
        Some(buf)
    }

    /// Ties the entry to the client's spawned task (a kill that came first ends it now).
    pub fn attach(&self, task: AbortHandle) {
        let _ = self.task.set(task);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.is_killed() {
            if let Some(task) = self.task.get() {
                task.abort();
            }
        }
    }

    /// True once the client was ended by [`ClientEntry::kill`].
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Records user, database and application_name (first call wins).
    pub fn identify(&self, identity: ClientIdentity) {
        let _ = self.identity.set(identity);
    }

    /// User, database and application_name, once known.
    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.get()
    }

    /// Marks a replication client (`physical` or `logical`, SHOW CLIENTS `replication`).
    pub fn set_replication(&self, kind: &'static str) {
        let _ = self.replication.set(kind);
    }

    /// The SHOW CLIENTS `replication` column: `none`, `physical` or `logical`.
    pub fn replication(&self) -> &'static str {
        self.replication.get().copied().unwrap_or("none")
    }

    /// Records how the client reached pgfunnel when it is not plain TCP or the Unix socket
    /// (`websocket` for the edge listener); first call wins.
    pub fn set_transport(&self, transport: &'static str) {
        let _ = self.transport.set(transport);
    }

    /// How the client reached pgfunnel (SHOW CLIENTS `transport`): `tcp`, `unix` or
    /// `websocket`.
    pub fn transport(&self) -> &'static str {
        match self.transport.get() {
            Some(t) => t,
            None if self.addr == "unix" => "unix",
            None => "tcp",
        }
    }

    /// Records why pgfunnel ends this client (first call wins), for the disconnection log.
    pub fn set_close_reason(&self, reason: CloseReason) {
        let _ = self.close_reason.set(reason);
    }

    /// Why pgfunnel ended this client; `None` when the client left on its own.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().cloned()
    }

    /// Moves the client to `state`; Waiting and Active also stamp the request time.
    pub fn set_state(&self, state: ClientState) {
        if matches!(state, ClientState::Waiting) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            self.request_us.store(now, Ordering::Relaxed);
        }
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// When the client last asked for a server (the connect time before that).
    pub fn request_time(&self) -> SystemTime {
        match self.request_us.load(Ordering::Relaxed) {
            0 => self.connect_time,
            us => UNIX_EPOCH + std::time::Duration::from_micros(us),
        }
    }
}

/// All connected clients.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: DashMap<u64, Arc<ClientEntry>>,
    left: tokio::sync::Notify,
}

/// Removes its client from the registry when dropped.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<ClientRegistry>,
    /// The entry.
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.entry.id);
        self.registry.left.notify_waiters();
    }
}

impl ClientRegistry {
    /// Registers client `id` connected from `peer` (`ip:port` or `unix`) to `local`.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        peer: &str,
        local: Option<std::net::SocketAddr>,
    ) -> Registered {
        let (addr, port) = match peer.parse::<std::net::SocketAddr>() {
            Ok(a) => (a.ip().to_string(), a.port()),
            Err(_) => (peer.to_owned(), 0),
        };
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            port,
            local_addr: local.map(|a| a.ip().to_string()).unwrap_or_default(),
            local_port: local.map(|a| a.port()).unwrap_or(0),
            connect_time: SystemTime::now(),
            killed: AtomicBool::new(false),
            task: OnceLock::new(),
            identity: OnceLock::new(),
            close_reason: OnceLock::new(),
            replication: OnceLock::new(),
            transport: OnceLock::new(),
            state: AtomicU8::new(ClientState::Login as u8),
            request_us: AtomicU64::new(0),
        });
        self.clients.insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            entry,
        }
    }

    /// Every client, ordered by id.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut v: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// The client with this id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    /// Number of connected clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Ends every client `select` picks; returns how many.
    pub fn kill_where(&self, select: impl Fn(&ClientEntry) -> bool) -> usize {
        let mut n = 0;
        for e in self.clients.iter() {
            if select(e.value()) {
                e.value().kill();
                n += 1;
            }
        }
        n
    }

    /// Waits until no connected client matches `counted`. Cancel safe.
    pub async fn wait_until_none(&self, counted: impl Fn(&ClientEntry) -> bool) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if !self.clients.iter().any(|e| counted(e.value())) {
                return;
            }
            left.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_list_kill_and_drop() {
        let reg = Arc::new(ClientRegistry::default());
        let a = reg.register(1, "127.0.0.1:5000", None);
        let b = reg.register(2, "unix", None);
        assert_eq!((a.entry.addr.as_str(), a.entry.port), ("127.0.0.1", 5000));
        assert_eq!((b.entry.addr.as_str(), b.entry.port), ("unix", 0));
        assert_eq!((a.entry.transport(), b.entry.transport()), ("tcp", "unix"));
        a.entry.set_transport("websocket");
        assert_eq!(a.entry.transport(), "websocket");
        b.entry.identify(ClientIdentity {
            user: "u".into(),
            database: "d".into(),
            application_name: String::new(),
        });
        assert_eq!(a.entry.state(), ClientState::Login);
        a.entry.set_state(ClientState::Waiting);
        assert_eq!(a.entry.state(), ClientState::Waiting);
        assert!(a.entry.request_time() >= a.entry.connect_time);
        let killed = reg.kill_where(|e| e.identity().is_some_and(|i| i.database == "d"));
        assert_eq!(killed, 1);
        assert!(b.entry.is_killed() && !a.entry.is_killed());
        assert!(a.entry.farewell().is_none());
        assert_eq!(a.entry.close_reason(), None);
        a.entry.set_close_reason(CloseReason::LoginFailed);
        a.entry.set_close_reason(CloseReason::Evicted);
        assert_eq!(a.entry.close_reason(), Some(CloseReason::LoginFailed));
        let bye = b.entry.farewell().expect("a killed client is told why");
        assert_eq!(bye[0], b'E');
        let text = String::from_utf8_lossy(&bye);
        assert!(
            text.contains(ADMIN_SHUTDOWN) && text.contains(KILLED_MESSAGE),
            "{text}"
        );
        assert_eq!(reg.list().iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        drop(b);
        assert_eq!(reg.len(), 1);
        assert!(reg.get(2).is_none());
    }

    #[tokio::test]
    async fn waits_for_clients_to_leave() {
        let reg = Arc::new(ClientRegistry::default());
        let a = reg.register(1, "unix", None);
        let r2 = reg.clone();
        let waiter = tokio::spawn(async move { r2.wait_until_none(|_| true).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wakes when the last client leaves")
            .expect("task");
    }
}
