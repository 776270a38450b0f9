//! Transaction and statement pooling against a real Postgres: correctness under many
//! clients, session state isolation, pipelines, limits, timeouts and cancel routing.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::harness::*;
use crate::proxy::*;
use crate::session_pool::in_transaction;

fn forced(pool: &str) -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction {pool}")
}

async fn txn_proxy(pool_opts: &str, extra: &str) -> Proxy {
    PgServer::shared();
    Proxy::simple(&forced(pool_opts), extra).await
}

fn table(pg: &PgServer, prefix: &str, cols: &str) -> String {
    let t = unique_name(prefix);
    pg.admin_sql_in(
        "app",
        &format!("create table {t}({cols}); grant all on {t} to {SCRAM_USER}"),
    );
    t
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_five_servers_lose_and_double_no_write() {
    let pg = PgServer::shared();
    let t = table(pg, "many", "client int, seq int, primary key (client, seq)");
    let marker = unique_name("many");
    let proxy = txn_proxy(
        &format!("pool_size=5 application_name={marker}"),
        "max_client_conn = 400\nquery_wait_timeout = 60",
    )
    .await;
    let tasks = (0..200).map(|id| {
        let conn = proxy.conn_str("plain_user", "plain_pass", "app");
        let t = t.clone();
        tokio::spawn(async move {
            let (mut c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            for seq in 0..5 {
                let tx = c.transaction().await.expect("begin");
                tx.execute(&format!("insert into {t} values ($1, $2)"), &[&id, &seq])
                    .await
                    .expect("insert");
                let seen: i64 = tx
                    .query_one(
                        &format!("select count(*) from {t} where client = $1"),
                        &[&id],
                    )
                    .await
                    .expect("count")
                    .get(0);
                assert_eq!(
                    seen,
                    seq as i64 + 1,
                    "client {id} sees exactly its own rows inside its transaction"
                );
                if seq == 2 {
                    // an aborted transaction must leave nothing behind
                    tx.execute(&format!("insert into {t} values ($1, 99)"), &[&id])
                        .await
                        .expect("insert");
                    tx.rollback().await.expect("rollback");
                    let tx = c.transaction().await.expect("begin");
                    tx.execute(&format!("insert into {t} values ($1, $2)"), &[&id, &seq])
                        .await
                        .expect("again");
                    tx.commit().await.expect("commit");
                } else {
                    tx.commit().await.expect("commit");
                }
            }
        })
    });
    for r in join_all(tasks).await {
        r.expect("client task");
    }
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    assert_eq!(
        count(&c, &format!("select count(*) from {t}")).await,
        1000,
        "200 clients x 5 writes, none lost or doubled"
    );
    assert_eq!(
        count(&c, &format!("select count(*) from {t} where seq = 99")).await,
        0,
        "rolled back rows absent"
    );
    let servers = pg.admin_sql(&format!(
        "select count(*) from pg_stat_activity where application_name = '{marker}'"
    ));
    assert!(
        servers.trim().parse::<i64>().expect("number") <= 5,
        "pool bounded: {servers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_travel_with_the_client_not_the_server() {
    let proxy = txn_proxy("pool_size=1", "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("set");
    a.execute("SET search_path = pg_catalog, public", &[])
        .await
        .expect("extended set");
    a.batch_execute("SET application_name = 'client_a'")
        .await
        .expect("set app");
    for _ in 0..3 {
        assert_eq!(
            show_setting(&b, "statement_timeout").await,
            "0",
            "b never sees a's SET"
        );
        assert_eq!(show_setting(&b, "search_path").await, "\"$user\", public");
        assert_eq!(show_setting(&b, "application_name").await, "");
        assert_eq!(
            show_setting(&a, "statement_timeout").await,
            "5s",
            "a's SET is replayed"
        );
        assert_eq!(show_setting(&a, "search_path").await, "pg_catalog, public");
        assert_eq!(show_setting(&a, "application_name").await, "client_a");
    }
    a.batch_execute("RESET statement_timeout")
        .await
        .expect("reset");
    assert_eq!(show_setting(&a, "statement_timeout").await, "0");
    a.batch_execute("SET LOCAL work_mem = '3MB'")
        .await
        .expect("set local outside a transaction only warns");
    a.batch_execute("RESET ALL").await.expect("reset all");
    assert_eq!(show_setting(&a, "search_path").await, "\"$user\", public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_hold_on_every_server_the_client_gets() {
    let proxy = txn_proxy("pool_size=1", "").await;
    let conn = format!(
        "{} options='-c statement_timeout=4321 -c idle_in_transaction_session_timeout=7000'",
        proxy.conn_str("plain_user", "plain_pass", "app")
    );
    let (with, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let plain = proxy.connect("plain_user", "plain_pass", "app").await;
    for _ in 0..3 {
        assert_eq!(show_setting(&with, "statement_timeout").await, "4321ms");
        assert_eq!(
            show_setting(&with, "idle_in_transaction_session_timeout").await,
            "7s"
        );
        assert_eq!(show_setting(&plain, "statement_timeout").await, "0");
        assert_eq!(
            show_setting(&plain, "idle_in_transaction_session_timeout").await,
            "0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_and_open_transactions_never_leak_to_other_clients() {
    let proxy = txn_proxy("pool_size=3", "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute("CREATE TEMP TABLE leak_check(x int); INSERT INTO leak_check VALUES (1)")
        .await
        .expect("temp");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    b.batch_execute("BEGIN").await.expect("begin");
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    for _ in 0..3 {
        assert_eq!(
            count(&a, "select count(*) from leak_check").await,
            1,
            "a keeps its temp table (pinned)"
        );
        assert!(
            !in_transaction(&c).await,
            "c never inherits b's transaction"
        );
    }
    b.batch_execute("COMMIT").await.expect("commit");
    let has_temp = |c: tokio_postgres::Client| async move {
        let r = c
            .query_one("select to_regclass('pg_temp.leak_check') is not null", &[])
            .await
            .expect("q");
        (c, r.get::<_, bool>(0))
    };
    let (c, seen) = has_temp(c).await;
    assert!(!seen);
    drop(a);
    // a's server was reset (DISCARD ALL) when a left; every server is clean now
    for _ in 0..4 {
        let d = proxy.connect("plain_user", "plain_pass", "app").await;
        let (_, seen) = has_temp(d).await;
        assert!(!seen, "temp table of a departed client is gone");
    }
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_from_many_clients_all_get_their_answers() {
    let proxy = txn_proxy("pool_size=1", "").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(proxy.connect("plain_user", "plain_pass", "app").await);
    }
    let work = clients.iter().enumerate().map(|(ci, c)| async move {
        let stmt = c
            .prepare("select $1::int * 10 + $2::int")
            .await
            .expect("prepare");
        let queries = (0..25).map(|i| {
            let stmt = stmt.clone();
            async move {
                let r = c
                    .query_one(&stmt, &[&(ci as i32), &i])
                    .await
                    .expect("pipelined query");
                assert_eq!(r.get::<_, i32>(0), ci as i32 * 10 + i);
            }
        });
        join_all(queries).await;
    });
    join_all(work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks_and_leaves_servers_clean() {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=statement pool_size=1");
    let proxy = Proxy::simple(&opts, "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.simple_query("select 1")
        .await
        .expect("autocommit statements work");
    let e = a.batch_execute("BEGIN").await;
    let follow = a.simple_query("select 1").await;
    assert!(
        e.is_err() || follow.is_err(),
        "transaction blocks are refused"
    );
    let msg = match (e, follow) {
        (Err(e), _) | (_, Err(e)) => message(&e),
        _ => unreachable!(),
    };
    assert!(
        msg.contains("transaction blocks not allowed in statement pooling mode")
            || msg.contains("closed"),
        "{msg}"
    );
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    assert!(!in_transaction(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_query_and_a_late_cancel_hits_nothing() {
    let proxy = txn_proxy("pool_size=1", "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let token = a.cancel_token();
    let started = Instant::now();
    let q = tokio::spawn(async move {
        let r = a.simple_query("select pg_sleep(20)").await;
        (a, r)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let (a, r) = q.await.expect("join");
    assert_eq!(sqlstate(&r.expect_err("cancelled")), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    // a is idle now; b runs on the same (only) server; a's stale cancel must not touch it
    a.simple_query("select 1").await.expect("a still works");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let q = tokio::spawn(async move { b.simple_query("select pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("late cancel sent");
    q.await
        .expect("join")
        .expect("b's query is not cancelled by a's late cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_servers_idle_or_linked_are_handled() {
    let pg = PgServer::shared();
    let proxy = txn_proxy("pool_size=1", "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let pid: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    // idle in the pool: terminated behind pgfunnel's back, no client notices
    pg.admin_sql(&format!("select pg_terminate_backend({pid})"));
    wait_until_async(Duration::from_secs(5), "the server is gone", || async {
        pg.admin_sql(&format!(
            "select count(*) from pg_stat_activity where pid = {pid}"
        ))
        .trim()
            == "0"
    })
    .await;
    let pid2: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("no error for an idle death")
        .get(0);
    assert_ne!(pid, pid2);
    // linked inside a transaction: the client gets a clear error, the pool refills
    a.batch_execute("BEGIN").await.expect("begin");
    pg.admin_sql(&format!("select pg_terminate_backend({pid2})"));
    let e = a
        .simple_query("select 1")
        .await
        .expect_err("server died mid-transaction");
    assert!(e.code().is_some() || e.is_closed(), "{e:?}");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    b.simple_query("select 1").await.expect("pool refilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_and_user_connection_limits_bound_servers_across_pools() {
    let pg = PgServer::shared();
    let marker = unique_name("lim");
    let dbs = [db_line(
        "lim_a",
        "app",
        &format!(
            "{} application_name={marker}",
            forced("pool_size=5 max_db_connections=2")
        ),
    )]
    .join("\n");
    let proxy = Proxy::start(&ini(&dbs, ""), &userlist("")).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(proxy.connect("plain_user", "plain_pass", "lim_a").await);
    }
    let work = clients.iter().map(|c| async move {
        for _ in 0..5 {
            c.batch_execute("select pg_sleep(0.02)")
                .await
                .expect("query");
        }
    });
    let pg2 = pg;
    let watch = async {
        let mut max = 0;
        for _ in 0..20 {
            let n: i64 = pg2
                .admin_sql(&format!(
                    "select count(*) from pg_stat_activity where application_name = '{marker}'"
                ))
                .trim()
                .parse()
                .expect("n");
            max = max.max(n);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    };
    let (_, max) = tokio::join!(join_all(work), watch);
    assert!(
        (1..=2).contains(&max),
        "max_db_connections=2 holds, saw {max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limits_per_database_refuse_with_53300() {
    let proxy = txn_proxy("max_db_client_connections=2", "").await;
    let _a = proxy.connect("plain_user", "plain_pass", "app").await;
    let _b = proxy.connect("plain_user", "plain_pass", "app").await;
    let e = proxy
        .try_connect("plain_user", "plain_pass", "app")
        .await
        .expect_err("third refused");
    assert_eq!(sqlstate(&e), "53300");
    assert_eq!(
        message(&e),
        "client connections exceeded (max_db_client_connections)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_keeps_servers_warm() {
    let pg = PgServer::shared();
    let marker = unique_name("warm");
    let proxy = txn_proxy(&format!("min_pool_size=3 application_name={marker}"), "").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    c.simple_query("select 1").await.expect("q");
    wait_until_async(Duration::from_secs(10), "three warm servers", || async {
        pg.admin_sql(&format!(
            "select count(*) from pg_stat_activity where application_name = '{marker}'"
        ))
        .trim()
        .parse::<i64>()
        .expect("n")
            >= 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_serves_a_client_that_waited_long_enough() {
    let proxy = txn_proxy(
        "pool_size=1 reserve_pool_size=1",
        "reserve_pool_timeout = 0.2",
    )
    .await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute("BEGIN")
        .await
        .expect("a holds the only regular server");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let started = Instant::now();
    b.simple_query("select 1")
        .await
        .expect("b served from the reserve");
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_and_notify() {
    let proxy = txn_proxy(
        "pool_size=1",
        "query_wait_timeout = 1\nquery_wait_notify = 0.2",
    )
    .await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute("BEGIN").await.expect("a holds the server");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let started = Instant::now();
    let e = b
        .simple_query("select 1")
        .await
        .expect_err("b times out waiting");
    assert!(
        message(&e).contains("query_wait_timeout") || e.is_closed(),
        "{e:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(5)
    );
    a.batch_execute("COMMIT").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_timeouts_cancel_or_close_precisely() {
    let proxy = txn_proxy(
        "",
        "query_timeout = 0.3\nidle_transaction_timeout = 0.5\ntransaction_timeout = 3\nclient_idle_timeout = 2",
    )
    .await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let started = Instant::now();
    let e = a
        .simple_query("select pg_sleep(5)")
        .await
        .expect_err("query_timeout cancels");
    assert_eq!(sqlstate(&e), "57014");
    assert!(started.elapsed() < Duration::from_secs(2));
    a.simple_query("select 1")
        .await
        .expect("the client goes on after a cancel");
    a.batch_execute("BEGIN").await.expect("begin");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let e = a
        .simple_query("select 1")
        .await
        .expect_err("idle in transaction too long");
    assert!(sqlstate(&e) == "08P01" || e.is_closed(), "{e:?}");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = b
        .simple_query("select 1")
        .await
        .expect_err("client_idle_timeout");
    assert!(e.code().is_some() || e.is_closed(), "{e:?}");
}

/// `SHOW name` through the simple protocol.
pub async fn show_setting(c: &tokio_postgres::Client, name: &str) -> String {
    let rows = c.simple_query(&format!("show {name}")).await.expect("show");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("one row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_created_inside_a_transaction_pins_and_is_counted() {
    let proxy = txn_proxy("pool_size=2", "").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    a.batch_execute("BEGIN; CREATE TEMP TABLE pinned_inside(x int); COMMIT")
        .await
        .expect("temp table in a transaction");
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    for _ in 0..3 {
        b.simple_query("select 1")
            .await
            .expect("b runs on the other server");
        let rows = a
            .query_one("select count(*) from pinned_inside", &[])
            .await
            .expect("a keeps its temp table");
        assert_eq!(rows.get::<_, i64>(0), 0);
    }
    let app = &proxy.running.as_ref().expect("running").app;
    let pins: u64 = app.pools.iter().map(|p| p.stats.timers.pins.get()).sum();
    assert_eq!(
        pins, 1,
        "the pin is counted once (pgfunnel_client_pins_total)"
    );
}
