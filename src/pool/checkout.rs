//! Checkout and checkin: a FIFO wait for a slot (pool_size, then the reserve pool after
//! reserve_pool_timeout, and one slot of every shared limit) within query_wait_timeout,
//! a returned connection handed straight to the oldest waiter (`queue`);
//! idle connections reused LIFO after server_check_query when they sat idle long enough,
//! new ones opened otherwise; clean connections checked back in, others discarded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use tokio_util::sync::CancellationToken;

use super::queue::{Event, Plan, Slot};
use super::{limits, retry, ActiveGuard, Pool, PoolError, PooledServer, Stop, Tell};

/// How often a client waiting through a shutdown that still lends servers
/// (WAIT_FOR_CLIENTS) checks whether it was escalated.
const STOP_RECHECK: Duration = Duration::from_millis(100);

/// How often the shutdown relay of a pool checks whether the pool is gone.
const RELAY_ALIVE_CHECK: Duration = Duration::from_secs(60);

/// Resolves once servers are no longer lent: at the shutdown signal, or later in
/// [`STOP_RECHECK`] steps while the shutdown still lends them.
async fn stopped(stop: &Stop<'_>) {
    loop {
        stop.signal.cancelled().await;
        if (stop.lends_none)() {
            return;
        }
        tokio::time::sleep(STOP_RECHECK).await;
    }
}

/// A pool slot, the idle connection handed over with it (if any) and when the wait for
/// it started (`None`: it did not wait).
pub(super) type Taken = (
    Slot<Box<ServerConnection>>,
    Option<Box<ServerConnection>>,
    Option<Instant>,
);
use crate::server::{ServerConnection, ServerError};

impl Pool {
    /// Waits (FIFO) for a slot within query_wait_timeout, then returns an idle
    /// connection that is still open or opens a new one. Cancel safe: dropping the
    /// future gives the slot back.
    pub async fn checkout(&self) -> Result<PooledServer, PoolError> {
        self.checkout_noticed(None, None).await
    }

