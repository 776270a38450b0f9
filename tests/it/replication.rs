//! Replication connections through pgfunnel (issue 16, point 3): pg_receivewal,
//! pg_basebackup, pg_recvlogical and a logical subscription each get a dedicated server
//! opened with `replication=`, counted against pool_size, shown in SHOW CLIENTS/SERVERS
//! and closed when the client leaves. Every external tool runs bounded in time.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::*;
use crate::proxy::{ini, userlist, Proxy};

/// Longest any replication tool may run in these tests.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// pgfunnel with `replication` (what physical tools ask for) and `logical` (for
/// `replication=database`), both as the superuser, and plain_user as console admin.
async fn replication_proxy(pool_size: u32) -> Proxy {
    replication_proxy_as(SUPERUSER, pool_size, "").await
}

/// As [`replication_proxy`] with the server role `user` and `extra` `[pgbouncer]` lines.
async fn replication_proxy_as(user: &str, pool_size: u32, extra: &str) -> Proxy {
    let pg = PgServer::shared();
    let line = |name: &str| {
        format!(
            "{name} = host=127.0.0.1 port={} dbname={APP_DB} user={user} pool_size={pool_size}",
            pg.port()
        )
    };
    let dbs = format!("{}\n{}", line("replication"), line("logical"));
    Proxy::start(
        &ini(
            &dbs,
            &format!("admin_users = plain_user\nquery_wait_timeout = 20\n{extra}"),
        ),
        &userlist(""),
    )
    .await
}

