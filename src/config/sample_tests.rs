//! Tests against PgBouncer's own sample configs (shared/testdata/pgbouncer): pgfunnel must read
//! them as PgBouncer does, and name every key it does not apply.

use std::fs;
use std::path::Path;
use std::time::Duration;

use std::path::PathBuf;

use super::test_support::shared_testdata;
use super::*;

/// A commented or active line of a sample file, by section.
struct SampleLine {
    section: String,
    key: String,
    /// The line without its comment marker.
    text: String,
    commented: bool,
}

/// Every `key = value` line of `text`, commented (`;key = value`, single `;`) or not, with its
/// section; commentary (`;; prose`) is skipped. A commented bare `;word` counts as a key too.
fn sample_lines(text: &str) -> Vec<SampleLine> {
    let mut section = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_ascii_lowercase();
            continue;
        }
        let (commented, body) = match line.strip_prefix(';') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if body.is_empty() || body.starts_with([';', '#', '%']) || section.is_empty() {
            continue;
        }
        let key = body.split('=').next().unwrap_or_default().trim();
        let is_name = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*');
        if is_name && (body.contains('=') || !key.contains(' ')) {
            lines.push(SampleLine {
                section: section.clone(),
                key: key.to_owned(),
                text: body.to_owned(),
                commented,
            });
        }
    }
    lines
}

/// The shared sample folder, or return from the test (skipped) when this checkout has none.
macro_rules! testdata_or_skip {
    () => {
        match shared_testdata() {
            Some(dir) => dir,
            None => return,
        }
    };
}

fn file_in(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(path.is_file(), "missing test data file {}", path.display());
    path
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn testdata_folder_has_its_readme() {
    let dir = testdata_or_skip!();
    assert!(dir.join("README.md").is_file());
}

#[test]
fn minimal_sample_loads_with_all_defaults() {
    let dir = testdata_or_skip!();
    let config =
        Config::load(&file_in(&dir, "pgbouncer-minimal.ini")).expect("minimal config loads");
    assert!(config.databases.is_empty() && config.fallback.is_none() && config.users.is_empty());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.settings, Settings::default());
}

#[test]
fn minimal_sample_commented_values_are_the_defaults() {
    let dir = testdata_or_skip!();
    let text = read(&file_in(&dir, "pgbouncer-minimal.ini"));
    let defaults = Config::parse_str("", Path::new("x.ini"))
        .expect("empty")
        .effective_settings();
    let mut checked = 0;
    for line in sample_lines(&text)
        .iter()
        .filter(|l| l.section == "pgbouncer")
    {
        let value = line
            .text
            .split_once('=')
            .map(|(_, v)| v.trim())
            .unwrap_or_default();
        let default = defaults
            .iter()
            .find(|(k, _)| *k == line.key)
            .map(|(_, v)| v.as_str());
        assert_eq!(default, Some(value), "default of {}", line.key);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} keys found");
}

