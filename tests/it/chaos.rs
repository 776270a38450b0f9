//! Chaos tests: many clients run checked transactions through pgfunnel while something
//! breaks (Postgres killed or shut down, server connections terminated, the network path
//! stalled and cut, clients vanishing at awkward moments, the pool exhausted). Every
//! write has a unique key; afterwards each key is counted in Postgres itself:
//! acknowledged writes are present exactly once (lost = 0, doubled = 0), writes whose
//! transaction failed before COMMIT are absent (phantom = 0), and writes whose COMMIT got
//! an error are "unknown" (either is fine). Every operation is bounded by a timeout and a
//! hang is a failure. After each fault a follow-up check proves the pool serves again
//! within a bounded time and that no server is handed out dirty.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::harness::relay::Relay;
use crate::harness::*;
use crate::proxy::*;

mod vanish;

/// Longest any single client operation may take before it counts as a hang.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the pool may take to serve again after a fault ends.
const RECOVERY: Duration = Duration::from_secs(30);

/// What happened to each write, keyed by its unique id.
#[derive(Default)]
pub struct Ledger {
    next_key: AtomicI64,
    inner: Mutex<LedgerInner>,
}

#[derive(Default)]
struct LedgerInner {
    acked: Vec<i64>,
    unknown: Vec<i64>,
    failed: Vec<i64>,
    errors: BTreeMap<String, usize>,
    hangs: usize,
}

/// The tally after checking a ledger against the table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub acked: usize,
    pub unknown: usize,
    pub failed: usize,
    pub lost: usize,
    pub doubled: usize,
    pub phantom: usize,
    pub hangs: usize,
}

impl Ledger {
    fn key(&self) -> i64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().expect("ledger lock")
    }

    fn error(&self, kind: String) {
        *self.lock().errors.entry(kind).or_default() += 1;
    }

    /// Error kinds seen, with counts (SQLSTATE, "closed", "connect: …").
    pub fn errors(&self) -> BTreeMap<String, usize> {
        self.lock().errors.clone()
    }

    /// (acknowledged, unknown) writes so far.
    pub fn check_counts(&self) -> (usize, usize) {
        let l = self.lock();
        (l.acked.len(), l.unknown.len())
    }

    /// Compares the ledger with `select k, count(*) from table group by k`.
    pub async fn check(&self, pg: &PgServer, table: &str) -> Tally {
        let c = pg.connect(SCRAM_USER, Some(SCRAM_PASSWORD), "app").await;
        let rows = c
            .query(&format!("select k, count(*) from {table} group by k"), &[])
            .await
            .expect("count rows");
        let counts: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let l = self.lock();
        let mut t = Tally {
            acked: l.acked.len(),
            unknown: l.unknown.len(),
            failed: l.failed.len(),
            hangs: l.hangs,
            ..Tally::default()
        };
        for k in &l.acked {
            match counts.get(k).copied().unwrap_or(0) {
                0 => t.lost += 1,
                1 => {}
                _ => t.doubled += 1,
            }
        }
        for k in &l.unknown {
            if counts.get(k).copied().unwrap_or(0) > 1 {
                t.doubled += 1;
            }
        }
        for k in &l.failed {
            if counts.get(k).copied().unwrap_or(0) > 0 {
                t.phantom += 1;
            }
        }
        t
    }
}

/// Asserts the invariants every scenario shares and prints the figures.
pub fn assert_tally(scenario: &str, t: &Tally, ledger: &Ledger, min_acked: usize) {
    eprintln!(
        "chaos {scenario}: acked {} unknown {} failed {} | lost {} doubled {} phantom {} hangs {} | errors {:?}",
        t.acked, t.unknown, t.failed, t.lost, t.doubled, t.phantom, t.hangs, ledger.errors()
    );
    assert_eq!(t.lost, 0, "{scenario}: acknowledged writes lost");
    assert_eq!(t.doubled, 0, "{scenario}: writes doubled");
    assert_eq!(
        t.phantom, 0,
        "{scenario}: writes committed although they failed"
    );
    assert_eq!(t.hangs, 0, "{scenario}: operations past {OP_TIMEOUT:?}");
    assert!(
        t.acked >= min_acked,
        "{scenario}: only {} writes acknowledged",
        t.acked
    );
}

