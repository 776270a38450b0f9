//! The users pgfunnel authenticates clients against (auth_file entries, or the user and
//! password of the database entries in URL mode), with the challenge mix unknown users
//! copy and the SCRAM verifiers derived from plaintext secrets.

use std::collections::HashMap;

use anyhow::Context;

use crate::auth::{AuthFile, Secret};
use crate::config::Config;

/// Users pgfunnel can authenticate clients against: auth_file entries plus, in URL
/// mode, the upstream's user.
#[derive(Debug, Default)]
pub struct Users {
    secrets: HashMap<String, Secret>,
    from_file: bool,
    /// How many users hold SCRAM secrets (the challenge mix unknown users copy).
    mix: crate::auth::SecretMix,
    /// SCRAM verifiers derived from plaintext secrets; a reload starts a new one.
    plain_scram: crate::auth::PlainScramCache,
}

impl Users {
    /// Loads the auth_file named by the config (if any) and adds URL-mode credentials.
    pub fn load(config: &Config) -> anyhow::Result<Users> {
        let mut users = Users::default();
        if let Some(path) = &config.auth_file_path {
            let file = AuthFile::load(path)
                .with_context(|| format!("cannot load auth_file {}", path.display()))?;
            users.secrets = file
                .users()
                .filter_map(|u| file.get(u).map(|s| (u.to_owned(), s.clone())))
                .collect();
            users.from_file = true;
        }
        if !users.from_file {
            // URL mode (or a config without auth_file): clients log in with the user and
            // password of the database entries.
            for db in &config.databases {
                if let (Some(u), Some(p)) = (&db.user, &db.password) {
                    users
                        .secrets
                        .entry(u.clone())
                        .or_insert_with(|| Secret::Plain(p.expose().to_owned()));
                }
            }
        }
        users.mix = crate::auth::SecretMix::of(users.secrets.values());
        Ok(users)
    }

    /// How many of these users hold SCRAM secrets, out of how many.
    pub fn mix(&self) -> crate::auth::SecretMix {
        self.mix
    }

    /// SCRAM verifiers derived from these users' plaintext secrets.
    pub fn plain_scram(&self) -> &crate::auth::PlainScramCache {
        &self.plain_scram
    }
}

impl Users {
    /// The secret of `user`, if listed.
    pub fn secret(&self, user: &str) -> Option<&Secret> {
        self.secrets.get(user)
    }

    /// Names of the listed users.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.secrets.keys()
    }

    /// True when the users come from an auth_file.
    pub fn from_file(&self) -> bool {
        self.from_file
    }
}