#[test]
fn test_suite_sample_accepts_every_database_line() {
    let dir = testdata_or_skip!();
    let path = file_in(&dir, "pgbouncer-test-suite.ini");
    let config = Config::load(&path).expect("PgBouncer's test config loads");
    let expected: Vec<String> = sample_lines(&read(&path))
        .into_iter()
        .filter(|l| l.section == "databases" && !l.commented)
        .map(|l| l.key)
        .collect();
    let got: Vec<&str> = config.databases.iter().map(|d| d.name.as_str()).collect();
    assert!(
        expected.len() >= 45,
        "only {} database lines found",
        expected.len()
    );
    assert_eq!(got, expected);

    let db = |name: &str| {
        config
            .database_entry(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(db("p0a").reserve_pool_size, Some(2));
    assert_eq!(db("p0").reserve_pool_size, Some(2));
    assert_eq!(db("hostlist1").hosts, vec!["127.0.0.1", "::1"]);
    assert_eq!(
        db("hostlist_bad_first").load_balance_hosts,
        LoadBalanceHosts::Disable
    );
    assert_eq!(
        db("p8").connect_query.as_deref(),
        Some("set enable_seqscan=off; set enable_nestloop=off")
    );
    assert_eq!(db("p9").server_lifetime, Some(Duration::from_secs(2)));
    assert_eq!(
        db("p4").password.as_ref().map(Password::expose),
        Some("foo")
    );
    assert_eq!(db("pauthz").auth_dbname.as_deref(), Some("authdb"));
    assert_eq!(db("conn_limit_db").max_db_client_connections, Some(2));
    assert_eq!(db("p0").port, 6666);
    assert_eq!(config.users.len(), 6);
    assert_eq!(
        config
            .user("respoolsize1")
            .and_then(|u| u.reserve_pool_size),
        Some(2)
    );
}

#[test]
fn test_suite_sample_settings_and_warnings() {
    let dir = testdata_or_skip!();
    let path = file_in(&dir, "pgbouncer-test-suite.ini");
    let config = Config::load(&path).expect("loads");
    let s = &config.settings;
    assert_eq!(s.listen_addr, vec!["127.0.0.1"]);
    assert_eq!(s.listen_port, 6667);
    assert_eq!(s.auth_type, AuthType::Trust);
    assert_eq!(s.pool_mode, PoolMode::Statement);
    assert_eq!(s.max_client_conn, 10);
    assert_eq!(s.default_pool_size, 5);
    assert_eq!(s.server_lifetime, Duration::from_secs(120));
    assert_eq!(s.server_check_delay, Duration::from_secs(10));
    assert!(!s.tcp_keepalive);
    assert_eq!(
        s.track_extra_parameters,
        vec!["search_path", "intervalstyle"]
    );
    assert_eq!(s.ignore_startup_parameters, vec!["extra_float_digits"]);
    assert_eq!(config.auth_file_path, Some(dir.join("userlist.txt")));
    let warned: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, vec!["tcp_defer_accept", "tcp_socket_buffer"]);
    assert!(config
        .warnings
        .iter()
        .all(|w| w.message == WarningMessage::NoEffect));
}

#[test]
fn annotated_sample_loads_as_shipped() {
    let dir = testdata_or_skip!();
    let path = file_in(&dir, "pgbouncer.ini");
    let config =
        Config::parse_str(&read(&path), &path).expect("PgBouncer's annotated config parses");
    assert_eq!(config.settings.listen_addr, vec!["localhost"]);
    assert_eq!(
        config.auth_file_path.as_deref(),
        Some(Path::new("/etc/pgbouncer/userlist.txt"))
    );
    // load() insists that auth_file exists and that the logfile and pidfile directories do;
    // on a machine without PgBouncer they do not
    match Config::load(&path) {
        Ok(_) => assert!(Path::new("/etc/pgbouncer/userlist.txt").is_file()),
        Err(err) => {
            for problem in err.problems() {
                assert!(
                    matches!(
                        problem,
                        ConfigError::AuthFile { .. } | ConfigError::UnusablePath { .. }
                    ),
                    "{problem}"
                );
            }
            assert!(
                err.to_string()
                    .contains("auth_file /etc/pgbouncer/userlist.txt")
                    || Path::new("/etc/pgbouncer/userlist.txt").is_file(),
                "{err}"
            );
        }
    }
}

/// `pgfunnel check` on PgBouncer's annotated config must name every key: each one it documents
/// (commented out or not) is either applied or reported in a warning, none silently dropped.
#[test]
fn annotated_sample_every_key_is_applied_or_warned() {
    let dir = testdata_or_skip!();
    let path = file_in(&dir, "pgbouncer.ini");
    let lines = sample_lines(&read(&path));
    let keys: Vec<&SampleLine> = lines.iter().filter(|l| l.section == "pgbouncer").collect();
    assert!(
        keys.len() >= 80,
        "only {} keys found in the sample",
        keys.len()
    );
    let mut seen = std::collections::HashSet::new();
    let mut text = String::from("[pgbouncer]\n");
    for line in &keys {
        if line.text.contains('=') && seen.insert(line.key.clone()) {
            text.push_str(&line.text);
            text.push('\n');
        }
    }
    let config = Config::parse_str(&text, &path).expect("every documented value is accepted");
    assert!(
        !config
            .warnings
            .iter()
            .any(|w| w.message == WarningMessage::UnknownKey),
        "PgBouncer keys unknown to pgfunnel: {:?}",
        config.warnings
    );
    for line in &keys {
        let spec =
            find_key(&line.key).unwrap_or_else(|| panic!("{} is not in the key table", line.key));
        if !line.text.contains('=') {
            continue; // a bare `;conffile`: known is all we can check
        }
        let applied = spec.support == KeySupport::Applied && config.settings.is_explicit(spec.name);
        let warned = config.warnings.iter().any(|w| w.key == line.key);
        assert!(applied || warned, "{} silently dropped", line.key);
        assert!(!(applied && warned), "{} both applied and warned", line.key);
    }
}

#[test]
fn annotated_sample_commented_entries_parse_cleanly() {
    let dir = testdata_or_skip!();
    let path = file_in(&dir, "pgbouncer.ini");
    let entries: Vec<SampleLine> = sample_lines(&read(&path))
        .into_iter()
        .filter(|l| l.section == "databases" || l.section == "users")
        .collect();
    assert!(entries.len() >= 8, "only {} entries found", entries.len());
    for entry in entries {
        let text = format!("[{}]\n{}\n", entry.section, entry.text);
        let config =
            Config::parse_str(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", entry.text));
        assert!(
            config.warnings.is_empty(),
            "{}: {:?}",
            entry.text,
            config.warnings
        );
        let found = config.database(&entry.key).is_some() || config.user(&entry.key).is_some();
        assert!(found || entry.key == "*", "{} not found", entry.key);
    }
}
