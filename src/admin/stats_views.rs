//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: per-database sums of the pools'
//! counters, and averages over the last stats_period window as PgBouncer's `stats.c`.

use std::collections::BTreeMap;

use super::result::{ResultSet, Value};
use crate::app::App;
use crate::pool::StatsTotals;

const TOTAL_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

/// (current, one-window-ago) sums per database, in name order, with the window length.
/// The console counts as database `pgbouncer` once anyone logged in to it.
fn per_database(
    app: &App,
) -> (
    BTreeMap<String, (StatsTotals, StatsTotals)>,
    std::time::Duration,
) {
    let mut map: BTreeMap<String, (StatsTotals, StatsTotals)> = BTreeMap::new();
    for p in app.pools.iter() {
        let e = map.entry(p.key.database.clone()).or_default();
        e.0.add(&p.stats.totals());
        e.1.add(&p.stats.older());
    }
    let console = &app.control.console;
    if console.totals() != StatsTotals::default() {
        map.insert("pgbouncer".into(), (console.totals(), console.older()));
    }
    (map, app.metrics.window())
}

fn values(t: &StatsTotals) -> impl Iterator<Item = Value> {
    t.fields().into_iter().map(Value::from)
}

/// SHOW STATS: totals then averages per database.
pub fn stats(app: &App) -> ResultSet {
    let names = [
        "database",
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
        "total_client_login_count",
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
        "avg_client_login_count",
    ];
    let mut rs = ResultSet::new(&format!("s{}", "N".repeat(24)), &names);
    let (dbs, window) = per_database(app);
    for (db, (now, older)) in dbs {
        let mut row = vec![Value::from(db)];
        row.extend(values(&now));
        row.extend(values(&now.averages(&older, window)));
        rs.push(row);
    }
    rs
}

/// SHOW STATS_TOTALS.
pub fn stats_totals(app: &App) -> ResultSet {
    let mut names = vec!["database"];
    names.extend(TOTAL_NAMES);
    let mut rs = ResultSet::new(&format!("s{}", "N".repeat(12)), &names);
    for (db, (now, _)) in per_database(app).0 {
        let mut row = vec![Value::from(db)];
        row.extend(values(&now));
        rs.push(row);
    }
    rs
}

/// SHOW STATS_AVERAGES (PgBouncer prefixes only the parse/bind/login columns with avg_).
pub fn stats_averages(app: &App) -> ResultSet {
    let mut names = vec!["database"];
    names.extend(&TOTAL_NAMES[..8]);
    names.extend([
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
        "avg_client_login_count",
    ]);
    let mut rs = ResultSet::new(&format!("s{}", "N".repeat(12)), &names);
    let (dbs, window) = per_database(app);
    for (db, (now, older)) in dbs {
        let mut row = vec![Value::from(db)];
        row.extend(values(&now.averages(&older, window)));
        rs.push(row);
    }
    rs
}

/// SHOW TOTALS: name/value rows over all databases (total_* then avg_*).
pub fn totals(app: &App) -> ResultSet {
    let (dbs, window) = per_database(app);
    let (mut now, mut older) = (StatsTotals::default(), StatsTotals::default());
    for (n, o) in dbs.values() {
        now.add(n);
        older.add(o);
    }
    let avg = now.averages(&older, window);
    // PgBouncer names these after its struct fields (client_bytes, ps_*).
    let keys = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
        "client_login_count",
    ];
    let mut rs = ResultSet::new("sN", &["name", "value"]);
    for (prefix, t) in [("total_", now), ("avg_", avg)] {
        for (k, v) in keys.iter().zip(t.fields()) {
            rs.push(vec![format!("{prefix}{k}").into(), v.into()]);
        }
    }
    rs
}
