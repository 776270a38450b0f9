//! Timeouts as PgBouncer reports them (issue 16, point 5): query_timeout also bounds the
//! wait for a server (the first server login included), server_connect_timeout bounds the
//! whole server login, and every disconnect pgfunnel initiates on a timeout is FATAL 08P01
//! with PgBouncer's words (`query timeout`, `idle transaction timeout`, `transaction timeout`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

use crate::harness::*;
use crate::proxy::{ini, message, sqlstate, userlist, Proxy};

/// Bound on any single wait in these tests (the timeouts under test are far shorter).
const LIMIT: Duration = Duration::from_secs(15);

async fn txn_proxy(extra: &str) -> Proxy {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=1");
    Proxy::simple(&opts, extra).await
}

/// A TCP "server" that accepts connections, reads the startup packet (refusing TLS), asks for an md5
/// password and then never says anything again. Returns its port and the number of
/// connections it accepted.
async fn stalling_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // An SSLRequest (8 bytes, code 80877103) is answered `N` first.
                if matches!(sock.read(&mut buf).await, Ok(8)) && buf[4..8] == [4, 210, 22, 47] {
                    let _ = sock.write_all(b"N").await;
                    let _ = sock.read(&mut buf).await;
                }
                // AuthenticationMD5Password with a salt, then silence until closed.
                let _ = sock.write_all(b"R\0\0\0\x0c\0\0\0\x05salt").await;
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

/// Runs `sql` (bounded by `LIMIT`) and checks that it ends in `08P01 <words>`; returns
/// the error.
pub(crate) async fn fatal_08p01(
    client: &tokio_postgres::Client,
    sql: &str,
    words: &str,
) -> tokio_postgres::Error {
    let e = tokio::time::timeout(LIMIT, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: not ended within {LIMIT:?}"))
        .expect_err("ended by pgfunnel");
    assert_eq!(sqlstate(&e), "08P01", "{e:?}");
    assert_eq!(message(&e), words);
    e
}

/// The error a client gets logging in to database `stall` (the stalling server on `port`)
/// through a pgfunnel with these `[pgbouncer]` lines; bounded by `LIMIT`.
async fn stalled_login_error(port: u16, extra: &str) -> tokio_postgres::Error {
    let dbs = format!("stall = host=127.0.0.1 port={port} dbname=x user=u password=p");
    let proxy = Proxy::start(&ini(&dbs, extra), &userlist("")).await;
    let connecting = proxy.try_connect(PLAIN_USER, PLAIN_PASSWORD, "stall");
    let connected = tokio::time::timeout(LIMIT, connecting)
        .await
        .expect("the login is bounded");
    let Err(e) = connected else {
        panic!("the stalled server let a client in");
    };
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_ends_a_client_waiting_for_a_busy_pool_with_08p01() {
    let proxy = txn_proxy("query_timeout = 0.3\nquery_wait_timeout = 60").await;
    let holder = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let waiter = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let e = fatal_08p01(&waiter, "select 1", "query timeout").await;
    let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
    assert!(
        hint.contains("query_timeout"),
        "the hint names the setting: {hint}"
    );
    holder
        .batch_execute("COMMIT")
        .await
        .expect("holder unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_bounds_the_first_server_login_of_a_pool() {
    let (port, accepted) = stalling_server().await;
    let extra = "query_timeout = 0.3\nserver_connect_timeout = 60\nquery_wait_timeout = 60";
    let e = stalled_login_error(port, extra).await;
    assert_eq!(sqlstate(&e), "08P01", "{e:?}");
    assert_eq!(message(&e), "query timeout");
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "a server login was under way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_cuts_a_server_that_stalls_during_authentication() {
    let (port, accepted) = stalling_server().await;
    // Each login attempt is cut at server_connect_timeout and retried until the client's
    // query_wait_timeout: more than one attempt proves the cut came during authentication.
    let extra = "server_connect_timeout = 0.2\nquery_wait_timeout = 2";
    let e = stalled_login_error(port, extra).await;
    assert!(e.code().is_some(), "a Postgres error, not a hang: {e:?}");
    assert!(message(&e).contains("timed out"), "{e:?}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "the stalled login was cut and retried"
    );
}

/// Connects keeping the connection future, whose end carries an error sent while the
/// client was idle.
async fn connect_watched(
    proxy: &Proxy,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) =
        tokio_postgres::connect(&proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app"), NoTls)
            .await
            .expect("connect");
    (client, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_closes_with_08p01_and_pgbouncers_words() {
    let proxy = txn_proxy("idle_transaction_timeout = 0.3").await;
    let (client, conn) = connect_watched(&proxy).await;
    client.batch_execute("BEGIN").await.expect("begin");
    let ended = tokio::time::timeout(LIMIT, conn)
        .await
        .expect("closed within the bound")
        .expect("join");
    let e = ended.expect_err("closed with an error");
    assert_eq!(sqlstate(&e), "08P01", "{e:?}");
    assert_eq!(message(&e), "idle transaction timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_closes_a_running_transaction_with_08p01() {
    let proxy = txn_proxy("transaction_timeout = 0.3").await;
    let client = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    client.batch_execute("BEGIN").await.expect("begin");
    fatal_08p01(&client, "select pg_sleep(30)", "transaction timeout").await;
}
