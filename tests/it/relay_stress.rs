//! Relay stress: every byte arrives and every exchange completes, whatever the sizes, the
//! split points and the pace of either side.
//!
//! - A relay whose writers buffer like TLS (bytes taken, Ok returned, nothing sent yet)
//!   still delivers everything, both ways (deterministic, no Postgres).
//! - The workload that stalled (issue 14.8): one session-mode connection running many
//!   COPY FROM STDIN of up to 20 MB in 10 kB rows with DDL, COPY TO and queries in
//!   between, over server TLS; and transaction-mode COPYs after DDL in one transaction.
//! - A randomized run: message sizes from 0 to 64 MB, client writes split at random
//!   (down to 1 byte), slow and fast readers on both sides (a forwarder in front of
//!   Postgres), TLS and plaintext to the server, session and transaction mode, clients
//!   reconnecting so relay buffers are reused.
//!
//! A hang is a failure (every exchange has a timeout). The seed is printed; set
//! `PGFUNNEL_STRESS_SEED` to replay it. `PGFUNNEL_STRESS_SECS` (default 30) and
//! `PGFUNNEL_STRESS_MB` (default 200) bound the randomized run's wall time and traffic;
//! `PGFUNNEL_STALL_MB` (default 60) the COPY workload's; `PGFUNNEL_STRESS_OP_SECS`
//! (default 90) is how long one exchange may take before it counts as a hang.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgfunnel::client::params::Reported;
use pgfunnel::client::relay::{IdleEnd, LinkState, Relay, RelayEnd, RelayMode};
use pgfunnel::pool::prepared::ServerStatements;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

use crate::harness::*;
use crate::proxy::*;

mod chop;
mod ops;

use chop::{Buffering, Chop};
use ops::CopyPlan;

/// Longest one exchange may take before it counts as a hang (a 64 MB echo through a slow
/// reader on a loaded 2-core machine takes seconds, a stall forever);
/// `PGFUNNEL_STRESS_OP_SECS` overrides it.
fn op_timeout() -> Duration {
    Duration::from_secs(env_num("PGFUNNEL_STRESS_OP_SECS", 90))
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's seed (`PGFUNNEL_STRESS_SEED` or random), printed so a failure replays.
fn seed(test: &str) -> u64 {
    let seed = env_num("PGFUNNEL_STRESS_SEED", rand::random());
    println!("{test}: PGFUNNEL_STRESS_SEED={seed}");
    seed
}

/// Runs one exchange under `OP_TIMEOUT`; a hang or an error fails the test with the seed.
async fn bounded(seed: u64, what: &str, op: impl Future<Output = ops::OpResult>) {
    let limit = op_timeout();
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("seed {seed}: {what}: {e}"),
        Err(_) => panic!("seed {seed}: {what}: no answer within {limit:?} (stalled)"),
    }
}

/// Reads exactly `len` bytes; `None` when they do not come within 20 s (or the pipe ends).
async fn read_within(io: &mut tokio::io::DuplexStream, len: usize) -> Option<Vec<u8>> {
    let mut got = vec![0u8; len];
    let read = tokio::time::timeout(Duration::from_secs(20), io.read_exact(&mut got)).await;
    matches!(read, Ok(Ok(_))).then_some(got)
}

