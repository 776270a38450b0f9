//! Postgres over WebSocket: the upgrade (RFC 6455, no subprotocol), then a pump between
//! the frames and an in-memory pipe whose other end is the client's [`Stream::Edge`], run
//! by the ordinary client session. Binary frames are a byte stream both ways (a frame may
//! hold several messages, a message may span frames); a text frame closes the socket with
//! 1003; pings are answered by the WebSocket layer; a close from either side ends both.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::{HttpResponse, Peer};
use crate::app::App;
use crate::net::{EdgeStream, Stream};

/// Capacity of the pipe between the frames and the session, each way.
const PIPE: usize = 64 * 1024;
/// Largest WebSocket message (and frame) accepted.
const MAX_MESSAGE: usize = 64 << 20;
/// Bytes read from the socket at a time (and allocated per WebSocket for it).
const READ_BUFFER: usize = 8 * 1024;
/// How long one side may take to finish after the other ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// True for a WebSocket upgrade request (HTTP/1.1 `Upgrade: websocket`).
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, word: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(word)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Answers an upgrade request with 101 and starts the session once the upgrade completes;
/// a request without a valid key or version 13 gets 400.
pub fn accept(app: Arc<App>, peer: Peer, mut req: Request<Incoming>) -> HttpResponse {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| version_ok) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(
            b"WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13\n",
        )));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                // Small buffers: an idle WebSocket should cost little (the default read
                // buffer is 128 KiB, allocated up front).
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .write_buffer_size(0)
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                serve(app, peer, ws).await;
            }
            Err(e) => debug!(peer = %peer.addr, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Runs a client session over `ws` until either side ends.
pub async fn serve<S>(app: Arc<App>, peer: Peer, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = app.metrics.edge.websocket_opened();
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let stream = Stream::Edge(Box::new(EdgeStream::new(theirs, peer.addr, peer.tls)));
    crate::app::spawn(&app, stream, peer.addr.to_string());
    pump(ws, ours).await;
}

/// Why the frames side stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboundEnd {
    /// Still running.
    Running,
    /// The client closed, or the socket failed.
    Closed,
    /// A text frame: close with 1003.
    TextFrame,
}

/// Moves binary frames into the pipe and the pipe's output into binary frames.
pub async fn pump<S>(ws: WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, frames) = ws.split();
    let (from_session, to_session) = tokio::io::split(pipe);
    let (ended_tx, ended_rx) = watch::channel(InboundEnd::Running);
    let inbound = inbound(frames, to_session, ended_tx);
    let outbound = outbound(sink, from_session, ended_rx);
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => { let _ = tokio::time::timeout(CLOSE_GRACE, outbound).await; }
        _ = &mut outbound => { let _ = tokio::time::timeout(CLOSE_GRACE, inbound).await; }
    }
}

/// The frames side: writes binary frames into the session's pipe until the client closes,
/// the socket fails or a text frame arrives, then shuts the pipe and reports why.
async fn inbound<S>(
    mut frames: SplitStream<WebSocketStream<S>>,
    mut to_session: WriteHalf<DuplexStream>,
    ended_tx: watch::Sender<InboundEnd>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut end = InboundEnd::Closed;
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(Message::Binary(data)) => {
                if to_session.write_all(&data).await.is_err() {
                    break;
                }
            }
            Ok(Message::Text(_)) => {
                debug!("text frame on a Postgres WebSocket: closing");
                end = InboundEnd::TextFrame;
                break;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {} // ping (answered by tungstenite), pong
            Err(e) => {
                debug!(error = %e, "WebSocket read failed");
                break;
            }
        }
    }
    // The session sees end of input and ends.
    let _ = to_session.shutdown().await;
    let _ = ended_tx.send(end);
}

/// The session side: sends the pipe's output as binary frames until the session ends or a
/// text frame arrived, then sends the close frame.
async fn outbound<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut from_session: ReadHalf<DuplexStream>,
    mut ended_rx: watch::Receiver<InboundEnd>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = vec![0u8; READ_BUFFER];
    let mut watching = true;
    let close = loop {
        let n = tokio::select! {
            r = from_session.read(&mut buf) => r.unwrap_or(0),
            seen = ended_rx.wait_for(|e| *e == InboundEnd::TextFrame), if watching => {
                if seen.is_err() {
                    watching = false; // the client side ended some other way
                    continue;
                }
                break CloseFrame {
                    code: CloseCode::Unsupported,
                    reason: "text frames are not accepted: send the Postgres protocol in binary frames".into(),
                };
            }
        };
        if n == 0 {
            break CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
        }
        let frame = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        if sink.send(frame).await.is_err() {
            return;
        }
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}
