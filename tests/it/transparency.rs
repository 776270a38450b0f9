//! What a client sees through pgfunnel is what Postgres would show it: the real backend
//! pid in session mode (pg_backend_pid, pg_terminate_backend, notifications, cancels),
//! parameter values in Postgres's spelling, and the DEALLOCATE drivers send for statements
//! they prepared through the protocol.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;
use crate::prepared::{code, Raw};
use crate::proxy::*;

fn forced(mode: &str) -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode={mode}")
}

/// Logs in as plain_user (trust) with extra startup parameters; returns the connection
/// and the login replies.
pub(crate) async fn login(proxy: &Proxy, extra: &[(&str, &str)]) -> (Raw, Vec<(u8, Vec<u8>)>) {
    let mut params = vec![("user", "plain_user"), ("database", "app")];
    params.extend_from_slice(extra);
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup_message(&params, 3 << 16))
        .await
        .expect("startup");
    let mut raw = Raw { s };
    let replies = raw.until_ready().await;
    (raw, replies)
}

pub(crate) fn backend_key(replies: &[(u8, Vec<u8>)]) -> (i32, [u8; 4]) {
    let (_, body) = replies
        .iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes(body[..4].try_into().expect("pid"));
    (pid, body[4..8].try_into().expect("secret"))
}

fn parameter(replies: &[(u8, Vec<u8>)], name: &str) -> Option<String> {
    replies
        .iter()
        .filter(|(t, _)| *t == b'S')
        .find_map(|(_, b)| {
            let mut parts = b.split(|&c| c == 0);
            let k = parts.next()?;
            let v = parts.next()?;
            (k == name.as_bytes()).then(|| String::from_utf8_lossy(v).into_owned())
        })
}

/// The text of the first column of the first DataRow.
pub(crate) fn first_value(replies: &[(u8, Vec<u8>)]) -> String {
    let (_, b) = replies.iter().find(|(t, _)| *t == b'D').expect("a row");
    let len = i32::from_be_bytes(b[2..6].try_into().expect("len")) as usize;
    String::from_utf8_lossy(&b[6..6 + len]).into_owned()
}

pub(crate) fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

