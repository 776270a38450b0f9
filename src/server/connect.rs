//! Opening a server connection: every address of every host in turn (DNS answers cached),
//! TLS per `server_tls_sslmode` with libpq's allow/prefer fallbacks, StartupMessage, the
//! authentication exchange (`login`) and the login replies, all under one deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tracing::warn;

use super::conn::{BackendKey, CancelAddr, ServerConnection, ServerError, ServerInfo};
use super::credential::ServerCredential;
use super::login::authenticate;
use super::options::{run_connect_query, ConnectOptions};
use super::tls::{self, TlsAttempt};
use crate::config::SslMode;
use crate::logging::close_reason::{closing_line, log_server_open, CloseReason};
use crate::net::dns::DnsCache;
use crate::net::tls::ServerSideTls;
use crate::net::{Stream, TlsConfigs};
use crate::protocol::messages::{self, tag};

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// Host names or addresses; a value starting with `/` is a Unix socket directory.
    pub hosts: Vec<String>,
    /// TCP port (also names the Unix socket file).
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// Role name on the server.
    pub user: String,
    /// Credential for the server login.
    pub credential: ServerCredential,
    /// Startup parameters sent with every new server connection (besides user/database).
    pub startup_params: Vec<(String, String)>,
    /// TLS toward servers (shared with the app, swapped on reload).
    pub tls: Arc<TlsConfigs>,
    /// Start TLS without SSLRequest (libpq's `sslnegotiation=direct`).
    pub direct_tls: bool,
    /// Resolved host names (shared with the app).
    pub dns: Arc<DnsCache>,
    /// connect_query, socket options, connection logging and pool reuse options.
    pub options: ConnectOptions,
}

impl PartialEq for ServerTarget {
    /// Same destination and login (RELOAD reconnects a pool only when this changes). TLS
    /// and DNS state are shared handles, not part of the identity.
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts
            && self.port == other.port
            && self.dbname == other.dbname
            && self.user == other.user
            && self.startup_params == other.startup_params
            && self.direct_tls == other.direct_tls
            && self.credential.same_login(&other.credential)
            && self.options.connect_query == other.options.connect_query
    }
}

/// Connects and logs in within `timeout` (server_connect_timeout), trying each host in turn.
pub async fn connect(
    target: &ServerTarget,
    timeout: Duration,
) -> Result<ServerConnection, ServerError> {
    match tokio::time::timeout(timeout, connect_inner(target)).await {
        Ok(r) => r,
        Err(_) => {
            log_failed_open(target, &CloseReason::ConnectTimeout, None);
            Err(ServerError::Timeout)
        }
    }
}

/// PgBouncer's `closing because: connect failed` (or DNS, timeout) for a server
/// connection that never logged in (log_disconnections).
fn log_failed_open(
    target: &ServerTarget,
    reason: &CloseReason,
    error: Option<&dyn std::fmt::Display>,
) {
    if !target.options.log_disconnections {
        return;
    }
    let label = format!("{}/{}", target.dbname, target.user);
    let line = closing_line(reason, Duration::ZERO);
    let reason: &str = &reason.text();
    match error {
        Some(e) => warn!(label, reason, error = %e, "{line}"),
        None => warn!(label, reason, "{line}"),
    }
}

async fn connect_inner(target: &ServerTarget) -> Result<ServerConnection, ServerError> {
    let tls = target.tls.server();
    let mut last_err = None;
    for host in &target.hosts {
        if host.starts_with('/') {
            // TLS over a Unix socket makes no sense and Postgres refuses it.
            let path = std::path::Path::new(host).join(format!(".s.PGSQL.{}", target.port));
            match UnixStream::connect(&path).await {
                Ok(s) => {
                    return login(Stream::Unix(s), CancelAddr::Unix(path.into()), target).await
                }
                Err(e) => {
                    log_failed_open(target, &CloseReason::ConnectFailed, Some(&e));
                    last_err = Some(e)
                }
            }
            continue;
        }
        let addrs = match target.dns.resolve(host, target.port).await {
            Ok(a) => a,
            Err(e) => {
                log_failed_open(target, &CloseReason::DnsLookupFailed, Some(&e));
                last_err = Some(e);
                continue;
            }
        };
        for &addr in addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return connect_tcp(tcp, addr, host, target, &tls).await,
                Err(e) => {
                    log_failed_open(target, &CloseReason::ConnectFailed, Some(&e));
                    last_err = Some(e)
                }
            }
        }
        target.dns.forget(host, target.port);
    }
    Err(match last_err {
        Some(e) => ServerError::Io(e),
        None => ServerError::Protocol("no server host configured"),
    })
}