/// Where two byte strings first differ.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_byte_a_buffering_writer_took() {
    // Small pipes under writers holding up to 64 kB: the last bytes of each message are
    // taken by the writer while the pipe below is full, as tokio-rustls takes them.
    let (client, mut client_far) = tokio::io::duplex(1024);
    let (server, mut server_far) = tokio::io::duplex(1024);
    let (mut client, mut server) = (
        Buffering::new(client, 1 << 16),
        Buffering::new(server, 1 << 16),
    );
    let mut relay = Relay::new(1 << 30);
    relay.mode = RelayMode::Transaction;
    let mut rng = StdRng::seed_from_u64(7);
    let mut query = ops::letters(&mut rng, 100_000);
    query.push(0);
    let request = msg(b'Q', &query);
    let mut reply = msg(b'D', &ops::letters(&mut rng, 100_000));
    reply.extend(msg(b'C', b"SELECT 1\0"));
    reply.extend(msg(b'Z', b"I"));
    // The client's message fits in the pipes and buffers on its way: its write completes
    // before the server reads a byte.
    let sent = request.clone();
    let writer = tokio::spawn(async move {
        client_far.write_all(&sent).await.expect("client write");
        client_far
    });
    assert!(matches!(
        relay.wait_for_request(&mut client).await,
        IdleEnd::Request
    ));
    let relaying = tokio::spawn(async move {
        let (mut p, mut s, mut ps) = (
            HashMap::new(),
            Reported::default(),
            ServerStatements::default(),
        );
        let mut link = LinkState {
            params: &mut p,
            seen: &mut s,
            prepared: &mut ps,
        };
        relay.run(&mut client, &mut server, true, &mut link).await
    });
    let mut client_far = writer.await.expect("client writer");
    let got = read_within(&mut server_far, request.len()).await;
    let got = got.expect("the server never got the client's last bytes");
    assert!(
        got == request,
        "server got other bytes from {:?}",
        first_diff(&got, &request)
    );
    let answer = reply.clone();
    let replying = tokio::spawn(async move {
        server_far.write_all(&answer).await.expect("server write");
        server_far
    });
    let got = read_within(&mut client_far, reply.len()).await;
    let got = got.expect("the client never got the server's last bytes");
    assert!(
        got == reply,
        "client got other bytes from {:?}",
        first_diff(&got, &reply)
    );
    let _server_far = replying.await.expect("server writer");
    let end = tokio::time::timeout(Duration::from_secs(20), relaying).await;
    let end = end.expect("relay ends").expect("relay task");
    assert!(matches!(end, RelayEnd::Released), "{end:?}");
}

/// A private Postgres with TLS on (self-signed for `localhost`; pgfunnel's `prefer` and
/// `require` check no certificate).
fn tls_postgres() -> PgServer {
    let pg = PgServer::start();
    let ca = TestCa::new("relay stress CA");
    let leaf = ca.issue("postgres", &["localhost"]);
    pg.enable_ssl(&leaf.cert_pem, &leaf.key_pem, None, "");
    pg
}

async fn proxy_to(port: u16, mode: &str, server_tls: &str) -> Proxy {
    let db = format!("app = host=127.0.0.1 port={port} dbname=app");
    let extra = format!("pool_mode = {mode}\nserver_tls_sslmode = {server_tls}\n");
    Proxy::start(&ini(&db, &extra), &userlist("")).await
}

