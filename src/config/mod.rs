//! Configuration: reads PgBouncer-format INI files (or a `postgres://` URL in URL mode) into a
//! validated, typed `Config`. Owns parsing, defaults, validation and precedence; does not parse
//! `auth_file`/HBA contents, watch files or swap configs on reload (the caller does that).
//!
//! Files: `ini.rs` (INI dialect, includes), `keys.rs` (the one table of `[pgbouncer]` keys),
//! `settings.rs` (typed settings and defaults), `database.rs` + `connstr.rs` (`[databases]` and
//! `[users]`), `loader.rs` (items to `Config`), `resolve.rs` (user > database > global),
//! `url_mode.rs`, `value.rs` + `kinds.rs` (value types), `error.rs` + `problem.rs` + `warning.rs`.

// Config errors happen once per load, never on a hot path; keeping their fields inline (typed,
// no boxing) matters more than the size of `Result`.
#![allow(clippy::result_large_err)]

mod connstr;
mod database;
mod error;
mod ini;
mod keys;
mod kinds;
mod loader;
mod peers;
mod problem;
mod resolve;
mod settings;
mod url_mode;
mod value;
mod warning;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod sample_tests;
#[cfg(test)]
pub(crate) mod test_support;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub use database::{DatabaseEntry, Password, UserEntry, DEFAULT_PORT, FALLBACK_NAME};
pub use error::{ConfigError, Location};
pub use ini::MAX_INCLUDE_DEPTH;
pub use keys::{find_key, KeySupport, SettingKey, SETTING_KEYS};
pub use kinds::{
    AuthType, LoadBalanceHosts, LogFormat, PoolMode, ServerCheckQuery, SslMode, SslNegotiation,
};
pub use loader::RESERVED_DATABASES;
pub use peers::{PeerEntry, PeerIdSetting, MAX_PEER_ID};
pub use problem::{ConnStringProblem, Expected, SyntaxProblem, UrlProblem};
pub use settings::{Settings, DEFAULT_AUTH_QUERY};
pub use url_mode::{looks_like_url, redact_urls, UrlTls, URL_ORIGIN};
pub use warning::{ConfigWarning, WarningMessage};

/// A loaded, validated configuration. Immutable once built: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[pgbouncer]` section.
    pub settings: Settings,
    /// `[databases]` entries in file order, without the `*` fallback.
    pub databases: Vec<DatabaseEntry>,
    /// The `*` entry, used for database names not listed.
    pub fallback: Option<DatabaseEntry>,
    /// `[users]` entries in file order.
    pub users: Vec<UserEntry>,
    /// `[peers]` entries in file order (peering, see `fleet`).
    pub peers: Vec<PeerEntry>,
    /// Things accepted but worth telling (unknown keys, keys without effect, ...), in file order.
    pub warnings: Vec<ConfigWarning>,
    /// The main config file (`origin` for [`Config::parse_str`]); `None` in URL mode.
    pub path: Option<PathBuf>,
    /// `auth_file` resolved against the config file's directory and made absolute.
    pub auth_file_path: Option<PathBuf>,
}

