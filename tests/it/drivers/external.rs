//! Drivers of other languages as subprocesses: tests/drivers/setup.sh installs their packages
//! (PyPI, npm, Debian's pgjdbc) into git-ignored folders, then each program runs against the
//! in-process pgfunnel with its address and login in PGFUNNEL_* variables. A program prints
//! `DRIVER OK <name>` last; anything else (a failed check, a hang, a missing prerequisite)
//! fails the test with the program's output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::Command;

use super::*;

/// Each program ends itself after 60 s in one phase; this is the backstop.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(240);
/// Output shown when a program fails (its tail).
const SHOWN_OUTPUT: usize = 12_000;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Runs `setup.sh <ecosystem>` once per test process (other tests of the same ecosystem wait
/// for it); panics with its output and install hint when it fails. Never skips.
fn ensure_installed(ecosystem: &'static str) {
    static DONE: Mutex<Option<HashMap<&'static str, Result<(), String>>>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = done
        .get_or_insert_with(HashMap::new)
        .entry(ecosystem)
        .or_insert_with(|| {
            let script = drivers_dir().join("setup.sh");
            match std::process::Command::new("bash")
                .arg(&script)
                .arg(ecosystem)
                .output()
            {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "{} {ecosystem} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => Err(format!("cannot run {}: {e}", script.display())),
            }
        });
    if let Err(why) = result {
        panic!(
            "driver prerequisites for {ecosystem} are missing; scripts/test.sh --setup-only \
             installs them.\n{why}"
        );
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs a driver program through a fresh pgfunnel and checks that it reported success.
async fn run_program(name: &str, ecosystem: &'static str, program: &str, args: &[&str]) {
    tokio::task::spawn_blocking(move || ensure_installed(ecosystem))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let proxy = start_proxy().await;
    let dir = drivers_dir().join(ecosystem);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&dir)
        .env("PGFUNNEL_HOST", "127.0.0.1")
        .env("PGFUNNEL_PORT", proxy.addr.port().to_string())
        .env("PGFUNNEL_USER", USER)
        .env("PGFUNNEL_PASSWORD", PASSWORD)
        .env("PGFUNNEL_DB", DB)
        .env("PGFUNNEL_PREFIX", unique_name(&name.replace('.', "")))
        .env("PGFUNNEL_CLIENTS", CLIENTS.to_string())
        .env("PGFUNNEL_POOL_SIZE", POOL_SIZE.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // libpq-style variables would override what the programs pass explicitly.
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {program} {args:?}: {e}"));
    let out = match tokio::time::timeout(PROGRAM_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{name}: waiting for {program}: {e}"),
        Err(_) => panic!("{name}: {program} did not exit within {PROGRAM_TIMEOUT:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ok_line = format!("DRIVER OK {name} ");
    let passed = out.status.success() && stdout.lines().any(|l| l.starts_with(&ok_line));
    assert!(
        passed,
        "{name} failed through pgfunnel ({}):\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
        out.status,
        tail(&stdout, SHOWN_OUTPUT),
        tail(&stderr, SHOWN_OUTPUT)
    );
    println!("{stdout}");
}

fn venv_python() -> String {
    drivers_dir()
        .join("python/.venv/bin/python")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_preparing_everything_passes_the_driver_suite() {
    run_program("psycopg", "python", &venv_python(), &["psycopg_suite.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_with_its_statement_cache_passes_the_driver_suite() {
    run_program("asyncpg", "python", &venv_python(), &["asyncpg_suite.py"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_with_named_queries_passes_the_driver_suite() {
    run_program("pg", "node", "node", &["pg_suite.js"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_js_with_prepare_true_passes_the_driver_suite() {
    run_program("postgres.js", "node", "node", &["postgresjs_suite.js"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_with_prepare_threshold_1_passes_the_driver_suite() {
    let jar =
        std::env::var("PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    run_program("pgjdbc", "java", "java", &["-cp", &jar, "PgjdbcSuite.java"]).await;
}
