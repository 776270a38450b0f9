//! A fleet of pgfunnels in one test process: peering (a CancelRequest sent to any instance
//! cancels the query another one holds; keys for unknown peers are dropped), peers from a
//! DNS name (a test resolver over 127.0.0.x), the fleet budget counted in
//! pg_stat_activity while a peer starts and stops, two instances sharing a port with
//! so_reuseport while the old one drains, and a real PgBouncer peered with pgfunnels.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pgfunnel::app::{self, Running};
use pgfunnel::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::harness::*;
use crate::proxy::{db_line, sqlstate, userlist};

mod budget;
mod pgbouncer;
mod restart;

/// One pgfunnel of the fleet, on a fixed address and port.
struct Member {
    running: Option<Running>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Member {
    async fn start(ip: &str, port: u16, databases: &str, extra: &str) -> Member {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[databases]\n{databases}\n[pgbouncer]\nlisten_addr = {ip}\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_file = userlist.txt\nadmin_users = plain_user\n{extra}\n"
        );
        let ini: PathBuf = dir.path().join("pgfunnel.ini");
        std::fs::write(&ini, text).expect("write ini");
        std::fs::write(dir.path().join("userlist.txt"), userlist("")).expect("write userlist");
        let config = Config::load(&ini).unwrap_or_else(|e| panic!("fleet test config: {e}"));
        let running = app::start(config).await.expect("pgfunnel starts");
        let addr = running.tcp_addrs[0];
        Member {
            running: Some(running),
            addr,
            _dir: dir,
        }
    }

    fn app(&self) -> &Arc<pgfunnel::app::App> {
        &self.running.as_ref().expect("running").app
    }

    async fn connect(&self, db: &str) -> Client {
        connect_to(self.addr, db).await
    }

    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.app.shutdown.cancel();
        }
    }
}

/// A client of the pooler at `addr` (pgfunnel or PgBouncer) as `plain_user`.
async fn connect_to(addr: SocketAddr, db: &str) -> Client {
    let conn = format!(
        "host={} port={} user=plain_user password=plain_pass dbname={db} connect_timeout=20",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn forced() -> String {
    format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
}

/// `[peers]` lines for instances on 127.0.0.1 with these ports, ids 1, 2, 3... (the list
/// holds every instance, itself included, as one shared config would).
fn peers_section(ports: &[u16]) -> String {
    let mut s = String::from("[peers]\n");
    for (i, port) in ports.iter().enumerate() {
        s.push_str(&format!("{} = host=127.0.0.1 port={port}\n", i + 1));
    }
    s
}

/// Starts `pg_sleep(30)` on `client` with a marker, waits until Postgres runs it.
async fn start_sleep(client: Client, marker: &str) -> Sleep {
    let sql = format!("select pg_sleep(30) /* {marker} */");
    let q = tokio::spawn(async move { client.simple_query(&sql).await });
    let probe = PgServer::shared()
        .connect(SUPERUSER, None, "postgres")
        .await;
    let seen = format!(
        "select count(*) from pg_stat_activity where state = 'active' and query like '%{marker} */'"
    );
    wait_until_async(Duration::from_secs(20), "pg_sleep running", || {
        let probe = &probe;
        let seen = seen.clone();
        async move {
            let rows = probe.simple_query(&seen).await.expect("count");
            rows.iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("1")))
        }
    })
    .await;
    q
}

type Sleep = tokio::task::JoinHandle<Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>>;

/// Sends the CancelRequest of `token` to the instance at `to` (maybe not the one holding
/// the query).
async fn cancel_via(token: &tokio_postgres::CancelToken, to: SocketAddr) {
    let sock = tokio::net::TcpStream::connect(to).await.expect("connect");
    token
        .cancel_query_raw(sock, NoTls)
        .await
        .expect("cancel sent");
}

