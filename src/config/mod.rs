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
        if let Some(entry) = self.database_entry(name) {
            return Some(entry.clone());
        }
        if RESERVED_DATABASES.contains(&name) || name == FALLBACK_NAME {
            return None;
        }
        let mut entry = self.fallback.clone()?;
        entry.name = name.to_owned();
        entry.dbname.get_or_insert_with(|| name.to_owned());
        entry.auto = true;
        Some(entry)
    }

    /// The `[databases]` entry named exactly `name`, without the fallback.
    pub fn database_entry(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases.iter().find(|d| d.name == name)
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
mod tests {
    use std::time::Duration;

    use super::test_support::temp_tree;
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse_str(text, Path::new("t.ini")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn empty_config_has_pgbouncer_defaults() {
        let s = parse("").settings;
        assert_eq!(s.listen_addr, Vec::<String>::new());
        assert_eq!(s.listen_port, 6432);
        assert_eq!(s.unix_socket_dir, "/tmp");
        assert_eq!(s.unix_socket_mode, 0o777);
        assert_eq!(s.auth_type, AuthType::Md5);
        assert_eq!(s.auth_query, DEFAULT_AUTH_QUERY);
        assert!(s.auth_query.contains("rolvaliduntil"));
        assert_eq!(s.pool_mode, PoolMode::Session);
        assert_eq!(s.max_client_conn, 100);
        assert_eq!(s.default_pool_size, 20);
        assert_eq!(s.min_pool_size, 0);
        assert_eq!(s.reserve_pool_size, 0);
        assert_eq!(s.reserve_pool_timeout, Duration::from_secs(5));
        assert_eq!(s.max_prepared_statements, 200);
        assert_eq!(s.max_packet_size, 2_147_483_647);
        assert_eq!(s.server_reset_query.as_deref(), Some("DISCARD ALL"));
        assert_eq!(s.server_check_query, ServerCheckQuery::EmptyQuery);
        assert_eq!(s.server_check_delay, Duration::from_secs(30));
        assert_eq!(s.server_lifetime, Duration::from_secs(3600));
        assert_eq!(s.server_idle_timeout, Duration::from_secs(600));
        assert_eq!(s.server_connect_timeout, Duration::from_secs(15));
        assert_eq!(s.server_login_retry, Duration::from_secs(15));
        assert_eq!(s.client_login_timeout, Duration::from_secs(60));
        assert_eq!(s.query_wait_timeout, Duration::from_secs(120));
        assert_eq!(s.query_timeout, Duration::ZERO);
        assert_eq!(s.cancel_wait_timeout, Duration::from_secs(10));
        assert_eq!(s.autodb_idle_timeout, Duration::from_secs(3600));
        assert_eq!(s.dns_max_ttl, Duration::from_secs(15));
        assert_eq!(s.scram_iterations, 4096);
        assert!(s.tcp_keepalive);
        assert_eq!(s.client_tls_sslmode, SslMode::Disable);
        assert_eq!(s.server_tls_sslmode, SslMode::Prefer);
        assert_eq!(s.client_tls_protocols, "secure");
        assert_eq!(s.client_tls_ciphers, "default");
        assert!(s.log_connections && s.log_disconnections && s.log_pooler_errors && s.log_stats);
        assert_eq!(s.stats_period, Duration::from_secs(60));
        assert_eq!(s.verbose, 0);
        assert_eq!(s.track_extra_parameters, vec!["IntervalStyle"]);
        assert_eq!(s.metrics_listen, None);
        assert_eq!(s.worker_threads, 0);
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.set_at.is_empty());
    }

    #[test]
    fn exact_database_wins_over_fallback() {
        let c = parse("[databases]\napp = host=a dbname=real\n* = host=fb port=6000\n");
        let app = c.database("app").expect("exact");
        assert_eq!(
            (app.hosts.clone(), app.server_dbname(), app.auto),
            (vec!["a".to_owned()], "real", false)
        );
        let other = c.database("other").expect("fallback");
        assert_eq!(other.name, "other");
        assert_eq!(other.dbname.as_deref(), Some("other"));
        assert_eq!(other.hosts, vec!["fb"]);
        assert_eq!(other.port, 6000);
        assert!(other.auto);
        assert!(
            c.database("pgbouncer").is_none(),
            "admin db never comes from the fallback"
        );
        assert!(c.database("*").is_none());
    }

    #[test]
    fn fallback_with_forced_dbname_keeps_it() {
        let c = parse("[databases]\n* = dbname=shared\n");
        assert_eq!(
            c.database("any").and_then(|d| d.dbname),
            Some("shared".to_owned())
        );
    }

    #[test]
    fn without_fallback_unknown_databases_are_none() {
        assert!(parse("[databases]\napp =\n").database("other").is_none());
    }

    #[test]
    fn effective_settings_list_every_key_in_table_order() {
        let c =
            parse("[pgbouncer]\npool_mode = transaction\nquery_wait_timeout = 0.5\nsyslog = 1\n");
        let all = c.effective_settings();
        assert_eq!(all.len(), SETTING_KEYS.len());
        let names: Vec<&str> = all.iter().map(|(k, _)| *k).collect();
        let table: Vec<&str> = SETTING_KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names, table);
        let get = |key: &str| all.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("pool_mode"), Some("transaction"));
        assert_eq!(get("query_wait_timeout"), Some("0.5"));
        assert_eq!(get("syslog"), Some("1"));
        assert_eq!(get("unix_socket_mode"), Some("0777"));
        assert_eq!(get("server_check_query"), Some("<empty>"));
        assert_eq!(get("listen_addr"), Some(""));
        assert_eq!(get("log_format"), Some("text"));
    }

    #[test]
    fn load_names_a_missing_config_file() {
        let err = Config::load(Path::new("/no/such/dir/pgfunnel.ini")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/no/such/dir/pgfunnel.ini: cannot read config file"),
            "{err}"
        );
    }

    #[test]
    fn load_checks_auth_file_but_does_not_parse_it() {
        let dir = temp_tree(&[
            ("ok.ini", "[pgbouncer]\nauth_file = users.txt\n"),
            ("users.txt", "this is not parsed here\n"),
            ("missing.ini", "[pgbouncer]\n\nauth_file = nope.txt\n"),
            ("dir.ini", "[pgbouncer]\nauth_file = sub\n"),
            ("sub/keep", ""),
        ]);
        let c = Config::load(&dir.path().join("ok.ini")).expect("auth file present");
        assert_eq!(c.auth_file_path, Some(dir.path().join("users.txt")));

        let err = Config::load(&dir.path().join("missing.ini")).expect_err("auth file missing");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{}:3: auth_file ",
                dir.path().join("missing.ini").display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&dir.path().join("nope.txt").display().to_string()),
            "{text}"
        );

        let err = Config::load(&dir.path().join("dir.ini")).expect_err("auth file is a directory");
        assert!(matches!(err, ConfigError::AuthFile { .. }), "{err}");
    }

    #[test]
    fn resolve_path_uses_the_config_directory() {
        let c =
            Config::parse_str("", Path::new("/etc/pgfunnel/pgfunnel.ini")).expect("empty config");
        assert_eq!(
            c.resolve_path(Path::new("hba.conf")),
            PathBuf::from("/etc/pgfunnel/hba.conf")
        );
        assert_eq!(
            c.resolve_path(Path::new("/x/hba.conf")),
            PathBuf::from("/x/hba.conf")
        );
    }
}
