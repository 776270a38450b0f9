//! Postgres's md5 password scheme: the stored form `md5(password + user)` and the salted
//! challenge response a client sends. Owns computation and verification, not the protocol
//! messages that carry them.

use super::secret::Secret;
use ::md5::{Digest, Md5};
use std::fmt::Write as _;
use subtle::ConstantTimeEq;

/// Length of an md5 secret or response: `"md5"` + 32 hex digits.
pub const MD5_PASSWORD_LEN: usize = 35;

/// Lowercase hex of md5 over the concatenation of `parts`.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest {
        write!(out, "{byte:02x}").expect("writing to a String cannot fail");
    }
    out
}

/// The stored md5 secret for a password: `"md5" + hex(md5(password + user))`, as
/// `CREATE ROLE … PASSWORD` produces with `password_encryption = md5`.
pub fn md5_secret(user: &str, password: &[u8]) -> String {
    format!("md5{}", md5_hex(&[password, user.as_bytes()]))
}

/// What a client answers to an md5 challenge (AuthenticationMD5Password) given the stored
/// secret: `"md5" + hex(md5(hex_part_of_secret + salt))`. `md5_secret` should carry the
/// `md5` prefix; if it does not, the whole string is used as the hex part. Also what pgfunnel
/// sends when a server challenges it with md5 and only the md5 secret is known.
pub fn md5_response(md5_secret: &str, salt: [u8; 4]) -> String {
    let hex = md5_secret.strip_prefix("md5").unwrap_or(md5_secret);
    format!("md5{}", md5_hex(&[hex.as_bytes(), &salt]))
}

/// Checks a client's md5 `response` (the PasswordMessage body without its terminating NUL)
/// against the stored secret for the challenge `salt`, in constant time for equal-length
/// input. Works for [`Secret::Plain`] (hashed with `user` first) and [`Secret::Md5`]; always
/// false for [`Secret::Scram`] (md5 cannot be checked against a SCRAM verifier, so
/// `choose_method` switches such users to SCRAM) and for an empty stored password.
pub fn verify_md5_response(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = match secret {
        // Empty passwords are refused, as PgBouncer and Postgres do.
        Secret::Plain(password) if password.is_empty() => return false,
        Secret::Plain(password) => md5_response(&md5_secret(user, password.as_bytes()), salt),
        Secret::Md5(stored) => md5_response(stored, salt),
        Secret::Scram(_) => return false,
    };
    response.len() == MD5_PASSWORD_LEN && bool::from(expected.as_bytes().ct_eq(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_secret_matches_postgres_for_password_user() {
        // SELECT 'md5' || md5('password' || 'user');
        assert_eq!(
            md5_secret("user", b"password"),
            "md54d45974e13472b5a0be3533de4666414"
        );
        // SELECT 'md5' || md5('foo' || 'postgres');
        assert_eq!(
            md5_secret("postgres", b"foo"),
            "md5128f0d64bfb424d132c3305b3057281c"
        );
    }

    #[test]
    fn md5_secret_matches_postgres_protocol_crate() {
        for (user, pw) in [("user", "password"), ("marko", "asdasd"), ("ü", "päss")] {
            assert_eq!(
                md5_secret(user, pw.as_bytes()),
                postgres_protocol::password::md5(pw.as_bytes(), user)
            );
        }
    }

    #[test]
    fn md5_response_hashes_hex_part_with_salt() {
        let secret = md5_secret("user", b"password");
        let salt = [0x01, 0x02, 0x03, 0x04];
        let mut input = secret.as_bytes()[3..].to_vec();
        input.extend_from_slice(&salt);
        assert_eq!(
            md5_response(&secret, salt),
            format!("md5{}", md5_hex(&[&input]))
        );
        assert_eq!(
            md5_response(&secret, salt),
            md5_response(&secret[3..], salt)
        );
    }

    #[test]
    fn verify_md5_response_accepts_plain_and_md5_secrets() {
        let salt = [9, 8, 7, 6];
        let response = md5_response(&md5_secret("user", b"password"), salt);
        let plain = Secret::Plain("password".into());
        let stored = Secret::Md5(md5_secret("user", b"password"));
        assert!(verify_md5_response(
            &plain,
            "user",
            salt,
            response.as_bytes()
        ));
        assert!(verify_md5_response(
            &stored,
            "user",
            salt,
            response.as_bytes()
        ));
    }

    #[test]
    fn verify_md5_response_rejects_wrong_input() {
        let salt = [9, 8, 7, 6];
        let response = md5_response(&md5_secret("user", b"password"), salt);
        let stored = Secret::Md5(md5_secret("user", b"password"));
        let plain = Secret::Plain("password".into());
        assert!(!verify_md5_response(
            &stored,
            "user",
            [0; 4],
            response.as_bytes()
        ));
        assert!(!verify_md5_response(
            &plain,
            "other",
            salt,
            response.as_bytes()
        ));
        assert!(!verify_md5_response(&stored, "user", salt, b""));
        assert!(!verify_md5_response(
            &stored,
            "user",
            salt,
            &response.as_bytes()[..34]
        ));
        let empty = Secret::Plain(String::new());
        let empty_response = md5_response(&md5_secret("user", b""), salt);
        assert!(!verify_md5_response(
            &empty,
            "user",
            salt,
            empty_response.as_bytes()
        ));
        let scram = Secret::Scram(crate::auth::ScramSecret::from_password(
            b"password",
            b"s",
            1,
        ));
        assert!(!verify_md5_response(
            &scram,
            "user",
            salt,
            response.as_bytes()
        ));
    }
}
