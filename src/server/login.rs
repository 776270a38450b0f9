//! The server's authentication exchange, up to AuthenticationOk: cleartext, md5 (from a
//! password or a stored md5 hash) and SCRAM-SHA-256 (from a password, or by pass-through
//! with a client's ClientKey). No message body from here is ever logged.

use bytes::BytesMut;

use super::conn::{ServerConnection, ServerError};
use super::connect::ServerTarget;
use super::credential::ServerCredential;
use crate::auth::{md5_response, md5_secret, ScramClient, Secret};
use crate::protocol::messages::{self, auth_code, tag};

/// Runs the authentication exchange up to AuthenticationOk.
pub(super) async fn authenticate(
    conn: &mut ServerConnection,
    target: &ServerTarget,
) -> Result<(), ServerError> {
    let mut scram: Option<ScramClient> = None;
    loop {
        let (t, body) = conn.read_message().await?;
        if t == tag::ERROR_RESPONSE {
            return Err(ServerError::Rejected(messages::parse_error_fields(&body)));
        }
        if t != tag::AUTHENTICATION || body.len() < 4 {
            return Err(ServerError::Protocol("expected an authentication request"));
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let payload = &body[4..];
        let mut out = BytesMut::new();
        match code {
            auth_code::OK => return Ok(()),
            auth_code::CLEARTEXT => put_cleartext(&mut out, target)?,
            auth_code::MD5 => put_md5(&mut out, target, payload)?,
            auth_code::SASL => {
                if !payload.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256") {
                    return Err(ServerError::Auth("server offers no SCRAM-SHA-256"));
                }
                let mut client = scram_client(&target.credential)?;
                messages::put_sasl_initial(&mut out, "SCRAM-SHA-256", &client.client_first());
                scram = Some(client);
            }
            auth_code::SASL_CONTINUE => {
                let client = scram
                    .as_mut()
                    .ok_or(ServerError::Protocol("SASL continue without SASL"))?;
                let reply = client.server_first(payload).map_err(|_| {
                    ServerError::Auth(match target.credential {
                        ServerCredential::PassThrough(_) => {
                            "SCRAM pass-through refused: the server's secret has another salt or iteration count than the stored one"
                        }
                        _ => "invalid SCRAM server-first-message",
                    })
                })?;
                messages::put_password(&mut out, &reply);
            }
            auth_code::SASL_FINAL => {
                let client = scram
                    .as_mut()
                    .ok_or(ServerError::Protocol("SASL final without SASL"))?;
                client
                    .server_final(payload)
                    .map_err(|_| ServerError::Auth("server SCRAM signature did not verify"))?;
                continue;
            }
            _ => {
                return Err(ServerError::Auth(
                    "server asked for an unsupported authentication method",
                ))
            }
        }
        conn.stream.send(&out).await?;
    }
}

/// The PasswordMessage answering a cleartext password request.
fn put_cleartext(out: &mut BytesMut, target: &ServerTarget) -> Result<(), ServerError> {
    let Some(pw) = plain_password(&target.credential) else {
        return Err(ServerError::Auth(
            "server wants a cleartext password but only a hash is known",
        ));
    };
    let mut p = pw.as_bytes().to_vec();
    p.push(0);
    messages::put_password(out, &p);
    Ok(())
}

/// The PasswordMessage answering an md5 request (`payload` holds the salt), from the
/// password or the stored md5 hash.
fn put_md5(out: &mut BytesMut, target: &ServerTarget, payload: &[u8]) -> Result<(), ServerError> {
    let salt: [u8; 4] = payload
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(ServerError::Protocol("short md5 salt"))?;
    let ServerCredential::Secret(secret) = &target.credential else {
        return Err(ServerError::Auth(
            "server wants md5 but no password or md5 hash is known",
        ));
    };
    let response = match secret {
        Secret::Plain(pw) => md5_response(&md5_secret(&target.user, pw.as_bytes()), salt),
        Secret::Md5(hash) => md5_response(hash, salt),
        Secret::Scram(_) => {
            return Err(ServerError::Auth(
                "server wants md5 but only a SCRAM secret is known",
            ))
        }
    };
    let mut p = response.into_bytes();
    p.push(0);
    messages::put_password(out, &p);
    Ok(())
}

/// The SCRAM client for this credential: from the plain password, or pass-through with
/// the ClientKey a client of this user proved against the stored SCRAM secret.
fn scram_client(credential: &ServerCredential) -> Result<ScramClient, ServerError> {
    match credential {
        ServerCredential::Secret(Secret::Plain(pw)) => {
            Ok(ScramClient::with_password(pw.as_bytes()))
        }
        ServerCredential::PassThrough(p) => match p.current() {
            Some((secret, client_key)) => Ok(ScramClient::with_client_key(client_key, &secret)),
            None => Err(ServerError::Auth(
                "SCRAM pass-through needs a client of this user to log in with SCRAM first",
            )),
        },
        _ => Err(ServerError::Auth(
            "server wants SCRAM but neither a plain password nor a SCRAM secret is known",
        )),
    }
}

fn plain_password(c: &ServerCredential) -> Option<&str> {
    c.plain_password()
}
