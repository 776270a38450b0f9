//! Hostile logged-in clients at the byte level, in a transaction pool in front of the real
//! Postgres: messages that do not exist or do not belong (refused with 08P01 and a close,
//! never a byte to a server, other clients unharmed), a pipeline of Syncs never read
//! (back-pressure, memory bounded) and prepared-statement messages too large to gather
//! (54000, memory bounded). The memory-bounded cases run the pgfunnel binary as a child
//! process and measure its resident memory alone, not this test process's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::proxy::*;
use crate::signals::Binary;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

/// The `[databases]` line and `[pgbouncer]` lines of a transaction pool in front of
/// database `db` (clients log in by trust).
fn config_for(db: &str, pool_size: u32, extra: &str) -> (String, String) {
    let opts = format!(
        "user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size={pool_size}"
    );
    (
        db_line("app", db, &opts),
        format!("auth_type = trust\n{extra}"),
    )
}

/// An in-process proxy configured by `config_for`.
async fn proxy_for(db: &str, pool_size: u32, extra: &str) -> Proxy {
    let (databases, settings) = config_for(db, pool_size, extra);
    Proxy::start(&ini(&databases, &settings), &userlist("")).await
}

/// The pgfunnel binary configured by `config_for`, as a child process: its memory is its
/// own, not shared with the tests running concurrently in this process.
fn binary_for(db: &str, pool_size: u32, extra: &str) -> Binary {
    let (databases, settings) = config_for(db, pool_size, extra);
    Binary::start_with(&databases, &settings)
}

/// Reads one message (type byte and body), bounded by 10 s.
async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("proxy answers in time")
        .ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body))
        .await
        .expect("proxy answers in time")
        .ok()?;
    Some((head[0], body))
}

/// Reads messages up to and including ReadyForQuery; returns them.
async fn read_until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(s)
            .await
            .expect("connection open until ReadyForQuery");
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Logs in over a raw socket as `plain_user` (trust) and waits for ReadyForQuery.
async fn raw_login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&startup_message(
        &[("user", PLAIN_USER), ("database", "app")],
        3 << 16,
    ))
    .await
    .expect("startup");
    read_until_ready(&mut s).await;
    s
}

