//! SCRAM-SHA-256 message grammar (RFC 5802 §7) shared by the server and client state
//! machines: the error type, length limits and a bounds-checked attribute reader. Owns no
//! state and no cryptography.

/// SCRAM without channel binding, offered on every connection.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// SCRAM with `tls-server-end-point` channel binding, offered over TLS only.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Largest SCRAM message accepted from a peer, in bytes; larger input is rejected before
/// any parsing. Real messages are under 300 bytes.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 4096;

/// Why a SCRAM exchange failed. Messages name the failing step only: they never contain a
/// password, key, proof, nonce or any other part of a SCRAM payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message is longer than [`MAX_SCRAM_MESSAGE_LEN`].
    #[error("SCRAM message of {len} bytes exceeds the {max}-byte limit")]
    MessageTooLong {
        /// Length received.
        len: usize,
        /// Limit applied.
        max: usize,
    },
    /// The client selected a mechanism other than `SCRAM-SHA-256`.
    #[error("client selected an unsupported SASL mechanism")]
    UnsupportedMechanism,
    /// A message does not follow the SCRAM grammar.
    #[error("malformed SCRAM message: {what}")]
    Malformed {
        /// Which part was wrong, e.g. "nonce" or "gs2 header".
        what: &'static str,
    },
    /// The client asked for channel binding (`p=` gs2 flag) where none is offered
    /// (plaintext connection, or a certificate without a usable signature hash).
    #[error("SCRAM channel binding is not supported on this connection")]
    ChannelBindingNotSupported,
    /// The client asked for a channel binding type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type")]
    UnsupportedChannelBindingType,
    /// The client sent gs2 flag `y` (it supports channel binding but thinks the server does
    /// not) although binding was offered: a possible downgrade attack.
    #[error("SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not; this server does support channel binding")]
    ChannelBindingDowngrade,
    /// The client sent an authorization identity (`a=`), which Postgres does not support.
    #[error("SCRAM authorization identity is not supported")]
    AuthzidNotSupported,
    /// A mandatory extension (`m=`) was sent; none are supported.
    #[error("SCRAM mandatory extensions are not supported")]
    ExtensionNotSupported,
    /// The `c=` attribute of client-final does not repeat the gs2 header of client-first.
    #[error("SCRAM channel binding data does not match the gs2 header")]
    ChannelBindingMismatch,
    /// The nonce in a later message does not match the one negotiated.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof does not verify (wrong password or unknown user): answer 28P01.
    #[error("SCRAM client proof is invalid")]
    InvalidProof,
    /// The server's signature does not verify: the server does not know the secret.
    #[error("SCRAM server signature is invalid")]
    InvalidServerSignature,
    /// The server demanded an iteration count outside the accepted range.
    #[error("SCRAM iteration count {iterations} is outside 1..={max}")]
    IterationCount {
        /// Count the server sent (saturated at `u64::MAX`).
        iterations: u64,
        /// Largest count accepted.
        max: u32,
    },
    /// The server's salt or iteration count differs from the stored secret, so SCRAM
    /// pass-through with a recovered ClientKey cannot work.
    #[error("server SCRAM salt or iteration count differs from the stored secret")]
    SecretMismatch,
    /// The server ended the exchange with `e=<code>`; `code` is sanitized and bounded.
    #[error("server rejected SCRAM authentication: {code}")]
    ServerError {
        /// RFC 5802 server-error-value (printable ASCII, at most 64 characters).
        code: String,
    },
    /// A step was called in the wrong order or after the exchange ended (or failed).
    #[error("SCRAM step out of order: expected {expected}")]
    OutOfOrder {
        /// The step the state machine was waiting for.
        expected: &'static str,
    },
}

impl ScramError {
    /// SQLSTATE to report to a client whose authentication failed with this error:
    /// `28P01` (invalid_password) for a wrong proof, `08P01` (protocol_violation) otherwise,
    /// as Postgres does.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::InvalidProof => crate::error::ErrorKind::Auth.sqlstate(),
            _ => crate::error::ErrorKind::Protocol.sqlstate(),
        }
    }
}

