//! SCRAM verifiers for users whose stored secret is a plaintext password. Deriving one
//! costs 4096 HMAC rounds, so each is derived once per (user, password) with a salt that
//! is stable for the process (an HMAC of the user and password under the per-process mock
//! key, like the salts unknown users see) and kept here. The cache belongs to one loaded
//! auth_file: a reload builds a new one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use super::crypto::{hmac_sha256, sha256, KEY_LEN};
use super::secret::{ScramSecret, DEFAULT_SCRAM_ITERATIONS, DEFAULT_SCRAM_SALT_LEN};

/// Most verifiers kept; when full the cache starts over (entries come from the auth_file
/// and auth_query answers, so this is only reached by very large user lists).
const MAX_ENTRIES: usize = 65_536;

/// Derived verifiers by (user, SHA-256 of the password). `Debug` shows only the count.
#[derive(Default)]
pub struct PlainScramCache {
    entries: Mutex<HashMap<(String, [u8; KEY_LEN]), ScramSecret>>,
}

impl fmt::Debug for PlainScramCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.lock().len();
        f.debug_struct("PlainScramCache")
            .field("entries", &len)
            .finish()
    }
}

impl PlainScramCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, [u8; KEY_LEN]), ScramSecret>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verifier derived earlier for `user` with `password`, if any.
    pub fn get(&self, user: &str, password: &[u8]) -> Option<ScramSecret> {
        self.lock()
            .get(&(user.to_owned(), sha256(password)))
            .cloned()
    }

    /// Keeps `secret` as the verifier of `user` with `password`.
    pub fn insert(&self, user: &str, password: &[u8], secret: ScramSecret) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((user.to_owned(), sha256(password)), secret);
    }

    /// Number of verifiers kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing was derived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Derives the SCRAM verifier of a plaintext `password` for `user` with 4096 iterations and
/// a 16-byte salt that depends only on `mock_key`, `user` and `password`: repeated logins
/// see the same salt, as for a stored SCRAM secret or an unknown user. Costs 4096 HMAC
/// rounds: run it off the async workers and cache it in a [`PlainScramCache`].
pub fn derive_plain_scram(user: &str, password: &[u8], mock_key: &[u8]) -> ScramSecret {
    let salt = hmac_sha256(
        mock_key,
        &[b"plain scram salt\0", user.as_bytes(), b"\0", password],
    );
    ScramSecret::from_password(
        password,
        &salt[..DEFAULT_SCRAM_SALT_LEN],
        DEFAULT_SCRAM_ITERATIONS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_salt_is_stable_per_user_and_password() {
        let key = [7u8; 32];
        let a = derive_plain_scram("alice", b"pw", &key);
        assert_eq!(a, derive_plain_scram("alice", b"pw", &key));
        assert_eq!(a.salt.len(), DEFAULT_SCRAM_SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_SCRAM_ITERATIONS);
        assert_ne!(a.salt, derive_plain_scram("bob", b"pw", &key).salt);
        assert_ne!(a.salt, derive_plain_scram("alice", b"pw2", &key).salt);
        assert_ne!(a.salt, derive_plain_scram("alice", b"pw", &[8u8; 32]).salt);
        // The verifier checks the password like any other.
        assert_eq!(a, ScramSecret::from_password(b"pw", &a.salt, 4096));
    }

    #[test]
    fn cache_returns_what_was_inserted_for_the_same_password_only() {
        let cache = PlainScramCache::default();
        let secret = ScramSecret::from_password(b"pw", b"salt", 1);
        assert!(cache.get("alice", b"pw").is_none());
        cache.insert("alice", b"pw", secret.clone());
        assert_eq!(cache.get("alice", b"pw"), Some(secret));
        assert!(cache.get("alice", b"other").is_none());
        assert!(cache.get("bob", b"pw").is_none());
        assert_eq!(cache.len(), 1);
        assert!(!format!("{cache:?}").contains("salt"));
    }

    #[test]
    fn full_cache_starts_over_instead_of_growing() {
        let cache = PlainScramCache::default();
        let secret = ScramSecret::from_password(b"pw", b"salt", 1);
        for i in 0..MAX_ENTRIES {
            cache.insert(&i.to_string(), b"pw", secret.clone());
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        cache.insert("one more", b"pw", secret);
        assert_eq!(cache.len(), 1);
    }
}
