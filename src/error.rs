//! The one client-facing error: every layer's failure that a client is told about becomes
//! a [`ClientError`] (its [`ErrorKind`], SQLSTATE, severity, text and hint), written to the
//! client by [`ClientError::put`] and counted under [`ErrorKind::label`]. The SQLSTATEs
//! pgfunnel chooses for its errors are all in [`ErrorKind::sqlstate`]; [`sqlstate`] names
//! the few others it writes (the code of its notices) or reacts to (codes servers send).
//! Any other code a client sees is one a server sent. Client-facing texts never carry
//! passwords or internal addresses.

use std::borrow::Cow;

use bytes::BytesMut;

use crate::protocol::messages::{self, Severity};

/// The category of a failure, as counted in metrics and reported to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The peer broke the wire protocol (08P01).
    Protocol,
    /// Client authentication failed: wrong password or proof (28P01).
    Auth,
    /// The client may not connect: no user name, no matching rule, TLS required (28000).
    NotAuthorized,
    /// A connection limit was reached (53300).
    TooManyClients,
    /// No server became free within query_wait_timeout (08P01, as PgBouncer).
    PoolTimeout,
    /// A server could not be reached or logged into (08006 unless the server sent its own).
    ServerUnavailable,
    /// A server connection broke while in use (08006).
    ServerGone,
    /// The requested database is not configured (3D000).
    UnknownDatabase,
    /// The database is disabled (DISABLE) and refuses new clients (08P01, as PgBouncer).
    Disabled,
    /// A client idled past client_idle_timeout: pgfunnel disconnects it (08P01, the code
    /// PgBouncer uses for the disconnects it initiates).
    Timeout,
    /// idle_transaction_timeout ended the client's transaction: pgfunnel disconnects it
    /// (08P01, as PgBouncer).
    IdleTransactionTimeout,
    /// transaction_timeout ended the client's transaction: pgfunnel disconnects it (08P01,
    /// as PgBouncer).
    TransactionTimeout,
    /// `server_fast_close` closed the client's server, marked for closing by RECONNECT or a
    /// change of its connection settings, at the end of a transaction: pgfunnel disconnects
    /// the client (08P01, as PgBouncer).
    ServerRetired,
    /// A startup parameter has a value Postgres refuses, e.g. `replication=maybe` (22023,
    /// invalid_parameter_value, as Postgres).
    InvalidParameter,
    /// The client did not read its notifications and some were lost (53200).
    QueueFull,
    /// pgfunnel is shutting down, or an operator ended the client (57P01).
    Shutdown,
    /// A message is larger than pgfunnel handles whole (54000, program_limit_exceeded).
    TooLarge,
    /// A prepared statement of that name already exists (42P05, as Postgres).
    DuplicateStatement,
    /// No prepared statement of that name exists (26000, as Postgres).
    UnknownStatement,
}

impl ErrorKind {
    /// The SQLSTATE sent to a client for this kind.
    pub const fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "08P01",
            ErrorKind::Auth => "28P01",
            ErrorKind::NotAuthorized => "28000",
            ErrorKind::TooManyClients => "53300",
            ErrorKind::PoolTimeout => "08P01",
            ErrorKind::ServerUnavailable => "08006",
            ErrorKind::ServerGone => "08006",
            ErrorKind::UnknownDatabase => "3D000",
            ErrorKind::Disabled => "08P01",
            ErrorKind::Timeout => "08P01",
            ErrorKind::IdleTransactionTimeout => "08P01",
            ErrorKind::TransactionTimeout => "08P01",
            ErrorKind::ServerRetired => "08P01",
            ErrorKind::InvalidParameter => "22023",
            ErrorKind::QueueFull => "53200",
            ErrorKind::Shutdown => "57P01",
            ErrorKind::TooLarge => "54000",
            ErrorKind::DuplicateStatement => "42P05",
            ErrorKind::UnknownStatement => "26000",
        }
    }

    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::NotAuthorized => "not_authorized",
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::ServerUnavailable => "server_unavailable",
            ErrorKind::ServerGone => "server_gone",
            ErrorKind::UnknownDatabase => "unknown_database",
            ErrorKind::Disabled => "disabled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::IdleTransactionTimeout => "idle_transaction_timeout",
            ErrorKind::TransactionTimeout => "transaction_timeout",
            ErrorKind::ServerRetired => "server_retired",
            ErrorKind::InvalidParameter => "invalid_parameter",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::DuplicateStatement => "duplicate_statement",
            ErrorKind::UnknownStatement => "unknown_statement",
        }
    }
}

