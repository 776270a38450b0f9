//! A client between links: waiting for its next request while delivering its
//! notifications (client_idle_timeout, the notification queue bound), and answering a lone
//! LISTEN/UNLISTEN through the pool's shared listener without a server.

use std::time::Duration;

use bytes::BytesMut;
use tracing::warn;

use super::registry::ClientState;
use super::relay::{IdleEnd, Relay};
use super::session::Session;
use super::statement::{recognise_listen, Recognised};
use crate::config::PoolMode;
use crate::error::{ClientError, ErrorKind};
use crate::logging::close_reason::{note_close, CloseReason};
use crate::pool::listen::Subscription;
use crate::pool::Pool;
use crate::protocol::messages;

/// How waiting for an idle client's next request ended.
pub(super) enum Idle {
    /// The relay's outcome (a request, or the client left or misbehaved).
    End(IdleEnd),
    /// client_idle_timeout passed.
    Timeout,
    /// A notification for this client could not be queued; `mid_message` when one was
    /// being written to the client at that moment.
    QueueFull { mid_message: bool },
}

/// What the wait between two links produced.
pub(super) enum Between {
    /// A request that needs a server.
    Request,
    /// The request was answered without a server (LISTEN/UNLISTEN): wait again.
    Answered,
    /// The session ends.
    End,
}

impl Session {
    /// Waits for the client's next request, delivering notifications meanwhile; ends early
    /// when client_idle_timeout passed or the client's notification queue overflowed.
    ///
    /// This wait is what an idle client's task holds: without client_idle_timeout and
    /// notifications it is the bare read readiness; the watched wait (a timer, the
    /// notification queue) runs in a box allocated for the idle spell.
    pub(super) async fn wait_idle(
        &mut self,
        relay: &mut Relay,
        client_idle: Duration,
        listener: &mut Option<Subscription>,
    ) -> Idle {
        if client_idle.is_zero() && listener.is_none() {
            return Idle::End(relay.wait_for_request(&mut self.stream).await);
        }
        Box::pin(self.wait_watched(relay, client_idle, listener)).await
    }

