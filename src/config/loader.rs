//! Turns the INI items into a `Config`: applies `[pgbouncer]` keys through the key table, builds
//! database and user entries (a repeated key, database or user: the later wins, with a warning),
//! collects warnings and every error, then validates. Reads no file
//! itself (the INI reader does; `Config::load` checks `auth_file`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::database::{
    parse_database_entry, parse_user_entry, DatabaseEntry, UserEntry, FALLBACK_NAME,
};
use super::error::{ConfigError, Location};
use super::ini::{IniItem, Section};
use super::keys::{find_key, KeySupport};
use super::kinds::AuthType;
use super::peers::{parse_peer_entry, PeerEntry};
use super::settings::Settings;
use super::warning::{ConfigWarning, WarningMessage};
use super::Config;

/// Database names pgfunnel keeps for its admin console.
pub const RESERVED_DATABASES: &[&str] = &["pgbouncer"];

/// Builds and validates a config from INI items read from `origin` (and its includes). Returns
/// the config as far as it could be built with every problem found (the reader's `errors`
/// first, then the items', then validation's); the config is valid only when there are none.
pub fn build_config_collecting(
    items: Vec<IniItem>,
    errors: Vec<ConfigError>,
    origin: &Path,
) -> (Config, Vec<ConfigError>) {
    let mut builder = Builder {
        errors,
        ..Builder::default()
    };
    for item in items {
        match item.section {
            Section::Pgbouncer => builder.add_setting(item),
            Section::Databases => builder.add_database(item),
            Section::Users => builder.add_user(item),
            Section::Peers => builder.add_peer(item),
        }
    }
    let (warnings, mut errors) = builder.settings.problems(origin);
    builder.warnings.extend(warnings);
    builder.errors.append(&mut errors);
    let auth_file_path = builder
        .settings
        .auth_file
        .as_deref()
        .map(|file| resolve_against(origin, file));
    let config = Config {
        settings: builder.settings,
        databases: builder.databases,
        fallback: builder.fallback,
        users: builder.users,
        peers: builder.peers,
        warnings: builder.warnings,
        path: Some(origin.to_path_buf()),
        auth_file_path,
    };
    (config, builder.errors)
}

/// Warnings about a config that loads but cannot serve anyone as it stands, for `pgfunnel check`
/// and startup: no database at all, or password authentication with nowhere to find passwords.
pub fn advice(config: &Config) -> Vec<ConfigWarning> {
    let Some(origin) = config.path.clone() else {
        return Vec::new(); // URL mode: one database, the URL's user logs in
    };
    let at = |key: &str| {
        config
            .settings
            .location_of(key)
            .cloned()
            .unwrap_or_else(|| Location {
                file: origin.clone(),
                line: 0,
            })
    };
    let mut warnings = Vec::new();
    if config.databases.is_empty() && config.fallback.is_none() {
        let detail =
            "no [databases] entry and no * fallback: every client will get \"no such database\"";
        let message = WarningMessage::Incomplete { detail };
        warnings.push(ConfigWarning::new(&at(""), "[databases]", message));
    }
    let password_auth = matches!(
        config.settings.auth_type,
        AuthType::ScramSha256 | AuthType::Md5 | AuthType::Plain
    );
    let any_auth_user = config.settings.auth_user.is_some()
        || config.databases.iter().any(|d| d.auth_user.is_some())
        || config
            .fallback
            .as_ref()
            .is_some_and(|d| d.auth_user.is_some());
    if password_auth && config.auth_file_path.is_none() && !any_auth_user {
        let detail = "password authentication without auth_file or auth_user: only the user and \
                      password written in a [databases] entry can log in";
        let message = WarningMessage::Incomplete { detail };
        warnings.push(ConfigWarning::new(&at("auth_type"), "auth_type", message));
    }
    warnings
}

