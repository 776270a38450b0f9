use super::*;

fn names(v: &[&'static SupportedProtocolVersion]) -> Vec<String> {
    v.iter().map(|p| format!("{:?}", p.version)).collect()
}

#[test]
fn protocol_lists_follow_pgbouncer_keywords() {
    let both = ["TLSv1_3", "TLSv1_2"];
    assert_eq!(names(&protocol_versions("secure", "k").expect("ok")), both);
    assert_eq!(names(&protocol_versions("all", "k").expect("ok")), both);
    assert_eq!(
        names(&protocol_versions("tlsv1.3", "k").expect("ok")),
        ["TLSv1_3"]
    );
    assert_eq!(
        names(&protocol_versions("all,!tlsv1.3", "k").expect("ok")),
        ["TLSv1_2"]
    );
    assert_eq!(
        names(&protocol_versions("tlsv1.1 : tlsv1.2", "k").expect("ok")),
        ["TLSv1_2"]
    );
}

#[test]
fn protocol_lists_without_a_usable_version_are_refused() {
    let e = protocol_versions("tlsv1.0,tlsv1.1", "client_tls_protocols").expect_err("old");
    assert!(e.to_string().contains("TLS 1.2 and 1.3"), "{e}");
    let e = protocol_versions("sslv3", "client_tls_protocols").expect_err("unknown");
    assert!(
        e.to_string()
            .starts_with("client_tls_protocols = \"sslv3\": unknown"),
        "{e}"
    );
}

#[test]
fn client_side_needs_a_ca_file_to_verify_clients() {
    let s = Settings {
        client_tls_sslmode: SslMode::VerifyCa,
        client_tls_cert_file: Some("/nonexistent/c.pem".into()),
        client_tls_key_file: Some("/nonexistent/k.pem".into()),
        ..Settings::default()
    };
    let e = client_side(&s).expect_err("missing file");
    assert!(
        e.to_string()
            .starts_with("cannot read client_tls_cert_file /nonexistent/c.pem"),
        "{e}"
    );
}

#[test]
fn disabled_sides_build_without_files() {
    let s = Settings {
        server_tls_sslmode: SslMode::Disable,
        ..Settings::default()
    };
    let tls = TlsConfigs::load(&s).expect("nothing to read");
    assert!(tls.client().acceptor.is_none());
    assert!(tls.server().connector.is_none());
}