impl Config {
    /// Reads `path` and its includes, builds and validates the config, and checks the files it
    /// names that must be usable at startup (see [`Config::check_files`]). Every error names the
    /// file (and line when there is one); several problems come as one [`ConfigError::Many`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (config, errors) = Config::inspect(path)?;
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }
        tracing::debug!(
            path = %path.display(),
            databases = config.databases.len(),
            users = config.users.len(),
            warnings = config.warnings.len(),
            "config loaded"
        );
        Ok(config)
    }

    /// For `pgfunnel check`: the config as far as it could be built, with every problem found
    /// (syntax, values, combinations, files), in file order. Fails only when `path` itself
    /// cannot be read. The config is usable only when the list is empty.
    pub fn inspect(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let parsed = ini::read_file(path)?;
        let (config, mut errors) =
            loader::build_config_collecting(parsed.items, parsed.errors, path);
        errors.extend(config.file_problems());
        sort_by_place(&mut errors);
        Ok((config, errors))
    }

    /// Parses `text` as if it were the file `origin`: includes are read relative to `origin`'s
    /// directory and `auth_file` is resolved against it, but not checked (see [`Config::check_files`]).
    pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let parsed = ini::read_text(text, origin);
        let (config, mut errors) =
            loader::build_config_collecting(parsed.items, parsed.errors, origin);
        sort_by_place(&mut errors);
        match ConfigError::from_list(errors) {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Checks that files the config names and pgfunnel must open at startup are usable:
    /// `auth_file` readable, the directories of `logfile` and `pidfile` and `unix_socket_dir`
    /// present. The error
    /// names the setting's location and the resolved path.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        match ConfigError::from_list(self.file_problems()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn file_problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(path) = &self.auth_file_path {
            let location = self.location_of("auth_file");
            let fail = |source: io::Error| ConfigError::AuthFile {
                location: location.clone(),
                path: path.clone(),
                source,
            };
            match File::open(path).and_then(|f| f.metadata()) {
                Err(e) => errors.push(fail(e)),
                Ok(m) if m.is_dir() => {
                    errors.push(fail(io::Error::from(io::ErrorKind::IsADirectory)))
                }
                Ok(_) => {}
            }
        }
        let files = [
            ("logfile", self.settings.logfile.as_deref()),
            ("pidfile", self.settings.pidfile.as_deref()),
        ];
        let socket_dir = &self.settings.unix_socket_dir;
        // Empty: no socket; `@name`: Linux abstract namespace, no directory.
        if !socket_dir.is_empty() && !socket_dir.starts_with('@') && !Path::new(socket_dir).is_dir()
        {
            errors.push(ConfigError::UnusablePath {
                location: self.location_of("unix_socket_dir"),
                key: "unix_socket_dir",
                path: PathBuf::from(socket_dir),
                problem: "not an existing directory".into(),
            });
        }
        for (key, path) in files {
            let Some(path) = path else { continue };
            if let Some(problem) = unusable_parent(path) {
                errors.push(ConfigError::UnusablePath {
                    location: self.location_of(key),
                    key,
                    path: path.to_path_buf(),
                    problem,
                });
            }
        }
        errors
    }

    /// The entry for `name`: the exact `[databases]` entry, else a copy of the `*` fallback named
    /// `name` (with `dbname = name` unless the fallback forces one, and `auto = true`). `None`
    /// when neither exists, and always for the reserved admin database names.
    pub fn database(&self, name: &str) -> Option<DatabaseEntry> {
        self.database_cow(name).map(std::borrow::Cow::into_owned)
    }

    /// The `[databases]` entry named exactly `name`, without the fallback.
    pub fn database_entry(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The entry [`Config::database`] gives, borrowed when `name` is configured (a login
    /// asks several times; only an entry made from the `*` fallback is built).
    pub fn database_cow(&self, name: &str) -> Option<std::borrow::Cow<'_, DatabaseEntry>> {
        if let Some(entry) = self.database_entry(name) {
            return Some(std::borrow::Cow::Borrowed(entry));
        }
        if RESERVED_DATABASES.contains(&name) || name == FALLBACK_NAME {
            return None;
        }
        let mut entry = self.fallback.clone()?;
        entry.name = name.to_owned();
        entry.dbname.get_or_insert_with(|| name.to_owned());
        entry.auto = true;
        Some(std::borrow::Cow::Owned(entry))
    }

    /// The `[users]` entry for `name`, if any.
    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Every `[pgbouncer]` key with its effective value as config text, PgBouncer's spelling and
    /// alphabetical order (the key table's), pgfunnel's own keys included. For `pgfunnel check`
    /// and SHOW CONFIG. Contains no password (`auth_ldap_options` is masked when it holds one).
    pub fn effective_settings(&self) -> Vec<(&'static str, String)> {
        SETTING_KEYS
            .iter()
            .map(|key| (key.name, key.value_in(&self.settings)))
            .collect()
    }

    /// Resolves a path from the config (e.g. `auth_hba_file`) the way `auth_file` is: relative to
    /// the config file's directory, made absolute. In URL mode, relative to the working directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.path {
            Some(origin) => loader::resolve_against(origin, path),
            None => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }

    /// Warnings about a config that loads but cannot serve anyone as it stands (no database;
    /// password authentication with nowhere to look passwords up). Not part of `warnings`:
    /// `pgfunnel check` and startup add them.
    pub fn advice(&self) -> Vec<ConfigWarning> {
        loader::advice(self)
    }

    /// Logs every warning at `warn` level with file, line and key as fields.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(file = %w.file.display(), line = w.line, key = %w.key, problem = %w.message, "config warning");
        }
    }

    fn location_of(&self, key: &str) -> Location {
        self.settings
            .location_of(key)
            .cloned()
            .unwrap_or_else(|| Location {
                file: self.path.clone().unwrap_or_default(),
                line: 0,
            })
    }
}

/// Orders problems by line within each file, files in the order they first show up; problems
/// without a line keep their place at the end.
fn sort_by_place(errors: &mut [ConfigError]) {
    let mut files: Vec<PathBuf> = Vec::new();
    for e in errors.iter() {
        if let Some(l) = e.location() {
            if !files.contains(&l.file) {
                files.push(l.file.clone());
            }
        }
    }
    errors.sort_by_key(|e| match e.location() {
        Some(l) => (files.iter().position(|f| *f == l.file).unwrap_or(0), l.line),
        None => (usize::MAX, 0),
    });
}

/// Why a file at `path` could not be created: its directory is missing or not a directory.
fn unusable_parent(path: &Path) -> Option<String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("{} is not a directory", dir.display())),
        Err(e) => Some(format!("directory {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests;
