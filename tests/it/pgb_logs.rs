//! The log lines PgBouncer operators grep for (issue 16, point 10), from the built binary's
//! logfile: `closing because: <reason> (age=<n>s)` for clients and servers,
//! `new connection to server (from …)`, `taking connection from reserve_pool`,
//! `registered new auto-database`, `connect failed`, `server DNS lookup failed`,
//! `server login failed: …`, `cleaning up idle pool`, in text and in JSON.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::proxy::*;

struct Running {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`; returns the log.
    fn wait_for(&self, needle: &str) -> String {
        let mut text = String::new();
        wait_until_msg(Duration::from_secs(20), needle, || {
            text = self.log_text();
            text.contains(needle)
        });
        text
    }

    /// Waits until the log holds `needle` `n` times; returns the log.
    fn wait_for_count(&self, needle: &str, n: usize) -> String {
        let mut text = String::new();
        wait_until_msg(Duration::from_secs(20), needle, || {
            text = self.log_text();
            text.matches(needle).count() >= n
        });
        text
    }

    fn conn(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=20",
            self.port
        )
    }
}

fn start(databases: &str, extra: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("pgfunnel.log");
    let text = format!(
        "[databases]\n{databases}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         unix_socket_dir =\nauth_file = userlist.txt\nlogfile = {}\n{extra}\n",
        log.display()
    );
    std::fs::write(dir.path().join("pgfunnel.ini"), text).expect("ini");
    std::fs::write(dir.path().join("userlist.txt"), userlist("")).expect("userlist");
    let child = Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg("-q")
        .arg(dir.path().join("pgfunnel.ini"))
        .env_remove("PGFUNNEL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgfunnel");
    wait_until_msg(Duration::from_secs(20), "pgfunnel to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Running {
        child,
        port,
        log,
        _dir: dir,
    }
}

async fn connect(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(c)
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn text_log_uses_pgbouncers_phrases_for_connections_and_closes() {
    let pg = PgServer::shared();
    let forced = format!("user={SCRAM_USER} password={SCRAM_PASSWORD}");
    let databases = [
        db_line(
            "app",
            "app",
            &format!("{forced} pool_size=1 reserve_pool_size=1"),
        ),
        db_line(
            "badpw",
            "app",
            &format!("user={SCRAM_USER} password=not_it"),
        ),
        format!("nodns = host=no-such-host.invalid dbname=app {forced}"),
        format!(
            "down = host=127.0.0.1 port={} dbname=app {forced}",
            closed_port()
        ),
        format!("* = host=127.0.0.1 port={} {forced}", pg.port()),
    ]
    .join("\n");
    let extra = "pool_mode = transaction\nreserve_pool_timeout = 0.2\nquery_wait_timeout = 2\n\
                 pool_idle_timeout = 1\nserver_idle_timeout = 1\nadmin_users = plain_user";
    let p = start(&databases, extra);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let a = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"))
            .await
            .expect("a");
        let b = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"))
            .await
            .expect("b");
        // a holds the one pooled server; b waits past reserve_pool_timeout.
        a.simple_query("BEGIN").await.expect("begin");
        b.simple_query("select 1")
            .await
            .expect("served from the reserve");
        a.simple_query("COMMIT").await.expect("commit");
        drop((a, b));
        let e = connect(&p.conn(PLAIN_USER, "wrong", "app"))
            .await
            .expect_err("wrong password");
        assert_eq!(sqlstate(&e), "28P01");
        for db in ["badpw", "nodns", "down"] {
            assert!(
                connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, db))
                    .await
                    .is_err(),
                "{db}"
            );
        }
        let auto = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, APP2_DB))
            .await
            .expect("auto db");
        auto.simple_query("select 1").await.expect("query");
        let victim = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"))
            .await
            .expect("victim");
        victim.simple_query("select 1").await.expect("query");
        let console = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer"))
            .await
            .expect("console");
        // A client whose socket closes without Terminate (its driver task is gone).
        let (vanishing, connection) = tokio_postgres::connect(
            &p.conn(PLAIN_USER, PLAIN_PASSWORD, APP2_DB),
            tokio_postgres::NoTls,
        )
        .await
        .expect("vanishing client");
        let driver = tokio::spawn(connection);
        vanishing.simple_query("select 1").await.expect("query");
        driver.abort();
        let _ = driver.await;
        console.simple_query("KILL app").await.expect("KILL");
    });
    // The lines that come last, each awaited (the log only grows).
    for needle in [
        "cleaning up idle pool for user",
        "closing because: server idle timeout (age=",
        "closing because: admin forced disconnect (age=",
        "closing because: client unexpected eof (age=",
    ] {
        p.wait_for(needle);
    }
    let text = p.log_text();
    for phrase in [
        "closing because: client close request (age=",
        "closing because: client unexpected eof (age=",
        "closing because: password authentication failed (age=0s)",
        "closing because: server login failed (age=",
        "closing because: login failed (age=",
        "closing because: server DNS lookup failed (age=0s)",
        "closing because: connect failed (age=0s)",
        "new connection to server (from 127.0.0.1:",
        "taking connection from reserve_pool",
        &format!("registered new auto-database: {APP2_DB}"),
        &format!(
            "server login failed: FATAL password authentication failed for user \"{SCRAM_USER}\""
        ),
        "because: pool idle timeout (age=",
        "closing because: admin forced disconnect (age=",
    ] {
        assert!(text.contains(phrase), "missing {phrase:?} in:\n{text}");
    }
    assert!(!text.contains("not_it"), "a password reached the log");
}

#[test]
fn json_log_keeps_its_fields_with_the_same_reason_strings() {
    PgServer::shared();
    let forced = format!("user={SCRAM_USER} password={SCRAM_PASSWORD}");
    let p = start(&db_line("app", "app", &forced), "log_format = json");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"))
            .await
            .expect("login");
        c.simple_query("select 1").await.expect("query");
        drop(c);
        let e = connect(&p.conn(PLAIN_USER, "wrong", "app"))
            .await
            .expect_err("wrong password");
        assert_eq!(sqlstate(&e), "28P01");
    });
    let text = p.wait_for("password authentication failed (age=");
    let line = text
        .lines()
        .find(|l| l.contains("closing because: password authentication failed"))
        .expect("the close line");
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    let flat = v.to_string();
    assert!(
        flat.contains("\"reason\":\"password authentication failed\""),
        "{flat}"
    );
    assert!(flat.contains("\"age\":0"), "{flat}");
    assert!(
        text.contains("new connection to server (from 127.0.0.1:"),
        "{text}"
    );
}

/// cl_waiting of the `app` pool, from the console.
async fn waiting_clients(console: &tokio_postgres::Client) -> usize {
    let rows = console
        .simple_query("SHOW POOLS")
        .await
        .expect("SHOW POOLS");
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("app") => {
                r.get("cl_waiting").and_then(|v| v.parse::<usize>().ok())
            }
            _ => None,
        })
        .sum()
}

#[test]
fn a_client_that_vanishes_during_login_or_while_waiting_for_a_server_is_an_unexpected_eof() {
    use std::io::{Read, Write};
    PgServer::shared();
    let forced = format!("user={SCRAM_USER} password={SCRAM_PASSWORD}");
    let databases = db_line("app", "app", &format!("{forced} pool_size=1"));
    let p = start(
        &databases,
        "pool_mode = transaction\nauth_type = scram-sha-256\nadmin_users = plain_user",
    );
    let eof = "closing because: client unexpected eof (age=";
    // During login: the password is asked for, the socket closes instead.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    let startup = startup_message(&[("user", PLAIN_USER), ("database", "app")], 3 << 16);
    s.write_all(&startup).expect("startup");
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("an authentication request");
    assert_eq!(first[0], b'R');
    drop(s);
    let text = p.wait_for(eof);
    assert!(!text.contains("closing because: bad packet"), "{text}");
    assert!(
        !text.contains("closing because: client close request"),
        "{text}"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let holder = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"))
            .await
            .expect("holder");
        holder.simple_query("BEGIN").await.expect("begin");
        let (waiter, connection) = tokio_postgres::connect(
            &p.conn(PLAIN_USER, PLAIN_PASSWORD, "app"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("waiter");
        let driver = tokio::spawn(connection);
        let query = tokio::spawn(async move { waiter.simple_query("select 1").await.is_ok() });
        let console = connect(&p.conn(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer"))
            .await
            .expect("console");
        let mut waiting = 0;
        for _ in 0..500 {
            waiting = waiting_clients(&console).await;
            if waiting == 1 {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        assert_eq!(waiting, 1, "the second client waits for the one server");
        // Its socket closes while it waits (the driver is gone, no Terminate).
        driver.abort();
        let _ = driver.await;
        assert!(!query.await.unwrap_or(false), "the query never ran");
        holder.simple_query("COMMIT").await.expect("commit");
        // Read while the holder and the console are still connected (their closes later
        // are close requests).
        let text = tokio::task::block_in_place(|| p.wait_for_count(eof, 2));
        assert!(
            !text.contains("closing because: client close request"),
            "{text}"
        );
        holder
            .simple_query("select 1")
            .await
            .expect("the holder goes on");
    });
}
