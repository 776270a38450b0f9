//! Wire details of transaction mode that PgBouncer users meet (issue 16, points 9, 11, 12):
//! statements pgfunnel refuses leave no error in the Postgres log and the stream stays in
//! step; DEALLOCATE of a protocol statement behaves as in Postgres in a failed transaction
//! and through the extended protocol; a client's own notifications carry the pid it was
//! given.

use crate::harness::*;
use crate::prepared::{code, Raw};
use crate::proxy::*;
use crate::transparency::{backend_key, first_value, login, notification, query, tags};

fn forced(extra: &str) -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction {extra}")
}

/// The transaction status of the last ReadyForQuery.
fn status(msgs: &[(u8, Vec<u8>)]) -> u8 {
    msgs.last().expect("replies").1[0]
}

fn bind_msg(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0{stmt}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    b
}

fn execute_msg(portal: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 0]);
    b
}

/// Bind (unnamed portal) + Execute + Sync of statement `stmt`.
async fn run_stmt(r: &mut Raw, stmt: &str) -> Vec<(u8, Vec<u8>)> {
    r.send(b'B', &bind_msg("", stmt)).await;
    r.send(b'E', &execute_msg("")).await;
    r.send(b'S', b"").await;
    r.until_ready().await
}

/// Parse (unnamed) + Bind + Execute + Sync of `sql`.
async fn run_text(r: &mut Raw, sql: &str) -> Vec<(u8, Vec<u8>)> {
    r.parse("", sql).await;
    run_stmt(r, "").await
}

