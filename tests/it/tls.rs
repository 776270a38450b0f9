//! TLS between clients and pgfunnel: every client_tls_sslmode with tokio-postgres and psql,
//! client certificates and `auth_type = cert`, PG17 direct TLS, certificate rotation on
//! reload, and clients that misbehave around the TLS handshake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::{SslMode, SslNegotiation};

use crate::harness::*;
use crate::proxy::*;

/// What a test client trusts and presents.
pub struct ClientTls<'a> {
    /// CA to verify the server with; `None` = no certificate check (libpq's `require`).
    pub ca_pem: Option<&'a str>,
    /// Client certificate to present.
    pub cert: Option<&'a Leaf>,
}

/// A rustls client config for tokio-postgres.
pub fn rustls_client(tls: &ClientTls<'_>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match tls.ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.expect("CA pem")).expect("add root");
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                pgfunnel::net::tls_verify::NoCertificateCheck::new(provider),
            )),
    };
    let mut config = match tls.cert {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    // As libpq 17: PostgreSQL requires ALPN for direct TLS.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    config
}

/// Connects to `addr` naming the server `localhost` (for SNI and verification).
pub async fn tls_connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
    mode: SslMode,
    tls: &ClientTls<'_>,
    direct: bool,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(addr.ip())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("app")
        .ssl_mode(mode)
        .connect_timeout(Duration::from_secs(10));
    if direct {
        config.ssl_negotiation(SslNegotiation::Direct);
    }
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(tls));
    let (client, conn) = config.connect(connector).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A CA, pgfunnel's certificate for `localhost` and a client certificate for `plain_user`,
/// written into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub proxy_cert: (PathBuf, PathBuf),
    pub client: Leaf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("pgfunnel test CA");
        let ca_file = write_pem(dir.path(), "ca.crt", &ca.pem());
        let proxy_cert = ca
            .issue("pgfunnel", &["localhost"])
            .write(dir.path(), "proxy");
        let client = ca.issue(PLAIN_USER, &[]);
        Pki {
            dir,
            ca,
            ca_file,
            proxy_cert,
            client,
        }
    }

    /// `[pgbouncer]` lines for client TLS in `mode`.
    pub fn client_tls_lines(&self, mode: &str) -> String {
        format!(
            "client_tls_sslmode = {mode}\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nclient_tls_ca_file = {}\n",
            self.proxy_cert.0.display(),
            self.proxy_cert.1.display(),
            self.ca_file.display()
        )
    }
}

async fn proxy_with(extra: &str) -> Proxy {
    Proxy::start(&ini(&db_line("app", "app", ""), extra), &userlist("")).await
}

/// `current_user` through pgfunnel.
pub async fn query_one(c: &tokio_postgres::Client) -> String {
    let row = c
        .query_one("select current_user::text", &[])
        .await
        .expect("query through pgfunnel");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_sslmode_with_tokio_postgres() {
    let pki = Pki::new();
    let ca = pki.ca.pem();
    let verified = ClientTls {
        ca_pem: Some(&ca),
        cert: Some(&pki.client),
    };
    let no_cert = ClientTls {
        ca_pem: Some(&ca),
        cert: None,
    };
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        let proxy = proxy_with(&pki.client_tls_lines(mode)).await;
        let connect = |m, tls| tls_connect(proxy.addr, PLAIN_USER, PLAIN_PASSWORD, m, tls, false);
        let tls_result = connect(SslMode::Require, &verified).await;
        let plain_result = connect(SslMode::Disable, &verified).await;
        if mode == "disable" {
            assert!(tls_result.is_err(), "{mode}: TLS must be refused");
        } else {
            let c = tls_result.unwrap_or_else(|e| panic!("{mode}: TLS client: {e}"));
            assert_eq!(query_one(&c).await, PLAIN_USER, "{mode}");
        }
        if matches!(mode, "disable" | "allow" | "prefer") {
            let c = plain_result.unwrap_or_else(|e| panic!("{mode}: plain client: {e}"));
            assert_eq!(query_one(&c).await, PLAIN_USER, "{mode}");
        } else {
            let e = plain_result.expect_err("plaintext refused");
            assert_eq!(message(&e), "SSL required", "{mode}");
            assert_eq!(sqlstate(&e), "28000", "{mode}");
        }
        let expired = pki.ca.issue_expired(PLAIN_USER, &[]);
        let with_expired = ClientTls {
            ca_pem: Some(&ca),
            cert: Some(&expired),
        };
        if mode.starts_with("verify") {
            let e = connect(SslMode::Require, &with_expired).await;
            assert!(
                e.is_err(),
                "{mode}: an expired client certificate is refused"
            );
        }
        let without_cert = connect(SslMode::Require, &no_cert).await;
        assert_eq!(
            without_cert.is_ok(),
            !mode.starts_with("verify") && mode != "disable",
            "{mode}: a client without certificate"
        );
    }
}

