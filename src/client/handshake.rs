//! From accept to a StartupMessage: answers SSLRequest and GSSENCRequest with `N`,
//! serves CancelRequests, negotiates the protocol version down to 3.0.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::app::App;
use crate::protocol::messages;
use crate::protocol::startup::{read_startup, StartupError, StartupPacket};

/// What the handshake produced.
#[derive(Debug)]
pub enum Handshake {
    /// A client that wants a session, with its startup parameters.
    Startup(Vec<(String, String)>),
    /// A cancel request that was handled; close the connection.
    Cancelled,
}

/// Runs the pre-authentication exchange.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    app: &App,
) -> Result<Handshake, StartupError> {
    loop {
        match read_startup(stream).await? {
            // TLS toward clients is not configured: refuse it, the client may go on in
            // plaintext (or give up, as sslmode=require does).
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                stream.write_all(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                if !app.cancel.cancel(pid, &secret).await {
                    debug!(pid, "cancel request for unknown or idle key ignored");
                }
                return Ok(Handshake::Cancelled);
            }
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => {
                if minor > 0 || !protocol_options.is_empty() {
                    let mut buf = BytesMut::new();
                    messages::put_negotiate_protocol(&mut buf, 0, &protocol_options);
                    stream.write_all(&buf).await?;
                }
                return Ok(Handshake::Startup(params));
            }
        }
    }
}
