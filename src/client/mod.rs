//! Everything on the client side of a connection: the handshake, authentication, the
//! session state machine, parameter tracking and the relay hot loop.

pub mod access;
pub mod handshake;
pub mod login;
pub mod params;
pub mod prepared;
pub mod relay;
pub mod rewrite;
pub mod session;
pub mod statement;
pub mod timeouts;
pub mod tracker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, warn, Instrument};

use crate::app::App;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::protocol::messages::Severity;
use handshake::{Handshake, HandshakeError, HandshakeFailure};
use session::{send_error, Session};

/// Serves one accepted connection to completion. Never panics on client input; every
/// refusal is a Postgres error message followed by close.
pub async fn handle(app: Arc<App>, stream: Stream, peer: String) {
    let id = app.next_client_id();
    let span = tracing::info_span!("client", id, peer = %peer);
    async move {
        let count = app.client_count.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = ClientCountGuard(app.clone());
        let login_timeout = app.config().settings.client_login_timeout;
        let hs = handshake::handshake(stream, &app);
        let hs = if login_timeout.is_zero() {
            hs.await
        } else {
            match tokio::time::timeout(login_timeout, hs).await {
                Ok(r) => r,
                Err(_) => {
                    warn!("client_login_timeout during startup");
                    return;
                }
            }
        };
        let (mut stream, params) = match hs {
            Ok((stream, Handshake::Startup(p))) => (stream, p),
            Ok((_, Handshake::Cancelled)) => return,
            Err(failure) => return report_handshake_failure(failure).await,
        };
        if count > app.config().settings.max_client_conn as usize {
            warn!(
                max_client_conn = app.config().settings.max_client_conn,
                "too many clients"
            );
            return send_error(
                &mut stream,
                Severity::Fatal,
                ErrorKind::TooManyClients.sqlstate(),
                "sorry, too many clients already",
                None,
            )
            .await;
        }
        match Session::new(id, app.clone(), stream, params) {
            Ok(session) => session.run().await,
            Err((mut stream, msg)) => {
                send_error(&mut stream, Severity::Fatal, "28000", msg, None).await
            }
        }
    }
    .instrument(span)
    .await
}

/// Tells the client why the handshake failed, when it can still be told: protocol errors
/// as 08P01, a missing TLS as 28000 (as Postgres), nothing after a failed TLS handshake.
async fn report_handshake_failure(failure: HandshakeFailure) {
    let HandshakeFailure { stream, error } = failure;
    let code = match &error {
        HandshakeError::Startup(crate::protocol::startup::StartupError::Io(_))
        | HandshakeError::Tls(_) => {
            debug!(error = %error, "client handshake failed");
            return;
        }
        HandshakeError::SslRequired => "28000",
        _ => ErrorKind::Protocol.sqlstate(),
    };
    warn!(error = %error, "client handshake refused");
    if let Some(mut stream) = stream {
        send_error(&mut stream, Severity::Fatal, code, &error.to_string(), None).await;
    }
}

struct ClientCountGuard(Arc<App>);

impl Drop for ClientCountGuard {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::AcqRel);
    }
}
