//! Turns the INI items into a `Config`: applies `[pgbouncer]` keys through the key table, builds
//! database and user entries, refuses duplicates, collects warnings, then validates. Reads no file
//! itself (the INI reader does; `Config::load` checks `auth_file`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::database::{
    parse_database_entry, parse_user_entry, DatabaseEntry, UserEntry, FALLBACK_NAME,
};
use super::error::{ConfigError, Location};
use super::ini::{IniItem, Section};
use super::keys::{find_key, KeySupport};
use super::settings::Settings;
use super::warning::{ConfigWarning, WarningMessage};
use super::Config;

/// Database names pgfunnel keeps for its admin console.
pub const RESERVED_DATABASES: &[&str] = &["pgbouncer"];

/// Builds and validates a config from INI items read from `origin` (and its includes).
pub fn build_config(items: Vec<IniItem>, origin: &Path) -> Result<Config, ConfigError> {
    let mut builder = Builder::default();
    for item in items {
        match item.section {
            Section::Pgbouncer => builder.add_setting(item)?,
            Section::Databases => builder.add_database(item)?,
            Section::Users => builder.add_user(item)?,
            Section::Peers => builder.warnings.push(ConfigWarning::new(
                &item.location,
                item.key,
                WarningMessage::PeerNoEffect,
            )),
        }
    }
    let validation_warnings = builder.settings.validate(origin)?;
    builder.warnings.extend(validation_warnings);
    let auth_file_path = builder
        .settings
        .auth_file
        .as_deref()
        .map(|file| resolve_against(origin, file));
    Ok(Config {
        settings: builder.settings,
        databases: builder.databases,
        fallback: builder.fallback,
        users: builder.users,
        warnings: builder.warnings,
        path: Some(origin.to_path_buf()),
        auth_file_path,
    })
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
    warnings: Vec<ConfigWarning>,
    /// Every place each `[pgbouncer]` key (lower-cased) was set, to spot same-file duplicates.
    keys_seen: HashMap<String, Vec<Location>>,
    databases_seen: HashMap<String, Location>,
    users_seen: HashMap<String, Location>,
}

impl Builder {
    fn add_setting(&mut self, item: IniItem) -> Result<(), ConfigError> {
        let key = item.key.to_ascii_lowercase();
        let seen = self.keys_seen.entry(key.clone()).or_default();
        // Same file twice is a mistake; a later %include overriding a key is how includes are used.
        if let Some(first) = seen
            .iter()
            .find(|l| l.file == item.location.file && l.line != item.location.line)
        {
            return Err(ConfigError::DuplicateKey {
                location: item.location,
                key,
                first_line: first.line,
            });
        }
        seen.push(item.location.clone());
        let Some(spec) = find_key(&key) else {
            let warning = ConfigWarning::new(&item.location, key, WarningMessage::UnknownKey);
            self.warnings.push(warning);
            return Ok(());
        };
        spec.apply(&mut self.settings, &item.value)
            .map_err(|expected| ConfigError::InvalidValue {
                location: item.location.clone(),
                key: key.clone(),
                value: item.value.clone(),
                expected,
            })?;
        if spec.support == KeySupport::NoEffect {
            let warning = ConfigWarning::new(&item.location, key, WarningMessage::NoEffect);
            self.warnings.push(warning);
        }
        self.settings.set_at.insert(spec.name, item.location);
        Ok(())
    }

    fn add_database(&mut self, item: IniItem) -> Result<(), ConfigError> {
        if RESERVED_DATABASES.contains(&item.key.as_str()) {
            return Err(ConfigError::ReservedDatabase {
                location: item.location,
                name: item.key,
            });
        }
        if let Some(first) = self.databases_seen.get(&item.key) {
            return Err(ConfigError::DuplicateDatabase {
                location: item.location,
                name: item.key,
                first: first.clone(),
            });
        }
        self.databases_seen
            .insert(item.key.clone(), item.location.clone());
        let entry =
            parse_database_entry(&item.key, &item.value, &item.location, &mut self.warnings)?;
        if item.key == FALLBACK_NAME {
            self.fallback = Some(entry);
        } else {
            self.databases.push(entry);
        }
        Ok(())
    }

