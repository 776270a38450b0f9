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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_login_in_one_frame_gets_the_exact_reply_sequence() {
    let (_proxy, addr) = edge_proxy("auth_type = scram-sha-256").await;
    let mut ws = ws_connect(addr, "/v2").await;
    let burst = pipelined_burst(PLAIN_USER, PLAIN_PASSWORD, "SELECT 40 + 2");
    ws.send(Message::Binary(burst.into())).await.expect("send");
    let msgs = read_messages(&mut ws, |m| ready_count(m) == 2).await;
    let kinds: Vec<u8> = msgs.iter().map(|(t, _)| *t).collect();
    assert_eq!(msgs[0].0, b'R');
    assert_eq!(auth_code(&msgs[0].1), 3, "asked for the cleartext password");
    assert_eq!(msgs[1].0, b'R');
    assert_eq!(auth_code(&msgs[1].1), 0, "AuthenticationOk");
    let first_ready = kinds.iter().position(|&t| t == b'Z').expect("ready");
    assert!(
        kinds[2..first_ready - 1].iter().all(|&t| t == b'S'),
        "{kinds:?}"
    );
    assert_eq!(kinds[first_ready - 1], b'K');
    assert_eq!(
        &kinds[first_ready + 1..],
        b"TDCZ",
        "then the buffered query, once"
    );
    let row = &msgs[first_ready + 2].1;
    assert_eq!(&row[row.len() - 2..], b"42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_wrong_password_is_refused_with_28p01() {
    let (_proxy, addr) = edge_proxy("auth_type = scram-sha-256").await;
    let mut ws = ws_connect(addr, "/v1").await;
    let burst = pipelined_burst(PLAIN_USER, "wrong", "SELECT 1");
    ws.send(Message::Binary(burst.into())).await.expect("send");
    let msgs = read_messages(&mut ws, |m| m.iter().any(|(t, _)| *t == b'E')).await;
    let err = &msgs.last().expect("error").1;
    assert!(String::from_utf8_lossy(err).contains("C28P01"), "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_split_across_frames_and_an_ssl_request_answered_n() {
    let (_proxy, addr) = edge_proxy("auth_type = plain").await;
    let mut ws = ws_connect(addr, "/v2").await;
    // SSLRequest: 8 bytes, code 80877103.
    let mut ssl = 8i32.to_be_bytes().to_vec();
    ssl.extend_from_slice(&80877103i32.to_be_bytes());
    ws.send(Message::Binary(ssl.into())).await.expect("send");
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time");
    assert_eq!(
        reply.expect("open").expect("frame"),
        Message::Binary(b"N".to_vec().into())
    );
    // The startup message byte by byte, in separate frames.
    for b in startup_message(&[("user", PLAIN_USER), ("database", "app")], 3 << 16) {
        ws.send(Message::Binary(vec![b].into()))
            .await
            .expect("send");
    }
    let msgs = read_messages(&mut ws, |m| !m.is_empty()).await;
    assert_eq!(auth_code(&msgs[0].1), 3);
    let mut rest = message(b'p', &cstr(PLAIN_PASSWORD));
    rest.extend(message(b'Q', &cstr("SELECT 1; SELECT 2")));
    ws.send(Message::Binary(rest.into())).await.expect("send");
    let msgs = read_messages(&mut ws, |m| ready_count(m) == 2).await;
    let rows = msgs.iter().filter(|(t, _)| *t == b'D').count();
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_closes_the_socket_with_1003() {
    let (_proxy, addr) = edge_proxy("").await;
    let mut ws = ws_connect(addr, "/v2").await;
    ws.send(Message::Text("SELECT 1".into()))
        .await
        .expect("send");
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
            .expect("open")
            .expect("frame");
        if let Message::Close(Some(c)) = frame {
            assert_eq!(c.code, CloseCode::Unsupported);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_a_bad_upgrade_gets_400() {
    let (_proxy, addr) = edge_proxy("").await;
    let mut ws = ws_connect(addr, "/").await;
    ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("pong in time");
    assert_eq!(
        frame.expect("open").expect("frame"),
        Message::Pong(b"hi".to_vec().into())
    );
    let (status, _, _) = http(
        addr,
        "GET",
        "/v2",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        b"",
    )
    .await;
    assert_eq!(status, 400, "no Sec-WebSocket-Key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_cleartext_work_without_pipelining_and_cancel_works() {
    for auth_type in ["scram-sha-256", "md5", "plain"] {
        let (proxy, addr) = edge_proxy(&format!("auth_type = {auth_type}")).await;
        let c = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
            .await
            .expect(auth_type);
        let row = c
            .query_one("SELECT $1::int + 1", &[&41i32])
            .await
            .expect("query");
        assert_eq!(row.get::<_, i32>(0), 42);
        let e = pg_over_ws(addr, PLAIN_USER, "wrong")
            .await
            .expect_err("wrong");
        assert_eq!(sqlstate(&e), "28P01", "{auth_type}");
        if auth_type == "plain" {
            // A CancelRequest as the first message of another WebSocket cancels.
            let token = c.cancel_token();
            let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let ws = ws_connect(addr, "/v2").await;
            let (ours, theirs) = tokio::io::duplex(4096);
            tokio::spawn(pgfunnel::edge::websocket::pump(ws, ours));
            token
                .cancel_query_raw(theirs, tokio_postgres::NoTls)
                .await
                .expect("cancel sent");
            let result = tokio::time::timeout(WAIT, sleeper)
                .await
                .expect("ends")
                .expect("task");
            assert_eq!(sqlstate(&result.expect_err("cancelled")), "57014");
        }
        drop(proxy);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http_returns_fields_rows_and_typed_values() {
    let (_proxy, addr) = edge_proxy("auth_type = scram-sha-256").await;
    let q = json!({"query": "SELECT $1::int AS n, $2::text AS t, NULL::int AS z, true AS b, '{\"a\":1}'::jsonb AS j, '\\x00ff'::bytea AS y", "params": [7, "hi"]});
    let (status, v) = sql(addr, &[], &q).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["command"], "SELECT");
    assert_eq!(v["rowCount"], 1);
    assert_eq!(v["rowAsArray"], false);
    assert_eq!(v["fields"][0]["name"], "n");
    assert_eq!(v["fields"][0]["dataTypeID"], 23);
    assert_eq!(v["fields"][4]["dataTypeID"], 3802);
    assert_eq!(
        v["rows"][0],
        json!({"n": 7, "t": "hi", "z": null, "b": true, "j": {"a": 1}, "y": "\\x00ff"})
    );
    // As the driver asks: arrays of Postgres text.
    let flags = [
        ("Neon-Raw-Text-Output", "true"),
        ("Neon-Array-Mode", "true"),
    ];
    let (status, v) = sql(addr, &flags, &q).await;
    assert_eq!(status, 200);
    assert_eq!(v["rowAsArray"], true);
    assert_eq!(
        v["rows"][0],
        json!(["7", "hi", null, "t", "{\"a\": 1}", "\\x00ff"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_batches_commit_together_and_roll_back_on_a_failing_member() {
    let (_proxy, addr) = edge_proxy("").await;
    let table = unique_name("edge_batch");
    let (status, v) = sql(
        addr,
        &[],
        &json!({"query": format!("CREATE TABLE {table} (id int primary key)")}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let insert =
        |id: i32| json!({"query": format!("INSERT INTO {table} VALUES ($1)"), "params": [id]});
    let iso = [
        ("Neon-Batch-Isolation-Level", "Serializable"),
        ("Neon-Batch-Read-Only", "false"),
    ];
    let (status, v) = sql(addr, &iso, &json!({"queries": [insert(1), insert(2)]})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][1]["command"], "INSERT");
    assert_eq!(v["results"][1]["rowCount"], 1);
    // The third member fails: the whole batch is rolled back.
    let (status, v) = sql(
        addr,
        &[],
        &json!({"queries": [insert(3), insert(4), insert(1)]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "23505");
    assert_eq!(v["constraint"], format!("{table}_pkey"));
    let count = json!({"query": format!("SELECT count(*)::int AS c FROM {table}")});
    let (_, v) = sql(addr, &[], &count).await;
    assert_eq!(v["rows"][0]["c"], 2);
    // A read-only batch refuses writes.
    let ro = [("Neon-Batch-Read-Only", "true")];
    let (status, v) = sql(addr, &ro, &json!({"queries": [insert(9)]})).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("25006")));
    let (status, _) = sql(addr, &[], &json!({"query": format!("DROP TABLE {table}")})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_are_json_with_sqlstate_and_limits_give_413_and_507() {
    let (_proxy, addr) =
        edge_proxy("edge_max_request_size = 2000\nedge_max_response_size = 5000").await;
    let (status, v) = sql(addr, &[], &json!({"query": "SELECT * FROM no_such_table"})).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("42P01")));
    assert_eq!(v["position"], "15");
    assert_eq!(v["severity"], "ERROR");
    let cs = conn_string(PLAIN_USER, "wrong");
    let body = br#"{"query":"SELECT 1"}"#;
    let (status, _, text) = post_as(addr, &cs, body).await;
    assert_eq!(status, 400);
    assert!(text.contains("28P01"), "{text}");
    let cs = conn_string("nobody", "wrong");
    let (_, _, unknown) = post_as(addr, &cs, body).await;
    assert_eq!(
        unknown.replace("nobody", PLAIN_USER),
        text,
        "unknown users look the same"
    );
    let (status, _, text) = http(addr, "POST", "/sql", &[], body).await;
    assert_eq!(status, 400);
    assert!(text.contains("Neon-Connection-String"), "{text}");
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let (status, _, text) = post_as(addr, &cs, b"{not json").await;
    assert_eq!(status, 400);
    assert!(text.contains("08P01"), "{text}");
    let big = json!({"query": format!("SELECT '{}'", "x".repeat(3000))});
    let (status, _) = sql(addr, &[], &big).await;
    assert_eq!(status, 413);
    let (status, v) = sql(
        addr,
        &[],
        &json!({"query": "SELECT repeat('y', 100) FROM generate_series(1, 100)"}),
    )
    .await;
    assert_eq!(status, 507, "{v}");
    // The server went back in a usable state.
    let (status, v) = sql(addr, &[], &json!({"query": "SELECT 1 AS one"})).await;
    assert_eq!((status, &v["rows"][0]["one"]), (200, &json!(1)));
    let (status, headers, _) = http(addr, "OPTIONS", "/sql", &[("Origin", "https://x")], b"").await;
    assert_eq!(status, 204);
    let has = |k: &str| headers.iter().any(|(n, _)| n == k);
    assert!(has("access-control-allow-origin") && has("access-control-allow-headers"));
    let (status, _, _) = http(addr, "GET", "/nothing", &[], b"").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_query_gets_its_query_cancelled() {
    let (proxy, addr) = edge_proxy("").await;
    let marker = unique_name("edge_gone");
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let body = json!({"query": format!("SELECT pg_sleep(60), '{marker}'")}).to_string();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /sql HTTP/1.1\r\nHost: x\r\nNeon-Connection-String: {cs}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let observer = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let running = format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()");
    let deadline = tokio::time::Instant::now() + WAIT;
    while observer
        .query_one(&running, &[])
        .await
        .expect("q")
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "query never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    while observer
        .query_one(&running, &[])
        .await
        .expect("q")
        .get::<_, i64>(0)
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "query still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_clients_are_counted_in_metrics_and_max_client_conn() {
    let (proxy, addr) = edge_proxy("max_client_conn = 1").await;
    let held = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
        .await
        .expect("first");
    let e = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
        .await
        .expect_err("second");
    assert_eq!(sqlstate(&e), "53300");
    drop(held);
    let (status, _) = sql(addr, &[], &json!({"query": "SELECT 1"})).await;
    assert_eq!(status, 200);
    let app = &proxy.running.as_ref().expect("running").app;
    let text = app.metrics.render(app);
    assert!(
        text.contains("pgfunnel_edge_requests_total{status=\"200\",transport=\"http\"} 1"),
        "{text}"
    );
    assert!(text.contains("pgfunnel_edge_websockets_total{transport=\"websocket\"} 2"));
    assert!(text.contains("pgfunnel_edge_request_duration_seconds_count{transport=\"http\"} 1"));
}

/// Neon's serverless driver (`neon()` over HTTP, `Pool`/`Client` over WebSocket, pipelined
/// and not) on Node against this pgfunnel; skipped with one line when its packages are not
/// installed (tests/drivers/setup.sh node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neon_serverless_driver_works_over_http_and_websocket() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/node");
    if !dir.join("node_modules/@neondatabase/serverless").is_dir() {
        println!("skipped: @neondatabase/serverless not installed (tests/drivers/setup.sh node)");
        return;
    }
    let (_proxy, addr) = edge_proxy("auth_type = scram-sha-256").await;
    let out = tokio::process::Command::new("node")
        .arg("neon_suite.mjs")
        .current_dir(&dir)
        .env("EDGE_ADDR", addr.to_string())
        .env("EDGE_USER", PLAIN_USER)
        .env("EDGE_PASSWORD", PLAIN_PASSWORD)
        .env("EDGE_TABLE", unique_name("neon"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("node finished")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("NEON OK"),
        "driver failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_use_the_client_tls_files() {
    let pki = crate::tls::Pki::new();
    let (_proxy, addr) = edge_proxy(&format!(
        "auth_type = plain\n{}",
        pki.client_tls_lines("require")
    ))
    .await;
    // https: POST /sql over HTTP/1.1.
    let mut s = tls_connect(addr, &pki, b"http/1.1").await;
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let body = r#"{"query":"SELECT 'tls' AS via"}"#;
    let req = format!(
        "POST /sql HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nNeon-Connection-String: {cs}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer");
    let (status, _, text) = parse_response(&out);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""via":"tls""#), "{text}");
    // wss: the Postgres protocol inside, an SSLRequest answered N.
    let tls = tls_connect(addr, &pki, b"http/1.1").await;
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/v2", tls)
        .await
        .expect("upgrade");
    let mut ssl = 8i32.to_be_bytes().to_vec();
    ssl.extend_from_slice(&80877103i32.to_be_bytes());
    ssl.extend(startup_message(
        &[("user", PLAIN_USER), ("database", "app")],
        3 << 16,
    ));
    ws.send(Message::Binary(ssl.into())).await.expect("send");
    let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("reply");
    let Message::Binary(bytes) = frame.expect("open").expect("frame") else {
        panic!("binary reply expected");
    };
    assert_eq!(bytes[0], b'N', "SSLRequest inside wss is answered N");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_websockets_leave_nothing_behind_when_closed() {
    let (proxy, addr) = edge_proxy("").await;
    let app = proxy.running.as_ref().expect("running").app.clone();
    let startup = startup_message(&[("user", PLAIN_USER), ("database", "app")], 3 << 16);
    let mut sockets = Vec::new();
    for i in 0..100 {
        let mut ws = ws_connect(addr, "/v2").await;
        if i % 2 == 0 {
            // Half a StartupMessage, then nothing.
            let half = startup[..startup.len() / 2].to_vec();
            ws.send(Message::Binary(half.into())).await.expect("send");
        }
        sockets.push(ws);
    }
    wait_clients(&app, 100).await;
    drop(sockets);
    wait_clients(&app, 0).await;
    // The frame pumps end a little after their sessions.
    let closed = "pgfunnel_edge_websockets_open{transport=\"websocket\"} 0";
    let deadline = tokio::time::Instant::now() + WAIT;
    while !app.metrics.render(&app).contains(closed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "WebSockets still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving.
    let c = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
        .await
        .expect("connect");
    c.simple_query("SELECT 1").await.expect("query");
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

/// Throughput of `SELECT 1` round trips: `/sql` requests on one kept-alive connection,
/// WebSocket round trips and TCP round trips, one client each, in one run. Prints the
/// rates; run with `cargo test --release --test it edge_round_trips -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn edge_round_trips_next_to_tcp() {
    const N: usize = 2000;
    let (proxy, addr) = edge_proxy("auth_type = plain").await;
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let head = format!("POST /sql HTTP/1.1\r\nHost: x\r\nNeon-Connection-String: {cs}\r\nNeon-Raw-Text-Output: true\r\nNeon-Array-Mode: true\r\n");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let body = r#"{"query":"SELECT 1","params":[]}"#;
    keep_alive_post(&mut s, &head, body).await;
    let t = std::time::Instant::now();
    for _ in 0..N {
        let r = keep_alive_post(&mut s, &head, body).await;
        assert!(r.contains("\"rows\":[[\"1\"]]"), "{r}");
    }
    let http = N as f64 / t.elapsed().as_secs_f64();
    let ws = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
        .await
        .expect("ws");
    let tcp = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let mut rates = Vec::new();
    for c in [&ws, &tcp] {
        c.simple_query("SELECT 1").await.expect("warm");
        let t = std::time::Instant::now();
        for _ in 0..N {
            c.simple_query("SELECT 1").await.expect("query");
        }
        rates.push(N as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "SELECT 1 round trips per second, one client: /sql {http:.0}, WebSocket {:.0}, TCP {:.0}",
        rates[0], rates[1]
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Memory of idle WebSockets (upgraded, nothing sent): opens `EDGE_IDLE` (default 2000)
/// with raw upgrade requests (no WebSocket state on the test side) and prints the RSS
/// growth per socket. `max_client_conn` is raised so none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn idle_websocket_memory() {
    let n: usize = std::env::var("EDGE_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (proxy, addr) = edge_proxy("max_client_conn = 20000\nclient_login_timeout = 600").await;
    let app = proxy.running.as_ref().expect("running").app.clone();
    let before = rss_kib();
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .expect("send");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("101");
        assert_eq!(&head, b"HTTP/1.1 101");
        sockets.push(s);
    }
    wait_clients(&app, n).await;
    let after = rss_kib();
    println!(
        "{n} idle WebSockets: RSS {before} KiB -> {after} KiB, {:.1} KiB each",
        (after.saturating_sub(before)) as f64 / n as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_secret_checks_pipelined_and_http_passwords_and_drives_pass_through() {
    let pg = PgServer::shared();
    let role = pg.create_role("edge_pt", "edge_pt_pw");
    let secret = pg.admin_sql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ));
    assert!(secret.starts_with("SCRAM-SHA-256$"));
    // No forced user: the pool logs in as the role with the key the client proved.
    let text = ini(
        &db_line("app", "app", ""),
        "edge_listen = 127.0.0.1:0\nauth_type = scram-sha-256",
    );
    let proxy = Proxy::start(&text, &format!("\"{role}\" \"{secret}\"\n")).await;
    let addr = proxy
        .running
        .as_ref()
        .and_then(|r| r.edge_addr)
        .expect("edge");
    let mut ws = ws_connect(addr, "/v2").await;
    let burst = pipelined_burst(&role, "edge_pt_pw", "SELECT current_user");
    ws.send(Message::Binary(burst.into())).await.expect("send");
    let msgs = read_messages(&mut ws, |m| ready_count(m) == 2).await;
    let row = &msgs.iter().find(|(t, _)| *t == b'D').expect("row").1;
    assert!(row.ends_with(role.as_bytes()), "{msgs:?}");
    let cs = format!("postgres://{role}:edge_pt_pw@h/app");
    let (status, _, text) = post_as(addr, &cs, br#"{"query":"SELECT current_user AS u"}"#).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("\"u\":\"{role}\"")), "{text}");
    let cs = format!("postgres://{role}:nope@h/app");
    let (status, _, text) = post_as(addr, &cs, br#"{"query":"SELECT 1"}"#).await;
    assert_eq!(status, 400);
    assert!(text.contains("28P01"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_trust_a_pipelined_password_is_read_and_the_query_served() {
    let (_proxy, addr) = edge_proxy("auth_type = trust").await;
    let mut ws = ws_connect(addr, "/v2").await;
    let burst = pipelined_burst(PLAIN_USER, "anything", "SELECT 7");
    ws.send(Message::Binary(burst.into())).await.expect("send");
    let msgs = read_messages(&mut ws, |m| ready_count(m) == 2).await;
    assert_eq!(auth_code(&msgs[0].1), 3);
    assert_eq!(auth_code(&msgs[1].1), 0);
    assert!(
        msgs.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"7")),
        "{msgs:?}"
    );
    // Over HTTP no password is needed either.
    let cs = format!("postgres://{PLAIN_USER}@h/app");
    let (status, _, text) = post_as(addr, &cs, br#"{"query":"SELECT 1"}"#).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http2_with_prior_knowledge() {
    let (_proxy, addr) = edge_proxy("").await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("http://{addr}/sql"))
        .header(
            "Neon-Connection-String",
            conn_string(PLAIN_USER, PLAIN_PASSWORD),
        )
        .body(())
        .expect("request");
    let (resp, mut body) = client.send_request(req, false).expect("send");
    body.send_data(br#"{"query":"SELECT 2 AS two"}"#.to_vec().into(), true)
        .expect("body");
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let mut data = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = data.data().await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    let v: Value = serde_json::from_slice(&text).expect("json");
    assert_eq!(v["rows"][0]["two"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_requests_wait_for_a_server_and_time_out_like_clients() {
    let (proxy, addr) = edge_proxy("default_pool_size = 1\nquery_wait_timeout = 1").await;
    // A session-mode client holds the only server.
    let holder = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    holder.simple_query("SELECT 1").await.expect("query");
    let (status, v) = sql(addr, &[], &json!({"query": "SELECT 1"})).await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "08P01");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("query_wait_timeout")),
        "{v}"
    );
    drop(holder);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = sql(addr, &[], &json!({"query": "SELECT 1"})).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "server never freed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_sees_edge_clients_as_host_with_their_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        "host all plain_user 127.0.0.1/32 password\n\
         hostssl all all all md5\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .expect("write hba");
    let (_proxy, addr) = edge_proxy(&format!(
        "auth_type = hba\nauth_hba_file = {}",
        hba.display()
    ))
    .await;
    let c = pg_over_ws(addr, PLAIN_USER, PLAIN_PASSWORD)
        .await
        .expect("password rule");
    c.simple_query("SELECT 1").await.expect("query");
    let e = pg_over_ws(addr, MD5_USER, MD5_PASSWORD)
        .await
        .expect_err("not hostssl");
    assert_eq!(sqlstate(&e), "28000");
    let (status, v) = sql(addr, &[], &json!({"query": "SELECT 1"})).await;
    assert_eq!(status, 200, "{v}");
    let cs = conn_string(MD5_USER, MD5_PASSWORD);
    let (status, _, text) = post_as(addr, &cs, br#"{"query":"SELECT 1"}"#).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("28000") && text.contains("no pg_hba.conf entry"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_mode_serves_sql_over_http_with_edge_listen_flag() {
    let pg = PgServer::shared();
    let (port, edge_port) = (free_port(), free_port());
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/app",
        pg.port()
    );
    let edge = format!("127.0.0.1:{edge_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .args(["serve", "--upstream", &url, "--port", &port.to_string()])
        .args(["--edge-listen", &edge])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let addr: SocketAddr = edge.parse().expect("addr");
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edge listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cs = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@anywhere/app");
    let (status, _, text) = post_as(addr, &cs, br#"{"query":"SELECT 9 AS nine"}"#).await;
    let _ = child.kill().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""nine":9"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_bodies_meet_a_deadline() {
    let (proxy, addr) = edge_proxy("client_login_timeout = 1").await;
    // A body that never arrives: 408 with the JSON error.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let cs = conn_string(PLAIN_USER, PLAIN_PASSWORD);
    let head = format!("POST /sql HTTP/1.1\r\nHost: x\r\nNeon-Connection-String: {cs}\r\nContent-Length: 100\r\n\r\n{{\"query\"");
    s.write_all(head.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answered");
    let (status, _, text) = parse_response(&out);
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("08P01"), "{text}");
    // A head that never ends: the connection is closed.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /sql HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "slow head still open");
    // A connection that sends nothing, and one kept alive after an answer, are closed too.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let closed = tokio::time::timeout(WAIT, silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "silent connection still open");
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    let head = format!("POST /sql HTTP/1.1\r\nHost: x\r\nNeon-Connection-String: {cs}\r\n");
    keep_alive_post(&mut kept, &head, r#"{"query":"SELECT 1"}"#).await;
    let closed = tokio::time::timeout(WAIT, kept.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "idle kept-alive connection still open");
    let app = &proxy.running.as_ref().expect("running").app;
    assert_eq!(
        app.client_count.load(std::sync::atomic::Ordering::Acquire),
        0
    );
}
