//! Everything on the client side of a connection: the handshake, authentication, the
//! session state machine, parameter tracking and the relay hot loop.

pub mod access;
pub mod buffers;
pub mod context;
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
pub mod rewrite;
pub mod session;
pub mod statement;
pub mod timeouts;
pub mod tracker;
pub mod validate;

use tracing::{debug, warn};

use crate::error::{ClientError, ErrorKind};
use handshake::{HandshakeError, HandshakeFailure};
use registry::ClientIdentity;
use session::send_client_error;

/// Tells the client why the handshake failed, when it can still be told: protocol errors
/// as 08P01, a missing TLS as 28000 (as Postgres), nothing after a failed TLS handshake.
pub async fn report_handshake_failure(failure: HandshakeFailure) {
    let HandshakeFailure { stream, error } = failure;
    let kind = match &error {
        HandshakeError::Startup(crate::protocol::startup::StartupError::Io(_))
        | HandshakeError::Tls(_) => {
            debug!(error = %error, "client handshake failed");
            return;
        }
        HandshakeError::SslRequired => ErrorKind::NotAuthorized,
        _ => ErrorKind::Protocol,
    };
    warn!(error = %error, "client handshake refused");
    if let Some(mut stream) = stream {
        send_client_error(&mut stream, &ClientError::fatal(kind, error.to_string())).await;
    }
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
