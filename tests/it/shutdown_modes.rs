//! Shutdown and pause as in PgBouncer (issue 16, point 7): during SHUTDOWN
//! WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS new TCP connections are refused at once while the
//! Unix socket stays open for the console; under WAIT_FOR_SERVERS a client that starts a
//! new transaction gets `server shutting down`; SUSPEND is refused with a clear message.
//! A client accepted before the shutdown and still in its handshake is served
//! (WAIT_FOR_CLIENTS) or refused with `server shutting down` (WAIT_FOR_SERVERS), and the
//! shutdown waits for it (issue 20, point 4).

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::harness::*;
use crate::proxy::{db_line, ini, message, sqlstate, userlist, Proxy};

const LIMIT: Duration = Duration::from_secs(15);

/// Transaction-mode pgfunnel with a Unix socket in its temp dir and plain_user as admin.
/// The socket's temp dir is returned too: it must outlive the proxy.
async fn proxy_with_socket() -> (Proxy, tempfile::TempDir) {
    PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=1");
    let extra = format!(
        "admin_users = plain_user\nunix_socket_dir = {}",
        dir.path().display()
    );
    let proxy = Proxy::start(&ini(&db_line("app", "app", &opts), &extra), &userlist("")).await;
    (proxy, dir)
}

async fn unix_connect(proxy: &Proxy, db: &str) -> Result<Client, tokio_postgres::Error> {
    let path = proxy.unix_path.as_ref().expect("unix socket");
    let dir = path.parent().expect("dir");
    let port = path
        .extension()
        .and_then(|e| e.to_str())
        .expect("port suffix");
    let conn_str = format!(
        "host={} port={port} user={PLAIN_USER} password={PLAIN_PASSWORD} dbname={db}",
        dir.display()
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn tcp_refused(proxy: &Proxy) -> bool {
    tokio::net::TcpStream::connect(proxy.addr).await.is_err()
}

fn finished(proxy: &Proxy) -> bool {
    let running = proxy.running.as_ref().expect("running");
    running.app.stopping.finished.is_cancelled()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_servers_refuses_tcp_keeps_the_console_socket_and_ends_waiting_and_new_transactions(
) {
    let (proxy, _dir) = proxy_with_socket().await;
    let holder = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let idle = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    idle.simple_query("select 1").await.expect("served before");
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .simple_query("select 1")
        .await
        .expect("in transaction");
    // A third client queues for the pool's only server.
    let waiter = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let queued = tokio::spawn(async move { waiter.simple_query("select 1").await.map(|_| ()) });
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    wait_until_async(LIMIT, "a client waiting", || async {
        let rows = admin.simple_query("SHOW CLIENTS").await.expect("show");
        rows.iter().any(|m| {
            matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("state") == Some("waiting"))
        })
    })
    .await;
    admin
        .simple_query("SHUTDOWN WAIT_FOR_SERVERS")
        .await
        .expect("shutdown accepted");
    let e = tokio::time::timeout(LIMIT, queued)
        .await
        .expect("the waiting client is not left waiting")
        .expect("join")
        .expect_err("no server during WAIT_FOR_SERVERS");
    assert_eq!(sqlstate(&e), "08P01", "{e:?}");
    assert_eq!(message(&e), "server shutting down");
    wait_until_async(LIMIT, "TCP refused", || tcp_refused(&proxy)).await;
    // The console still answers over the Unix socket; pooled logins there are refused.
    let console = unix_connect(&proxy, "pgbouncer")
        .await
        .expect("console over the Unix socket during shutdown");
    console.simple_query("SHOW VERSION").await.expect("show");
    let Err(e) = unix_connect(&proxy, "app").await else {
        panic!("a pooled login over the Unix socket is refused during shutdown");
    };
    assert_eq!(message(&e), "server shutting down");
    // A connected client starting a new transaction is told why it cannot.
    crate::timeouts::fatal_08p01(&idle, "select 1", "server shutting down").await;
    // The running transaction finishes, then the shutdown completes.
    assert!(!finished(&proxy));
    holder
        .batch_execute("COMMIT")
        .await
        .expect("commit goes on");
    wait_until_async(LIMIT, "shutdown finished", || async { finished(&proxy) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_clients_keeps_serving_connected_clients_and_refuses_new_tcp() {
    let (proxy, _dir) = proxy_with_socket().await;
    let client = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    admin
        .simple_query("SHUTDOWN WAIT_FOR_CLIENTS")
        .await
        .expect("shutdown accepted");
    wait_until_async(LIMIT, "TCP refused", || tcp_refused(&proxy)).await;
    client
        .simple_query("select 1")
        .await
        .expect("connected clients are still served");
    let console = unix_connect(&proxy, "pgbouncer").await.expect("console");
    console.simple_query("SHOW CLIENTS").await.expect("show");
    assert!(!finished(&proxy));
    drop(client);
    wait_until_async(LIMIT, "shutdown finished", || async { finished(&proxy) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_is_refused_with_a_clear_message_and_pause_resume_work() {
    let (proxy, _dir) = proxy_with_socket().await;
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let e = admin.simple_query("SUSPEND").await.expect_err("refused");
    assert!(message(&e).contains("SUSPEND is not supported"), "{e:?}");
    assert!(message(&e).contains("PAUSE"), "{e:?}");
    admin.simple_query("PAUSE").await.expect("pause");
    admin.simple_query("RESUME").await.expect("resume");
    let client = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    client.simple_query("select 1").await.expect("served");
}

/// A proxy asked to shut down in `mode` while a TCP client it accepted has not sent its
/// startup packet yet (registered, still in its handshake); returns once TCP is refused.
async fn stop_with_a_client_in_its_handshake(
    mode: pgfunnel::shutdown::ShutdownMode,
) -> (Proxy, tempfile::TempDir, tokio::net::TcpStream) {
    let (proxy, dir) = proxy_with_socket().await;
    let raw = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("tcp connect");
    let app = proxy.running.as_ref().expect("running").app.clone();
    wait_until_async(LIMIT, "client registered", || async {
        app.clients.len() == 1
    })
    .await;
    app.stopping.request(mode);
    wait_until_async(LIMIT, "TCP refused", || tcp_refused(&proxy)).await;
    assert!(
        !finished(&proxy),
        "the shutdown waits for the client logging in"
    );
    (proxy, dir, raw)
}

/// Logs in over `raw` (a connection opened earlier) as plain_user to `app`.
async fn login_over(
    proxy: &Proxy,
    raw: tokio::net::TcpStream,
) -> Result<Client, tokio_postgres::Error> {
    let config: tokio_postgres::Config = proxy
        .conn_str(PLAIN_USER, PLAIN_PASSWORD, "app")
        .parse()
        .expect("config");
    let (client, conn) = config.connect_raw(raw, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_clients_serves_a_client_still_in_its_handshake_and_waits_for_it() {
    let mode = pgfunnel::shutdown::ShutdownMode::WaitForClients;
    let (proxy, _dir, raw) = stop_with_a_client_in_its_handshake(mode).await;
    assert!(
        !finished(&proxy),
        "the shutdown waits for the client logging in"
    );
    let client = login_over(&proxy, raw)
        .await
        .expect("a client accepted before the shutdown logs in");
    client
        .simple_query("select 1")
        .await
        .expect("and is served as usual");
    assert!(!finished(&proxy));
    drop(client);
    wait_until_async(LIMIT, "shutdown finished", || async { finished(&proxy) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_servers_refuses_a_client_still_in_its_handshake_with_a_clear_error() {
    let mode = pgfunnel::shutdown::ShutdownMode::WaitForServers;
    let (proxy, _dir, raw) = stop_with_a_client_in_its_handshake(mode).await;
    let Err(e) = login_over(&proxy, raw).await else {
        panic!("a pooled login during WAIT_FOR_SERVERS is refused");
    };
    assert_eq!(sqlstate(&e), "08P01", "{e:?}");
    assert_eq!(message(&e), "server shutting down");
    wait_until_async(LIMIT, "shutdown finished", || async { finished(&proxy) }).await;
}
