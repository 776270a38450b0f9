//! The metrics prometheus-community's pgbouncer_exporter publishes, under its names, filled
//! at scrape time from the same SHOW result sets the console sends (so dashboards built on
//! the exporter work unchanged). Handles are registered once; each scrape resets and refills
//! them under a lock.

use std::cell::RefCell;

use prometheus::{CounterVec, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::admin::result::{ResultSet, Value};
use crate::admin::{stats_views, views};
use crate::app::App;

/// (metric suffix, SHOW column, divisor) for counters from SHOW STATS_TOTALS.
const STATS: [(&str, &str, f64); 11] = [
    ("queries_pooled_total", "query_count", 1.0),
    ("queries_duration_seconds_total", "query_time", 1e6),
    ("received_bytes_total", "bytes_received", 1.0),
    ("sent_bytes_total", "bytes_sent", 1.0),
    ("client_wait_seconds_total", "wait_time", 1e6),
    ("sql_transactions_pooled_total", "xact_count", 1.0),
    ("server_in_transaction_seconds_total", "xact_time", 1e6),
    ("client_parses_total", "client_parse_count", 1.0),
    ("server_parses_total", "server_parse_count", 1.0),
    ("binds_total", "bind_count", 1.0),
    ("server_assignments_total", "server_assignment_count", 1.0),
];

/// (gauge suffix, SHOW POOLS column) with labels database, user.
const POOLS: [(&str, &str); 11] = [
    ("client_active_connections", "cl_active"),
    ("client_waiting_connections", "cl_waiting"),
    ("client_active_cancel_connections", "cl_active_cancel_req"),
    ("client_waiting_cancel_connections", "cl_waiting_cancel_req"),
    ("server_active_connections", "sv_active"),
    ("server_active_cancel_connections", "sv_active_cancel"),
    ("server_being_canceled_connections", "sv_being_canceled"),
    ("server_idle_connections", "sv_idle"),
    ("server_used_connections", "sv_used"),
    ("server_testing_connections", "sv_tested"),
    ("server_login_connections", "sv_login"),
];

/// (gauge suffix, SHOW DATABASES column).
const DATABASES: [(&str, &str); 6] = [
    ("pool_size", "pool_size"),
    ("reserve_pool", "reserve_pool_size"),
    ("max_connections", "max_connections"),
    ("current_connections", "current_connections"),
    ("paused", "paused"),
    ("disabled", "disabled"),
];
const DATABASE_LABELS: [&str; 6] = [
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_mode",
];

/// (gauge name, SHOW LISTS key).
const LISTS: [(&str, &str); 11] = [
    ("databases", "databases"),
    ("users", "users"),
    ("pools", "pools"),
    ("free_clients", "free_clients"),
    ("used_clients", "used_clients"),
    ("login_clients", "login_clients"),
    ("free_servers", "free_servers"),
    ("used_servers", "used_servers"),
    ("cached_dns_names", "dns_names"),
    ("cached_dns_zones", "dns_zones"),
    ("in_flight_dns_queries", "dns_queries"),
];

/// At most this many pgbouncer_client_connections series (application_name is client-chosen).
const MAX_CLIENT_SERIES: usize = 200;

/// The exporter-compatible handles.
#[derive(Debug)]
pub struct Exporter {
    up: IntGauge,
    version: IntGaugeVec,
    stats: Vec<(CounterVec, usize)>,
    legacy_stats: Vec<(CounterVec, usize)>,
    pools: Vec<(GaugeVec, usize)>,
    maxwait: GaugeVec,
    databases: Vec<(GaugeVec, usize)>,
    lists: Vec<IntGauge>,
    max_client_conn: IntGauge,
    max_user_connections: IntGauge,
    clients: IntGaugeVec,
}

/// Registers `c` in `r` and records its metric names.
pub(super) fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    names: &RefCell<Vec<String>>,
    c: T,
) -> T {
    for d in c.desc() {
        names.borrow_mut().push(d.fq_name.clone());
    }
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Exporter {
    /// Registers every exporter metric in `r`.
    pub fn register(r: &Registry, names: &RefCell<Vec<String>>) -> Exporter {
        let opts = |name: &str, help: &str| Opts::new(format!("pgbouncer_{name}"), help.to_owned());
        let counter = |name: &str, col: &str, labels: &[&str]| {
            reg(
                r,
                names,
                CounterVec::new(opts(name, &format!("SHOW STATS_TOTALS {col}")), labels)
                    .expect("valid"),
            )
        };
        let stats = STATS
            .iter()
            .enumerate()
            .map(|(i, (n, c, _))| (counter(&format!("stats_totals_{n}"), c, &["database"]), i))
            .collect();
        let legacy_stats = STATS[..7]
            .iter()
            .enumerate()
            .map(|(i, (n, c, _))| (counter(&format!("stats_{n}"), c, &["database"]), i))
            .collect();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                names,
                GaugeVec::new(opts(name, help), labels).expect("valid"),
            )
        };
        let pools = POOLS
            .iter()
            .enumerate()
            .map(|(i, (n, c))| {
                (
                    gauge(
                        &format!("pools_{n}"),
                        &format!("SHOW POOLS {c}"),
                        &["database", "user"],
                    ),
                    i,
                )
            })
            .collect();
        let databases = DATABASES
            .iter()
            .enumerate()
            .map(|(i, (n, c))| {
                (
                    gauge(
                        &format!("databases_{n}"),
                        &format!("SHOW DATABASES {c}"),
                        &DATABASE_LABELS,
                    ),
                    i,
                )
            })
            .collect();
        let int = |name: &str, help: &str| {
            reg(
                r,
                names,
                IntGauge::with_opts(opts(name, help)).expect("valid"),
            )
        };
        Exporter {
            up: int("up", "1: pgfunnel answers (it serves this endpoint itself)"),
            version: reg(
                r,
                names,
                IntGaugeVec::new(opts("version_info", "SHOW VERSION"), &["version"])
                    .expect("valid"),
            ),
            stats,
            legacy_stats,
            pools,
            maxwait: gauge(
                "pools_client_maxwait_seconds",
                "SHOW POOLS maxwait + maxwait_us",
                &["database", "user"],
            ),
            databases,
            lists: LISTS
                .iter()
                .map(|(n, k)| int(n, &format!("SHOW LISTS {k}")))
                .collect(),
            max_client_conn: int("config_max_client_connections", "max_client_conn"),
            max_user_connections: int("config_max_user_connections", "max_user_connections"),
            clients: reg(
                r,
                names,
                IntGaugeVec::new(
                    opts(
                        "client_connections",
                        "SHOW CLIENTS by database, user, application_name, state",
                    ),
                    &["database", "user", "application_name", "state"],
                )
                .expect("valid"),
            ),
        }
    }

    /// Refills every handle from the current state. Callers serialize scrapes.
    pub fn update(&self, app: &App) {
        self.up.set(1);
        self.version.reset();
        self.version
            .with_label_values(&[views::version_string().as_str()])
            .set(1);
        self.update_stats(&stats_views::stats_totals(app));
        self.update_pools(&views::pools(app));
        self.update_databases(&views::databases(app));
        let lists = views::lists(app);
        for (g, (_, key)) in self.lists.iter().zip(LISTS) {
            let v = lists
                .rows
                .iter()
                .find(|r| text(&r[0]) == key)
                .map(|r| num(&r[1]));
            g.set(v.unwrap_or(0.0) as i64);
        }
        let s = &app.config().settings;
        self.max_client_conn.set(i64::from(s.max_client_conn));
        self.max_user_connections
            .set(i64::from(s.max_user_connections));
        self.update_clients(&crate::admin::socket_views::clients(app));
    }

    fn update_stats(&self, rs: &ResultSet) {
        for (vecs, _) in [(&self.stats, 0), (&self.legacy_stats, 1)] {
            for (vec, i) in vecs {
                vec.reset();
                let (_, col, div) = STATS[*i];
                let Some(c) = rs.column(col) else { continue };
                for row in &rs.rows {
                    vec.with_label_values(&[text(&row[0])])
                        .inc_by(num(&row[c]) / div);
                }
            }
        }
    }

    fn update_pools(&self, rs: &ResultSet) {
        let (w, wus) = (rs.column("maxwait"), rs.column("maxwait_us"));
        self.maxwait.reset();
        for (vec, i) in &self.pools {
            vec.reset();
            let Some(c) = rs.column(POOLS[*i].1) else {
                continue;
            };
            for row in &rs.rows {
                vec.with_label_values(&[text(&row[0]), text(&row[1])])
                    .set(num(&row[c]));
            }
        }
        if let (Some(w), Some(wus)) = (w, wus) {
            for row in &rs.rows {
                let secs = num(&row[w]) + num(&row[wus]) / 1e6;
                self.maxwait
                    .with_label_values(&[text(&row[0]), text(&row[1])])
                    .set(secs);
            }
        }
    }

    fn update_databases(&self, rs: &ResultSet) {
        let label_cols: Vec<Option<usize>> = DATABASE_LABELS.iter().map(|l| rs.column(l)).collect();
        for (vec, i) in &self.databases {
            vec.reset();
            let Some(c) = rs.column(DATABASES[*i].1) else {
                continue;
            };
            for row in &rs.rows {
                let labels: Vec<String> = label_cols
                    .iter()
                    .map(|lc| lc.map(|lc| label(&row[lc])).unwrap_or_default())
                    .collect();
                let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&refs).set(num(&row[c]));
            }
        }
    }

    fn update_clients(&self, rs: &ResultSet) {
        self.clients.reset();
        let cols = ["database", "user", "application_name", "state"].map(|c| rs.column(c));
        let mut series = std::collections::HashSet::new();
        for row in &rs.rows {
            let mut labels = cols.map(|c| c.map(|c| label(&row[c])).unwrap_or_default());
            labels[2] = labels[2].chars().take(64).collect();
            if !series.contains(&labels) && series.len() >= MAX_CLIENT_SERIES {
                labels[2] = "_other".to_owned();
            }
            series.insert(labels.clone());
            let refs = labels.each_ref().map(String::as_str);
            self.clients.with_label_values(&refs).inc();
        }
    }
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(s) => s,
        _ => "",
    }
}

fn label(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Null => String::new(),
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(n) => *n as f64,
        Value::Text(s) => s.trim().parse().unwrap_or(0.0),
        Value::Null => 0.0,
    }
}
