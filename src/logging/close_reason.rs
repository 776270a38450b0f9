//! Why a client or server connection closed, worded as PgBouncer words it, and the log
//! lines operators grep for (`closing because: <reason> (age=<n>s)`, `new connection to
//! server (from <addr>)`, ...). Every place that ends a connection names one of these
//! reasons, so existing PgBouncer log alerts keep matching. The text format carries the
//! phrase in the message; the JSON format has the same message plus `reason` and `age`
//! fields with the same strings.

use std::borrow::Cow;
use std::time::Duration;

use tracing::info;

/// Why a connection is closed. [`CloseReason::text`] is PgBouncer's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent Terminate.
    ClientCloseRequest,
    /// The client's socket closed without Terminate.
    ClientUnexpectedEof,
    /// The client asked for a database that is not configured.
    NoSuchDatabase(String),
    /// Password, SCRAM or md5 authentication failed.
    PasswordAuthFailed,
    /// Certificate authentication failed.
    CertAuthFailed,
    /// HBA rejected the connection (or another non-password refusal).
    LoginRejected,
    /// A server connection's login failed (its words are logged separately).
    LoginFailed,
    /// A client's server could not be logged in to.
    ServerLoginFailed,
    /// A client limit (`max_client_conn`, `max_db_client_connections`, ...) was hit;
    /// carries the limit's name.
    ConnectionsExceeded(&'static str),
    /// No server became free within query_wait_timeout.
    QueryWaitTimeout,
    /// query_timeout passed.
    QueryTimeout,
    /// client_idle_timeout passed.
    ClientIdleTimeout,
    /// client_login_timeout passed.
    ClientLoginTimeout,
    /// idle_transaction_timeout passed (server side: the server is closed with it).
    IdleTransactionTimeout,
    /// transaction_timeout passed.
    TransactionTimeout,
    /// pgfunnel is shutting down.
    ShuttingDown,
    /// KILL / KILL_CLIENT from the console.
    AdminKill,
    /// The client broke the protocol.
    BadPacket,
    /// Opening the TCP or Unix connection to the server failed.
    ConnectFailed,
    /// server_connect_timeout passed during connect or login.
    ConnectTimeout,
    /// The server's host name did not resolve.
    DnsLookupFailed,
    /// The server connection was idle longer than server_idle_timeout.
    ServerIdleTimeout,
    /// The server connection is older than server_lifetime.
    ServerLifetimeOver,
    /// RECONNECT, or a server made before a change that needs new connections.
    ObsoleteConnection,
    /// The database's connection settings changed (RELOAD).
    DatabaseConfigChanged,
    /// An idle server closed to make room under a shared limit.
    Evicted,
    /// The server closed its end (or the socket broke).
    ServerConnectionClosed,
    /// server_check_query failed.
    TestQueryFailed,
    /// A server given back in a state that cannot be reused.
    UncleanServer,
    /// The server's connection pool was dropped (pool_idle_timeout).
    PoolIdleTimeout,
    /// A replication client's dedicated server, closed when the client left.
    ReplicationClientClosed,
    /// Any other reason, worded by the caller.
    Other(Cow<'static, str>),
}

impl CloseReason {
    /// PgBouncer's wording of the reason.
    pub fn text(&self) -> Cow<'static, str> {
        use CloseReason::*;
        Cow::Borrowed(match self {
            ClientCloseRequest => "client close request",
            ClientUnexpectedEof => "client unexpected eof",
            NoSuchDatabase(db) => return Cow::Owned(format!("no such database: {db}")),
            PasswordAuthFailed => "password authentication failed",
            CertAuthFailed => "certificate authentication failed",
            LoginRejected => "login rejected",
            LoginFailed => "login failed",
            ServerLoginFailed => "server login failed",
            ConnectionsExceeded(limit) => {
                return Cow::Owned(format!("client connections exceeded ({limit})"))
            }
            QueryWaitTimeout => "query_wait_timeout",
            QueryTimeout => "query_timeout",
            ClientIdleTimeout => "client_idle_timeout",
            ClientLoginTimeout => "client_login_timeout",
            IdleTransactionTimeout => "idle transaction timeout",
            TransactionTimeout => "transaction timeout",
            ShuttingDown => "server shutting down",
            AdminKill => "admin forced disconnect",
            BadPacket => "bad packet",
            ConnectFailed => "connect failed",
            ConnectTimeout => "connect timeout",
            DnsLookupFailed => "server DNS lookup failed",
            ServerIdleTimeout => "server idle timeout",
            ServerLifetimeOver => "server lifetime over",
            ObsoleteConnection => "obsolete connection",
            DatabaseConfigChanged => "database configuration changed",
            Evicted => "evicted",
            ServerConnectionClosed => "server connection closed",
            TestQueryFailed => "test query failed",
            UncleanServer => "unclean server",
            PoolIdleTimeout => "pool idle timeout",
            ReplicationClientClosed => "replication client was closed",
            Other(text) => return text.clone(),
        })
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// PgBouncer's `closing because: <reason> (age=<n>s)`, age in whole seconds.
pub fn closing_line(reason: &CloseReason, age: Duration) -> String {
    format!("closing because: {reason} (age={}s)", age.as_secs())
}

/// Logs a client's close (log_disconnections) in the client's span.
pub fn log_client_close(span: &tracing::Span, reason: &CloseReason, age: Duration) {
    let line = closing_line(reason, age);
    let reason: &str = &reason.text();
    info!(parent: span, reason, age = age.as_secs(), "{line}");
}

/// Logs a client's close when dropped, so a client whose task is aborted (KILL,
/// KILL_CLIENT, shutdown) is logged too: the reason recorded on its registry entry, else
/// `server shutting down` or `admin forced disconnect` for a killed client, else `client
/// close request`. Nothing is logged for a connection that never sent a startup packet, or
/// with log_disconnections off.
pub struct ClientCloseLog {
    /// The app (its config says whether to log).
    pub app: std::sync::Arc<crate::app::App>,
    entry: std::sync::Arc<crate::client::registry::ClientEntry>,
    /// The client's span.
    pub span: tracing::Span,
}

impl ClientCloseLog {
    /// A guard for the client of `entry`.
    pub fn new(
        app: std::sync::Arc<crate::app::App>,
        entry: std::sync::Arc<crate::client::registry::ClientEntry>,
        span: tracing::Span,
    ) -> ClientCloseLog {
        ClientCloseLog { app, entry, span }
    }
}

impl Drop for ClientCloseLog {
    fn drop(&mut self) {
        if self.entry.identity().is_none() || !self.app.config().settings.log_disconnections {
            return;
        }
        let reason = self.entry.close_reason().unwrap_or_else(|| {
            if !self.entry.is_killed() {
                CloseReason::ClientCloseRequest
            } else if self.app.shutdown.is_cancelled() {
                CloseReason::ShuttingDown
            } else {
                CloseReason::AdminKill
            }
        });
        let age = self.entry.connect_time.elapsed().unwrap_or_default();
        log_client_close(&self.span, &reason, age);
    }
}

/// Records why pgfunnel ends a client (first reason wins), for [`ClientCloseLog`].
pub fn note_close(
    entry: &Option<std::sync::Arc<crate::client::registry::ClientEntry>>,
    reason: CloseReason,
) {
    if let Some(e) = entry {
        e.set_close_reason(reason);
    }
}

/// The close reason of a refused login.
pub fn for_denied(denied: &crate::client::access::Denied) -> CloseReason {
    use crate::client::access::Denied;
    match denied {
        Denied::Password(_) => CloseReason::PasswordAuthFailed,
        Denied::Certificate(_) => CloseReason::CertAuthFailed,
        Denied::Protocol(e) => for_broken_login(e),
        _ => CloseReason::LoginRejected,
    }
}

/// The close reason of a login exchange that broke off: a client whose socket closed or
/// failed (it went away while asked for its password) is PgBouncer's `client unexpected
/// eof`; a client that sent something wrong is a `bad packet`.
pub fn for_broken_login(e: &crate::client::login::LoginError) -> CloseReason {
    match e {
        crate::client::login::LoginError::Io(_) => CloseReason::ClientUnexpectedEof,
        _ => CloseReason::BadPacket,
    }
}

/// Logs a server connection's close (log_disconnections); `label` names the server
/// (`db/user@addr:port`, as PgBouncer's `S-` prefix does).
pub fn log_server_close(id: u64, label: &str, reason: &CloseReason, age: Duration) {
    let line = closing_line(reason, age);
    let reason: &str = &reason.text();
    info!(server = id, label, reason, age = age.as_secs(), "{line}");
}

/// PgBouncer's `new connection to server (from <local addr>)` (log_connections); Unix
/// sockets have no local address and log `new connection to server`.
pub fn log_server_open(id: u64, label: &str, local: Option<std::net::SocketAddr>) {
    match local {
        Some(addr) => info!(server = id, label, "new connection to server (from {addr})"),
        None => info!(server = id, label, "new connection to server"),
    }
}

/// Logs a client's failed TLS handshake as PgBouncer does (`TLS handshake error: …`); a
/// refused client certificate reads `certificate verify failed`, OpenSSL's words, which
/// alerts grep for. Other failures (a client that went away) stay at debug level.
pub fn log_client_tls_failure(error: &std::io::Error) {
    let rustls_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => {
            tracing::warn!(error = ?c, "TLS handshake error: certificate verify failed")
        }
        Some(rustls::Error::NoCertificatesPresented) => tracing::warn!(
            "TLS handshake error: certificate verify failed: no client certificate presented"
        ),
        _ => tracing::debug!(error = %error, "client TLS handshake failed"),
    }
}

/// PgBouncer's warning when a waiting client is given a reserve_pool slot.
pub fn log_reserve_taken(database: &str, user: &str) {
    tracing::warn!(db = database, user, "taking connection from reserve_pool");
}

/// PgBouncer's line for a database made from the `*` entry.
pub fn log_auto_database(name: &str) {
    info!(db = name, "registered new auto-database: {name}");
}

/// PgBouncer's line when pool_idle_timeout drops an unused pool.
pub fn log_idle_pool_dropped(database: &str, user: &str, age: Duration) {
    let age = age.as_secs();
    info!(
        db = database,
        user,
        age,
        "cleaning up idle pool for user {user} on db {database} because: pool idle timeout (age={age}s)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_use_pgbouncers_words() {
        let cases = [
            (CloseReason::ClientCloseRequest, "client close request"),
            (
                CloseReason::NoSuchDatabase("x".into()),
                "no such database: x",
            ),
            (
                CloseReason::PasswordAuthFailed,
                "password authentication failed",
            ),
            (CloseReason::DnsLookupFailed, "server DNS lookup failed"),
            (CloseReason::Evicted, "evicted"),
            (
                CloseReason::DatabaseConfigChanged,
                "database configuration changed",
            ),
            (CloseReason::ObsoleteConnection, "obsolete connection"),
            (CloseReason::ShuttingDown, "server shutting down"),
            (CloseReason::LoginFailed, "login failed"),
            (CloseReason::ConnectTimeout, "connect timeout"),
            (CloseReason::ConnectFailed, "connect failed"),
            (
                CloseReason::ConnectionsExceeded("max_db_client_connections"),
                "client connections exceeded (max_db_client_connections)",
            ),
        ];
        for (reason, words) in cases {
            assert_eq!(reason.text(), words);
        }
    }

    /// What `log` writes through the text or JSON layer.
    fn captured(json: bool, log: impl FnOnce()) -> String {
        use tracing_subscriber::prelude::*;
        let sink = crate::logging::tests::Captured::default();
        let writer = sink.clone();
        let layer = super::super::layer(move || writer.clone(), json, false);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let bytes = crate::panic::lock(&sink.0).clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn server_close_lines_read_as_pgbouncers_in_text_and_carry_fields_in_json() {
        let log = || {
            log_server_close(
                7,
                "app/u@127.0.0.1:5432",
                &CloseReason::Evicted,
                Duration::from_secs(3),
            )
        };
        let text = captured(false, log);
        assert!(text.contains("closing because: evicted (age=3s)"), "{text}");
        let json = captured(true, log);
        let v: serde_json::Value = serde_json::from_str(json.trim()).expect("JSON");
        let flat = v.to_string();
        assert!(flat.contains("\"reason\":\"evicted\""), "{flat}");
        assert!(flat.contains("closing because: evicted (age=3s)"), "{flat}");
    }

    #[test]
    fn a_refused_client_certificate_is_logged_as_certificate_verify_failed() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let text = captured(false, || log_client_tls_failure(&e));
        assert!(
            text.contains("TLS handshake error: certificate verify failed"),
            "{text}"
        );
        let other = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!captured(false, || log_client_tls_failure(&other)).contains("verify"));
    }

    #[test]
    fn a_login_cut_off_by_the_client_is_an_unexpected_eof_not_a_bad_packet() {
        use crate::client::login::LoginError;
        let eof = LoginError::Io(std::io::ErrorKind::UnexpectedEof.into());
        assert_eq!(for_broken_login(&eof), CloseReason::ClientUnexpectedEof);
        assert_eq!(
            for_broken_login(&LoginError::Malformed),
            CloseReason::BadPacket
        );
        assert_eq!(
            for_broken_login(&LoginError::Protocol('Q')),
            CloseReason::BadPacket
        );
    }

    #[test]
    fn closing_line_has_the_reason_and_whole_seconds() {
        let line = closing_line(&CloseReason::Evicted, Duration::from_millis(2999));
        assert_eq!(line, "closing because: evicted (age=2s)");
    }
}
