//! Client side of SCRAM-SHA-256 toward a Postgres server: a sans-I/O state machine that logs
//! in either with a password or with a ClientKey recovered from the client's own SCRAM
//! exchange (SCRAM pass-through). Does not frame SASL messages or talk to sockets.

use super::crypto::{b64_decode, b64_decode_key, b64_encode, hmac_sha256, random_bytes, sha256};
use super::crypto::{xor, KEY_LEN};
use super::scram_wire::{check_len, is_printable_nonce, AttrReader, ScramError};
use super::secret::{salted_password, ScramSecret};
use std::fmt;
use subtle::ConstantTimeEq;

/// Largest iteration count accepted from a server when deriving keys from a password: a
/// hostile server must not make us spin (Postgres's default is 4096).
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

/// Random bytes in the client nonce (as libpq).
const CLIENT_NONCE_LEN: usize = 18;

/// gs2 header without channel binding; "biws" is its base64 form for `c=`.
const GS2_HEADER: &str = "n,,";

/// Longest `e=` error value kept from a server-final-message.
const MAX_SERVER_ERROR_LEN: usize = 64;

/// How the client proves itself.
enum Credential {
    /// Cleartext password; SaltedPassword is derived with the server's salt and count.
    Password(Vec<u8>),
    /// ClientKey recovered from the client; works only with the stored secret's salt/count.
    ClientKey {
        client_key: [u8; KEY_LEN],
        secret: ScramSecret,
    },
}

enum Stage {
    Start,
    AwaitServerFirst {
        client_nonce: String,
        client_first_bare: String,
    },
    AwaitServerFinal {
        server_signature: [u8; KEY_LEN],
    },
    Ended,
}

/// One SCRAM-SHA-256 login toward a server. Call [`ScramClient::client_first`] for the
/// SASLInitialResponse data (mechanism `SCRAM-SHA-256`), [`ScramClient::server_first`] with
/// AuthenticationSASLContinue data, then [`ScramClient::server_final`] with
/// AuthenticationSASLFinal data. Any error ends the exchange.
///
/// Server input is untrusted: messages over 4 KiB are rejected and iteration counts are
/// bounded. `Debug` redacts every credential.
pub struct ScramClient {
    credential: Credential,
    stage: Stage,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.credential {
            Credential::Password(_) => "password",
            Credential::ClientKey { .. } => "client_key",
        };
        f.debug_struct("ScramClient")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Client that derives its keys from `password` (SASLprep'd as Postgres does) using the
    /// salt and iteration count the server sends; counts outside 1..=1,000,000 are refused.
    pub fn with_password(password: &[u8]) -> ScramClient {
        ScramClient {
            credential: Credential::Password(password.to_vec()),
            stage: Stage::Start,
        }
    }

    /// SCRAM pass-through: client holding `client_key` (from [`super::ScramOutcome`]) for
    /// the stored `secret` it was verified against. The server's verifier must be the same
    /// secret: [`ScramClient::server_first`] refuses a different salt or iteration count, and
    /// the server signature is checked with `secret.server_key`.
    pub fn with_client_key(client_key: [u8; KEY_LEN], secret: &ScramSecret) -> ScramClient {
        ScramClient {
            credential: Credential::ClientKey {
                client_key,
                secret: secret.clone(),
            },
            stage: Stage::Start,
        }
    }

    /// The client-first-message `n,,n=,r=<nonce>` (no channel binding; the user name is
    /// left empty because Postgres takes it from the startup packet). Calling it again
    /// restarts the exchange with a new nonce.
    pub fn client_first(&mut self) -> Vec<u8> {
        let nonce = b64_encode(&random_bytes::<CLIENT_NONCE_LEN>());
        self.client_first_with("", nonce)
    }

    /// `user` must already be a SCRAM saslname (no ',' or '='); tests use it for RFC vectors.
    fn client_first_with(&mut self, user: &str, client_nonce: String) -> Vec<u8> {
        let client_first_bare = format!("n={user},r={client_nonce}");
        let message = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        self.stage = Stage::AwaitServerFirst {
            client_nonce,
            client_first_bare,
        };
        message
    }

    /// Handles server-first-message `r=<nonce>,s=<salt>,i=<iterations>` and returns the
    /// client-final-message with the proof. Rejects a nonce that does not extend ours, a bad
    /// salt, `m=` extensions, trailing data, iteration counts outside 1..=1,000,000 (password
    /// mode) and, in pass-through mode, any salt/count other than the stored secret's.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let (client_nonce, client_first_bare) =
            match std::mem::replace(&mut self.stage, Stage::Ended) {
                Stage::AwaitServerFirst {
                    client_nonce,
                    client_first_bare,
                } => (client_nonce, client_first_bare),
                _ => {
                    return Err(ScramError::OutOfOrder {
                        expected: "client_first call",
                    })
                }
            };
        check_len(data)?;
        let parsed = parse_server_first(data)?;
        if parsed.nonce.len() <= client_nonce.len()
            || !parsed.nonce.starts_with(client_nonce.as_bytes())
        {
            return Err(ScramError::NonceMismatch);
        }
        let (client_key, server_key) = self.derive_keys(&parsed.salt, parsed.iterations)?;

        let without_proof = format!(
            "c={},r={}",
            b64_encode(GS2_HEADER.as_bytes()),
            String::from_utf8_lossy(parsed.nonce)
        );
        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            data,
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(&sha256(&client_key), &auth_message);
        let proof = xor(&client_key, &client_signature);
        self.stage = Stage::AwaitServerFinal {
            server_signature: hmac_sha256(&server_key, &auth_message),
        };
        Ok(format!("{without_proof},p={}", b64_encode(&proof)).into_bytes())
    }

