//! Everything on the client side of a connection, from the handshake to the last byte:
//! - before login: `handshake` (SSLRequest, TLS, CancelRequest, StartupMessage), `access`
//!   and `login` (method, secret, password exchange), `app_name` (application_name with
//!   the client's host);
//! - the session: `session` (authentication, admission, login replies; session mode's own
//!   server with its real pid in `backend_key`, a listening client's own NOTIFY),
//!   `server_wait` (waiting for a server, bounded by query_timeout and shutdown), `link`
//!   (the link cycle), `idle` (between links: notifications, LISTEN through the shared
//!   listener), `release` (the pure decision whether a server may be pooled again),
//!   `params` and `canonical` (parameters the client expects and the SQL that brings a
//!   server in line), `timeouts`; `replication` (replication clients' pass-through);
//! - the relay: `relay` (idle wait, observation, the I/O pump), `validate`, `tracker`,
//!   `statement` over `lexer` (and `words`), `rewrite` (prepared statements on shared
//!   servers, DEALLOCATE), `buffers`, `link_stats`;
//! - `registry` (SHOW CLIENTS, KILL) and `context`, the narrow view of the running
//!   pgfunnel a session needs (implemented by `app`, which this module does not import).
//!
//! Also the failures of the handshake reported to the client, and a client's identity
//! from its startup parameters.

pub mod access;
pub mod app_name;
pub mod backend_key;
pub mod buffers;
pub mod canonical;
pub mod context;
mod finish;
pub mod handshake;
mod idle;
pub mod lexer;
mod link;
pub mod link_stats;
pub mod login;
pub mod params;
pub mod registry;
pub mod relay;
pub mod release;
pub mod replication;
pub mod rewrite;
pub mod server_wait;
pub mod session;
pub mod statement;
pub mod timeouts;
pub mod tracker;
pub mod validate;
pub mod words;

use tracing::{debug, warn};

use crate::error::{ClientError, ErrorKind};
use handshake::{HandshakeError, HandshakeFailure};
use registry::ClientIdentity;
use session::send_client_error;

/// Tells the client why the handshake failed, when it can still be told: protocol errors
/// as 08P01, a missing TLS as 28000 (as Postgres), nothing after a failed TLS handshake.
/// Returns the kind of error the client was told, if one was.
pub async fn report_handshake_failure(failure: HandshakeFailure) -> Option<ErrorKind> {
    let HandshakeFailure { stream, error } = failure;
    if let HandshakeError::Tls(e) = &error {
        crate::logging::close_reason::log_client_tls_failure(e);
    }
    let kind = match &error {
        HandshakeError::Startup(crate::protocol::startup::StartupError::Io(_))
        | HandshakeError::Tls(_) => {
            debug!(error = %error, "client handshake failed");
            return None;
        }
        HandshakeError::SslRequired => ErrorKind::NotAuthorized,
        _ => ErrorKind::Protocol,
    };
    warn!(error = %error, "client handshake refused");
    let mut stream = stream?;
    send_client_error(&mut stream, &ClientError::fatal(kind, error.to_string())).await;
    Some(kind)
}

/// User, database (defaulting to the user, as Postgres) and application_name from the
/// startup parameters.
pub fn identity_of(params: &[(String, String)]) -> ClientIdentity {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let user = get("user");
    let database = match get("database") {
        d if d.is_empty() => user.clone(),
        d => d,
    };
    ClientIdentity {
        user,
        database,
        application_name: get("application_name"),
    }
}
