//! Per (database, user) server pools: bounded checkout with a FIFO wait and a deadline,
//! checkin of clean connections, idle and lifetime reaping. Owns no client state and no
//! relay logic; a connection it hands out is idle, logged in and (as far as can be told
//! without a round trip) still open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

mod dedicated;
pub(crate) mod fill;
mod retry;

use crate::server::{ServerConnection, ServerError, ServerInfo, ServerTarget};

mod control;
pub mod gate;
pub mod limits;
pub mod listen;
pub mod stats;
pub use gate::Gate;
pub use limits::LimitGroup;
pub use stats::{PoolStats, StatsTotals, Timers};

/// Identifies a pool: the client-facing database name and the server-side user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Database name as clients ask for it.
    pub database: String,
    /// User name the pool logs in to the server as.
    pub user: String,
}

/// Pool limits and timeouts, resolved from the config for one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Server connections at most (0 = unlimited).
    pub pool_size: usize,
    /// Extra connections allowed once a client has waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    /// Wait before the reserve may be used.
    pub reserve_pool_timeout: Duration,
    /// How long a client waits for a server (0 = forever).
    pub query_wait_timeout: Duration,
    /// Connect plus login deadline.
    pub connect_timeout: Duration,
    /// Close idle connections older than this (0 = never).
    pub server_lifetime: Duration,
    /// Close connections idle longer than this (0 = never).
    pub server_idle_timeout: Duration,
    /// Keep at least this many connections open (min_pool_size).
    pub min_pool_size: usize,
    /// Run `server_check_query` on a connection idle longer than this before reuse.
    pub server_check_delay: Duration,
    /// Health check query (empty string: an empty query; None: no check).
    pub server_check_query: Option<String>,
    /// Shared limits this pool's connections count against (max_db/user_connections).
    pub limits: Vec<Arc<LimitGroup>>,
    /// After a real login failure (wrong password), fail new connects at once for this long.
    pub server_login_retry: Duration,
}

/// Why a checkout failed.
#[derive(Debug, Error)]
pub enum PoolError {
    /// No connection became free within query_wait_timeout.
    #[error("query_wait_timeout")]
    Timeout,
    /// Opening a new server connection failed.
    #[error(transparent)]
    Connect(#[from] ServerError),
    /// The pool was closed (shutdown or config change).
    #[error("pool closed")]
    Closed,
}

/// A server connection on loan from a pool; return it with [`Pool::checkin`] or drop it
/// (which closes the connection and frees the slot).
#[derive(Debug)]
pub struct PooledServer {
    /// The connection (boxed: it moves between the idle list and its client on every
    /// transaction, and a pointer is cheaper to move than the whole state).
    pub conn: Box<ServerConnection>,
    _permit: OwnedSemaphorePermit,
    _active: ActiveGuard,
}

/// Counts a connection as active (and lists it for SHOW SERVERS) while it is on loan.
#[derive(Debug)]
struct ActiveGuard(Arc<PoolStats>, Arc<ServerInfo>);

impl ActiveGuard {
    fn new(stats: &Arc<PoolStats>, info: &Arc<ServerInfo>, waited: Duration) -> Self {
        stats.lent(info, waited);
        ActiveGuard(stats.clone(), info.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.returned(&self.1);
    }
}

/// Tells a queued client why it waits (query_wait_notify); see [`Pool::checkout_noticed`].
pub type Tell<'a> = &'a mut (dyn FnMut() + Send);

/// One pool of server connections.
#[derive(Debug)]
pub struct Pool {
    /// This pool's identity.
    pub key: PoolKey,
    target: arc_swap::ArcSwap<ServerTarget>,
    /// Limits and timeouts.
    pub settings: PoolSettings,
    // Boxed on purpose: a connection moves between this list and a client on every
    // transaction, and moving a pointer beats copying the whole state.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConnection>>>,
    permits: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    welcome: Mutex<Option<Arc<HashMap<String, String>>>>,
    returned: tokio::sync::Notify,
    /// Prepared statements of this pool's clients, de-duplicated by text and types.
    pub statements: Arc<crate::client::prepared::StatementRegistry>,
    /// Live counters.
    pub stats: Arc<PoolStats>,
    listen_hub: std::sync::OnceLock<Arc<listen::ListenHub>>,
    login_failure: retry::LoginFailure,
    filler: fill::Filler,
    /// Closed while the pool (or its database, or pgfunnel) is paused.
    pub gate: Gate,
    born: Instant,
    /// Connections created before `born` + this many microseconds (+1) must close when idle
    /// (RECONNECT, config change); 0 = none.
    close_before_us: AtomicU64,
    size: AtomicUsize,
}

impl Pool {
    /// Creates an empty pool. Connections are opened on demand.
    pub fn new(
        key: PoolKey,
        target: ServerTarget,
        settings: PoolSettings,
        timers: Timers,
    ) -> Arc<Pool> {
        let size = if settings.pool_size == 0 {
            Semaphore::MAX_PERMITS
        } else {
            settings.pool_size
        };
        Arc::new(Pool {
            key,
            target: arc_swap::ArcSwap::from_pointee(target),
            permits: Arc::new(Semaphore::new(size)),
            reserve: Arc::new(Semaphore::new(settings.reserve_pool_size)),
            idle: Mutex::new(Vec::new()),
            welcome: Mutex::new(None),
            returned: tokio::sync::Notify::new(),
            statements: Arc::new(crate::client::prepared::StatementRegistry::counting(
                timers.statement_evictions.clone(),
            )),
            listen_hub: std::sync::OnceLock::new(),
            login_failure: retry::LoginFailure::default(),
            filler: fill::Filler::default(),
            stats: Arc::new(PoolStats::new(timers)),
            gate: Gate::default(),
            born: Instant::now(),
            close_before_us: AtomicU64::new(0),
            size: AtomicUsize::new(settings.pool_size),
            settings,
        })
    }

