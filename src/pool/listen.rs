//! LISTEN/NOTIFY in transaction mode: one shared listening server connection per pool
//! (opened on the first LISTEN) issues LISTEN/UNLISTEN for the union of its clients'
//! channels and fans NotificationResponse messages out to every subscribed client, even
//! while those clients hold no server. Reconnects and re-listens when its server goes away.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, warn};

use crate::protocol::messages::{self, take_cstr};
use crate::protocol::sql::quote_ident;
use crate::server::{self, ServerConnection, ServerTarget};

/// Notifications queued per client by default (`listen_queue_size`): a client that does
/// not read them must not grow pgfunnel's memory.
pub const CLIENT_QUEUE: usize = 1024;

/// SQLSTATE of the error a client gets when its notification queue overflowed
/// (`out_of_memory`, the class Postgres uses for its own full notification queue).
pub const QUEUE_FULL_SQLSTATE: &str = crate::error::ErrorKind::QueueFull.sqlstate();

#[derive(Debug, Default)]
struct Subscribers {
    by_channel: HashMap<String, HashMap<u64, Subscriber>>,
}

/// Where one client's notifications go.
#[derive(Debug, Clone)]
struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    overflow: Arc<Overflow>,
}

/// Set once a client's queue was full: a notification could not be queued, so the client
/// would silently miss it. The session disconnects such a client (see `Subscription`).
#[derive(Debug, Default)]
pub struct Overflow {
    flag: AtomicBool,
    notify: Notify,
}

impl Overflow {
    /// True once a notification for this client was lost.
    pub fn happened(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Waits until a notification for this client is lost.
    pub async fn wait(&self) {
        if self.happened() {
            return;
        }
        // notify_one leaves a permit when nobody waits, so a loss between the check and
        // this await still wakes us.
        self.notify.notified().await;
    }

    fn raise(&self) -> bool {
        let first = !self.flag.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_one();
        }
        first
    }
}

/// The shared listener of one pool.
#[derive(Debug)]
pub struct ListenHub {
    subs: Mutex<Subscribers>,
    commands: mpsc::UnboundedSender<Command>,
    overflows: AtomicU64,
    /// Servers lent to listening clients: their notifications show the client's pid.
    pub own_servers: OwnServers,
}

/// Work for the hub's task.
#[derive(Debug)]
enum Command {
    /// Subscribe a client once the server is listening (acknowledged on `ack`).
    Listen {
        channel: String,
        client: u64,
        to: Subscriber,
        ack: oneshot::Sender<()>,
    },
    /// The subscribed set shrank; UNLISTEN what nobody wants.
    Changed,
    /// Run a client's lone NOTIFY on the shared connection (see [`Subscription::notify`]).
    Notify(NotifyRequest),
}

/// A client's NOTIFY run on the shared connection.
#[derive(Debug)]
struct NotifyRequest {
    sql: String,
    /// The pid the client was given: its own notification carries it, for every listener.
    as_pid: i32,
    /// The server's replies (CommandComplete or ErrorResponse, notices), once its own
    /// notifications were queued for their listeners.
    reply: oneshot::Sender<Bytes>,
}

/// A client's subscription handle; dropping it unsubscribes from every channel.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<ListenHub>,
    client: u64,
    /// Notifications for this client, as complete NotificationResponse messages.
    pub rx: mpsc::Receiver<Bytes>,
    to: Subscriber,
    channels: HashSet<String>,
}

impl ListenHub {
    /// Creates the hub and its background task (which connects on the first LISTEN).
    pub fn start(target: ServerTarget, connect_timeout: Duration) -> Arc<ListenHub> {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(ListenHub {
            subs: Mutex::new(Subscribers::default()),
            commands: tx,
            overflows: AtomicU64::new(0),
            own_servers: OwnServers::default(),
        });
        tokio::spawn(run(Arc::downgrade(&hub), target, connect_timeout, rx));
        hub
    }

