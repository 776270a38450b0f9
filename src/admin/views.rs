//! One function per SHOW view, each returning PgBouncer 1.25's columns in its order and
//! types (`src/admin.c`). Pure reads of the shared state; the metrics endpoint builds its
//! gauges from the same result sets, as an exporter would.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::result::{ResultSet, Value};
use crate::app::App;
use crate::client::registry::{ClientEntry, ClientState};
use crate::config::{Config, DatabaseEntry};
use crate::control::is_console;
use crate::pool::Pool;

/// The version after the product name in SHOW VERSION and `pgfunnel --version`: the
/// PgBouncer release whose behaviour pgfunnel follows, then pgfunnel's own version.
pub const VERSION_TAIL: &str = concat!("1.25.2 (pgfunnel ", env!("CARGO_PKG_VERSION"), ")");

/// The version string of SHOW VERSION and `--version` (exporters parse the `PgBouncer x.y.z`
/// prefix).
pub fn version_string() -> String {
    format!("PgBouncer {VERSION_TAIL}")
}

/// SHOW VERSION.
pub fn version() -> ResultSet {
    let mut rs = ResultSet::new("s", &["version"]);
    rs.push(vec![version_string().into()]);
    rs
}

/// SHOW CONFIG: every key with value, default and whether RELOAD/SET can change it.
pub fn config(app: &App) -> ResultSet {
    let config = app.config();
    let mut rs = ResultSet::new("ssss", &["key", "value", "default", "changeable"]);
    for key in crate::config::SETTING_KEYS {
        rs.push(vec![
            key.name.into(),
            key.value_in(&config.settings).into(),
            key.default_value().into(),
            (if key.reloadable { "yes" } else { "no" }).into(),
        ]);
    }
    crate::fleet::views::config_rows(&app.fleet, &mut rs);
    rs
}

/// The server user a client `user` of `database` is pooled as.
fn pool_user(config: &Config, database: &str, user: &str) -> String {
    config
        .database(database)
        .and_then(|e| e.user)
        .unwrap_or_else(|| user.to_owned())
}

/// Logged-in clients (not in login) with their identity.
pub(super) fn logged_in(app: &App) -> Vec<Arc<ClientEntry>> {
    app.clients
        .list()
        .into_iter()
        .filter(|e| e.state() != ClientState::Login && e.identity().is_some())
        .collect()
}

/// Database names to list: configured ones, databases with pools (auto-created) and the
/// console, sorted by name as PgBouncer keeps its list.
fn database_names(app: &App, config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.databases.iter().map(|d| d.name.clone()).collect();
    names.extend(app.pools.iter().map(|p| p.key.database.clone()));
    names.push("pgbouncer".to_owned());
    names.sort();
    names.dedup();
    names
}

/// SHOW DATABASES.
pub fn databases(app: &App) -> ResultSet {
    let config = app.config();
    let mut rs = ResultSet::new(
        "ssissiiiissiiiiii",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
        ],
    );
    let clients = logged_in(app);
    for name in database_names(app, &config) {
        let n_clients = clients
            .iter()
            .filter(|c| c.identity().is_some_and(|i| i.database == name))
            .count();
        if is_console(&name) {
            rs.push(console_database_row(&config, n_clients));
            continue;
        }
        let Some(entry) = config.database(&name) else {
            continue;
        };
        rs.push(database_row(app, &config, &entry, n_clients));
    }
    rs
}

fn console_database_row(config: &Config, n_clients: usize) -> Vec<Value> {
    vec![
        "pgbouncer".into(),
        Value::Null,
        config.settings.listen_port.into(),
        "pgbouncer".into(),
        "pgbouncer".into(),
        2i64.into(),
        0i64.into(),
        0i64.into(),
        0i64.into(),
        "statement".into(),
        Value::Null,
        0i64.into(),
        0i64.into(),
        config.settings.max_db_client_connections.into(),
        n_clients.into(),
        0i64.into(),
        0i64.into(),
    ]
}

