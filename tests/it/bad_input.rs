//! Hostile and broken clients at the byte level: each gets a Postgres error where a reply
//! is still possible, the connection closes, nothing hangs, and servers stay clean.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::proxy::*;

fn forced() -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
}

/// Reads until EOF (bounded by 10 s) and returns everything the proxy sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("proxy closes the connection in time")
        .ok();
    out
}

/// Finds the SQLSTATE (C field) of the first ErrorResponse in `bytes`.
fn error_code(bytes: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len =
            i32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]) as usize;
        if bytes[i] == b'E' {
            let body = &bytes[i + 5..(i + 1 + len).min(bytes.len())];
            let mut j = 0;
            while j < body.len() && body[j] != 0 {
                let end = body[j + 1..].iter().position(|&b| b == 0)? + j + 1;
                if body[j] == b'C' {
                    return Some(String::from_utf8_lossy(&body[j + 1..end]).into_owned());
                }
                j = end + 1;
            }
            return None;
        }
        i += 1 + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_startup_packets_get_08p01_and_close() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let cases: Vec<Vec<u8>> = vec![
        0i32.to_be_bytes().to_vec(),
        3i32.to_be_bytes().to_vec(),
        i32::MAX.to_be_bytes().to_vec(),
        (-1i32).to_be_bytes().to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        startup_message(&[("user", "x")], 2 << 16),
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(case).await.expect("write");
        let reply = read_to_close(&mut s).await;
        assert_eq!(
            error_code(&reply).as_deref(),
            Some("08P01"),
            "case {i}: {reply:?}"
        );
    }
    // the proxy still serves normal clients afterwards
    proxy
        .connect("plain_user", "plain_pass", "app")
        .await
        .simple_query("select 1")
        .await
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_refused_then_plaintext_works() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    for code in [80877103i32, 80877104] {
        let mut p = 8i32.to_be_bytes().to_vec();
        p.extend(code.to_be_bytes());
        s.write_all(&p).await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("answer");
        assert_eq!(&b, b"N");
    }
    s.write_all(&startup_message(
        &[("user", "plain_user"), ("database", "app")],
        3 << 16,
    ))
    .await
    .expect("startup");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("auth request");
    assert_eq!(b[0], b'R');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_is_negotiated_down() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup_message(
        &[
            ("user", "plain_user"),
            ("database", "app"),
            ("_pq_.extra", "1"),
        ],
        (3 << 16) | 2,
    ))
    .await
    .expect("startup");
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.expect("negotiate");
    assert_eq!(head[0], b'v');
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("body");
    assert_eq!(
        &body[..4],
        &(3i32 << 16).to_be_bytes(),
        "newest minor we speak is 3.0"
    );
    assert_eq!(&body[4..8], &1i32.to_be_bytes());
    assert_eq!(&body[8..], b"_pq_.extra\0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_startup_packet_is_cut_off_by_client_login_timeout() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "client_login_timeout = 1").await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let p = startup_message(&[("user", "plain_user")], 3 << 16);
    s.write_all(&p[..6]).await.expect("half");
    let started = std::time::Instant::now();
    let _ = read_to_close(&mut s).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the login timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_packet_size_is_a_protocol_error() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "max_packet_size = 10000").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    c.simple_query("select 1").await.expect("small query fine");
    let big = format!("select '{}'", "x".repeat(20_000));
    let e = c
        .simple_query(&big)
        .await
        .expect_err("oversized message refused");
    assert!(sqlstate(&e) == "08P01" || e.is_closed(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_copy_leaves_no_dirty_server() {
    let pg = PgServer::shared();
    let table = unique_name("copy_vanish");
    pg.admin_sql_in(
        "app",
        &format!("create table {table}(id int); grant all on {table} to {SCRAM_USER}"),
    );
    let proxy = Proxy::simple(&format!("{} pool_size=1", forced()), "").await;
    {
        let c = proxy.connect("plain_user", "plain_pass", "app").await;
        let sink = c
            .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
            .await
            .expect("copy");
        let mut sink = Box::pin(sink);
        use futures::SinkExt;
        sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
            .await
            .expect("data");
        // dropped without CopyDone: the client vanishes mid-COPY
    }
    let d = proxy.connect("plain_user", "plain_pass", "app").await;
    let n: i64 = d
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "half a COPY is never committed");
}