    /// A new, empty subscription for client `client` that queues at most `queue`
    /// notifications.
    pub fn subscribe(self: &Arc<Self>, client: u64, queue: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Subscription {
            hub: self.clone(),
            client,
            rx,
            to: Subscriber {
                tx,
                overflow: Arc::default(),
            },
            channels: HashSet::new(),
        }
    }

    /// Clients whose notification queue overflowed so far.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    fn channels(&self) -> HashSet<String> {
        let subs = crate::panic::lock(&self.subs);
        subs.by_channel.keys().cloned().collect()
    }

    fn fan_out(&self, channel: &str, msg: Bytes) {
        let subs = crate::panic::lock(&self.subs);
        if let Some(clients) = subs.by_channel.get(channel) {
            for (client, to) in clients {
                let full = matches!(
                    to.tx.try_send(msg.clone()),
                    Err(mpsc::error::TrySendError::Full(_))
                );
                if full && to.overflow.raise() {
                    self.overflows.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        client,
                        channel = %channel.escape_debug(),
                        "client notification queue full (listen_queue_size): disconnecting the client"
                    );
                }
            }
        }
    }
}

impl Subscription {
    /// Subscribes to `channel` (LISTEN) and waits until the shared connection listens on
    /// it, so a NOTIFY committed after this returns is delivered (Postgres's guarantee).
    /// False when the listener could not confirm within `wait`.
    pub async fn listen(&mut self, channel: String, wait: Duration) -> bool {
        self.channels.insert(channel.clone());
        let (ack, done) = oneshot::channel();
        let cmd = Command::Listen {
            channel,
            client: self.client,
            to: self.to.clone(),
            ack,
        };
        if self.hub.commands.send(cmd).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(wait, done).await, Ok(Ok(())))
    }

    /// Unsubscribes from `channel`, or from all with `None` (UNLISTEN *).
    pub fn unlisten(&mut self, channel: Option<&str>) {
        let gone: Vec<String> = match channel {
            Some(c) => self.channels.take(c).into_iter().collect(),
            None => self.channels.drain().collect(),
        };
        let mut subs = crate::panic::lock(&self.hub.subs);
        for c in gone {
            if let Some(clients) = subs.by_channel.get_mut(&c) {
                clients.remove(&self.client);
                if clients.is_empty() {
                    subs.by_channel.remove(&c);
                }
            }
        }
        drop(subs);
        let _ = self.hub.commands.send(Command::Changed);
    }

    /// The hub's map of servers lent to listening clients (see [`OwnServers`]).
    pub fn own_servers(&self) -> &OwnServers {
        &self.hub.own_servers
    }

    /// Raised when a notification for this client could not be queued.
    pub fn overflow(&self) -> Arc<Overflow> {
        self.to.overflow.clone()
    }

    /// True when the client listens on at least one channel.
    pub fn is_listening(&self) -> bool {
        !self.channels.is_empty()
    }

    /// True when the client listens on `channel`.
    pub fn listens_on(&self, channel: &str) -> bool {
        self.channels.contains(channel)
    }

    /// Runs a lone `NOTIFY` of this client (`sql`, one statement outside a transaction) on
    /// the shared listening connection, which listens on the channel itself: Postgres
    /// delivers a session's own notifications before its ReadyForQuery, so when this
    /// returns they are already in the subscribers' queues (this client's included), as
    /// they would be for a client that LISTENs and NOTIFYs on one Postgres connection.
    /// The notification carries `as_pid`, the pid the client was given. Returns the
    /// server's replies up to (not including) ReadyForQuery; None when the shared
    /// connection could not run it within `wait`.
    pub async fn notify(&self, sql: String, as_pid: i32, wait: Duration) -> Option<Bytes> {
        let (reply, done) = oneshot::channel();
        let req = NotifyRequest { sql, as_pid, reply };
        self.hub.commands.send(Command::Notify(req)).ok()?;
        tokio::time::timeout(wait, done).await.ok()?.ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unlisten(None);
    }
}

#[path = "listen_pids.rs"]
mod pids;
pub use pids::OwnServers;

#[path = "listen_task.rs"]
mod task;
use task::run;

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