/// Resolves `path` against the directory of the config file `origin` and makes it absolute
/// (against the working directory when `origin` itself is relative).
pub fn resolve_against(origin: &Path, path: &Path) -> PathBuf {
    let joined = match origin.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

#[derive(Default)]
struct Builder {
    settings: Settings,
    databases: Vec<DatabaseEntry>,
    fallback: Option<DatabaseEntry>,
    users: Vec<UserEntry>,
    peers: Vec<PeerEntry>,
    warnings: Vec<ConfigWarning>,
    errors: Vec<ConfigError>,
    /// Where each `[pgbouncer]` key (lower-cased), database and user was last set.
    keys_seen: HashMap<String, Location>,
    databases_seen: HashMap<String, Location>,
    users_seen: HashMap<String, Location>,
}

/// Records `location` as the place `name` was set; when it was set before in the same file,
/// warns naming both places. An `%include`d file overriding a key is how includes are used,
/// so that stays silent. PgBouncer takes the later value in both cases.
fn note_repeat(
    seen: &mut HashMap<String, Location>,
    warnings: &mut Vec<ConfigWarning>,
    name: &str,
    what: &'static str,
    location: &Location,
) {
    if let Some(first) = seen.insert(name.to_owned(), location.clone()) {
        if first.file == location.file {
            let message = WarningMessage::Repeated { what, first };
            warnings.push(ConfigWarning::new(location, name, message));
        }
    }
}

impl Builder {
    fn add_setting(&mut self, item: IniItem) {
        let key = item.key.to_ascii_lowercase();
        let seen = &mut self.keys_seen;
        note_repeat(seen, &mut self.warnings, &key, "key", &item.location);
        let Some(spec) = find_key(&key) else {
            let warning = ConfigWarning::new(&item.location, key, WarningMessage::UnknownKey);
            self.warnings.push(warning);
            return;
        };
        if let Err(expected) = spec.apply(&mut self.settings, &item.value) {
            self.errors.push(ConfigError::InvalidValue {
                location: item.location.clone(),
                key: key.clone(),
                value: item.value.clone(),
                expected,
            });
            return;
        }
        if spec.support == KeySupport::NoEffect {
            let warning = ConfigWarning::new(&item.location, key, WarningMessage::NoEffect);
            self.warnings.push(warning);
        }
        self.settings.set_at.insert(spec.name, item.location);
    }

    fn add_database(&mut self, item: IniItem) {
        if RESERVED_DATABASES.contains(&item.key.as_str()) {
            // Stricter than PgBouncer on purpose: such an entry would hide the admin console.
            self.errors.push(ConfigError::ReservedDatabase {
                location: item.location,
                name: item.key,
            });
            return;
        }
        let seen = &mut self.databases_seen;
        note_repeat(
            seen,
            &mut self.warnings,
            &item.key,
            "database",
            &item.location,
        );
        let entry = match parse_database_entry(
            &item.key,
            &item.value,
            &item.location,
            &mut self.warnings,
        ) {
            Ok(entry) => entry,
            Err(e) => return self.errors.push(e),
        };
        if item.key == FALLBACK_NAME {
            self.fallback = Some(entry);
        } else if let Some(old) = self.databases.iter_mut().find(|d| d.name == item.key) {
            *old = entry;
        } else {
            self.databases.push(entry);
        }
    }

    /// A `[peers]` line; a repeated id: the later wins, as in PgBouncer.
    fn add_peer(&mut self, item: IniItem) {
        match parse_peer_entry(&item.key, &item.value, &item.location, &mut self.warnings) {
            Ok(entry) => {
                self.peers.retain(|p| p.id != entry.id);
                self.peers.push(entry);
            }
            Err(e) => self.errors.push(e),
        }
    }

    fn add_user(&mut self, item: IniItem) {
        let seen = &mut self.users_seen;
        note_repeat(seen, &mut self.warnings, &item.key, "user", &item.location);
        match parse_user_entry(&item.key, &item.value, &item.location, &mut self.warnings) {
            Ok(entry) => match self.users.iter_mut().find(|u| u.name == item.key) {
                Some(old) => *old = entry,
                None => self.users.push(entry),
            },
            Err(e) => self.errors.push(e),
        }
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