pub(crate) async fn query(r: &mut Raw, sql: &str) -> Vec<(u8, Vec<u8>)> {
    r.send(b'Q', format!("{sql}\0").as_bytes()).await;
    r.until_ready().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_key_notifications_and_cancel_carry_the_real_backend_pid() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("session"), "auth_type = trust").await;
    let (mut r, replies) = login(&proxy, &[]).await;
    let (pid, secret) = backend_key(&replies);
    let got = query(&mut r, "select pg_backend_pid()").await;
    assert_eq!(first_value(&got), pid.to_string(), "BackendKeyData pid");
    // A notification from its own backend carries the pid the client was given.
    let got = query(&mut r, "LISTEN pd_self; NOTIFY pd_self, 'me'").await;
    let (_, note) = got.iter().find(|(t, _)| *t == b'A').expect("notification");
    assert_eq!(i32::from_be_bytes(note[..4].try_into().expect("pid")), pid);
    // A cancel with that key (real pid, pgfunnel's secret) reaches the running query.
    r.send(b'Q', b"select pg_sleep(30)\0").await;
    wait_until_async(
        std::time::Duration::from_secs(10),
        "the sleep runs",
        || async {
            let pg = PgServer::shared();
            pg.try_admin_sql_in(
                "app",
                &format!("select 1 from pg_stat_activity where pid = {pid} and query like 'select pg_sleep%' and state = 'active'"),
            )
            .is_ok_and(|out| out.trim() == "1")
        },
    )
    .await;
    let mut cancel = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut req = 16i32.to_be_bytes().to_vec();
    req.extend(80877102i32.to_be_bytes());
    req.extend(pid.to_be_bytes());
    req.extend(secret);
    cancel.write_all(&req).await.expect("cancel request");
    let got = r.until_ready().await;
    let (_, err) = got.iter().find(|(t, _)| *t == b'E').expect("cancelled");
    assert_eq!(code(err), "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_logs_in_without_a_free_server_and_serves_it_at_its_first_query() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("session pool_size=1"), "auth_type = trust").await;
    let (mut first, replies) = login(&proxy, &[]).await;
    let (first_pid, _) = backend_key(&replies);
    let got = query(&mut first, "select pg_backend_pid()").await;
    assert_eq!(
        first_value(&got),
        first_pid.to_string(),
        "the first holds the server"
    );
    // The only server is taken: the second client still logs in at once (as with
    // PgBouncer), with a key that is not a backend's pid.
    let (mut second, replies) =
        tokio::time::timeout(std::time::Duration::from_secs(10), login(&proxy, &[]))
            .await
            .expect("login does not wait for a server");
    let (second_pid, _) = backend_key(&replies);
    assert_ne!(second_pid, first_pid);
    // When the first leaves, the second is served by that server at its first query.
    first.send(b'X', b"").await;
    drop(first);
    let got = query(&mut second, "select 42").await;
    assert_eq!(first_value(&got), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_ones_own_backend_in_session_mode_gives_postgres_57p01() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("session"), "auth_type = trust").await;
    let (mut r, replies) = login(&proxy, &[]).await;
    // The pid libpq's PQbackendPID() reports, as an application would use it.
    let (pid, _) = backend_key(&replies);
    r.send(
        b'Q',
        format!("select pg_terminate_backend({pid})\0").as_bytes(),
    )
    .await;
    let (t, body) = loop {
        let m = r.recv().await;
        if matches!(m.0, b'E' | b'Z') {
            break m;
        }
    };
    assert_eq!(t, b'E', "not silence (a WARNING and true or false)");
    assert_eq!(code(&body), "57P01");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut r.s, &mut rest),
    )
    .await
    .expect("closed, as Postgres closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_takes_postgres_spelling_in_every_mode() {
    PgServer::shared();
    for mode in ["session", "transaction"] {
        let proxy = Proxy::simple(&forced(mode), "auth_type = trust").await;
        // A first client makes the pool's cached values exist (transaction mode uses them).
        drop(login(&proxy, &[]).await);
        let startup = [
            ("client_encoding", "eucjp"),
            ("DateStyle", "german"),
            ("IntervalStyle", "ISO_8601"),
        ];
        let (mut r, replies) = login(&proxy, &startup).await;
        assert_eq!(
            parameter(&replies, "client_encoding").as_deref(),
            Some("EUC_JP"),
            "{mode}"
        );
        assert_eq!(
            parameter(&replies, "DateStyle").as_deref(),
            Some("German, DMY"),
            "{mode}"
        );
        assert_eq!(
            parameter(&replies, "IntervalStyle").as_deref(),
            Some("iso_8601"),
            "{mode}"
        );
        let got = query(&mut r, "show client_encoding").await;
        assert_eq!(first_value(&got), "EUC_JP", "{mode}: the server agrees");
        assert!(
            !got.iter().any(|(t, _)| *t == b'S'),
            "{mode}: no correction needed at the first query: {}",
            tags(&got)
        );
        let (_, replies) = login(&proxy, &[("client_encoding", "UTF-8")]).await;
        assert_eq!(
            parameter(&replies, "client_encoding").as_deref(),
            Some("UTF8")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_refuses_a_bad_startup_parameter_at_login_as_postgres_does() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("session pool_size=1"), "auth_type = trust").await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let params = [
        ("user", "plain_user"),
        ("database", "app"),
        ("client_encoding", "no_such_encoding"),
    ];
    s.write_all(&startup_message(&params, 3 << 16))
        .await
        .expect("startup");
    let mut r = Raw { s };
    let (t, body) = loop {
        let m = r.recv().await;
        if m.0 == b'E' || m.0 == b'Z' {
            break m;
        }
    };
    assert_eq!(t, b'E', "refused before ReadyForQuery");
    assert_eq!(code(&body), "22023");
    // The only server went back to the pool.
    let (mut r, _) = login(&proxy, &[]).await;
    assert_eq!(first_value(&query(&mut r, "select 7").await), "7");
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    format!("{name}\0{sql}\0\0\0").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_deallocate_of_a_protocol_statement_acts_as_a_close() {
    PgServer::shared();
    let proxy = Proxy::simple(
        &forced("transaction pool_size=1"),
        "auth_type = trust\nmax_prepared_statements = 2",
    )
    .await;
    let (mut r, _) = login(&proxy, &[]).await;
    // As psycopg on libpq 16 does past prepared_max.
    r.send(b'P', &parse_msg("_pg3_0", "select 1")).await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    let got = query(&mut r, "DEALLOCATE _pg3_0").await;
    assert_eq!(tags(&got), "CZ", "no 26000");
    assert_eq!(got[0].1, b"DEALLOCATE\0");
    assert_eq!(got[1].1, b"I");
    // Gone for the client, as after a Close; the name can be prepared again.
    r.send(b'B', b"\0_pg3_0\0\0\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(code(&got[0].1), "26000");
    r.send(b'P', &parse_msg("_pg3_0", "select 2")).await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    // Inside a transaction the real status comes back; PREPARE and quoting are read.
    assert_eq!(tags(&query(&mut r, "BEGIN").await), "CZ");
    r.send(b'P', &parse_msg("Mixed", "select 3")).await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    let got = query(&mut r, "deallocate prepare \"Mixed\";").await;
    assert_eq!(tags(&got), "CZ");
    assert_eq!(got[1].1, b"T", "still in the transaction");
    assert_eq!(tags(&query(&mut r, "COMMIT").await), "CZ");
    // A name the client never prepared: Postgres's own error.
    let got = query(&mut r, "DEALLOCATE nope").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "26000");
    // DEALLOCATE ALL: every statement of the client is gone, others' keep working.
    let (mut other, _) = login(&proxy, &[]).await;
    other.send(b'P', &parse_msg("keep", "select 4")).await;
    other.send(b'S', b"").await;
    assert_eq!(tags(&other.until_ready().await), "1Z");
    assert_eq!(tags(&query(&mut r, "DEALLOCATE ALL").await), "CZ");
    r.send(b'B', b"\0_pg3_0\0\0\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    assert_eq!(code(&r.until_ready().await[0].1), "26000");
    other.send(b'B', b"\0keep\0\0\0\0\0\0\0").await;
    other.send(b'E', b"\0\0\0\0\0").await;
    other.send(b'S', b"").await;
    let got = other.until_ready().await;
    assert_eq!(tags(&got), "2DCZ");
    assert_eq!(first_value(&got), "4");
}

pub(crate) fn notification(body: &[u8]) -> (i32, String) {
    let pid = i32::from_be_bytes(body[..4].try_into().expect("pid"));
    let mut parts = body[4..].split(|&c| c == 0);
    let channel = String::from_utf8_lossy(parts.next().expect("channel")).into_owned();
    let payload = String::from_utf8_lossy(parts.next().expect("payload")).into_owned();
    (pid, format!("{channel}:{payload}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_own_notify_arrives_before_ready_for_query_with_the_given_pid() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("transaction pool_size=2"), "auth_type = trust").await;
    let (mut a, replies) = login(&proxy, &[]).await;
    let (a_pid, _) = backend_key(&replies);
    let (mut b, _) = login(&proxy, &[]).await;
    assert_eq!(tags(&query(&mut a, "LISTEN pd_own").await), "CZ");
    assert_eq!(tags(&query(&mut b, "LISTEN pd_own").await), "CZ");
    for i in 0..10 {
        let got = query(&mut a, &format!("NOTIFY pd_own, 'n{i}'")).await;
        assert_eq!(tags(&got), "ACZ", "round {i}: as from Postgres");
        assert_eq!(notification(&got[0].1), (a_pid, format!("pd_own:n{i}")));
        assert_eq!(got[1].1, b"NOTIFY\0");
        // Another listener sees the same sender pid.
        let (t, body) = b.recv().await;
        assert_eq!(t, b'A');
        assert_eq!(notification(&body), (a_pid, format!("pd_own:n{i}")));
    }
    // A channel a does not listen on goes to a pooled server as before.
    assert_eq!(tags(&query(&mut a, "NOTIFY pd_other, 'x'").await), "CZ");
    // Errors are Postgres's own.
    let long = "x".repeat(9000);
    let got = query(&mut a, &format!("NOTIFY pd_own, '{long}'")).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "22023");
    assert_eq!(first_value(&query(&mut a, "select 5").await), "5");
}
