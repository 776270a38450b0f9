//! Authentication and handshake against probing and hostile clients: unknown users look
//! like known ones (challenge kind, salt, timing), channel binding over TLS, repeated
//! encryption requests, malformed SASL and startup packets, max_client_conn before TLS,
//! server login refusals and killed clients told why.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::proxy::*;
use crate::tls::Pki;

const SSL_REQUEST: i32 = 80_877_103;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;

/// Reads one backend message (tag, body) within 10 s.
async fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let tag = s.read_u8().await?;
        let len = s.read_i32().await?;
        let mut body = vec![0u8; (len as usize).saturating_sub(4)];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>((tag, body))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("proxy answers in time")
        .expect("proxy answers")
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    let mut fields = body.split(|&b| b == 0);
    fields
        .find(|f| f.first() == Some(&b'C'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// Reads the rest of an ErrorResponse whose tag was consumed; returns its SQLSTATE.
async fn rest_of_error(s: &mut TcpStream) -> String {
    let len = s.read_i32().await.expect("length");
    let mut body = vec![0u8; (len as usize).saturating_sub(4)];
    s.read_exact(&mut body).await.expect("body");
    error_code(&body)
}

/// Reads until an ErrorResponse and returns its SQLSTATE.
async fn expect_error(s: &mut TcpStream) -> String {
    loop {
        let (tag, body) = read_message(s).await;
        if tag == b'E' {
            return error_code(&body);
        }
    }
}

/// Opens a connection, sends a StartupMessage for `user` on `app`, and returns the stream
/// with the first authentication request (code, payload).
async fn start_login(proxy: &Proxy, user: &str) -> (TcpStream, i32, Vec<u8>) {
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let startup = startup_message(&[("user", user), ("database", "app")], 3 << 16);
    s.write_all(&startup).await.expect("startup");
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'R', "authentication request for {user}");
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    (s, code, body[4..].to_vec())
}

/// A SASLInitialResponse ('p') with `mechanism` and a declared data length.
fn sasl_initial(mechanism: &str, declared_len: i32, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&declared_len.to_be_bytes());
    body.extend_from_slice(data);
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// What a probing client learns before sending a proof: the SASL mechanisms offered and
/// the salt and iteration count of server-first.
#[derive(Debug, PartialEq, Eq)]
struct ScramChallenge {
    mechanisms: Vec<u8>,
    salt: String,
    iterations: String,
}

/// Runs a SCRAM exchange up to server-first for `user` and returns what it revealed.
async fn scram_challenge(proxy: &Proxy, user: &str) -> ScramChallenge {
    let (mut s, code, mechanisms) = start_login(proxy, user).await;
    assert_eq!(code, AUTH_SASL, "{user} gets a SASL challenge");
    let first = b"n,,n=,r=probeprobeprobe";
    s.write_all(&sasl_initial("SCRAM-SHA-256", first.len() as i32, first))
        .await
        .expect("client-first");
    let (tag, body) = read_message(&mut s).await;
    assert_eq!(tag, b'R', "{user}: server-first expected");
    assert_eq!(
        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        AUTH_SASL_CONTINUE
    );
    let text = String::from_utf8_lossy(&body[4..]).into_owned();
    let attr = |name: &str| {
        text.split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    };
    assert!(attr("r=").starts_with("probeprobeprobe"), "{text}");
    ScramChallenge {
        mechanisms,
        salt: attr("s="),
        iterations: attr("i="),
    }
}

/// An auth_file with a plaintext, a SCRAM and an md5 user.
fn mixed_users() -> String {
    let scram = pgfunnel::auth::ScramSecret::for_plain_password(b"s3cret").to_string();
    let md5 = pgfunnel::auth::md5_secret("u_md5", b"m5pw");
    format!("\"u_plain\" \"pw\"\n\"u_scram\" \"{scram}\"\n\"u_md5\" \"{md5}\"\n")
}

fn forced() -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
}