/// SQLSTATEs pgfunnel uses other than as the code of its own errors: the code of the
/// notices it sends, and server codes it reacts to.
pub mod sqlstate {
    /// successful_completion: the code of a NOTICE.
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    /// invalid_authorization_specification: a server refused the login (e.g. no
    /// pg_hba.conf entry for TLS or plain).
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// admin_shutdown: the server is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// crash_shutdown: the server is restarting after a crash.
    pub const CRASH_SHUTDOWN: &str = "57P02";
    /// cannot_connect_now: the server is starting up or in recovery.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

/// An error a client is told about: what kind it is, the SQLSTATE it sees (the kind's, or
/// the one a server sent), whether the connection closes after it, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The category (metrics label, default SQLSTATE).
    pub kind: ErrorKind,
    /// The SQLSTATE the client sees.
    pub code: Cow<'static, str>,
    /// `Fatal` closes the connection after the message; `Error` fails one request.
    pub severity: Severity,
    /// The primary message.
    pub message: Cow<'static, str>,
    /// An optional hint.
    pub hint: Option<&'static str>,
}

impl ClientError {
    /// A FATAL error of `kind` with the kind's SQLSTATE: the connection closes after it.
    pub fn fatal(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ClientError {
            kind,
            code: Cow::Borrowed(kind.sqlstate()),
            severity: Severity::Fatal,
            message: message.into(),
            hint: None,
        }
    }

    /// An ERROR of `kind`: the request fails, the connection stays.
    pub fn error(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ClientError {
            severity: Severity::Error,
            ..ClientError::fatal(kind, message)
        }
    }

    /// The same error with the SQLSTATE a server sent instead of the kind's.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = code.into();
        self
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// True when the connection closes after this error.
    pub fn closes_connection(&self) -> bool {
        self.severity == Severity::Fatal
    }

    /// Appends the ErrorResponse for this error.
    pub fn put(&self, buf: &mut BytesMut) {
        messages::put_error(buf, self.severity, &self.code, &self.message, self.hint);
    }

    /// The ErrorResponse for this error, as bytes to write.
    pub fn to_message(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.put(&mut buf);
        buf
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.kind.label(), self.message)
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_uses_the_kinds_sqlstate_and_closes() {
        let e = ClientError::fatal(
            ErrorKind::IdleTransactionTimeout,
            "idle transaction timeout",
        );
        assert_eq!(e.code, "08P01");
        assert!(e.closes_connection());
    }

    #[test]
    fn error_keeps_the_connection_and_a_server_code_wins() {
        let e = ClientError::error(ErrorKind::ServerUnavailable, "x").with_code("57P03".to_owned());
        assert_eq!(e.code, "57P03");
        assert!(!e.closes_connection());
        assert_eq!(e.kind.label(), "server_unavailable");
    }

    #[test]
    fn client_idle_timeout_is_a_disconnect_pgfunnel_initiates() {
        assert_eq!(ErrorKind::Timeout.sqlstate(), "08P01");
    }

    #[test]
    fn put_writes_an_error_response_with_code_and_text() {
        let buf = ClientError::fatal(ErrorKind::QueueFull, "lost").to_message();
        assert_eq!(buf[0], b'E');
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("53200") && text.contains("FATAL") && text.contains("lost"));
    }
}
