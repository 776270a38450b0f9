//! Postgres over WebSocket: framing, SSLRequest, text frames, pings, the pipelined login
//! (cleartext, SCRAM secrets, trust), ordinary logins, cancel, and cleanup.

use super::*;

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
