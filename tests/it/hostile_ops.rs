//! Operations surfaces under hostile input: client-chosen names with newlines and escape
//! codes reach the log escaped on one line and colour codes reach only a terminal
//! (NO_COLOR honoured); the metrics endpoint answers HEAD without a body, refuses heads
//! over 8 KiB with 431 and garbage with 400 at once; the min_pool_size filler holds no
//! slot during an outage, so a client is served as soon as the server is back.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::relay::Relay;
use crate::harness::*;
use crate::proxy::*;

const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO pgfunnel: FORGED admin login";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
}

/// Writes a config for the binary (scram auth, the shared Postgres) plus `extra` lines.
fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let pg = PgServer::shared();
    std::fs::write(
        dir.join("users.txt"),
        format!("\"{SCRAM_USER}\" \"{SCRAM_PASSWORD}\"\n"),
    )
    .expect("users");
    let ini = dir.join("p.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\napp = host=127.0.0.1 port={} dbname=app\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_file = users.txt\nauth_type = scram-sha-256\n{extra}\n",
            pg.port()
        ),
    )
    .expect("ini");
    ini
}

/// Logs in as a user whose name forges a log line and carries escape codes, until the
/// attempt is refused (the binary may still be starting).
async fn hostile_login(port: u16) {
    let user = format!("evil\n{FORGED}\x1b[31m\r\t\u{9b}");
    for _ in 0..200 {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user(&user)
            .password("wrong")
            .dbname("app")
            .application_name("\x1b]0;pwned\x07\nFORGED app");
        match cfg.connect(tokio_postgres::NoTls).await {
            Ok(_) => panic!("a hostile user name must not log in"),
            Err(e) if e.as_db_error().is_some() => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("pgfunnel never answered the login");
}

/// Every line mentioning FORGED is the escaped one, and no escape byte is in `log`.
fn assert_escaped(what: &str, log: &str) {
    assert!(
        !log.contains('\x1b'),
        "{what}: raw ESC or colour codes in {log:?}"
    );
    assert!(!log.contains('\u{9b}'), "{what}: raw C1 control in {log:?}");
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("client authentication failed"))
        .collect();
    assert!(!failed.is_empty(), "{what}: no auth failure logged: {log}");
    let escaped = format!("user=evil\\n{FORGED}\\x1b[31m\\r\\t\\u{{009b}}");
    assert!(
        failed.iter().any(|l| l.contains(&escaped)),
        "{what}: user not escaped on one line: {failed:?}"
    );
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(line.contains("evil\\n"), "{what}: forged line {line:?}");
    }
}

#[test]
fn hostile_user_names_are_logged_escaped_on_one_line_without_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let logfile = dir.path().join("p.log");
    let ini = write_config(
        dir.path(),
        port,
        &format!("logfile = {}\nverbose = 1", logfile.display()),
    );
    let stderr_path = dir.path().join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = bin()
        .arg(&ini)
        .env_remove("NO_COLOR")
        .env_remove("PGFUNNEL_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(hostile_login(port));
    wait_until_msg(Duration::from_secs(20), "the refusal is logged", || {
        std::fs::read_to_string(&logfile).is_ok_and(|l| l.contains("client authentication failed"))
    });
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let file_log = std::fs::read_to_string(&logfile).expect("logfile");
    assert_escaped("logfile", &file_log);
    let mut stderr_log = String::new();
    std::fs::File::open(&stderr_path)
        .and_then(|mut f| f.read_to_string(&mut stderr_log))
        .expect("stderr");
    assert_escaped("stderr (a file, not a terminal)", &stderr_log);
}

