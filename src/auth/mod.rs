//! Sans-I/O authentication building blocks: stored secrets and the auth_file, md5 and
//! cleartext verification, the SCRAM-SHA-256 server (clients → pgfunnel) and client
//! (pgfunnel → Postgres, including pass-through). No sockets, no async, no logging here.
//!
//! Security rule for callers: never log or put into a client-facing error a password, a
//! [`Secret`], a [`ScramOutcome::client_key`] or any SCRAM message body. The `Debug` impls
//! of this module's types redact all of them.

mod auth_file;
mod channel_binding;
mod crypto;
mod hba;
mod hba_path;
mod md5;
mod plain_cache;
mod scram;
mod scram_client;
mod scram_wire;
mod secret;

pub use self::md5::{md5_response, md5_secret, verify_md5_response, MD5_PASSWORD_LEN};
pub use auth_file::{AuthFile, AuthFileError, AuthFileSyntax};
pub use channel_binding::{tls_server_end_point, TLS_SERVER_END_POINT};
pub use hba::{Hba, HbaError, HbaMethod, HbaRequest};
pub use hba_path::resolve_hba_path;
pub use plain_cache::{derive_plain_scram, PlainScramCache};
pub use scram::{ScramOutcome, ScramServer};
pub use scram_client::{ScramClient, MAX_CLIENT_ITERATIONS};
pub use scram_wire::{ScramError, MAX_SCRAM_MESSAGE_LEN, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
pub use secret::{
    ScramSecret, ScramSecretError, Secret, DEFAULT_SCRAM_ITERATIONS, DEFAULT_SCRAM_SALT_LEN,
};

use subtle::ConstantTimeEq;

/// How pgfunnel challenges a client at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// AuthenticationSASL with `SCRAM-SHA-256`; drive a [`ScramServer`].
    ScramSha256,
    /// AuthenticationMD5Password with a random 4-byte salt; check with
    /// [`verify_md5_response`].
    Md5,
    /// AuthenticationCleartextPassword; check with [`verify_cleartext`].
    Plain,
    /// No password exchange (the user must still be known, per PgBouncer).
    Trust,
}

/// PgBouncer's rule for picking the challenge from the `auth_type` setting and the user's
/// stored secret (`None` when unknown): `md5` uses SCRAM when the secret is SCRAM (md5
/// cannot be checked against a SCRAM verifier), else md5; `scram-sha-256` is always SCRAM
/// (plain and md5 secrets are handled by the caller: plain via a cached
/// [`derive_plain_scram`], md5 cannot work); `plain` is cleartext; `trust` is
/// none. Names match case-insensitively. Any other name fails closed to SCRAM: validate
/// `auth_type` (and handle `cert`, `hba`, `any`, `pam`, `ldap`) before calling this.
pub fn choose_method(auth_type_name: &str, secret: Option<&Secret>) -> ClientAuthMethod {
    let name = auth_type_name.to_ascii_lowercase();
    match name.as_str() {
        "md5" => match secret {
            Some(Secret::Scram(_)) => ClientAuthMethod::ScramSha256,
            _ => ClientAuthMethod::Md5,
        },
        "plain" => ClientAuthMethod::Plain,
        "trust" => ClientAuthMethod::Trust,
        _ => ClientAuthMethod::ScramSha256,
    }
}

/// How many of the known users hold a SCRAM secret, out of how many: under
/// `auth_type = md5` those get a SCRAM challenge and the others an md5 one, and
/// [`choose_method_masked`] gives unknown users the same mix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretMix {
    /// Users whose secret is SCRAM.
    pub scram: usize,
    /// All users.
    pub total: usize,
}

impl SecretMix {
    /// Counts the secrets.
    pub fn of<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> SecretMix {
        let mut mix = SecretMix::default();
        for secret in secrets {
            mix.total += 1;
            mix.scram += usize::from(matches!(secret, Secret::Scram(_)));
        }
        mix
    }
}

/// [`choose_method`], except that a user with no stored secret does not stand out by the
/// kind of challenge: under `md5`, an unknown user gets SCRAM with the probability that a
/// known user would (`mix.scram / mix.total`), decided by an HMAC of the name under
/// `mock_key` so the same name always gets the same kind; with no known users at all it
/// gets SCRAM (what `auth_query` users with Postgres's default `password_encryption` get).
/// Every other `auth_type` already gives everybody the same kind.
pub fn choose_method_masked(
    auth_type_name: &str,
    secret: Option<&Secret>,
    user: &str,
    mock_key: &[u8],
    mix: SecretMix,
) -> ClientAuthMethod {
    let method = choose_method(auth_type_name, secret);
    if secret.is_some() || method != ClientAuthMethod::Md5 {
        return method;
    }
    if mix.total == 0 {
        return ClientAuthMethod::ScramSha256;
    }
    let digest = crypto::hmac_sha256(mock_key, &[b"challenge kind\0", user.as_bytes()]);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let draw = u64::from_be_bytes(head) % mix.total as u64;
    if draw < mix.scram as u64 {
        ClientAuthMethod::ScramSha256
    } else {
        ClientAuthMethod::Md5
    }
}

