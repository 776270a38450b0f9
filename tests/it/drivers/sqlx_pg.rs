//! sqlx (runtime-tokio, postgres, no TLS) through pgfunnel in transaction mode: every query is
//! a named prepared statement from its per-connection cache (`sqlx_s_N`), transactions through
//! `begin`, COPY through `copy_in_raw`/`copy_out_raw`, LISTEN through `PgListener`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgSslMode};
use sqlx::{Connection, Executor, Row};

use super::*;

const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn options(proxy: &Proxy) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .username(USER)
        .password(PASSWORD)
        .database(DB)
        .ssl_mode(PgSslMode::Disable)
}

async fn connect(proxy: &Proxy) -> PgConnection {
    PgConnection::connect_with(&options(proxy))
        .await
        .expect("sqlx connects through pgfunnel")
}

fn code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

async fn worker(proxy: &Proxy, ci: usize, t: &str, pids: &Mutex<HashSet<i32>>) {
    let mut c = connect(proxy).await;
    // Prepared like every sqlx query: the extended protocol's SET must be tracked too.
    sqlx::query(&format!("set statement_timeout = '{}'", client_timeout(ci)))
        .execute(&mut c)
        .await
        .expect("SET");
    let insert =
        format!("insert into {t}_items (id, client, val) values ($1, $2, $3) returning id, val");
    let ci32 = ci as i32;
    for r in 0..ROUNDS {
        let key = ci32 * 1000 + r;
        let (v, pid, st): (i32, i32, String) = sqlx::query_as(
            "select $1::int * 2, pg_backend_pid(), current_setting('statement_timeout')",
        )
        .bind(key)
        .fetch_one(&mut c)
        .await
        .expect("select");
        assert_eq!(v, key * 2, "prepared select");
        assert_eq!(st, client_timeout(ci), "client {ci} statement_timeout");
        pids.lock().expect("pids").insert(pid);
        let (id, val): (i32, String) = sqlx::query_as(&insert)
            .bind(key)
            .bind(ci32)
            .bind(format!("v{key}"))
            .fetch_one(&mut c)
            .await
            .expect("insert");
        assert_eq!((id, val), (key, format!("v{key}")));
        if r % 5 == 0 {
            let mut tx = c.begin().await.expect("begin");
            sqlx::query(&insert)
                .bind(-key - 1)
                .bind(ci32)
                .bind("rolled back")
                .fetch_one(&mut *tx)
                .await
                .expect("insert in transaction");
            tx.rollback().await.expect("rollback");
            let n: i64 =
                sqlx::query_scalar(&format!("select count(*) from {t}_items where id = $1"))
                    .bind(-key - 1)
                    .fetch_one(&mut c)
                    .await
                    .expect("count");
            assert_eq!(n, 0, "row of a rolled back transaction");
            let e = sqlx::query("select 1 / $1::int")
                .bind(0i32)
                .fetch_one(&mut c)
                .await
                .expect_err("division by zero");
            assert_eq!(code(&e), "22012");
            let e = sqlx::query(&insert)
                .bind(key)
                .bind(ci32)
                .bind("dup")
                .fetch_one(&mut c)
                .await
                .expect_err("duplicate key");
            assert_eq!(code(&e), "23505");
            let mut tx = c.begin().await.expect("begin");
            let e = sqlx::query("select 1 / $1::int")
                .bind(0i32)
                .fetch_one(&mut *tx)
                .await
                .expect_err("division by zero in a transaction");
            assert_eq!(code(&e), "22012");
            tx.rollback().await.expect("rollback");
            let one: i32 = sqlx::query_scalar("select 1 / $1::int")
                .bind(1i32)
                .fetch_one(&mut c)
                .await
                .expect("after rollback");
            assert_eq!(one, 1);
        }
    }
    let n: i64 = sqlx::query_scalar(&format!("select count(*) from {t}_items where client = $1"))
        .bind(ci32)
        .fetch_one(&mut c)
        .await
        .expect("count");
    assert_eq!(n, ROUNDS as i64, "rows of client {ci}");
}

async fn large_results_and_parameters(c: &mut PgConnection, t: &str) {
    let rows = sqlx::query("select g, md5(g::text) from generate_series(1, $1::int) g")
        .bind(BIG_ROWS)
        .fetch_all(&mut *c)
        .await
        .expect("large result");
    assert_eq!(rows.len(), BIG_ROWS as usize);
    let sum: i64 = rows.iter().map(|r| r.get::<i32, _>(0) as i64).sum();
    assert_eq!(sum, BIG_ROWS as i64 * (BIG_ROWS as i64 + 1) / 2);
    assert_eq!(
        rows[rows.len() - 1].get::<String, _>(1),
        md5_hex(&BIG_ROWS.to_string())
    );
    let big = big_value();
    let (n, v): (i32, String) =
        sqlx::query_as("select length(v), v from (select repeat($1::text, $2::int) v) s")
            .bind("0123456789abcdef")
            .bind((BIG_VALUE_LEN / 16) as i32)
            .fetch_one(&mut *c)
            .await
            .expect("5 MiB result value");
    assert_eq!(n as usize, BIG_VALUE_LEN);
    assert!(v == big, "5 MiB result value differs");
    sqlx::query(&format!("insert into {t}_big (id, data) values ($1, $2)"))
        .bind(1i32)
        .bind(&big)
        .execute(&mut *c)
        .await
        .expect("5 MiB parameter");
    let (h, data): (String, String) = sqlx::query_as(&format!(
        "select md5(data), data from {t}_big where id = $1"
    ))
    .bind(1i32)
    .fetch_one(&mut *c)
    .await
    .expect("read back");
    assert_eq!(h, md5_hex(&big), "5 MiB parameter stored");
    assert!(data == big, "5 MiB parameter read back differs");
}

