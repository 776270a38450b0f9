//! One client's link cycle after login: wait for a request (idle, `super::idle`), check out
//! a server, bring its parameters in line, relay until the link ends, then carry out the
//! release decision of `super::release` (check the server in, close it, keep it, or end
//! the session).

use std::sync::Arc;

use tracing::{debug, warn};

use super::idle::Between;
use super::link_stats::LinkStats;
use super::params::{ClientParams, Reported};
use super::relay::{LinkState, Relay, RelayEnd, RelayMode};
use super::release::{disposition, Disposition, LinkEnd};
use super::rewrite::Rewriter;
use super::session::Session;
use super::timeouts::{Expired, LinkTimeouts};
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::PoolMode;
use crate::logging::close_reason::{note_close, CloseReason};
use crate::pool::listen::Subscription;
use crate::pool::{Pool, PooledServer};
use crate::protocol::messages;
use crate::server::ServerError;
use link_box::LinkBox;

/// How one relay run over a link ended.
struct LinkRun {
    end: RelayEnd,
    /// The timer that ended the link, if one did.
    timed_out: Option<Expired>,
    /// Whether a cancel request reached the server during the link.
    cancelled: bool,
}

/// What one link borrows from the parked session (see `Session::one_link`).
struct Active<'a> {
    cycle: &'a Cycle<'a>,
    relay: &'a mut Relay,
    listener: &'a Option<Subscription>,
    cancel: &'a CancelHandle,
    params: &'a mut ClientParams,
}

/// The per-session settings of the link cycle.
struct Cycle<'a> {
    pool: &'a Arc<Pool>,
    mode: PoolMode,
    timers: LinkTimeouts,
    /// `server_fast_close` in session mode.
    fast_close: bool,
}

impl Session {
    /// The link cycle, until the session ends: wait for a request (parked), then link a
    /// server, relay and release (in flight). `linked` is a server already held (session
    /// mode, or the login's checkout).
    ///
    /// Memory: an idle client's task holds this future while it is parked, so the parked
    /// state is kept small: the relay state, the listener and the wait. Everything a link
    /// needs (checkout, parameter sync, relay run, release) runs in a box taken when a
    /// request arrives and given up when the link ends ([`LinkBox`]: blocks are reused per
    /// thread, so this costs no malloc per transaction).
    pub(super) async fn serve(
        &mut self,
        pool: &Arc<Pool>,
        mode: PoolMode,
        params: &mut ClientParams,
        cancel: &CancelHandle,
        mut linked: Option<PooledServer>,
    ) {
        let timers = self.ctx.link_timeouts(&self.user);
        let fast_close = mode == PoolMode::Session && self.ctx.config().settings.server_fast_close;
        let cycle = Cycle {
            pool,
            mode,
            timers,
            fast_close,
        };
        let mut relay = self.new_relay(pool, mode, &cycle.timers);
        // server_fast_close watches every end of transaction (and idle spells).
        relay.timed |= fast_close;
        let mut listener: Option<Subscription> = None;
        loop {
            if linked.is_none() {
                let idle = cycle.timers.client_idle;
                let wait =
                    self.between_links(pool, mode, &mut relay, idle, &mut listener, cancel.pid);
                match wait.await {
                    Between::Request => {}
                    Between::Answered => continue,
                    Between::End => return,
                }
            }
            let link = Active {
                cycle: &cycle,
                relay: &mut relay,
                listener: &listener,
                cancel,
                params,
            };
            match LinkBox::new(self.one_link(link, linked.take())).await {
                Some(kept) => linked = kept,
                None => return,
            }
        }
    }

    /// One link for a request: a server (`held`, or checked out now), its parameters
    /// brought in line, the relay run, then the release. `Some(kept)`: the cycle goes on,
    /// holding `kept` when the server stays linked; `None`: the session ended.
    async fn one_link(
        &mut self,
        link: Active<'_>,
        held: Option<PooledServer>,
    ) -> Option<Option<PooledServer>> {
        let Active {
            cycle,
            relay,
            listener,
            cancel,
            params,
        } = link;
        let mut server = match held {
            Some(s) => s,
            None => self.checkout(cycle.pool).await?,
        };
        // This future's block is taken per link: what most links skip (a parameter sync,
        // the shared listener's round trip, the session's end) runs in boxes of its own, so
        // the common path stays small.
        if server.conn.synced_fp != Some(params.fingerprint()) {
            if let Err(e) = Box::pin(sync_parameters(params, &mut server, relay)).await {
                Box::pin(self.sync_failed(cycle.pool, server, e)).await;
                return None;
            }
        }
        let lent = Self::claim_notify_pid(listener, relay, &server, cancel.pid);
        let run = self.link(relay, &mut server, cancel, cycle, params).await;
        if lent.is_some() {
            Box::pin(Self::release_notify_pid(
                cycle.pool, listener, lent, cancel.pid,
            ))
            .await;
        }
        self.release(cycle, relay, server, run).await
    }

