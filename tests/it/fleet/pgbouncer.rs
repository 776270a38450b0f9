//! A mixed fleet: a real PgBouncer peered with two pgfunnels, cancels forwarded both ways.
//! The binary comes from `PGFUNNEL_TEST_PGBOUNCER` (a path) or `pgbouncer` on PATH; it must
//! be 1.21 or later, the versions whose cancel key layout pgfunnel shares (1.19 and 1.20
//! put the peer id in bytes 0-1). Without one the test prints why it is skipped and passes.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::*;

/// Oldest PgBouncer whose keys carry the peer id in bytes 1-2, as pgfunnel's do.
const MIN_VERSION: (u32, u32) = (1, 21);
/// Cancels per direction (PgBouncer's own peering test sends 10).
const ROUNDS: usize = 10;

/// `(major, minor)` from `pgbouncer --version` ("PgBouncer 1.25.2 ...").
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "PgBouncer")
        .nth(1)?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The PgBouncer to peer with: `Ok(path)`, or `Err(why)` to skip. A binary named by
/// `PGFUNNEL_TEST_PGBOUNCER` that cannot serve fails the test instead (it was asked for).
fn find_pgbouncer() -> Result<PathBuf, String> {
    let named = std::env::var_os("PGFUNNEL_TEST_PGBOUNCER").filter(|p| !p.is_empty());
    let path = match &named {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("pgbouncer"))
                    .find(|p| p.is_file())
            })
            .ok_or("PGFUNNEL_TEST_PGBOUNCER is unset and no pgbouncer is on PATH")?,
    };
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("cannot run: {e}"),
    };
    let why = match parse_version(&text) {
        Some(v) if v >= MIN_VERSION => return Ok(path),
        Some((major, minor)) => format!(
            "{} is PgBouncer {major}.{minor}; mixed fleets need 1.21 or later",
            path.display()
        ),
        None => format!(
            "{} gave no PgBouncer version: {}",
            path.display(),
            text.trim()
        ),
    };
    assert!(named.is_none(), "PGFUNNEL_TEST_PGBOUNCER: {why}");
    Err(why)
}

