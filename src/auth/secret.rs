//! Stored user secrets as they appear in an auth_file or in `pg_authid.rolpassword`:
//! plain text, `md5…` or `SCRAM-SHA-256$…`. Owns parsing, formatting and derivation from a
//! password; verification lives in `md5.rs`, `scram.rs` and `mod.rs`.

use super::crypto::{
    b64_decode, b64_decode_key, b64_encode, hi, hmac_sha256, random_bytes, sha256,
};
use super::crypto::{saslprep_password, KEY_LEN};
use std::fmt;

/// Iteration count Postgres and PgBouncer use by default (`scram_iterations`).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;

/// Salt length in bytes Postgres uses for new SCRAM secrets.
pub const DEFAULT_SCRAM_SALT_LEN: usize = 16;

/// The SCRAM secret prefix Postgres writes into `rolpassword`.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Upper bound on the decoded salt length accepted from stored text; Postgres writes 16
/// bytes, and nothing legitimate comes close to this.
const MAX_SALT_LEN: usize = 1024;

/// A user's stored secret, classified the way Postgres's `get_password_type` does.
///
/// `Debug` never prints the secret material.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Cleartext password (anything that is neither a valid md5 nor a valid SCRAM secret).
    Plain(String),
    /// `"md5"` followed by exactly 32 lowercase hex digits: md5(password + user).
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

