//! The serverless driver's pipelined login (`pipelineConnect: 'password'`): it sends its
//! StartupMessage, a cleartext PasswordMessage and its first query in one burst, before
//! pgfunnel asks for anything. Such a client is asked for a cleartext password (which it
//! already sent), checked against the stored secret, SCRAM included. Cleartext on an
//! unencrypted WebSocket is refused unless the peer is on loopback or
//! `edge_allow_plaintext` is set.

use super::Peer;
use crate::app::App;
use crate::client::access::Denied;
use crate::client::login;
use crate::net::Stream;
use crate::protocol::messages::auth_code;

/// Times the session lets the WebSocket pump run before looking for a pipelined password,
/// so frames that arrived with the StartupMessage are in the pipe.
const PUMP_TURNS: usize = 4;

/// The method an edge client's password exchange uses, given the one configured
/// (`None` = trust): cleartext when the client sent its password ahead; trust with a
/// password ahead reads and ignores it. Cleartext where it may not travel is refused.
/// Other streams keep `configured`.
pub async fn method_for(
    app: &App,
    stream: &mut Stream,
    configured: Option<&'static str>,
) -> Result<Option<&'static str>, Denied> {
    let Stream::Edge(edge) = stream else {
        return Ok(configured);
    };
    let peer = Peer {
        addr: edge.peer(),
        tls: edge.is_tls(),
    };
    for _ in 0..PUMP_TURNS {
        if !edge.ready_input().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let ahead = edge.ready_input().first() == Some(&b'p');
    let method = match (ahead, configured) {
        (true, None) => {
            login::send_auth(stream, auth_code::CLEARTEXT, &[])
                .await
                .map_err(|e| Denied::Protocol(e.into()))?;
            login::read_password(stream)
                .await
                .map_err(Denied::Protocol)?;
            return Ok(None);
        }
        (true, Some(_)) => Some("plain"),
        (false, m) => m,
    };
    if method == Some("plain") && !peer.may_send_cleartext(app) {
        return Err(Denied::Plaintext);
    }
    Ok(method)
}
