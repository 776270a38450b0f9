//! Client authentication over the wire: drives the sans-I/O verifiers in `auth` with
//! AuthenticationSASL/MD5/Cleartext exchanges. Unknown users and wrong passwords get the
//! same messages and the same work, so neither answer nor timing tells them apart (the
//! SCRAM verifier, real or mock, is prepared by the caller: see `access`).

use bytes::BytesMut;
use rand::Rng;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{self, ClientAuthMethod, ScramServer, Secret};
use crate::protocol::messages::{self, auth_code};

/// Largest password or SASL message accepted from a client before authentication, counting
/// its 4-byte length field: a body of up to 65,531 bytes, PgBouncer's limit (long
/// passwords, access tokens used as passwords).
pub const MAX_AUTH_MESSAGE: usize = 65_535;

/// Why a client failed to authenticate.
#[derive(Debug, Error)]
pub enum LoginError {
    /// Wrong password, unknown user, or a failed SCRAM proof.
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    /// The client sent something other than the expected password message.
    #[error("expected password response, got message type {0:?}")]
    Protocol(char),
    /// The client sent a malformed or oversized message.
    #[error("invalid authentication message")]
    Malformed,
    /// The SCRAM exchange broke off for a reason other than a wrong proof (bad grammar,
    /// channel binding mismatch or downgrade...).
    #[error("{0}")]
    Scram(auth::ScramError),
    /// The socket failed.
    #[error("connection lost during authentication: {0}")]
    Io(#[from] std::io::Error),
}

/// Result of a successful login.
#[derive(Debug, Default)]
pub struct LoginOutcome {
    /// The SCRAM ClientKey recovered from the client's proof (for SCRAM pass-through).
    pub scram_client_key: Option<[u8; 32]>,
}

/// One client's password exchange. (No `Debug`: it holds the per-process mock key.)
pub struct Exchange<'a> {
    /// The login user.
    pub user: &'a str,
    /// The challenge to send.
    pub method: ClientAuthMethod,
    /// The stored secret checked by md5 and cleartext (`None` = unknown user).
    pub secret: Option<&'a Secret>,
    /// The SCRAM verifier (real or mock) when `method` is SCRAM.
    pub scram: Option<ScramServer>,
    /// Per-process key for the stand-in secret of unknown users.
    pub mock_key: &'a [u8],
}

/// Runs `exchange` on `stream`. Sends AuthenticationOk on success; the caller sends the
/// error on failure.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    exchange: Exchange<'_>,
) -> Result<LoginOutcome, LoginError> {
    let user = exchange.user;
    let fail = || LoginError::Failed(user.to_owned());
    // An unknown user is checked against a stand-in md5 secret: the same work, no match.
    let stand_in;
    let (secret, known) = match exchange.secret {
        Some(s) => (s, true),
        None => {
            stand_in = Secret::Md5(auth::md5_secret(user, exchange.mock_key));
            (&stand_in, false)
        }
    };
    let mut outcome = LoginOutcome::default();
    match exchange.method {
        ClientAuthMethod::Trust => {}
        ClientAuthMethod::Plain => {
            send_auth(stream, auth_code::CLEARTEXT, &[]).await?;
            let body = read_password(stream).await?;
            let pw = body.strip_suffix(&[0]).unwrap_or(&body);
            let verified = match secret {
                // The ClientKey lets the pool log in by SCRAM pass-through.
                Secret::Scram(s) => {
                    outcome.scram_client_key = auth::scram_client_key_of(s, pw);
                    outcome.scram_client_key.is_some()
                }
                other => auth::verify_cleartext(other, user, pw),
            };
            if !(verified && known) {
                return Err(fail());
            }
        }
        ClientAuthMethod::Md5 => {
            let salt: [u8; 4] = rand::thread_rng().gen();
            send_auth(stream, auth_code::MD5, &salt).await?;
            let body = read_password(stream).await?;
            let resp = body.strip_suffix(&[0]).unwrap_or(&body);
            if !(auth::verify_md5_response(secret, user, salt, resp) && known) {
                return Err(fail());
            }
        }
        ClientAuthMethod::ScramSha256 => {
            let server = exchange
                .scram
                .unwrap_or_else(|| ScramServer::for_unknown_user(user, exchange.mock_key));
            let (client_key, server_final) = scram(stream, user, server).await?;
            outcome.scram_client_key = Some(client_key);
            // SASLFinal and AuthenticationOk in one write.
            let mut buf = BytesMut::with_capacity(9 + server_final.len() + 9);
            messages::put_auth(&mut buf, auth_code::SASL_FINAL, &server_final);
            messages::put_auth(&mut buf, auth_code::OK, &[]);
            stream.write_all(&buf).await?;
            return Ok(outcome);
        }
    }
    send_auth(stream, auth_code::OK, &[]).await?;
    Ok(outcome)
}

