//! TLS between pgfunnel and Postgres: every server_tls_sslmode against a private Postgres
//! with ssl on, host-name checks (verify-full vs verify-ca), an unknown CA, a client
//! certificate toward Postgres, URL mode's libpq rules, and direct TLS (through a second
//! pgfunnel, since the test Postgres predates PostgreSQL 17).

use std::time::Duration;

use pgfunnel::app;
use pgfunnel::config::Config;

use crate::harness::*;
use crate::proxy::*;

/// A private Postgres with TLS on (certificate for `localhost` only, signed by `ca`),
/// asking for client certificates from `cert_user`, and refusing plaintext to `ssl_only`.
struct TlsPg {
    pg: PgServer,
    ca: TestCa,
    dir: tempfile::TempDir,
}

const CERT_USER: &str = "cert_user";
const SSL_ONLY: &str = "ssl_only";

impl TlsPg {
    fn start() -> TlsPg {
        let pg = PgServer::start();
        let ca = TestCa::new("postgres test CA");
        let leaf = ca.issue("postgres", &["localhost"]);
        let hba = format!(
            "hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
             hostssl all {SSL_ONLY} 127.0.0.1/32 scram-sha-256\n\
             hostnossl all {SSL_ONLY} 127.0.0.1/32 reject"
        );
        pg.enable_ssl(&leaf.cert_pem, &leaf.key_pem, Some(&ca.pem()), &hba);
        for role in [CERT_USER, SSL_ONLY] {
            pg.admin_sql(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw_{role}'"));
            pg.admin_sql(&format!("GRANT ALL ON DATABASE app TO {role}"));
        }
        TlsPg {
            pg,
            ca,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn ca_file(&self) -> String {
        write_pem(self.dir.path(), "pg-ca.crt", &self.ca.pem())
            .display()
            .to_string()
    }

    /// A pgfunnel in front of this Postgres reached as `host`, with `extra` settings.
    async fn proxy(&self, host: &str, extra: &str) -> Proxy {
        let db = format!("app = host={host} port={} dbname=app", self.pg.port());
        let users = userlist(&format!(
            "\"{SSL_ONLY}\" \"pw_{SSL_ONLY}\"\n\"{CERT_USER}\" \"\"\n"
        ));
        Proxy::start(&ini(&db, extra), &users).await
    }
}

/// Whether pgfunnel's server connection for this client uses TLS (asked from Postgres).
pub(crate) async fn server_side_ssl(
    proxy: &Proxy,
    user: &str,
    password: &str,
) -> Result<bool, String> {
    let c = proxy
        .try_connect(user, password, "app")
        .await
        .map_err(|e| message(&e))?;
    let row = c
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| message(&e))?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_sslmode_against_postgres_with_tls() {
    let tpg = tokio::task::spawn_blocking(TlsPg::start)
        .await
        .expect("start Postgres");
    let ca = tpg.ca_file();
    let cases: [(&str, &str, bool); 6] = [
        ("disable", "", false),
        ("allow", "", false),
        ("prefer", "", true),
        ("require", "", true),
        ("verify-ca", &format!("server_tls_ca_file = {ca}"), true),
        ("verify-full", &format!("server_tls_ca_file = {ca}"), true),
    ];
    for (mode, more, expect_tls) in cases {
        let proxy = tpg
            .proxy("localhost", &format!("server_tls_sslmode = {mode}\n{more}"))
            .await;
        let ssl = server_side_ssl(&proxy, SCRAM_USER, SCRAM_PASSWORD).await;
        assert_eq!(ssl, Ok(expect_tls), "server_tls_sslmode = {mode}");
        // A role Postgres only lets in over TLS: allow retries with TLS, disable cannot.
        let only = server_side_ssl(&proxy, SSL_ONLY, &format!("pw_{SSL_ONLY}")).await;
        if mode == "disable" {
            assert!(only.is_err(), "disable must not reach a hostssl-only role");
        } else {
            assert_eq!(only, Ok(true), "{mode}: hostssl-only role");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_name_checks_unknown_ca_and_client_certificate() {
    let tpg = tokio::task::spawn_blocking(TlsPg::start)
        .await
        .expect("start Postgres");
    let ca = tpg.ca_file();
    let login = |p| async move { server_side_ssl(p, SCRAM_USER, SCRAM_PASSWORD).await };
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca passes.
    let full = format!("server_tls_sslmode = verify-full\nserver_tls_ca_file = {ca}");
    let p = tpg.proxy("127.0.0.1", &full).await;
    let e = login(&p).await.expect_err("wrong host name");
    assert_eq!(
        e,
        "server login failed: SSL error: certificate verify failed: server certificate does not match host name"
    );
    let chain_only = format!("server_tls_sslmode = verify-ca\nserver_tls_ca_file = {ca}");
    let p = tpg.proxy("127.0.0.1", &chain_only).await;
    assert_eq!(login(&p).await, Ok(true), "verify-ca ignores the host name");
    // A CA that did not sign the server's certificate.
    let other = write_pem(tpg.dir.path(), "other.crt", &TestCa::new("other").pem());
    let unknown = format!(
        "server_tls_sslmode = verify-ca\nserver_tls_ca_file = {}",
        other.display()
    );
    let p = tpg.proxy("localhost", &unknown).await;
    assert!(login(&p).await.is_err(), "unknown CA must fail");
    // An expired certificate (on a pgfunnel standing in for the server) fails verify-full.
    let (cert, key) = tpg
        .ca
        .issue_expired("front", &["localhost"])
        .write(tpg.dir.path(), "expired");
    let front_ini = format!(
        "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nserver_tls_sslmode = disable",
        cert.display(),
        key.display()
    );
    let front = tpg.proxy("127.0.0.1", &front_ini).await;
    let db = format!("app = host=localhost port={} dbname=app", front.addr.port());
    let back = Proxy::start(&ini(&db, &full), &userlist("")).await;
    let e = login(&back).await.expect_err("expired certificate");
    assert!(
        e.ends_with("certificate verify failed: certificate has expired"),
        "{e}"
    );
    // Client certificate toward Postgres (hostssl ... cert): CN = the role.
    let (cert, key) = tpg
        .ca
        .issue(CERT_USER, &[])
        .write(tpg.dir.path(), "pgfunnel-client");
    let with_cert = format!(
        "server_tls_sslmode = verify-full\nserver_tls_ca_file = {ca}\nserver_tls_cert_file = {}\nserver_tls_key_file = {}\nauth_type = trust",
        cert.display(),
        key.display()
    );
    let p = tpg.proxy("localhost", &with_cert).await;
    assert_eq!(server_side_ssl(&p, CERT_USER, "unused").await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_server_connections_closed_by_postgres_are_replaced_silently() {
    let tpg = tokio::task::spawn_blocking(TlsPg::start)
        .await
        .expect("start Postgres");
    let extra = "server_tls_sslmode = require\npool_mode = transaction";
    let proxy = tpg.proxy("localhost", extra).await;
    let c = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let first = pid(c
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("q1"));
    // Postgres ends the idle pooled backend (as a restart or idle_session_timeout would).
    tpg.pg
        .admin_sql(&format!("SELECT pg_terminate_backend({first}, 10000)"));
    let second = pid(c
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("the client never sees the dead connection"));
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_mode_follows_libpq_sslmode_rules_and_direct_tls() {
    let tpg = tokio::task::spawn_blocking(TlsPg::start)
        .await
        .expect("start Postgres");
    let ca = tpg.ca_file();
    let other = write_pem(tpg.dir.path(), "other.crt", &TestCa::new("other").pem());
    let port = tpg.pg.port();
    let start = |url: String| async move {
        let mut config = Config::from_url(&url).expect("url");
        config.settings.listen_port = 0;
        config.settings.unix_socket_dir.clear();
        app::start(config).await.expect("start")
    };
    let query = |addr: std::net::SocketAddr| async move {
        let conn = format!(
            "host=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname=app",
            addr.port()
        );
        let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .map_err(|e| message(&e))?;
        tokio::spawn(conn);
        let row = c
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| message(&e))?;
        Ok::<bool, String>(row.get(0))
    };
    let base = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@localhost:{port}/app");
    let r = start(format!("{base}?sslmode=verify-full&sslrootcert={ca}")).await;
    assert_eq!(query(r.tcp_addrs[0]).await, Ok(true));
    // libpq: require with an explicit sslrootcert checks the chain.
    let r2 = start(format!(
        "{base}?sslmode=require&sslrootcert={}",
        other.display()
    ))
    .await;
    assert!(query(r2.tcp_addrs[0]).await.is_err(), "require + wrong CA");
    // Direct TLS: a second pgfunnel with client TLS stands in for a PostgreSQL 17 server.
    let leaf = tpg.ca.issue("front", &["localhost"]);
    let (cert, key) = leaf.write(tpg.dir.path(), "front");
    let front_ini = format!(
        "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nserver_tls_sslmode = disable",
        cert.display(),
        key.display()
    );
    let front = tpg.proxy("127.0.0.1", &front_ini).await;
    let direct = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@localhost:{}/app?sslmode=verify-full&sslrootcert={ca}&sslnegotiation=direct",
        front.addr.port()
    );
    let r3 = start(direct).await;
    assert_eq!(
        query(r3.tcp_addrs[0]).await,
        Ok(false),
        "direct TLS to the front pgfunnel, which talks plaintext to Postgres"
    );
    for r in [r, r2, r3] {
        r.shutdown(Duration::from_millis(100)).await;
    }
}
