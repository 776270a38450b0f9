//! SHOW CLIENTS and SHOW SERVERS: one row per client or server connection with PgBouncer
//! 1.25's socket columns (`admin.c` SKF_STD); SHOW SOCKETS and ACTIVE_SOCKETS add the
//! buffer columns of SKF_DBG.

use std::time::Instant;

use super::result::{format_time, ResultSet, Value};
use super::views::{logged_in, sorted_pools};
use crate::app::App;
use crate::client::registry::ClientState;
use crate::pool::Pool;
use crate::server::ServerInfo;

const SOCKET_LETTERS: &str = "ssssssisiTTiiississiis";
/// PgBouncer's 21 columns, then pgfunnel's `transport` (tcp, unix, websocket).
const SOCKET_COLUMNS: [&str; 22] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
    "transport",
];

/// SHOW CLIENTS: logged-in clients (active, idle, waiting), by id.
pub fn clients(app: &App) -> ResultSet {
    let mut rs = ResultSet::new(SOCKET_LETTERS, &SOCKET_COLUMNS);
    for c in logged_in(app) {
        let Some(who) = c.identity() else { continue };
        let state = c.state();
        let wait = match state {
            ClientState::Waiting => c.request_time().elapsed().unwrap_or_default(),
            _ => std::time::Duration::ZERO,
        };
        rs.push(vec![
            "C".into(),
            who.user.clone().into(),
            who.database.clone().into(),
            c.replication().into(),
            state.as_str().into(),
            c.addr.clone().into(),
            c.port.into(),
            c.local_addr.clone().into(),
            c.local_port.into(),
            format_time(c.connect_time).into(),
            format_time(c.request_time()).into(),
            wait.as_secs().into(),
            wait.subsec_micros().into(),
            0i64.into(),
            format!("0x{:x}", c.id).into(),
            "".into(),
            0i64.into(),
            "".into(),
            who.application_name.clone().into(),
            0i64.into(),
            c.id.into(),
            c.transport().into(),
        ]);
    }
    rs
}

/// SHOW SERVERS: lent (active) then idle/used connections of every pool.
pub fn servers(app: &App) -> ResultSet {
    let mut rs = ResultSet::new(SOCKET_LETTERS, &SOCKET_COLUMNS);
    for p in sorted_pools(app) {
        for info in p.stats.on_loan() {
            let close = p.is_close_needed(info.created);
            rs.push(server_row(&p, &info, "active", info.connect_time, close));
        }
        let delay = p.settings.server_check_delay;
        for (info, last_used, close) in p.idle_servers() {
            let used = p.settings.server_check_query.is_some() && last_used.elapsed() >= delay;
            let since = std::time::SystemTime::now() - Instant::now().duration_since(last_used);
            let state = if used { "used" } else { "idle" };
            rs.push(server_row(&p, &info, state, since, close));
        }
    }
    rs
}

fn server_row(
    p: &Pool,
    info: &ServerInfo,
    state: &str,
    request: std::time::SystemTime,
    close_needed: bool,
) -> Vec<Value> {
    vec![
        "S".into(),
        p.key.user.clone().into(),
        p.key.database.clone().into(),
        info.replication.into(),
        state.into(),
        info.addr.clone().into(),
        info.port.into(),
        info.local_addr.clone().into(),
        info.local_port.into(),
        format_time(info.connect_time).into(),
        format_time(request).into(),
        0i64.into(),
        0i64.into(),
        close_needed.into(),
        format!("0x{:x}", info.id).into(),
        "".into(),
        info.pid.into(),
        "".into(),
        "".into(),
        0i64.into(),
        info.id.into(),
        if info.addr == "unix" || info.addr.starts_with('/') {
            "unix"
        } else {
            "tcp"
        }
        .into(),
    ]
}

/// The buffer columns SHOW SOCKETS adds (`admin.c` SKF_DBG). pgfunnel's buffers belong to
/// each connection's task and are not shared, so these are NULL rather than made up.
const BUFFER_COLUMNS: [&str; 7] = [
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

/// SHOW SOCKETS: every client and server connection (SHOW CLIENTS then SHOW SERVERS rows)
/// with the buffer columns, NULL.
pub fn sockets(app: &App) -> ResultSet {
    with_buffer_columns([clients(app), servers(app)], |_| true)
}

/// SHOW ACTIVE_SOCKETS: the SOCKETS rows of connections busy right now. PgBouncer lists
/// sockets with unsent or unparsed bytes; pgfunnel cannot see into its per-task buffers,
/// so it lists what is in flight instead: active and waiting clients, servers on loan.
pub fn active_sockets(app: &App) -> ResultSet {
    with_buffer_columns(
        [clients(app), servers(app)],
        |row| matches!(&row[4], Value::Text(s) if s == "active" || s == "waiting"),
    )
}

fn with_buffer_columns(parts: [ResultSet; 2], keep: impl Fn(&[Value]) -> bool) -> ResultSet {
    let mut names: Vec<&'static str> = SOCKET_COLUMNS.to_vec();
    names.extend(BUFFER_COLUMNS);
    let letters = format!("{SOCKET_LETTERS}{}", "i".repeat(BUFFER_COLUMNS.len()));
    let mut rs = ResultSet::new(&letters, &names);
    for part in parts {
        for mut row in part.rows.into_iter().filter(|r| keep(r)) {
            row.extend(std::iter::repeat_n(Value::Null, BUFFER_COLUMNS.len()));
            rs.push(row);
        }
    }
    rs
}

/// SHOW MEM: PgBouncer lists its slab caches (name, object size, used, free, total bytes).
/// pgfunnel has no slabs; it lists each kind of object with its size in memory (without
/// what it points to), how many are live, and the process's resident memory as `rss`
/// (size = page size, used = resident pages), which is the figure that matters.
pub fn mem(app: &App) -> ResultSet {
    use std::mem::size_of;
    let mut rs = ResultSet::new("siiii", &["name", "size", "used", "free", "memtotal"]);
    let config = app.config();
    let servers: usize = app
        .pools
        .iter()
        .map(|p| p.stats.active.load(std::sync::atomic::Ordering::Relaxed) + p.idle_count())
        .sum();
    let rows = [
        (
            "user_cache",
            size_of::<crate::config::UserEntry>(),
            config.users.len(),
        ),
        (
            "db_cache",
            size_of::<crate::config::DatabaseEntry>(),
            config.databases.len(),
        ),
        ("pool_cache", size_of::<Pool>(), app.pools.len()),
        ("server_cache", size_of::<ServerInfo>(), servers),
        (
            "client_cache",
            size_of::<crate::client::registry::ClientEntry>(),
            app.clients.len(),
        ),
    ];
    for (name, size, used) in rows {
        rs.push(vec![
            name.into(),
            size.into(),
            used.into(),
            0i64.into(),
            (size * used).into(),
        ]);
    }
    if let Some((page, pages)) = resident_pages() {
        rs.push(vec![
            "rss".into(),
            page.into(),
            pages.into(),
            0i64.into(),
            (page * pages).into(),
        ]);
    }
    rs
}

/// (page size, resident pages) of this process, from /proc/self/statm (Linux).
fn resident_pages() -> Option<(usize, usize)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some((usize::try_from(page).ok()?, pages))
}