async fn copy_in_and_out(c: &mut PgConnection, t: &str) {
    let text = copy_text();
    let mut copy = c
        .copy_in_raw(&format!("copy {t}_copy (id, note) from stdin"))
        .await
        .expect("COPY FROM starts");
    copy.send(text.as_bytes()).await.expect("copy data");
    assert_eq!(copy.finish().await.expect("COPY FROM ends"), 1000);
    let out: Vec<bytes::Bytes> = c
        .copy_out_raw(&format!(
            "copy (select id, note from {t}_copy order by id) to stdout"
        ))
        .await
        .expect("COPY TO starts")
        .try_collect()
        .await
        .expect("COPY TO data");
    assert_eq!(
        String::from_utf8(out.concat()).expect("utf8"),
        text,
        "COPY TO output"
    );
    let e = {
        let mut copy = c
            .copy_in_raw(&format!("copy {t}_copy (id, note) from stdin"))
            .await
            .expect("COPY FROM starts");
        match copy.send(&b"not a number\tx\n"[..]).await {
            Err(e) => e,
            Ok(_) => copy.finish().await.expect_err("COPY of bad data fails"),
        }
    };
    assert_eq!(code(&e), "22P02", "COPY of bad data: {e}");
    let n: i64 = sqlx::query_scalar(&format!("select count(*) from {t}_copy"))
        .fetch_one(&mut *c)
        .await
        .expect("count after failed COPY");
    assert_eq!(n, 1000);
}

async fn listen_notify(proxy: &Proxy, c: &mut PgConnection, t: &str) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options(proxy))
        .await
        .expect("pool for the listener");
    let mut listener = PgListener::connect_with(&pool).await.expect("listener");
    let channel = format!("{t}_chan");
    listener.listen(&channel).await.expect("LISTEN");
    sqlx::query("select pg_notify($1, $2)")
        .bind(&channel)
        .bind("hello from sqlx")
        .execute(&mut *c)
        .await
        .expect("NOTIFY");
    let n = tokio::time::timeout(NOTIFY_TIMEOUT, listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("listener connection still open");
    assert_eq!(
        (n.channel(), n.payload()),
        (channel.as_str(), "hello from sqlx")
    );
}

async fn statement_timeout_holds(proxy: &Proxy) {
    let mut c = connect(proxy).await;
    let mut other = connect(proxy).await;
    c.execute("set statement_timeout = '150ms'")
        .await
        .expect("SET (simple protocol)");
    for _ in 0..3 {
        let v: String = sqlx::query_scalar("select current_setting('statement_timeout')")
            .fetch_one(&mut other)
            .await
            .expect("setting");
        assert_eq!(v, "0", "statement_timeout of a client that never set it");
        let e = sqlx::query("select pg_sleep($1::int)")
            .bind(5i32)
            .execute(&mut c)
            .await
            .expect_err("statement_timeout fires");
        assert_eq!(code(&e), "57014");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_passes_the_driver_suite() {
    let proxy = start_proxy().await;
    let t = unique_name("sqlx");
    let mut setup = connect(&proxy).await;
    setup
        .execute(&*format!(
            "create table {t}_items (id int primary key, client int not null, val text not null);
             create table {t}_big (id int primary key, data text not null);
             create table {t}_copy (id int primary key, note text not null);"
        ))
        .await
        .expect("create tables");
    let pids = Arc::new(Mutex::new(HashSet::new()));
    let work = (0..CLIENTS).map(|ci| worker(&proxy, ci, &t, &pids));
    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(work))
        .await
        .expect("concurrent clients finish within 120 s");
    let seen = pids.lock().expect("pids").len();
    assert!(
        (1..=POOL_SIZE).contains(&seen),
        "{CLIENTS} clients saw {seen} server pids"
    );
    // A pool of CLIENTS connections with queries from many tasks at once.
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect_with(options(&proxy))
        .await
        .expect("pool");
    let sums = (0..100).map(|i| {
        let pool = pool.clone();
        async move {
            let v: i32 = sqlx::query_scalar("select $1::int + 1")
                .bind(i)
                .fetch_one(&pool)
                .await
                .expect("pool query");
            assert_eq!(v, i + 1);
        }
    });
    futures::future::join_all(sums).await;
    let (n, clients): (i64, i64) = sqlx::query_as(&format!(
        "select count(*), count(distinct client) from {t}_items"
    ))
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(
        (n, clients),
        ((CLIENTS as i64) * ROUNDS as i64, CLIENTS as i64)
    );
    pool.close().await;
    let phases = async {
        large_results_and_parameters(&mut setup, &t).await;
        copy_in_and_out(&mut setup, &t).await;
        listen_notify(&proxy, &mut setup, &t).await;
        statement_timeout_holds(&proxy).await;
    };
    tokio::time::timeout(Duration::from_secs(60), phases)
        .await
        .expect("large values, COPY, LISTEN and SET finish within 60 s");
}