/// Whether this client's server connection is encrypted (asked from Postgres).
async fn server_ssl(client: &Client) -> bool {
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    client
        .query_one(sql, &[])
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_heavy_connection_over_server_tls_never_stalls() {
    let seed = seed("copy_heavy_connection_over_server_tls_never_stalls");
    let mut rng = StdRng::seed_from_u64(seed);
    let pg = tokio::task::spawn_blocking(tls_postgres)
        .await
        .expect("start Postgres");
    let budget = (env_num("PGFUNNEL_STALL_MB", 60) as usize) << 20;
    for (mode, tls, max_copy) in [
        ("session", "prefer", 20 << 20),
        ("transaction", "require", 10 << 20),
    ] {
        let proxy = proxy_to(pg.port(), mode, tls).await;
        let client = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
        assert!(server_ssl(&client).await, "{mode}: server TLS expected");
        let in_txn = mode == "transaction";
        let mut spent = 0;
        let mut round = 0;
        while spent < budget / 2 {
            round += 1;
            let table = unique_name("stall_copy");
            let plan = CopyPlan {
                total: rng.gen_range(1..=max_copy),
                row_len: 10_000,
                max_message: rng.gen_range(4096..=256 * 1024),
            };
            spent += plan.total;
            let what = format!(
                "{mode} round {round}: COPY FROM STDIN of {} bytes",
                plan.total
            );
            bounded(
                seed,
                &what,
                ops::copy_in(&client, &table, &plan, &mut rng, in_txn),
            )
            .await;
            let what = format!("{mode} round {round}: COPY TO");
            bounded(seed, &what, ops::copy_out(&client, 200, 10_000)).await;
            bounded(
                seed,
                &format!("{mode} round {round}: DDL"),
                ops::ddl(&client, &table),
            )
            .await;
            bounded(
                seed,
                &format!("{mode} round {round}: SELECT"),
                ops::select(&client, 50, 1000),
            )
            .await;
        }
    }
}

/// One of the four pgfunnels the randomized run spreads its clients over.
struct Target {
    proxy: Proxy,
    label: String,
}

async fn chopped_client(proxy: &Proxy, seed: u64) -> Client {
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect to pgfunnel");
    let mut config = tokio_postgres::Config::new();
    config
        .user(SCRAM_USER)
        .password(SCRAM_PASSWORD)
        .dbname("app");
    let (client, conn) = config
        .connect_raw(Chop::new(tcp, seed), NoTls)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: login through chopped socket: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A size from 0 to `max` whose logarithm is uniform (many small, a few huge), taken
/// from the shared byte budget (0 once it is spent).
fn size(rng: &mut StdRng, max: usize, budget: &AtomicI64) -> usize {
    let want = if rng.gen_ratio(1, 12) {
        0
    } else {
        (2f64.powf(rng.gen_range(0.0..(max as f64).log2())) as usize).min(max)
    };
    let left = budget.fetch_sub(want as i64, Ordering::Relaxed);
    want.min(left.max(0) as usize)
}

/// One client of the randomized run: connects, runs a few random exchanges, leaves; again
/// until the deadline or the byte budget.
async fn stress_worker(
    targets: Arc<Vec<Target>>,
    (run_seed, seed): (u64, u64),
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0;
    while Instant::now() < deadline && budget.load(Ordering::Relaxed) > 0 {
        let target = &targets[rng.gen_range(0..targets.len())];
        let client = chopped_client(&target.proxy, rng.gen()).await;
        for _ in 0..rng.gen_range(1..=4) {
            let op = rng.gen_range(0..6);
            let n = size(&mut rng, 64 << 20, &budget);
            let what = format!("worker seed {seed}, {}, op {op}, {n} bytes", target.label);
            let table = unique_name("stress");
            let in_txn = op == 1;
            let exchange = async {
                match op {
                    0 | 1 => {
                        let plan = CopyPlan {
                            total: n,
                            row_len: rng.gen_range(0..=10_000),
                            max_message: if rng.gen_bool(0.2) {
                                64 << 20
                            } else {
                                rng.gen_range(1..=512 * 1024)
                            },
                        };
                        ops::copy_in(&client, &table, &plan, &mut rng, in_txn).await
                    }
                    2 => {
                        let width = rng.gen_range(0..=20_000);
                        ops::copy_out(&client, n / (width + 8) + 1, width).await
                    }
                    3 => {
                        let width = rng.gen_range(0..=50_000);
                        ops::select(&client, (n / (width + 8)).min(20_000) + 1, width).await
                    }
                    4 => ops::echo(&client, n, &mut rng).await,
                    _ => ops::ddl(&client, &table).await,
                }
            };
            bounded(run_seed, &what, exchange).await;
            done += 1;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_relay_stress_delivers_every_byte() {
    let seed = seed("randomized_relay_stress_delivers_every_byte");
    let secs = env_num("PGFUNNEL_STRESS_SECS", 30);
    let budget = Arc::new(AtomicI64::new(
        (env_num("PGFUNNEL_STRESS_MB", 200) << 20) as i64,
    ));
    let pg = tokio::task::spawn_blocking(tls_postgres)
        .await
        .expect("start Postgres");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut targets = Vec::new();
    for mode in ["session", "transaction"] {
        for tls in ["require", "disable"] {
            let port = chop::forward(pg.addr(), rng.gen()).await.port();
            let proxy = proxy_to(port, mode, tls).await;
            let label = format!("{mode} mode, server TLS {tls}");
            let c = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
            assert_eq!(server_ssl(&c).await, tls == "require", "{label}");
            targets.push(Target { proxy, label });
        }
    }
    let targets = Arc::new(targets);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(stress_worker(
                targets.clone(),
                (seed, rng.gen()),
                deadline,
                budget.clone(),
            ))
        })
        .collect();
    let mut exchanges = 0;
    for w in workers {
        exchanges += w
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    println!("seed {seed}: {exchanges} exchanges completed");
    assert!(
        exchanges >= 3,
        "seed {seed}: only {exchanges} exchanges ran"
    );
}
