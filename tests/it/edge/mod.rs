//! The edge listener (`edge_listen`) against a real Postgres: Postgres over WebSocket (raw
//! frames and tokio-postgres through a WebSocket), the serverless driver's pipelined
//! login, SQL over HTTP (`POST /sql`) with its errors and limits, and Neon's serverless
//! driver itself on Node (tests/drivers/node/neon_suite.mjs).

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::harness::*;
use crate::proxy::*;

mod shared;
mod sql;
mod websocket;

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<TcpStream>;

/// A pgfunnel with the edge listener on, the `app` database logging in to Postgres as
/// the SCRAM user, and `extra` config lines.
async fn edge_proxy(extra: &str) -> (Proxy, SocketAddr) {
    let dbs = db_line(
        "app",
        "app",
        &format!("user={SCRAM_USER} password={SCRAM_PASSWORD}"),
    );
    let text = ini(&dbs, &format!("edge_listen = 127.0.0.1:0\n{extra}"));
    let proxy = Proxy::start(&text, &userlist("")).await;
    let addr = proxy
        .running
        .as_ref()
        .and_then(|r| r.edge_addr)
        .expect("edge listener bound");
    (proxy, addr)
}

async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}{path}");
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    ws
}

/// tokio-postgres over a WebSocket (the test side pumps frames with pgfunnel's own pump).
async fn pg_over_ws(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let ws = ws_connect(addr, "/v2").await;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(pgfunnel::edge::websocket::pump(ws, ours));
    let mut config = tokio_postgres::Config::new();
    config
        .user(user)
        .password(password)
        .dbname("app")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = config.connect_raw(theirs, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Reads frames until `done` says the backend messages read so far are complete; returns
/// them as (type, body).
async fn read_messages(ws: &mut Ws, done: impl Fn(&[(u8, Vec<u8>)]) -> bool) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut out = Vec::new();
    while !done(&out) {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply in time")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Binary(b) => bytes.extend_from_slice(&b),
            Message::Close(c) => panic!("closed early: {c:?}, got {out:?}"),
            _ => continue,
        }
        while bytes.len() >= 5 {
            let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            if bytes.len() < len + 1 {
                break;
            }
            let msg: Vec<u8> = bytes.drain(..len + 1).collect();
            out.push((msg[0], msg[5..].to_vec()));
        }
    }
    out
}

/// StartupMessage, PasswordMessage and a Query in one frame, as the driver pipelines them.
fn pipelined_burst(user: &str, password: &str, sql: &str) -> Vec<u8> {
    let mut burst = startup_message(&[("user", user), ("database", "app")], 3 << 16);
    burst.extend(message(b'p', &cstr(password)));
    burst.extend(message(b'Q', &cstr(sql)));
    burst
}

fn ready_count(msgs: &[(u8, Vec<u8>)]) -> usize {
    msgs.iter().filter(|(t, _)| *t == b'Z').count()
}

fn auth_code(body: &[u8]) -> i32 {
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// A small HTTP/1.1 client: returns status, lower-cased headers and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    parse_response(&out)
}

fn parse_response(out: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .expect("status line")
        .split(' ')
        .nth(1)
        .expect("code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status.parse().expect("status"), headers, body.to_owned())
}

/// `POST /sql` with connection string `cs`.
async fn post_as(addr: SocketAddr, cs: &str, body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    http(
        addr,
        "POST",
        "/sql",
        &[("Neon-Connection-String", cs)],
        body,
    )
    .await
}

fn conn_string(user: &str, password: &str) -> String {
    // The host is never dialled: an address nobody listens on proves it.
    format!("postgres://{user}:{password}@192.0.2.1:1/app")
}

async fn sql(addr: SocketAddr, extra: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let mut headers = vec![("Neon-Connection-String", cs.as_str())];
    headers.extend_from_slice(extra);
    let (status, _, text) = http(addr, "POST", "/sql", &headers, body.to_string().as_bytes()).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    (status, value)
}

/// A TLS connection to the edge listener trusting the test CA, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    pki: &crate::tls::Pki,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let ca = pki.ca.pem();
    let tls = crate::tls::ClientTls {
        ca_pem: Some(&ca),
        cert: None,
    };
    let mut config = crate::tls::rustls_client(&tls);
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Waits until `app`'s connected client count is `n`.
async fn wait_clients(app: &pgfunnel::app::App, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.client_count.load(std::sync::atomic::Ordering::Acquire) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients: {} (want {n})",
            app.client_count.load(std::sync::atomic::Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a kept-alive HTTP/1.1 connection; returns the body.
async fn keep_alive_post(s: &mut TcpStream, head: &str, body: &str) -> String {
    s.write_all(format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .await
        .expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((h, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("len"))
                })
                .expect("content-length");
            if rest.len() >= len {
                return rest.to_owned();
            }
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
