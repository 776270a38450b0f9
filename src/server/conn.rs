//! One logged-in server connection and the internal queries pgfunnel runs on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;
use crate::protocol::messages::{self, tag, ErrorFields};

/// Largest message pgfunnel reads whole from a server outside the relay.
const MAX_INTERNAL_MESSAGE: usize = 16 << 20;

/// Failures talking to a server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The socket failed or closed.
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// Connect plus login did not finish within server_connect_timeout.
    #[error("server connect timed out")]
    Timeout,
    /// The server answered with an ErrorResponse (its SQLSTATE and message reach the client).
    #[error("server error {}: {}", .0.code, .0.message)]
    Rejected(ErrorFields),
    /// The server asked for an authentication method pgfunnel cannot perform with what it has.
    #[error("server login failed: {0}")]
    Auth(&'static str),
    /// The server answered `N` to SSLRequest but the sslmode requires TLS.
    #[error("server does not support TLS, but server_tls_sslmode requires it")]
    TlsRefused,
    /// The TLS handshake with the server failed (certificate check, protocol, ...).
    #[error("TLS handshake with server failed: {0}")]
    Tls(std::io::Error),
    /// The server sent something the protocol does not allow here.
    #[error("server protocol violation: {0}")]
    Protocol(&'static str),
}

/// Where a CancelRequest for this server must be sent.
#[derive(Debug, Clone)]
pub enum CancelAddr {
    /// TCP address.
    Tcp(SocketAddr),
    /// Unix socket path (shared: cloned at every link).
    Unix(std::sync::Arc<Path>),
}

/// The server's BackendKeyData.
#[derive(Debug, Clone, Default)]
pub struct BackendKey {
    /// Server process id.
    pub pid: i32,
    /// Secret (4 bytes in protocol 3.0). `Bytes`, so handing the key to the cancel slot
    /// at every link is a reference-count bump, not an allocation.
    pub secret: bytes::Bytes,
}

/// What SHOW SERVERS tells about a connection; fixed once the login finished (except
/// `on_loan`).
#[derive(Debug)]
pub struct ServerInfo {
    /// Same as [`ServerConnection::id`].
    pub id: u64,
    /// Server address (IP or Unix socket path).
    pub addr: String,
    /// Server port.
    pub port: u16,
    /// pgfunnel's end of the socket (empty for Unix sockets).
    pub local_addr: String,
    /// Local port (0 for Unix sockets).
    pub local_port: u16,
    /// Wall-clock time the connection was opened.
    pub connect_time: SystemTime,
    /// The server backend's process id (from BackendKeyData).
    pub pid: i32,
    /// Same as [`ServerConnection::created`].
    pub created: Instant,
    /// SHOW SERVERS `replication`: `none`, or `physical`/`logical` for a dedicated
    /// replication connection.
    pub replication: &'static str,
    /// True while a client holds the connection (kept by the pool's loan accounting).
    pub on_loan: std::sync::atomic::AtomicBool,
}

/// A logged-in server connection. Owned by exactly one pool slot or one client at a time.
#[derive(Debug)]
pub struct ServerConnection {
    /// The socket.
    pub stream: Stream,
    /// Bytes read from the server but not yet consumed.
    pub buf: BytesMut,
    /// ParameterStatus values as the server last reported them.
    pub params: HashMap<String, String>,
    /// Settings pgfunnel applied with set_config that the server does not report.
    pub applied: HashMap<String, String>,
    /// Fingerprint of the client parameters this connection was last brought in line with;
    /// `None` once its parameters may have changed.
    pub synced_fp: Option<u64>,
    /// The server's cancel key.
    pub key: BackendKey,
    /// Where to send cancels.
    pub cancel_addr: CancelAddr,
    /// Unique id (SHOW SERVERS, logs).
    pub id: u64,
    /// When the login finished.
    pub created: Instant,
    /// When the connection last went back to the pool.
    pub last_used: Instant,
    /// Slots of shared limits (max_db_connections, max_user_connections) this connection
    /// holds until it closes.
    pub slots: Vec<tokio::sync::OwnedSemaphorePermit>,
    /// Statements pgfunnel prepared on this connection (transaction/statement mode).
    pub prepared: crate::client::prepared::ServerStatements,
    /// Identity for SHOW SERVERS.
    pub info: Arc<ServerInfo>,
}

impl ServerConnection {
    /// Reads one whole message; returns its type and body. Bounded to 16 MiB.
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if !(4..=MAX_INTERNAL_MESSAGE as i32).contains(&len) {
                    return Err(ServerError::Protocol("invalid message length"));
                }
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    let mut msg = self.buf.split_to(total);
                    msg.advance(5);
                    return Ok((tag, msg));
                }
                self.buf.reserve(total - self.buf.len());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Runs `sql` as a simple query and discards its results, recording ParameterStatus
    /// changes. Returns the first ErrorResponse as `Rejected` once ReadyForQuery arrived,
    /// so the connection is in a known state either way (status byte returned on success).
    pub async fn run_internal(&mut self, sql: &str) -> Result<u8, ServerError> {
        let mut out = BytesMut::new();
        messages::put_query(&mut out, sql);
        self.stream.send(&out).await?;
        let mut first_error = None;
        loop {
            let (t, body) = self.read_message().await?;
            match t {
                tag::READY_FOR_QUERY => {
                    let status = body.first().copied().unwrap_or(b'I');
                    return match first_error {
                        Some(e) => Err(ServerError::Rejected(e)),
                        None => Ok(status),
                    };
                }
                tag::ERROR_RESPONSE if first_error.is_none() => {
                    first_error = Some(messages::parse_error_fields(&body));
                }
                tag::PARAMETER_STATUS => self.record_parameter(&body),
                tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    return Err(ServerError::Protocol("internal query started COPY"));
                }
                _ => {}
            }
        }
    }

    /// Records a ParameterStatus body in `params`.
    pub fn record_parameter(&mut self, body: &[u8]) {
        self.synced_fp = None;
        if let Some((k, v)) = messages::parse_parameter_status(body) {
            self.params.insert(k, v);
        }
    }

    /// Whether the connection is idle with nothing unread and its socket still open.
    pub fn is_usable(&mut self) -> bool {
        self.buf.is_empty() && self.stream.is_idle_and_open()
    }

    /// Sends Terminate and closes, ignoring errors (the peer may already be gone).
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        messages::put_terminate(&mut out);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            let _ = self.stream.send(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
