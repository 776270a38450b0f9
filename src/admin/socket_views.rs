//! SHOW CLIENTS and SHOW SERVERS: one row per client or server connection with PgBouncer
//! 1.25's socket columns (`admin.c` SKF_STD).

use std::time::Instant;

use super::result::{format_time, ResultSet, Value};
use super::views::{logged_in, sorted_pools};
use crate::app::App;
use crate::client::registry::ClientState;
use crate::pool::Pool;
use crate::server::ServerInfo;

const SOCKET_LETTERS: &str = "ssssssisiTTiiississii";
const SOCKET_COLUMNS: [&str; 21] = [
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
    ]
}
