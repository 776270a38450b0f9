//! Per-pool counters and timing histograms behind SHOW POOLS/SERVERS/STATS and /metrics,
//! plus the stats_period snapshots averages are computed from. The hot path only does
//! relaxed atomic adds and histogram observations; readers take consistent-enough copies.

use super::wait_list::WaitList;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter};

use crate::server::ServerInfo;

/// Timing histograms and failure counters of one pool (labelled `database`, `user`).
#[derive(Debug, Clone)]
pub struct Timers {
    /// Query duration (request to ReadyForQuery), seconds.
    pub query: Histogram,
    /// Transaction duration (first request to ReadyForQuery `I`), seconds.
    pub xact: Histogram,
    /// Time a client waited for a server, seconds.
    pub wait: Histogram,
    /// Server connect plus login time, seconds.
    pub connect: Histogram,
    /// Failed server connects or logins.
    pub connect_failures: IntCounter,
    /// Clients pinned to their server (temp tables, session advisory locks, ...).
    pub pins: IntCounter,
    /// Client messages refused (08P01 protocol violations, 54000 oversized messages).
    pub refusals: IntCounter,
    /// Times a client was held back because `max_client_pipeline` requests awaited answers.
    pub pipeline_full: IntCounter,
    /// Clients disconnected because their notification queue (`listen_queue_size`) overflowed.
    pub notification_overflows: IntCounter,
    /// Statements dropped from the pool's registry (`max_pool_prepared_statements`).
    pub statement_evictions: IntCounter,
}

impl Timers {
    /// Handles registered nowhere: observations are kept but never exported. For tests
    /// and for pools past the metrics label cap.
    pub fn detached() -> Timers {
        let h = |name: &str| {
            Histogram::with_opts(HistogramOpts::new(name, "detached"))
                .expect("static histogram options are valid")
        };
        let c = |name: &str| {
            IntCounter::new(name, "detached").expect("static counter options are valid")
        };
        Timers {
            query: h("query"),
            xact: h("xact"),
            wait: h("wait"),
            connect: h("connect"),
            connect_failures: IntCounter::new("failures", "detached")
                .expect("static counter options are valid"),
            pins: IntCounter::new("pins", "detached").expect("static counter options are valid"),
            refusals: c("refusals"),
            pipeline_full: c("pipeline_full"),
            notification_overflows: c("notification_overflows"),
            statement_evictions: c("statement_evictions"),
        }
    }
}

/// The cumulative figures of SHOW STATS_TOTALS (times in microseconds).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // one field per SHOW STATS_TOTALS column of the same name
pub struct StatsTotals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
    pub client_login_count: u64,
}

impl StatsTotals {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &StatsTotals) {
        let pairs = self.fields_mut().into_iter().zip(other.fields());
        for (mine, theirs) in pairs {
            *mine = mine.wrapping_add(theirs);
        }
    }

    /// The fields in SHOW STATS_TOTALS column order.
    pub fn fields(&self) -> [u64; 12] {
        [
            self.server_assignment_count,
            self.xact_count,
            self.query_count,
            self.bytes_received,
            self.bytes_sent,
            self.xact_time,
            self.query_time,
            self.wait_time,
            self.client_parse_count,
            self.server_parse_count,
            self.bind_count,
            self.client_login_count,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 12] {
        [
            &mut self.server_assignment_count,
            &mut self.xact_count,
            &mut self.query_count,
            &mut self.bytes_received,
            &mut self.bytes_sent,
            &mut self.xact_time,
            &mut self.query_time,
            &mut self.wait_time,
            &mut self.client_parse_count,
            &mut self.server_parse_count,
            &mut self.bind_count,
            &mut self.client_login_count,
        ]
    }

    /// PgBouncer's averages between `older` and `self` over `period`: counts and bytes per
    /// second, times per query / transaction / assignment (stats.c `calc_average`).
    pub fn averages(&self, older: &StatsTotals, period: Duration) -> StatsTotals {
        let us = period.as_micros() as u64;
        if us == 0 {
            return StatsTotals::default();
        }
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let rate = |now: u64, then: u64| d(now, then).saturating_mul(1_000_000) / us;
        let per = |t_now: u64, t_then: u64, n: u64| d(t_now, t_then).checked_div(n).unwrap_or(0);
        let queries = d(self.query_count, older.query_count);
        let xacts = d(self.xact_count, older.xact_count);
        let assigns = d(self.server_assignment_count, older.server_assignment_count);
        StatsTotals {
            server_assignment_count: rate(
                self.server_assignment_count,
                older.server_assignment_count,
            ),
            xact_count: rate(self.xact_count, older.xact_count),
            query_count: rate(self.query_count, older.query_count),
            bytes_received: rate(self.bytes_received, older.bytes_received),
            bytes_sent: rate(self.bytes_sent, older.bytes_sent),
            xact_time: per(self.xact_time, older.xact_time, xacts),
            query_time: per(self.query_time, older.query_time, queries),
            wait_time: per(self.wait_time, older.wait_time, assigns),
            client_parse_count: rate(self.client_parse_count, older.client_parse_count),
            server_parse_count: rate(self.server_parse_count, older.server_parse_count),
            bind_count: rate(self.bind_count, older.bind_count),
            client_login_count: rate(self.client_login_count, older.client_login_count),
        }
    }
}

