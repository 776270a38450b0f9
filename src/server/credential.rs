//! What pgfunnel logs in to a server with: a stored password or md5 hash, or (SCRAM
//! pass-through) the ClientKey a client proved against the same stored SCRAM secret.
//! Never logged: every `Debug` here is redacted.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::auth::{ScramSecret, Secret};

/// A ClientKey for SCRAM pass-through and the secret it was proved against.
struct PassThroughKey {
    secret: ScramSecret,
    client_key: [u8; 32],
}

/// The latest ClientKey a client proved for a pool's user. Empty until the first client
/// of that user logs in with SCRAM; replaced at every such login, so a password change in
/// the auth_file or in Postgres (seen through auth_query) is picked up by the next login.
#[derive(Default)]
pub struct PassThrough {
    current: ArcSwapOption<PassThroughKey>,
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.current.load().is_some() {
            "PassThrough(<key redacted>)"
        } else {
            "PassThrough(empty)"
        };
        f.write_str(state)
    }
}

impl PassThrough {
    /// Stores the ClientKey recovered from a client's valid proof against `secret`.
    pub fn learn(&self, secret: &ScramSecret, client_key: [u8; 32]) {
        self.current.store(Some(Arc::new(PassThroughKey {
            secret: secret.clone(),
            client_key,
        })));
    }

    /// The key and its secret, when a client has logged in already.
    pub fn current(&self) -> Option<(ScramSecret, [u8; 32])> {
        self.current
            .load()
            .as_ref()
            .map(|k| (k.secret.clone(), k.client_key))
    }
}

/// What pgfunnel logs in to the server with.
#[derive(Clone)]
pub enum ServerCredential {
    /// A stored plain password or md5 hash from the config or auth_file.
    Secret(Secret),
    /// The user's stored secret is SCRAM: log in with the ClientKey its clients prove.
    PassThrough(Arc<PassThrough>),
    /// No password known: only trust (or peer) authentication can work.
    None,
}

impl ServerCredential {
    /// True when both log in the same way (same stored secret, or both pass-through).
    pub fn same_login(&self, other: &ServerCredential) -> bool {
        match (self, other) {
            (ServerCredential::Secret(a), ServerCredential::Secret(b)) => a == b,
            (ServerCredential::PassThrough(_), ServerCredential::PassThrough(_)) => true,
            (ServerCredential::None, ServerCredential::None) => true,
            _ => false,
        }
    }
}

impl std::fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            ServerCredential::PassThrough(p) => p.fmt(f),
            ServerCredential::None => f.write_str("None"),
        }
    }
}

impl ServerCredential {
    /// The credential for a stored secret: SCRAM secrets can only be passed through.
    pub fn for_secret(secret: Option<Secret>) -> ServerCredential {
        match secret {
            Some(Secret::Scram(_)) => ServerCredential::PassThrough(Arc::default()),
            Some(s) => ServerCredential::Secret(s),
            None => ServerCredential::None,
        }
    }

    /// After a client of this pool's user logged in with SCRAM against `secret`: remember
    /// its ClientKey for pass-through. No effect for other credentials or secrets.
    pub fn learn(&self, secret: Option<&Secret>, client_key: Option<[u8; 32]>) {
        if let (ServerCredential::PassThrough(p), Some(Secret::Scram(s)), Some(key)) =
            (self, secret, client_key)
        {
            p.learn(s, key);
        }
    }

    /// The plain password, when that is what is stored.
    pub fn plain_password(&self) -> Option<&str> {
        match self {
            ServerCredential::Secret(Secret::Plain(p)) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_secrets_become_pass_through_and_learn_keys() {
        let secret = ScramSecret::from_password(b"pw", b"salt", 16);
        let cred = ServerCredential::for_secret(Some(Secret::Scram(secret.clone())));
        let ServerCredential::PassThrough(p) = &cred else {
            panic!("expected pass-through, got {cred:?}");
        };
        assert!(p.current().is_none());
        assert_eq!(format!("{cred:?}"), "PassThrough(empty)");
        cred.learn(Some(&Secret::Scram(secret.clone())), Some([7; 32]));
        let (s, key) = p.current().expect("learned");
        assert_eq!((s, key), (secret, [7; 32]));
        assert!(!format!("{cred:?}").contains('7'));
    }

    #[test]
    fn plain_secrets_do_not_learn() {
        let cred = ServerCredential::for_secret(Some(Secret::Plain("pw".into())));
        cred.learn(Some(&Secret::Plain("pw".into())), Some([1; 32]));
        assert_eq!(cred.plain_password(), Some("pw"));
        assert!(matches!(
            ServerCredential::for_secret(None),
            ServerCredential::None
        ));
    }
}
