//! The pgfunnel binary: `check`, PgBouncer-style invocation, URL mode, config errors.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
}

/// PgBouncer's sample configs (the shared/ folder beside the repo, as in CI); `None` (the test
/// skips, saying so once) in a clone without it. Under CI their absence is a failure.
fn testdata() -> Option<std::path::PathBuf> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/pgbouncer");
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PgBouncer's sample configs are expected in {} under CI",
        p.display()
    );
    NOTICE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: ../shared/testdata/pgbouncer not found: `pgfunnel check` on PgBouncer's samples is skipped"
        );
    });
    None
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
    let Some(td) = testdata() else {
        return;
    };
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

/// Runs `pgfunnel ARGS` and returns (success, stdout, stderr).
fn run(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .current_dir(dir)
        .env_remove("PGFUNNEL_UPSTREAM")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pgfunnel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `dir/name` and runs `pgfunnel check` on it there.
fn check_text(dir: &std::path::Path, name: &str, text: &str) -> (bool, String, String) {
    let ini = dir.join(name);
    std::fs::write(&ini, text).expect("write config");
    run(&["check", ini.to_str().expect("utf-8")], dir)
}

#[test]
fn check_takes_the_later_of_repeated_keys_and_warns_naming_both_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("users.txt"), "\"a\" \"b\"\n").expect("users");
    let (ok, stdout, stderr) = check_text(
        dir.path(),
        "dup.ini",
        "[databases]\napp = host=127.0.0.1\napp = host=127.0.0.2\n[pgbouncer]\nauth_file = users.txt\n\
         logfile = one.log\npool_mode = session\nlogfile = two.log\n",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("logfile = two.log"), "{stdout}");
    assert!(stdout.contains("app = host=127.0.0.2"), "{stdout}");
    assert!(
        stderr.contains("dup.ini:8: logfile: key set again")
            && stderr.contains("wins over the one at")
            && stderr.contains("dup.ini:6"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dup.ini:3: app: database set again") && stderr.contains("dup.ini:2"),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_problem_each_os_error_once_and_refuses_pam_and_ldap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = check_text(
        dir.path(),
        "many.ini",
        "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nauth_type = pam\npool_mode = sessionx\n\
         auth_file = missing-users.txt\nlogfile = /nonexistent-dir/pgfunnel.log\nthis is not a line\n\
         unix_socket_dir = /nonexistent-dir\n",
    );
    assert!(!ok, "{stdout}");
    for expected in [
        "many.ini:4: auth_type = \"pam\": PAM and LDAP authentication are not supported",
        "many.ini:5: pool_mode = \"sessionx\"",
        "many.ini:6: auth_file",
        "many.ini:7: logfile /nonexistent-dir/pgfunnel.log: directory /nonexistent-dir",
        "many.ini:8: syntax error",
        "many.ini:9: unix_socket_dir /nonexistent-dir: not an existing directory",
        "6 problems found",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    for line in stderr.lines() {
        assert!(
            line.matches("No such file or directory").count() <= 1,
            "OS error repeated: {line}"
        );
    }
    let text = "[databases]\napp =\n[pgbouncer]\n\nauth_type = ldap\n";
    let (ok, _, stderr) = check_text(dir.path(), "many.ini", text);
    assert!(!ok);
    assert!(
        stderr.contains("many.ini:5: auth_type = \"ldap\""),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_a_config_that_cannot_serve_anyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[pgbouncer]\nauth_type = scram-sha-256\n";
    let (ok, _, stderr) = check_text(dir.path(), "empty.ini", text);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no [databases] entry"), "{stderr}");
    assert!(
        stderr.contains("empty.ini:2: auth_type: password authentication without auth_file"),
        "{stderr}"
    );
}

#[test]
fn a_url_where_the_config_file_goes_runs_url_mode_and_no_message_shows_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "s3cr3t-pw";
    // Port 0 is refused by URL mode itself: proof the argument was read as a URL, not a path.
    let url = format!("postgres://app:{secret}@127.0.0.1:0/app");
    for args in [
        vec![url.as_str()],
        vec!["serve", url.as_str()],
        vec!["serve", "--upstream", url.as_str()],
        vec!["check", url.as_str()],
    ] {
        let (ok, _, stderr) = run(&args, dir.path());
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains("database URL postgres://app@127.0.0.1:") && stderr.contains("port"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains(secret),
            "{args:?} leaked the password: {stderr}"
        );
    }
    // A URL-looking path that is a file name after all, and a password in a bad entry.
    let bad = format!("postgres://app:{secret}@[bad/app");
    let (ok, _, stderr) = run(&[&bad], dir.path());
    assert!(!ok && !stderr.contains(secret), "{stderr}");
    let text = format!("[databases]\napp = host=h password={secret} pool_size=x\n");
    let (ok, _, stderr) = check_text(dir.path(), "p.ini", &text);
    assert!(!ok && !stderr.contains(secret), "{stderr}");
    // check on a good URL prints the effective settings, the URL without its password
    let good = format!("postgres://app:{secret}@127.0.0.1:5999/app");
    let (ok, stdout, stderr) = run(&["check", &good], dir.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("# postgres://app:***@127.0.0.1:5999/app: valid"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
}

#[test]
fn help_of_each_command_shows_only_its_own_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, check, _) = run(&["check", "--help"], dir.path());
    let (_, migrate, _) = run(&["migrate", "--help"], dir.path());
    let (_, serve, _) = run(&["serve", "--help"], dir.path());
    for flag in ["--daemon", "--user", "--quiet"] {
        assert!(!check.contains(flag), "check --help: {check}");
        assert!(!migrate.contains(flag), "migrate --help: {migrate}");
        assert!(serve.contains(flag), "serve --help: {serve}");
    }
    for flag in ["--admin-users", "--metrics-listen", "--unix-socket-dir"] {
        assert!(serve.contains(flag), "serve --help: {serve}");
    }
}

#[test]
fn migrate_dry_run_without_a_database_lists_every_validated_file() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("migrations");
    let (ok, stdout, stderr) = run(
        &[
            "migrate",
            "--dry-run",
            "--dir",
            dir.to_str().expect("utf-8"),
        ],
        repo,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no database given"), "{stdout}");
    for name in [
        "0000_initial.sql",
        "0001_add_index.sql",
        "0002_order_status.sql",
    ] {
        assert!(stdout.contains(name), "{name} missing: {stdout}");
    }
    let (ok, stdout, _) = run(
        &[
            "migrate",
            "--dry-run",
            "--target",
            "0",
            "--dir",
            dir.to_str().expect("utf-8"),
        ],
        repo,
    );
    assert!(ok && !stdout.contains("0001_add_index.sql"), "{stdout}");
    // the files are still validated, and without --dry-run a database is still needed
    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(bad.path().join("0001_a.sql"), "select 1;\n").expect("write");
    std::fs::write(bad.path().join("0001_b.sql"), "select 2;\n").expect("write");
    let bad_dir = bad.path().to_str().expect("utf-8");
    let (ok, _, stderr) = run(&["migrate", "--dry-run", "--dir", bad_dir], repo);
    assert!(!ok && stderr.contains("0001"), "{stderr}");
    let (ok, _, _) = run(&["migrate", "--dir", dir.to_str().expect("utf-8")], repo);
    assert!(!ok, "migrate without --dry-run needs a database");
}

/// The port selection of scripts/quickstart.sh, run alone (`--check-port-only` starts nothing):
/// a requested port that is taken stops it before any URL is printed; without a request it
/// takes the next free port.
#[test]
fn quickstart_port_check_refuses_a_taken_port_and_otherwise_picks_a_free_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh");
    let run_script = |envs: &[(&str, String)]| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("--check-port-only")
            .env_remove("PGFUNNEL_PORT")
            .env_remove("PGFUNNEL_METRICS_PORT")
            .env_remove("QUICKSTART_FIRST_PORT")
            .env_remove("QUICKSTART_FIRST_METRICS_PORT");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run quickstart.sh")
    };
    let out = run_script(&[("PGFUNNEL_PORT", port.to_string())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} (PGFUNNEL_PORT) is already in use")),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing printed on stdout before the port is known"
    );

    let out = run_script(&[("QUICKSTART_FIRST_PORT", port.to_string())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chosen: u16 = stdout
        .trim()
        .strip_prefix("port=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    // The taken port is skipped for one of the next 100 (binding the chosen one again here
    // would race with other tests taking ephemeral ports meanwhile).
    assert!(
        chosen > port && chosen < port.saturating_add(100),
        "{stdout}"
    );
    drop(taken);
}

/// SHOW CONFIG's value for `key` on an admin console connection.
async fn show_config(c: &tokio_postgres::Client, key: &str) -> Option<String> {
    let messages = c.simple_query("SHOW CONFIG").await.expect("SHOW CONFIG");
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get("key") == Some(key) => {
            r.get("value").map(str::to_owned)
        }
        _ => None,
    })
}

