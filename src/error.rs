//! Error kinds shared by every module: each kind is a metric label and decides the
//! SQLSTATE a client sees. Client-facing texts never carry passwords or internal addresses.

/// The category of a failure, as counted in metrics and reported to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The peer broke the wire protocol (08P01).
    Protocol,
    /// Client authentication failed (28P01).
    Auth,
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
    /// A client idled or stalled past a timeout (08P01 / 57014).
    Timeout,
    /// pgfunnel is shutting down (57P01).
    Shutdown,
}

impl ErrorKind {
    /// The SQLSTATE sent to a client for this kind.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "08P01",
            ErrorKind::Auth => "28P01",
            ErrorKind::TooManyClients => "53300",
            ErrorKind::PoolTimeout => "08P01",
            ErrorKind::ServerUnavailable => "08006",
            ErrorKind::ServerGone => "08006",
            ErrorKind::UnknownDatabase => "3D000",
            ErrorKind::Timeout => "08P01",
            ErrorKind::Shutdown => "57P01",
        }
    }

    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::ServerUnavailable => "server_unavailable",
            ErrorKind::ServerGone => "server_gone",
            ErrorKind::UnknownDatabase => "unknown_database",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Shutdown => "shutdown",
        }
    }
}
