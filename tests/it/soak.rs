//! Soak: the pgfunnel binary under mixed traffic (checked transactional writes in plain
//! TCP, short TLS sessions) while, in turn, Postgres restarts (fast, then SIGKILL), the
//! client certificate is rotated and reloaded (SIGHUP), and a bare SIGHUP reload runs.
//! Reports errors by kind and the binary's resident memory over time; asserts lost = 0,
//! doubled = 0, no hangs, TLS keeps working across rotations and memory stays bounded.
//!
//! `PGFUNNEL_SOAK_SECS` (default 20, the test-suite variant), `PGFUNNEL_SOAK_PERIOD`
//! (seconds between faults, default 5). scripts/soak.sh runs the 2-minute CI variant and
//! the one-hour run.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode;

use crate::chaos::{assert_servers_clean, assert_tally, ledger_table, run_workload, Ledger};
use crate::harness::*;
use crate::tls::{tls_connect, ClientTls};

fn env_secs(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The pgfunnel binary as a child process; killed when dropped.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Binary {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn sighup(&self) {
        // SAFETY: signalling our own child process by its pid.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP: {}", std::io::Error::last_os_error());
    }

    fn rss_kib(&self) -> u64 {
        vm_rss_kib_of(self.0.id())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_traffic_with_restarts_reloads_and_certificate_rotation() {
    let duration = env_secs("PGFUNNEL_SOAK_SECS", 20.0);
    let period = env_secs("PGFUNNEL_SOAK_PERIOD", 5.0);
    let pg = Arc::new(
        tokio::task::spawn_blocking(|| {
            let pg = PgServer::start();
            pg.admin_sql("ALTER SYSTEM SET synchronous_commit = on");
            pg.admin_sql("SELECT pg_reload_conf()");
            pg
        })
        .await
        .expect("start Postgres"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("soak CA");
    let ca_pem = ca.pem();
    let (cert, key) = ca
        .issue("pgfunnel", &["localhost"])
        .write(dir.path(), "proxy");
    let port = free_port();
    let ini = format!(
        "[databases]\napp = host=127.0.0.1 port={} dbname=app user={SCRAM_USER} password={SCRAM_PASSWORD} pool_size=8\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = userlist.txt\npool_mode = transaction\nmax_client_conn = 200\n\
         query_wait_timeout = 30\nserver_tls_sslmode = disable\nserver_login_retry = 0\n\
         client_tls_sslmode = allow\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n\
         logfile = {}\n",
        pg.port(),
        cert.display(),
        key.display(),
        dir.path().join("pgfunnel.log").display()
    );
    let ini_path = dir.path().join("pgfunnel.ini");
    std::fs::write(&ini_path, ini).expect("write ini");
    std::fs::write(dir.path().join("userlist.txt"), "\"plain_user\" \"\"\n").expect("userlist");
    let binary = Binary(
        Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
            .arg("-q")
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgfunnel"),
    );
    let conn_str = format!(
        "host=127.0.0.1 port={port} user={PLAIN_USER} password=x dbname=app connect_timeout=20"
    );
    wait_until_async(Duration::from_secs(20), "pgfunnel listening", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let table = ledger_table(&pg, "soak");
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_workload(
        conn_str.clone(),
        table.clone(),
        ledger.clone(),
        16,
        usize::MAX,
        stop.clone(),
    ));
    let tls_errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let tls_ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tls_clients = (0..4).map(|_| {
        let (stop, errors, ok, ca_pem) = (
            stop.clone(),
            tls_errors.clone(),
            tls_ok.clone(),
            ca_pem.clone(),
        );
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        tokio::spawn(async move {
            let tls = ClientTls {
                ca_pem: Some(&ca_pem),
                cert: None,
            };
            while !stop.load(Ordering::Relaxed) {
                let attempt = async {
                    let c =
                        tls_connect(addr, PLAIN_USER, "x", SslMode::Require, &tls, false).await?;
                    c.simple_query("select 1").await.map(|_| ())
                };
                match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                    Ok(Ok(())) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        let kind = e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| {
                            if e.is_closed() {
                                "closed".into()
                            } else {
                                e.to_string()
                            }
                        });
                        *errors
                            .lock()
                            .expect("lock")
                            .entry(format!("tls {kind}"))
                            .or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {
                        *errors
                            .lock()
                            .expect("lock")
                            .entry("tls hang".into())
                            .or_default() += 1;
                    }
                }
            }
        })
    });
    let tls_clients: Vec<_> = tls_clients.collect();

    let started = Instant::now();
    let rss_start = binary.rss_kib();
    let mut rss_max = rss_start;
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut next_fault = started + period;
    let mut step = 0usize;
    let mut next_report = started;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = binary.rss_kib();
        rss_max = rss_max.max(rss);
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let acked = ledger.check_counts().0;
            eprintln!(
                "soak t={:>5.1}s rss={rss} KiB acked={acked} tls_ok={} errors={:?} {:?}",
                started.elapsed().as_secs_f64(),
                tls_ok.load(Ordering::Relaxed),
                ledger.errors(),
                tls_errors.lock().expect("lock")
            );
        }
        if Instant::now() < next_fault {
            continue;
        }
        next_fault += period;
        let kind = [
            "postgres fast restart",
            "certificate rotation + SIGHUP",
            "SIGHUP reload",
            "postgres SIGKILL + restart",
        ][step % 4];
        step += 1;
        *faults.entry(kind).or_default() += 1;
        match step % 4 {
            1 => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || {
                    pg.stop("fast");
                    pg.start_again();
                })
                .await
                .expect("restart");
            }
            2 => {
                ca.issue("pgfunnel", &["localhost"])
                    .write(dir.path(), "proxy");
                binary.sighup();
            }
            3 => binary.sighup(),
            _ => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || {
                    pg.kill_postmaster();
                    pg.start_again();
                })
                .await
                .expect("kill and restart");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("workload stops in time")
        .expect("workload");
    for t in tls_clients {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("tls clients stop in time")
            .expect("tls client");
    }
    assert_servers_clean(&conn_str, 4).await;
    let rss_end = binary.rss_kib();
    let tally = ledger.check(&pg, &table).await;
    let tls_errors = tls_errors.lock().expect("lock").clone();
    eprintln!(
        "soak done after {:?}: faults {faults:?}; tls sessions ok {} errors {tls_errors:?}; \
         VmRSS start {rss_start} max {rss_max} end {rss_end} KiB",
        started.elapsed(),
        tls_ok.load(Ordering::Relaxed)
    );
    assert_tally("soak", &tally, &ledger, 16);
    assert!(!tls_errors.contains_key("tls hang"), "a TLS session hung");
    assert!(
        tls_ok.load(Ordering::Relaxed) > 0,
        "TLS sessions were served"
    );
    assert!(
        rss_max < rss_start + 128 * 1024,
        "memory bounded: start {rss_start} max {rss_max} KiB"
    );
}