/// TLS and login on a connected socket, with libpq's second attempts: `allow` retries with
/// TLS when the plaintext login was refused, `prefer` retries in plaintext when the TLS
/// handshake failed.
async fn connect_tcp(
    tcp: TcpStream,
    addr: SocketAddr,
    host: &str,
    target: &ServerTarget,
    tls: &ServerSideTls,
) -> Result<ServerConnection, ServerError> {
    let first = match tls.mode {
        SslMode::Disable | SslMode::Allow => TlsAttempt::Off,
        _ if target.direct_tls => TlsAttempt::Direct,
        SslMode::Prefer => TlsAttempt::IfOffered,
        _ => TlsAttempt::Required,
    };
    match (tls.mode, attempt(tcp, addr, host, target, tls, first).await) {
        (SslMode::Allow, Err(ServerError::Rejected(f)))
            if f.code == crate::error::sqlstate::INVALID_AUTHORIZATION =>
        {
            let tcp = TcpStream::connect(addr).await?;
            attempt(tcp, addr, host, target, tls, TlsAttempt::Required).await
        }
        (SslMode::Prefer, Err(ServerError::Tls(_))) => {
            let tcp = TcpStream::connect(addr).await?;
            attempt(tcp, addr, host, target, tls, TlsAttempt::Off).await
        }
        (_, result) => result,
    }
}

async fn attempt(
    tcp: TcpStream,
    addr: SocketAddr,
    host: &str,
    target: &ServerTarget,
    tls: &ServerSideTls,
    how: TlsAttempt,
) -> Result<ServerConnection, ServerError> {
    tcp.set_nodelay(true)?;
    target.options.tcp.apply(&tcp)?;
    let stream = tls::start(tcp, host, tls.connector.as_ref(), how).await?;
    login(stream, CancelAddr::Tcp(addr), target).await
}

async fn login(
    stream: Stream,
    cancel_addr: CancelAddr,
    target: &ServerTarget,
) -> Result<ServerConnection, ServerError> {
    let mut conn = new_connection(stream, cancel_addr);
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.dbname)];
    params.extend(
        target
            .startup_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    messages::put_startup(&mut out, &params);
    conn.stream.write_all(&out).await?;
    let label = server_label(target, &conn.cancel_addr);
    conn.close_log = target.options.log_disconnections.then(|| label.clone());
    let logged_in = finish_login(&mut conn, target).await;
    if logged_in.is_err() {
        conn.close_reason = Some(CloseReason::LoginFailed);
    }
    if let Err(e) = &logged_in {
        warn_login_failed(target, e);
    }
    logged_in?;
    conn.info = Arc::new(describe(&conn, target));
    if target.options.log_connections {
        log_server_open(conn.id, &label, local_addr(&conn.stream));
    }
    // A walsender takes replication commands, not connect_query's SQL.
    let replication = replication_kind(target) != "none";
    if let (Some(query), false) = (&target.options.connect_query, replication) {
        if let Err(e) = run_connect_query(&mut conn, query, &target.dbname).await {
            conn.close_reason = Some(CloseReason::Other("connect_query failed".into()));
            return Err(e);
        }
    }
    Ok(conn)
}