    /// Carries out the release decision for a link that ended. `Some(kept)`: the cycle
    /// goes on, holding `kept` when the server stays linked; `None`: the session ended.
    async fn release(
        &mut self,
        cycle: &Cycle<'_>,
        relay: &mut Relay,
        server: PooledServer,
        run: LinkRun,
    ) -> Option<Option<PooledServer>> {
        let pool = cycle.pool;
        let LinkRun {
            end,
            timed_out,
            cancelled,
        } = run;
        let link = LinkEnd {
            end: &end,
            cancelled,
            timed_out,
            tracker: &relay.tracker,
            server_clean: relay.server_clean(),
            obsolete: cycle.fast_close
                && relay.s2c.is_empty()
                && pool.is_close_needed(server.conn.created),
        };
        let mut kept = None;
        match disposition(&link) {
            Disposition::Close {
                error,
                server: fate,
            } => {
                if matches!(end, RelayEnd::ClientGone | RelayEnd::ClientIo(_)) {
                    self.note_client_left(relay);
                }
                self.log_link_end(&end, timed_out, relay);
                Box::pin(self.close(pool, cycle.mode, server, &link, error, fate)).await;
                return None;
            }
            Disposition::Checkin => pool.checkin(server),
            Disposition::Discard(reason) => {
                debug!(parent: &self.span, server = server.conn.id, reason, "server not reused");
                pool.discard(server);
            }
            Disposition::Keep => kept = Some(server),
        }
        if matches!(end, RelayEnd::Released) && !cancelled {
            // Noted for this link only: the server it concerned is closed.
            relay.tracker.uninspected_parse = false;
        }
        Some(kept)
    }

    /// Records how the client left: Terminate is PgBouncer's `client close request` (the
    /// default), a socket that closed or failed without it `client unexpected eof`.
    pub(super) fn note_client_left(&self, relay: &Relay) {
        if !relay.client_sent_terminate() {
            note_close(&self.entry, CloseReason::ClientUnexpectedEof);
        }
    }

    /// The server refused the client's parameters (it stays usable) or broke: the session
    /// ends with the server's error.
    async fn sync_failed(&mut self, pool: &Pool, server: PooledServer, e: ServerError) {
        match e {
            ServerError::Rejected(_) => pool.checkin(server),
            _ => pool.discard(server),
        }
        self.tell_server_error(&e).await
    }

    /// A relay for this client's mode, limits and prepared-statement rewriting.
    fn new_relay(&self, pool: &Pool, mode: PoolMode, timers: &LinkTimeouts) -> Relay {
        let settings = &self.ctx.config().settings;
        let mut relay = Relay::new(settings.max_packet_size);
        relay.mode = match mode {
            PoolMode::Session => RelayMode::Session,
            PoolMode::Transaction => RelayMode::Transaction,
            PoolMode::Statement => RelayMode::Statement,
        };
        relay.timed = timers.any_linked();
        relay.max_pipeline = settings.max_client_pipeline as usize;
        let max_prepared = settings.max_prepared_statements as usize;
        if mode != PoolMode::Session && max_prepared > 0 {
            let registry_limit = settings.max_pool_prepared_statements;
            pool.statements.set_limit(registry_limit as usize);
            let mut rw = Rewriter::new(pool.statements.clone(), max_prepared);
            rw.set_max_gathered(settings.max_prepared_message_size as usize);
            relay.rewriter = Some(rw);
        }
        relay.stats = LinkStats::for_pool(&pool.stats, self.span.clone());
        relay
    }

    /// Links `server` to this client for one relay run: registers it for cancel requests,
    /// relays, then records what the link changed in the client's parameters.
    async fn link(
        &mut self,
        relay: &mut Relay,
        server: &mut PooledServer,
        cancel: &CancelHandle,
        cycle: &Cycle<'_>,
        params: &mut ClientParams,
    ) -> LinkRun {
        cancel.entry.link_server(&server.conn).await;
        let (end, timed_out) = self
            .relay_linked(
                relay,
                server,
                &cycle.timers,
                &mut params.expected,
                cycle.fast_close,
            )
            .await;
        let cancelled = cancel.entry.unlink().await;
        if std::mem::take(&mut relay.params_changed) {
            params.invalidate();
            server.conn.synced_fp = None;
        }
        for change in relay.tracker.changes.drain(..) {
            params.apply_change(change, &mut server.conn);
        }
        LinkRun {
            end,
            timed_out,
            cancelled,
        }
    }