/// The error a cancelled `pg_sleep` ended with.
async fn cancelled(q: Sleep) -> tokio_postgres::Error {
    tokio::time::timeout(Duration::from_secs(20), q)
        .await
        .expect("cancelled in time")
        .expect("join")
        .expect_err("the query was cancelled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_any_peer_cancels_the_query_another_holds() {
    PgServer::shared();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = peers_section(&ports);
    let mut fleet = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let extra = format!("peer_id = {}\npool_mode = transaction\n{peers}", i + 1);
        fleet.push(
            Member::start(
                "127.0.0.1",
                *port,
                &db_line("app", "app", &forced()),
                &extra,
            )
            .await,
        );
    }
    // PgBouncer's scenario: every instance receives cancels for queries held by the others.
    for round in 0..10 {
        for holder in 0..3 {
            let target = (holder + 1 + round % 2) % 3;
            let c = fleet[holder].connect("app").await;
            let token = c.cancel_token();
            let q = start_sleep(c, &format!("fleet-{round}-{holder}")).await;
            cancel_via(&token, fleet[target].addr).await;
            let err = cancelled(q).await;
            assert_eq!(
                sqlstate(&err),
                "57014",
                "round {round}: {holder} via {target}"
            );
        }
    }
    for (i, m) in fleet.iter().enumerate() {
        let forwarded = || -> u64 {
            m.app()
                .fleet
                .peers()
                .values()
                .map(|p| p.stats.forwarded.load(Ordering::Relaxed))
                .sum()
        };
        // The count goes up when the owner closes, just after it passed the cancel on.
        wait_until(Duration::from_secs(10), || forwarded() >= 10);
        assert_eq!(forwarded(), 10, "instance {} forwarded 10 cancels", i + 1);
        assert!(
            !m.app().fleet.peers().contains_key(&(i as u16 + 1)),
            "an instance never lists itself as a peer"
        );
    }
    for m in &mut fleet {
        m.stop().await;
    }
}

