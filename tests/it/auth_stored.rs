//! Authentication without plaintext passwords: SCRAM pass-through from an auth_file holding
//! only Postgres's SCRAM secret, auth_query (PgBouncer's default query, VALID UNTIL
//! honoured), auth_hba_file rules, and pgfunnel's own log checked for secrets.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::proxy::*;

/// Postgres's stored secret of `role` (`SCRAM-SHA-256$...` or `md5...`).
fn stored_secret(pg: &PgServer, role: &str) -> String {
    pg.admin_sql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ))
}

fn assert_no_file_contains(dir: &std::path::Path, needle: &str) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains(needle),
            "{} contains a plaintext password",
            entry.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_logs_in_without_any_plaintext_password() {
    let pg = PgServer::shared();
    let role = pg.create_role("passthru", "pt_secret_pw");
    let users = format!("\"{role}\" \"{}\"\n", stored_secret(pg, &role));
    assert!(users.contains("SCRAM-SHA-256$"));
    let extra = "auth_type = scram-sha-256\npool_mode = transaction";
    let proxy = Proxy::start(&ini(&db_line("app", "app", ""), extra), &users).await;
    assert_no_file_contains(proxy.dir.path(), "pt_secret_pw");
    let c = proxy.connect(&role, "pt_secret_pw", "app").await;
    let row = c
        .query_one("select current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), role);
    // A second client reuses or opens server connections with the learned key.
    let c2 = proxy.connect(&role, "pt_secret_pw", "app").await;
    let (a, b) = tokio::join!(
        c.query_one("select pg_backend_pid()", &[]),
        c2.query_one("select 1", &[])
    );
    assert!(a.is_ok() && b.is_ok());
    let e = proxy
        .try_connect(&role, "wrong", "app")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_finds_scram_and_md5_users_and_honours_valid_until() {
    let pg = PgServer::shared();
    let scram_role = pg.create_role("aq_scram", "aq_pw1");
    // The harness's md5 role: stored as an md5 hash, and md5 in Postgres's hba.
    let md5_role = MD5_USER.to_owned();
    let expired = unique_name("aq_expired");
    pg.admin_sql(&format!(
        "CREATE ROLE {expired} LOGIN PASSWORD 'aq_pw3' VALID UNTIL '2000-01-01'"
    ));
    // Only the auth_user is in the auth_file (trusted by the test Postgres: no password).
    let users = "\"postgres\" \"\"\n";
    let extra = "auth_user = postgres\npool_mode = transaction";
    let proxy = Proxy::start(&ini(&db_line("app", "app", ""), extra), users).await;
    for (role, pw) in [(&scram_role, "aq_pw1"), (&md5_role, MD5_PASSWORD)] {
        let c = proxy.connect(role, pw, "app").await;
        let row = c
            .query_one("select current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(&row.get::<_, String>(0), role);
        let e = proxy
            .try_connect(role, "nope", "app")
            .await
            .expect_err("wrong");
        assert_eq!(sqlstate(&e), "28P01", "{role}");
    }
    for (role, pw) in [(expired.as_str(), "aq_pw3"), ("aq_nobody", "x")] {
        let e = proxy.try_connect(role, pw, "app").await.expect_err(role);
        assert_eq!(sqlstate(&e), "28P01", "{role}");
        assert_eq!(
            message(&e),
            format!("password authentication failed for user \"{role}\"")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_file_picks_the_method_per_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        "host all trust_user 127.0.0.1/32 trust\n\
         host all plain_user 127.0.0.1/32 password\n\
         hostssl all all all md5\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .expect("write hba");
    let extra = format!("auth_type = hba\nauth_hba_file = {}", hba.display());
    let proxy = Proxy::start(&ini(&db_line("app", "app", ""), &extra), &userlist("")).await;
    proxy.connect(TRUST_USER, "anything", "app").await;
    proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let e = proxy
        .try_connect(PLAIN_USER, "wrong", "app")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    let e = proxy
        .try_connect(MD5_USER, MD5_PASSWORD, "app")
        .await
        .expect_err("no TLS: rejected");
    assert_eq!(sqlstate(&e), "28000");
    assert!(
        message(&e).starts_with("no pg_hba.conf entry"),
        "{}",
        message(&e)
    );
}

#[test]
fn log_output_holds_no_password_or_scram_payload() {
    let pg = PgServer::shared();
    let scram = stored_secret(pg, SCRAM_USER);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("pgfunnel.log");
    let port = free_port();
    let users = format!(
        "\"{SCRAM_USER}\" \"{scram}\"\n\"{MD5_USER}\" \"{}\"\n",
        stored_secret(pg, MD5_USER)
    );
    std::fs::write(dir.path().join("userlist.txt"), users).expect("userlist");
    let ini_text = format!(
        "[databases]\napp = host=127.0.0.1 port={} dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_file = userlist.txt\nlogfile = {}\nverbose = 2\n",
        pg.port(),
        log.display()
    );
    let ini_path = dir.path().join("pgfunnel.ini");
    std::fs::write(&ini_path, ini_text).expect("ini");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg(&ini_path)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgfunnel");
    wait_until_msg(Duration::from_secs(20), "pgfunnel listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conn = |user: &str, pw: &str| {
            format!("host=127.0.0.1 port={port} user={user} password={pw} dbname=app")
        };
        for (user, pw, ok) in [
            (SCRAM_USER, SCRAM_PASSWORD, true),
            (MD5_USER, MD5_PASSWORD, true),
            (SCRAM_USER, "wrong_pw_xyz", false),
        ] {
            let r = tokio_postgres::connect(&conn(user, pw), tokio_postgres::NoTls).await;
            match r {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    assert!(ok, "{user} with a wrong password got in");
                    c.simple_query("select 1").await.expect("query");
                }
                Err(e) => assert!(!ok, "{user}: {e}"),
            }
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(text.contains("login"), "the log has the logins:\n{text}");
    // Salt, StoredKey and ServerKey (after the prefix and the iteration count).
    let scram_parts: Vec<&str> = scram.split(['$', ':']).skip(2).collect();
    for secret in [
        SCRAM_PASSWORD,
        MD5_PASSWORD,
        "wrong_pw_xyz",
        "n,,n=",
        ",p=",
        ",r=",
    ]
    .into_iter()
    .chain(scram_parts.iter().copied())
    {
        assert!(!text.contains(secret), "log contains {secret:?}:\n{text}");
    }
}