    fn add_user(&mut self, item: IniItem) -> Result<(), ConfigError> {
        if let Some(first) = self.users_seen.get(&item.key) {
            return Err(ConfigError::DuplicateUser {
                location: item.location,
                name: item.key,
                first: first.clone(),
            });
        }
        self.users_seen
            .insert(item.key.clone(), item.location.clone());
        let entry = parse_user_entry(&item.key, &item.value, &item.location, &mut self.warnings)?;
        self.users.push(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::kinds::{AuthType, PoolMode, SslMode};
    use crate::config::test_support::temp_tree;

    fn parse(text: &str) -> Config {
        Config::parse_str(text, Path::new("pgbouncer.ini")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        Config::parse_str(text, Path::new("pgbouncer.ini"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn bad_enum_value_message_is_exact() {
        let text = format!("{}[pgbouncer]\npool_mode = sessionx\n", "\n".repeat(10));
        assert_eq!(
            error(&text),
            "pgbouncer.ini:12: pool_mode = \"sessionx\": expected one of session, transaction, statement"
        );
    }

    #[test]
    fn each_kind_of_bad_value_names_file_line_key_value_and_allowed() {
        let cases = [
            ("auth_type = kerberos", "auth_type = \"kerberos\": expected one of cert, md5, scram-sha-256, plain, trust, any, hba, pam, ldap"),
            ("client_tls_sslmode = maybe", "client_tls_sslmode = \"maybe\": expected one of disable, allow, prefer, require, verify-ca, verify-full"),
            ("log_format = xml", "log_format = \"xml\": expected one of text, json"),
            ("log_stats = perhaps", "log_stats = \"perhaps\": expected a boolean: 0, 1, yes, no, on, off, true or false"),
            ("listen_port = 0", "listen_port = \"0\": expected an integer from 1 to 65535"),
            ("listen_port = 70000", "listen_port = \"70000\": expected an integer from 1 to 65535"),
            ("max_client_conn = 0", "max_client_conn = \"0\": expected an integer from 1 to 2147483647"),
            ("default_pool_size = lots", "default_pool_size = \"lots\": expected an integer from 0 to 2147483647"),
            ("server_lifetime = 1 week", "server_lifetime = \"1 week\": expected a time: seconds (fractions allowed, e.g. 0.5) or a number with unit us, ms, s, min, h or d"),
            ("tcp_user_timeout = x", "tcp_user_timeout = \"x\": expected a time: milliseconds, or a number with unit us, ms, s, min, h or d"),
            ("unix_socket_mode = 0999", "unix_socket_mode = \"0999\": expected an octal file mode from 0 to 0777, e.g. 0770"),
            ("worker_threads = -2", "worker_threads = \"-2\": expected an integer from 0 to 1024"),
        ];
        for (line, message) in cases {
            let got = error(&format!("[pgbouncer]\n{line}\n"));
            assert_eq!(got, format!("pgbouncer.ini:2: {message}"), "for {line}");
        }
    }

    #[test]
    fn values_of_each_type_are_parsed() {
        let c = parse(
            "[pgbouncer]\nlisten_addr = 127.0.0.1, ::1\nlisten_port = 7432\nunix_socket_mode = 0770\n\
             pool_mode = transaction\nauth_type = scram-sha-256\nserver_tls_sslmode = verify-full\n\
             log_connections = off\nquery_wait_timeout = 0.5\nserver_lifetime = 2h\ntcp_user_timeout = 1500\n\
             admin_users = a, b\nserver_reset_query =\nmetrics_listen = 127.0.0.1:9127\nworker_threads = 4\n\
             log_format = json\n",
        );
        let s = &c.settings;
        assert_eq!(s.listen_addr, vec!["127.0.0.1", "::1"]);
        assert_eq!(s.listen_port, 7432);
        assert_eq!(s.unix_socket_mode, 0o770);
        assert_eq!(s.pool_mode, PoolMode::Transaction);
        assert_eq!(s.auth_type, AuthType::ScramSha256);
        assert_eq!(s.server_tls_sslmode, SslMode::VerifyFull);
        assert!(!s.log_connections);
        assert_eq!(s.query_wait_timeout, Duration::from_millis(500));
        assert_eq!(s.server_lifetime, Duration::from_secs(7200));
        assert_eq!(s.tcp_user_timeout, Duration::from_millis(1500));
        assert_eq!(s.admin_users, vec!["a", "b"]);
        assert_eq!(s.server_reset_query, None);
        assert_eq!(s.metrics_listen.as_deref(), Some("127.0.0.1:9127"));
        assert_eq!(s.worker_threads, 4);
        assert_eq!(s.log_format, crate::config::LogFormat::Json);
    }

    #[test]
    fn keys_are_case_insensitive_and_explicit_keys_are_remembered() {
        let c = parse("[pgbouncer]\nListen_Port = 7000\n");
        assert_eq!(c.settings.listen_port, 7000);
        assert!(c.settings.is_explicit("listen_port"));
        assert_eq!(
            c.settings.location_of("listen_port").map(|l| l.line),
            Some(2)
        );
        assert!(!c.settings.is_explicit("pool_mode"));
    }

    #[test]
    fn duplicate_key_in_one_file_names_both_lines() {
        assert_eq!(
            error("[pgbouncer]\npool_mode = session\n\nPOOL_MODE = transaction\n"),
            "pgbouncer.ini:4: duplicate key pool_mode, already set at line 2 of the same file"
        );
        // also across [pgbouncer] and its [pgfunnel] alias
        assert!(error("[pgbouncer]\nverbose = 1\n[pgfunnel]\nverbose = 2\n")
            .contains("duplicate key verbose"));
    }

    #[test]
    fn include_overrides_silently_but_not_twice_in_the_including_file() {
        let dir = temp_tree(&[
            (
                "main.ini",
                "[pgbouncer]\nlisten_port = 1000\n%include local.ini\n",
            ),
            ("local.ini", "[pgbouncer]\nlisten_port = 2000\n"),
            (
                "bad.ini",
                "[pgbouncer]\nlisten_port = 1000\n%include local.ini\nlisten_port = 3000\n",
            ),
        ]);
        let c = Config::load(&dir.path().join("main.ini")).expect("include override");
        assert_eq!(c.settings.listen_port, 2000);
        assert!(c
            .settings
            .location_of("listen_port")
            .is_some_and(|l| l.file.ends_with("local.ini")));
        let err = Config::load(&dir.path().join("bad.ini")).expect_err("same-file duplicate");
        assert!(
            matches!(err, ConfigError::DuplicateKey { first_line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn duplicate_database_and_user_are_errors() {
        assert_eq!(
            error("[databases]\nfoo = host=a\nfoo = host=b\n"),
            "pgbouncer.ini:3: database \"foo\" is already defined at pgbouncer.ini:2"
        );
        assert!(
            error("[databases]\n* =\n* = host=x\n").contains("database \"*\" is already defined")
        );
        assert!(error("[users]\nbob = pool_size=1\nbob = pool_size=2\n")
            .contains("user \"bob\" is already defined"));
    }

    #[test]
    fn admin_database_name_is_reserved() {
        assert_eq!(
            error("[databases]\npgbouncer = host=a\n"),
            "pgbouncer.ini:2: database name \"pgbouncer\" is reserved for the admin console"
        );
    }

    #[test]
    fn unknown_and_no_effect_keys_are_warnings() {
        let c = parse("[pgbouncer]\nno_such_key = 1\nso_reuseport = 1\n[peers]\n1 = host=a\n");
        let shown: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "pgbouncer.ini:2: no_such_key: unknown key, ignored",
                "pgbouncer.ini:3: so_reuseport: accepted but has no effect in pgfunnel",
                "pgbouncer.ini:5: 1: [peers] entry accepted but has no effect in pgfunnel (no peering)",
            ]
        );
        assert_eq!(
            c.settings.no_effect.get("so_reuseport").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn databases_keep_file_order_and_fallback_is_separate() {
        let c = parse("[databases]\nzeta = host=z\n* = host=fb\nalpha = host=a\n");
        let names: Vec<&str> = c.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["zeta", "alpha"]);
        assert_eq!(
            c.fallback.as_ref().map(|f| f.hosts.clone()),
            Some(vec!["fb".to_owned()])
        );
    }

    #[test]
    fn auth_file_is_resolved_against_the_config_directory() {
        let c = Config::parse_str(
            "[pgbouncer]\nauth_file = users.txt\n",
            Path::new("/etc/pgfunnel/main.ini"),
        )
        .expect("parses");
        assert_eq!(
            c.auth_file_path,
            Some(PathBuf::from("/etc/pgfunnel/users.txt"))
        );
        let c = Config::parse_str(
            "[pgbouncer]\nauth_file = /abs/u.txt\n",
            Path::new("/etc/x.ini"),
        )
        .expect("parses");
        assert_eq!(c.auth_file_path, Some(PathBuf::from("/abs/u.txt")));
        let c = Config::parse_str("[pgbouncer]\nauth_file = u.txt\n", Path::new("rel.ini"))
            .expect("parses");
        assert!(c.auth_file_path.as_ref().is_some_and(|p| p.is_absolute()));
    }
}
