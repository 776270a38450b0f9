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

fn warnings(c: &Config) -> Vec<String> {
    c.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn repeated_key_in_one_file_takes_the_later_value_and_warns_with_both_lines() {
    let c = parse("[pgbouncer]\npool_mode = session\n\nPOOL_MODE = transaction\n");
    assert_eq!(c.settings.pool_mode, PoolMode::Transaction);
    assert_eq!(c.settings.location_of("pool_mode").map(|l| l.line), Some(4));
    assert_eq!(
            warnings(&c),
            vec!["pgbouncer.ini:4: pool_mode: key set again; this later value wins over the one at pgbouncer.ini:2 (as in PgBouncer)"]
        );
    // also across [pgbouncer] and its [pgfunnel] alias, three times
    let c = parse("[pgbouncer]\nverbose = 1\n[pgfunnel]\nverbose = 2\nverbose = 0\n");
    assert_eq!(c.settings.verbose, 0);
    let w = warnings(&c);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[1].starts_with("pgbouncer.ini:5: verbose:") && w[1].contains("pgbouncer.ini:4"));
}

#[test]
fn include_overrides_silently_and_a_later_line_overrides_the_include_with_a_warning() {
    let dir = temp_tree(&[
        (
            "main.ini",
            "[pgbouncer]\nlisten_port = 1000\n%include local.ini\n",
        ),
        ("local.ini", "[pgbouncer]\nlisten_port = 2000\n"),
        (
            "again.ini",
            "[pgbouncer]\nlisten_port = 1000\n%include local.ini\nlisten_port = 3000\n",
        ),
    ]);
    let c = Config::load(&dir.path().join("main.ini")).expect("include override");
    assert_eq!(c.settings.listen_port, 2000);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c
        .settings
        .location_of("listen_port")
        .is_some_and(|l| l.file.ends_with("local.ini")));
    let c = Config::load(&dir.path().join("again.ini")).expect("later line wins");
    assert_eq!(c.settings.listen_port, 3000);
    // the include's line was the last place it was set, in another file: no warning
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn repeated_database_and_user_take_the_later_entry_and_warn() {
    let c = parse("[databases]\nfoo = host=a\nbar = host=c\nfoo = host=b\n");
    let names: Vec<&str> = c.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["foo", "bar"], "the entry keeps its place");
    assert_eq!(c.databases[0].hosts, vec!["b"]);
    assert_eq!(
            warnings(&c),
            vec!["pgbouncer.ini:4: foo: database set again; this later value wins over the one at pgbouncer.ini:2 (as in PgBouncer)"]
        );
    let c = parse("[databases]\n* =\n* = host=x\n");
    assert_eq!(c.fallback.map(|f| f.hosts), Some(vec!["x".to_owned()]));
    let c = parse("[users]\nbob = pool_size=1\nbob = pool_size=2\n");
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.user("bob").and_then(|u| u.pool_size), Some(2));
    assert!(
        warnings(&c)[0].contains("user set again"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let err = Config::parse_str(
            "[pgbouncer]\npool_mode = sessionx\nlisten_port = 0\nnot a line\n[databases]\npgbouncer = host=a\n",
            Path::new("pgbouncer.ini"),
        )
        .expect_err("four problems");
    let lines: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("pgbouncer.ini:2: pool_mode"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("pgbouncer.ini:3: listen_port"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("pgbouncer.ini:4: syntax error"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("pgbouncer.ini:6: database name"),
        "{lines:?}"
    );
    assert_eq!(err.to_string(), lines.join("\n"));
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
    let c = parse("[pgbouncer]\nno_such_key = 1\ntcp_defer_accept = 1\n[peers]\n1 = host=a\n");
    let shown: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "pgbouncer.ini:2: no_such_key: unknown key, ignored",
            "pgbouncer.ini:3: tcp_defer_accept: accepted but has no effect in pgfunnel",
        ]
    );
    assert_eq!(
        c.settings
            .no_effect
            .get("tcp_defer_accept")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(c.peers.len(), 1, "[peers] entries are read");
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
