//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677, as Postgres implements it in
//! `auth-scram.c`): a sans-I/O state machine that verifies a client and recovers its
//! ClientKey for SCRAM pass-through. Does not frame SASL messages or talk to sockets.

use super::channel_binding::TLS_SERVER_END_POINT;
use super::crypto::{b64_decode, b64_encode, hmac_sha256, random_bytes, sha256, xor, KEY_LEN};
use super::scram_wire::{
    check_len, is_printable_nonce, AttrReader, ScramError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use super::secret::{ScramSecret, DEFAULT_SCRAM_ITERATIONS, DEFAULT_SCRAM_SALT_LEN};
use std::fmt;
use subtle::ConstantTimeEq;

/// Random bytes in the server's part of the nonce (Postgres's SCRAM_RAW_NONCE_LEN).
const SERVER_NONCE_LEN: usize = 18;

/// Result of a successful exchange.
///
/// `Debug` redacts `client_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramOutcome {
    /// server-final-message (`v=<base64 ServerSignature>`) to send in AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey, recovered from its proof. Password-equivalent for this
    /// secret: keep it in memory only, for SCRAM pass-through to the server.
    pub client_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramOutcome").finish_non_exhaustive()
    }
}

/// Data kept between client-first and client-final.
struct Exchange {
    /// What `c=` of client-final must decode to: the gs2 header, plus the channel binding
    /// data when the client uses channel binding.
    expected_cbind: Vec<u8>,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
    /// client nonce + server nonce, as sent in server-first.
    full_nonce: Vec<u8>,
}

enum Stage {
    AwaitClientFirst,
    AwaitClientFinal(Exchange),
    Ended,
}