/// The Postgres log lines of backend `pid` that report an ERROR.
fn error_lines_of(pg: &PgServer, pid: &str) -> Vec<String> {
    let log = std::fs::read_to_string(pg.log_path()).expect("postgres log");
    let tag = format!("[{pid}]");
    log.lines()
        .filter(|l| l.contains(&tag) && l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_statements_leave_no_error_in_the_postgres_log_and_keep_the_stream_in_step() {
    let pg = PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=1"), "auth_type = trust").await;
    let (mut r, _) = login(&proxy, &[]).await;
    let pid = first_value(&query(&mut r, "select pg_backend_pid()").await);
    r.parse("s1", "select 1").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");

    // Bind of a name never prepared: Postgres's 26000, rest skipped, one ReadyForQuery.
    let got = run_stmt(&mut r, "never_prepared").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "26000");
    assert_eq!(status(&got), b'I');
    // Parse of a name the client has: 42P05; the old statement stays.
    r.parse("s1", "select 2").await;
    r.send(b'B', &bind_msg("", "s1")).await;
    r.send(b'E', &execute_msg("")).await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "42P05");
    // Describe of an unknown name after a good Parse of the same batch: in order.
    r.parse("s2", "select 22").await;
    r.send(b'D', b"Snever_prepared\0").await;
    r.send(b'B', &bind_msg("", "s2")).await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(
        tags(&got),
        "1EZ",
        "ParseComplete, the error, then Sync's answer"
    );
    assert_eq!(status(&got), b'I');
    // The session goes on: both statements answer.
    assert_eq!(first_value(&run_stmt(&mut r, "s1").await), "1");
    assert_eq!(first_value(&run_stmt(&mut r, "s2").await), "22");
    // In a failed transaction block: the error, and ReadyForQuery still says E.
    assert_eq!(tags(&query(&mut r, "BEGIN").await), "CZ");
    let got = query(&mut r, "select 1/0").await;
    assert_eq!(code(&got[0].1), "22012");
    let got = run_stmt(&mut r, "never_prepared").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(status(&got), b'E');
    let got = query(&mut r, "ROLLBACK").await;
    assert_eq!(status(&got), b'I');
    assert_eq!(
        first_value(&query(&mut r, "select pg_backend_pid()").await),
        pid,
        "one server throughout (pool_size=1)"
    );
    let errors = error_lines_of(pg, &pid);
    assert!(
        errors.iter().all(|l| l.contains("division by zero")),
        "only the client's own error reached the Postgres log: {errors:#?}"
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");

    // Inside an open transaction block the block must fail as in Postgres (status E,
    // COMMIT rolls back), which only the server can do.
    assert_eq!(tags(&query(&mut r, "BEGIN").await), "CZ");
    let got = run_stmt(&mut r, "never_prepared").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "26000");
    assert_eq!(status(&got), b'E');
    let got = query(&mut r, "COMMIT").await;
    assert_eq!(got[0].1, b"ROLLBACK\0");
    assert_eq!(first_value(&run_stmt(&mut r, "s1").await), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_in_a_failed_transaction_is_25p02_and_keeps_the_statement() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=1"), "auth_type = trust").await;
    let (mut r, _) = login(&proxy, &[]).await;
    r.parse("_pg3_0", "select 5").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    assert_eq!(tags(&query(&mut r, "BEGIN").await), "CZ");
    assert_eq!(code(&query(&mut r, "select 1/0").await[0].1), "22012");
    // Simple query, as psycopg sends it.
    let got = query(&mut r, "DEALLOCATE _pg3_0").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "25P02");
    assert_eq!(status(&got), b'E');
    // Through the extended protocol: Postgres refuses at the Parse.
    let got = run_text(&mut r, "DEALLOCATE _pg3_0").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "25P02");
    assert_eq!(status(&query(&mut r, "ROLLBACK").await), b'I');
    // The statement was not deallocated.
    assert_eq!(first_value(&run_stmt(&mut r, "_pg3_0").await), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_deallocate_acts_like_the_simple_query_form() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=1"), "auth_type = trust").await;
    let (mut r, _) = login(&proxy, &[]).await;
    r.parse("a", "select 1").await;
    r.parse("b", "select 2").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "11Z");
    // Unnamed statement, described and executed as drivers do.
    r.parse("", "DEALLOCATE a").await;
    r.send(b'B', &bind_msg("", "")).await;
    r.send(b'D', b"P\0").await;
    r.send(b'E', &execute_msg("")).await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "12nCZ", "as Postgres answers DEALLOCATE");
    assert_eq!(got[3].1, b"DEALLOCATE\0");
    assert_eq!(status(&got), b'I');
    let got = run_stmt(&mut r, "a").await;
    assert_eq!(code(&got[0].1), "26000", "a is gone");
    assert_eq!(first_value(&run_stmt(&mut r, "b").await), "2", "b stays");
    // A named DEALLOCATE statement, executed twice: the second time a is gone.
    r.parse("a", "select 11").await;
    r.parse("d", "deallocate prepare a").await;
    r.send(b'B', &bind_msg("", "d")).await;
    r.send(b'E', &execute_msg("")).await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "112CZ");
    assert_eq!(got[3].1, b"DEALLOCATE\0");
    let got = run_stmt(&mut r, "d").await;
    assert_eq!(tags(&got), "2EZ");
    assert_eq!(code(&got[1].1), "26000");
    // Inside a transaction the status comes back as it is.
    assert_eq!(tags(&query(&mut r, "BEGIN").await), "CZ");
    r.parse("c", "select 3").await;
    let got = run_text(&mut r, "DEALLOCATE c").await;
    assert_eq!(tags(&got), "112CZ");
    assert_eq!(status(&got), b'T');
    assert_eq!(status(&query(&mut r, "COMMIT").await), b'I');
    // DEALLOCATE ALL through the extended protocol: every statement of the client is gone.
    let got = run_text(&mut r, "DEALLOCATE ALL").await;
    assert_eq!(tags(&got), "12CZ");
    assert_eq!(got[2].1, b"DEALLOCATE ALL\0");
    assert_eq!(code(&run_stmt(&mut r, "b").await[0].1), "26000");
    r.parse("b", "select 4").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    assert_eq!(first_value(&run_stmt(&mut r, "b").await), "4");
}

/// Runs `sql` on a backend of its own (not through pgfunnel); returns that backend's pid.
async fn notify_directly(pg: &PgServer, sql: &str) -> i32 {
    let direct = pg.connect(SCRAM_USER, Some(SCRAM_PASSWORD), "app").await;
    let row = direct
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid");
    direct.batch_execute(sql).await.expect("notify");
    row.get(0)
}

