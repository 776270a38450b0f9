//! Client authentication over the wire: drives the sans-I/O verifiers in `auth` with
//! AuthenticationSASL/MD5/Cleartext exchanges. Unknown users and wrong passwords get the
//! same messages and the same work, so neither answer nor timing tells them apart.

use bytes::BytesMut;
use rand::Rng;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{self, ClientAuthMethod, ScramSecret, ScramServer, Secret};
use crate::protocol::messages::{self, auth_code};

/// Largest password or SASL message accepted from a client before authentication.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

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

/// Authenticates `user` with `method` against `secret` (None = unknown user).
/// Sends AuthenticationOk on success; the caller sends the error on failure.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    method: ClientAuthMethod,
    secret: Option<&Secret>,
    mock_key: &[u8],
) -> Result<LoginOutcome, LoginError> {
    let fail = || LoginError::Failed(user.to_owned());
    let mut outcome = LoginOutcome::default();
    match method {
        ClientAuthMethod::Trust => {}
        ClientAuthMethod::Plain => {
            send_auth(stream, auth_code::CLEARTEXT, &[]).await?;
            let body = read_password(stream).await?;
            let pw = body.strip_suffix(&[0]).unwrap_or(&body);
            if !secret.is_some_and(|s| auth::verify_cleartext(s, user, pw)) {
                return Err(fail());
            }
        }
        ClientAuthMethod::Md5 => {
            let salt: [u8; 4] = rand::thread_rng().gen();
            send_auth(stream, auth_code::MD5, &salt).await?;
            let body = read_password(stream).await?;
            let resp = body.strip_suffix(&[0]).unwrap_or(&body);
            if !secret.is_some_and(|s| auth::verify_md5_response(s, user, salt, resp)) {
                return Err(fail());
            }
        }
        ClientAuthMethod::ScramSha256 => {
            outcome.scram_client_key = Some(scram(stream, user, secret, mock_key).await?);
        }
    }
    send_auth(stream, auth_code::OK, &[]).await?;
    Ok(outcome)
}

/// Sends AuthenticationOk (for methods decided without a password exchange).
pub async fn send_ok<S: AsyncWrite + Unpin>(stream: &mut S) -> Result<(), LoginError> {
    Ok(send_auth(stream, auth_code::OK, &[]).await?)
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    secret: Option<&Secret>,
    mock_key: &[u8],
) -> Result<[u8; 32], LoginError> {
    let fail = || LoginError::Failed(user.to_owned());
    let mut server = match secret {
        Some(Secret::Scram(s)) => ScramServer::new(s.clone()),
        Some(Secret::Plain(p)) => ScramServer::new(ScramSecret::for_plain_password(p.as_bytes())),
        // An md5 hash cannot drive SCRAM; behave exactly as for an unknown user.
        Some(Secret::Md5(_)) | None => ScramServer::for_unknown_user(user, mock_key),
    };
    send_auth(stream, auth_code::SASL, b"SCRAM-SHA-256\0\0").await?;
    let body = read_password(stream).await?;
    let (mechanism, data) = parse_sasl_initial(&body).ok_or(LoginError::Malformed)?;
    let server_first = server.client_first(mechanism, data).map_err(|_| fail())?;
    send_auth(stream, auth_code::SASL_CONTINUE, &server_first).await?;
    let body = read_password(stream).await?;
    let outcome = server.client_final(&body).map_err(|_| fail())?;
    send_auth(stream, auth_code::SASL_FINAL, &outcome.server_final).await?;
    Ok(outcome.client_key)
}

fn parse_sasl_initial(body: &[u8]) -> Option<(&str, &[u8])> {
    let mut rest = body;
    let mech = messages::take_cstr(&mut rest)?;
    let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let len = i32::from_be_bytes(len_bytes);
    let data = &rest[4..];
    if len >= 0 && len as usize != data.len() {
        return None;
    }
    Some((std::str::from_utf8(mech).ok()?, data))
}

async fn send_auth<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: i32,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    messages::put_auth(&mut buf, code, payload);
    stream.write_all(&buf).await
}

/// Reads one PasswordMessage-family ('p') message body, bounded in size.
async fn read_password<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, LoginError> {
    let tag = stream.read_u8().await?;
    let len = stream.read_i32().await?;
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
