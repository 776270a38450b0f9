use super::*;

fn only_db(config: &Config) -> &DatabaseEntry {
    assert_eq!(config.databases.len(), 1);
    &config.databases[0]
}

#[test]
fn redact_urls_hides_every_password_and_keeps_the_rest() {
    assert_eq!(
        redact_urls("postgres://app:s3cr@t/x@db:5432/app: No such file"),
        "postgres://app:***@db:5432/app: No such file"
    );
    assert_eq!(
        redact_urls("a postgresql://u:p@h/d and \"postgres://v:q@h\" end"),
        "a postgresql://u:***@h/d and \"postgres://v:***@h\" end"
    );
    assert_eq!(redact_urls("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact_urls("no url here: a:b@c"), "no url here: a:b@c");
    assert!(looks_like_url("postgres://u@h") && looks_like_url("PostgreSQL://u@h"));
    assert!(!looks_like_url("/etc/pgbouncer.ini") && !looks_like_url("http://x"));
}

fn url_error(url: &str) -> String {
    Config::from_url(url).expect_err("must fail").to_string()
}

#[test]
fn full_url_builds_one_database_and_url_mode_defaults() {
    let c = Config::from_url("postgres://app:secret@db.example:5433/shop?sslmode=require")
        .expect("valid");
    let db = only_db(&c);
    assert_eq!(db.name, "shop");
    assert_eq!(db.server_dbname(), "shop");
    assert_eq!(db.hosts, vec!["db.example"]);
    assert_eq!(db.port, 5433);
    assert_eq!(db.user.as_deref(), Some("app"));
    assert_eq!(db.password.as_ref().map(Password::expose), Some("secret"));
    assert_eq!(
        db.url_tls.as_ref().and_then(|t| t.sslmode),
        Some(SslMode::Require)
    );
    let s = &c.settings;
    assert_eq!(s.listen_addr, vec!["127.0.0.1"]);
    assert_eq!(s.listen_port, 6432);
    assert_eq!(s.pool_mode, PoolMode::Transaction);
    assert_eq!(s.auth_type, AuthType::ScramSha256);
    assert_eq!(s.server_tls_sslmode, SslMode::Require);
    assert!(c.path.is_none() && c.auth_file_path.is_none() && c.fallback.is_none());
}

#[test]
fn postgresql_scheme_default_port_and_percent_decoding() {
    let c =
        Config::from_url("postgresql://us%40er:p%40ss%3Aw%2Fd@localhost/my%20db").expect("valid");
    let db = only_db(&c);
    assert_eq!(db.user.as_deref(), Some("us@er"));
    assert_eq!(db.password.as_ref().map(Password::expose), Some("p@ss:w/d"));
    assert_eq!(db.port, 5432);
    assert_eq!(db.name, "my db");
}

#[test]
fn ipv6_host_loses_its_brackets() {
    let c = Config::from_url("postgres://u:p@[::1]:6543/db").expect("valid");
    assert_eq!(only_db(&c).hosts, vec!["::1"]);
    assert_eq!(only_db(&c).port, 6543);
}

#[test]
fn missing_password_and_database_are_allowed() {
    let c = Config::from_url("postgres://alice@h").expect("valid");
    let db = only_db(&c);
    assert!(db.password.is_none());
    assert_eq!(
        db.name, "alice",
        "database defaults to the user name, as in libpq"
    );
}

#[test]
fn percent_encoded_socket_directory_as_host() {
    let c = Config::from_url("postgres://u@%2Fvar%2Frun%2Fpostgresql/db").expect("valid");
    assert_eq!(only_db(&c).hosts, vec!["/var/run/postgresql"]);
}

#[test]
fn tls_parameters_are_kept_and_applied() {
    let c = Config::from_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/k.pem&sslnegotiation=direct&application_name=x",
        )
        .expect("valid");
    let tls = only_db(&c).url_tls.clone().expect("url tls");
    assert_eq!(tls.sslnegotiation, Some(SslNegotiation::Direct));
    assert_eq!(tls.sslrootcert, Some(PathBuf::from("/ca.pem")));
    assert_eq!(
        c.settings.server_tls_ca_file,
        Some(PathBuf::from("/ca.pem"))
    );
    assert_eq!(
        c.settings.server_tls_cert_file,
        Some(PathBuf::from("/c.pem"))
    );
    assert_eq!(
        c.settings.server_tls_key_file,
        Some(PathBuf::from("/k.pem"))
    );
    assert_eq!(only_db(&c).application_name.as_deref(), Some("x"));
}

#[test]
fn libpq_sslmode_defaults_and_rootcert_rules() {
    let mode = |url: &str| Config::from_url(url).expect(url).settings;
    assert_eq!(
        mode("postgres://u@h/db").server_tls_sslmode,
        SslMode::Prefer
    );
    let s = mode("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem");
    assert_eq!(s.server_tls_sslmode, SslMode::VerifyCa);
    let s = mode("postgres://u@h/db?sslrootcert=system");
    assert_eq!(s.server_tls_sslmode, SslMode::VerifyFull);
    assert_eq!(s.server_tls_ca_file, None, "system = the system roots");
    assert!(
        url_error("postgres://u@h/db?sslmode=prefer&sslnegotiation=direct")
            .contains("sslnegotiation=direct")
    );
}

#[test]
fn missing_user_shows_a_dash_and_no_password() {
    let err = url_error("postgres://:secret@h:5433/db");
    assert!(
        err.starts_with("database URL postgres://-@h:5433/db: a user name is required"),
        "{err}"
    );
    assert!(!err.contains("secret"));
}

#[test]
fn bad_scheme_and_garbage_are_refused() {
    assert!(url_error("mysql://u@h/db").contains("scheme mysql:// is not supported"));
    assert!(url_error("not a url").starts_with("database URL -: not a valid URL"));
}

#[test]
fn bad_parameters_are_refused() {
    assert!(url_error("postgres://u@h/db?sslmode=sometimes")
        .contains("sslmode = \"sometimes\": expected one of disable"));
    assert!(url_error("postgres://u@h/db?target_session_attrs=any")
        .contains("unknown parameter target_session_attrs"));
    assert!(
        url_error("postgres://u@h/db?sslcert=/c.pem").contains("sslcert is given without sslkey")
    );
    assert!(url_error("postgres://u:%ZZ@h/db").contains("bad percent-encoding in the password"));
    assert!(url_error("postgres://u@h:0/db").contains("port must be from 1 to 65535"));
}