    /// As [`Pool::checkout`]; `notice` is `(after, tell)`: when the checkout has queued
    /// for `after`, `tell` runs once (query_wait_notify). A queued checkout arms no timer:
    /// the pool's deadline task tells it when the notice, the reserve pool or
    /// query_wait_timeout is due. One clock read when it does not queue. With `stop`, a
    /// wait (queued, paused or connecting) ends with [`PoolError::Closed`] once pgfunnel
    /// lends no more servers.
    pub async fn checkout_noticed(
        &self,
        mut notice: Option<(Duration, Tell<'_>)>,
        stop: Option<&Stop<'_>>,
    ) -> Result<PooledServer, PoolError> {
        let (slot, handed, queued) = self.pool_slot(&mut notice, stop).await?;
        let now = Instant::now();
        if let Some(conn) = self.reuse_idle(handed, now).await {
            let waited = queued.map_or(Duration::ZERO, |q| now.saturating_duration_since(q));
            return Ok(self.lend(conn, slot, waited));
        }
        // Boxed: opening is rare and its state large; an idle client's future (sized by
        // its largest state) stays small without it.
        let opening = Box::pin(self.open_for(slot, queued.unwrap_or(now).into(), notice));
        match stop {
            Some(stop) => tokio::select! {
                biased;
                r = opening => r,
                () = Box::pin(stopped(stop)) => Err(PoolError::Closed),
            },
            None => opening.await,
        }
    }

    /// An idle connection fit for reuse: `first` (handed over with the slot) or one from
    /// the idle list; stale ones met on the way are closed.
    async fn reuse_idle(
        &self,
        mut first: Option<Box<ServerConnection>>,
        now: Instant,
    ) -> Option<Box<ServerConnection>> {
        while let Some(mut conn) = first.take().or_else(|| self.pop_idle()) {
            if conn.is_usable()
                && !self.expired_at(&conn, now)
                && self.passes_check(&mut conn, now).await
            {
                return Some(conn);
            }
            debug!(server = conn.id, "dropping stale idle server");
            self.close_stale(conn, false);
        }
        None
    }

    /// With a slot and no idle connection: takes a slot of every shared limit (waiting
    /// while one is full, for one of our connections to come back) and opens a new
    /// connection. `started` is when the checkout started waiting.
    async fn open_for(
        &self,
        slot: Slot<Box<ServerConnection>>,
        started: tokio::time::Instant,
        notice: Option<(Duration, Tell<'_>)>,
    ) -> Result<PooledServer, PoolError> {
        let wait = self.settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| started + wait);
        let mut notice = notice.map(|(after, tell)| (started + after, tell));
        let slots = loop {
            if let Some(slots) = self.try_limit_slots() {
                break slots;
            }
            // A shared limit is full: wait for one of our connections to come back or a
            // slot to free elsewhere (checked again after a short pause).
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(PoolError::Timeout);
            }
            limits::tell_if_due(&mut notice);
            tokio::select! {
                _ = self.returned.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if let Some(conn) = self.reuse_idle(None, Instant::now()).await {
                return Ok(self.lend(conn, slot, started.elapsed()));
            }
        };
        // Opening may wait for a server that is asleep or restarting: the notice is due
        // then too.
        let mut opening = std::pin::pin!(self.open(retry::Retry::Until(deadline)));
        let opened = match notice.take() {
            Some((at, tell)) if deadline.is_none_or(|d| at < d) => {
                tokio::select! {
                    biased;
                    r = &mut opening => r,
                    _ = tokio::time::sleep_until(at) => {
                        tell();
                        opening.await
                    }
                }
            }
            _ => opening.await,
        };
        let mut conn = Box::new(opened?);
        conn.slots = slots;
        self.note_welcome(&conn);
        debug!(server = conn.id, db = %self.key.database, user = %self.key.user, "server connected");
        Ok(self.lend(conn, slot, started.elapsed()))
    }

    /// A pool_size slot, with the idle connection to reuse when there is one: at once
    /// when a slot is free and the pool is not paused; otherwise counted as waiting
    /// (cl_waiting, maxwait) until a slot is ours (FIFO, reserve pool after
    /// reserve_pool_timeout, query_wait_timeout) or the wait is abandoned. The third
    /// part is when the wait started (`None`: it did not wait).
    pub(super) async fn pool_slot(
        &self,
        notice: &mut Option<(Duration, Tell<'_>)>,
        stop: Option<&Stop<'_>>,
    ) -> Result<Taken, PoolError> {
        let paused = if self.gate.is_paused() {
            let waiting = self.stats.wait_started();
            match stop {
                // Boxed as the rare path it is.
                Some(stop) => tokio::select! {
                    () = Box::pin(self.gate.wait_open()) => {}
                    () = Box::pin(stopped(stop)) => return Err(PoolError::Closed),
                },
                None => self.gate.wait_open().await,
            }
            Some(waiting)
        } else {
            None
        };
        let round_robin = self.target.load().options.round_robin;
        let after = notice.as_ref().map(|n| n.0);
        let mut queued_at = None;
        let taken = self.queue.take_or_queue(round_robin, || {
            let now = tokio::time::Instant::now();
            queued_at = Some(now);
            self.plan(now, after)
        });
        let mut waiting = match taken {
            Ok((slot, conn)) => return Ok((slot, conn, paused.map(|w| w.since()))),
            Err(waiting) => waiting,
        };
        let since = queued_at.unwrap_or_else(tokio::time::Instant::now);
        let counted = paused.unwrap_or_else(|| self.stats.wait_started_at(since.into_std()));
        if let Some(stop) = stop {
            self.relay_stop(stop.signal);
        }
        loop {
            match waiting.next().await {
                Event::Interrupted => {
                    if stop.is_some_and(|s| (s.lends_none)()) {
                        return Err(PoolError::Closed);
                    }
                }
                Event::Notice => {
                    if let Some((_, tell)) = notice.take() {
                        tell();
                    }
                }
                Event::Granted((slot, conn)) => {
                    if slot.is_reserve() {
                        self.note_reserve_taken();
                    }
                    return Ok((slot, conn, Some(counted.since())));
                }
                Event::TimedOut => return Err(PoolError::Timeout),
            }
        }
    }

    /// Starts (once per pool) the task that wakes this pool's waiting clients when a
    /// shutdown starts and every [`STOP_RECHECK`] after it, so that no waiting client
    /// subscribes to the shutdown signal itself. It ends with the pool.
    fn relay_stop(&self, signal: &CancellationToken) {
        self.stop_relay.get_or_init(|| {
            let queue = Arc::downgrade(&self.queue);
            let signal = signal.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = signal.cancelled() => break,
                        () = tokio::time::sleep(RELAY_ALIVE_CHECK) => {
                            if queue.strong_count() == 0 {
                                return;
                            }
                        }
                    }
                }
                while let Some(q) = queue.upgrade() {
                    q.interrupt_all();
                    drop(q);
                    tokio::time::sleep(STOP_RECHECK).await;
                }
            });
        });
    }

    /// When a checkout queued at `now` is due its notice (`notice_after`), the reserve
    /// pool and its query_wait_timeout.
    fn plan(&self, now: tokio::time::Instant, notice_after: Option<Duration>) -> Plan {
        let wait = self.settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| now + wait);
        let notice_at = notice_after
            .map(|after| now + after)
            .filter(|at| deadline.is_none_or(|d| *at < d));
        let reserve_at =
            (self.settings.reserve_pool_size > 0).then(|| now + self.settings.reserve_pool_timeout);
        Plan {
            notice_at,
            reserve_at,
            deadline,
        }
    }

    /// Connects and logs in, counting the attempt (sv_login, connect histogram, failures).
    /// Transient failures (server asleep or restarting) are retried as `retry` says.
    pub(super) async fn open(&self, retry: retry::Retry) -> Result<ServerConnection, ServerError> {
        let logging_in = retry::InFlight::start(&self.stats.logging_in);
        let started = Instant::now();
        let target = self.target.load_full();
        let result = retry::connect(&target, &self.settings, &self.login_failure, retry).await;
        drop(logging_in);
        match &result {
            Ok(conn) => {
                self.stats.track(&conn.info);
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                let took = started.elapsed().as_secs_f64();
                self.stats.timers.connect.observe(took);
            }
            Err(_) => self.stats.timers.connect_failures.inc(),
        }
        result
    }

    /// Takes one slot of every shared limit without waiting (closing idle connections of
    /// sibling pools to make room); `None` when some limit stays full.
    pub(super) fn try_limit_slots(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut slots = Vec::with_capacity(self.settings.limits.len());
        for group in &self.settings.limits {
            slots.push(group.try_acquire()?);
        }
        Some(slots)
    }

    /// Runs server_check_query on a connection that sat idle longer than
    /// server_check_delay; false when it fails (the connection is then dropped).
    pub(super) async fn passes_check(&self, conn: &mut ServerConnection, now: Instant) -> bool {
        let Some(query) = &self.settings.server_check_query else {
            return true;
        };
        if now.saturating_duration_since(conn.last_used) < self.settings.server_check_delay {
            return true;
        }
        let check = conn.run_internal(query);
        matches!(
            tokio::time::timeout(self.settings.connect_timeout, check).await,
            Ok(Ok(b'I'))
        )
    }

    pub(super) fn note_welcome(&self, conn: &ServerConnection) {
        let mut w = crate::panic::lock(&self.welcome);
        if w.is_none() {
            *w = Some(Arc::new(conn.params.clone()));
        }
    }

    pub(super) fn lend(
        &self,
        conn: Box<ServerConnection>,
        permit: Slot<Box<ServerConnection>>,
        waited: Duration,
    ) -> PooledServer {
        let active = ActiveGuard::new(&self.stats, &conn.info, waited);
        PooledServer {
            conn,
            _permit: permit,
            _active: active,
        }
    }

    pub(super) fn pop_idle(&self) -> Option<Box<ServerConnection>> {
        // LIFO, as PgBouncer (server_round_robin = 0): warm connections stay warm.
        self.take_idle()
    }

    /// Returns a clean, idle connection to the pool (or closes it when past its lifetime).
    /// The caller guarantees the server is idle: ReadyForQuery `I` seen and nothing
    /// outstanding.
    pub fn checkin(&self, server: PooledServer) {
        let PooledServer {
            mut conn,
            _permit: permit,
            _active: active,
        } = server;
        let now = Instant::now();
        // A shrunk fleet budget takes this connection's slots back.
        if super::limits::repay(&self.settings.limits, &mut conn.slots)
            || self.expired_at(&conn, now)
        {
            self.close_stale(conn, false);
            drop(active);
        } else {
            conn.last_used = now;
            // Off loan before the next client may have it (SHOW SERVERS, WAIT_CLOSE).
            drop(active);
            // Straight to the oldest waiting client, or idle with the slot free.
            self.queue.checkin(permit, Some(conn));
            self.returned.notify_one();
        }
    }

    /// Closes a connection that must not be reused (dirty, broken) and frees its slot.
    pub fn discard(&self, server: PooledServer) {
        self.discard_because(
            server,
            crate::logging::close_reason::CloseReason::UncleanServer,
        );
    }

    /// Closes a connection that must not be reused, logging `reason`, and frees its slot.
    pub fn discard_because(
        &self,
        server: PooledServer,
        reason: crate::logging::close_reason::CloseReason,
    ) {
        debug!(server = server.conn.id, %reason, "discarding server");
        tokio::spawn(server.conn.close_because(reason));
    }
}