fn database_row(app: &App, config: &Config, e: &DatabaseEntry, n_clients: usize) -> Vec<Value> {
    let user_entry = e.user.as_deref().and_then(|u| config.user(u));
    let servers: usize = app
        .pools
        .iter()
        .filter(|p| p.key.database == e.name)
        .map(|p| p.stats.active.load(Ordering::Relaxed) + p.idle_count())
        .sum();
    let multi_host = e.hosts.len() > 1;
    let mode = e.pool_mode.map(|m| m.as_str().to_owned());
    vec![
        e.name.clone().into(),
        (!e.hosts.is_empty()).then(|| e.hosts.join(",")).into(),
        e.port.into(),
        e.server_dbname().to_owned().into(),
        e.user.clone().into(),
        config.effective_pool_size(e, user_entry).into(),
        config.effective_min_pool_size(e).into(),
        config.effective_reserve_pool_size(e, user_entry).into(),
        config.effective_server_lifetime(e).as_secs().into(),
        mode.into(),
        multi_host
            .then(|| e.load_balance_hosts.as_str().to_owned())
            .into(),
        config.effective_max_db_connections(e).into(),
        servers.into(),
        config.effective_max_db_client_connections(e).into(),
        n_clients.into(),
        app.control.is_paused(&e.name).into(),
        app.control.is_disabled(&e.name).into(),
    ]
}

/// SHOW POOLS (the console's own pool first in name order, as PgBouncer lists it).
pub fn pools(app: &App) -> ResultSet {
    let config = app.config();
    let mut rs = ResultSet::new(
        "ssiiiiiiiiiiiiiss",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts",
        ],
    );
    let clients = logged_in(app);
    let console = clients
        .iter()
        .filter(|c| c.identity().is_some_and(|i| is_console(&i.database)))
        .count();
    let mut rows: Vec<(String, String, Vec<Value>)> = sorted_pools(app)
        .iter()
        .map(|p| {
            let row = pool_row(app, &config, p, &clients);
            (p.key.database.clone(), p.key.user.clone(), row)
        })
        .collect();
    let mut console_row = vec!["pgbouncer".into(), "pgbouncer".into(), console.into()];
    console_row.extend((0..12).map(|_| Value::Int(0)));
    console_row.extend(["statement".into(), Value::Null]);
    rows.push(("pgbouncer".into(), "pgbouncer".into(), console_row));
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rs.rows = rows.into_iter().map(|(_, _, r)| r).collect();
    rs
}