/// Runs `select 42` with psql against `port` (server name `localhost`); returns stdout or
/// stderr. `cert` is the client certificate and key files to present.
pub(crate) fn psql(
    port: u16,
    sslmode: &str,
    ca: &std::path::Path,
    cert: Option<&(PathBuf, PathBuf)>,
) -> Result<String, String> {
    let mut conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={PLAIN_USER} dbname=app sslmode={sslmode} sslrootcert={}",
        ca.display()
    );
    if let Some((c, k)) = cert {
        conn.push_str(&format!(" sslcert={} sslkey={}", c.display(), k.display()));
    }
    psql_select_42(&conn)
}

/// Runs `select 42` with psql on the connection string `conn` as `PLAIN_USER`'s password;
/// returns stdout or stderr.
pub fn psql_select_42(conn: &str) -> Result<String, String> {
    let out = std::process::Command::new(PgServer::shared().bindir().join("psql"))
        .env_clear()
        .env("PGPASSWORD", PLAIN_PASSWORD)
        .args(["-X", "-A", "-t", "-c", "select 42"])
        .arg(conn)
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_sslmode_with_psql() {
    let pki = Pki::new();
    let cert = pki.client.write(pki.dir.path(), "client");
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        let proxy = proxy_with(&pki.client_tls_lines(mode)).await;
        let (port, ca, cert) = (proxy.addr.port(), pki.ca_file.clone(), cert.clone());
        let (full, plain, no_cert) = tokio::task::spawn_blocking(move || {
            (
                psql(port, "verify-full", &ca, Some(&cert)),
                psql(port, "disable", &ca, None),
                psql(port, "require", &ca, None),
            )
        })
        .await
        .expect("psql task");
        let tls_ok = mode != "disable";
        let plain_ok = matches!(mode, "disable" | "allow" | "prefer");
        let no_cert_ok = tls_ok && !mode.starts_with("verify");
        assert_eq!(full.is_ok(), tls_ok, "{mode}: psql verify-full: {full:?}");
        assert_eq!(plain.is_ok(), plain_ok, "{mode}: psql disable: {plain:?}");
        assert_eq!(
            no_cert.is_ok(),
            no_cert_ok,
            "{mode}: psql without cert: {no_cert:?}"
        );
        if let Ok(out) = full {
            assert_eq!(out, "42");
        }
        if !plain_ok && tls_ok {
            assert!(plain.unwrap_err().contains("SSL required"), "{mode}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_is_accepted() {
    let pki = Pki::new();
    let proxy = proxy_with(&pki.client_tls_lines("require")).await;
    let ca = pki.ca.pem();
    let tls = ClientTls {
        ca_pem: Some(&ca),
        cert: None,
    };
    let c = tls_connect(
        proxy.addr,
        PLAIN_USER,
        PLAIN_PASSWORD,
        SslMode::Require,
        &tls,
        true,
    )
    .await
    .expect("direct TLS");
    assert_eq!(query_one(&c).await, PLAIN_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_cert_takes_the_user_from_the_certificate_cn() {
    let pki = Pki::new();
    let lines = format!("{}auth_type = cert\n", pki.client_tls_lines("verify-full"));
    let proxy = proxy_with(&lines).await;
    let ca = pki.ca.pem();
    let tls = ClientTls {
        ca_pem: Some(&ca),
        cert: Some(&pki.client),
    };
    // No password is asked for: the certificate is the credential.
    let c = tls_connect(
        proxy.addr,
        PLAIN_USER,
        "not-checked",
        SslMode::Require,
        &tls,
        false,
    )
    .await
    .expect("CN matches the user");
    assert_eq!(query_one(&c).await, PLAIN_USER);
    let e = tls_connect(
        proxy.addr,
        MD5_USER,
        MD5_PASSWORD,
        SslMode::Require,
        &tls,
        false,
    )
    .await
    .expect_err("CN is plain_user, not md5_user");
    assert_eq!(sqlstate(&e), "28000");
    assert_eq!(
        message(&e),
        "certificate authentication failed for user \"md5_user\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_rotated_certificates_to_new_connections_only() {
    let pki = Pki::new();
    let proxy = proxy_with(&pki.client_tls_lines("require")).await;
    let old_ca = pki.ca.pem();
    let trusts_old = ClientTls {
        ca_pem: Some(&old_ca),
        cert: None,
    };
    let connect = |tls| {
        tls_connect(
            proxy.addr,
            PLAIN_USER,
            PLAIN_PASSWORD,
            SslMode::Require,
            tls,
            false,
        )
    };
    let before = connect(&trusts_old).await.expect("old certificate");
    // Rotate: a new CA and a new certificate in the same files, then RELOAD.
    let new_ca = TestCa::new("rotated CA");
    new_ca
        .issue("pgfunnel", &["localhost"])
        .write(pki.dir.path(), "proxy");
    let running = proxy.running.as_ref().expect("running");
    running.app.reload_tls().expect("reload");
    let new_pem = new_ca.pem();
    let trusts_new = ClientTls {
        ca_pem: Some(&new_pem),
        cert: None,
    };
    let after = connect(&trusts_new).await.expect("rotated certificate");
    assert_eq!(query_one(&after).await, PLAIN_USER);
    assert!(
        connect(&trusts_old).await.is_err(),
        "new connections get the rotated certificate"
    );
    assert_eq!(
        query_one(&before).await,
        PLAIN_USER,
        "open connections stay"
    );
    // A broken file keeps the working setup.
    std::fs::write(&pki.proxy_cert.0, "not a certificate").expect("break cert");
    let e = running.app.reload_tls().expect_err("broken file refused");
    assert!(e.to_string().contains("client_tls_cert_file"), "{e}");
    connect(&trusts_new)
        .await
        .expect("previous setup still serves");
}

/// Sends an SSLRequest and reads pgfunnel's one-byte answer.
async fn raw_ssl_request(addr: SocketAddr) -> (tokio::net::TcpStream, u8) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("SSLRequest");
    let answer = s.read_u8().await.expect("answer");
    (s, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_followed_by_plaintext_or_silence_ends_cleanly() {
    let pki = Pki::new();
    let lines = format!(
        "{}client_login_timeout = 1\n",
        pki.client_tls_lines("prefer")
    );
    let proxy = proxy_with(&lines).await;
    // Plaintext StartupMessage where a ClientHello belongs: the connection is closed.
    let (mut s, answer) = raw_ssl_request(proxy.addr).await;
    assert_eq!(answer, b'S');
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0plain_user\0\0");
    let len = startup.len() as u32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&startup).await.expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "connection must be closed, not left hanging");
    // A client that stalls after SSLRequest is dropped at client_login_timeout.
    let (mut s, _) = raw_ssl_request(proxy.addr).await;
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled TLS handshake must time out");
    // pgfunnel still serves.
    let c = tls_connect(
        proxy.addr,
        PLAIN_USER,
        PLAIN_PASSWORD,
        SslMode::Require,
        &ClientTls {
            ca_pem: None,
            cert: None,
        },
        false,
    )
    .await
    .expect("still serving");
    assert_eq!(query_one(&c).await, PLAIN_USER);
}

#[test]
fn check_reports_an_unreadable_certificate_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("tls.ini");
    std::fs::write(
        &ini,
        "[databases]\n[pgbouncer]\nclient_tls_sslmode = require\n\
         client_tls_cert_file = /nonexistent/pgfunnel.crt\nclient_tls_key_file = /nonexistent/pgfunnel.key\n",
    )
    .expect("write ini");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg("check")
        .arg(&ini)
        .output()
        .expect("run pgfunnel check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("client_tls_cert_file /nonexistent/pgfunnel.crt"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_tls_handshake_leave_nothing_behind() {
    let pki = Pki::new();
    let proxy = proxy_with(&pki.client_tls_lines("require")).await;
    let vanish = (0..60).map(|i| async move {
        let (mut s, answer) = raw_ssl_request(proxy.addr).await;
        assert_eq!(answer, b'S');
        if i % 2 == 0 {
            // half a ClientHello record, then gone
            let partial = [
                0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            s.write_all(&partial).await.expect("partial hello");
        }
        drop(s);
    });
    futures::future::join_all(vanish).await;
    let app = proxy.running.as_ref().expect("running").app.clone();
    wait_until_async(
        Duration::from_secs(10),
        "vanished TLS clients are cleaned up",
        || {
            let app = app.clone();
            async move { app.client_count.load(std::sync::atomic::Ordering::Relaxed) == 0 }
        },
    )
    .await;
    let c = tls_connect(
        proxy.addr,
        PLAIN_USER,
        PLAIN_PASSWORD,
        SslMode::Require,
        &ClientTls {
            ca_pem: None,
            cert: None,
        },
        false,
    )
    .await
    .expect("pgfunnel still serves TLS clients");
    assert_eq!(query_one(&c).await, PLAIN_USER);
}
