//! PgBouncer settings that change behaviour (issue 16, point 6), each against the real
//! Postgres: connect_query as the server's baseline, login_notify_message,
//! application_name_add_host, server_round_robin, pool_idle_timeout, the TCP keepalive
//! options on both sockets, and HBA `map=` with auth_ident_file.

use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::time::Duration;

use futures::StreamExt;
use pgfunnel::net::sockopt::get_int;
use tokio_postgres::AsyncMessage;

use crate::harness::*;
use crate::proxy::*;

fn forced(opts: &str) -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction {opts}")
}

async fn show(c: &tokio_postgres::Client, name: &str) -> String {
    show_query(c, &format!("SHOW {name}")).await
}

/// One simple-query transaction (an extended-protocol query is two: prepare, execute).
async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    show_query(c, "select pg_backend_pid()")
        .await
        .parse()
        .expect("pid")
}

async fn show_query(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.expect("query");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_query_settings_are_the_servers_baseline_and_survive_other_clients() {
    PgServer::shared();
    let opts = forced("pool_size=1 connect_query='SET statement_timeout = 4321'");
    let proxy = Proxy::simple(&opts, "").await;
    let a = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    assert_eq!(show(&a, "statement_timeout").await, "4321ms");
    a.simple_query("SET statement_timeout = 100")
        .await
        .expect("set");
    assert_eq!(show(&a, "statement_timeout").await, "100ms");
    // One server: the next client gets it back with the baseline, not the default.
    let b = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    assert_eq!(show(&b, "statement_timeout").await, "4321ms");
    assert_eq!(show(&a, "statement_timeout").await, "100ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_notify_message_is_a_notice_at_login() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(""), "login_notify_message = welcome to the pool").await;
    let (client, mut conn) = tokio_postgres::connect(
        &proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    // The query's answer comes after the login replies, so the notice is queued by then.
    client.simple_query("select 1").await.expect("query");
    drop(client);
    let mut notices = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        notices.push(n);
    }
    assert_eq!(notices, vec!["welcome to the pool".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_appends_the_client_address() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(""), "application_name_add_host = 1").await;
    let conn = format!(
        "{} application_name=reporting",
        proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app")
    );
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let name: String = c
        .query_one("select current_setting('application_name')", &[])
        .await
        .expect("query")
        .get(0);
    assert!(name.starts_with("reporting - 127.0.0.1:"), "{name}");
    let port: u16 = name
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert!(port > 0);
}

/// The backend pids four consecutive transactions of one client get from a pool of two
/// open servers.
async fn pids_of_four_transactions(extra: &str) -> Vec<i32> {
    let proxy = Proxy::simple(&forced("pool_size=2"), extra).await;
    let a = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let b = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    // Two transactions at once open both servers.
    a.simple_query("BEGIN").await.expect("begin a");
    b.simple_query("BEGIN").await.expect("begin b");
    a.simple_query("COMMIT").await.expect("commit a");
    b.simple_query("COMMIT").await.expect("commit b");
    let mut pids = Vec::new();
    for _ in 0..4 {
        pids.push(backend_pid(&a).await);
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_round_robin_spreads_transactions_over_idle_servers() {
    PgServer::shared();
    let lifo = pids_of_four_transactions("").await;
    assert!(
        lifo.iter().all(|p| *p == lifo[0]),
        "LIFO reuses the warm server: {lifo:?}"
    );
    let rr = pids_of_four_transactions("server_round_robin = 1").await;
    assert_ne!(rr[0], rr[1], "round robin takes the other server: {rr:?}");
    assert_eq!(
        (rr[0], rr[1]),
        (rr[2], rr[3]),
        "and keeps alternating: {rr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_drops_a_pool_without_clients_or_servers() {
    PgServer::shared();
    let extra = "pool_idle_timeout = 1\nserver_idle_timeout = 1";
    let proxy = Proxy::simple(&forced(""), extra).await;
    let app = proxy.running.as_ref().expect("running").app.clone();
    {
        let c = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
        c.simple_query("select 1").await.expect("query");
        assert_eq!(app.pools.len(), 1);
    }
    wait_until_msg(
        Duration::from_secs(20),
        "the unused pool to be dropped",
        || app.pools.is_empty(),
    );
    // A new client gets a new pool.
    let c = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    c.simple_query("select 1").await.expect("query");
    assert_eq!(app.pools.len(), 1);
}

/// Every TCP socket of this process whose local (or peer) port is `port`.
fn sockets_with_port(port: u16, peer: bool) -> Vec<i32> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the fd stays owned by its real owner; ManuallyDrop never closes it.
        let s = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        let addr = if peer { s.peer_addr() } else { s.local_addr() };
        if addr.is_ok_and(|a| a.port() == port) {
            fds.push(fd);
        }
    }
    fds
}

fn keepalive_of(fd: i32) -> (i32, i32, i32, i32, i32) {
    // SAFETY: as above, only read through; never closed here.
    let s = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let get = |level, name| get_int(&*s, level, name).unwrap_or(-1);
    (
        get(libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalive_options_are_set_on_client_and_server_sockets() {
    let pg = PgServer::shared();
    let extra = "tcp_keepalive = 1\ntcp_keepidle = 37\ntcp_keepintvl = 11\ntcp_keepcnt = 3\ntcp_user_timeout = 2500";
    let proxy = Proxy::simple(&forced(""), extra).await;
    let c = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    c.simple_query("select 1").await.expect("query");
    let wanted = (1, 37, 11, 3, 2500);
    let client_side: Vec<_> = sockets_with_port(proxy.addr.port(), false)
        .into_iter()
        .map(keepalive_of)
        .collect();
    assert!(
        client_side.contains(&wanted),
        "the accepted client socket: {client_side:?}"
    );
    // Other tests' sockets to Postgres have other values; only this pool's has these.
    let server_side: Vec<_> = sockets_with_port(pg.port(), true)
        .into_iter()
        .map(keepalive_of)
        .collect();
    assert!(
        server_side.contains(&wanted),
        "a server socket: {server_side:?}"
    );
}

fn os_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_peer_map_admits_the_mapped_os_user_only() {
    PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_dir = tempfile::tempdir().expect("socket dir");
    let hba = dir.path().join("hba.conf");
    let ident = dir.path().join("ident.conf");
    std::fs::write(&hba, "local all all peer map=ops\n").expect("hba");
    std::fs::write(&ident, format!("ops {} {PLAIN_USER}\n", os_user())).expect("ident");
    let extra = format!(
        "auth_type = hba\nauth_hba_file = {}\nauth_ident_file = {}\nunix_socket_dir = {}",
        hba.display(),
        ident.display(),
        sock_dir.path().display()
    );
    let proxy = Proxy::simple(&forced(""), &extra).await;
    let port = proxy.unix_port();
    let conn = |user: &str| {
        format!(
            "host={} port={port} user={user} dbname=app",
            sock_dir.path().display()
        )
    };
    let (c, connection) = tokio_postgres::connect(&conn(PLAIN_USER), tokio_postgres::NoTls)
        .await
        .expect("the mapped user logs in");
    tokio::spawn(connection);
    c.simple_query("select 1").await.expect("query");
    let e = tokio_postgres::connect(&conn(MD5_USER), tokio_postgres::NoTls)
        .await
        .err()
        .expect("an unmapped user is refused");
    assert_eq!(sqlstate(&e), "28000");
    assert!(
        message(&e).starts_with("Peer authentication failed"),
        "{}",
        message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_cert_map_admits_a_certificate_whose_cn_maps_to_the_user() {
    PgServer::shared();
    let pki = crate::tls::Pki::new();
    let robot = pki
        .ca
        .issue("deploy-robot", &[])
        .write(pki.dir.path(), "robot");
    let own_name = pki.client.write(pki.dir.path(), "client");
    let hba = pki.dir.path().join("hba.conf");
    let ident = pki.dir.path().join("ident.conf");
    std::fs::write(&hba, "hostssl all all all cert map=certs\n").expect("hba");
    std::fs::write(&ident, format!("certs deploy-robot {PLAIN_USER}\n")).expect("ident");
    let extra = format!(
        "{}auth_type = hba\nauth_hba_file = {}\nauth_ident_file = {}",
        pki.client_tls_lines("verify-ca"),
        hba.display(),
        ident.display()
    );
    let proxy = Proxy::simple(&forced(""), &extra).await;
    let (port, ca) = (proxy.addr.port(), pki.ca_file.clone());
    let (mapped, unmapped) = tokio::task::spawn_blocking(move || {
        (
            crate::tls::psql(port, "verify-ca", &ca, Some(&robot)),
            crate::tls::psql(port, "verify-ca", &ca, Some(&own_name)),
        )
    })
    .await
    .expect("psql");
    assert_eq!(
        mapped,
        Ok("42".to_owned()),
        "CN deploy-robot maps to {PLAIN_USER}"
    );
    // With map= only the map counts, as in Postgres: a CN equal to the user is not enough.
    let e = unmapped.expect_err("CN not in the map");
    assert!(e.contains("certificate authentication failed"), "{e}");
}