/// pgfunnel with `auth_type = scram-sha-256` and [`mixed_users`].
async fn scram_proxy() -> Proxy {
    PgServer::shared();
    let extra = "auth_type = scram-sha-256";
    Proxy::start(
        &ini(&db_line("app", "app", &forced()), extra),
        &mixed_users(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plaintext_and_scram_users_get_alike_stable_scram_challenges() {
    let proxy = scram_proxy().await;
    let mut seen = Vec::new();
    for user in ["u_plain", "u_scram", "u_md5", "nobody", "nobody2"] {
        let first = scram_challenge(&proxy, user).await;
        let again = scram_challenge(&proxy, user).await;
        assert_eq!(first, again, "{user}: the same challenge at every attempt");
        assert_eq!(first.mechanisms, b"SCRAM-SHA-256\0\0", "{user}");
        assert_eq!(first.iterations, "4096", "{user}");
        assert_eq!(first.salt.len(), 24, "{user}: a 16-byte salt");
        seen.push(first.salt);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every user has a salt of its own");
    // The plaintext user still logs in with its password over SCRAM.
    proxy.connect("u_plain", "pw", "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_md5_unknown_users_get_the_challenge_known_users_get() {
    PgServer::shared();
    let scram = |pw: &[u8]| pgfunnel::auth::ScramSecret::for_plain_password(pw).to_string();
    let all_scram = format!("\"a\" \"{}\"\n\"b\" \"{}\"\n", scram(b"x"), scram(b"y"));
    let all_md5 = format!(
        "\"a\" \"{}\"\n\"b\" \"plain\"\n",
        pgfunnel::auth::md5_secret("a", b"x")
    );
    for (users, expected) in [(all_scram, AUTH_SASL), (all_md5, AUTH_MD5)] {
        let text = ini(&db_line("app", "app", &forced()), "auth_type = md5");
        let proxy = Proxy::start(&text, &users).await;
        for user in ["a", "b", "nobody", "somebody_else"] {
            let (_s, code, _) = start_login(&proxy, user).await;
            assert_eq!(code, expected, "{user} with auth_file {users:?}");
        }
    }
}

/// Milliseconds from sending the StartupMessage to receiving server-first.
async fn time_to_server_first(proxy: &Proxy, user: &str) -> f64 {
    let started = Instant::now();
    scram_challenge(proxy, user).await;
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plaintext_and_scram_users_take_alike_time_to_challenge() {
    let proxy = scram_proxy().await;
    let users = ["u_plain", "u_scram", "nobody"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); users.len()];
    // Interleaved rounds, so load on the machine hits every user alike.
    for _ in 0..15 {
        for (i, user) in users.iter().enumerate() {
            times[i].push(time_to_server_first(&proxy, user).await);
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let (lo, hi) = medians
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &m| (lo.min(m), hi.max(m)));
    eprintln!("time to server-first, medians (ms) {users:?}: {medians:?}");
    assert!(hi <= lo * 3.0, "medians (ms) {users:?}: {medians:?}");
}

/// Runs `select 42` with psql over TLS with `channel_binding=require`.
fn psql_channel_binding(port: u16, ca: &std::path::Path) -> Result<String, String> {
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={PLAIN_USER} dbname=app sslmode=verify-full sslrootcert={} channel_binding=require connect_timeout=20",
        ca.display()
    );
    crate::tls::psql_select_42(&conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_channel_binding_require_connects_over_tls() {
    let pki = Pki::new();
    let extra = format!(
        "auth_type = scram-sha-256\n{}",
        pki.client_tls_lines("prefer")
    );
    let proxy = Proxy::start(&ini(&db_line("app", "app", ""), &extra), &userlist("")).await;
    let (port, ca) = (proxy.addr.port(), pki.ca_file.clone());
    let out = tokio::task::spawn_blocking(move || psql_channel_binding(port, &ca))
        .await
        .expect("psql task");
    assert_eq!(out.as_deref(), Ok("42"));
    // Over plaintext only SCRAM-SHA-256 is offered.
    let (_s, code, mechanisms) = start_login(&proxy, PLAIN_USER).await;
    assert_eq!(
        (code, mechanisms),
        (AUTH_SASL, b"SCRAM-SHA-256\0\0".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_ssl_request_after_n_is_refused_at_once() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(ssl_request(&mut s).await, b'N');
    // Answered with an error at once, not left to client_login_timeout.
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        assert_eq!(ssl_request(&mut s).await, b'E');
        rest_of_error(&mut s).await
    });
    assert_eq!(error.await.expect("prompt answer"), "08P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_sasl_length_and_unterminated_startup_are_protocol_violations() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "auth_type = scram-sha-256").await;
    for len in [-1, -5] {
        let (mut s, code, _) = start_login(&proxy, PLAIN_USER).await;
        assert_eq!(code, AUTH_SASL);
        let data = b"n,,n=,r=abcdef";
        s.write_all(&sasl_initial("SCRAM-SHA-256", len, data))
            .await
            .expect("SASLInitialResponse");
        assert_eq!(expect_error(&mut s).await, "08P01", "length {len}");
    }
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut packet = startup_message(&[("user", PLAIN_USER), ("database", "app")], 3 << 16);
    // Drop the list terminator and fix the length.
    packet.pop();
    let len = (packet.len() as i32).to_be_bytes();
    packet[..4].copy_from_slice(&len);
    s.write_all(&packet).await.expect("startup");
    assert_eq!(expect_error(&mut s).await, "08P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_refusals_reach_the_client_with_their_sqlstate() {
    PgServer::shared();
    let dbs = [
        db_line(
            "wrong_pw",
            "app",
            &format!("user={SCRAM_USER} password=not_it"),
        ),
        db_line("no_db", "no_such_database_here", &forced()),
    ]
    .join("\n");
    let proxy = Proxy::start(&ini(&dbs, ""), &userlist("")).await;
    for (db, code) in [("wrong_pw", "28P01"), ("no_db", "3D000")] {
        let e = proxy
            .try_connect(PLAIN_USER, PLAIN_PASSWORD, db)
            .await
            .expect_err("server refuses the login");
        assert_eq!(sqlstate(&e), code, "{db}: {e}");
        assert!(!message(&e).contains("could not reach"), "{db}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_is_told_why() {
    PgServer::shared();
    let proxy = Proxy::simple(&forced(), "").await;
    let (client, conn) = tokio_postgres::connect(
        &proxy.conn_str(PLAIN_USER, PLAIN_PASSWORD, "app"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let conn = tokio::spawn(conn);
    client.simple_query("select 1").await.expect("query");
    let app = proxy.running.as_ref().expect("running").app.clone();
    let killed = app
        .clients
        .kill_where(|e| e.identity().is_some_and(|i| i.user == PLAIN_USER));
    assert_eq!(killed, 1);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("connection ends")
        .expect("connection task");
    let e = ended.expect_err("the connection ends with an error");
    assert_eq!(sqlstate(&e), "57P01", "{e}");
}

/// Sends SSLRequest and reads the one-byte answer (or the start of an ErrorResponse).
async fn ssl_request(s: &mut TcpStream) -> u8 {
    let mut request = 8i32.to_be_bytes().to_vec();
    request.extend(SSL_REQUEST.to_be_bytes());
    s.write_all(&request).await.expect("SSLRequest");
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .map(|_| answer[0])
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_is_enforced_before_the_tls_handshake() {
    let pki = Pki::new();
    let extra = format!(
        "max_client_conn = 3\nclient_login_timeout = 60\n{}",
        pki.client_tls_lines("require")
    );
    let proxy = Proxy::start(
        &ini(&db_line("app", "app", &forced()), &extra),
        &userlist(""),
    )
    .await;
    let app = proxy.running.as_ref().expect("running").app.clone();
    let mut half_open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(ssl_request(&mut s).await, b'S');
        // No ClientHello follows: the handshake stays half-open.
        half_open.push(s);
    }
    let counted = || {
        let app = app.clone();
        async move { app.client_count.load(std::sync::atomic::Ordering::Acquire) }
    };
    wait_until_async(Duration::from_secs(10), "3 clients counted", || async {
        counted().await == 3
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let answer = ssl_request(&mut s).await;
    match answer {
        b'E' => assert_eq!(rest_of_error(&mut s).await, "53300"),
        other => assert_eq!(other, 0, "refused or closed, not {other}"),
    }
    drop(half_open);
    wait_until_async(
        Duration::from_secs(10),
        "half-open clients gone",
        || async { counted().await == 0 },
    )
    .await;
    let c = crate::tls::tls_connect(
        proxy.addr,
        PLAIN_USER,
        PLAIN_PASSWORD,
        tokio_postgres::config::SslMode::Require,
        &crate::tls::ClientTls {
            ca_pem: None,
            cert: None,
        },
        false,
    )
    .await
    .expect("a client fits again");
    c.simple_query("select 1").await.expect("query");
}

#[test]
fn server_login_refusal_is_logged_as_such_with_the_servers_words() {
    PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("pgfunnel.log");
    let ini_text = format!(
        "[databases]\n{}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_file = userlist.txt\nlogfile = {}\n",
        db_line("app", "app", &format!("user={SCRAM_USER} password=not_it")),
        log.display()
    );
    std::fs::write(dir.path().join("pgfunnel.ini"), ini_text).expect("ini");
    std::fs::write(dir.path().join("userlist.txt"), userlist("")).expect("userlist");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg("-q")
        .arg(dir.path().join("pgfunnel.ini"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn pgfunnel");
    wait_until_msg(Duration::from_secs(20), "pgfunnel to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let code = rt.block_on(async {
        let conn = format!(
            "host=127.0.0.1 port={port} user={PLAIN_USER} password={PLAIN_PASSWORD} dbname=app"
        );
        let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .err()
            .expect("the server refuses pgfunnel's login");
        sqlstate(&e)
    });
    assert_eq!(code, "28P01");
    let mut text = String::new();
    wait_until_msg(Duration::from_secs(10), "the disconnection logged", || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("closing because: server login failed")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(&format!(
            "server login failed: FATAL password authentication failed for user \"{SCRAM_USER}\""
        )),
        "{text}"
    );
    assert!(text.contains("reason=\"server login failed\""), "{text}");
    assert!(!text.contains("client close request"), "{text}");
    assert!(!text.contains("not_it"), "{text}");
}