/// The SQLSTATE (C field) of an ErrorResponse body.
fn code_of(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// Reads until the proxy closes; returns the SQLSTATE of the first ErrorResponse.
async fn error_then_close(s: &mut TcpStream) -> Option<String> {
    let mut first = None;
    while let Some((tag, body)) = read_msg(s).await {
        if tag == b'E' && first.is_none() {
            first = Some(code_of(&body));
        }
    }
    first
}

/// Sessions Postgres ended with a FATAL error in `db` (a forwarded bad message would).
fn sessions_fatal(pg: &PgServer, db: &str) -> i64 {
    pg.admin_sql(&format!(
        "select sessions_fatal from pg_stat_database where datname = '{db}'"
    ))
    .trim()
    .parse()
    .expect("sessions_fatal is a number")
}

/// Well-behaved clients querying in a loop until `stop`: (succeeded, failed) counters.
fn bystanders(
    proxy: &Proxy,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..n)
        .map(|i| {
            let conn = proxy.conn_str(PLAIN_USER, "unused", "app");
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .expect("bystander connects");
                tokio::spawn(conn);
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let row = c.query_one("select $1::int + 1", &[&(i as i32)]).await;
                    match row {
                        Ok(r) if r.get::<_, i32>(0) == i as i32 + 1 => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        other => {
                            eprintln!("bystander {i}: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_do_not_belong_get_08p01_close_and_never_reach_a_server() {
    let pg = PgServer::shared();
    let db = pg.create_database("hostile_types");
    let proxy = proxy_for(&db, 2, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = bystanders(&proxy, 4, &stop);
    let fatal_before = sessions_fatal(pg, &db);
    let served = ok.clone();
    wait_until_async(Duration::from_secs(20), "bystanders running", || {
        let n = served.load(Ordering::Relaxed);
        async move { n >= 20 }
    })
    .await;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("unknown type z", vec![], msg(b'z', b"")),
        ("type byte 0", vec![], msg(0, b"xx")),
        ("password after login", vec![], msg(b'p', b"secret\0")),
        (
            "password inside a transaction",
            query("begin"),
            msg(b'p', b"x\0"),
        ),
        ("CopyData outside COPY", vec![], msg(b'd', b"1\n")),
        ("CopyDone outside COPY", vec![], msg(b'c', b"")),
        ("CopyFail outside COPY", vec![], msg(b'f', b"no\0")),
        ("length below 4", vec![], vec![b'S', 0, 0, 0, 3]),
        (
            "Sync longer than Postgres allows",
            vec![],
            msg(b'S', &[0; 10_000]),
        ),
        (
            "Parse claiming 1.5 GB",
            vec![],
            vec![b'P', 0x60, 0, 0, 0, b's'],
        ),
        (
            "valid query then z",
            vec![],
            [query("select 1"), msg(b'z', b"")].concat(),
        ),
        (
            "transaction then NUL type",
            query("begin; select 1"),
            [query("select 2"), msg(0, b"")].concat(),
        ),
    ];
    // Three rounds, so the attacks overlap the bystanders' queries on the two servers.
    for (name, before, bad) in cases.iter().chain(&cases).chain(&cases) {
        let mut s = raw_login(proxy.addr).await;
        if !before.is_empty() {
            s.write_all(before).await.expect("write");
            read_until_ready(&mut s).await;
        }
        s.write_all(bad).await.expect("write");
        assert_eq!(
            error_then_close(&mut s).await.as_deref(),
            Some("08P01"),
            "{name}: 08P01 then close"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("bystander task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("hostile types: bystanders ok {ok}, failed {failed}");
    assert_eq!(failed, 0, "bystanders unharmed");
    assert!(ok > 20);
    assert_eq!(
        sessions_fatal(pg, &db),
        fatal_before,
        "no bad message reached Postgres (it would end the session with FATAL)"
    );
    // Every server left in the pool still answers correctly.
    let c = proxy.connect(PLAIN_USER, "unused", "app").await;
    for _ in 0..4 {
        let r = c
            .query_one("select 41 + 1", &[])
            .await
            .expect("pool healthy");
        assert_eq!(r.get::<_, i32>(0), 42);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_messages_are_accepted_during_copy_in_pipelined_or_after_the_server_aborted_it() {
    let pg = PgServer::shared();
    let db = pg.create_database("hostile_copy");
    pg.admin_sql_in(
        &db,
        &format!("create table t(id int); grant all on t to {SCRAM_USER}"),
    );
    let proxy = proxy_for(&db, 1, "").await;
    let mut s = raw_login(proxy.addr).await;
    s.write_all(&query("copy t from stdin"))
        .await
        .expect("write");
    assert_eq!(read_msg(&mut s).await.expect("reply").0, b'G');
    // A bad row: the server aborts the COPY at once and ignores the rest of the stream.
    s.write_all(&msg(b'd', b"x\n")).await.expect("write");
    let (tag, body) = read_msg(&mut s).await.expect("error");
    assert_eq!((tag, code_of(&body).as_str()), (b'E', "22P02"));
    assert_eq!(read_msg(&mut s).await.expect("ready").0, b'Z');
    // The client had not seen the error yet: its remaining data and CopyDone are allowed.
    s.write_all(&[msg(b'd', b"2\n"), msg(b'c', b"")].concat())
        .await
        .expect("write");
    s.write_all(&query("select 7")).await.expect("write");
    let reply = read_until_ready(&mut s).await;
    assert!(
        reply.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"7")),
        "the session goes on: {reply:?}"
    );
    // Copy data pipelined behind the Query, before CopyInResponse (as asyncpg sends it).
    let pipelined = [
        query("copy t from stdin"),
        msg(b'd', b"4\n5\n"),
        msg(b'c', b""),
    ]
    .concat();
    s.write_all(&pipelined).await.expect("write");
    let reply = read_until_ready(&mut s).await;
    assert!(
        reply
            .iter()
            .any(|(t, b)| *t == b'C' && b.starts_with(b"COPY 2")),
        "{reply:?}"
    );
    // The same behind a Query that starts no COPY: Postgres ignores the strays.
    let stray = [query("select 8"), msg(b'd', b"6\n"), msg(b'c', b"")].concat();
    s.write_all(&stray).await.expect("write");
    let reply = read_until_ready(&mut s).await;
    assert!(reply.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"8")));
    s.write_all(&query("select count(*) from t"))
        .await
        .expect("write");
    let reply = read_until_ready(&mut s).await;
    assert!(
        reply.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"2")),
        "only the COPY's rows: {reply:?}"
    );
    // Once the COPY is over and everything answered, CopyData is refused.
    s.write_all(&msg(b'd', b"3\n")).await.expect("write");
    assert_eq!(error_then_close(&mut s).await.as_deref(), Some("08P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_pipelined_syncs_never_read_are_back_pressured_not_buffered() {
    let pg = PgServer::shared();
    let db = pg.create_database("hostile_syncs");
    let pgfunnel = binary_for(&db, 1, "");
    let s = raw_login(pgfunnel.addr()).await;
    let (mut rd, mut wr) = s.into_split();
    let chunk: Vec<u8> = msg(b'S', b"").repeat(64 * 1024 / 5);
    let total_syncs = 2_000_000usize;
    let rss_before = pgfunnel.rss_kib();
    let mut rss_peak = rss_before;
    let mut written = 0usize;
    let started = Instant::now();
    // Write without reading, for at most 4 s (the proxy stops reading long before).
    while written < total_syncs * 5 && started.elapsed() < Duration::from_secs(4) {
        let from = written % chunk.len();
        match tokio::time::timeout(Duration::from_millis(200), wr.write(&chunk[from..])).await {
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => panic!("the proxy must not drop the client: {e}"),
            Err(_) => {}
        }
        rss_peak = rss_peak.max(pgfunnel.rss_kib());
    }
    let syncs = written.div_ceil(5);
    eprintln!(
        "pipelined syncs: {syncs} written in {:?}; VmRSS {rss_before} -> {rss_peak} KiB",
        started.elapsed()
    );
    assert!(syncs > 20_000, "the attack sent a real pipeline ({syncs})");
    // The child holds only this client: a few MiB of socket and pipeline state at most.
    assert!(
        rss_peak.saturating_sub(rss_before) < 16 * 1024,
        "memory bounded while the client does not read: {rss_before} -> {rss_peak} KiB"
    );
    // Now read: every Sync is answered, the connection is fine.
    let reader = tokio::spawn(async move {
        let mut seen = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        let needle = msg(b'Z', b"I");
        let mut rows = 0;
        while seen < syncs + 1 {
            let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf))
                .await
                .expect("answers keep coming")
                .expect("read");
            assert!(n > 0, "connection closed after {seen} answers");
            tail.extend_from_slice(&buf[..n]);
            let mut i = 0;
            while i + 5 <= tail.len() {
                let len = u32::from_be_bytes([tail[i + 1], tail[i + 2], tail[i + 3], tail[i + 4]])
                    as usize;
                if i + 1 + len > tail.len() {
                    break;
                }
                if tail[i..i + 1 + len] == needle[..] {
                    seen += 1;
                } else if tail[i] == b'D' {
                    rows += 1;
                } else {
                    assert_ne!(tail[i], b'E', "no error for a pipeline the client reads");
                }
                i += 1 + len;
            }
            tail.drain(..i);
        }
        (seen, rows)
    });
    let rest = written % 5;
    if rest != 0 {
        wr.write_all(&msg(b'S', b"")[rest..])
            .await
            .expect("finish the last Sync");
    }
    wr.write_all(&query("select 1")).await.expect("write");
    let (seen, rows) = reader.await.expect("reader");
    assert_eq!((seen, rows), (syncs + 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_larger_than_the_gather_limit_gets_54000_and_client_stays() {
    let pg = PgServer::shared();
    let db = pg.create_database("hostile_parse");
    let pgfunnel = binary_for(&db, 1, "max_prepared_message_size = 1048576");
    let c = pgfunnel
        .connect(PLAIN_USER, "unused", "app")
        .await
        .expect("connect");
    let big = format!("select '{}'", "x".repeat(2 * 1024 * 1024));
    let e = c.prepare(&big).await.expect_err("refused");
    assert_eq!(sqlstate(&e), "54000", "{e:?}");
    assert!(message(&e).contains("max_prepared_message_size"), "{e:?}");
    let small = format!("select length('{}')", "x".repeat(512 * 1024));
    let r = c
        .query_one(&small, &[])
        .await
        .expect("the client stays connected");
    assert_eq!(r.get::<_, i32>(0), 512 * 1024);
    // A Bind far over the limit streams through with its statement name rewritten.
    let param = "y".repeat(8 * 1024 * 1024);
    let r = c
        .query_one("select length($1::text)", &[&param])
        .await
        .expect("a large Bind is not gathered, so not limited");
    assert_eq!(r.get::<_, i32>(0), 8 * 1024 * 1024);

    // A Parse that claims 900 MB: the proxy drops its bytes as they come, holds none.
    let mut s = raw_login(pgfunnel.addr()).await;
    let claimed: u32 = 900 * 1024 * 1024;
    let mut head = vec![b'P'];
    head.extend_from_slice(&claimed.to_be_bytes());
    head.extend_from_slice(b"big\0");
    s.write_all(&head).await.expect("write");
    let rss_before = pgfunnel.rss_kib();
    let mut rss_peak = rss_before;
    let junk = vec![b'x'; 1024 * 1024];
    for _ in 0..64 {
        s.write_all(&junk).await.expect("the proxy keeps reading");
        rss_peak = rss_peak.max(pgfunnel.rss_kib());
    }
    eprintln!("900 MB Parse: 64 MB sent; VmRSS {rss_before} -> {rss_peak} KiB");
    // Gathering would hold the 64 MB sent; the child holds only this test's two clients.
    assert!(
        rss_peak.saturating_sub(rss_before) < 16 * 1024,
        "the message is not gathered: {rss_before} -> {rss_peak} KiB"
    );
    let (tag, body) = read_msg(&mut s).await.expect("an error, not a close");
    assert_eq!((tag, code_of(&body).as_str()), (b'E', "54000"));
}