/// One client's SCRAM-SHA-256 exchange, server side. Call [`ScramServer::client_first`] with
/// the SASLInitialResponse, then [`ScramServer::client_final`] with the SASLResponse. Any
/// error ends the exchange; later calls return [`ScramError::OutOfOrder`].
///
/// Input is untrusted: messages over 4 KiB are rejected, no byte sequence panics, and memory
/// use is bounded by the message size.
pub struct ScramServer {
    secret: ScramSecret,
    /// True for the mock exchange of an unknown user: identical work, always `InvalidProof`.
    doomed: bool,
    /// `tls-server-end-point` data of this TLS connection; `Some` offers
    /// `SCRAM-SHA-256-PLUS`.
    channel_binding: Option<Vec<u8>>,
    stage: Stage,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::AwaitClientFirst => "await_client_first",
            Stage::AwaitClientFinal(_) => "await_client_final",
            Stage::Ended => "ended",
        };
        f.debug_struct("ScramServer")
            .field("stage", &stage)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Exchange that verifies the client against `secret`. For a cleartext stored password,
    /// pass [`ScramSecret::for_plain_password`].
    pub fn new(secret: ScramSecret) -> ScramServer {
        ScramServer {
            secret,
            doomed: false,
            channel_binding: None,
            stage: Stage::AwaitClientFirst,
        }
    }

    /// Mock exchange for a user that does not exist, indistinguishable on the wire and in
    /// work done from a wrong password: the salt is derived from `user` with HMAC under
    /// `mock_key` (so repeated attempts see the same salt, like a real user), iterations are
    /// 4096, and [`ScramServer::client_final`] always ends in [`ScramError::InvalidProof`].
    /// `mock_key` must be a per-process random secret, e.g. from
    /// [`ScramServer::generate_mock_key`], shared by all connections.
    pub fn for_unknown_user(user: &str, mock_key: &[u8]) -> ScramServer {
        let name = user.as_bytes();
        let salt_full = hmac_sha256(mock_key, &[b"scram mock salt\0", name]);
        let secret = ScramSecret {
            iterations: DEFAULT_SCRAM_ITERATIONS,
            salt: salt_full[..DEFAULT_SCRAM_SALT_LEN].to_vec(),
            stored_key: hmac_sha256(mock_key, &[b"scram mock stored key\0", name]),
            server_key: hmac_sha256(mock_key, &[b"scram mock server key\0", name]),
        };
        ScramServer {
            secret,
            doomed: true,
            channel_binding: None,
            stage: Stage::AwaitClientFirst,
        }
    }

    /// A fresh random key for [`ScramServer::for_unknown_user`]; generate once per process.
    pub fn generate_mock_key() -> [u8; KEY_LEN] {
        random_bytes()
    }

    /// Offers `SCRAM-SHA-256-PLUS` with this `tls-server-end-point` binding data (see
    /// [`super::tls_server_end_point`]); pass `None` on plaintext connections.
    pub fn with_channel_binding(mut self, data: Option<Vec<u8>>) -> ScramServer {
        self.channel_binding = data;
        self
    }

    /// SASL mechanism names to list in AuthenticationSASL, preferred first:
    /// `SCRAM-SHA-256-PLUS` (when channel binding is available) and `SCRAM-SHA-256`.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.channel_binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Handles SASLInitialResponse: `mechanism` and its data, a client-first-message
    /// `<gs2 flag>,,n=<user>,r=<nonce>[,ext…]`. Applies Postgres's channel binding rules:
    /// `SCRAM-SHA-256-PLUS` (only when offered) needs `p=tls-server-end-point`;
    /// `SCRAM-SHA-256` takes `n`, or `y` only when binding is not offered (otherwise it is a
    /// downgrade). Rejects `a=` (authzid), `m=` and a non-printable nonce. The user name is
    /// ignored, as Postgres does (the startup packet's user counts). Returns the
    /// server-first-message `r=<nonce>,s=<salt>,i=<iterations>` to send in
    /// AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_nonce = b64_encode(&random_bytes::<SERVER_NONCE_LEN>());
        self.client_first_with_nonce(mechanism, data, server_nonce.as_bytes())
    }

    fn client_first_with_nonce(
        &mut self,
        mechanism: &str,
        data: &[u8],
        server_nonce: &[u8],
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.stage, Stage::AwaitClientFirst) {
            self.stage = Stage::Ended;
            return Err(ScramError::OutOfOrder {
                expected: "client-final-message",
            });
        }
        self.stage = Stage::Ended;
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if self.channel_binding.is_some() => true,
            _ => return Err(ScramError::UnsupportedMechanism),
        };
        check_len(data)?;
        let (gs2_header, bare) = split_gs2_header(data)?;
        let expected_cbind = self.expected_cbind(plus, gs2_header)?;
        let client_nonce = parse_client_first_bare(bare)?;

        let mut full_nonce = Vec::with_capacity(client_nonce.len() + server_nonce.len());
        full_nonce.extend_from_slice(client_nonce);
        full_nonce.extend_from_slice(server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            String::from_utf8_lossy(&full_nonce),
            b64_encode(&self.secret.salt),
            self.secret.iterations
        )
        .into_bytes();
        self.stage = Stage::AwaitClientFinal(Exchange {
            expected_cbind,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            full_nonce,
        });
        Ok(server_first)
    }

    /// Handles the SASLResponse carrying client-final-message
    /// `c=<b64 gs2 header>,r=<nonce>[,ext…],p=<b64 proof>`. Checks that the channel binding
    /// data repeats the gs2 header, that the nonce is the negotiated one, and that
    /// H(proof XOR HMAC(StoredKey, AuthMessage)) equals StoredKey (constant time). On success
    /// returns the server-final-message and the recovered ClientKey; a wrong proof (and
    /// every mock exchange) gives [`ScramError::InvalidProof`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<ScramOutcome, ScramError> {
        let exchange = match std::mem::replace(&mut self.stage, Stage::Ended) {
            Stage::AwaitClientFinal(exchange) => exchange,
            _ => {
                return Err(ScramError::OutOfOrder {
                    expected: "client-first-message",
                })
            }
        };
        check_len(data)?;
        let parsed = parse_client_final(data)?;
        // Postgres compares the decoded c= data with the gs2 header of client-first (plus
        // the binding data when channel binding is used).
        if b64_decode(parsed.channel_binding).as_deref() != Some(&exchange.expected_cbind[..]) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if parsed.nonce != &exchange.full_nonce[..] {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message: [&[u8]; 5] = [
            &exchange.client_first_bare,
            b",",
            &exchange.server_first,
            b",",
            parsed.without_proof,
        ];
        let client_signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let client_key = xor(&parsed.proof, &client_signature);
        let proof_ok: bool = sha256(&client_key).ct_eq(&self.secret.stored_key).into();
        // Computed whether or not the proof holds so both paths do the same work.
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        if !proof_ok || self.doomed {
            return Err(ScramError::InvalidProof);
        }
        Ok(ScramOutcome {
            server_final: format!("v={}", b64_encode(&server_signature)).into_bytes(),
            client_key,
        })
    }
}