/// Pools sorted by (database, user).
pub fn sorted_pools(app: &App) -> Vec<Arc<Pool>> {
    let mut v: Vec<Arc<Pool>> = app.pools.iter().map(|p| p.clone()).collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn pool_row(app: &App, config: &Config, p: &Pool, clients: &[Arc<ClientEntry>]) -> Vec<Value> {
    let mine = |c: &&Arc<ClientEntry>| {
        c.identity().is_some_and(|i| {
            i.database == p.key.database && pool_user(config, &i.database, &i.user) == p.key.user
        })
    };
    let cl_active = clients
        .iter()
        .filter(mine)
        .filter(|c| c.state() != ClientState::Waiting)
        .count();
    let check_delay = p.settings.server_check_delay;
    let checks = p.settings.server_check_query.is_some();
    let (mut idle, mut used) = (0usize, 0usize);
    for (_, last_used, _) in p.idle_servers() {
        if checks && last_used.elapsed() >= check_delay {
            used += 1;
        } else {
            idle += 1;
        }
    }
    let wait = p.stats.max_wait();
    let mode = app.pool_mode_for(&p.key.database, &p.key.user);
    let hosts = p.target().hosts.len();
    let lb = config
        .database(&p.key.database)
        .filter(|_| hosts > 1)
        .map(|e| e.load_balance_hosts.as_str().to_owned());
    vec![
        p.key.database.clone().into(),
        p.key.user.clone().into(),
        cl_active.into(),
        p.stats.waiting.load(Ordering::Relaxed).into(),
        0i64.into(),
        0i64.into(),
        p.stats.active.load(Ordering::Relaxed).into(),
        0i64.into(),
        0i64.into(),
        idle.into(),
        used.into(),
        0i64.into(),
        p.stats.logging_in.load(Ordering::Relaxed).into(),
        wait.as_secs().into(),
        wait.subsec_micros().into(),
        mode.as_str().into(),
        lb.into(),
    ]
}

/// SHOW LISTS (key/value).
pub fn lists(app: &App) -> ResultSet {
    let config = app.config();
    let mut rs = ResultSet::new("si", &["list", "items"]);
    let clients = app.clients.list();
    let login = clients
        .iter()
        .filter(|c| c.state() == ClientState::Login)
        .count();
    let servers: usize = app
        .pools
        .iter()
        .map(|p| p.stats.active.load(Ordering::Relaxed) + p.idle_count())
        .sum();
    let items: [(&str, usize); 14] = [
        ("databases", database_names(app, &config).len()),
        ("users", user_names(app, &config).len()),
        ("peers", app.fleet.peers().len()),
        ("pools", app.pools.len() + 1),
        ("peer_pools", app.fleet.peers().len()),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", login),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (k, v) in items {
        rs.push(vec![k.into(), v.into()]);
    }
    rs
}

fn user_names(app: &App, config: &Config) -> Vec<String> {
    let mut names = app.user_names();
    names.extend(config.users.iter().map(|u| u.name.clone()));
    names.extend(app.pools.iter().map(|p| p.key.user.clone()));
    names.sort();
    names.dedup();
    names
}

/// SHOW USERS.
pub fn users(app: &App) -> ResultSet {
    let config = app.config();
    let mut rs = ResultSet::new(
        "ssssiiii",
        &[
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections",
        ],
    );
    let clients = logged_in(app);
    for name in user_names(app, &config) {
        let entry = config.user(&name);
        let servers: usize = app
            .pools
            .iter()
            .filter(|p| p.key.user == name)
            .map(|p| p.stats.active.load(Ordering::Relaxed) + p.idle_count())
            .sum();
        let n_clients = clients
            .iter()
            .filter(|c| c.identity().is_some_and(|i| i.user == name))
            .count();
        let size = |v: Option<u32>| v.map(|n| format!("{n:9}")).unwrap_or_default();
        rs.push(vec![
            name.clone().into(),
            size(entry.and_then(|e| e.pool_size)).into(),
            size(entry.and_then(|e| e.reserve_pool_size)).into(),
            entry
                .and_then(|e| e.pool_mode)
                .map(|m| m.as_str().to_owned())
                .into(),
            config.effective_max_user_connections(entry).into(),
            servers.into(),
            config.effective_max_user_client_connections(entry).into(),
            n_clients.into(),
        ]);
    }
    rs
}

/// SHOW STATE.
pub fn state(app: &App) -> ResultSet {
    let mut rs = ResultSet::new("ss", &["key", "value"]);
    let paused = app.control.is_paused_all();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    rs.push(vec!["active".into(), yes_no(!paused).into()]);
    rs.push(vec!["paused".into(), yes_no(paused).into()]);
    rs.push(vec!["suspended".into(), "no".into()]);
    rs
}

/// SHOW DNS_HOSTS: pgfunnel resolves at connect time without a cache, so no rows.
pub fn dns_hosts() -> ResultSet {
    ResultSet::new("sqs", &["hostname", "ttl", "addrs"])
}

/// SHOW DNS_ZONES: no zone checks, so no rows.
pub fn dns_zones() -> ResultSet {
    ResultSet::new("sqi", &["zonename", "serial", "count"])
}