/// Checks a cleartext password (PasswordMessage body without its NUL) against any kind of
/// stored secret, in constant time with respect to the secret: plain secrets are compared
/// through their SHA-256 digests, md5 secrets by recomputing md5(password + user), SCRAM
/// secrets by deriving StoredKey with the stored salt and iterations (costs that many HMAC
/// rounds). Empty passwords never match, as in Postgres and PgBouncer.
pub fn verify_cleartext(secret: &Secret, user: &str, password: &[u8]) -> bool {
    if password.is_empty() {
        return false;
    }
    match secret {
        Secret::Plain(stored) => {
            // Hashing first hides the stored password's length from the comparison.
            !stored.is_empty()
                && bool::from(crypto::sha256(stored.as_bytes()).ct_eq(&crypto::sha256(password)))
        }
        Secret::Md5(stored) => md5_secret(user, password)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into(),
        Secret::Scram(stored) => {
            let derived = ScramSecret::from_password(password, &stored.salt, stored.iterations);
            derived.stored_key.ct_eq(&stored.stored_key).into()
        }
    }
}

/// The SCRAM ClientKey of a cleartext `password` checked against a stored SCRAM secret
/// (one derivation, as [`verify_cleartext`] costs): `Some` only when the password is the
/// one the secret was made from. Lets a cleartext login drive SCRAM pass-through.
pub fn scram_client_key_of(stored: &ScramSecret, password: &[u8]) -> Option<[u8; 32]> {
    if password.is_empty() {
        return None;
    }
    let salted = secret::salted_password(password, &stored.salt, stored.iterations.max(1));
    let client_key = crypto::hmac_sha256(&salted, &[b"Client Key"]);
    bool::from(crypto::sha256(&client_key).ct_eq(&stored.stored_key)).then_some(client_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_auth_type_switches_to_scram_for_scram_secrets() {
        let scram = Secret::Scram(ScramSecret::from_password(b"pw", b"salt", 1));
        let md5 = Secret::Md5(md5_secret("u", b"pw"));
        let plain = Secret::Plain("pw".into());
        assert_eq!(
            choose_method("md5", Some(&scram)),
            ClientAuthMethod::ScramSha256
        );
        assert_eq!(choose_method("md5", Some(&md5)), ClientAuthMethod::Md5);
        assert_eq!(choose_method("md5", Some(&plain)), ClientAuthMethod::Md5);
        assert_eq!(choose_method("md5", None), ClientAuthMethod::Md5);
    }

    #[test]
    fn other_auth_types_map_directly_and_unknown_fails_closed() {
        let plain = Secret::Plain("pw".into());
        assert_eq!(
            choose_method("scram-sha-256", Some(&plain)),
            ClientAuthMethod::ScramSha256
        );
        assert_eq!(
            choose_method("SCRAM-SHA-256", None),
            ClientAuthMethod::ScramSha256
        );
        assert_eq!(
            choose_method("plain", Some(&plain)),
            ClientAuthMethod::Plain
        );
        assert_eq!(choose_method("trust", None), ClientAuthMethod::Trust);
        assert_eq!(choose_method("bogus", None), ClientAuthMethod::ScramSha256);
    }

    #[test]
    fn unknown_users_under_md5_follow_the_mix_of_known_users() {
        let key = [3u8; 32];
        let names: Vec<String> = (0..400).map(|i| format!("nobody{i}")).collect();
        let scram_count = |mix| {
            names
                .iter()
                .filter(|n| {
                    choose_method_masked("md5", None, n, &key, mix) == ClientAuthMethod::ScramSha256
                })
                .count()
        };
        assert_eq!(scram_count(SecretMix { scram: 5, total: 5 }), 400);
        assert_eq!(scram_count(SecretMix { scram: 0, total: 5 }), 0);
        assert_eq!(scram_count(SecretMix { scram: 0, total: 0 }), 400);
        let half = scram_count(SecretMix { scram: 1, total: 2 });
        assert!((120..=280).contains(&half), "{half}");
        // Stable per name.
        let mix = SecretMix { scram: 1, total: 2 };
        for n in &names[..20] {
            assert_eq!(
                choose_method_masked("md5", None, n, &key, mix),
                choose_method_masked("md5", None, n, &key, mix)
            );
        }
        // Known users and other auth types are unchanged.
        let md5 = Secret::Md5(md5_secret("u", b"pw"));
        let all_scram = SecretMix { scram: 1, total: 1 };
        assert_eq!(
            choose_method_masked("md5", Some(&md5), "u", &key, all_scram),
            ClientAuthMethod::Md5
        );
        assert_eq!(
            choose_method_masked("plain", None, "u", &key, all_scram),
            ClientAuthMethod::Plain
        );
    }

    #[test]
    fn secret_mix_counts_scram_secrets() {
        let secrets = [
            Secret::Plain("pw".into()),
            Secret::Scram(ScramSecret::from_password(b"pw", b"salt", 1)),
            Secret::Md5(md5_secret("u", b"pw")),
        ];
        assert_eq!(SecretMix::of(&secrets), SecretMix { scram: 1, total: 3 });
    }

    #[test]
    fn verify_cleartext_accepts_right_password_for_every_secret_kind() {
        let secrets = [
            Secret::Plain("pencil".into()),
            Secret::Md5(md5_secret("user", b"pencil")),
            Secret::Scram(ScramSecret::from_password(b"pencil", b"salt", 16)),
        ];
        for secret in &secrets {
            assert!(verify_cleartext(secret, "user", b"pencil"), "{secret:?}");
            assert!(!verify_cleartext(secret, "user", b"pencil2"), "{secret:?}");
            assert!(!verify_cleartext(secret, "user", b""), "{secret:?}");
        }
        // md5 secrets are bound to the user name.
        assert!(!verify_cleartext(&secrets[1], "other", b"pencil"));
    }

    #[test]
    fn verify_cleartext_rejects_empty_stored_password() {
        assert!(!verify_cleartext(&Secret::Plain(String::new()), "u", b"x"));
    }
}