    /// Relays one link, enforcing query_timeout (cancel), idle_transaction_timeout and
    /// transaction_timeout. Returns the relay's end and the timer that ended the link, if
    /// one did. With `fast_close`, an idle server ends the link with `Tick` every
    /// [`FAST_CLOSE_CHECK`] so the caller can see whether it was marked for closing.
    async fn relay_linked(
        &mut self,
        relay: &mut Relay,
        server: &mut PooledServer,
        timers: &LinkTimeouts,
        expected: &mut Reported,
        fast_close: bool,
    ) -> (RelayEnd, Option<Expired>) {
        let release = relay.tracker.pin.is_none();
        let conn = &mut server.conn;
        let mut link = LinkState {
            params: &mut conn.params,
            seen: expected,
            prepared: &mut conn.prepared,
        };
        if !relay.timed {
            let end = relay
                .run(&mut self.stream, &mut conn.stream, release, &mut link)
                .await;
            return (end, None);
        }
        let cancel_to = || CancelTarget {
            addr: conn.cancel_addr.clone(),
            key: conn.key.clone(),
        };
        let (server, timed) = (&mut conn.stream, (timers, fast_close));
        Box::pin(self.relay_timed(relay, &mut link, server, timed, &cancel_to)).await
    }

    /// [`Session::relay_linked`] with timers: a link of a client with query_timeout,
    /// idle_transaction_timeout, transaction_timeout or server_fast_close, boxed (a timer
    /// per link costs more than the box).
    async fn relay_timed(
        &mut self,
        relay: &mut Relay,
        link: &mut LinkState<'_>,
        server: &mut crate::net::Stream,
        (timers, fast_close): (&LinkTimeouts, bool),
        cancel_to: &(dyn Fn() -> CancelTarget + Sync),
    ) -> (RelayEnd, Option<Expired>) {
        let release = relay.tracker.pin.is_none();
        loop {
            let mut deadline = timers.next_deadline(&relay.clock, &relay.tracker);
            let poll_idle = fast_close && relay.tracker.is_idle();
            if poll_idle {
                let check = std::time::Instant::now() + FAST_CLOSE_CHECK;
                deadline = Some(deadline.map_or(check, |d| d.min(check)));
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = relay.run(&mut self.stream, server, release, link) => return (end, None),
                _ = sleep => {}
            }
            match timers.expired(&relay.clock, &relay.tracker) {
                Some(Expired::Query) => {
                    warn!(parent: &self.span, "query_timeout: cancelling the running query");
                    Box::pin(crate::cancel::send_cancel(cancel_to())).await;
                    relay.clock.busy_since = Some(std::time::Instant::now());
                }
                Some(e @ (Expired::IdleTransaction | Expired::Transaction)) => {
                    return (RelayEnd::Tick, Some(e))
                }
                None if poll_idle && relay.tracker.is_idle() => return (RelayEnd::Tick, None),
                None => {}
            }
        }
    }
}

/// How often an idle session-mode server is checked for a closing mark under
/// `server_fast_close` (PgBouncer's janitor runs about as often).
const FAST_CLOSE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Brings the server's session parameters in line with the client's before any client
/// byte reaches it. Values the server normalised (`iso` -> `ISO, MDY`) are reported to
/// the client through ParameterStatus queued ahead of the server's replies.
async fn sync_parameters(
    params: &mut ClientParams,
    server: &mut PooledServer,
    relay: &mut Relay,
) -> Result<(), ServerError> {
    let fp = params.fingerprint();
    if server.conn.synced_fp == Some(fp) {
        return Ok(());
    }
    let Some(sql) = params.sync_sql(&server.conn) else {
        server.conn.synced_fp = Some(fp);
        return Ok(());
    };
    let wanted: Vec<String> = params.expected.keys().cloned().collect();
    server.conn.run_internal(&sql).await?;
    params.mark_applied(&mut server.conn);
    for k in wanted {
        if let (Some(now), Some(exp)) = (server.conn.params.get(&k), params.expected.get(&k)) {
            if now != exp {
                messages::put_parameter_status(&mut relay.s2c, &k, now);
                params.expected.insert(k, now.clone());
            }
        }
    }
    params.invalidate();
    server.conn.synced_fp = Some(params.fingerprint());
    Ok(())
}

#[path = "link_box.rs"]
mod link_box;
