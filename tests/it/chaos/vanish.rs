//! Clients that vanish at awkward moments, over raw sockets: during startup, inside a
//! transaction, mid-query, mid-COPY and mid-pipeline (no Sync yet). None of their writes
//! may commit (except mid-query, where Postgres may finish the statement), the servers
//! they held are never handed out dirty, and checked clients running alongside lose and
//! double nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup_packet(user: &str, db: &str) -> Vec<u8> {
    crate::proxy::startup_message(&[("user", user), ("database", db)], 3 << 16)
}

/// Reads messages until one with type `until`; returns its body. Bounded by OP_TIMEOUT.
async fn read_until(s: &mut TcpStream, until: u8) -> Vec<u8> {
    tokio::time::timeout(OP_TIMEOUT, async {
        loop {
            let mut header = [0u8; 5];
            s.read_exact(&mut header).await.expect("read header");
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            s.read_exact(&mut body).await.expect("read body");
            assert_ne!(
                header[0],
                b'E',
                "unexpected error: {}",
                String::from_utf8_lossy(&body)
            );
            if header[0] == until {
                return body;
            }
        }
    })
    .await
    .expect("proxy answers in time")
}

/// Logs in (auth_type = trust) and waits for ReadyForQuery.
async fn login(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&startup_packet(PLAIN_USER, "app"))
        .await
        .expect("startup");
    read_until(&mut s, b'Z').await;
    s
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    msg(b'Q', &b)
}

async fn vanish(addr: std::net::SocketAddr, how: usize, table: &str) {
    match how {
        0 => {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let p = startup_packet(PLAIN_USER, "app");
            s.write_all(&p[..p.len() / 2])
                .await
                .expect("half a startup packet");
        }
        1 => {
            let mut s = login(addr).await;
            s.write_all(&query(&format!(
                "BEGIN; SET chaos.owner = 'vanished'; INSERT INTO {table}(k) VALUES (-1)"
            )))
            .await
            .expect("write");
            assert_eq!(read_until(&mut s, b'Z').await, b"T");
        }
        2 => {
            let mut s = login(addr).await;
            s.write_all(&query(&format!(
                "INSERT INTO {table}(k) VALUES (-2); SELECT pg_sleep(0.3)"
            )))
            .await
            .expect("write");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        3 => {
            let mut s = login(addr).await;
            s.write_all(&query(&format!("COPY {table}(k) FROM STDIN")))
                .await
                .expect("write");
            read_until(&mut s, b'G').await;
            s.write_all(&msg(b'd', b"-3\n-3\n"))
                .await
                .expect("copy data");
        }
        _ => {
            let mut s = login(addr).await;
            let mut parse = b"\0".to_vec();
            parse.extend_from_slice(format!("INSERT INTO {table}(k) VALUES (-4)").as_bytes());
            parse.extend_from_slice(&[0, 0, 0]);
            let mut pipeline = msg(b'P', &parse);
            pipeline.extend(msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
            pipeline.extend(msg(b'E', &[0, 0, 0, 0, 0]));
            pipeline.extend(msg(b'H', &[]));
            s.write_all(&pipeline).await.expect("write");
            read_until(&mut s, b'C').await;
        }
    }
    // Dropping the socket here is the vanishing act.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_startup_query_copy_or_pipeline_leave_nothing_behind() {
    let pg = PgServer::shared();
    let marker = unique_name("chaos_vanish");
    let db = txn_db_line(pg.port(), &format!("pool_size=6 application_name={marker}"));
    let extra = format!("{EXTRA}\nauth_type = trust\nclient_login_timeout = 2");
    let proxy = Proxy::start(&ini(&db, &extra), &userlist("")).await;
    let vanish_table = ledger_table(pg, "vanish_rows");
    let checked_table = ledger_table(pg, "vanish_checked");
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let conn_str = proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app");
    let load = tokio::spawn(run_workload(
        conn_str.clone(),
        checked_table.clone(),
        ledger.clone(),
        8,
        10_000,
        stop.clone(),
    ));
    let rounds = 4;
    let per_kind = 10;
    for _ in 0..rounds {
        let vanishers = (0..5 * per_kind).map(|i| vanish(proxy.addr, i % 5, &vanish_table));
        join_all(vanishers).await;
    }
    let vanished = rounds * 5 * per_kind;
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(OP_TIMEOUT * 3, load)
        .await
        .expect("workload stops in time")
        .expect("workload");
    let app = proxy.running.as_ref().expect("running").app.clone();
    wait_until_async(Duration::from_secs(10), "vanished clients are gone", || {
        let n = app.client_count.load(Ordering::Relaxed);
        async move { n == 0 }
    })
    .await;
    wait_until_async(
        Duration::from_secs(10),
        "no server left in a transaction",
        || async {
            let sql = format!(
                "select count(*) from pg_stat_activity where application_name = '{marker}' \
             and state like 'idle in transaction%'"
            );
            tokio::task::spawn_blocking(move || PgServer::shared().admin_sql(&sql))
                .await
                .expect("query")
                .trim()
                == "0"
        },
    )
    .await;
    let c = pg.connect(SCRAM_USER, Some(SCRAM_PASSWORD), "app").await;
    let leaked: i64 = c
        .query_one(
            &format!("select count(*) from {vanish_table} where k in (-1, -3, -4)"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        leaked, 0,
        "a vanished client's uncommitted write was committed"
    );
    assert_servers_clean(&conn_str, 4).await;
    let tally = ledger.check(pg, &checked_table).await;
    eprintln!(
        "chaos vanish: {vanished} clients vanished (startup, transaction, query, COPY, pipeline)"
    );
    assert_tally("vanishing clients", &tally, &ledger, 8);
}
