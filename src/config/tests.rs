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
fn borrowed_database_lookup_gives_what_the_owned_one_gives() {
    use std::borrow::Cow;
    let c = parse("[databases]\napp = host=a dbname=real\n* = host=fb port=6000\n");
    for name in ["app", "other", "pgbouncer", "*"] {
        let cow = c.database_cow(name);
        assert_eq!(cow.as_deref(), c.database(name).as_ref(), "{name}");
        let borrowed = matches!(cow, Some(Cow::Borrowed(_)));
        assert_eq!(
            borrowed,
            name == "app",
            "only a configured entry is borrowed: {name}"
        );
    }
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
    let c = parse("[pgbouncer]\npool_mode = transaction\nquery_wait_timeout = 0.5\nsyslog = 1\n");
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
    let c = Config::parse_str("", Path::new("/etc/pgfunnel/pgfunnel.ini")).expect("empty config");
    assert_eq!(
        c.resolve_path(Path::new("hba.conf")),
        PathBuf::from("/etc/pgfunnel/hba.conf")
    );
    assert_eq!(
        c.resolve_path(Path::new("/x/hba.conf")),
        PathBuf::from("/x/hba.conf")
    );
}
