//! What the edge listener shares with TCP clients and the rest: metrics and max_client_conn,
//! HBA, TLS, URL mode, Neon's driver on Node, and measurements (ignored tests).

use super::*;

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
    let app = &proxy.running.as_ref().expect("running").app;
    // The held WebSocket client; the refused one may still be on its way out, so wait
    // (bounded) until it has gone.
    let transports =
        || -> Vec<&'static str> { app.clients.list().iter().map(|c| c.transport()).collect() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while transports().len() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(transports(), ["websocket"], "SHOW CLIENTS transport column");
    drop(held);
    let (status, _) = sql(addr, &[], &json!({"query": "SELECT 1"})).await;
    assert_eq!(status, 200);
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
