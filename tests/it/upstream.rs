//! Servers that sleep or restart: a client whose query arrives while Postgres is down waits
//! (pgfunnel retries with backoff through refused connections and `57P03 starting up`)
//! and gets its answer once Postgres is back; a real login failure is reported at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_waits_while_postgres_restarts_and_then_succeeds() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("start Postgres"),
    );
    let db = format!("app = host=localhost port={} dbname=app", pg.port());
    let extra = "pool_mode = transaction\nquery_wait_timeout = 60\nquery_wait_notify = 1\n\
                 server_tls_sslmode = disable";
    let proxy = Proxy::start(&ini(&db, extra), &userlist("")).await;
    let (c, mut notices) = connect_with_notices(&proxy).await;
    c.simple_query("select 1").await.expect("first query");
    let pg2 = pg.clone();
    tokio::task::spawn_blocking(move || pg2.stop("fast"))
        .await
        .expect("stop");
    // Postgres comes back 3 s after it went away; the client asks in between.
    let pg3 = pg.clone();
    let starter = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(3));
        pg3.start_again();
    });
    let asked = Instant::now();
    let row = c
        .query_one("select 42", &[])
        .await
        .expect("the query waits for Postgres and succeeds");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "the answer came from the restarted server"
    );
    starter.await.expect("restart");
    let notice = notices
        .try_recv()
        .expect("a NOTICE after query_wait_notify");
    assert!(notice.contains("client being queued"), "{notice}");
}

/// Connects and forwards every NOTICE's message into the returned channel.
async fn connect_with_notices(
    proxy: &Proxy,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let conn_str = proxy.conn_str(SCRAM_USER, SCRAM_PASSWORD, "app");
    let (client, mut conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = msg {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_password_fails_at_once_and_is_remembered() {
    let opts = format!("user={SCRAM_USER} password=not_the_password");
    let proxy = Proxy::simple(&opts, "query_wait_timeout = 30").await;
    for attempt in 0..2 {
        let started = Instant::now();
        let e = proxy
            .try_connect(PLAIN_USER, PLAIN_PASSWORD, "app")
            .await
            .expect_err("server login fails");
        assert_eq!(sqlstate(&e), "28P01", "attempt {attempt}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a wrong password is not retried until query_wait_timeout"
        );
    }
}