impl ScramServer {
    /// Checks the gs2 flag against the mechanism and what was offered; returns what `c=`
    /// of client-final must decode to.
    fn expected_cbind(&self, plus: bool, gs2_header: &[u8]) -> Result<Vec<u8>, ScramError> {
        let mut expected = gs2_header.to_vec();
        match (gs2_header.first(), plus) {
            (Some(b'p'), true) => {
                let name = &gs2_header[2..gs2_header.len() - 2];
                if name != TLS_SERVER_END_POINT.as_bytes() {
                    return Err(ScramError::UnsupportedChannelBindingType);
                }
                let data = self.channel_binding.as_deref().unwrap_or_default();
                expected.extend_from_slice(data);
            }
            (Some(b'p'), false) if self.channel_binding.is_none() => {
                return Err(ScramError::ChannelBindingNotSupported)
            }
            (Some(b'p'), false) => {
                return Err(ScramError::Malformed {
                    what: "channel binding data without SCRAM-SHA-256-PLUS",
                })
            }
            (_, true) => {
                return Err(ScramError::Malformed {
                    what: "SCRAM-SHA-256-PLUS without channel binding data",
                })
            }
            (Some(b'y'), false) if self.channel_binding.is_some() => {
                return Err(ScramError::ChannelBindingDowngrade)
            }
            _ => {}
        }
        Ok(expected)
    }
}

/// Splits `<flag>,[a=…],` from client-first: `n,,`, `y,,` or `p=<cb-name>,,`.
fn split_gs2_header(data: &[u8]) -> Result<(&[u8], &[u8]), ScramError> {
    let flag_end = match data.first() {
        Some(b'n') | Some(b'y') => 1,
        Some(b'p') if data.get(1) == Some(&b'=') => {
            let name_len = data[2..].iter().position(|&b| b == b',');
            match name_len {
                Some(n) if n > 0 => 2 + n,
                _ => return Err(ScramError::Malformed { what: "gs2 header" }),
            }
        }
        _ => return Err(ScramError::Malformed { what: "gs2 flag" }),
    };
    if data.get(flag_end) != Some(&b',') {
        return Err(ScramError::Malformed { what: "gs2 header" });
    }
    if data.get(flag_end + 1..flag_end + 3) == Some(b"a=") {
        return Err(ScramError::AuthzidNotSupported);
    }
    if data.get(flag_end + 1) != Some(&b',') {
        return Err(ScramError::Malformed { what: "gs2 header" });
    }
    Ok(data.split_at(flag_end + 2))
}

/// Parses client-first-message-bare, returning the client nonce.
fn parse_client_first_bare(bare: &[u8]) -> Result<&[u8], ScramError> {
    let mut reader = AttrReader::new(bare);
    if reader.peek_name() == Some(b'm') {
        return Err(ScramError::ExtensionNotSupported);
    }
    // The user name is ignored (Postgres uses the startup packet's); any value is accepted.
    reader.expect(b'n', "user name")?;
    let nonce = reader.expect(b'r', "client nonce")?;
    if !is_printable_nonce(nonce) {
        return Err(ScramError::Malformed {
            what: "client nonce",
        });
    }
    while !reader.is_done() {
        reader.skip_any("extension")?;
    }
    Ok(nonce)
}

struct ClientFinal<'a> {
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    without_proof: &'a [u8],
    proof: [u8; KEY_LEN],
}

/// Parses client-final-message; the proof must be the last attribute.
fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    let mut reader = AttrReader::new(data);
    let channel_binding = reader.expect(b'c', "channel binding")?;
    let nonce = reader.expect(b'r', "nonce")?;
    while reader.peek_name() != Some(b'p') {
        if reader.is_done() {
            return Err(ScramError::Malformed { what: "proof" });
        }
        reader.skip_any("extension")?;
    }
    // The proof attribute starts after the ',' that ends client-final-without-proof.
    let without_proof = data
        .get(..reader.offset().saturating_sub(1))
        .ok_or(ScramError::Malformed { what: "proof" })?;
    let proof_b64 = reader.expect(b'p', "proof")?;
    if !reader.is_done() {
        return Err(ScramError::Malformed {
            what: "data after proof",
        });
    }
    let proof =
        super::crypto::b64_decode_key(proof_b64).ok_or(ScramError::Malformed { what: "proof" })?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
