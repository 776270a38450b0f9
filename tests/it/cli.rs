//! The pgfunnel binary: `check`, PgBouncer-style invocation, URL mode, config errors.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
}

fn testdata() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/pgbouncer");
    assert!(
        p.is_dir(),
        "PgBouncer's sample configs are expected in {} (the shared/ folder beside the repo); it is absent",
        p.display()
    );
    p
}

#[test]
fn check_reports_bad_values_with_file_line_key_and_allowed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("bad.ini");
    std::fs::write(
        &ini,
        "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_port = 6432\npool_mode = sessionx\n",
    )
    .expect("write");
    let out = bin().arg("check").arg(&ini).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.ini:5"), "{err}");
    assert!(
        err.contains("pool_mode") && err.contains("sessionx") && err.contains("transaction"),
        "{err}"
    );
}

#[test]
fn check_warns_on_unknown_keys_and_fails_on_syntax_and_missing_auth_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("warn.ini");
    std::fs::write(&ini, "[databases]\n[pgbouncer]\nno_such_key = 1\n").expect("write");
    let out = bin().arg("check").arg(&ini).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warn.ini:3") && err.contains("no_such_key"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("default_pool_size = 20"), "{stdout}");

    std::fs::write(
        &ini,
        "[databases]\n[pgbouncer]\nthis line has no equals sign\n",
    )
    .expect("write");
    let out = bin().arg("check").arg(&ini).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warn.ini:3"));

    std::fs::write(&ini, "[pgbouncer]\nauth_file = /nonexistent/userlist.txt\n").expect("write");
    let out = bin().arg("check").arg(&ini).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/userlist.txt"));
}

#[test]
fn pgbouncer_sample_configs_are_read() {
    let td = testdata();
    // The minimal config starts as is (ports adjusted), the annotated example and the
    // test-suite config are read with every key applied or warned about. Their auth_file
    // paths point at the machine PgBouncer would run on, so they are rewritten.
    for name in [
        "pgbouncer-minimal.ini",
        "pgbouncer.ini",
        "pgbouncer-test-suite.ini",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(td.join(name)).expect("read sample");
        let text: String = text
            .lines()
            .map(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                match key {
                    "auth_file" => format!("auth_file = {}", td.join("userlist.txt").display()),
                    "logfile" | "pidfile" | "auth_hba_file" => String::new(),
                    _ => l.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let ini = dir.path().join(name);
        std::fs::write(&ini, text).expect("write");
        let out = bin().arg("check").arg(&ini).output().expect("run");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn url_mode_and_pgbouncer_style_invocation_serve_clients() {
    let pg = PgServer::shared();
    let port = free_port();
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/app",
        pg.port()
    );
    let mut child = bin()
        .args(["serve", "--upstream", &url, "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let conn = format!(
        "host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname=app"
    );
    let result = rt.block_on(async {
        for _ in 0..100 {
            if let Ok((c, connection)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                return c
                    .query_one("select 7", &[])
                    .await
                    .map(|r| r.get::<_, i32>(0))
                    .ok();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(result, Some(7));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");

    // `pgfunnel -q CONFIG`, as PgBouncer is started
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("p.ini");
    std::fs::write(
        dir.path().join("users.txt"),
        format!("\"{SCRAM_USER}\" \"{SCRAM_PASSWORD}\"\n"),
    )
    .expect("users");
    std::fs::write(
        &ini,
        format!(
            "[databases]\napp = host=127.0.0.1 port={} dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_file = users.txt\nauth_type = scram-sha-256\npidfile = {}\n",
            pg.port(),
            dir.path().join("p.pid").display()
        ),
    )
    .expect("ini");
    let mut child = bin().arg("-q").arg(&ini).spawn().expect("spawn");
    let result = rt.block_on(async {
        for _ in 0..100 {
            if let Ok((c, connection)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                return c
                    .query_one("select 8", &[])
                    .await
                    .map(|r| r.get::<_, i32>(0))
                    .ok();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    assert!(dir.path().join("p.pid").exists(), "pidfile written");
    // SIGTERM waits for clients to leave (PgBouncer 1.23+): close ours first.
    drop(rt);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(result, Some(8));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}