/// A PgBouncer process in a temp dir, loopback only, as the `postgres` OS user when the
/// tests run as root (PgBouncer refuses root). Killed on drop.
struct PgBouncer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(bin: &std::path::Path, port: u16, peer_id: u16, peers: &str) -> PgBouncer {
        let pg = PgServer::shared();
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        // The postgres user must reach the dir: under /tmp, owned by the data dir's owner.
        let base = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("pgfunnel-pgbouncer-")
            .tempdir_in(base)
            .expect("tempdir");
        let d = dir.path();
        let ini = format!(
            "[databases]\n{}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {}/userlist.txt\n\
             pool_mode = transaction\nlogfile = {}/pgbouncer.log\n\
             peer_id = {peer_id}\n{peers}",
            db_line("app", "app", &forced()),
            d.display(),
            d.display()
        );
        std::fs::write(d.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        std::fs::write(d.join("userlist.txt"), userlist("")).expect("write userlist");
        let mut cmd = Command::new(bin);
        cmd.arg(d.join("pgbouncer.ini"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if as_root {
            let owner = std::fs::metadata(pg.data_dir()).expect("data dir");
            for path in [
                d.to_owned(),
                d.join("pgbouncer.ini"),
                d.join("userlist.txt"),
            ] {
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
                    .expect("chown to postgres");
            }
            cmd.uid(owner.uid()).gid(owner.gid());
        }
        // SAFETY: prctl is async-signal-safe; it only asks for SIGTERM when this process
        // dies (set after the uid change, which would clear it), so no PgBouncer outlives us.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn pgbouncer");
        let mut bouncer = PgBouncer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        bouncer.wait_listening();
        bouncer
    }

    fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr).is_err() {
            let exited = self.child.try_wait().expect("try_wait");
            if exited.is_some() || std::time::Instant::now() > deadline {
                panic!(
                    "PgBouncer not listening on {} ({exited:?})\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log(&self) -> String {
        tail_file(&self.dir.path().join("pgbouncer.log"), 4000)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards counted by `m` to peer `id` (after the owner closed the forward connection).
fn forwarded_to(m: &Member, id: u16) -> u64 {
    m.app()
        .fleet
        .peers()
        .get(&id)
        .map_or(0, |p| p.stats.forwarded.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_and_pgfunnel_peers_forward_cancels_to_each_other() {
    let bin = match find_pgbouncer() {
        Ok(bin) => bin,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    PgServer::shared();
    // One shared [peers] list: PgBouncer is peer 1, the pgfunnels 2 and 3.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = peers_section(&ports);
    let bouncer = PgBouncer::start(&bin, ports[0], 1, &peers);
    let mut funnels = Vec::new();
    for (i, port) in ports.iter().enumerate().skip(1) {
        // server_tls_sslmode = prefer (the default): PgBouncer answers N, then plaintext.
        // Peer 3 pools in session mode, whose keys take another path (see Pool modes).
        let mode = if i == 1 { "transaction" } else { "session" };
        let extra = format!("peer_id = {}\npool_mode = {mode}\n{peers}", i + 1);
        let db = db_line("app", "app", &forced());
        funnels.push(Member::start("127.0.0.1", *port, &db, &extra).await);
    }
    let context = || format!("PgBouncer log:\n{}", bouncer.log());

    // PgBouncer -> pgfunnel: a query held through PgBouncer, cancelled via a pgfunnel,
    // which forwards the key to peer 1 with its hop spent.
    for round in 0..ROUNDS {
        let via = &funnels[round % 2];
        let c = connect_to(bouncer.addr, "app").await;
        let token = c.cancel_token();
        let q = start_sleep(c, &format!("mixed-pgb-{round}")).await;
        cancel_via(&token, via.addr).await;
        let err = cancelled(q).await;
        assert_eq!(sqlstate(&err), "57014", "round {round}\n{}", context());
    }
    // pgfunnel -> PgBouncer: a query held by a pgfunnel, cancelled via PgBouncer, which
    // forwards it with its hop count decremented; the pgfunnel serves it.
    for round in 0..ROUNDS {
        let holder = &funnels[round % 2];
        let c = holder.connect("app").await;
        let token = c.cancel_token();
        let q = start_sleep(c, &format!("mixed-pgf-{round}")).await;
        cancel_via(&token, bouncer.addr).await;
        let err = cancelled(q).await;
        assert_eq!(sqlstate(&err), "57014", "round {round}\n{}", context());
    }
    // Each pgfunnel forwarded its half of the first direction to PgBouncer, nothing else.
    for (i, m) in funnels.iter().enumerate() {
        let want = (0..ROUNDS).filter(|r| r % 2 == i).count() as u64;
        wait_until(Duration::from_secs(10), || forwarded_to(m, 1) >= want);
        assert_eq!(forwarded_to(m, 1), want, "pgfunnel {} to PgBouncer", i + 2);
        assert_eq!(
            forwarded_to(m, 2) + forwarded_to(m, 3),
            0,
            "no pgfunnel hop"
        );
    }
    for m in &mut funnels {
        m.stop().await;
    }
}

#[test]
fn pgbouncer_versions_parse_from_version_output() {
    let out = "PgBouncer 1.25.2\nlibevent 2.1.12-stable\nadns: evdns2\ntls: OpenSSL 3.0.22";
    assert_eq!(parse_version(out), Some((1, 25)));
    assert_eq!(parse_version("PgBouncer 1.18.0\n"), Some((1, 18)));
    assert!(parse_version("PgBouncer 1.18.0\n").expect("parsed") < MIN_VERSION);
    assert_eq!(parse_version("bash: pgbouncer: not found"), None);
}
