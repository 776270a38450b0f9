//! Hostile session state in a transaction pool of one server, so the next client gets the
//! attacker's server: identity changes, pgfunnel's own statement names, temp tables in
//! forms a first-word check misses, the statement registry bound and LISTEN queue overflow.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::harness::*;
use crate::prepared::{code, Raw};
use crate::proxy::*;

fn pool_of_one(user: &str, password: &str) -> String {
    format!("user={user} password={password} pool_mode=transaction pool_size=1")
}

async fn connect(proxy: &Proxy) -> tokio_postgres::Client {
    proxy.connect("plain_user", "plain_pass", "app").await
}

async fn current_and_session_user(c: &tokio_postgres::Client) -> (String, String) {
    let row = c
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .expect("who am i");
    (row.get(0), row.get(1))
}

/// A superuser for the pool (only a superuser can SET SESSION AUTHORIZATION) and a role
/// the attacker switches to.
fn superuser_and_victim(pg: &PgServer) -> (String, String) {
    let su = unique_name("su");
    let victim = unique_name("victim");
    pg.admin_sql(&format!(
        "CREATE ROLE {su} SUPERUSER LOGIN PASSWORD 'su_pass'"
    ));
    pg.admin_sql(&format!("CREATE ROLE {victim} NOLOGIN"));
    (su, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_changes_never_reach_the_next_client() {
    let pg = PgServer::shared();
    let (su, victim) = superuser_and_victim(pg);
    let attacks = [
        format!("SET SESSION AUTHORIZATION {victim}"),
        format!("SELECT 1; SET ROLE {victim}"),
        format!("SELECT pg_catalog.set_config('role', '{victim}', false)"),
        // Dynamic SQL no word rule can read: the server's ParameterStatus gives it away.
        format!("DO $$ BEGIN EXECUTE 'SET SESSION ' || 'AUTHORIZATION ' || '{victim}'; END $$"),
    ];
    for reset in ["", "server_reset_query ="] {
        let proxy = Proxy::simple(&pool_of_one(&su, "su_pass"), reset).await;
        for attack in &attacks {
            let a = connect(&proxy).await;
            a.batch_execute(attack).await.expect("attack runs");
            assert_eq!(
                current_and_session_user(&a).await.0,
                victim,
                "the attacker's own session changed ({attack})"
            );
            drop(a);
            let b = connect(&proxy).await;
            assert_eq!(
                current_and_session_user(&b).await,
                (su.clone(), su.clone()),
                "the next client runs as the pool's user after {attack:?} (reset: {reset:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgfunnel_statement_names_cannot_be_hijacked() {
    PgServer::shared();
    let proxy = Proxy::simple(
        &pool_of_one(SCRAM_USER, SCRAM_PASSWORD),
        "auth_type = trust",
    )
    .await;
    let victim = connect(&proxy).await;
    let st = victim.prepare("select $1::int + 1").await.expect("prepare");
    assert_eq!(sum(&victim, &st).await, 2);
    let attacker = connect(&proxy).await;
    let names: Vec<String> = attacker
        .query("select name from pg_prepared_statements", &[])
        .await
        .expect("names")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("PGFUNNEL_")),
        "the attacker shares the victim's server: {names:?}"
    );
    for n in &names {
        attacker
            .batch_execute(&format!(
                "SELECT 1; DEALLOCATE \"{n}\"; PREPARE \"{n}\"(int) AS SELECT 666"
            ))
            .await
            .expect("the attacker's own session accepts it");
    }
    drop(attacker);
    assert_eq!(
        sum(&victim, &st).await,
        2,
        "the victim's statement is its own"
    );
    // Protocol level: a client's statement name is only ever its own.
    let mut raw = Raw::connect(&proxy).await;
    for n in &names {
        raw.parse(n, "select 666").await;
    }
    raw.send(b'S', b"").await;
    raw.until_ready().await;
    assert_eq!(sum(&victim, &st).await, 2);
    drop(raw);
    assert_eq!(sum(&victim, &st).await, 2);
}

async fn sum(c: &tokio_postgres::Client, st: &tokio_postgres::Statement) -> i32 {
    c.query_one(st, &[&1i32]).await.expect("run").get(0)
}

/// Whether a temp table of this name is visible to a new client (pool of one: same server).
async fn next_client_sees_temp(proxy: &Proxy, t: &str) -> bool {
    let b = connect(proxy).await;
    b.query_one(
        &format!("select to_regclass('pg_temp.{t}') is not null"),
        &[],
    )
    .await
    .expect("check")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_in_any_form_never_reach_the_next_client() {
    PgServer::shared();
    let proxy = Proxy::simple(
        &pool_of_one(SCRAM_USER, SCRAM_PASSWORD),
        "auth_type = trust",
    )
    .await;
    let forms = [
        "SELECT 1 AS x INTO TEMP {t}",
        "create\ttemp table {t}(x int)",
        "select 1;\ncreate\ntemp table {t}(x int)",
        "create /* c */ temporary -- c\n table {t}(x int)",
    ];
    for form in forms {
        let t = unique_name("tmp");
        let a = connect(&proxy).await;
        a.batch_execute(&form.replace("{t}", &t))
            .await
            .expect("temp table");
        drop(a);
        assert!(!next_client_sees_temp(&proxy, &t).await, "{form}");
    }
    // A Parse too large to inspect (padded past 1 MiB): its server is not reused, whether
    // the client stays (released after the transaction) or leaves.
    for stays in [true, false] {
        let t = unique_name("tmp");
        let a = connect(&proxy).await;
        let big = format!(
            "create temp table {t}(x int) /* {} */",
            "p".repeat(1100 * 1024)
        );
        a.execute(&big, &[]).await.expect("large Parse runs");
        let kept = stays.then_some(a);
        assert!(
            !next_client_sees_temp(&proxy, &t).await,
            "large Parse (client stays: {stays})"
        );
        drop(kept);
    }
    // Query text that is not UTF-8 (valid LATIN1): the raw bytes are read all the same.
    let t = unique_name("tmp");
    let mut raw = Raw::connect(&proxy).await;
    raw.send(b'Q', b"SET client_encoding = 'LATIN1'\0").await;
    raw.until_ready().await;
    let mut q = b"/* caf\xe9 */ create\ttemp table ".to_vec();
    q.extend_from_slice(t.as_bytes());
    q.extend_from_slice(b"(x int)\0");
    raw.send(b'Q', &q).await;
    let replies = raw.until_ready().await;
    assert!(
        replies.iter().all(|(tag, _)| *tag != b'E'),
        "the LATIN1 query ran"
    );
    raw.send(b'X', b"").await;
    drop(raw);
    assert!(!next_client_sees_temp(&proxy, &t).await, "non-UTF-8 text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_registry_stays_bounded_with_many_distinct_statements() {
    PgServer::shared();
    let proxy = Proxy::simple(
        &pool_of_one(SCRAM_USER, SCRAM_PASSWORD),
        "max_pool_prepared_statements = 20\nmax_prepared_statements = 10",
    )
    .await;
    let c = connect(&proxy).await;
    let first = c.prepare("select 0::int").await.expect("prepare");
    for i in 1..200i32 {
        let st = c
            .prepare(&format!("select {i}::int"))
            .await
            .expect("prepare");
        let got: i32 = c.query_one(&st, &[]).await.expect("run").get(0);
        assert_eq!(got, i);
    }
    let got: i32 = c
        .query_one(&first, &[])
        .await
        .expect("old statement")
        .get(0);
    assert_eq!(got, 0, "a statement the client still holds keeps working");
    let app = &proxy.running.as_ref().expect("running").app;
    let (len, evicted) = app
        .pools
        .iter()
        .map(|p| (p.statements.len(), p.statements.evictions()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(len <= 20, "registry holds {len} statements");
    assert!(evicted >= 150, "evicted {evicted}");
    let exported = metric_sum(app, "pgfunnel_prepared_statement_evictions_total");
    assert_eq!(exported, evicted as f64, "/metrics counts the evictions");
}

/// Sum of every sample of one metric family in pgfunnel's /metrics text.
fn metric_sum(app: &pgfunnel::app::App, name: &str) -> f64 {
    app.metrics
        .render(app)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_queue_overflow_disconnects_the_client_with_53200() {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=2");
    let proxy = Proxy::simple(&opts, "auth_type = trust\nlisten_queue_size = 4").await;
    let channel = unique_name("full");
    let mut listener = Raw::connect(&proxy).await;
    listener
        .send(b'Q', format!("LISTEN {channel}\0").as_bytes())
        .await;
    listener.until_ready().await;
    // Inside a transaction the client takes no notifications: its queue fills.
    listener.send(b'Q', b"BEGIN\0").await;
    listener.until_ready().await;
    let notifier = connect(&proxy).await;
    for i in 0..10 {
        notifier
            .batch_execute(&format!("NOTIFY {channel}, '{i}'"))
            .await
            .expect("notify");
    }
    let app = &proxy.running.as_ref().expect("running").app;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .pools
        .iter()
        .map(|p| p.listen_hub().overflows())
        .sum::<u64>()
        == 0
    {
        assert!(Instant::now() < deadline, "the queue never overflowed");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    listener.send(b'Q', b"COMMIT\0").await;
    // Everything up to the close (a reset after the last byte counts as a close).
    let mut rest = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.s.read(&mut chunk))
            .await
            .expect("the client is closed in time");
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    }
    let fatal = messages(&rest)
        .into_iter()
        .find(|(tag, _)| *tag == b'E')
        .expect("an error before the close");
    assert_eq!(code(&fatal.1), "53200");
    assert_eq!(
        metric_sum(app, "pgfunnel_client_notification_overflows_total"),
        1.0,
        "/metrics counts the overflow"
    );
    // Others are unaffected.
    notifier
        .simple_query("select 1")
        .await
        .expect("still served");
}

/// Splits a byte stream into (type, body) messages.
fn messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let end = (1 + len).min(bytes.len());
        out.push((bytes[0], bytes[5..end].to_vec()));
        bytes = &bytes[end..];
    }
    out
}