/// A base file with an override appended starts with the later value; appending again and
/// reloading (SIGHUP, then RELOAD on the console) takes the newest; SET still works.
#[test]
fn appended_overrides_win_at_start_after_sighup_reload_and_set() {
    let pg = PgServer::shared();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("users.txt"), "\"admin\" \"admin-pw\"\n").expect("users");
    let ini = dir.path().join("base.ini");
    let base = format!(
        "[databases]\napp = host=127.0.0.1 port={} dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_file = users.txt\nadmin_users = admin\n\
         query_wait_timeout = 11\n",
        pg.port()
    );
    std::fs::write(&ini, format!("{base}query_wait_timeout = 22\n")).expect("ini");
    let append = |line: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ini)
            .expect("open ini");
        writeln!(f, "{line}").expect("append");
    };
    let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
    let mut child = bin()
        .arg("serve")
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let conn = format!("host=127.0.0.1 port={port} user=admin password=admin-pw dbname=pgfunnel");
    let pid = child.id() as i32;
    let result = rt.block_on(async {
        let mut client = None;
        for _ in 0..100 {
            if let Ok((c, connection)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = client.expect("console reachable");
        let at_start = show_config(&c, "query_wait_timeout").await;
        append("query_wait_timeout = 33");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        let mut after_hup = None;
        for _ in 0..100 {
            after_hup = show_config(&c, "query_wait_timeout").await;
            if after_hup.as_deref() == Some("33") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        append("query_wait_timeout = 44");
        c.simple_query("RELOAD").await.expect("RELOAD");
        let after_reload = show_config(&c, "query_wait_timeout").await;
        c.simple_query("SET query_wait_timeout = 55")
            .await
            .expect("SET");
        let after_set = show_config(&c, "query_wait_timeout").await;
        [at_start, after_hup, after_reload, after_set]
    });
    drop(rt);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let _ = child.wait();
    let values: Vec<Option<&str>> = result.iter().map(Option::as_deref).collect();
    assert_eq!(values, vec![Some("22"), Some("33"), Some("44"), Some("55")]);
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(
        stderr.contains("base.ini:10: query_wait_timeout: key set again")
            && stderr.contains("base.ini:9"),
        "{stderr}"
    );
}

#[test]
fn shipped_example_config_passes_its_own_check_command() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, stdout, stderr) = run(&["check", "config/pgfunnel.ini"], repo);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("config/pgfunnel.ini: valid"), "{stdout}");
    // and pgfunnel's own databases fixture
    let (ok, _, stderr) = run(&["check", "tests/fixtures/config/databases.ini"], repo);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