/// Runs the binary on a terminal (`script` allocates one) with `NO_COLOR` as given, until
/// it exits after logging a config warning (its port is taken); returns what it printed.
fn run_on_terminal(ini: &Path, no_color: Option<&str>) -> String {
    let mut cmd = Command::new("script");
    let env = match no_color {
        Some(v) => format!("NO_COLOR='{v}'"),
        None => "-u NO_COLOR".to_owned(),
    };
    cmd.args(["-q", "-e", "-c"])
        .arg(format!(
            "env {env} {} {}",
            env!("CARGO_BIN_EXE_pgfunnel"),
            ini.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null());
    let out = cmd.output().expect("script(1) runs (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = write_config(dir.path(), port, "no_such_setting = 1");
    let plain = run_on_terminal(&ini, None);
    assert!(
        plain.contains("no_such_setting"),
        "the warning shows: {plain:?}"
    );
    assert!(plain.contains("\x1b["), "a terminal gets colour: {plain:?}");
    let empty = run_on_terminal(&ini, Some(""));
    assert!(
        empty.contains("\x1b["),
        "an empty NO_COLOR is unset: {empty:?}"
    );
    let no_color = run_on_terminal(&ini, Some("1"));
    assert!(no_color.contains("no_such_setting"), "{no_color:?}");
    assert!(!no_color.contains('\x1b'), "NO_COLOR=1: {no_color:?}");
}

const METRICS_INI: &str = "metrics_listen = 127.0.0.1:0";

fn metrics_addr(p: &Proxy) -> SocketAddr {
    p.running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("metrics_listen bound")
}

/// Sends `request` and reads until the response head is complete (or the server closes),
/// then what follows until close; `None` when nothing came within `bound`.
async fn exchange(addr: SocketAddr, request: &[u8], bound: Duration) -> Option<(String, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = tokio::time::timeout(bound, async {
        loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(i + 4);
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()??;
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    Some((head, got[head_end..].to_vec()))
}

#[tokio::test]
async fn head_metrics_has_headers_and_no_body() {
    PgServer::shared();
    let p = Proxy::simple("", METRICS_INI).await;
    let addr = metrics_addr(&p);
    let bound = Duration::from_secs(10);
    let (head, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", bound)
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert!(length > 100, "the length of the GET body: {head}");
    assert!(
        body.is_empty(),
        "no body: {}",
        String::from_utf8_lossy(&body)
    );
    let (head, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", bound)
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(!body.is_empty());
}

#[tokio::test]
async fn request_heads_over_8_kib_get_431() {
    PgServer::shared();
    let p = Proxy::simple("", METRICS_INI).await;
    let addr = metrics_addr(&p);
    let padded = |path: &str, pad: usize| {
        let mut request = format!("GET {path} HTTP/1.1\r\nX-Pad: ").into_bytes();
        request.extend(std::iter::repeat_n(b'a', pad));
        request.extend_from_slice(b"\r\n\r\n");
        request
    };
    let bound = Duration::from_secs(10);
    let (head, _) = exchange(addr, &padded("/metrics", 9 * 1024), bound)
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    // A head just under the limit is served.
    let (head, _) = exchange(addr, &padded("/health/live", 7 * 1024), bound)
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

#[tokio::test]
async fn bytes_that_cannot_be_http_get_400_before_the_head_timeout() {
    PgServer::shared();
    let p = Proxy::simple("", METRICS_INI).await;
    let addr = metrics_addr(&p);
    // Well under the 5 s head timeout: an answer by then can only be the prompt refusal.
    let bound = Duration::from_secs(3);
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"[..],
        b"\0\0\0\x08\x04\xd2\x16\x2f",
        b"HELO mail.example.org",
        b"GET /metrics\x01",
    ] {
        let (head, _) = exchange(addr, garbage, bound)
            .await
            .unwrap_or_else(|| panic!("no prompt answer to {garbage:?}"));
        assert!(head.starts_with("HTTP/1.1 400 "), "{garbage:?}: {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_filler_holds_no_slot_in_an_outage_and_a_client_is_served_after_it() {
    let pg = PgServer::shared();
    let relay = Relay::start(pg.addr()).await;
    let db = format!(
        "app = host=127.0.0.1 port={} dbname=app pool_size=1 min_pool_size=1",
        relay.addr.port()
    );
    let extra = "pool_mode = transaction\nquery_wait_timeout = 60\nserver_tls_sslmode = disable";
    let proxy = Proxy::start(&ini(&db, extra), &userlist("")).await;
    let c = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    c.simple_query("select 1").await.expect("first query");
    let app = proxy.running.as_ref().expect("running").app.clone();
    let pool = app
        .pools
        .iter()
        .find(|p| p.key.database == "app")
        .map(|p| p.clone())
        .expect("the pool");
    // The outage: the server connection is cut and new ones are refused. The janitor
    // drops the dead idle connection and the filler starts trying.
    relay.drop_all();
    let stats = pool.stats.clone();
    let failures = || stats.timers.connect_failures.get();
    let wait = Duration::from_secs(20);
    wait_until_async(wait, "two failed fill attempts", || async {
        failures() >= 2
    })
    .await;
    wait_until_async(wait, "no connect in progress between attempts", || async {
        stats.logging_in.load(Ordering::Relaxed) == 0
    })
    .await;
    // A client asks during the outage: it is not queued behind the filler but connects
    // itself (retrying until query_wait_timeout), and is served once the server is back.
    let asking = tokio::spawn(async move {
        c.query_one("select 42", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    wait_until_async(
        wait,
        "the client holds the slot, not the filler",
        || async {
            stats.waiting.load(Ordering::Relaxed) == 0
                && stats.logging_in.load(Ordering::Relaxed) == 1
        },
    )
    .await;
    relay.heal();
    let answer = tokio::time::timeout(Duration::from_secs(30), asking)
        .await
        .expect("served after the outage")
        .expect("task");
    assert_eq!(answer.expect("query"), 42);
    wait_until_async(
        wait,
        "the pool is filled to min_pool_size again",
        || async { pool.idle_count() >= 1 },
    )
    .await;
}
