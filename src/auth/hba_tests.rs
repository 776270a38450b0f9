use super::*;

fn req<'a>(db: &'a str, user: &'a str, addr: &str, tls: bool) -> HbaRequest<'a> {
    HbaRequest {
        database: db,
        user,
        addr: (addr != "unix").then(|| addr.parse().expect("eval address")),
        tls,
        replication: false,
    }
}

/// Replays `eval` (`expected<TAB>db<TAB>user<TAB>addr[<TAB>tls|replication]` per line)
/// against `rules`; returns how many lines were checked.
fn replay(rules: &str, eval: &str) -> usize {
    let hba = Hba::parse(rules).expect("fixture rules parse");
    let mut checked = 0;
    for (n, line) in eval.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        // Fields are tab-separated: names such as `a , b` contain spaces.
        let f: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        if f.is_empty() {
            continue;
        }
        assert!(
            f.len() >= 4,
            "eval line {}: too few fields: {line:?}",
            n + 1
        );
        let flags = &f[4..];
        let mut r = req(f[1], f[2], f[3], flags.contains(&"tls"));
        r.replication = flags.contains(&"replication");
        let got = hba.lookup(&r);
        assert_eq!(got.as_str(), f[0], "eval line {}: {line:?}", n + 1);
        checked += 1;
    }
    checked
}

/// Replays every line of PgBouncer's HBA fixture (`expected db user addr [tls]`) against its
/// rules. The files are read in place from the shared test data, never copied; skipped when
/// this checkout has none.
#[test]
fn pgbouncer_hba_fixture_replays_line_by_line() {
    let Some(dir) = crate::config::test_support::shared_testdata() else {
        return;
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    let checked = replay(&read("hba_test.rules"), &read("hba_test.eval"));
    assert!(checked > 50, "only {checked} eval lines found");
}

/// pgfunnel's own HBA fixture (tests/fixtures/hba): every connection type, lists, quoting,
/// netmasks, IPv6, sameuser and first-match order, replayed line by line.
#[test]
fn own_hba_fixture_replays_line_by_line() {
    let read = |name: &str| {
        let path = crate::config::test_support::fixture(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let checked = replay(&read("hba/rules.conf"), &read("hba/rules.eval"));
    assert!(checked >= 20, "only {checked} eval lines found");
}

#[test]
fn tokenizer_handles_quotes_lists_and_comments() {
    let fields = tokenize(r#"host "q1""q2",x  a , "b c"  all md5 # tail"#).expect("ok");
    let texts: Vec<Vec<&str>> = fields
        .iter()
        .map(|f| f.iter().map(|i| i.text.as_str()).collect())
        .collect();
    assert_eq!(
        texts,
        vec![
            vec!["host"],
            vec!["q1\"q2", "x"],
            vec!["a", "b c"],
            vec!["all"],
            vec!["md5"]
        ]
    );
    assert!(tokenize(r#"host "open"#).is_err());
    assert!(tokenize("host a, ").is_err());
}

#[test]
fn unsupported_lines_are_refused_with_their_line_number() {
    for (text, problem) in [
        ("host all +admins all md5", "+group"),
        ("host all all example.com md5", "host names"),
        ("host all all 10.0.0.0/33 md5", "prefix"),
        ("host all all all ldap", "method"),
        ("hostgssenc all all all md5", "connection type"),
        ("host all all 10.0.0.0 255.0.255.0 md5", "contiguous"),
    ] {
        let (line, p) = Hba::parse(&format!("# c\n{text}\n")).expect_err(text);
        assert_eq!(line, 2, "{text}");
        assert!(p.contains(problem), "{text}: {p}");
    }
}

#[test]
fn replication_and_sameuser_keywords() {
    let hba = Hba::parse(
        "host replication all all trust\nhost sameuser all all md5\nhost \"sameuser\" all all cert\n",
    )
    .expect("ok");
    let mut r = req("alice", "alice", "10.0.0.1", false);
    assert_eq!(hba.lookup(&r), HbaMethod::Md5);
    r.database = "sameuser";
    assert_eq!(hba.lookup(&r), HbaMethod::Cert);
    r.database = "other";
    assert_eq!(hba.lookup(&r), HbaMethod::Reject);
    r.replication = true;
    assert_eq!(hba.lookup(&r), HbaMethod::Trust);
}

#[test]
fn ipv4_mapped_client_addresses_match_ipv4_rules() {
    let hba = Hba::parse("host all all 10.0.0.0/8 trust\n").expect("ok");
    assert_eq!(
        hba.lookup(&req("d", "u", "::ffff:10.1.2.3", false)),
        HbaMethod::Trust
    );
}

#[test]
fn map_option_names_the_ident_map_for_peer_and_cert() {
    let ident = crate::auth::IdentMap::parse("ops alice app_owner\n").expect("ident");
    let hba = Hba::parse("local all all peer map=ops\nhost all all all cert\n")
        .expect("ok")
        .with_ident(ident);
    let mut r = req("d", "app_owner", "10.0.0.1", false);
    let m = hba.lookup_match(&r);
    assert_eq!((m.method, m.map), (HbaMethod::Cert, None));
    r.addr = None;
    let m = hba.lookup_match(&r);
    assert_eq!((m.method, m.map.as_deref()), (HbaMethod::Peer, Some("ops")));
    assert!(hba.name_allowed(Some("ops"), "alice", "app_owner"));
    assert!(!hba.name_allowed(Some("ops"), "app_owner", "app_owner"));
    assert!(hba.name_allowed(None, "app_owner", "app_owner"));
    assert!(!hba.name_allowed(None, "alice", "app_owner"));
}
