use super::*;

fn loc() -> Location {
    Location {
        file: "db.ini".into(),
        line: 7,
    }
}

fn db(connstr: &str) -> (DatabaseEntry, Vec<ConfigWarning>) {
    let mut warnings = Vec::new();
    let entry = parse_database_entry("app", connstr, &loc(), &mut warnings)
        .unwrap_or_else(|e| panic!("{e}"));
    (entry, warnings)
}

fn db_error(connstr: &str) -> String {
    parse_database_entry("app", connstr, &loc(), &mut Vec::new())
        .expect_err("must fail")
        .to_string()
}

#[test]
fn empty_entry_means_unix_socket_and_inherit_everything() {
    let (e, w) = db("");
    assert!(e.hosts.is_empty());
    assert_eq!(e.port, 5432);
    assert_eq!(e.server_dbname(), "app");
    assert_eq!(e.pool_size, None);
    assert_eq!(e.pool_mode, None);
    assert!(w.is_empty());
}

#[test]
fn every_database_option_is_applied() {
    let (e, w) = db(
            "host=a,b port=6000 dbname=real user=u password='p w' auth_user=au \
             auth_query='SELECT 1' auth_dbname=adb pool_size=3 min_pool_size=1 reserve_pool_size=2 \
             connect_query='SET x=1' pool_mode=transaction load_balance_hosts=disable max_db_connections=9 \
             max_db_client_connections=8 server_lifetime=0.5 query_wait_timeout=2min client_encoding=UTF8 \
             datestyle=ISO timezone=UTC application_name=app1",
        );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(e.hosts, vec!["a", "b"]);
    assert_eq!(e.port, 6000);
    assert_eq!(e.server_dbname(), "real");
    assert_eq!(e.user.as_deref(), Some("u"));
    assert_eq!(e.password.as_ref().map(Password::expose), Some("p w"));
    assert_eq!(e.auth_user.as_deref(), Some("au"));
    assert_eq!(e.auth_query.as_deref(), Some("SELECT 1"));
    assert_eq!(e.auth_dbname.as_deref(), Some("adb"));
    assert_eq!(
        (e.pool_size, e.min_pool_size, e.reserve_pool_size),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(e.connect_query.as_deref(), Some("SET x=1"));
    assert_eq!(e.pool_mode, Some(PoolMode::Transaction));
    assert_eq!(e.load_balance_hosts, LoadBalanceHosts::Disable);
    assert_eq!(
        (e.max_db_connections, e.max_db_client_connections),
        (Some(9), Some(8))
    );
    assert_eq!(e.server_lifetime, Some(Duration::from_millis(500)));
    assert_eq!(e.query_wait_timeout, Some(Duration::from_secs(120)));
    assert_eq!(e.client_encoding.as_deref(), Some("UTF8"));
    assert_eq!(e.datestyle.as_deref(), Some("ISO"));
    assert_eq!(e.timezone.as_deref(), Some("UTC"));
    assert_eq!(e.application_name.as_deref(), Some("app1"));
}

#[test]
fn reserve_pool_is_an_alias() {
    assert_eq!(db("reserve_pool=4").0.reserve_pool_size, Some(4));
}

#[test]
fn ipv6_hosts_in_lists() {
    assert_eq!(db("host=127.0.0.1,::1").0.hosts, vec!["127.0.0.1", "::1"]);
}

#[test]
fn several_ports_keep_the_first_and_warn() {
    let (e, w) = db("host=a,b port=6000,6001");
    assert_eq!(e.port, 6000);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].key, "port");
    let (_, w) = db("port=6000,6000");
    assert!(w.is_empty());
}

#[test]
fn unknown_option_is_a_warning_with_location() {
    let (_, w) = db("host=a target_session_attrs=read-write");
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].to_string(),
        "db.ini:7: target_session_attrs: unknown option in entry \"app\", ignored"
    );
}

#[test]
fn bad_option_values_name_entry_key_value_and_allowed() {
    assert_eq!(
        db_error("pool_mode=sessionx"),
        "db.ini:7: app: pool_mode = \"sessionx\": expected one of session, transaction, statement"
    );
    assert_eq!(
        db_error("pool_size=-1"),
        "db.ini:7: app: pool_size = \"-1\": expected an integer from 0 to 2147483647"
    );
    assert!(db_error("port=0").contains("port = \"0\": expected an integer from 1 to 65535"));
    assert!(
        db_error("server_lifetime=soon").contains("server_lifetime = \"soon\": expected a time")
    );
    assert!(db_error("load_balance_hosts=random").contains("expected one of round-robin, disable"));
}

#[test]
fn malformed_connection_string_hides_the_text() {
    let err = db_error("password='secret");
    assert_eq!(
        err,
        "db.ini:7: app: option password: unterminated quoted value"
    );
    assert!(!err.contains("secret"));
}

#[test]
fn debug_output_hides_passwords() {
    let (e, _) = db("password=hunter2");
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[test]
fn min_pool_above_pool_size_warns() {
    let (_, w) = db("min_pool_size=5 pool_size=2");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].key, "min_pool_size");
}

#[test]
fn every_user_option_is_applied() {
    let mut warnings = Vec::new();
    let u = parse_user_entry(
            "alice",
            "pool_mode=statement pool_size=1 reserve_pool_size=2 max_user_connections=3 \
             max_user_client_connections=4 query_timeout=5 idle_transaction_timeout=6 transaction_timeout=7 \
             client_idle_timeout=8 query_wait_timeout=9 colour=blue",
            &loc(),
            &mut warnings,
        )
        .expect("valid user");
    assert_eq!(u.pool_mode, Some(PoolMode::Statement));
    assert_eq!((u.pool_size, u.reserve_pool_size), (Some(1), Some(2)));
    assert_eq!(
        (u.max_user_connections, u.max_user_client_connections),
        (Some(3), Some(4))
    );
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(u.query_timeout, secs(5));
    assert_eq!(u.idle_transaction_timeout, secs(6));
    assert_eq!(u.transaction_timeout, secs(7));
    assert_eq!(u.client_idle_timeout, secs(8));
    assert_eq!(u.query_wait_timeout, secs(9));
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "colour");
}
