//! Prometheus metrics: typed handles registered once in a per-process registry (no global
//! state), latency histograms per (database, user) pool that no PgBouncer exporter has, the
//! exporter-compatible gauges and counters (`exporter`), the HTTP endpoint with /metrics and
//! health checks (`http`, `health`) and the stats_period summary (`period`).

pub mod edge;
pub mod exporter;
pub mod health;
pub mod http;
pub mod period;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::app::App;
use crate::pool::Timers;

/// Pools that get their own histogram labels; later ones share `_other` (bounded series).
pub const MAX_POOL_LABEL_SETS: usize = 500;

const QUERY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const WAIT_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0,
];
const CONNECT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// The registry and every metric handle of one pgfunnel.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    query: HistogramVec,
    xact: HistogramVec,
    wait: HistogramVec,
    connect: HistogramVec,
    connect_failures: IntCounterVec,
    pins: IntCounterVec,
    refusals: IntCounterVec,
    pipeline_full: IntCounterVec,
    notification_overflows: IntCounterVec,
    statement_evictions: IntCounterVec,
    label_sets: AtomicUsize,
    exporter: exporter::Exporter,
    scrape: Mutex<()>,
    window: Mutex<(Instant, Instant)>,
    /// Cached readiness result.
    pub health: health::HealthCache,
    names: Vec<String>,
    /// The edge listener's metrics (WebSocket clients, `/sql` requests).
    pub edge: edge::EdgeMetrics,
}

fn histogram(
    r: &Registry,
    names: &RefCell<Vec<String>>,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let h = HistogramVec::new(opts, &["database", "user"]).expect("valid histogram");
    exporter::reg(r, names, h)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let names = RefCell::new(Vec::new());
        let query = histogram(
            &r,
            &names,
            "pgfunnel_query_duration_seconds",
            "Query duration from the first request message to ReadyForQuery",
            &QUERY_BUCKETS,
        );
        let xact = histogram(
            &r,
            &names,
            "pgfunnel_transaction_duration_seconds",
            "Transaction duration from the first request to ReadyForQuery idle",
            &QUERY_BUCKETS,
        );
        let wait = histogram(
            &r,
            &names,
            "pgfunnel_client_wait_seconds",
            "Time a client waited for a server connection",
            &WAIT_BUCKETS,
        );
        let connect = histogram(
            &r,
            &names,
            "pgfunnel_server_connect_seconds",
            "Server connect plus login time",
            &CONNECT_BUCKETS,
        );
        let connect_failures = IntCounterVec::new(
            Opts::new(
                "pgfunnel_server_connect_failures_total",
                "Failed server connects or logins",
            ),
            &["database", "user"],
        )
        .expect("valid counter");
        let connect_failures = exporter::reg(&r, &names, connect_failures);
        let pins = IntCounterVec::new(
            Opts::new(
                "pgfunnel_client_pins_total",
                "Clients pinned to their server in transaction mode (temp tables, session advisory locks, WITH HOLD cursors, SQL PREPARE, LOAD, identity changes, set_config, statements naming pgfunnel's own, uninspected query texts)",
            ),
            &["database", "user"],
        )
        .expect("valid counter");
        let pins = exporter::reg(&r, &names, pins);
        let refusals = IntCounterVec::new(
            Opts::new(
                "pgfunnel_client_refusals_total",
                "Client messages refused before reaching a server (08P01: unknown type, password after login, COPY message outside COPY, bad length; 54000: prepared-statement message over max_prepared_message_size)",
            ),
            &["database", "user"],
        )
        .expect("valid counter");
        let refusals = exporter::reg(&r, &names, refusals);
        let pool_counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["database", "user"])
                .expect("valid counter");
            exporter::reg(&r, &names, c)
        };
        let pipeline_full = pool_counter(
            "pgfunnel_client_pipeline_full_total",
            "Times a client was not read because max_client_pipeline requests awaited answers (back-pressure, no error)",
        );
        let notification_overflows = pool_counter(
            "pgfunnel_client_notification_overflows_total",
            "Clients disconnected (53200) because more than listen_queue_size notifications waited for them",
        );
        let statement_evictions = pool_counter(
            "pgfunnel_prepared_statement_evictions_total",
            "Statements dropped from the pool's prepared-statement registry past max_pool_prepared_statements",
        );
        let edge = edge::EdgeMetrics::register(&r, &names);
        let exporter = exporter::Exporter::register(&r, &names);
        let now = Instant::now();
        Metrics {
            registry: r,
            query,
            xact,
            wait,
            connect,
            connect_failures,
            pins,
            refusals,
            pipeline_full,
            notification_overflows,
            statement_evictions,
            label_sets: AtomicUsize::new(0),
            exporter,
            scrape: Mutex::new(()),
            window: Mutex::new((now, now)),
            health: health::HealthCache::default(),
            names: names.into_inner(),
            edge,
        }
    }

    /// Every metric family name this registry can expose.
    pub fn metric_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Histogram handles for a new pool; past [`MAX_POOL_LABEL_SETS`] pools share the
    /// `_other` labels.
    pub fn timers_for(&self, database: &str, user: &str) -> Timers {
        let n = self.label_sets.fetch_add(1, Ordering::Relaxed);
        let labels = if n < MAX_POOL_LABEL_SETS {
            [database, user]
        } else {
            ["_other", "_other"]
        };
        Timers {
            query: self.query.with_label_values(&labels),
            xact: self.xact.with_label_values(&labels),
            wait: self.wait.with_label_values(&labels),
            connect: self.connect.with_label_values(&labels),
            connect_failures: self.connect_failures.with_label_values(&labels),
            pins: self.pins.with_label_values(&labels),
            refusals: self.refusals.with_label_values(&labels),
            pipeline_full: self.pipeline_full.with_label_values(&labels),
            notification_overflows: self.notification_overflows.with_label_values(&labels),
            statement_evictions: self.statement_evictions.with_label_values(&labels),
        }
    }

    /// The /metrics body in Prometheus text format.
    pub fn render(&self, app: &App) -> String {
        let _one_scrape_at_a_time = self.scrape.lock().expect("scrape lock poisoned");
        self.exporter.update(app);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The averaging window of SHOW STATS: from the older snapshot until now.
    pub fn window(&self) -> Duration {
        self.window
            .lock()
            .expect("window lock poisoned")
            .0
            .elapsed()
    }

    /// Starts a new stats_period window (called when the pools' snapshots rotate).
    pub fn rotate_window(&self) {
        let mut w = self.window.lock().expect("window lock poisoned");
        w.0 = w.1;
        w.1 = Instant::now();
    }
}
