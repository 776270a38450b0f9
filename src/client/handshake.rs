//! From accept to a StartupMessage: TLS per `client_tls_sslmode` (after an SSLRequest, or
//! direct TLS with ALPN `postgresql` as PostgreSQL 17 clients do), `N` to GSSENCRequest,
//! CancelRequests, and the protocol version negotiated down to 3.0. Authentication is not
//! done here.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use super::context::SessionContext;
use crate::config::SslMode;
use crate::net::tls::{ClientSideTls, ALPN_POSTGRESQL};
use crate::net::Stream;
use crate::protocol::messages;
use crate::protocol::startup::{read_startup, StartupError, StartupPacket};

/// First byte of a TLS record carrying a handshake (a ClientHello when a client starts
/// with direct TLS); no StartupMessage length can start with it below 10,000 bytes.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Low halves of the SSLRequest and GSSENCRequest codes (1234.5679, 1234.5680), as
/// Postgres names them when one is repeated.
const SSL_REQUEST_MINOR: u16 = 5679;
const GSSENC_REQUEST_MINOR: u16 = 5680;

/// What the handshake produced.
#[derive(Debug)]
pub enum Handshake {
    /// A client that wants a session, with its startup parameters.
    Startup(Vec<(String, String)>),
    /// A cancel request that was handled; close the connection.
    Cancelled,
}

/// Why the handshake ended without a session.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// A bad first packet.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The TLS handshake failed (bad record, unknown CA, missing client certificate...).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// Direct TLS without the `postgresql` ALPN protocol (PostgreSQL refuses it too).
    #[error("received direct SSL connection request without ALPN protocol negotiation extension")]
    NoAlpn,
    /// A second SSLRequest or GSSENCRequest (after TLS, or after an `N`): Postgres treats
    /// its code as an unknown protocol version.
    #[error("unsupported frontend protocol 1234.{0}: server supports 3.0 to 3.0")]
    RequestTwice(u16),
    /// A plaintext StartupMessage while `client_tls_sslmode` requires TLS.
    #[error("SSL required")]
    SslRequired,
}

/// A failed handshake: the error and, when it is still usable, the stream to report on.
#[derive(Debug)]
pub struct HandshakeFailure {
    /// The stream, unless a TLS handshake consumed it.
    pub stream: Option<Stream>,
    /// What went wrong.
    pub error: HandshakeError,
}

impl HandshakeFailure {
    fn on(stream: Stream, error: impl Into<HandshakeError>) -> Self {
        HandshakeFailure {
            stream: Some(stream),
            error: error.into(),
        }
    }
}

/// Runs the pre-authentication exchange and returns the (possibly now TLS) stream.
pub async fn handshake(
    mut stream: Stream,
    app: &dyn SessionContext,
) -> Result<(Stream, Handshake), HandshakeFailure> {
    let tls = app.client_tls();
    if tls.acceptor.is_some() && starts_with_tls_record(&stream).await {
        stream = accept_tls(stream, &tls, true).await?;
    }
    // Each kind of encryption request is answered once, as in Postgres. Inside a
    // WebSocket (encrypted or not by wss) an SSLRequest is answered `N`.
    let edge = stream.is_edge();
    let (mut ssl_done, mut gss_done) = (stream.is_tls() && !edge, false);
    loop {
        let packet = match read_startup(&mut stream).await {
            Ok(p) => p,
            Err(e) => return Err(HandshakeFailure::on(stream, e)),
        };
        match packet {
            StartupPacket::SslRequest if ssl_done || (stream.is_tls() && !edge) => {
                return Err(HandshakeFailure::on(
                    stream,
                    HandshakeError::RequestTwice(SSL_REQUEST_MINOR),
                ));
            }
            StartupPacket::GssEncRequest if gss_done || (stream.is_tls() && !edge) => {
                return Err(HandshakeFailure::on(
                    stream,
                    HandshakeError::RequestTwice(GSSENC_REQUEST_MINOR),
                ));
            }
            StartupPacket::SslRequest
                if tls.acceptor.is_some() && matches!(stream, Stream::Tcp(_)) =>
            {
                if let Err(e) = stream.write_all(b"S").await {
                    return Err(HandshakeFailure::on(stream, StartupError::Io(e)));
                }
                stream = accept_tls(stream, &tls, false).await?;
            }
            // No TLS configured (or a Unix socket, as PgBouncer): the client may go on in
            // plaintext or give up, as sslmode=require does.
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                ssl_done |= packet == StartupPacket::SslRequest;
                gss_done |= packet == StartupPacket::GssEncRequest;
                if let Err(e) = stream.write_all(b"N").await {
                    return Err(HandshakeFailure::on(stream, StartupError::Io(e)));
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                app.serve_cancel(pid, &secret).await;
                return Ok((stream, Handshake::Cancelled));
            }
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => return accept_startup(stream, &tls, minor, params, protocol_options).await,
        }
    }
}

/// The StartupMessage: refused without TLS when `client_tls_sslmode` requires it (except
/// on a Unix socket); a newer minor version or `_pq_.` options get a
/// NegotiateProtocolVersion (3.0, none supported) first.
async fn accept_startup(
    mut stream: Stream,
    tls: &ClientSideTls,
    minor: u16,
    params: Vec<(String, String)>,
    protocol_options: Vec<String>,
) -> Result<(Stream, Handshake), HandshakeFailure> {
    if tls.mode >= SslMode::Require && !stream.is_tls() && !stream.is_unix() {
        return Err(HandshakeFailure::on(stream, HandshakeError::SslRequired));
    }
    if minor > 0 || !protocol_options.is_empty() {
        let mut buf = BytesMut::new();
        messages::put_negotiate_protocol(&mut buf, 0, &protocol_options);
        if let Err(e) = stream.write_all(&buf).await {
            return Err(HandshakeFailure::on(stream, StartupError::Io(e)));
        }
    }
    Ok((stream, Handshake::Startup(params)))
}

/// Peeks (without consuming) whether a TCP client opened with a TLS handshake record.
async fn starts_with_tls_record(stream: &Stream) -> bool {
    let Stream::Tcp(tcp) = stream else {
        return false;
    };
    let mut first = [0u8; 1];
    matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE_RECORD)
}

/// Runs the TLS handshake as server. `direct` connections must have negotiated ALPN
/// `postgresql`; after an SSLRequest ALPN is optional (older clients do not send it).
async fn accept_tls(
    stream: Stream,
    tls: &ClientSideTls,
    direct: bool,
) -> Result<Stream, HandshakeFailure> {
    let (Stream::Tcp(tcp), Some(acceptor)) = (stream, &tls.acceptor) else {
        // Callers only get here with TCP and an acceptor.
        return Err(HandshakeFailure {
            stream: None,
            error: HandshakeError::Tls(std::io::ErrorKind::Unsupported.into()),
        });
    };
    let tls_stream = acceptor.accept(tcp).await.map_err(|e| HandshakeFailure {
        stream: None,
        error: HandshakeError::Tls(e),
    })?;
    let alpn_ok = tls_stream.get_ref().1.alpn_protocol() == Some(ALPN_POSTGRESQL);
    let stream = Stream::ClientTls(Box::new(tls_stream));
    if direct && !alpn_ok {
        return Err(HandshakeFailure::on(stream, HandshakeError::NoAlpn));
    }
    Ok(stream)
}