    /// [`Session::wait_idle`] with client_idle_timeout or notifications to watch.
    async fn wait_watched(
        &mut self,
        relay: &mut Relay,
        client_idle: Duration,
        listener: &mut Option<Subscription>,
    ) -> Idle {
        let deadline = (!client_idle.is_zero()).then(|| tokio::time::Instant::now() + client_idle);
        let overflow = listener.as_ref().map(Subscription::overflow);
        let lost = || async {
            match &overflow {
                Some(o) => o.wait().await,
                None => std::future::pending().await,
            }
        };
        loop {
            let idle_timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let note = async {
                match listener.as_mut() {
                    Some(l) => l.rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A lost notification ends the client before anything else.
                biased;
                _ = lost() => return Idle::QueueFull { mid_message: false },
                end = relay.wait_for_request(&mut self.stream) => return Idle::End(end),
                _ = idle_timer => return Idle::Timeout,
                Some(msg) = note => {
                    // Boxed: a write in progress is not part of the parked state.
                    if let Some(end) = Box::pin(self.deliver(&msg, lost())).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes one notification to the client; a client that stops reading blocks this
    /// write, so a lost notification (`lost`) ends it. `Some` when the wait ends.
    async fn deliver(
        &mut self,
        msg: &[u8],
        lost: impl std::future::Future<Output = ()>,
    ) -> Option<Idle> {
        tokio::select! {
            biased;
            r = self.stream.send(msg) => r.is_err().then_some(Idle::End(IdleEnd::ClientGone)),
            _ = lost => Some(Idle::QueueFull { mid_message: true }),
        }
    }

    /// Disconnects a client that lost a notification (its queue of `listen_queue_size` was
    /// full): 53200 unless a notification was half written, then just the close.
    pub(super) async fn notification_queue_full(&mut self, mid_message: bool) {
        warn!(parent: &self.span, "notification queue full: closing the client");
        if mid_message {
            return;
        }
        let msg = "notification queue full: the client did not read its notifications \
                   (listen_queue_size), some were lost";
        self.ctx.client_error(ErrorKind::QueueFull);
        let buf = ClientError::fatal(ErrorKind::QueueFull, msg).to_message();
        // The client may not be reading at all: do not wait for it long.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.send(&buf)).await;
    }

    /// Answers a lone `LISTEN`/`UNLISTEN` outside a transaction through the pool's shared
    /// listener. Returns false when the request is something else.
    pub(super) async fn serve_listen(
        &mut self,
        pool: &Pool,
        relay: &mut Relay,
        listener: &mut Option<Subscription>,
    ) -> bool {
        let (tag, action) = match relay.lone_query().and_then(recognise_listen) {
            Some(Recognised::Listen(ch)) => ("LISTEN", Ok(ch)),
            Some(Recognised::Unlisten(ch)) => ("UNLISTEN", Err(ch)),
            _ => return false,
        };
        relay.consume_lone_query();
        let queue = self.ctx.config().settings.listen_queue_size as usize;
        let sub = listener.get_or_insert_with(|| pool.listen_hub().subscribe(self.id, queue));
        let confirmed = match action {
            Ok(ch) => sub.listen(ch, pool.settings.connect_timeout).await,
            Err(ch) => {
                sub.unlisten(ch.as_deref());
                true
            }
        };
        let mut buf = BytesMut::new();
        if confirmed {
            messages::put_message(&mut buf, b'C', |b| messages::put_cstr(b, tag));
        } else {
            let msg = "could not LISTEN: the shared listener connection is not available";
            self.ctx.client_error(ErrorKind::ServerUnavailable);
            ClientError::error(ErrorKind::ServerUnavailable, msg).put(&mut buf);
        }
        messages::put_ready(&mut buf, b'I');
        let _ = self.stream.send(&buf).await;
        true
    }

    /// Waits for the client's next request with no server linked; answers what needs no
    /// server (a lone LISTEN/UNLISTEN outside a transaction) and ends the session when the
    /// client left, misbehaved, idled too long or lost notifications.
    pub(super) async fn between_links(
        &mut self,
        pool: &Pool,
        mode: PoolMode,
        relay: &mut Relay,
        client_idle: std::time::Duration,
        listener: &mut Option<Subscription>,
        pid: i32,
    ) -> Between {
        self.mark(ClientState::Idle);
        let was_pinned = relay.tracker.pin.is_some();
        let error = match self.wait_idle(relay, client_idle, listener).await {
            Idle::End(IdleEnd::Request) if mode == PoolMode::Session || was_pinned => {
                return Between::Request;
            }
            Idle::End(IdleEnd::Request) => {
                return self.lone_request(pool, relay, listener, pid).await;
            }
            Idle::End(IdleEnd::ClientGone | IdleEnd::ClientIo(_)) => {
                self.note_client_left(relay);
                return Between::End;
            }
            Idle::End(IdleEnd::ClientProtocol(e)) => {
                warn!(parent: &self.span, error = %e, "client protocol violation");
                relay.stats.refused();
                ClientError::fatal(ErrorKind::Protocol, e.to_string())
            }
            Idle::QueueFull { mid_message } => {
                relay.stats.notification_overflow();
                Box::pin(self.notification_queue_full(mid_message)).await;
                return Between::End;
            }
            Idle::Timeout => {
                warn!(parent: &self.span, "client_idle_timeout");
                note_close(&self.entry, CloseReason::ClientIdleTimeout);
                let msg = "client_idle_timeout: client was idle too long";
                ClientError::fatal(ErrorKind::Timeout, msg)
            }
        };
        // Boxed, as the rest of a session's end: not part of the parked state.
        Box::pin(self.tell(&error)).await;
        Between::End
    }

    /// A request while no server is linked: a lone LISTEN/UNLISTEN outside a transaction
    /// is served by the shared listener, a listening client's lone NOTIFY first delivers
    /// its own notification; anything else needs a server.
    async fn lone_request(
        &mut self,
        pool: &Pool,
        relay: &mut Relay,
        listener: &mut Option<Subscription>,
        pid: i32,
    ) -> Between {
        // A LISTEN seen while reading marks a pin; a lone one outside a
        // transaction is served by the shared listener instead. Boxed (their
        // state is large) and only entered for a lone LISTEN/UNLISTEN, or a
        // listening client's lone query: no allocation for other requests.
        let lone = relay.lone_query();
        if lone.and_then(recognise_listen).is_some()
            && Box::pin(self.serve_listen(pool, relay, listener)).await
        {
            relay.tracker.pin = None;
            return Between::Answered;
        }
        // A lone NOTIFY of a listening client: its own notification first.
        if listener.is_some()
            && relay.lone_query().is_some()
            && Box::pin(self.serve_notify(pool, relay, listener, pid)).await
        {
            return Between::Answered;
        }
        Between::Request
    }
}
