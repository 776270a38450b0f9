//! Everything on the client side of a connection: the handshake, authentication, the
//! session state machine, parameter tracking and the relay hot loop.

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
use handshake::Handshake;
use session::{send_error, Session};

/// Serves one accepted connection to completion. Never panics on client input; every
/// refusal is a Postgres error message followed by close.
pub async fn handle(app: Arc<App>, mut stream: Stream, peer: String) {
    let id = app.next_client_id();
    let span = tracing::info_span!("client", id, peer = %peer);
    async move {
        let count = app.client_count.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = ClientCountGuard(app.clone());
        let login_timeout = app.config().settings.client_login_timeout;
        let hs = handshake::handshake(&mut stream, &app);
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
        let params = match hs {
            Ok(Handshake::Startup(p)) => p,
            Ok(Handshake::Cancelled) => return,
            Err(e) => {
                debug!(error = %e, "bad startup packet");
                if !matches!(e, crate::protocol::startup::StartupError::Io(_)) {
                    send_error(
                        &mut stream,
                        Severity::Fatal,
                        ErrorKind::Protocol.sqlstate(),
                        &e.to_string(),
                        None,
                    )
                    .await;
                }
                return;
            }
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

struct ClientCountGuard(Arc<App>);

impl Drop for ClientCountGuard {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::AcqRel);
    }
}
