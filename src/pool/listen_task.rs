//! The hub's task: the shared listening server connection, its LISTEN/UNLISTEN set and
//! the fan-out of notifications to subscribers.

use super::*;

/// First wait before reconnecting a failed listening connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The hub's task: keeps the server's LISTEN set equal to the subscribed channels and
/// forwards notifications. A new subscriber joins only after a LISTEN round trip on the
/// shared connection, so it gets exactly the notifications committed after its LISTEN.
/// Ends when the hub is dropped.
pub(super) async fn run(
    hub: Weak<ListenHub>,
    target: ServerTarget,
    timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut conn: Option<ServerConnection> = None;
    let mut pending: Vec<Command> = Vec::new();
    let mut listening: HashSet<String> = HashSet::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(wanted) = wanted_channels(&hub, &pending) else {
            return;
        };
        if wanted.is_empty() && conn.is_none() {
            match commands.recv().await {
                None => return,
                Some(cmd) => pending.push(cmd),
            }
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&target, timeout, &mut backoff).await {
                Some(c) => {
                    listening.clear();
                    conn.insert(c)
                }
                None => continue,
            },
        };
        let round = Round {
            hub: &hub,
            wanted: &wanted,
            pending: &mut pending,
            listening: &mut listening,
        };
        match round.serve(c, &mut commands).await {
            RoundEnd::Served => {}
            RoundEnd::Lost => conn = None,
            RoundEnd::HubGone => return,
        }
    }
}

/// Opens the listening connection. On failure, logs it, waits `backoff` and doubles it
/// (up to `MAX_BACKOFF`); on success, resets it.
async fn connect(
    target: &ServerTarget,
    timeout: Duration,
    backoff: &mut Duration,
) -> Option<ServerConnection> {
    match server::connect(target, timeout).await {
        Ok(c) => {
            *backoff = FIRST_BACKOFF;
            Some(c)
        }
        Err(e) => {
            warn!(error = %e, "listener connection failed");
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            None
        }
    }
}

/// What one round on the listening connection works with.
struct Round<'a> {
    hub: &'a Weak<ListenHub>,
    wanted: &'a HashSet<String>,
    pending: &'a mut Vec<Command>,
    listening: &'a mut HashSet<String>,
}

/// How a round ended.
enum RoundEnd {
    /// A command arrived or a message was read: go round again.
    Served,
    /// The server connection failed: reconnect.
    Lost,
    /// The hub was dropped (its command sender closed): the task ends.
    HubGone,
}

impl Round<'_> {
    /// Brings the server's LISTEN set in line, lets the waiting subscribers join, runs the
    /// pending NOTIFYs, then waits for the next command or server message.
    async fn serve(
        self,
        c: &mut ServerConnection,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> RoundEnd {
        let joining = joining_channels(self.pending);
        if let Err(e) = sync_channels(c, self.hub, self.wanted, &joining, self.listening).await {
            debug!(error = %e, "listener connection lost");
            return RoundEnd::Lost;
        }
        let notifies = join(self.hub, self.pending.drain(..));
        if let Err(e) = run_notifies(c, self.hub, notifies).await {
            debug!(error = %e, "listener connection lost");
            return RoundEnd::Lost;
        }
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => RoundEnd::HubGone,
                Some(cmd) => {
                    self.pending.push(cmd);
                    RoundEnd::Served
                }
            },
            r = c.read_message() => match r {
                Ok((b'A', body)) => {
                    deliver(self.hub, body, None);
                    RoundEnd::Served
                }
                Ok(_) => RoundEnd::Served,
                Err(e) => {
                    debug!(error = %e, "listener connection lost; reconnecting");
                    RoundEnd::Lost
                }
            },
        }
    }
}

/// The channels the server must listen on: the subscribed ones and those of the pending
/// LISTENs. `None` once the hub is dropped.
fn wanted_channels(hub: &Weak<ListenHub>, pending: &[Command]) -> Option<HashSet<String>> {
    let h = hub.upgrade()?;
    let mut wanted = h.channels();
    drop(h);
    for cmd in pending {
        if let Command::Listen { channel, .. } = cmd {
            wanted.insert(channel.clone());
        }
    }
    Some(wanted)
}

/// The channels of the pending LISTENs (subscribers waiting to join).
fn joining_channels(pending: &[Command]) -> HashSet<String> {
    pending
        .iter()
        .filter_map(|cmd| match cmd {
            Command::Listen { channel, .. } => Some(channel.clone()),
            Command::Changed | Command::Notify(_) => None,
        })
        .collect()
}

/// Adds confirmed subscribers to the routing table and acknowledges them; returns the
/// NOTIFY requests among `cmds`, to run after.
pub(super) fn join(
    hub: &Weak<ListenHub>,
    cmds: impl Iterator<Item = Command>,
) -> Vec<NotifyRequest> {
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
pub(super) async fn run_notifies(
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
pub(super) async fn sync_channels(
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
pub(super) fn deliver(hub: &Weak<ListenHub>, mut body: BytesMut, own: Option<(i32, i32)>) {
    let Some(h) = hub.upgrade() else { return };
    if let (Some((pid, as_pid)), Some(head)) = (own, body.get_mut(..4)) {
        if head == pid.to_be_bytes() {
            head.copy_from_slice(&as_pid.to_be_bytes());
        }
    }
    h.own_servers.rewrite(&mut body);
    let mut rest = &body[4.min(body.len())..];
    let Some(channel) = take_cstr(&mut rest) else {
        return;
    };
    let channel = String::from_utf8_lossy(channel).into_owned();
    let mut msg = BytesMut::with_capacity(body.len() + 5);
    messages::put_message(&mut msg, b'A', |b| b.extend_from_slice(&body));
    h.fan_out(&channel, msg.freeze());
}