/// A table for checked writes: `k` is not unique on purpose, so a doubled write shows.
pub fn ledger_table(pg: &PgServer, prefix: &str) -> String {
    let t = unique_name(prefix);
    pg.admin_sql_in(
        "app",
        &format!(
            "create table {t}(k bigint not null, client int, at timestamptz default now()); \
             grant all on {t} to {SCRAM_USER}, {PLAIN_USER}"
        ),
    );
    t
}

/// Classifies an error the way a client would report it.
fn kind(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        db.code().code().to_owned()
    } else if e.is_closed() {
        "closed".to_owned()
    } else {
        let text = e.to_string();
        text.split(':').next().unwrap_or("other").to_owned()
    }
}

/// Runs `clients` workers against `conn_str`, each doing checked transactions (BEGIN,
/// session SET, INSERT of a unique key, COMMIT) until `stop` is set or it did `max_txns`.
/// Broken connections are replaced. Returns when every worker has finished.
pub async fn run_workload(
    conn_str: String,
    table: String,
    ledger: Arc<Ledger>,
    clients: usize,
    max_txns: usize,
    stop: Arc<AtomicBool>,
) {
    let workers = (0..clients).map(|id| {
        let (conn_str, table, ledger, stop) = (
            conn_str.clone(),
            table.clone(),
            ledger.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut done = 0;
            while done < max_txns && !stop.load(Ordering::Relaxed) {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    match tokio::time::timeout(OP_TIMEOUT, connect(&conn_str)).await {
                        Ok(Ok(c)) => client = Some(c),
                        Ok(Err(e)) => {
                            ledger.error(format!("connect {}", kind(&e)));
                            // The proxy or Postgres is down: try again shortly.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(_) => {
                            ledger.lock().hangs += 1;
                            continue;
                        }
                    }
                }
                let c = client.as_ref().expect("connected above");
                one_transaction(c, &table, id as i32, &ledger).await;
                done += 1;
            }
        })
    });
    for w in join_all(workers).await {
        w.expect("worker task");
    }
}