/// Rejects messages over [`MAX_SCRAM_MESSAGE_LEN`].
pub(crate) fn check_len(data: &[u8]) -> Result<(), ScramError> {
    if data.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(ScramError::MessageTooLong {
            len: data.len(),
            max: MAX_SCRAM_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// RFC 5802 `printable`: 0x21-0x7E except ','; nonces must consist of these.
pub(crate) fn is_printable_nonce(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Sequential reader of `name=value` attributes separated by ','. Never panics; every
/// accessor checks bounds.
pub(crate) struct AttrReader<'a> {
    data: &'a [u8],
    /// Offset of the next attribute; `None` once the last attribute (no trailing ',') is read.
    pos: Option<usize>,
}

impl<'a> AttrReader<'a> {
    /// Reader positioned at the start of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        AttrReader { data, pos: Some(0) }
    }

    /// Name of the next attribute if the input continues with `<letter>=`.
    pub(crate) fn peek_name(&self) -> Option<u8> {
        let rest = self.data.get(self.pos?..)?;
        match rest {
            [name, b'=', ..] if name.is_ascii_alphabetic() => Some(*name),
            _ => None,
        }
    }

    /// Offset where the next attribute starts (the input length once everything is read).
    pub(crate) fn offset(&self) -> usize {
        self.pos.unwrap_or(self.data.len())
    }

    /// True when every attribute has been read and no trailing ',' was left.
    pub(crate) fn is_done(&self) -> bool {
        self.pos.is_none()
    }

    /// Reads attribute `name`, returning its value (possibly empty); `Malformed { what }`
    /// when the next attribute has another name or the input is exhausted.
    pub(crate) fn expect(&mut self, name: u8, what: &'static str) -> Result<&'a [u8], ScramError> {
        match self.peek_name() {
            Some(found) if found == name => self.next_value(),
            _ => Err(ScramError::Malformed { what }),
        }
    }

    /// Reads whatever attribute comes next (an optional extension), returning its name.
    pub(crate) fn skip_any(&mut self, what: &'static str) -> Result<u8, ScramError> {
        let name = self.peek_name().ok_or(ScramError::Malformed { what })?;
        self.next_value()?;
        Ok(name)
    }

    fn next_value(&mut self) -> Result<&'a [u8], ScramError> {
        let start = self
            .pos
            .ok_or(ScramError::Malformed { what: "attribute" })?
            + 2;
        let body = self.data.get(start..).unwrap_or_default();
        match body.iter().position(|&b| b == b',') {
            Some(comma) => {
                self.pos = Some(start + comma + 1);
                Ok(&body[..comma])
            }
            None => {
                self.pos = None;
                Ok(body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_reader_reads_values_in_order_and_tracks_end() {
        let mut reader = AttrReader::new(b"n=,r=abc,x=1");
        assert_eq!(reader.expect(b'n', "user"), Ok(&b""[..]));
        assert_eq!(reader.offset(), 3);
        assert_eq!(reader.expect(b'r', "nonce"), Ok(&b"abc"[..]));
        assert!(!reader.is_done());
        assert_eq!(reader.skip_any("ext"), Ok(b'x'));
        assert!(reader.is_done());
        assert_eq!(reader.offset(), 12);
        assert!(reader.expect(b'p', "proof").is_err());
    }

    #[test]
    fn attr_reader_rejects_trailing_comma_and_wrong_names() {
        let mut reader = AttrReader::new(b"r=abc,");
        assert!(reader.expect(b'r', "nonce").is_ok());
        assert!(!reader.is_done());
        assert_eq!(
            reader.expect(b's', "salt"),
            Err(ScramError::Malformed { what: "salt" })
        );
        let mut reader = AttrReader::new(b"=x");
        assert!(reader.skip_any("ext").is_err());
        let mut reader = AttrReader::new(b"");
        assert!(reader.expect(b'r', "nonce").is_err());
    }

    #[test]
    fn printable_nonce_excludes_comma_space_and_empty() {
        assert!(is_printable_nonce(
            b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        ));
        assert!(!is_printable_nonce(b""));
        assert!(!is_printable_nonce(b"a b"));
        assert!(!is_printable_nonce(b"a,b"));
        assert!(!is_printable_nonce(&[0x80]));
    }

    #[test]
    fn only_invalid_proof_maps_to_invalid_password_sqlstate() {
        assert_eq!(ScramError::InvalidProof.sqlstate(), "28P01");
        assert_eq!(ScramError::NonceMismatch.sqlstate(), "08P01");
    }
}
