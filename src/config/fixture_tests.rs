//! Tests against pgfunnel's own config fixtures (tests/fixtures/config), written for this
//! project: they cover the same ground as PgBouncer's samples (every key, every kind of
//! `[databases]`/`[users]` entry) so that a clone without the shared samples still tests
//! config parsing fully.

use std::time::Duration;

use super::test_support::fixture;
use super::*;

#[test]
fn own_databases_fixture_loads_every_entry_as_written() {
    let config = Config::load(&fixture("config/databases.ini")).expect("fixture loads");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let names: Vec<&str> = config.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "plain",
            "defaults",
            "port_and_user",
            "sizes",
            "reserve_alias",
            "limits",
            "hostlist",
            "lifetimes",
            "startup",
            "connect",
            "via_auth_user",
            "quoted name"
        ]
    );
    let db = |name: &str| config.database_entry(name).expect(name);
    assert_eq!(db("plain").server_dbname(), "app");
    assert_eq!((db("defaults").hosts.len(), db("defaults").port), (0, 5432));
    let p = db("port_and_user");
    assert_eq!((p.port, p.user.as_deref()), (6543, Some("shopper")));
    assert_eq!(
        p.password.as_ref().map(Password::expose),
        Some("not-a-real-secret")
    );
    let s = db("sizes");
    assert_eq!(
        (
            s.pool_size,
            s.min_pool_size,
            s.reserve_pool_size,
            s.max_db_connections
        ),
        (Some(7), Some(2), Some(3), Some(9))
    );
    assert_eq!(db("reserve_alias").reserve_pool_size, Some(4));
    assert_eq!(db("limits").max_db_client_connections, Some(11));
    assert_eq!(db("limits").pool_mode, Some(PoolMode::Transaction));
    let h = db("hostlist");
    assert_eq!(h.hosts, vec!["192.0.2.4", "192.0.2.5", "/run/postgresql"]);
    assert_eq!(h.load_balance_hosts, LoadBalanceHosts::Disable);
    assert_eq!(
        db("lifetimes").server_lifetime,
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        db("lifetimes").query_wait_timeout,
        Some(Duration::from_secs(5))
    );
    let st = db("startup");
    assert_eq!(
        (
            st.client_encoding.as_deref(),
            st.datestyle.as_deref(),
            st.timezone.as_deref(),
            st.application_name.as_deref()
        ),
        (Some("UTF8"), Some("ISO"), Some("UTC"), Some("fixture"))
    );
    assert_eq!(
        db("connect").connect_query.as_deref(),
        Some("select 1; select 'two'")
    );
    let a = db("via_auth_user");
    assert_eq!(
        (a.auth_user.as_deref(), a.auth_dbname.as_deref()),
        (Some("lookup"), Some("authdb"))
    );
    assert_eq!(db("quoted name").server_dbname(), "real");
    let other = config.database("anything").expect("fallback");
    assert_eq!(
        (other.hosts.clone(), other.port),
        (vec!["192.0.2.11".to_owned()], 5433)
    );

    let user = |name: &str| config.user(name).expect(name);
    assert_eq!(user("alice").pool_mode, Some(PoolMode::Session));
    assert_eq!(user("alice").pool_size, Some(3));
    let b = user("bob");
    assert_eq!(
        (
            b.max_user_connections,
            b.max_user_client_connections,
            b.reserve_pool_size
        ),
        (Some(5), Some(6), Some(1))
    );
    let c = user("carol");
    assert_eq!(c.query_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.idle_transaction_timeout, Some(Duration::from_secs(10)));
    assert_eq!(c.transaction_timeout, Some(Duration::from_secs(20)));
    assert_eq!(c.client_idle_timeout, Some(Duration::from_secs(40)));

    let s = &config.settings;
    assert_eq!(s.auth_type, AuthType::ScramSha256);
    assert_eq!(s.admin_users, vec!["admin"]);
    assert_eq!(config.auth_file_path, Some(fixture("config/userlist.txt")));
}

/// Every `key = value` line of the `[pgbouncer]` section: (line number, key, value).
fn key_lines(text: &str) -> Vec<(usize, String, String)> {
    let mut in_settings = false;
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.starts_with('[') {
                in_settings = line == "[pgbouncer]";
                return None;
            }
            if !in_settings || line.is_empty() || line.starts_with([';', '#']) {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            Some((i + 1, k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// The fixture sets every key of the key table (PgBouncer 1.25's and pgfunnel's own) to a
/// valid value: each is applied (and shown back as written) or named in a warning.
#[test]
fn own_every_key_fixture_applies_or_warns_each_key() {
    let path = fixture("config/every-key.ini");
    let text = std::fs::read_to_string(&path).expect("read fixture");
    let lines = key_lines(&text);
    for key in SETTING_KEYS {
        assert!(
            lines.iter().any(|(_, k, _)| k == key.name),
            "{} is missing from tests/fixtures/config/every-key.ini",
            key.name
        );
    }
    let config = Config::parse_str(&text, &path).expect("every value is accepted");
    assert!(
        !config.warnings.iter().any(|w| matches!(
            w.message,
            WarningMessage::UnknownKey | WarningMessage::Repeated { .. }
        )),
        "{:?}",
        config.warnings
    );
    let effective = config.effective_settings();
    for (line, key, value) in &lines {
        let spec = find_key(key).unwrap_or_else(|| panic!("line {line}: {key} unknown"));
        let warned = config.warnings.iter().any(|w| &w.key == key);
        if spec.support == KeySupport::Applied {
            assert!(!warned, "{key} both applied and warned");
            assert!(config.settings.is_explicit(spec.name), "{key} not applied");
            let shown = effective.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            assert_eq!(
                shown,
                Some(value),
                "line {line}: {key} shown back differently"
            );
        } else {
            assert!(warned, "{key} has no effect but no warning");
        }
    }
}