async fn connect(conn_str: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn one_transaction(c: &tokio_postgres::Client, table: &str, id: i32, ledger: &Ledger) {
    let key = ledger.key();
    let body = async {
        c.batch_execute("BEGIN").await?;
        // Session state a careless server reuse would leak to the next client.
        c.batch_execute(&format!("SET chaos.owner = 'client{id}'"))
            .await?;
        c.execute(
            &format!("insert into {table}(k, client) values ($1, $2)"),
            &[&key, &id],
        )
        .await?;
        Ok::<(), tokio_postgres::Error>(())
    };
    match tokio::time::timeout(OP_TIMEOUT, body).await {
        Err(_) => {
            ledger.lock().hangs += 1;
            ledger.lock().unknown.push(key);
            return;
        }
        Ok(Err(e)) => {
            ledger.error(kind(&e));
            ledger.lock().failed.push(key);
            // Leave the aborted transaction; errors here are expected mid-fault.
            let _ = tokio::time::timeout(OP_TIMEOUT, c.batch_execute("ROLLBACK")).await;
            return;
        }
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout(OP_TIMEOUT, c.batch_execute("COMMIT")).await {
        Ok(Ok(())) => ledger.lock().acked.push(key),
        Ok(Err(e)) => {
            ledger.error(format!("commit {}", kind(&e)));
            ledger.lock().unknown.push(key);
        }
        Err(_) => {
            let mut l = ledger.lock();
            l.hangs += 1;
            l.unknown.push(key);
        }
    }
}

/// Waits until a fresh client gets an answer through the proxy; returns how long it took.
pub async fn wait_serving(conn_str: &str) -> Duration {
    let started = Instant::now();
    wait_until_async(RECOVERY, "pgfunnel serving again", || async {
        match tokio::time::timeout(Duration::from_secs(5), connect(conn_str)).await {
            Ok(Ok(c)) => matches!(
                tokio::time::timeout(Duration::from_secs(5), c.simple_query("select 1")).await,
                Ok(Ok(_))
            ),
            _ => false,
        }
    })
    .await;
    started.elapsed()
}

/// Holds `servers` servers at once (each client sleeps inside its query so they cannot
/// share one) and checks each was handed over clean: not inside a transaction (now() is
/// the statement's own start) and without another client's session setting.
pub async fn assert_servers_clean(conn_str: &str, servers: usize) {
    let checks = (0..servers).map(|_| {
        let conn_str = conn_str.to_owned();
        async move {
            let c = tokio::time::timeout(OP_TIMEOUT, connect(&conn_str))
                .await
                .expect("connect in time")
                .expect("connect");
            // Simple protocol: with the extended one, Bind and Execute get different
            // statement timestamps even on a clean server.
            let rows = tokio::time::timeout(
                OP_TIMEOUT,
                c.simple_query(
                    "select now() = statement_timestamp(), \
                     coalesce(current_setting('chaos.owner', true), ''), pg_sleep(0.3)::text",
                ),
            )
            .await
            .expect("check in time")
            .expect("check query");
            let row = rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .expect("one row");
            let fresh = row.get(0) == Some("t");
            let owner = row.get(1).unwrap_or_default().to_owned();
            assert!(fresh, "a server was handed over inside a transaction");
            assert_eq!(owner, "", "a server kept another client's SET");
        }
    });
    join_all(checks).await;
}

fn txn_db_line(port: u16, opts: &str) -> String {
    format!(
        "app = host=127.0.0.1 port={port} dbname=app user={SCRAM_USER} password={SCRAM_PASSWORD} \
         pool_mode=transaction {opts}"
    )
}

const EXTRA: &str =
    "max_client_conn = 500\nquery_wait_timeout = 30\nserver_tls_sslmode = disable\n\
                     server_login_retry = 0";

/// Starts load, runs `fault` once load is flowing, lets load continue `after` the fault,
/// stops it, and returns the tally.
async fn load_through<F, Fut>(
    proxy: &Proxy,
    pg: &PgServer,
    scenario: &str,
    clients: usize,
    after: Duration,
    fault: F,
) -> (Tally, Arc<Ledger>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let table = ledger_table(pg, scenario);
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let conn_str = proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app");
    let load = tokio::spawn(run_workload(
        conn_str.clone(),
        table.clone(),
        ledger.clone(),
        clients,
        10_000,
        stop.clone(),
    ));
    let l2 = ledger.clone();
    wait_until_async(Duration::from_secs(30), "load flowing", || {
        let n = l2.lock().acked.len();
        async move { n >= clients }
    })
    .await;
    fault().await;
    let recovered = wait_serving(&conn_str).await;
    eprintln!("chaos {scenario}: serving again {recovered:?} after the fault");
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(OP_TIMEOUT * 3, load)
        .await
        .expect("workload stops in time")
        .expect("workload");
    assert_servers_clean(&conn_str, 4).await;
    (ledger.check(pg, &table).await, ledger)
}

/// A private Postgres with durable commits (the harness turns synchronous_commit off for
/// speed; a killed postmaster may then lose commits it acknowledged, by design).
fn durable_private_server() -> PgServer {
    let pg = PgServer::start();
    pg.admin_sql("ALTER SYSTEM SET synchronous_commit = on");
    pg.admin_sql("SELECT pg_reload_conf()");
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmaster_killed_or_shut_down_mid_load_loses_and_doubles_nothing() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(durable_private_server)
            .await
            .expect("start Postgres"),
    );
    let db = txn_db_line(pg.port(), "pool_size=8");
    let proxy = Proxy::start(&ini(&db, EXTRA), &userlist("")).await;

    let pg2 = pg.clone();
    let (killed, ledger) = load_through(
        &proxy,
        &pg,
        "kill9",
        24,
        Duration::from_millis(1500),
        || async move {
            tokio::task::spawn_blocking(move || {
                pg2.kill_postmaster();
                pg2.start_again();
            })
            .await
            .expect("kill -9 and restart");
        },
    )
    .await;
    assert_tally("postmaster SIGKILL", &killed, &ledger, 24);

    let pg3 = pg.clone();
    let (fast, ledger) = load_through(
        &proxy,
        &pg,
        "fast",
        24,
        Duration::from_millis(1500),
        || async move {
            tokio::task::spawn_blocking(move || {
                pg3.stop("fast");
                pg3.start_again();
            })
            .await
            .expect("fast shutdown and restart");
        },
    )
    .await;
    assert_tally("fast shutdown", &fast, &ledger, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_random_server_connections_loses_and_doubles_nothing() {
    let pg = PgServer::shared();
    let marker = unique_name("chaos_term");
    let db = txn_db_line(pg.port(), &format!("pool_size=6 application_name={marker}"));
    let proxy = Proxy::start(&ini(&db, EXTRA), &userlist("")).await;
    let (tally, ledger) = load_through(
        &proxy,
        pg,
        "terminate",
        24,
        Duration::from_millis(500),
        || async {
            let sql = format!(
                "select count(pg_terminate_backend(pid)) from (select pid from pg_stat_activity \
             where application_name = '{marker}' order by random() limit 2) s"
            );
            let mut terminated = 0;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let out = tokio::task::spawn_blocking({
                    let sql = sql.clone();
                    move || PgServer::shared().admin_sql(&sql)
                })
                .await
                .expect("terminate");
                terminated += out.trim().parse::<usize>().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("chaos terminate: {terminated} server connections terminated");
            assert!(terminated >= 5, "the fault was injected ({terminated})");
        },
    )
    .await;
    assert_tally("pg_terminate_backend", &tally, &ledger, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_path_that_stalls_then_drops_recovers_without_losing_writes() {
    let pg = PgServer::shared();
    let relay = Relay::start(pg.addr()).await;
    let db = txn_db_line(relay.addr.port(), "pool_size=6");
    // Linked clients whose server goes silent are cut by query_timeout, not left hanging.
    let extra = format!("{EXTRA}\nquery_timeout = 3\nserver_connect_timeout = 2");
    let proxy = Proxy::start(&ini(&db, &extra), &userlist("")).await;
    let (tally, ledger) = load_through(
        &proxy,
        pg,
        "relay",
        16,
        Duration::from_millis(500),
        || async {
            relay.stall();
            tokio::time::sleep(Duration::from_secs(2)).await;
            relay.drop_all();
            tokio::time::sleep(Duration::from_millis(500)).await;
            relay.heal();
        },
    )
    .await;
    assert_tally("relay stall+drop", &tally, &ledger, 16);
    assert!(
        relay.accepted.load(Ordering::Relaxed) > 6,
        "pgfunnel reconnected through the relay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_past_query_wait_timeout_gives_clear_errors_then_recovers() {
    let pg = PgServer::shared();
    let db = txn_db_line(pg.port(), "pool_size=2");
    let extra = "max_client_conn = 500\nquery_wait_timeout = 1";
    let proxy = Proxy::start(&ini(&db, extra), &userlist("")).await;
    let conn_str = proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app");
    // Two clients hold both servers in open transactions for longer than the wait limit.
    let holders: Vec<_> = join_all((0..2).map(|_| connect(&conn_str))).await;
    for h in &holders {
        let h = h.as_ref().expect("holder connects");
        h.batch_execute("BEGIN; SET LOCAL chaos.owner = 'holder'; SELECT 1")
            .await
            .expect("holder begins");
    }
    let started = Instant::now();
    let waiters = (0..30).map(|_| {
        let conn_str = conn_str.clone();
        async move {
            let c = connect(&conn_str).await.expect("login needs no server");
            let t = Instant::now();
            let r = tokio::time::timeout(OP_TIMEOUT, c.simple_query("select 1")).await;
            (r, t.elapsed())
        }
    });
    let results = join_all(waiters).await;
    for (r, took) in &results {
        let e = r
            .as_ref()
            .expect("no waiter hangs")
            .as_ref()
            .expect_err("no server was free");
        assert!(
            message(e).contains("query_wait_timeout") || e.is_closed(),
            "clear error: {e:?}"
        );
        assert!(
            *took >= Duration::from_millis(900) && *took < Duration::from_secs(4),
            "refused at query_wait_timeout, took {took:?}"
        );
    }
    eprintln!(
        "chaos exhausted: 30 waiters refused at query_wait_timeout in {:?}",
        started.elapsed()
    );
    for h in &holders {
        let h = h.as_ref().expect("holder");
        h.batch_execute("COMMIT").await.expect("holder commits");
    }
    wait_serving(&conn_str).await;
    assert_servers_clean(&conn_str, 2).await;
    // Everyone is served again once servers are free.
    let after = join_all((0..20).map(|_| {
        let conn_str = conn_str.clone();
        async move {
            let c = connect(&conn_str).await.expect("connect");
            c.simple_query("select 1").await.is_ok()
        }
    }))
    .await;
    assert!(after.iter().all(|ok| *ok), "served after the holders left");
}
