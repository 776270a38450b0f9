//! Checkout and checkin: a FIFO wait for a slot (pool_size, then the reserve pool after
//! reserve_pool_timeout, and one slot of every shared limit) within query_wait_timeout;
//! idle connections reused LIFO after server_check_query when they sat idle long enough,
//! new ones opened otherwise; clean connections checked back in, others discarded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::{limits, retry, ActiveGuard, Pool, PoolError, PooledServer, Tell};
use crate::server::{ServerConnection, ServerError};

impl Pool {
    /// Waits (FIFO) for a slot within query_wait_timeout, then returns an idle
    /// connection that is still open or opens a new one. Cancel safe: dropping the
    /// future gives the slot back.
    pub async fn checkout(&self) -> Result<PooledServer, PoolError> {
        self.checkout_noticed(None).await
    }

    /// As [`Pool::checkout`]; `notice` is `(after, tell)`: when the checkout has queued
    /// for `after`, `tell` runs once (query_wait_notify). The queue arms one timer for
    /// whichever comes first of the notice, the reserve pool and query_wait_timeout.
    pub async fn checkout_noticed(
        &self,
        notice: Option<(Duration, Tell<'_>)>,
    ) -> Result<PooledServer, PoolError> {
        let started = tokio::time::Instant::now();
        let wait = self.settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| started + wait);
        let mut notice = notice.map(|(after, tell)| (started + after, tell));
        let permit = self.pool_slot(&mut notice).await?;
        let slots = loop {
            while let Some(mut conn) = self.pop_idle() {
                if conn.is_usable() && !self.expired(&conn) && self.passes_check(&mut conn).await {
                    return Ok(self.lend(conn, permit, started.elapsed()));
                }
                debug!(server = conn.id, "dropping stale idle server");
                self.close_stale(conn, false);
            }
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
        };
        // Opening may wait for a server that is asleep or restarting: the notice is due
        // then too.
        // Boxed: connecting is rare and its state is large; a waiting client's future
        // stays small without it.
        let mut opening = Box::pin(self.open(retry::Retry::Until(deadline)));
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
        Ok(self.lend(conn, permit, started.elapsed()))
    }

    /// A pool_size slot: at once when one is free and the pool is not paused; otherwise
    /// counted as waiting (cl_waiting, maxwait) until a slot is ours (FIFO, reserve pool,
    /// query_wait_timeout) or the wait is abandoned.
    pub(super) async fn pool_slot(
        &self,
        notice: &mut Option<(tokio::time::Instant, Tell<'_>)>,
    ) -> Result<OwnedSemaphorePermit, PoolError> {
        if !self.gate.is_paused() {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return Ok(p);
            }
        }
        let waiting = self.stats.wait_started();
        let since = if self.gate.is_paused() {
            self.gate.wait_open().await;
            tokio::time::Instant::now()
        } else {
            waiting.since().into()
        };
        self.acquire_slot(since, notice).await
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
    pub(super) async fn passes_check(&self, conn: &mut ServerConnection) -> bool {
        let Some(query) = &self.settings.server_check_query else {
            return true;
        };
        if conn.last_used.elapsed() < self.settings.server_check_delay {
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
        permit: OwnedSemaphorePermit,
        waited: Duration,
    ) -> PooledServer {
        let active = ActiveGuard::new(&self.stats, &conn.info, waited);
        PooledServer {
            conn,
            _permit: permit,
            _active: active,
        }
    }

    /// Waits for a pool slot, taking the reserve pool too after reserve_pool_timeout,
    /// until query_wait_timeout (both counted from `now`, the start of the wait after any
    /// PAUSE). `notice` is taken once it has run.
    pub(super) async fn acquire_slot(
        &self,
        now: tokio::time::Instant,
        notice: &mut Option<(tokio::time::Instant, Tell<'_>)>,
    ) -> Result<OwnedSemaphorePermit, PoolError> {
        let wait = self.settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| now + wait);
        if notice
            .as_ref()
            .is_some_and(|(at, _)| deadline.is_some_and(|d| *at >= d))
        {
            *notice = None;
        }
        let mut reserve_at =
            (self.settings.reserve_pool_size > 0).then(|| now + self.settings.reserve_pool_timeout);
        let main = self.permits.clone().acquire_owned();
        tokio::pin!(main);
        type Acquire = Pin<
            Box<
                dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send,
            >,
        >;
        let mut reserve: Option<Acquire> = None;
        loop {
            let next = [notice.as_ref().map(|n| n.0), reserve_at, deadline]
                .into_iter()
                .flatten()
                .min();
            let from_reserve = async {
                match reserve.as_mut() {
                    Some(r) => r.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                p = &mut main => return p.map_err(|_| PoolError::Closed),
                p = from_reserve => {
                    self.note_reserve_taken();
                    return p.map_err(|_| PoolError::Closed);
                }
                _ = tokio::time::sleep_until(next.unwrap_or(now)), if next.is_some() => {}
            }
            let now = tokio::time::Instant::now();
            if notice.as_ref().is_some_and(|n| n.0 <= now) {
                if let Some((_, tell)) = notice.take() {
                    tell();
                }
            }
            if reserve_at.is_some_and(|r| r <= now) {
                reserve_at = None;
                reserve = Some(Box::pin(self.reserve.clone().acquire_owned()));
            }
            if deadline.is_some_and(|d| d <= now) {
                return Err(PoolError::Timeout);
            }
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
        } else {
            conn.last_used = now;
            crate::panic::lock(&self.idle).push(conn);
            self.returned.notify_one();
        }
        // The slot frees only after the connection is back in the idle list, so the next
        // waiter finds it there instead of opening a new one.
        drop(active);
        drop(permit);
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
