//! Floods and hostile peers: a burst of connections far beyond max_client_conn (the
//! excess refused fast with 53300, the admitted served), slowloris clients cut off by
//! client_login_timeout while others keep their latency, oversized packets before
//! authentication, and a fake server demanding a huge SCRAM iteration count. Resident
//! memory stays within a generous bound: the test process's for the burst (the proxy runs
//! in-process there), the binary's own (a child process) for the oversized packets.
//!
//! `PGFUNNEL_FLOOD_CONNECTIONS` sets the burst size (default 2000; 20000 for the manual
//! run documented in the README).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;
use crate::proxy::*;
use crate::signals::Binary;

fn startup_packet(user: &str, db: &str) -> Vec<u8> {
    crate::proxy::startup_message(&[("user", user), ("database", db)], 3 << 16)
}

/// Reads until the proxy closes (bounded) and returns what it sent and how long it took.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .expect("proxy closes the connection in time")
        .ok();
    (out, started.elapsed())
}

fn has_sqlstate(bytes: &[u8], code: &str) -> bool {
    bytes.first() == Some(&b'E')
        && bytes
            .windows(6)
            .any(|w| w[0] == b'C' && &w[1..] == code.as_bytes())
}

fn forced() -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=10")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_burst_beyond_max_client_conn_is_refused_fast_and_admitted_are_served() {
    let attempts: usize = std::env::var("PGFUNNEL_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let max_clients = 200;
    PgServer::shared();
    let extra =
        format!("max_client_conn = {max_clients}\nquery_wait_timeout = 60\nauth_type = trust");
    let proxy = Proxy::simple(&forced(), &extra).await;
    let rss_before = vm_rss_kib();
    let (admitted, refused, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slowest_refusal = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    // Admitted clients hold their connection until the whole burst is over.
    let (release, released) = tokio::sync::watch::channel(false);
    let conn_str = proxy.conn_str(PLAIN_USER, "unused", "app");
    let started = Instant::now();
    let tasks = (0..attempts).map(|_| {
        let (conn_str, admitted, refused, other, slowest) = (
            conn_str.clone(),
            admitted.clone(),
            refused.clone(),
            other.clone(),
            slowest_refusal.clone(),
        );
        let mut released = released.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    let conn = tokio::spawn(conn);
                    let ok = client.simple_query("select 1").await.is_ok();
                    if ok {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = released.wait_for(|r| *r).await;
                    drop(client);
                    let _ = conn.await;
                }
                Err(e) if sqlstate(&e) == "53300" => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let took = t.elapsed();
                    let mut s = slowest.lock().expect("lock");
                    *s = (*s).max(took);
                }
                Err(e) => {
                    eprintln!("flood: unexpected connect error {e}");
                    other.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    let tasks: Vec<_> = tasks.collect();
    wait_until_async(Duration::from_secs(120), "every attempt answered", || {
        let n = admitted.load(Ordering::Relaxed)
            + refused.load(Ordering::Relaxed)
            + other.load(Ordering::Relaxed);
        async move { n == attempts }
    })
    .await;
    let burst = started.elapsed();
    let rss_peak = vm_rss_kib();
    release.send_replace(true);
    for t in join_all(tasks).await {
        t.expect("attempt task");
    }
    let (a, r, o) = (
        admitted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    let slowest = *slowest_refusal.lock().expect("lock");
    eprintln!(
        "flood: {attempts} attempts in {burst:?}: admitted {a}, refused 53300 {r} (slowest {slowest:?}), \
         other {o}; VmRSS {rss_before} -> {rss_peak} KiB"
    );
    assert_eq!(
        o, 0,
        "every attempt was either served or refused with 53300"
    );
    assert!(a <= max_clients, "admitted {a} > max_client_conn");
    assert!(a >= max_clients / 2, "admitted clients were served ({a})");
    assert_eq!(a + r, attempts);
    assert!(
        slowest < Duration::from_secs(10),
        "refusals are fast: {slowest:?}"
    );
    // Each of the (up to) 2 x attempts sockets in this process: well under 64 KiB apiece.
    let bound = 64 * attempts as u64;
    assert!(
        rss_peak.saturating_sub(rss_before) < bound,
        "memory bounded: {rss_before} -> {rss_peak} KiB"
    );
    let app = proxy.running.as_ref().expect("running").app.clone();
    wait_until_async(Duration::from_secs(20), "every client gone", || {
        let n = app.client_count.load(Ordering::Relaxed);
        async move { n == 0 }
    })
    .await;
    let c = proxy.connect(PLAIN_USER, "unused", "app").await;
    c.simple_query("select 1")
        .await
        .expect("served after the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_at_client_login_timeout_and_others_keep_latency() {
    PgServer::shared();
    let extra = "max_client_conn = 1000\nclient_login_timeout = 1\nauth_type = trust";
    let proxy = Proxy::simple(&forced(), extra).await;
    let packet = startup_packet(PLAIN_USER, "app");
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(&packet[..packet.len() / 2])
            .await
            .expect("half a packet");
        slow.push(s);
    }
    let opened = Instant::now();
    // A well-behaved client meanwhile logs in and queries at normal speed.
    let t = Instant::now();
    let c = proxy.connect(PLAIN_USER, "unused", "app").await;
    c.simple_query("select 1").await.expect("served");
    let latency = t.elapsed();
    assert!(
        latency < Duration::from_millis(900),
        "login + query took {latency:?}"
    );
    let cut = join_all(
        slow.iter_mut()
            .map(|s| read_to_close(s, Duration::from_secs(10))),
    )
    .await;
    let slowest = opened.elapsed();
    assert!(
        slowest < Duration::from_secs(5),
        "all 300 cut off near client_login_timeout, last after {slowest:?}"
    );
    assert!(cut
        .iter()
        .all(|(_, took)| *took >= Duration::from_millis(500)));
    eprintln!("flood slowloris: 300 half-startup clients cut off within {slowest:?}; a normal client took {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packets_before_authentication_are_refused_without_buffering_them() {
    // The binary as a child process: its memory is not shared with concurrent tests.
    let pgfunnel = Binary::start_with(
        &db_line("app", "app", &forced()),
        "max_client_conn = 1000\nauth_type = plain",
    );
    let addr = pgfunnel.addr();
    let rss_before = pgfunnel.rss_kib();
    let clients = 100;
    let cases = (0..clients).map(|i| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            // A startup packet claiming 1 GiB, followed by a trickle of junk.
            s.write_all(&(1i32 << 30).to_be_bytes())
                .await
                .expect("write");
            s.write_all(&[b'x'; 1024]).await.ok();
        } else {
            // A valid startup, then a password message claiming 1 GiB.
            s.write_all(&startup_packet(PLAIN_USER, "app"))
                .await
                .expect("startup");
            let mut auth = [0u8; 9];
            s.read_exact(&mut auth).await.expect("auth request");
            assert_eq!(auth[0], b'R', "asked for a password");
            s.write_all(b"p").await.expect("write");
            s.write_all(&(1i32 << 30).to_be_bytes())
                .await
                .expect("write");
            s.write_all(&[b'x'; 1024]).await.ok();
        }
        let (reply, took) = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert!(
            has_sqlstate(&reply, "08P01"),
            "protocol violation reported: {reply:?}"
        );
        took
    });
    let took = join_all(cases).await;
    let slowest = took.iter().max().copied().unwrap_or_default();
    let rss_after = pgfunnel.rss_kib();
    eprintln!("flood oversized: {clients} clients claiming 1 GiB packets refused within {slowest:?}; VmRSS {rss_before} -> {rss_after} KiB");
    assert!(
        slowest < Duration::from_secs(2),
        "refused at once: {slowest:?}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "nothing buffered"
    );
}

/// A fake Postgres that demands SCRAM and answers the client-first-message with
/// `iterations`; returns how long pgfunnel took to give up (close the connection).
async fn hostile_scram_server(listener: TcpListener, iterations: &'static str) -> Duration {
    let (mut s, _) = listener.accept().await.expect("pgfunnel connects");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("startup length");
    let mut startup = vec![0u8; i32::from_be_bytes(len) as usize - 4];
    s.read_exact(&mut startup).await.expect("startup");
    let mut sasl = 10i32.to_be_bytes().to_vec();
    sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
    let mut m = vec![b'R'];
    m.extend_from_slice(&(sasl.len() as u32 + 4).to_be_bytes());
    m.extend(sasl);
    s.write_all(&m).await.expect("AuthenticationSASL");
    let mut header = [0u8; 5];
    s.read_exact(&mut header)
        .await
        .expect("SASLInitialResponse");
    let mut body =
        vec![0u8; u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 4];
    s.read_exact(&mut body)
        .await
        .expect("SASLInitialResponse body");
    let text = String::from_utf8_lossy(&body).into_owned();
    let nonce = text.rsplit("r=").next().expect("client nonce").to_owned();
    let mut cont = 11i32.to_be_bytes().to_vec();
    cont.extend_from_slice(
        format!("r={nonce}hostile,s=QSXCR+Q6sek8bf92,i={iterations}").as_bytes(),
    );
    let mut m = vec![b'R'];
    m.extend_from_slice(&(cont.len() as u32 + 4).to_be_bytes());
    m.extend(cont);
    s.write_all(&m).await.expect("AuthenticationSASLContinue");
    let sent = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("pgfunnel gives up instead of computing")
        .ok();
    sent.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_demanding_huge_scram_iterations_is_refused_without_cpu_burn() {
    for iterations in ["4294967295", "2000000000", "99999999999999999999"] {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake server");
        let port = listener.local_addr().expect("addr").port();
        let fake = tokio::spawn(hostile_scram_server(listener, iterations));
        let db = format!(
            "app = host=127.0.0.1 port={port} dbname=app user=victim password=secret pool_mode=transaction"
        );
        let extra = "auth_type = trust\nserver_tls_sslmode = disable\nquery_wait_timeout = 5";
        let proxy = Proxy::start(&ini(&db, extra), &userlist("")).await;
        // The first login needs a server's parameters, so the error may come at login or
        // at the first query.
        let t = Instant::now();
        let e = match proxy.try_connect(PLAIN_USER, "unused", "app").await {
            Err(e) => e,
            Ok(c) => c
                .simple_query("select 1")
                .await
                .expect_err("server login refused"),
        };
        let client_took = t.elapsed();
        let gave_up = fake.await.expect("fake server");
        eprintln!("flood scram i={iterations}: pgfunnel hung up after {gave_up:?}; client error after {client_took:?}: {}", message(&e));
        assert!(gave_up < Duration::from_secs(1), "no CPU burn: {gave_up:?}");
        assert!(
            client_took < Duration::from_secs(6),
            "client told in time: {client_took:?}"
        );
    }
}
