//! Certificates libpq and PgBouncer (OpenSSL) accept and webpki alone would not, made at
//! test time with the `openssl` CLI: X.509 v1 certificates on Postgres, on pgfunnel and on
//! clients; PostgreSQL's manual's self-signed certificate named as its own CA; host names
//! checked against the CN when there is no subjectAltName; and console SET of TLS and HBA
//! settings taking effect for the next connection, or refused with the old setup kept.

use std::path::{Path, PathBuf};

use crate::harness::*;
use crate::proxy::*;
use crate::server_tls::server_side_ssl;
use crate::tls::psql;

/// A pgfunnel whose database `app` is at `host:port`, with `extra` settings.
async fn proxy_to(host: &str, port: u16, extra: &str) -> Proxy {
    let db = format!("app = host={host} port={port} dbname=app");
    Proxy::start(&ini(&db, extra), &userlist("")).await
}

/// A pgfunnel in front of the shared Postgres with `extra` settings.
async fn proxy_with(extra: &str) -> Proxy {
    Proxy::start(&ini(&db_line("app", "app", ""), extra), &userlist("")).await
}

/// Whether pgfunnel's server connection uses TLS, or the client's error message.
async fn login(p: &Proxy) -> Result<bool, String> {
    server_side_ssl(p, SCRAM_USER, SCRAM_PASSWORD).await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn client_tls_lines(mode: &str, cert: &Path, key: &Path) -> String {
    format!(
        "client_tls_sslmode = {mode}\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
        cert.display(),
        key.display()
    )
}

/// Runs psql `select 42` through pgfunnel on a blocking thread.
async fn psql_async(
    port: u16,
    sslmode: &'static str,
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
) -> Result<String, String> {
    let (ca, cert) = (ca.to_path_buf(), cert.cloned());
    tokio::task::spawn_blocking(move || psql(port, sslmode, &ca, cert.as_ref()))
        .await
        .expect("psql task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_postgres_certificate_is_used_and_checked_like_libpq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    let (pg, ca, other) = tokio::task::spawn_blocking(move || {
        let pg = PgServer::start();
        let ca = OpensslCa::v1(&d, "ca", "v1 test CA");
        let (crt, key) = ca.issue_v1("pg", "localhost", None);
        pg.enable_ssl(&read(&crt), &read(&key), None, "");
        let other = OpensslCa::v1(&d, "other", "unrelated CA");
        (pg, ca, other)
    })
    .await
    .expect("start Postgres");
    let port = pg.port();
    // No verification wanted: TLS is used all the same (prefer used to fall back to plaintext).
    for mode in ["prefer", "require"] {
        let p = proxy_to("localhost", port, &format!("server_tls_sslmode = {mode}")).await;
        assert_eq!(login(&p).await, Ok(true), "server_tls_sslmode = {mode}");
    }
    let verify = |mode: &str, ca: &Path| {
        format!(
            "server_tls_sslmode = {mode}\nserver_tls_ca_file = {}",
            ca.display()
        )
    };
    // verify-ca checks the chain only; verify-full the CN too (no subjectAltName).
    let p = proxy_to("127.0.0.1", port, &verify("verify-ca", &ca.cert)).await;
    assert_eq!(login(&p).await, Ok(true), "verify-ca, any host name");
    let p = proxy_to("localhost", port, &verify("verify-full", &ca.cert)).await;
    assert_eq!(login(&p).await, Ok(true), "verify-full, CN = localhost");
    let p = proxy_to("127.0.0.1", port, &verify("verify-full", &ca.cert)).await;
    let e = login(&p).await.expect_err("CN localhost is not 127.0.0.1");
    assert_eq!(
        e,
        "server login failed: SSL error: certificate verify failed: server certificate does not match host name"
    );
    let p = proxy_to("localhost", port, &verify("verify-ca", &other.cert)).await;
    let e = login(&p).await.expect_err("signed by another CA");
    assert_eq!(
        e,
        "server login failed: SSL error: certificate verify failed: unable to get local issuer certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_self_signed_certificate_is_its_own_ca_under_verify_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = manual_self_signed(dir.path(), "server", "localhost");
    // A pgfunnel serving that certificate (and refusing plaintext) stands in for the server.
    let front = proxy_with(&client_tls_lines("require", &crt, &key)).await;
    let full = format!(
        "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}",
        crt.display()
    );
    let port = front.addr.port();
    let back = proxy_to("localhost", port, &full).await;
    let c = back.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    let row = c.query_one("select 1", &[]).await.expect("through both");
    assert_eq!(row.get::<_, i32>(0), 1);
    let wrong_host = proxy_to("127.0.0.1", port, &full).await;
    let e = wrong_host
        .try_connect(SCRAM_USER, SCRAM_PASSWORD, "app")
        .await
        .expect_err("CN is localhost");
    assert!(
        message(&e).contains("certificate verify failed"),
        "{}",
        message(&e)
    );
    // libpq agrees: the certificate as sslrootcert passes verify-full.
    assert_eq!(
        psql_async(port, "verify-full", &crt, None).await,
        Ok("42".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_certificates_for_pgfunnel_and_its_clients_work_with_psql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = OpensslCa::v1(dir.path(), "ca", "v1 CA");
    let (crt, key) = ca.issue_v1("proxy", "localhost", None);
    let client = ca.issue_v1("client", PLAIN_USER, None);
    let intruder =
        OpensslCa::v1(dir.path(), "other", "other CA").issue_v1("intruder", PLAIN_USER, None);
    let lines = format!(
        "{}client_tls_ca_file = {}\nauth_type = cert\n",
        client_tls_lines("verify-ca", &crt, &key),
        ca.cert.display()
    );
    let proxy = proxy_with(&lines).await;
    let port = proxy.addr.port();
    // pgfunnel's v1 certificate, checked by libpq by chain and by CN; the v1 client
    // certificate chained to client_tls_ca_file logs plain_user in (auth_type = cert).
    for mode in ["verify-ca", "verify-full"] {
        assert_eq!(
            psql_async(port, mode, &ca.cert, Some(&client)).await,
            Ok("42".into()),
            "psql sslmode={mode}"
        );
    }
    let e = psql_async(port, "verify-ca", &ca.cert, Some(&intruder))
        .await
        .expect_err("client certificate from another CA");
    assert!(!e.is_empty());
    let e = psql_async(port, "verify-ca", &ca.cert, None)
        .await
        .expect_err("verify-ca wants a client certificate");
    assert!(!e.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_set_of_tls_settings_applies_to_the_next_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = OpensslCa::v1(dir.path(), "ca_a", "CA A");
    let b = OpensslCa::v1(dir.path(), "ca_b", "CA B");
    let (a_crt, key) = a.issue_v1("proxy_a", "localhost", None);
    let (b_crt, _) = b.issue_v1("proxy_b", "localhost", Some(&key));
    let (_, stray_key) = a.issue_v1("stray", "localhost", None);
    let lines = format!(
        "admin_users = {PLAIN_USER}\n{}",
        client_tls_lines("prefer", &a_crt, &key)
    );
    let proxy = proxy_with(&lines).await;
    let port = proxy.addr.port();
    let trusts = |ca: &'static str| {
        let ca = dir.path().join(ca);
        async move { psql_async(port, "verify-full", &ca, None).await.is_ok() }
    };
    assert!(trusts("ca_a.crt").await && !trusts("ca_b.crt").await);
    let console = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let set = |key: &str, value: &Path| format!("SET {key} = '{}'", value.display());
    let open = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    console
        .simple_query(&set("client_tls_cert_file", &b_crt))
        .await
        .expect("SET a certificate for the same key");
    assert!(
        trusts("ca_b.crt").await && !trusts("ca_a.crt").await,
        "the next connection gets the new certificate"
    );
    // SETs that would leave TLS unusable are refused; the running setup stays.
    let refused = [
        (
            set("client_tls_cert_file", Path::new("/nonexistent/x.crt")),
            "cannot read client_tls_cert_file",
        ),
        (
            set("client_tls_key_file", &stray_key),
            "client_tls_key_file does not match",
        ),
        (
            "SET client_tls_sslmode = 'verify-ca'".to_owned(),
            "needs client_tls_ca_file",
        ),
    ];
    for (sql, want) in refused {
        let e = console.simple_query(&sql).await.expect_err(&sql);
        assert!(message(&e).contains("TLS setup unchanged"), "{sql}: {e}");
        assert!(message(&e).contains(want), "{sql}: {}", message(&e));
    }
    assert!(trusts("ca_b.crt").await, "the working setup still serves");
    let rows = console
        .simple_query("SHOW CONFIG")
        .await
        .expect("SHOW CONFIG");
    let shown = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get("key") == Some("client_tls_key_file") =>
        {
            r.get("value").map(str::to_owned)
        }
        _ => None,
    });
    assert_eq!(
        shown,
        Some(key.display().to_string()),
        "refused SET not kept"
    );
    let row = open.query_one("select 1", &[]).await.expect("open client");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_set_of_auth_hba_file_applies_or_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = dir.path().join("allow.conf");
    std::fs::write(
        &allow,
        format!("host all {PLAIN_USER} 127.0.0.1/32 password\nhost all all 127.0.0.1/32 md5\n"),
    )
    .expect("write hba");
    let deny = dir.path().join("deny.conf");
    std::fs::write(
        &deny,
        format!("host all {PLAIN_USER} 127.0.0.1/32 password\nhost all all 127.0.0.1/32 reject\n"),
    )
    .expect("write hba");
    let extra = format!(
        "admin_users = {PLAIN_USER}\nauth_type = hba\nauth_hba_file = {}",
        allow.display()
    );
    let proxy = proxy_with(&extra).await;
    proxy.connect(MD5_USER, MD5_PASSWORD, "app").await;
    let console = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let e = console
        .simple_query("SET auth_hba_file = '/nonexistent/hba.conf'")
        .await
        .expect_err("missing file");
    assert!(message(&e).contains("HBA rules unchanged"), "{e}");
    proxy.connect(MD5_USER, MD5_PASSWORD, "app").await;
    console
        .simple_query(&format!("SET auth_hba_file = '{}'", deny.display()))
        .await
        .expect("SET auth_hba_file");
    let e = proxy
        .try_connect(MD5_USER, MD5_PASSWORD, "app")
        .await
        .expect_err("the new rules reject md5_user");
    assert_eq!(sqlstate(&e), "28000");
}