/// Sends a raw CancelRequest with this key and waits for the peer to close.
async fn raw_cancel(to: SocketAddr, key: [u8; 8]) {
    let mut sock = tokio::net::TcpStream::connect(to).await.expect("connect");
    let mut msg = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    msg.extend_from_slice(&key);
    sock.write_all(&msg).await.expect("send cancel");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
        .await
        .expect("the peer closes")
        .unwrap_or(0);
    assert_eq!(n, 0, "a CancelRequest gets no reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_for_unknown_peers_or_with_no_hop_left_are_dropped_and_shown() {
    PgServer::shared();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let peers = peers_section(&ports);
    let a = Member::start(
        "127.0.0.1",
        ports[0],
        &db_line("app", "app", &forced()),
        &format!("peer_id = 1\n{peers}"),
    )
    .await;
    // Peer 99 is not listed; a key for peer 2 whose TTL is spent must not travel on.
    let mut unknown = [0x11, 99, 0, 0x22, 1, 2, 3, 0x07];
    raw_cancel(a.addr, unknown).await;
    unknown[1] = 2;
    unknown[7] = 0x04; // TTL bits 0
    raw_cancel(a.addr, unknown).await;
    let peer2 = a
        .app()
        .fleet
        .peers()
        .get(&2)
        .cloned()
        .expect("peer 2 listed");
    assert_eq!(peer2.stats.forwarded.load(Ordering::Relaxed), 0);
    assert_eq!(peer2.stats.failed.load(Ordering::Relaxed), 0);
    // Peer 2 is down: a forward to it fails and is counted, without any wait.
    unknown[7] = 0x07;
    raw_cancel(a.addr, unknown).await;
    assert_eq!(peer2.stats.failed.load(Ordering::Relaxed), 1);
    // A stand-in for peer 2 (a PgBouncer would do the same) receives exactly PgBouncer's
    // CancelRequest: the same 8 key bytes with the TTL spent, so it can go no further.
    let standin = tokio::net::TcpListener::bind(("127.0.0.1", ports[1]))
        .await
        .expect("bind peer 2's port");
    let send = tokio::spawn(raw_cancel(a.addr, unknown));
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), standin.accept())
        .await
        .expect("forwarded in time")
        .expect("accept");
    // server_tls_sslmode = prefer (the default) asks for TLS first; a peer without TLS
    // answers N and the CancelRequest follows in plaintext.
    let mut first = [0u8; 8];
    sock.read_exact(&mut first).await.expect("a request");
    assert_eq!(first, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "SSLRequest");
    sock.write_all(b"N").await.expect("answer N");
    let mut got = [0u8; 16];
    sock.read_exact(&mut got)
        .await
        .expect("a whole CancelRequest");
    let mut want = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    want.extend_from_slice(&unknown[..7]);
    want.push(unknown[7] & !0x03);
    assert_eq!(got.to_vec(), want);
    drop(sock);
    send.await.expect("requester done");
    wait_until(Duration::from_secs(10), || {
        peer2.stats.forwarded.load(Ordering::Relaxed) == 1
    });

    let console = a.connect("pgbouncer").await;
    let rows = console
        .simple_query("SHOW PEERS")
        .await
        .expect("SHOW PEERS");
    let listed: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get("peer_id").unwrap_or("").to_owned(),
                r.get("port").unwrap_or("").to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(listed, vec![("2".to_owned(), ports[1].to_string())]);
    let pools = console
        .simple_query("SHOW PEER_POOLS")
        .await
        .expect("SHOW PEER_POOLS");
    assert!(pools
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get("peer_id") == Some("2"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_come_from_a_dns_name_with_ids_learned_from_each() {
    PgServer::shared();
    let port = free_port();
    let metrics = free_port();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let resolver: pgfunnel::fleet::Resolver = Arc::new(move |name: &str| {
        assert_eq!(name, "pgfunnel-peers.test");
        ips.iter()
            .map(|ip| ip.parse::<IpAddr>().expect("ip"))
            .collect()
    });
    let mut fleet = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let extra = format!(
            "peer_id = {}\npeers_dns = pgfunnel-peers.test\nmetrics_listen = {ip}:{metrics}\n\
             dns_max_ttl = 3600\npool_mode = transaction",
            i + 11
        );
        let m = Member::start(ip, port, &db_line("app", "app", &forced()), &extra).await;
        m.app().fleet.set_resolver(resolver.clone());
        fleet.push(m);
    }
    // Each instance's own refresher may have started before the resolver was injected (a
    // real lookup of the test name, which can finish after ours and store no peers), so
    // refresh until every instance has learned the others, within a bound.
    let learned = |fleet: &[Member]| {
        fleet.iter().enumerate().all(|(i, m)| {
            let ids: Vec<u16> = m.app().fleet.peers().keys().copied().collect();
            let mut want: Vec<u16> = vec![11, 12, 13];
            want.retain(|&id| id != i as u16 + 11);
            ids == want
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for m in &fleet {
            pgfunnel::fleet::refresh(m.app()).await;
        }
        if learned(&fleet) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for (i, m) in fleet.iter().enumerate() {
        let ids: Vec<u16> = m.app().fleet.peers().keys().copied().collect();
        let mut want: Vec<u16> = vec![11, 12, 13];
        want.retain(|&id| id != i as u16 + 11);
        assert_eq!(ids, want, "instance {} learned the others' ids", i + 11);
    }
    // And the learned peers forward: a query held by 11 cancelled through 13.
    let c = fleet[0].connect("app").await;
    let token = c.cancel_token();
    let q = start_sleep(c, "fleet-dns").await;
    cancel_via(&token, fleet[2].addr).await;
    let err = cancelled(q).await;
    assert_eq!(sqlstate(&err), "57014");
    // /metrics of the forwarding instance: its id and the forward.
    let addr: SocketAddr = format!("{}:{metrics}", ips[2]).parse().expect("addr");
    let scrape = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = http_get(addr, "/metrics").await;
            let lines = text.lines().map(|l| Ok(l.to_owned()));
            let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
            let sent = scrape.samples.iter().any(|s| {
                s.metric == "pgfunnel_fleet_cancel_forwards_total"
                    && s.labels.get("peer") == Some("11")
                    && s.labels.get("outcome") == Some("sent")
                    && matches!(s.value, prometheus_parse::Value::Counter(v) if v == 1.0)
            });
            if sent {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the forward shows in /metrics");
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "pgfunnel_fleet_peer_id"
            && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 13.0)));
    for m in &mut fleet {
        m.stop().await;
    }
}

/// The body of `GET path` on a metrics listener.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(req.as_bytes()).await.expect("request");
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.expect("response");
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_one_peer_are_bounded_by_its_pool_size() {
    PgServer::shared();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let extra = format!(
        "peer_id = 1\nserver_tls_sslmode = disable\ncancel_wait_timeout = 30\n\
         [peers]\n2 = host=127.0.0.1 port={} pool_size=1\n",
        ports[1]
    );
    let a = Member::start(
        "127.0.0.1",
        ports[0],
        &db_line("app", "app", &forced()),
        &extra,
    )
    .await;
    // Peer 2 accepts but is slow to answer: the first forward holds the only slot.
    let standin = tokio::net::TcpListener::bind(("127.0.0.1", ports[1]))
        .await
        .expect("bind peer 2's port");
    let key = [0x11, 2, 0, 0x22, 1, 2, 3, 0x07];
    let senders: Vec<_> = (0..3)
        .map(|_| tokio::spawn(raw_cancel(a.addr, key)))
        .collect();
    let peer2 = a.app().fleet.peers().get(&2).cloned().expect("peer 2");
    let (first, _) = standin.accept().await.expect("first forward");
    wait_until_async(Duration::from_secs(10), "two forwards waiting", || async {
        peer2.stats.waiting.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(peer2.stats.active.load(Ordering::Relaxed), 1);
    let console = a.connect("pgbouncer").await;
    let rows = console
        .simple_query("SHOW PEER_POOLS")
        .await
        .expect("SHOW PEER_POOLS");
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("peer_id") == Some("2") => Some((
                r.get("cl_active_cancel_req").map(str::to_owned),
                r.get("cl_waiting_cancel_req").map(str::to_owned),
            )),
            _ => None,
        })
        .expect("peer 2 row");
    assert_eq!(row, (Some("1".into()), Some("2".into())));
    // The slot frees when the peer closes; the others then go one at a time.
    let mut conn = first;
    for i in 0..3 {
        let mut request = [0u8; 16];
        conn.read_exact(&mut request).await.expect("CancelRequest");
        assert_eq!(
            request[8..],
            key[..7].iter().chain(&[0x04]).copied().collect::<Vec<u8>>()[..]
        );
        assert!(peer2.stats.active.load(Ordering::Relaxed) <= 1);
        drop(conn);
        if i == 2 {
            break;
        }
        conn = tokio::time::timeout(Duration::from_secs(10), standin.accept())
            .await
            .expect("next forward")
            .expect("accept")
            .0;
    }
    for s in senders {
        s.await.expect("requester done");
    }
    wait_until(Duration::from_secs(10), || {
        peer2.stats.forwarded.load(Ordering::Relaxed) == 3
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_use_tls_as_server_tls_sslmode_says() {
    let pg = PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = crate::harness::certs::TestCa::new("fleet-ca");
    let (cert, key) = ca
        .issue("pgfunnel", &["localhost"])
        .write(dir.path(), "peer");
    let ca_file = crate::harness::certs::write_pem(dir.path(), "ca.crt", &ca.pem());
    let other = crate::harness::certs::TestCa::new("other-ca");
    let other_file = crate::harness::certs::write_pem(dir.path(), "other.crt", &other.pem());
    // Postgres over its Unix socket (never TLS), so server_tls_* only concerns the peers.
    let db = format!(
        "app = host={} port={} dbname=app {}",
        pg.socket_dir().display(),
        pg.port(),
        forced()
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let member = |id: usize, ca: &std::path::Path| {
        let mut peers = String::from("[peers]\n");
        for (i, p) in ports.iter().enumerate() {
            peers.push_str(&format!("{} = host=localhost port={p}\n", i + 1));
        }
        format!(
            "peer_id = {id}\nclient_tls_sslmode = prefer\nclient_tls_cert_file = {}\n\
             client_tls_key_file = {}\nserver_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n{peers}",
            cert.display(),
            key.display(),
            ca.display()
        )
    };
    let a = Member::start("127.0.0.1", ports[0], &db, &member(1, &ca_file)).await;
    let b = Member::start("127.0.0.1", ports[1], &db, &member(2, &ca_file)).await;
    let c = Member::start("127.0.0.1", ports[2], &db, &member(3, &other_file)).await;
    let client = a.connect("app").await;
    let token = client.cancel_token();
    let q = start_sleep(client, "fleet-tls").await;
    // C does not trust A's certificate: its forward fails and nothing is cancelled by it.
    cancel_via(&token, c.addr).await;
    let c_to_a = c.app().fleet.peers().get(&1).cloned().expect("peer 1 on C");
    wait_until(Duration::from_secs(10), || {
        c_to_a.stats.failed.load(Ordering::Relaxed) == 1
    });
    assert_eq!(c_to_a.stats.forwarded.load(Ordering::Relaxed), 0);
    assert!(!q.is_finished(), "an unverified peer got no cancel through");
    // B verifies A's certificate: the forward goes through TLS and cancels the query.
    cancel_via(&token, b.addr).await;
    let err = cancelled(q).await;
    assert_eq!(sqlstate(&err), "57014");
    let b_to_a = b.app().fleet.peers().get(&1).cloned().expect("peer 1 on B");
    assert_eq!(b_to_a.stats.failed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_changed_peers_list() {
    PgServer::shared();
    let port = free_port();
    let db = db_line("app", "app", &forced());
    let a = Member::start(
        "127.0.0.1",
        port,
        &db,
        &format!("peer_id = 1\n[peers]\n1 = host=127.0.0.1 port={port}\n2 = host=10.0.0.2\n"),
    )
    .await;
    let before = a.app().fleet.peers();
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![2]);
    let ini = a._dir.path().join("pgfunnel.ini");
    let text = std::fs::read_to_string(&ini).expect("read ini");
    let text = text.replace(
        "2 = host=10.0.0.2\n",
        "2 = host=10.0.0.2\n3 = host=10.0.0.3 port=7000\n",
    );
    std::fs::write(&ini, text).expect("write ini");
    let console = a.connect("pgbouncer").await;
    console.simple_query("RELOAD").await.expect("RELOAD");
    let after = a.app().fleet.peers();
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(after[&3].port, 7000);
    assert!(
        Arc::ptr_eq(&before[&2], &after[&2]),
        "an unchanged peer keeps its slots and counters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keys_carry_the_peer_id_and_cancel_through_a_peer() {
    PgServer::shared();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let peers = peers_section(&ports);
    let db = db_line("app", "app", &forced());
    let mut fleet = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let extra = format!("peer_id = {}\npool_mode = session\n{peers}", i + 1);
        fleet.push(Member::start("127.0.0.1", *port, &db, &extra).await);
    }
    // A real server pid in the key would name no peer (its bytes 1-2 are not a peer id)
    // and B would drop the cancel: with peering the pid stays pgfunnel's.
    let c = fleet[0].connect("app").await;
    let token = c.cancel_token();
    let q = start_sleep(c, "fleet-session").await;
    cancel_via(&token, fleet[1].addr).await;
    assert_eq!(sqlstate(&cancelled(q).await), "57014");
}