/// A connection on `stream` before its startup packet: no parameters, key or info yet.
fn new_connection(stream: Stream, cancel_addr: CancelAddr) -> ServerConnection {
    let now = Instant::now();
    ServerConnection {
        stream,
        buf: BytesMut::with_capacity(8192),
        params: HashMap::new(),
        applied: HashMap::new(),
        synced_fp: None,
        key: BackendKey::default(),
        cancel_addr,
        id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
        created: now,
        last_used: now,
        slots: Vec::new(),
        prepared: Default::default(),
        baseline: HashMap::new(),
        close_log: None,
        close_reason: None,
        info: Arc::new(ServerInfo {
            id: 0,
            addr: String::new(),
            port: 0,
            local_addr: String::new(),
            local_port: 0,
            connect_time: std::time::SystemTime::now(),
            pid: 0,
            created: now,
            replication: "none",
            on_loan: Default::default(),
        }),
    }
}

/// Logs a failed login: a server's refusal in its own words, as PgBouncer logs them
/// (`server login failed: FATAL password authentication failed for user "x"`; the log
/// escapes them), or the TLS failure.
fn warn_login_failed(target: &ServerTarget, e: &ServerError) {
    match e {
        ServerError::Rejected(f) => warn!(
            db = %target.dbname,
            user = %target.user,
            code = %f.code,
            "server login failed: {} {}",
            f.severity,
            f.message
        ),
        ServerError::Tls(io) => warn!(
            db = %target.dbname,
            user = %target.user,
            "{}",
            super::tls::failure_message(io)
        ),
        _ => {}
    }
}

/// `db/user@addr:port` (or `@socket path`), as PgBouncer's log prefix names a server.
fn server_label(target: &ServerTarget, addr: &CancelAddr) -> Arc<str> {
    let at = match addr {
        CancelAddr::Tcp(a) => a.to_string(),
        CancelAddr::Unix(p) => p.display().to_string(),
    };
    format!("{}/{}@{at}", target.dbname, target.user).into()
}

fn local_addr(stream: &Stream) -> Option<SocketAddr> {
    match stream {
        Stream::Tcp(s) => s.local_addr().ok(),
        _ => None,
    }
}

/// Authentication, then the login replies up to ReadyForQuery.
async fn finish_login(
    conn: &mut ServerConnection,
    target: &ServerTarget,
) -> Result<(), ServerError> {
    authenticate(conn, target).await?;
    loop {
        let (t, body) = conn.read_message().await?;
        match t {
            tag::PARAMETER_STATUS => conn.record_parameter(&body),
            tag::BACKEND_KEY_DATA if body.len() >= 8 => {
                conn.key = BackendKey {
                    pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    secret: bytes::Bytes::copy_from_slice(&body[4..]),
                };
            }
            tag::READY_FOR_QUERY => return Ok(()),
            tag::ERROR_RESPONSE => {
                return Err(ServerError::Rejected(messages::parse_error_fields(&body)))
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => return Err(ServerError::Protocol("unexpected message during login")),
        }
    }
}

/// The SHOW SERVERS identity of a freshly logged-in connection.
fn describe(conn: &ServerConnection, target: &ServerTarget) -> ServerInfo {
    let (addr, port) = match &conn.cancel_addr {
        CancelAddr::Tcp(a) => (a.ip().to_string(), a.port()),
        CancelAddr::Unix(p) => (p.display().to_string(), 0),
    };
    let local = local_addr(&conn.stream);
    ServerInfo {
        id: conn.id,
        addr,
        port,
        local_addr: local.map(|a| a.ip().to_string()).unwrap_or_default(),
        local_port: local.map(|a| a.port()).unwrap_or(0),
        connect_time: conn.info.connect_time,
        pid: conn.key.pid,
        created: conn.created,
        replication: replication_kind(target),
        on_loan: Default::default(),
    }
}

/// The SHOW SERVERS `replication` word for a connection opened with `target`.
fn replication_kind(target: &ServerTarget) -> &'static str {
    match target
        .startup_params
        .iter()
        .find(|(k, _)| k == "replication")
    {
        Some((_, v)) if v == "database" => "logical",
        Some(_) => "physical",
        None => "none",
    }
}
