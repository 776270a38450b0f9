//! What a new server connection gets besides its login, from PgBouncer's settings:
//! `connect_query` (run once after login, before any client; what it SETs becomes the
//! server's baseline), the TCP options of `tcp_keepalive`/`tcp_keep*`/`tcp_user_timeout`,
//! the `log_connections`/`log_disconnections` lines, and the pool's reuse order
//! (`server_round_robin`) and `pool_idle_timeout`.

use std::collections::HashMap;
use std::time::Duration;

use tracing::warn;

use super::conn::{ServerConnection, ServerError};
use crate::config::Settings;
use crate::net::sockopt::TcpTuning;
use crate::protocol::messages::{self, tag};

/// Per-pool options for new server connections (part of a `ServerTarget`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The database's `connect_query`.
    pub connect_query: Option<String>,
    /// Socket options for server sockets.
    pub tcp: TcpTuning,
    /// Log `new connection to server (from …)`.
    pub log_connections: bool,
    /// Log `closing because: …` for server connections.
    pub log_disconnections: bool,
    /// Reuse idle servers oldest-returned first instead of most recent first.
    pub round_robin: bool,
    /// Drop a pool with no clients and no servers after this long (0 = never).
    pub pool_idle_timeout: Duration,
}

impl ConnectOptions {
    /// The options of `settings` for a database with `connect_query`.
    pub fn new(settings: &Settings, connect_query: Option<String>) -> ConnectOptions {
        ConnectOptions {
            connect_query: connect_query.filter(|q| !q.trim().is_empty()),
            tcp: TcpTuning::from_settings(settings),
            log_connections: settings.log_connections,
            log_disconnections: settings.log_disconnections,
            round_robin: settings.server_round_robin,
            pool_idle_timeout: settings.pool_idle_timeout,
        }
    }
}

/// Lists the settings the session changed with SET, as name and value.
const SESSION_SETTINGS: &str =
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

/// Runs `connect_query` on a freshly logged-in server and records what it set as the
/// server's baseline. Its errors are logged and otherwise ignored, as in PgBouncer; a
/// connection that broke is reported.
pub async fn run_connect_query(
    conn: &mut ServerConnection,
    query: &str,
    db: &str,
) -> Result<(), ServerError> {
    match conn.run_internal(query).await {
        Ok(_) => {}
        Err(ServerError::Rejected(f)) => {
            warn!(db, code = %f.code, error = %f.message, "connect_query failed");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    conn.baseline = session_settings(conn).await?;
    Ok(())
}

/// The settings changed in this session (`pg_settings.source = 'session'`).
async fn session_settings(
    conn: &mut ServerConnection,
) -> Result<HashMap<String, String>, ServerError> {
    let rows = query_rows(conn, SESSION_SETTINGS).await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| {
            let value = r.pop()??;
            let name = r.pop()??;
            Some((name, value))
        })
        .collect())
}

/// Runs `sql` as a simple query and returns its rows as text columns (NULL = `None`).
async fn query_rows(
    conn: &mut ServerConnection,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, ServerError> {
    let mut out = bytes::BytesMut::new();
    messages::put_query(&mut out, sql);
    conn.stream.send(&out).await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let (t, body) = conn.read_message().await?;
        match t {
            b'D' => rows.push(data_row(&body).ok_or(ServerError::Protocol("bad DataRow"))?),
            tag::ERROR_RESPONSE => error = Some(messages::parse_error_fields(&body)),
            tag::PARAMETER_STATUS => conn.record_parameter(&body),
            tag::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(ServerError::Rejected(e)),
        None => Ok(rows),
    }
}

/// A DataRow body's columns as text; `None` when it is malformed.
fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let columns = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut row = Vec::with_capacity(columns as usize);
    for _ in 0..columns {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = rest.get(..len as usize)?;
        rest = &rest[len as usize..];
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_read_text_and_null_and_refuse_short_bodies() {
        let body = [0, 2, 0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(data_row(&body), Some(vec![Some("hi".to_owned()), None]));
        assert_eq!(data_row(&body[..7]), None);
        assert_eq!(data_row(&[0]), None);
    }

    #[test]
    fn an_empty_connect_query_is_none() {
        let s = Settings::default();
        assert_eq!(
            ConnectOptions::new(&s, Some("  ".into())).connect_query,
            None
        );
        let q = ConnectOptions::new(&s, Some("SET x = 1".into())).connect_query;
        assert_eq!(q.as_deref(), Some("SET x = 1"));
    }
}
