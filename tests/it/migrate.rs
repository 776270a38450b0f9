//! `pgfunnel migrate` against a real Postgres, each test in its own database: directly (the
//! built binary, as a deploy script runs it) and through pgfunnel in transaction mode.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::*;
use crate::proxy::*;

/// One test's database and migrations folder.
struct Case {
    db: String,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(prefix: &str) -> Case {
        let db = PgServer::shared().create_database(prefix);
        Case {
            db,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Direct URL as the database owner.
    fn url(&self) -> String {
        PgServer::shared().url(SCRAM_USER, Some(SCRAM_PASSWORD), &self.db)
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.dir.path().join(name), sql).expect("write migration");
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove migration");
    }

    fn sql(&self, q: &str) -> String {
        PgServer::shared().admin_sql_in(&self.db, q)
    }

    /// Applied versions, comma separated, in order.
    fn versions(&self) -> String {
        self.sql(
            "SELECT coalesce(string_agg(version::text, ',' ORDER BY version), '') FROM pgfunnel_migrations",
        )
    }

    fn table_exists(&self, name: &str) -> bool {
        self.sql(&format!("SELECT to_regclass('{name}') IS NOT NULL")) == "t"
    }

    /// Runs `pgfunnel migrate ARGS --dir DIR --database-url URL` and waits for it.
    fn run(&self, args: &[&str]) -> Output {
        run_migrate(&self.url(), self.dir.path(), args)
    }
}

fn migrate_command(url: &str, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"));
    cmd.arg("migrate")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--database-url")
        .arg(url)
        .env_remove("DATABASE_URL")
        .env_remove("PGFUNNEL_LOG");
    cmd
}

fn run_migrate(url: &str, dir: &Path, args: &[&str]) -> Output {
    migrate_command(url, dir, args)
        .output()
        .expect("run pgfunnel migrate")
}

async fn run_migrate_async(url: &str, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::from(migrate_command(url, dir, args))
        .output()
        .await
        .expect("run pgfunnel migrate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn repo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// Five migrations where the third has a syntax error on its line 4.
fn write_five_with_broken_third(case: &Case) {
    case.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    case.write("0002_b.sql", "CREATE TABLE b (id int);\n");
    case.write(
        "0003_c.sql",
        "-- third\nCREATE TABLE c (id int);\nINSERT INTO c VALUES (1);\nSELEC broken FROM c;\n",
    );
    case.write("0004_d.sql", "CREATE TABLE d (id int);\n");
    case.write("0005_e.sql", "CREATE TABLE e (id int);\n");
}

#[test]
fn fresh_database_gets_the_example_migrations_in_order_with_history() {
    let case = Case::new("mig_fresh");
    let out = run_migrate(&case.url(), &repo_migrations(), &[]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("3 migration(s) applied"),
        "{}",
        stdout(&out)
    );
    assert_eq!(case.versions(), "0,1,2");
    assert!(case.table_exists("orders") && case.table_exists("accounts_email_key"));
    assert_eq!(
        case.sql("SELECT count(*) FROM pgfunnel_migrations WHERE length(checksum) = 64 AND applied_by LIKE 'scram_user@%' AND NOT no_transaction"),
        "3"
    );
    assert_eq!(case.sql("SELECT column_default FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'status'"), "'open'::order_status");
    let status = run_migrate(&case.url(), &repo_migrations(), &["status"]);
    assert_exit(&status, 0);
    assert!(
        stdout(&status).contains("3 applied, 0 pending, 0 drifted"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn second_run_is_a_no_op() {
    let case = Case::new("mig_rerun");
    case.write(
        "0001_t.sql",
        "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n",
    );
    assert_exit(&case.run(&[]), 0);
    let before = case.sql("SELECT applied_at FROM pgfunnel_migrations");
    let again = case.run(&[]);
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("0 migration(s) applied"),
        "{}",
        stdout(&again)
    );
    assert_eq!(case.sql("SELECT count(*) FROM t"), "1");
    assert_eq!(
        case.sql("SELECT applied_at FROM pgfunnel_migrations"),
        before
    );
}

#[test]
fn syntax_error_in_third_of_five_keeps_two_rolls_back_third_and_skips_the_rest() {
    let case = Case::new("mig_fail");
    write_five_with_broken_third(&case);
    let out = case.run(&[]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("0003_c.sql:4: syntax error at or near \"SELEC\""),
        "{err}"
    );
    assert!(
        err.contains("SQLSTATE 42601") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(case.versions(), "1,2");
    assert!(case.table_exists("a") && case.table_exists("b"));
    assert!(!case.table_exists("c"), "migration 3 must be rolled back");
    assert!(!case.table_exists("d") && !case.table_exists("e"));
}

#[test]
fn eight_concurrent_runs_apply_each_migration_exactly_once() {
    let case = Case::new("mig_race");
    case.write("0000_log.sql", "CREATE TABLE log (version int);\n");
    for v in 1..=10 {
        // pg_sleep widens the window in which the runs race each other.
        let sql = format!("INSERT INTO log VALUES ({v});\nSELECT pg_sleep(0.02);\n");
        case.write(&format!("{v:04}_step.sql"), &sql);
    }
    let children: Vec<_> = (0..8)
        .map(|_| {
            migrate_command(&case.url(), case.dir.path(), &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_exit(&out, 0);
    }
    assert_eq!(case.versions(), "0,1,2,3,4,5,6,7,8,9,10");
    assert_eq!(
        case.sql("SELECT count(*), count(DISTINCT version) FROM log"),
        "10|10"
    );
}

#[test]
fn changed_file_is_drift_that_up_refuses_and_status_and_verify_show() {
    let case = Case::new("mig_drift");
    case.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    assert_exit(&case.run(&[]), 0);
    case.write("0001_a.sql", "CREATE TABLE a (id bigint);\n");
    case.write("0002_b.sql", "CREATE TABLE b (id int);\n");
    let up = case.run(&[]);
    assert_exit(&up, 3);
    assert!(
        stderr(&up).contains("0001_a.sql: changed after it was applied"),
        "{}",
        stderr(&up)
    );
    assert!(!case.table_exists("b"), "nothing is applied when drifted");
    let status = case.run(&["status"]);
    assert_exit(&status, 0);
    let text = stdout(&status);
    assert!(
        text.contains("DRIFTED") && text.contains("pending"),
        "{text}"
    );
    assert!(text.contains("0 applied, 1 pending, 1 drifted"), "{text}");
    assert_exit(&case.run(&["verify"]), 3);
}

#[test]
fn missing_file_and_new_file_below_latest_are_drift() {
    let case = Case::new("mig_drift2");
    case.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    case.write("0003_c.sql", "CREATE TABLE c (id int);\n");
    assert_exit(&case.run(&[]), 0);
    case.write("0002_b.sql", "CREATE TABLE b (id int);\n");
    let up = case.run(&[]);
    assert_exit(&up, 3);
    assert!(
        stderr(&up)
            .contains("0002_b.sql: not applied, but numbered below the latest applied version 3"),
        "{}",
        stderr(&up)
    );
    case.remove("0002_b.sql");
    case.remove("0001_a.sql");
    let verify = case.run(&["verify"]);
    assert_exit(&verify, 3);
    assert!(
        stderr(&verify).contains("version 1 (a) is applied but its file is missing"),
        "{}",
        stderr(&verify)
    );
    assert!(!case.table_exists("b"));
}

#[test]
fn no_transaction_file_runs_statement_by_statement_on_a_direct_connection() {
    let case = Case::new("mig_notx");
    case.write("0001_t.sql", "CREATE TABLE t (a int, b int);\n");
    case.write(
        "0002_idx.sql",
        "-- pgfunnel:no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_b ON t (b);\n",
    );
    let out = case.run(&[]);
    assert_exit(&out, 0);
    assert_eq!(
        case.sql("SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indisvalid"),
        "2"
    );
    assert_eq!(
        case.sql("SELECT no_transaction FROM pgfunnel_migrations WHERE version = 2"),
        "t"
    );
    // pg_locks is cluster-wide: count only this database's advisory locks.
    let our_locks = "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                     WHERE l.locktype = 'advisory' AND d.datname = current_database()";
    assert_eq!(case.sql(our_locks), "0", "the session lock is released");
}

#[test]
fn drizzle_layout_runs_breakpoint_chunks_and_reports_the_failing_line() {
    let case = Case::new("mig_drizzle");
    std::fs::create_dir(case.dir.path().join("meta")).expect("mkdir meta");
    std::fs::write(
        case.dir.path().join("meta/_journal.json"),
        "{\"entries\":[]}",
    )
    .expect("journal");
    case.write(
        "0000_wise_thor.sql",
        "CREATE TABLE \"users\" (\n\t\"id\" serial PRIMARY KEY NOT NULL\n);\n--> statement-breakpoint\nCREATE INDEX \"users_id_idx\" ON \"users\" (\"id\");",
    );
    case.write(
        "0001_brave_loki.sql",
        "ALTER TABLE \"users\" ADD COLUMN \"name\" text;--> statement-breakpoint\nALTER TABLE \"users\" ADD COLUMN \"age\" nosuchtype;",
    );
    let out = case.run(&[]);
    assert_exit(&out, 1);
    assert!(case.table_exists("users_id_idx"));
    assert!(
        stderr(&out).contains("0001_brave_loki.sql:2: type \"nosuchtype\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(case.versions(), "0");
    assert_eq!(case.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'name'"), "0");
}

#[test]
fn dry_run_prints_the_sql_and_changes_nothing() {
    let case = Case::new("mig_dry");
    case.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    let out = case.run(&["--dry-run"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("would apply")
            && text.contains("0001_a.sql")
            && text.contains("CREATE TABLE a (id int);"),
        "{text}"
    );
    assert!(!case.table_exists("a"));
    assert!(
        !case.table_exists("pgfunnel_migrations"),
        "dry run creates no history table"
    );
}

#[test]
fn target_stops_at_the_given_version() {
    let case = Case::new("mig_target");
    for v in 1..=4 {
        case.write(
            &format!("{v:04}_t{v}.sql"),
            &format!("CREATE TABLE t{v} (id int);\n"),
        );
    }
    assert_exit(&case.run(&["--target", "2"]), 0);
    assert_eq!(case.versions(), "1,2");
    assert!(!case.table_exists("t3"));
    assert_exit(&case.run(&[]), 0);
    assert_eq!(case.versions(), "1,2,3,4");
}

#[test]
fn history_table_goes_to_the_chosen_schema() {
    let case = Case::new("mig_schema");
    case.write("0001_a.sql", "CREATE TABLE a (id int);\n");
    assert_exit(&case.run(&["--schema", "ops"]), 0);
    assert_eq!(
        case.sql("SELECT count(*) FROM ops.pgfunnel_migrations"),
        "1"
    );
    assert!(!case.table_exists("public.pgfunnel_migrations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_fails_fast_on_a_busy_table_and_records_nothing() {
    let case = Case::new("mig_locktimeout");
    case.write("0001_t.sql", "CREATE TABLE t (id int);\n");
    assert_exit(
        &run_migrate_async(&case.url(), case.dir.path(), &[]).await,
        0,
    );
    case.write("0002_alter.sql", "ALTER TABLE t ADD COLUMN x int;\n");
    let holder = PgServer::shared()
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD), &case.db)
        .await;
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
        .await
        .expect("lock");
    let out = run_migrate_async(&case.url(), case.dir.path(), &["--lock-timeout", "200ms"]).await;
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("0002_alter.sql:1: canceling statement due to lock timeout"),
        "{}",
        stderr(&out)
    );
    holder.batch_execute("ROLLBACK").await.expect("release");
    assert_eq!(case.versions(), "1");
}

#[test]
fn connection_lost_mid_migration_rolls_back_and_says_so() {
    let case = Case::new("mig_lost");
    case.write(
        "0001_a.sql",
        "CREATE TABLE a (id int);\nSELECT pg_terminate_backend(pg_backend_pid());\n",
    );
    let out = case.run(&[]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("0001_a.sql: connection lost before COMMIT"),
        "{}",
        stderr(&out)
    );
    assert!(!case.table_exists("a"));
    assert_eq!(case.versions(), "");
}

#[test]
fn bad_files_and_unreachable_database_are_clear_errors() {
    let case = Case::new("mig_bad");
    case.write("0001_a.sql", "select 1;\n");
    case.write("001_b.sql", "select 1;\n");
    let dup = case.run(&[]);
    assert_exit(&dup, 4);
    assert!(
        stderr(&dup).contains("duplicate migration version 1"),
        "{}",
        stderr(&dup)
    );
    case.remove("001_b.sql");
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/{}",
        free_port(),
        case.db
    );
    let down = run_migrate(&url, case.dir.path(), &[]);
    assert_exit(&down, 1);
    let err = stderr(&down);
    assert!(
        err.contains("cannot connect to 127.0.0.1:") && !err.contains(SCRAM_PASSWORD),
        "{err}"
    );
}

// ---- through pgfunnel ----------------------------------------------------------------

/// pgfunnel in front of `case.db` (as `mig`) in `mode`, and the URL that goes through it.
async fn through_pgfunnel(case: &Case, mode: &str) -> (Proxy, String) {
    let text = ini(
        &db_line("mig", &case.db, ""),
        &format!("pool_mode = {mode}"),
    );
    let proxy = Proxy::start(&text, &userlist("")).await;
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/mig",
        proxy.addr.port()
    );
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_transaction_pooling_eight_concurrent_runs_apply_each_once() {
    let case = Case::new("mig_px_race");
    case.write("0000_log.sql", "CREATE TABLE log (version int);\n");
    for v in 1..=10 {
        let sql = format!("INSERT INTO log VALUES ({v});\nSELECT pg_sleep(0.02);\n");
        case.write(&format!("{v:04}_step.sql"), &sql);
    }
    let (_proxy, url) = through_pgfunnel(&case, "transaction").await;
    let runs = (0..8).map(|_| run_migrate_async(&url, case.dir.path(), &[]));
    for out in futures::future::join_all(runs).await {
        assert_exit(&out, 0);
    }
    assert_eq!(case.versions(), "0,1,2,3,4,5,6,7,8,9,10");
    assert_eq!(
        case.sql("SELECT count(*), count(DISTINCT version) FROM log"),
        "10|10"
    );
    let again = run_migrate_async(&url, case.dir.path(), &[]).await;
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("0 migration(s) applied"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_transaction_pooling_failure_in_the_middle_is_rolled_back() {
    let case = Case::new("mig_px_fail");
    write_five_with_broken_third(&case);
    let (_proxy, url) = through_pgfunnel(&case, "transaction").await;
    let out = run_migrate_async(&url, case.dir.path(), &[]).await;
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("0003_c.sql:4: syntax error"),
        "{}",
        stderr(&out)
    );
    assert_eq!(case.versions(), "1,2");
    assert!(!case.table_exists("c") && !case.table_exists("d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_transaction_pooling_no_transaction_file_is_refused_before_anything_runs() {
    let case = Case::new("mig_px_notx");
    case.write("0001_t.sql", "CREATE TABLE t (a int);\n");
    case.write(
        "0002_idx.sql",
        "-- pgfunnel:no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    let (_proxy, url) = through_pgfunnel(&case, "transaction").await;
    let out = run_migrate_async(&url, case.dir.path(), &[]).await;
    assert_exit(&out, 5);
    assert!(
        stderr(&out).contains("0002_idx.sql: marked -- pgfunnel:no-transaction")
            && stderr(&out).contains("transaction pooler"),
        "{}",
        stderr(&out)
    );
    assert!(
        !case.table_exists("t"),
        "nothing is applied when a no-transaction file is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_session_pooling_no_transaction_file_is_applied() {
    let case = Case::new("mig_px_session");
    case.write("0001_t.sql", "CREATE TABLE t (a int);\n");
    case.write(
        "0002_idx.sql",
        "-- pgfunnel:no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    let (_proxy, url) = through_pgfunnel(&case, "session").await;
    let out = run_migrate_async(&url, case.dir.path(), &[]).await;
    assert_exit(&out, 0);
    assert_eq!(case.versions(), "1,2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_pgfunnel_admin_console_is_reported_but_not_fatal() {
    let case = Case::new("mig_px_admin");
    case.write("0001_t.sql", "CREATE TABLE t (a int);\n");
    let (_proxy, url) = through_pgfunnel(&case, "transaction").await;
    let admin = format!("postgres://admin@127.0.0.1:{}/pgbouncer", free_port());
    let out = run_migrate_async(&url, case.dir.path(), &["--pgfunnel-admin", &admin]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("note: could not send RECONNECT"),
        "{}",
        stdout(&out)
    );
    assert_eq!(case.versions(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_tells_the_running_pgfunnel_to_reconnect() {
    let case = Case::new("mig_px_reconnect");
    case.write("0001_t.sql", "CREATE TABLE t (a int);\n");
    let text = ini(
        &db_line("mig", &case.db, ""),
        &format!("pool_mode = transaction\nadmin_users = {SCRAM_USER}"),
    );
    let proxy = Proxy::start(&text, &userlist("")).await;
    let port = proxy.addr.port();
    let url = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{port}/mig");
    let admin = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{port}/pgbouncer");
    let out = run_migrate_async(&url, case.dir.path(), &["--pgfunnel-admin", &admin]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("pgfunnel told to replace its server connections (RECONNECT)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(case.versions(), "1");
}