impl Secret {
    /// Classifies stored text: `md5` + 32 lowercase hex is [`Secret::Md5`], a well-formed
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` is [`Secret::Scram`], and anything
    /// else, including a malformed SCRAM string, is [`Secret::Plain`] (as in Postgres).
    pub fn parse(stored: &str) -> Secret {
        if is_md5_secret(stored) {
            return Secret::Md5(stored.to_owned());
        }
        match ScramSecret::parse(stored) {
            Ok(scram) => Secret::Scram(scram),
            Err(_) => Secret::Plain(stored.to_owned()),
        }
    }

    /// Short name of the secret kind for logs and diagnostics ("plain", "md5", "scram").
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret::{}(<redacted>)", self.kind())
    }
}

/// True when `text` is `md5` followed by exactly 32 lowercase hex digits (Postgres's rule).
fn is_md5_secret(text: &str) -> bool {
    text.len() == 35
        && text.starts_with("md5")
        && text[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a string is not a well-formed SCRAM-SHA-256 secret (no secret material is included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramSecretError {
    /// The text does not have the `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` shape.
    #[error("not in SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> format")]
    Format,
    /// The iteration count is not an integer in 1..=4294967295.
    #[error("invalid SCRAM iteration count")]
    Iterations,
    /// The salt is not valid base64, is empty, or is longer than 1024 bytes.
    #[error("invalid SCRAM salt")]
    Salt,
    /// A key is not base64 of exactly 32 bytes.
    #[error("invalid SCRAM {which}: expected base64 of 32 bytes")]
    Key {
        /// Which key failed: "StoredKey" or "ServerKey".
        which: &'static str,
    },
}

/// A SCRAM-SHA-256 verifier: what a server stores to check a client's proof without knowing
/// the password.
///
/// `Debug` shows only the iteration count and salt length.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// Hi() iteration count, at least 1.
    pub iterations: u32,
    /// Raw salt bytes (not base64).
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; KEY_LEN],
}

impl ScramSecret {
    /// Parses Postgres's text form `SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`.
    pub fn parse(text: &str) -> Result<ScramSecret, ScramSecretError> {
        let rest = text
            .strip_prefix(SCRAM_PREFIX)
            .ok_or(ScramSecretError::Format)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(ScramSecretError::Format)?;
        let (iter_text, salt_b64) = iter_salt.split_once(':').ok_or(ScramSecretError::Format)?;
        let (stored_b64, server_b64) = keys.split_once(':').ok_or(ScramSecretError::Format)?;
        if !iter_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScramSecretError::Iterations);
        }
        let iterations: u32 = iter_text
            .parse()
            .map_err(|_| ScramSecretError::Iterations)?;
        if iterations == 0 {
            return Err(ScramSecretError::Iterations);
        }
        if salt_b64.len() > MAX_SALT_LEN * 2 {
            return Err(ScramSecretError::Salt);
        }
        let salt = b64_decode(salt_b64.as_bytes())
            .filter(|s| !s.is_empty() && s.len() <= MAX_SALT_LEN)
            .ok_or(ScramSecretError::Salt)?;
        let stored_key = b64_decode_key(stored_b64.as_bytes())
            .ok_or(ScramSecretError::Key { which: "StoredKey" })?;
        let server_key = b64_decode_key(server_b64.as_bytes())
            .ok_or(ScramSecretError::Key { which: "ServerKey" })?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derives the verifier for `password` the way Postgres's `scram_build_secret` does:
    /// SASLprep (raw bytes when it fails or the bytes are not UTF-8), then
    /// SaltedPassword = Hi(password, salt, iterations). Costs `iterations` HMAC rounds;
    /// callers pass trusted counts only (an `iterations` of 0 is treated as 1).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let salted = salted_password(password, salt, iterations);
        ScramSecret::from_salted_password(&salted, salt.to_vec(), iterations)
    }

    /// A new verifier for `password` with a fresh random 16-byte salt and 4096 iterations,
    /// as Postgres stores one (for writing secrets, e.g. into an auth_file). Costs 4096 HMAC
    /// rounds. Client logins against a plaintext secret do not use this: a per-attempt
    /// random salt would tell that user apart; see [`super::derive_plain_scram`].
    pub fn for_plain_password(password: &[u8]) -> ScramSecret {
        let salt: [u8; DEFAULT_SCRAM_SALT_LEN] = random_bytes();
        ScramSecret::from_password(password, &salt, DEFAULT_SCRAM_ITERATIONS)
    }

    /// Builds the verifier from an already computed SaltedPassword.
    pub(crate) fn from_salted_password(
        salted: &[u8; KEY_LEN],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramSecret {
        let client_key = hmac_sha256(salted, &[b"Client Key"]);
        ScramSecret {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(salted, &[b"Server Key"]),
        }
    }
}

/// SaltedPassword = Hi(SASLprep(password), salt, iterations).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    hi(&saslprep_password(password), salt, iterations)
}

/// Formats the verifier in Postgres's `rolpassword` text form (round-trips through `parse`).
impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            b64_encode(&self.salt),
            b64_encode(&self.stored_key),
            b64_encode(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7677_SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn parse_classifies_md5_scram_and_plain() {
        let md5 = "md5".to_owned() + &"0123456789abcdef".repeat(2);
        assert!(matches!(Secret::parse(&md5), Secret::Md5(ref s) if *s == md5));
        assert!(matches!(Secret::parse(RFC7677_SECRET), Secret::Scram(_)));
        assert_eq!(Secret::parse("asdasd"), Secret::Plain("asdasd".into()));
        // Uppercase hex and wrong lengths are plain text, as in Postgres.
        let upper = "md5".to_owned() + &"0123456789ABCDEF".repeat(2);
        assert!(matches!(Secret::parse(&upper), Secret::Plain(_)));
        assert!(matches!(Secret::parse("md5abc"), Secret::Plain(_)));
        // A damaged SCRAM secret falls back to plain.
        let damaged = RFC7677_SECRET.replace("$4096:", "$x:");
        assert!(matches!(Secret::parse(&damaged), Secret::Plain(_)));
    }

    #[test]
    fn scram_secret_round_trips_through_text() {
        let secret = ScramSecret::parse(RFC7677_SECRET).expect("valid secret");
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt.len(), 16);
        assert_eq!(secret.to_string(), RFC7677_SECRET);
    }

    #[test]
    fn from_password_reproduces_rfc7677_verifier() {
        let expected = ScramSecret::parse(RFC7677_SECRET).expect("valid secret");
        let derived = ScramSecret::from_password(b"pencil", &expected.salt, 4096);
        assert_eq!(derived, expected);
    }

    #[test]
    fn scram_parse_reports_which_part_is_wrong() {
        let cases = [
            ("SCRAM-SHA-256$4096:c2FsdA==", ScramSecretError::Format),
            ("SCRAM-SHA-256$0:c2FsdA==$a:b", ScramSecretError::Iterations),
            (
                "SCRAM-SHA-256$+5:c2FsdA==$a:b",
                ScramSecretError::Iterations,
            ),
            ("SCRAM-SHA-256$4096:!!$a:b", ScramSecretError::Salt),
            ("SCRAM-SHA-256$4096:$a:b", ScramSecretError::Salt),
        ];
        for (text, err) in cases {
            assert_eq!(ScramSecret::parse(text), Err(err), "{text}");
        }
        let bad_key = RFC7677_SECRET.replace(":wfPL", ":AAwfPL");
        assert_eq!(
            ScramSecret::parse(&bad_key),
            Err(ScramSecretError::Key { which: "ServerKey" })
        );
    }

    #[test]
    fn debug_output_never_contains_secret_material() {
        let plain = Secret::Plain("hunter2".into());
        assert!(!format!("{plain:?}").contains("hunter2"));
        let scram = Secret::parse(RFC7677_SECRET);
        let shown = format!("{scram:?}");
        assert!(
            !shown.contains("W22Z") && !shown.contains("WG5d"),
            "{shown}"
        );
        let md5 = Secret::parse(&("md5".to_owned() + &"ab".repeat(16)));
        assert!(!format!("{md5:?}").contains("abab"));
    }

    #[test]
    fn from_password_matches_postgres_protocol_crate() {
        for password in ["pencil", "p\u{00A0}ss wörd", "\u{2163}"] {
            let theirs = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let theirs = ScramSecret::parse(&theirs).expect("crate emits valid secrets");
            let ours = ScramSecret::from_password(password.as_bytes(), &theirs.salt, 4096);
            assert_eq!(
                ours.to_string(),
                theirs.to_string(),
                "password {password:?}"
            );
        }
        // Non-UTF-8 passwords are used as raw bytes by both.
        let raw = [0xffu8, 0x00, 0x41];
        let theirs = postgres_protocol::password::scram_sha_256(&raw);
        let theirs = ScramSecret::parse(&theirs).expect("crate emits valid secrets");
        assert_eq!(ScramSecret::from_password(&raw, &theirs.salt, 4096), theirs);
    }
}
