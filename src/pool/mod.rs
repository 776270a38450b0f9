//! Per (database, user) server pools: the pool's state and types here; bounded checkout
//! with a FIFO wait and a deadline and checkin of clean connections (`checkout`) over the
//! pool's slots, idle list and waiting clients with their hand-off (`queue`), idle and
//! lifetime reaping (`maintenance`), min_pool_size (`fill`), login retries (`retry`),
//! PAUSE (`gate`), shared limits (`limits`), the shared LISTEN connection (`listen`), the
//! pool-wide prepared-statement registry (`prepared`) and counters (`stats`). Owns no
//! client state and no relay logic; a connection it hands out is idle, logged in and (as
//! far as can be told without a round trip) still open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

mod dedicated;
pub(crate) mod fill;
mod retry;

use crate::server::{ServerConnection, ServerError, ServerInfo, ServerTarget};

mod checkout;
mod control;
mod lifecycle;
pub use lifecycle::{note_auto_database, IdlePools};
pub mod gate;
pub mod limits;
pub mod listen;
mod maintenance;
pub mod prepared;
pub mod queue;
pub mod stats;
pub mod wait_list;
pub use gate::Gate;
pub use limits::LimitGroup;
pub use stats::{PoolStats, StatsTotals, Timers};

/// Slots of a pool with pool_size 0 (no limit).
const UNLIMITED: usize = usize::MAX >> 4;

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
    /// pgfunnel lends no more servers (shutdown; see [`Stop`]).
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
    _permit: queue::Slot<Box<ServerConnection>>,
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

/// How a waiting checkout learns that pgfunnel stopped lending servers (see
/// [`Pool::checkout_noticed`]). The pool subscribes to `signal` once for all its waiters.
pub struct Stop<'a> {
    /// Fires when a shutdown starts.
    pub signal: &'a tokio_util::sync::CancellationToken,
    /// Whether servers are no longer lent (WAIT_FOR_CLIENTS still lends them until a second
    /// request escalates it).
    pub lends_none: &'a (dyn Fn() -> bool + Sync),
}

/// One pool of server connections.
#[derive(Debug)]
pub struct Pool {
    /// This pool's identity.
    pub key: PoolKey,
    target: arc_swap::ArcSwap<ServerTarget>,
    /// Limits and timeouts.
    pub settings: PoolSettings,
    /// The pool_size and reserve slots, the idle connections and the queued clients.
    // Connections boxed on purpose: one moves between the idle list and a client on every
    // transaction, and moving a pointer beats copying the whole state.
    queue: Arc<queue::SlotQueue<Box<ServerConnection>>>,
    welcome: Mutex<Option<Arc<HashMap<String, String>>>>,
    returned: tokio::sync::Notify,
    /// Prepared statements of this pool's clients, de-duplicated by text and types.
    pub statements: Arc<crate::pool::prepared::StatementRegistry>,
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
    /// Set once the task that interrupts waiting clients at shutdown runs.
    stop_relay: std::sync::OnceLock<()>,
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
            UNLIMITED
        } else {
            settings.pool_size
        };
        Arc::new(Pool {
            key,
            target: arc_swap::ArcSwap::from_pointee(target),
            queue: queue::SlotQueue::new(size, settings.reserve_pool_size),
            welcome: Mutex::new(None),
            returned: tokio::sync::Notify::new(),
            statements: Arc::new(crate::pool::prepared::StatementRegistry::counting(
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
            stop_relay: std::sync::OnceLock::new(),
            settings,
        })
    }

    /// Whether a checkout could start now without queueing (not paused, a pool_size slot
    /// free). A hint only: another client may take the slot first.
    pub fn has_free_slot(&self) -> bool {
        !self.gate.is_paused() && self.queue.available() > 0
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
        self.queue.with_idle(|idle| idle.len())
    }
}