/// Sends AuthenticationOk (for methods decided without a password exchange).
pub async fn send_ok<S: AsyncWrite + Unpin>(stream: &mut S) -> Result<(), LoginError> {
    Ok(send_auth(stream, auth_code::OK, &[]).await?)
}

/// Runs the SCRAM exchange up to the client's proof; returns the ClientKey and the
/// server-final message (sent by the caller together with AuthenticationOk).
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    mut server: ScramServer,
) -> Result<([u8; 32], Vec<u8>), LoginError> {
    let mut offer = Vec::new();
    for mechanism in server.mechanisms() {
        offer.extend_from_slice(mechanism.as_bytes());
        offer.push(0);
    }
    offer.push(0);
    send_auth(stream, auth_code::SASL, &offer).await?;
    let body = read_password(stream).await?;
    let (mechanism, data) = parse_sasl_initial(&body).ok_or(LoginError::Malformed)?;
    let server_first = server
        .client_first(mechanism, data)
        .map_err(|e| scram_error(user, e))?;
    send_auth(stream, auth_code::SASL_CONTINUE, &server_first).await?;
    let body = read_password(stream).await?;
    let outcome = server
        .client_final(&body)
        .map_err(|e| scram_error(user, e))?;
    Ok((outcome.client_key, outcome.server_final))
}

/// A wrong proof is a failed login (28P01); anything else a broken exchange (08P01).
fn scram_error(user: &str, e: auth::ScramError) -> LoginError {
    match e {
        auth::ScramError::InvalidProof => LoginError::Failed(user.to_owned()),
        other => LoginError::Scram(other),
    }
}

/// Splits SASLInitialResponse into the mechanism and its data. The data length must be
/// exactly what follows: a negative length (including -1, "no initial response", which
/// SCRAM never uses) or a mismatch is malformed.
fn parse_sasl_initial(body: &[u8]) -> Option<(&str, &[u8])> {
    let mut rest = body;
    let mech = messages::take_cstr(&mut rest)?;
    let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let len = usize::try_from(i32::from_be_bytes(len_bytes)).ok()?;
    let data = &rest[4..];
    if len != data.len() {
        return None;
    }
    Some((std::str::from_utf8(mech).ok()?, data))
}

/// Sends one Authentication message (`code` and its payload).
pub(crate) async fn send_auth<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: i32,
    payload: &[u8],
) -> std::io::Result<()> {
    // Tag, length and code: 9 bytes before the payload.
    let mut buf = BytesMut::with_capacity(9 + payload.len());
    messages::put_auth(&mut buf, code, payload);
    stream.write_all(&buf).await
}

/// Reads one PasswordMessage-family ('p') message body, bounded in size.
pub(crate) async fn read_password<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, LoginError> {
    // The tag and length in one read (one syscall when the message arrived whole).
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let [tag, l0, l1, l2, l3] = header;
    let len = i32::from_be_bytes([l0, l1, l2, l3]);
    if tag != b'p' {
        return Err(LoginError::Protocol(tag as char));
    }
    if !(4..=MAX_AUTH_MESSAGE as i32).contains(&len) {
        return Err(LoginError::Malformed);
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial(mechanism: &str, len: i32, data: &[u8]) -> Vec<u8> {
        let mut body = mechanism.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(data);
        body
    }

    #[test]
    fn sasl_initial_response_length_must_match_its_data() {
        let ok = initial("SCRAM-SHA-256", 3, b"n,,");
        assert_eq!(
            parse_sasl_initial(&ok),
            Some(("SCRAM-SHA-256", &b"n,,"[..]))
        );
        for len in [-1, -2, i32::MIN, 2, 4] {
            let bad = initial("SCRAM-SHA-256", len, b"n,,");
            assert_eq!(parse_sasl_initial(&bad), None, "length {len}");
        }
        assert_eq!(parse_sasl_initial(b"SCRAM-SHA-256\0\0\0"), None);
    }
}
