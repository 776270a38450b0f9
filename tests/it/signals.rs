//! Signals on the built binary, with PgBouncer 1.23+ meanings: SIGINT and SIGTERM let a
//! running transaction commit, SIGQUIT does not wait, SIGHUP reloads, SIGUSR1/SIGUSR2 pause
//! and resume.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::*;
use crate::proxy::{db_line, ini, userlist};

/// pgfunnel started as a child process on a free port, killed on drop (even when a test
/// panics). Other test modules use it to measure the binary's own memory, apart from
/// whatever else runs in this test process.
pub(crate) struct Binary {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn start(pool_opts: &str) -> Binary {
        Binary::start_with(
            &db_line("app", "app", pool_opts),
            "admin_users = plain_user",
        )
    }

    /// Starts with these `[databases]` lines and `extra` `[pgbouncer]` lines (see `ini`),
    /// the harness users in the auth_file and a log file in its temp dir; returns once it
    /// accepts TCP connections.
    pub(crate) fn start_with(databases: &str, extra: &str) -> Binary {
        PgServer::shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let text = ini(
            databases,
            &format!(
                "listen_port = {port}\nlogfile = {}/pgfunnel.log\n{extra}",
                dir.path().display()
            ),
        );
        std::fs::write(dir.path().join("pgfunnel.ini"), text).expect("ini");
        std::fs::write(dir.path().join("userlist.txt"), userlist("")).expect("userlist");
        let child = Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
            .arg("-q")
            .arg(dir.path().join("pgfunnel.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgfunnel");
        let b = Binary { child, port, dir };
        wait_until_msg(Duration::from_secs(20), "pgfunnel to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        b
    }

    /// The loopback address it listens on.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        vm_rss_kib_of(self.child.id())
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    async fn wait_exit(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        while !self.exited() {
            assert!(
                started.elapsed() < within,
                "pgfunnel did not exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        started.elapsed()
    }

    fn log(&self) -> String {
        tail_file(&self.dir.path().join("pgfunnel.log"), 4000)
    }

    pub(crate) async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let s = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=5",
            self.port
        );
        let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(c)
    }
}

fn table(prefix: &str) -> String {
    let t = unique_name(prefix);
    PgServer::shared().admin_sql_in(
        "app",
        &format!("create table {t}(v int); grant all on {t} to {SCRAM_USER}"),
    );
    t
}

fn rows_in(t: &str) -> String {
    PgServer::shared()
        .admin_sql_in("app", &format!("select count(*) from {t}"))
        .trim()
        .to_owned()
}

/// Starts a transaction with one insert through pgfunnel, sends `sig`, then commits.
async fn commit_across_signal(sig: i32, pool_opts: &str) -> (Binary, String, Client) {
    let b = Binary::start(pool_opts);
    let t = table("sig");
    let c = b
        .connect(SCRAM_USER, SCRAM_PASSWORD, "app")
        .await
        .expect("connect");
    c.batch_execute(&format!("begin; insert into {t} values (1)"))
        .await
        .expect("begin+insert");
    b.signal(sig);
    // Wait for the signal to be handled: new connections are refused once shutdown began.
    wait_until_async(
        Duration::from_secs(10),
        "pgfunnel to stop accepting",
        || async { b.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await.is_err() },
    )
    .await;
    c.batch_execute("commit")
        .await
        .expect("the running transaction may commit");
    assert_eq!(rows_in(&t), "1");
    (b, t, c)
}

#[tokio::test]
async fn sigint_lets_the_running_transaction_commit_then_exits() {
    let (mut b, _t, _c) = commit_across_signal(libc::SIGINT, "pool_mode=transaction").await;
    // WAIT_FOR_SERVERS: the server came back, so pgfunnel exits although the client stays.
    b.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn sigterm_lets_the_transaction_commit_and_exits_when_the_client_leaves() {
    let (mut b, _t, c) = commit_across_signal(libc::SIGTERM, "pool_mode=transaction").await;
    assert!(
        !b.exited(),
        "WAIT_FOR_CLIENTS keeps serving connected clients"
    );
    c.simple_query("select 1")
        .await
        .expect("a connected client is still served");
    drop(c);
    b.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn second_sigterm_exits_at_once() {
    let b = Binary::start("pool_mode=transaction");
    let c = b
        .connect(SCRAM_USER, SCRAM_PASSWORD, "app")
        .await
        .expect("connect");
    c.simple_query("select 1").await.expect("query");
    b.signal(libc::SIGTERM);
    wait_until_async(Duration::from_secs(10), "shutdown to begin", || async {
        b.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await.is_err()
    })
    .await;
    let mut b = b;
    assert!(!b.exited());
    b.signal(libc::SIGTERM);
    b.wait_exit(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sigquit_does_not_wait_for_a_running_transaction() {
    let mut b = Binary::start("pool_mode=transaction");
    let t = table("quit");
    let c = b
        .connect(SCRAM_USER, SCRAM_PASSWORD, "app")
        .await
        .expect("connect");
    c.batch_execute(&format!("begin; insert into {t} values (1)"))
        .await
        .expect("begin");
    b.signal(libc::SIGQUIT);
    b.wait_exit(Duration::from_secs(5)).await;
    assert!(
        c.batch_execute("commit").await.is_err(),
        "the transaction was cut off"
    );
    wait_until(Duration::from_secs(10), || rows_in(&t) == "0");
}

#[tokio::test]
async fn sighup_reloads_and_sigusr1_pauses_until_sigusr2() {
    let b = Binary::start("pool_mode=transaction");
    let admin = b
        .connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer")
        .await
        .expect("console");
    let ini = b.dir.path().join("pgfunnel.ini");
    let text = std::fs::read_to_string(&ini).expect("ini");
    std::fs::write(&ini, format!("{text}default_pool_size = 9\n")).expect("rewrite");
    b.signal(libc::SIGHUP);
    wait_until_async(
        Duration::from_secs(10),
        "SIGHUP to reload default_pool_size",
        || async {
            let rows = admin
                .simple_query("SHOW CONFIG")
                .await
                .expect("show config");
            rows.iter().any(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    r.get(0) == Some("default_pool_size") && r.get(1) == Some("9")
                }
                _ => false,
            })
        },
    )
    .await;
    b.signal(libc::SIGUSR1);
    wait_until_async(Duration::from_secs(10), "SIGUSR1 to pause", || async {
        paused(&admin).await == "yes"
    })
    .await;
    b.signal(libc::SIGUSR2);
    wait_until_async(Duration::from_secs(10), "SIGUSR2 to resume", || async {
        paused(&admin).await == "no"
    })
    .await;
}

async fn paused(admin: &Client) -> String {
    let rows = admin.simple_query("SHOW STATE").await.expect("state");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("paused") => {
                r.get(1).map(str::to_owned)
            }
            _ => None,
        })
        .unwrap_or_default()
}
