//! SQL over HTTP (`POST /sql`): results, batches, errors and limits, HTTP/2, waiting for a
//! server, clients that leave mid-query, slow clients.

use super::*;

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
