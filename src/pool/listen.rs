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

/// The hub's task: keeps the server's LISTEN set equal to the subscribed channels and
/// forwards notifications. A new subscriber joins only after a LISTEN round trip on the
/// shared connection, so it gets exactly the notifications committed after its LISTEN.
/// Ends when the hub is dropped.
async fn run(
    hub: Weak<ListenHub>,
    target: ServerTarget,
    timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut conn: Option<ServerConnection> = None;
    let mut pending: Vec<Command> = Vec::new();
    let mut listening: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(h) = hub.upgrade() else { return };
        let mut wanted = h.channels();
        drop(h);
        for cmd in &pending {
            if let Command::Listen { channel, .. } = cmd {
                wanted.insert(channel.clone());
            }
        }
        if wanted.is_empty() && conn.is_none() {
            match commands.recv().await {
                None => return,
                Some(cmd) => pending.push(cmd),
            }
            continue;
        }
        if conn.is_none() {
            match server::connect(&target, timeout).await {
                Ok(c) => {
                    conn = Some(c);
                    listening.clear();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    warn!(error = %e, "listener connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let joining: HashSet<String> = pending
            .iter()
            .filter_map(|cmd| match cmd {
                Command::Listen { channel, .. } => Some(channel.clone()),
                Command::Changed | Command::Notify(_) => None,
            })
            .collect();
        if let Err(e) = sync_channels(c, &hub, &wanted, &joining, &mut listening).await {
            debug!(error = %e, "listener connection lost");
            conn = None;
            continue;
        }
        let notifies = join(&hub, pending.drain(..));
        if let Err(e) = run_notifies(c, &hub, notifies).await {
            debug!(error = %e, "listener connection lost");
            conn = None;
            continue;
        }
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(cmd) => pending.push(cmd),
            },
            r = c.read_message() => match r {
                Ok((b'A', body)) => deliver(&hub, body, None),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "listener connection lost; reconnecting");
                    conn = None;
                }
            },
        }
    }
}

/// Adds confirmed subscribers to the routing table and acknowledges them; returns the
/// NOTIFY requests among `cmds`, to run after.
fn join(hub: &Weak<ListenHub>, cmds: impl Iterator<Item = Command>) -> Vec<NotifyRequest> {
    let mut notifies = Vec::new();
    let Some(h) = hub.upgrade() else {
        return notifies;
    };
    for cmd in cmds {
        if let Command::Notify(req) = cmd {
            notifies.push(req);
        } else if let Command::Listen {
            channel,
            client,
            to,
            ack,
        } = cmd
        {
            let mut subs = crate::panic::lock(&h.subs);
            subs.by_channel
                .entry(channel)
                .or_default()
                .insert(client, to);
            drop(subs);
            let _ = ack.send(());
        }
    }
    notifies
}

/// Runs clients' NOTIFY statements on the shared connection, one at a time: the
/// connection's own notifications (this NOTIFY's) carry the client's pid.
async fn run_notifies(
    c: &mut ServerConnection,
    hub: &Weak<ListenHub>,
    notifies: Vec<NotifyRequest>,
) -> Result<(), server::ServerError> {
    for req in notifies {
        let mut out = BytesMut::new();
        messages::put_query(&mut out, &req.sql);
        c.stream.send(&out).await?;
        let mut reply = BytesMut::new();
        let own = (c.key.pid, req.as_pid);
        loop {
            match c.read_message().await? {
                (b'A', body) => deliver(hub, body, Some(own)),
                (b'Z', _) => break,
                (tag, body) => {
                    messages::put_message(&mut reply, tag, |b| b.extend_from_slice(&body))
                }
            }
        }
        let _ = req.reply.send(reply.freeze());
    }
    Ok(())
}

/// Issues LISTEN/UNLISTEN so the server listens on exactly `wanted`, delivering
/// notifications that arrive meanwhile.
async fn sync_channels(
    c: &mut ServerConnection,
    hub: &Weak<ListenHub>,
    wanted: &HashSet<String>,
    joining: &HashSet<String>,
    listening: &mut HashSet<String>,
) -> Result<(), server::ServerError> {
    let mut sql = String::new();
    // Channels with a new subscriber get LISTEN again even when already listened: the
    // round trip orders the subscription after every notification committed before it.
    for ch in wanted.difference(listening).chain(joining.iter()) {
        sql.push_str(&format!("LISTEN {};", quote_ident(ch)));
    }
    for ch in listening.difference(wanted) {
        sql.push_str(&format!("UNLISTEN {};", quote_ident(ch)));
    }
    if sql.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    messages::put_query(&mut out, &sql);
    c.stream.send(&out).await?;
    loop {
        match c.read_message().await? {
            (b'A', body) => deliver(hub, body, None),
            (b'Z', _) => break,
            (b'E', body) => {
                warn!(error = %messages::parse_error_fields(&body).message, "LISTEN failed")
            }
            _ => {}
        }
    }
    *listening = wanted.clone();
    Ok(())
}

/// Fans a NotificationResponse body out; with `own` = (pid, as_pid), a notification sent by
/// the shared connection itself (a client's NOTIFY run there) shows that client's pid.
fn deliver(hub: &Weak<ListenHub>, mut body: BytesMut, own: Option<(i32, i32)>) {
    let Some(h) = hub.upgrade() else { return };
    if let (Some((pid, as_pid)), Some(head)) = (own, body.get_mut(..4)) {
        if head == pid.to_be_bytes() {
            head.copy_from_slice(&as_pid.to_be_bytes());
        }
    }
    let mut rest = &body[4.min(body.len())..];
    let Some(channel) = take_cstr(&mut rest) else {
        return;
    };
    let channel = String::from_utf8_lossy(channel).into_owned();
    let mut msg = BytesMut::with_capacity(body.len() + 5);
    messages::put_message(&mut msg, b'A', |b| b.extend_from_slice(&body));
    h.fan_out(&channel, msg.freeze());
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