/// A client tool of the test cluster's version, pointed at pgfunnel as plain_user.
fn tool(proxy: &Proxy, name: &str) -> Command {
    let mut cmd = Command::new(PgServer::shared().bindir().join(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", proxy.addr.port().to_string())
        .env("PGUSER", PLAIN_USER)
        .env("PGPASSWORD", PLAIN_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20")
        .stdin(Stdio::null());
    cmd
}

/// Runs a tool to its end within `TOOL_LIMIT` (killed past it).
async fn run_bounded(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(TOOL_LIMIT, waited).await {
        Ok(out) => out.expect("join").expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("tool ran longer than {TOOL_LIMIT:?}");
        }
    }
}

/// Stops a streaming tool (SIGINT: it finishes cleanly) and waits for it, bounded.
async fn stop_streaming(mut child: Child) -> Output {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait_with_output().expect("output");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn console(proxy: &Proxy) -> Client {
    proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await
}

/// `(database, replication, state)` of every row of SHOW CLIENTS or SHOW SERVERS.
async fn socket_rows(console: &Client, view: &str) -> Vec<(String, String, String)> {
    let msgs = console
        .simple_query(&format!("SHOW {view}"))
        .await
        .expect("show");
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get("database").unwrap_or_default().to_owned(),
                r.get("replication").unwrap_or_default().to_owned(),
                r.get("state").unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
        .collect()
}

async fn count_kind(console: &Client, view: &str, kind: &str) -> usize {
    socket_rows(console, view)
        .await
        .iter()
        .filter(|r| r.1 == kind)
        .count()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `pg_receivewal` (`cmd`) into `dir` and returns once WAL arrived there.
async fn receive_wal(mut cmd: Command, dir: &Path) -> Child {
    let child = cmd
        .arg("-D")
        .arg(dir)
        .arg("--no-loop")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pg_receivewal");
    wait_until_async(Duration::from_secs(20), "WAL received", || async {
        dir_has_wal(dir)
    })
    .await;
    child
}

fn dir_has_wal(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().next().is_some())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_receivewal_streams_through_a_dedicated_server_that_takes_an_idle_ones_slot() {
    let proxy = replication_proxy(1).await;
    let admin = console(&proxy).await;
    // A normal client leaves an idle server in the pool of one.
    let normal = proxy
        .connect(PLAIN_USER, PLAIN_PASSWORD, "replication")
        .await;
    normal.simple_query("select 1").await.expect("normal query");
    drop(normal);
    let wal = tempfile::tempdir().expect("tempdir");
    let child = receive_wal(tool(&proxy, "pg_receivewal"), wal.path()).await;
    let servers = socket_rows(&admin, "SERVERS").await;
    assert_eq!(
        servers,
        vec![("replication".into(), "physical".into(), "active".into())],
        "the idle normal server was closed to make room for the replication one"
    );
    assert_eq!(count_kind(&admin, "CLIENTS", "physical").await, 1);
    let out = stop_streaming(child).await;
    assert!(
        !stderr(&out).contains("FATAL"),
        "pg_receivewal failed: {}",
        stderr(&out)
    );
    wait_until_async(
        Duration::from_secs(10),
        "replication server closed",
        || async { count_kind(&admin, "SERVERS", "physical").await == 0 },
    )
    .await;
    let again = proxy
        .connect(PLAIN_USER, PLAIN_PASSWORD, "replication")
        .await;
    again
        .simple_query("select 1")
        .await
        .expect("slot free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_basebackup_copies_the_cluster_through_pgfunnel() {
    let proxy = replication_proxy(2).await;
    let target = tempfile::tempdir().expect("tempdir");
    let backup = target.path().join("backup");
    let mut cmd = tool(&proxy, "pg_basebackup");
    cmd.arg("-D")
        .arg(&backup)
        .args(["-X", "none", "-c", "fast", "--no-sync", "--no-manifest"]);
    let out = run_bounded(cmd).await;
    assert!(out.status.success(), "pg_basebackup: {}", stderr(&out));
    assert!(backup.join("PG_VERSION").exists());
    assert!(backup.join("backup_label").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_recvlogical_decodes_changes_through_pgfunnel() {
    let pg = PgServer::shared();
    let proxy = replication_proxy(2).await;
    let admin = console(&proxy).await;
    let slot = unique_name("recvlogical");
    let table = unique_name("decoded");
    pg.admin_sql_in(APP_DB, &format!("CREATE TABLE {table} (id int)"));
    let mut create = tool(&proxy, "pg_recvlogical");
    create.args([
        "-d",
        "logical",
        "-S",
        &slot,
        "-P",
        "test_decoding",
        "--create-slot",
    ]);
    let out = run_bounded(create).await;
    assert!(out.status.success(), "create slot: {}", stderr(&out));
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let mut start = tool(&proxy, "pg_recvlogical");
    // The walsender runs with the client's application_name.
    start
        .env("PGAPPNAME", &slot)
        .args(["-d", "logical", "-S", &slot, "--start", "-F", "0", "-f"])
        .arg(file.path());
    let child = start
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pg_recvlogical");
    pg.admin_sql_in(APP_DB, &format!("INSERT INTO {table} VALUES (4242)"));
    wait_until_async(Duration::from_secs(20), "decoded insert", || async {
        std::fs::read_to_string(file.path()).is_ok_and(|t| t.contains("4242"))
    })
    .await;
    assert_eq!(count_kind(&admin, "CLIENTS", "logical").await, 1);
    assert_eq!(count_kind(&admin, "SERVERS", "logical").await, 1);
    let sql = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{slot}'");
    assert_eq!(pg.admin_sql(&sql).trim(), "1");
    stop_streaming(child).await;
    wait_until_async(Duration::from_secs(10), "walsender gone", || async {
        count_kind(&admin, "SERVERS", "logical").await == 0
    })
    .await;
    let mut drop_slot = tool(&proxy, "pg_recvlogical");
    drop_slot.args(["-d", "logical", "-S", &slot, "--drop-slot"]);
    let out = run_bounded(drop_slot).await;
    assert!(out.status.success(), "drop slot: {}", stderr(&out));
    pg.admin_sql_in(APP_DB, &format!("DROP TABLE {table}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_subscription_replicates_rows_through_pgfunnel() {
    let pg = PgServer::shared();
    let proxy = replication_proxy(3).await;
    let name = unique_name("sub");
    pg.admin_sql_in(APP_DB, &format!("CREATE TABLE {name} (id int primary key)"));
    pg.admin_sql_in(
        APP2_DB,
        &format!("CREATE TABLE {name} (id int primary key)"),
    );
    pg.admin_sql_in(
        APP_DB,
        &format!("CREATE PUBLICATION {name} FOR TABLE {name}"),
    );
    // In one cluster, CREATE SUBSCRIPTION cannot create its slot (it would wait for its own
    // transaction): the slot is made first, as the Postgres manual says.
    pg.admin_sql_in(
        APP_DB,
        &format!("SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"),
    );
    let conninfo = format!(
        "host=127.0.0.1 port={} user={PLAIN_USER} password={PLAIN_PASSWORD} dbname=logical",
        proxy.addr.port()
    );
    pg.admin_sql_in(
        APP2_DB,
        &format!(
            "CREATE SUBSCRIPTION {name} CONNECTION '{conninfo}' PUBLICATION {name} \
             WITH (create_slot = false, slot_name = '{name}', copy_data = false)"
        ),
    );
    pg.admin_sql_in(APP_DB, &format!("INSERT INTO {name} VALUES (1), (2), (3)"));
    let count_sql = format!("SELECT count(*) FROM {name}");
    wait_until_async(Duration::from_secs(30), "rows replicated", || async {
        pg.admin_sql_in(APP2_DB, &count_sql).trim() == "3"
    })
    .await;
    let admin = console(&proxy).await;
    assert_eq!(count_kind(&admin, "SERVERS", "logical").await, 1);
    pg.admin_sql_in(APP2_DB, &format!("ALTER SUBSCRIPTION {name} DISABLE"));
    pg.admin_sql_in(
        APP2_DB,
        &format!("ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"),
    );
    pg.admin_sql_in(APP2_DB, &format!("DROP SUBSCRIPTION {name}"));
    wait_until_async(Duration::from_secs(10), "walsender gone", || async {
        count_kind(&admin, "SERVERS", "logical").await == 0
    })
    .await;
    wait_until_async(Duration::from_secs(10), "slot inactive", || async {
        let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{name}'");
        pg.admin_sql_in(APP_DB, &sql).trim() == "f"
    })
    .await;
    pg.admin_sql_in(
        APP_DB,
        &format!("SELECT pg_drop_replication_slot('{name}')"),
    );
    pg.admin_sql_in(APP_DB, &format!("DROP PUBLICATION {name}"));
    pg.admin_sql_in(APP_DB, &format!("DROP TABLE {name}"));
    pg.admin_sql_in(APP2_DB, &format!("DROP TABLE {name}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walsender_refusal_reaches_the_client_as_a_login_failure() {
    // A role without REPLICATION and without a pg_hba replication line.
    let proxy = replication_proxy_as(TRUST_USER, 1, "").await;
    let wal = tempfile::tempdir().expect("tempdir");
    let mut cmd = tool(&proxy, "pg_receivewal");
    cmd.arg("-D").arg(wal.path()).arg("--no-loop");
    let out = run_bounded(cmd).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("replication connection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_receivewal_streams_over_client_tls() {
    let pki = crate::tls::Pki::new();
    // `require`: a plaintext client would be refused, so WAL arriving proves TLS was used.
    let proxy = replication_proxy_as(SUPERUSER, 1, &pki.client_tls_lines("require")).await;
    let wal = tempfile::tempdir().expect("tempdir");
    let mut cmd = tool(&proxy, "pg_receivewal");
    cmd.env("PGSSLMODE", "require");
    let child = receive_wal(cmd, wal.path()).await;
    let out = stop_streaming(child).await;
    assert!(!stderr(&out).contains("FATAL"), "{}", stderr(&out));
    let mut plain = tool(&proxy, "pg_receivewal");
    plain
        .env("PGSSLMODE", "disable")
        .arg("-D")
        .arg(wal.path())
        .arg("--no-loop");
    let out = run_bounded(plain).await;
    assert!(!out.status.success(), "plaintext refused under require");
}

/// A `replication=` value Postgres does not know is refused before authentication with
/// Postgres's 22023 (invalid_parameter_value) and its wording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replication_value_is_refused_with_22023() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = replication_proxy(1).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let startup = crate::proxy::startup_message(
        &[
            ("user", PLAIN_USER),
            ("database", "replication"),
            ("replication", "maybe"),
        ],
        3 << 16,
    );
    s.write_all(&startup).await.expect("startup");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .expect("read");
    assert_eq!(answer.first(), Some(&b'E'), "an error, no auth request");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("C22023\0"), "{text:?}");
    assert!(
        text.contains("invalid value for parameter \"replication\""),
        "{text:?}"
    );
}