    /// ClientKey and ServerKey for the server's salt and iteration count.
    fn derive_keys(
        &self,
        salt: &[u8],
        iterations: u64,
    ) -> Result<([u8; KEY_LEN], [u8; KEY_LEN]), ScramError> {
        match &self.credential {
            Credential::Password(password) => {
                let iterations = u32::try_from(iterations)
                    .ok()
                    .filter(|n| (1..=MAX_CLIENT_ITERATIONS).contains(n))
                    .ok_or(ScramError::IterationCount {
                        iterations,
                        max: MAX_CLIENT_ITERATIONS,
                    })?;
                let salted = salted_password(password, salt, iterations);
                Ok((
                    hmac_sha256(&salted, &[b"Client Key"]),
                    hmac_sha256(&salted, &[b"Server Key"]),
                ))
            }
            Credential::ClientKey { client_key, secret } => {
                if salt != secret.salt.as_slice() || iterations != u64::from(secret.iterations) {
                    return Err(ScramError::SecretMismatch);
                }
                Ok((*client_key, secret.server_key))
            }
        }
    }

    /// Handles server-final-message: `v=<signature>` must match the expected
    /// ServerSignature (constant time); `e=<code>` becomes [`ScramError::ServerError`].
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let expected = match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::AwaitServerFinal { server_signature } => server_signature,
            _ => {
                return Err(ScramError::OutOfOrder {
                    expected: "server-first-message",
                })
            }
        };
        check_len(data)?;
        let mut reader = AttrReader::new(data);
        if reader.peek_name() == Some(b'e') {
            let code = reader.expect(b'e', "server error")?;
            return Err(ScramError::ServerError {
                code: sanitize_error_code(code),
            });
        }
        let signature = reader.expect(b'v', "server signature")?;
        if !reader.is_done() {
            return Err(ScramError::Malformed {
                what: "data after server signature",
            });
        }
        let signature = b64_decode_key(signature).ok_or(ScramError::Malformed {
            what: "server signature",
        })?;
        if bool::from(signature.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }
}

struct ServerFirst<'a> {
    nonce: &'a [u8],
    salt: Vec<u8>,
    iterations: u64,
}

/// Parses server-first-message; like libpq, anything after `i=` is an error.
fn parse_server_first(data: &[u8]) -> Result<ServerFirst<'_>, ScramError> {
    let mut reader = AttrReader::new(data);
    if reader.peek_name() == Some(b'm') {
        return Err(ScramError::ExtensionNotSupported);
    }
    let nonce = reader.expect(b'r', "server nonce")?;
    if !is_printable_nonce(nonce) {
        return Err(ScramError::Malformed {
            what: "server nonce",
        });
    }
    let salt = b64_decode(reader.expect(b's', "salt")?)
        .filter(|salt| !salt.is_empty())
        .ok_or(ScramError::Malformed { what: "salt" })?;
    let iterations = parse_iterations(reader.expect(b'i', "iteration count")?)?;
    if !reader.is_done() {
        return Err(ScramError::Malformed {
            what: "data after iteration count",
        });
    }
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// Decimal digits only; values too large for u64 saturate (and are refused by the caller).
fn parse_iterations(text: &[u8]) -> Result<u64, ScramError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(ScramError::Malformed {
            what: "iteration count",
        });
    }
    Ok(text.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Keeps at most 64 printable ASCII characters of a server-supplied error value.
fn sanitize_error_code(code: &[u8]) -> String {
    code.iter()
        .take(MAX_SERVER_ERROR_LEN)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "scram_client_tests.rs"]
mod tests;