/// A client counted as waiting (SHOW POOLS cl_waiting, maxwait) until this drops: when
/// it got its slot, timed out, or its wait was abandoned.
#[derive(Debug)]
pub struct WaitGuard<'a>(&'a PoolStats, u64, Instant);

impl WaitGuard<'_> {
    /// When the wait started.
    pub fn since(&self) -> Instant {
        self.2
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        crate::panic::lock(&self.0.waiters).end(self.1);
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps server returns signalled while held (see [`PoolStats::watch_releases`]).
#[derive(Debug)]
pub struct ReleaseWatch<'a>(&'a PoolStats);

impl Drop for ReleaseWatch<'_> {
    fn drop(&mut self) {
        self.0.release_watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Live counters of one pool.
#[derive(Debug)]
pub struct PoolStats {
    /// Clients waiting for a server right now (paused ones included).
    pub waiting: AtomicUsize,
    /// Server connections handed out right now.
    pub active: AtomicUsize,
    /// Server connections being opened right now (SHOW POOLS sv_login).
    pub logging_in: AtomicUsize,
    /// Server connections opened in total.
    pub connects: AtomicU64,
    /// Times a server was handed to a client.
    pub assignments: AtomicU64,
    /// Transactions finished (ReadyForQuery `I`).
    pub xacts: AtomicU64,
    /// Queries finished (ReadyForQuery).
    pub queries: AtomicU64,
    /// Bytes read from clients.
    pub received: AtomicU64,
    /// Bytes read from servers (sent on to clients).
    pub sent: AtomicU64,
    /// Microseconds spent in transactions.
    pub xact_us: AtomicU64,
    /// Microseconds spent in queries.
    pub query_us: AtomicU64,
    /// Microseconds clients waited for a server.
    pub wait_us: AtomicU64,
    /// Successful client logins to this pool.
    pub logins: AtomicU64,
    /// Named Parse messages from clients (prepared-statement mode).
    pub client_parses: AtomicU64,
    /// Parse messages sent to servers (prepared-statement mode).
    pub server_parses: AtomicU64,
    /// Binds of named statements (prepared-statement mode).
    pub binds: AtomicU64,
    /// Histograms and failure counters.
    pub timers: Timers,
    /// Start of every wait in progress, oldest first.
    waiters: Mutex<WaitList>,
    /// Every connection this pool opened (dead ones pruned as new ones come); which are
    /// on loan is a flag in each, so lending and returning take no lock.
    servers: Mutex<Vec<Weak<ServerInfo>>>,
    released: tokio::sync::Notify,
    /// Tasks waiting on `released` (it is signalled only when someone listens).
    release_watchers: AtomicUsize,
    snapshots: Mutex<(StatsTotals, StatsTotals)>,
}

impl PoolStats {
    /// Zeroed counters using `timers`.
    pub fn new(timers: Timers) -> PoolStats {
        PoolStats {
            waiting: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            logging_in: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
            xacts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            xact_us: AtomicU64::new(0),
            query_us: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            client_parses: AtomicU64::new(0),
            server_parses: AtomicU64::new(0),
            binds: AtomicU64::new(0),
            timers,
            waiters: Mutex::new(WaitList::default()),
            servers: Mutex::new(Vec::new()),
            released: tokio::sync::Notify::new(),
            release_watchers: AtomicUsize::new(0),
            snapshots: Mutex::new((StatsTotals::default(), StatsTotals::default())),
        }
    }

    /// Counts a client login.
    pub fn client_logged_in(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds prepared-statement traffic (parses from clients and to servers, binds).
    pub fn count_prepared(&self, c: crate::client::link_stats::PreparedCounts) {
        let add = |a: &AtomicU64, n: u32| {
            if n > 0 {
                a.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        };
        add(&self.client_parses, c.client_parses);
        add(&self.server_parses, c.server_parses);
        add(&self.binds, c.binds);
    }

    /// The cumulative figures now.
    pub fn totals(&self) -> StatsTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsTotals {
            server_assignment_count: get(&self.assignments),
            xact_count: get(&self.xacts),
            query_count: get(&self.queries),
            bytes_received: get(&self.received),
            bytes_sent: get(&self.sent),
            xact_time: get(&self.xact_us),
            query_time: get(&self.query_us),
            wait_time: get(&self.wait_us),
            client_parse_count: get(&self.client_parses),
            server_parse_count: get(&self.server_parses),
            bind_count: get(&self.binds),
            client_login_count: get(&self.logins),
        }
    }

    /// Moves the stats_period window: the previous snapshot becomes the older one.
    pub fn rotate(&self) {
        let now = self.totals();
        let mut s = self.snapshots.lock().expect("snapshot lock poisoned");
        s.0 = s.1;
        s.1 = now;
    }

    /// The snapshot taken one stats_period ago (averages are computed against it).
    pub fn older(&self) -> StatsTotals {
        self.snapshots.lock().expect("snapshot lock poisoned").0
    }

    /// Records that a client started waiting, until the returned guard drops.
    pub fn wait_started(&self) -> WaitGuard<'_> {
        self.wait_started_at(Instant::now())
    }

    /// As [`PoolStats::wait_started`], for a wait that started at `now`.
    pub fn wait_started_at(&self, now: Instant) -> WaitGuard<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let token = crate::panic::lock(&self.waiters).start(now);
        WaitGuard(self, token, now)
    }

    /// How long the oldest waiting client has waited (SHOW POOLS maxwait).
    pub fn max_wait(&self) -> Duration {
        let oldest = crate::panic::lock(&self.waiters).oldest();
        oldest.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Lists a connection this pool opened (for SHOW SERVERS while it is on loan).
    pub fn track(&self, info: &Arc<ServerInfo>) {
        let mut servers = self.servers.lock().expect("servers lock poisoned");
        servers.retain(|w| w.strong_count() > 0);
        servers.push(Arc::downgrade(info));
    }

    /// Records a server handed out after `waited`.
    pub fn lent(&self, info: &ServerInfo, waited: Duration) {
        info.on_loan.store(true, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.assignments.fetch_add(1, Ordering::Relaxed);
        self.wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        self.timers.wait.observe(waited.as_secs_f64());
    }

    /// Records a server coming back (or being closed) after a loan.
    pub fn returned(&self, info: &ServerInfo) {
        info.on_loan.store(false, Ordering::SeqCst);
        self.active.fetch_sub(1, Ordering::SeqCst);
        // Pairs with the SeqCst increment in `watch_releases`: a watcher that registered
        // after this load sees the flag already cleared.
        if self.release_watchers.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
    }

    /// The servers on loan to clients right now.
    pub fn on_loan(&self) -> Vec<Arc<ServerInfo>> {
        let servers = self.servers.lock().expect("servers lock poisoned");
        let mut v: Vec<_> = servers
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|i| i.on_loan.load(Ordering::SeqCst))
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Makes returns signal `released_signal` until the guard drops (set it before
    /// creating the signal and checking state).
    pub fn watch_releases(&self) -> ReleaseWatch<'_> {
        self.release_watchers.fetch_add(1, Ordering::SeqCst);
        ReleaseWatch(self)
    }

    /// A future that completes at the next server return (enable it before checking state).
    pub fn released_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Waits until no server of this pool is on loan. Cancel safe.
    pub async fn wait_all_returned(&self) {
        let _watch = self.watch_releases();
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