    /// The parameters the first server of this pool reported at login, which clients
    /// are shown at their own login. `None` until a server has logged in.
    pub fn welcome(&self) -> Option<Arc<HashMap<String, String>>> {
        crate::panic::lock(&self.welcome).clone()
    }

    /// The pool's shared LISTEN connection (started on first use; it does not count
    /// against pool_size).
    pub fn listen_hub(&self) -> Arc<listen::ListenHub> {
        self.listen_hub
            .get_or_init(|| {
                listen::ListenHub::start((*self.target()).clone(), self.settings.connect_timeout)
            })
            .clone()
    }

    /// Number of idle connections.
    pub fn idle_count(&self) -> usize {
        crate::panic::lock(&self.idle).len()
    }

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
        let fast = if self.gate.is_paused() {
            None
        } else {
            self.permits.clone().try_acquire_owned().ok()
        };
        let permit = match fast {
            Some(p) => p,
            None => {
                // Slow path: counted as waiting (cl_waiting, maxwait) until a slot is ours
                // or the wait is abandoned.
                let _waiting = self.stats.wait_started();
                self.gate.wait_open().await;
                self.acquire_slot(&mut notice).await?
            }
        };
        let slots = loop {
            while let Some(mut conn) = self.pop_idle() {
                if conn.is_usable() && !self.expired(&conn) && self.passes_check(&mut conn).await {
                    return Ok(self.lend(conn, permit, started.elapsed()));
                }
                debug!(server = conn.id, "dropping stale idle server");
                tokio::spawn(conn.close());
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

    /// Connects and logs in, counting the attempt (sv_login, connect histogram, failures).
    /// Transient failures (server asleep or restarting) are retried as `retry` says.
    async fn open(&self, retry: retry::Retry) -> Result<ServerConnection, ServerError> {
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
    fn try_limit_slots(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut slots = Vec::with_capacity(self.settings.limits.len());
        for group in &self.settings.limits {
            slots.push(group.try_acquire()?);
        }
        Some(slots)
    }

    /// Runs server_check_query on a connection that sat idle longer than
    /// server_check_delay; false when it fails (the connection is then dropped).
    async fn passes_check(&self, conn: &mut ServerConnection) -> bool {
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

    /// Closes one idle connection (to free a shared-limit slot); false when none is idle.
    pub fn close_one_idle(&self) -> bool {
        let conn = {
            let mut idle = crate::panic::lock(&self.idle);
            if idle.is_empty() {
                return false;
            }
            // the least recently used one
            idle.remove(0)
        };
        let mut conn = conn;
        // Free the shared-limit slots now, not after the goodbye round trip.
        conn.slots.clear();
        tokio::spawn(conn.close());
        true
    }

    fn note_welcome(&self, conn: &ServerConnection) {
        let mut w = crate::panic::lock(&self.welcome);
        if w.is_none() {
            *w = Some(Arc::new(conn.params.clone()));
        }
    }

    fn lend(
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
    /// until query_wait_timeout (counted from now, after any PAUSE).
    /// `notice` is taken once it has run.
    async fn acquire_slot(
        &self,
        notice: &mut Option<(tokio::time::Instant, Tell<'_>)>,
    ) -> Result<OwnedSemaphorePermit, PoolError> {
        let now = tokio::time::Instant::now();
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
                p = from_reserve => return p.map_err(|_| PoolError::Closed),
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

    fn pop_idle(&self) -> Option<Box<ServerConnection>> {
        // LIFO, as PgBouncer (server_round_robin = 0): warm connections stay warm.
        crate::panic::lock(&self.idle).pop()
    }

    fn expired(&self, conn: &ServerConnection) -> bool {
        let life = self.settings.server_lifetime;
        (!life.is_zero() && conn.created.elapsed() >= life) || self.close_needed(conn.created)
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
        // Fleet hook: a shrunk fleet budget takes this connection's slots back.
        if limits::repay(&self.settings.limits, &mut conn.slots) || self.expired(&conn) {
            tokio::spawn(conn.close());
        } else {
            conn.last_used = Instant::now();
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
        debug!(server = server.conn.id, "discarding server");
        tokio::spawn(server.conn.close());
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime and those the
    /// server closed. Called periodically by the janitor.
    pub fn reap(&self) {
        let idle_limit = self.settings.server_idle_timeout;
        let mut idle = crate::panic::lock(&self.idle);
        let mut keep = Vec::with_capacity(idle.len());
        for mut conn in idle.drain(..) {
            let too_idle = !idle_limit.is_zero() && conn.last_used.elapsed() >= idle_limit;
            if too_idle || self.expired(&conn) || !conn.is_usable() {
                debug!(server = conn.id, "closing idle server");
                tokio::spawn(conn.close());
            } else {
                keep.push(conn);
            }
        }
        *idle = keep;
    }

    /// Closes every idle connection (RECONNECT, shutdown).
    pub fn close_idle(&self) {
        for conn in crate::panic::lock(&self.idle).drain(..) {
            tokio::spawn(conn.close());
        }
    }
}
