//! Protocol-level prepared statements in transaction mode: shared across servers,
//! de-duplicated, evicted, and the errors Postgres itself would give.

use std::time::Duration;

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::proxy::*;

fn opts(extra: &str) -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction {extra}")
}

async fn prepared_count(c: &tokio_postgres::Client) -> i64 {
    let rows = c
        .simple_query("select count(*) from pg_prepared_statements where name like 'PGFUNNEL_%'")
        .await
        .expect("count");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().expect("int")),
            _ => None,
        })
        .expect("row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_work_on_whichever_server_a_client_gets() {
    PgServer::shared();
    let proxy = Proxy::simple(&opts("pool_size=2"), "").await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(proxy.connect("plain_user", "plain_pass", "app").await);
    }
    let work = clients.iter().enumerate().map(|(ci, c)| async move {
        let add = c
            .prepare("select $1::int + $2::int")
            .await
            .expect("prepare");
        let echo = c.prepare("select $1::text || '!'").await.expect("prepare");
        for i in 0..30 {
            let r = c
                .query_one(&add, &[&(ci as i32), &i])
                .await
                .expect("execute add");
            assert_eq!(r.get::<_, i32>(0), ci as i32 + i);
            let r = c
                .query_one(&echo, &[&format!("c{ci}")])
                .await
                .expect("execute echo");
            assert_eq!(r.get::<_, String>(0), format!("c{ci}!"));
        }
    });
    join_all(work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_statements_are_prepared_once_per_server_and_evicted_by_lru() {
    PgServer::shared();
    let proxy = Proxy::simple(&opts("pool_size=1"), "max_prepared_statements = 3").await;
    let a = proxy.connect("plain_user", "plain_pass", "app").await;
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    let sa = a.prepare("select 41 + 1").await.expect("a prepares");
    let sb = b
        .prepare("select 41 + 1")
        .await
        .expect("b prepares the same text");
    assert_eq!(a.query_one(&sa, &[]).await.expect("a").get::<_, i32>(0), 42);
    assert_eq!(b.query_one(&sb, &[]).await.expect("b").get::<_, i32>(0), 42);
    assert_eq!(
        prepared_count(&a).await,
        1,
        "one server statement for both clients"
    );
    let mut stmts = Vec::new();
    for i in 0..8 {
        stmts.push(a.prepare(&format!("select {i}")).await.expect("prepare"));
    }
    assert!(
        prepared_count(&a).await <= 3,
        "LRU bounded by max_prepared_statements"
    );
    for (i, s) in stmts.iter().enumerate() {
        let r = a
            .query_one(s, &[])
            .await
            .expect("evicted statements are re-prepared on demand");
        assert_eq!(r.get::<_, i32>(0), i as i32);
    }
    assert!(prepared_count(&a).await <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_needs_no_manual_step() {
    let pg = PgServer::shared();
    let t = unique_name("ddl");
    pg.admin_sql_in(
        "app",
        &format!(
            "create table {t}(a int); insert into {t} values (1); grant all on {t} to {SCRAM_USER}"
        ),
    );
    let proxy = Proxy::simple(&opts("pool_size=1"), "").await;
    let c = proxy.connect("plain_user", "plain_pass", "app").await;
    let sql = format!("select * from {t}");
    let s = c.prepare(&sql).await.expect("prepare");
    assert_eq!(c.query(&s, &[]).await.expect("run").len(), 1);
    pg.admin_sql_in(
        "app",
        &format!("alter table {t} add column b int default 7"),
    );
    let first = c.query(&s, &[]).await;
    if let Err(e) = &first {
        assert_eq!(sqlstate(e), "0A000", "{e:?}");
    }
    // the client's retry (a fresh prepare, as drivers do) works without RECONNECT
    let s2 = c.prepare(&sql).await.expect("prepare again");
    let rows = c.query(&s2, &[]).await.expect("retry works");
    assert_eq!(rows[0].get::<_, i32>(1), 7);
}

/// A raw protocol-3 connection logged in with trust auth.
pub(crate) struct Raw {
    pub(crate) s: TcpStream,
}

impl Raw {
    pub(crate) async fn connect(proxy: &Proxy) -> Raw {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut body = (3i32 << 16).to_be_bytes().to_vec();
        for (k, v) in [("user", "plain_user"), ("database", "app")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        p.extend(body);
        s.write_all(&p).await.expect("startup");
        let mut raw = Raw { s };
        raw.until_ready().await;
        raw
    }

    pub(crate) async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut m = vec![tag];
        m.extend(((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        self.s.write_all(&m).await.expect("send");
    }

    pub(crate) async fn parse(&mut self, name: &str, sql: &str) {
        self.send(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
            .await;
    }

    pub(crate) async fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), self.s.read_exact(&mut h))
            .await
            .expect("reply in time")
            .expect("read");
        let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let mut b = vec![0u8; len - 4];
        self.s.read_exact(&mut b).await.expect("body");
        (h[0], b)
    }

    /// Reads up to and including ReadyForQuery; returns the message types seen.
    pub(crate) async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.0 == b'Z';
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

pub(crate) fn code(body: &[u8]) -> String {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let end = body[i + 1..].iter().position(|&b| b == 0).expect("nul") + i + 1;
        if body[i] == b'C' {
            return String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    String::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reparse_unknown_name_describe_and_close_behave_like_postgres() {
    PgServer::shared();
    let proxy = Proxy::simple(&opts("pool_size=1"), "auth_type = trust").await;
    let mut r = Raw::connect(&proxy).await;
    r.parse("s1", "select 1").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "1Z");
    // re-Parse of a name the client has: Postgres's 42P05, not a disconnect
    r.parse("s1", "select 2").await;
    r.send(b'B', b"\0s1\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ", "error, rest of the pipeline skipped");
    assert_eq!(code(&got[0].1), "42P05");
    // the statement still works, Describe and Close are answered in order
    r.send(b'D', b"Ss1\0").await;
    r.send(b'B', b"\0s1\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'C', b"Ss1\0").await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "tT2DC3Z");
    assert_eq!(&got[3].1[6..], b"1", "select 1 -> '1'");
    // closed: binding it now is Postgres's 26000
    r.send(b'B', b"\0s1\0\0\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(code(&got[0].1), "26000");
    // unnamed statements and portals pass untouched
    r.parse("", "select 3").await;
    r.send(b'B', b"\0\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "12DCZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_with_an_error_in_the_middle_recovers_at_sync() {
    PgServer::shared();
    let proxy = Proxy::simple(&opts("pool_size=1"), "auth_type = trust").await;
    let mut r = Raw::connect(&proxy).await;
    r.parse("ok", "select 10").await;
    r.parse("bad", "select * from no_such_table_here").await;
    r.parse("later", "select 20").await;
    r.send(b'B', b"\0ok\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    let got = r.until_ready().await;
    assert_eq!(
        tags(&got),
        "1EZ",
        "first Parse ok, error, then nothing until Sync"
    );
    assert_eq!(code(&got[1].1), "42P01");
    // "bad" and "later" never existed; "ok" did
    r.send(b'B', b"\0ok\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "2DCZ");
    r.parse("later", "select 20").await;
    r.send(b'B', b"\0later\0\0\0\0\0\0\0").await;
    r.send(b'E', b"\0\0\0\0\0").await;
    r.send(b'S', b"").await;
    assert_eq!(tags(&r.until_ready().await), "12DCZ");
}
