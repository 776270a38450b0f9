use super::*;

fn explicit(mut settings: Settings, key: &'static str) -> Settings {
    settings.set_at.insert(
        key,
        Location {
            file: "t.ini".into(),
            line: 3,
        },
    );
    settings
}

#[test]
fn defaults_are_valid() {
    let warnings = Settings::default()
        .validate(Path::new("t.ini"))
        .expect("defaults valid");
    assert!(warnings.is_empty());
}

#[test]
fn hba_needs_hba_file() {
    let mut s = explicit(Settings::default(), "auth_type");
    s.auth_type = AuthType::Hba;
    let err = s
        .validate(Path::new("t.ini"))
        .expect_err("hba without file");
    assert_eq!(
        err.to_string(),
        "t.ini:3: auth_type = \"hba\" requires auth_hba_file to be set"
    );
}

#[test]
fn pam_and_ldap_are_refused_naming_file_and_line() {
    for (kind, word) in [(AuthType::Pam, "pam"), (AuthType::Ldap, "ldap")] {
        let mut s = explicit(Settings::default(), "auth_type");
        s.auth_type = kind;
        let err = s.validate(Path::new("t.ini")).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with(&format!("t.ini:3: auth_type = \"{word}\": PAM and LDAP")),
            "{err}"
        );
    }
}

#[test]
fn client_tls_needs_key_and_cert() {
    let mut s = explicit(Settings::default(), "client_tls_sslmode");
    s.client_tls_sslmode = SslMode::Require;
    let err = s.validate(Path::new("t.ini")).expect_err("tls without key");
    assert!(
        err.to_string()
            .contains("client_tls_key_file and client_tls_cert_file"),
        "{err}"
    );
}

#[test]
fn server_tls_key_needs_cert() {
    let mut s = explicit(Settings::default(), "server_tls_key_file");
    s.server_tls_key_file = Some("k.pem".into());
    let err = s
        .validate(Path::new("t.ini"))
        .expect_err("key without cert");
    assert!(
        err.to_string().contains("requires server_tls_cert_file"),
        "{err}"
    );
}

#[test]
fn no_listener_at_all_is_refused() {
    let mut s = explicit(Settings::default(), "unix_socket_dir");
    s.unix_socket_dir.clear();
    let err = s
        .validate(Path::new("t.ini"))
        .expect_err("nothing to listen on");
    assert!(
        err.to_string()
            .starts_with("t.ini:3: unix_socket_dir is empty"),
        "{err}"
    );
}

#[test]
fn min_pool_above_pool_size_warns() {
    let mut s = explicit(Settings::default(), "min_pool_size");
    s.min_pool_size = 30;
    let warnings = s.validate(Path::new("t.ini")).expect("valid");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "min_pool_size");
}
