//! The edge listener (`edge_listen`): what serverless code without raw TCP needs, as Neon's
//! serverless driver (`@neondatabase/serverless`) speaks it. HTTP/1.1 and HTTP/2 (TLS from
//! the `client_tls_*` files unless `client_tls_sslmode = disable`) carry two things:
//!
//! - a WebSocket upgrade on any path: binary frames carry the Postgres protocol, served by
//!   the same client session as TCP clients (`websocket`, and `pipelined` for the driver's
//!   login that sends its password before being asked);
//! - `POST /sql` (and `OPTIONS /sql` for CORS): one query or a batch in a transaction per
//!   request, answered in JSON (`http_sql`, `query`, `json`).
//!
//! Addresses in `?address=`, the Host header or a connection string are never dialled: the
//! database and user pick a pool exactly as they do for a TCP client.

pub mod batch;
pub mod connstr;
pub mod http_auth;
pub mod http_sql;
pub mod json;
pub mod pipelined;
pub mod query;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::error::ErrorKind;
use crate::net::tls::ClientSideTls;

/// How long a client may take to send a request head (and, for TLS, its handshake), at
/// most: a shorter `client_login_timeout` wins.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// `limit`, or `client_login_timeout` when that is set and shorter.
pub fn deadline(app: &App, limit: Duration) -> Duration {
    match app.config().settings.client_login_timeout {
        t if t.is_zero() => limit,
        t => t.min(limit),
    }
}

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's TCP address.
    pub addr: SocketAddr,
    /// True when the connection is TLS (https/wss).
    pub tls: bool,
}

impl Peer {
    /// Whether a cleartext password may travel on this connection: always over TLS, from
    /// loopback, or anywhere when `edge_allow_plaintext` is set.
    pub fn may_send_cleartext(&self, app: &App) -> bool {
        cleartext_allowed(self, app.config().settings.edge_allow_plaintext)
    }
}

/// The rule of [`Peer::may_send_cleartext`] with `edge_allow_plaintext` given.
fn cleartext_allowed(peer: &Peer, allow_plaintext: bool) -> bool {
    peer.tls || peer.addr.ip().to_canonical().is_loopback() || allow_plaintext
}

/// Binds `edge_listen` when it is set and serves it until shutdown; returns the bound
/// address.
pub async fn start(app: &Arc<App>) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = app.config().settings.edge_listen.clone() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on edge_listen {addr}"))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "edge listening (WebSocket, SQL over HTTP)");
    let app2 = app.clone();
    app.tasks.spawn(accept_loop(app2, listener));
    Ok(Some(bound))
}

async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    let acceptors = Arc::new(HttpAcceptor::default());
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, addr)) => {
                let _ = sock.set_nodelay(true);
                let (app, acceptors) = (app.clone(), acceptors.clone());
                tokio::spawn(async move { serve_connection(app, &acceptors, sock, addr).await });
            }
            Err(e) => {
                warn!(error = %e, "edge accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The TLS acceptor for HTTP (ALPN h2 and http/1.1), derived from the client TLS config
/// and rebuilt when a reload replaced it.
#[derive(Default)]
struct HttpAcceptor {
    current: Mutex<Option<(Arc<ClientSideTls>, TlsAcceptor)>>,
}

impl HttpAcceptor {
    fn get(&self, app: &App) -> Option<TlsAcceptor> {
        let tls = app.tls.client();
        let base = tls.acceptor.as_ref()?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, acceptor)) = current.as_ref() {
            if Arc::ptr_eq(seen, &tls) {
                return Some(acceptor.clone());
            }
        }
        let mut config = (**base.config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        *current = Some((tls, acceptor.clone()));
        Some(acceptor)
    }
}

async fn serve_connection(
    app: Arc<App>,
    acceptors: &HttpAcceptor,
    sock: TcpStream,
    addr: SocketAddr,
) {
    // A connection that sends nothing is closed at the head deadline (HTTP/1 or HTTP/2 is
    // only known from the first bytes, before any of hyper's timers runs).
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline(&app, HEAD_TIMEOUT), sock.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    match acceptors.get(&app) {
        Some(acceptor) => {
            match tokio::time::timeout(deadline(&app, HEAD_TIMEOUT), acceptor.accept(sock)).await {
                Ok(Ok(tls)) => serve_http(app, tls, Peer { addr, tls: true }).await,
                Ok(Err(e)) => debug!(peer = %addr, error = %e, "edge TLS handshake failed"),
                Err(_) => debug!(peer = %addr, "edge TLS handshake timed out"),
            }
        }
        None => serve_http(app, sock, Peer { addr, tls: false }).await,
    }
}

async fn serve_http<I>(app: Arc<App>, io: I, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = app.shutdown.clone();
    let head_timeout = deadline(&app, HEAD_TIMEOUT);
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(route(app, peer, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(peer = %peer.addr, error = %e, "edge connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Dispatches one request: a WebSocket upgrade on any path, `/sql`, or 404.
async fn route(app: Arc<App>, peer: Peer, req: Request<Incoming>) -> HttpResponse {
    if websocket::is_upgrade(&req) {
        return websocket::accept(app, peer, req);
    }
    match (req.method(), req.uri().path()) {
        (&Method::OPTIONS, "/sql") => http_sql::preflight(),
        (&Method::POST, "/sql") => http_sql::handle(app, peer, req).await,
        (_, "/sql") => json::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json::PgError::of(ErrorKind::Protocol, "/sql takes POST (or OPTIONS)"),
        ),
        _ => json::error_response(
            StatusCode::NOT_FOUND,
            &json::PgError::of(
                ErrorKind::Protocol,
                "not found: the edge listener serves POST /sql and WebSocket upgrades",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_travels_over_tls_from_loopback_or_when_allowed() {
        let peer = |addr: &str, tls| Peer {
            addr: addr.parse().expect("addr"),
            tls,
        };
        assert!(cleartext_allowed(&peer("127.0.0.1:5", false), false));
        assert!(cleartext_allowed(&peer("[::1]:5", false), false));
        assert!(cleartext_allowed(
            &peer("[::ffff:127.0.0.1]:5", false),
            false
        ));
        assert!(!cleartext_allowed(&peer("10.1.2.3:5", false), false));
        assert!(cleartext_allowed(&peer("10.1.2.3:5", true), false));
        assert!(cleartext_allowed(&peer("10.1.2.3:5", false), true));
    }
}
