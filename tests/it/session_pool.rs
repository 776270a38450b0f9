//! Session pooling: limits, waiting, reset between clients, relay of COPY, notices,
//! cancels, large rows and server-initiated errors.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::AsyncMessage;

use crate::harness::*;
use crate::proxy::*;

fn forced() -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "max_client_conn = 2").await;
    let _a = proxy.connect("plain_user", "plain_pass", "app").await;
    let _b = proxy.connect("plain_user", "plain_pass", "app").await;
    let e = proxy
        .try_connect("plain_user", "plain_pass", "app")
        .await
        .expect_err("third refused");
    assert_eq!(sqlstate(&e), "53300");
    assert_eq!(message(&e), "no more connections allowed (max_client_conn)");
    drop(_a);
    wait_until_async(Duration::from_secs(10), "a slot frees", || async {
        proxy
            .try_connect("plain_user", "plain_pass", "app")
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_client_is_served_when_a_server_frees_up_or_times_out() {
    PgServer::shared();
    let proxy = Proxy::simple(
        &format!("{} pool_size=1", forced()),
        "query_wait_timeout = 1",
    )
    .await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.simple_query("select 1").await.expect("a runs");
    // session mode: a holds the only server; b waits and times out
    let started = Instant::now();
    let b = proxy.try_connect("plain_user", "plain_pass", "app").await;
    let err = match b {
        Ok(b) => b
            .simple_query("select 1")
            .await
            .expect_err("b must time out"),
        Err(e) => e,
    };
    assert!(
        message(&err).contains("query_wait_timeout"),
        "{}",
        message(&err)
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // c waits while a is still there, and gets the server once a leaves
    let p2 = proxy.conn_str("plain_user", "plain_pass", "app");
    let c = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&p2, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.query_one("select 42", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a);
    assert_eq!(c.await.expect("join").expect("c served after a left"), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_reset_between_clients() {
    PgServer::shared();
    let proxy = Proxy::simple(&format!("{} pool_size=1", forced()), "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid_a: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    a.batch_execute(
        "SET work_mem = '77MB'; CREATE TEMP TABLE leftover(x int); PREPARE p AS SELECT 1",
    )
    .await
    .expect("set state");
    drop(a);
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid_b: i32 = b
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert_eq!(pid_a, pid_b, "the server connection was reused");
    let wm: String = b
        .query_one("show work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(wm, "77MB");
    let temp: i64 = b
        .query_one(
            "select count(*) from pg_class where relname = 'leftover'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(temp, 0, "temp table dropped by DISCARD ALL");
    assert!(
        b.simple_query("EXECUTE p").await.is_err(),
        "prepared statement discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_reach_the_server() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let conn = format!(
        "{} application_name=myapp options='-c statement_timeout=4321 -c search_path=pg_catalog'",
        proxy.conn_str("plain_user", "plain_pass", "app")
    );
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = c
        .query_one("select current_setting('application_name'), current_setting('statement_timeout'), current_setting('search_path')", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "myapp");
    assert_eq!(row.get::<_, String>(1), "4321ms");
    assert_eq!(row.get::<_, String>(2), "pg_catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_pass_through() {
    let pg = PgServer::shared();
    let table = unique_name("copy_t");
    pg.admin_sql_in(
        "app",
        &format!("create table {table}(id int, t text); grant all on {table} to {SCRAM_USER}"),
    );
    let proxy = Proxy::simple(&forced(), "").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    let sink = c
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .expect("copy in");
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\trow number {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone()))
        .await
        .expect("send");
    let n = sink.as_mut().finish().await.expect("finish");
    assert_eq!(n, 20_000);
    let out = c
        .copy_out(&format!("copy {table} to stdout"))
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.expect("collect");
    let got: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(got).expect("utf8"), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_large_rows_reach_the_client() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let (c, mut connection) = tokio_postgres::connect(
        &proxy.conn_str("plain_user", "plain_pass", "app"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    c.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .expect("do");
    let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notice in time");
    assert_eq!(notice.as_deref(), Some("hello from plpgsql"));
    // a 20 MB row is far larger than the relay buffers
    let row = c
        .query_one("select repeat('x', 20000000)", &[])
        .await
        .expect("big row");
    assert_eq!(row.get::<_, String>(0).len(), 20_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_query() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let q = tokio::spawn(async move { c.simple_query("select pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let err = q.await.expect("join").expect_err("cancelled");
    assert_eq!(sqlstate(&err), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_inside_a_transaction_never_leaves_a_dirty_server() {
    let pg = PgServer::shared();
    let table = unique_name("drop_tx");
    pg.admin_sql_in(
        "app",
        &format!("create table {table}(id int); grant all on {table} to {SCRAM_USER}"),
    );
    let proxy = Proxy::simple(&format!("{} pool_size=1", forced()), "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .await
        .expect("begin");
    drop(a);
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    assert!(
        !in_transaction(&b).await,
        "b must not inherit a's transaction"
    );
    let n: i64 = b
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "a's uncommitted insert was rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_while_linked_gives_a_clear_error() {
    let pg = PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    pg.admin_sql(&format!("select pg_terminate_backend({pid})"));
    let e = c
        .simple_query("select 1")
        .await
        .expect_err("server is gone");
    let code = sqlstate(&e);
    assert!(code == "57P01" || code == "08006" || e.is_closed(), "{e:?}");
    // the pool recovers: a new client gets a fresh server
    let d = proxy.connect("plain_user", "plain_pass", "app").await;
    d.simple_query("select 1").await.expect("fresh server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_closed_by_postgres_is_never_handed_out() {
    let pg = PgServer::shared();
    let proxy = Proxy::simple(&format!("{} pool_size=1", forced()), "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    drop(a);
    wait_until_async(Duration::from_secs(5), "the server is idle", || async {
        pg.admin_sql(&format!(
            "select count(*) from pg_stat_activity where pid = {pid} and state = 'idle'"
        ))
        .trim()
            == "1"
    })
    .await;
    // Wait until the backend is gone: without a timeout pg_terminate_backend only signals it.
    pg.admin_sql(&format!("select pg_terminate_backend({pid}, 10000)"));
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid_b: i32 = b
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("fresh server")
        .get(0);
    assert_ne!(pid, pid_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener_serves_clients() {
    PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "unix_socket_dir = {}\nunix_socket_mode = 0700",
        dir.path().display()
    );
    let proxy = Proxy::simple(&forced(), &extra).await;
    let path = proxy.unix_path.clone().expect("unix socket bound");
    let port = path
        .extension()
        .map(|e| e.to_string_lossy().to_string())
        .expect("port suffix");
    let conn = format!(
        "host={} port={port} user=plain_user password=plain_pass dbname=app",
        dir.path().display()
    );
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("unix connect");
    tokio::spawn(connection);
    c.simple_query("select 1")
        .await
        .expect("query over unix socket");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// True when the client's session is inside a transaction block: with the simple protocol
/// now() (transaction start) equals statement_timestamp() only for a fresh transaction.
pub async fn in_transaction(c: &tokio_postgres::Client) -> bool {
    let rows = c
        .simple_query("select (now() <> statement_timestamp())::text")
        .await
        .expect("query");
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0) == Some("true")),
        _ => None,
    });
    row.expect("one row")
}

/// server_fast_close: a session-mode server marked by RECONNECT is closed once its
/// transaction ends (an idle session's at once), and its client is told PgBouncer's words
/// with 08P01; with the setting off the session keeps its server until the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_ends_a_reconnected_session_when_its_transaction_ends() {
    PgServer::shared();
    for fast in [true, false] {
        let extra = format!(
            "admin_users = plain_user\nserver_fast_close = {}",
            u8::from(fast)
        );
        let proxy = Proxy::simple(&forced(), &extra).await;
        let conn_str = proxy.conn_str("plain_user", "plain_pass", "app");
        let (app, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .expect("app connects");
        let driver = tokio::spawn(conn);
        let (idle, idle_conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .expect("idle client connects");
        let idle_driver = tokio::spawn(idle_conn);
        idle.simple_query("select 1")
            .await
            .expect("idle client runs");
        app.simple_query("begin").await.expect("begin");
        let console = proxy.connect("plain_user", "plain_pass", "pgbouncer").await;
        console.simple_query("RECONNECT").await.expect("reconnect");
        app.simple_query("select 1")
            .await
            .expect("the transaction goes on");
        app.simple_query("commit").await.expect("commit");
        let next = app.simple_query("select 1").await;
        if !fast {
            next.expect("the session keeps working");
            idle.simple_query("select 1")
                .await
                .expect("so does the idle one");
            continue;
        }
        // The idle session is closed without sending anything.
        let idle_told = tokio::time::timeout(Duration::from_secs(10), idle_driver)
            .await
            .expect("the idle connection ends")
            .expect("join")
            .expect_err("closed by pgfunnel");
        assert_eq!(sqlstate(&idle_told), "08P01");
        let told = match next {
            Ok(_) => panic!("the session's server was closed"),
            Err(e) if !sqlstate(&e).is_empty() => e,
            Err(_) => tokio::time::timeout(Duration::from_secs(10), driver)
                .await
                .expect("the connection ends")
                .expect("join")
                .expect_err("closed by pgfunnel"),
        };
        assert_eq!(
            (sqlstate(&told), message(&told)),
            (
                "08P01".to_owned(),
                "database configuration changed".to_owned()
            )
        );
    }
}