/// The next NotificationResponse: (pid, "channel:payload").
async fn next_notification(r: &mut Raw) -> (i32, String) {
    let (t, body) = r.recv().await;
    assert_eq!(t, b'A', "a notification");
    notification(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_notifications_from_the_clients_own_server_carry_the_given_pid() {
    let pg = PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=2"), "auth_type = trust").await;
    let (mut a, replies) = login(&proxy, &[]).await;
    let a_pid = backend_key(&replies).0;
    let (mut b, replies) = login(&proxy, &[]).await;
    let b_pid = backend_key(&replies).0;
    assert_eq!(tags(&query(&mut a, "LISTEN pw_own").await), "CZ");
    assert_eq!(tags(&query(&mut b, "LISTEN pw_own").await), "CZ");
    for round in 0..3 {
        // NOTIFY inside a transaction block, on a pooled server.
        assert_eq!(tags(&query(&mut a, "BEGIN").await), "CZ");
        assert_eq!(
            tags(&query(&mut a, &format!("NOTIFY pw_own, 'tx{round}'")).await),
            "CZ"
        );
        assert_eq!(tags(&query(&mut a, "COMMIT").await), "CZ");
        let want = (a_pid, format!("pw_own:tx{round}"));
        assert_eq!(next_notification(&mut a).await, want, "own: the given pid");
        assert_eq!(next_notification(&mut b).await, want, "others see the same");
        // pg_notify() outside a transaction block.
        let got = query(&mut b, &format!("SELECT pg_notify('pw_own', 'fn{round}')")).await;
        assert_eq!(status(&got), b'I');
        let want = (b_pid, format!("pw_own:fn{round}"));
        assert_eq!(next_notification(&mut b).await, want);
        assert_eq!(next_notification(&mut a).await, want);
    }
    // Another backend keeps its pid.
    let direct_pid = notify_directly(pg, "NOTIFY pw_own, 'direct'").await;
    let want = (direct_pid, "pw_own:direct".to_string());
    assert_eq!(next_notification(&mut a).await, want);
    assert_eq!(next_notification(&mut b).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_in_a_batch_pgfunnel_refused_is_not_taken_as_done() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=2"), "auth_type = trust").await;
    let (mut r, _) = login(&proxy, &[]).await;
    let before = first_value(&query(&mut r, "SHOW work_mem").await);
    assert_ne!(before, "1234kB");
    r.parse("set_it", "SET work_mem = '1234kB'").await;
    r.send(b'C', b"Sset_it\0").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "13Z");
    // The statement is closed: this Bind is refused, its Execute never runs.
    let got = run_stmt(&mut r, "set_it").await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "26000");
    // Another client takes the one open server: the next link is on a new server, which
    // gets the client's settings replayed; the refused SET is not among them.
    let (mut other, _) = login(&proxy, &[]).await;
    assert_eq!(tags(&query(&mut other, "BEGIN").await), "CZ");
    let got = query(&mut r, "SHOW work_mem").await;
    assert_eq!(first_value(&got), before);
    assert_eq!(tags(&query(&mut other, "COMMIT").await), "CZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_by_listen_sees_its_own_notifications_with_the_given_pid() {
    let pg = PgServer::shared();
    let proxy = Proxy::simple(&forced("pool_size=2"), "auth_type = trust").await;
    let (mut r, replies) = login(&proxy, &[]).await;
    let pid = backend_key(&replies).0;
    // LISTEN inside a transaction lives on the server: the client is pinned to it.
    assert_eq!(
        tags(&query(&mut r, "BEGIN; LISTEN pw_pin; COMMIT").await),
        "CCCZ"
    );
    for sql in ["NOTIFY pw_pin, 'own'", "SELECT pg_notify('pw_pin', 'own')"] {
        let got = query(&mut r, sql).await;
        let (_, body) = got
            .iter()
            .find(|(t, _)| *t == b'A')
            .expect("own notification");
        assert_eq!(notification(body), (pid, "pw_pin:own".to_string()), "{sql}");
    }
    let direct_pid = notify_directly(pg, "NOTIFY pw_pin, 'direct'").await;
    let got = query(&mut r, "select 1").await;
    let (_, body) = got
        .iter()
        .find(|(t, _)| *t == b'A')
        .expect("the other backend's");
    assert_eq!(
        notification(body),
        (direct_pid, "pw_pin:direct".to_string())
    );
}
