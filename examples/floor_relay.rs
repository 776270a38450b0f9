//! The floor: the cheapest transaction-mode pooler that still serves pgbench, to measure how
//! close any pooler can get to the kernel's share of a relayed transaction.
//!
//! A MEASUREMENT TOOL, NOT A POOLER TO DEPLOY: it has no client authentication (any user and
//! database are accepted with AuthenticationOk), no TLS, no cancel requests, no limits, and
//! one fixed pool; it listens on loopback only. `benches/compare --floor` runs it as a fourth
//! target.
//!
//! What it reads of the bytes it relays: frame headers (type byte and length) in both
//! directions and the status byte of ReadyForQuery, nothing else. Per request it waits for
//! client bytes, takes an idle server (FIFO hand-off to waiting clients), relays both ways
//! until the server said ReadyForQuery `I` at a frame boundary with every Query and Sync of
//! the client answered, and returns the server. A client that leaves (or sends Terminate)
//! while holding a server takes that server with it; a new one is logged in to replace it.
//! Named prepared statements cannot work (a statement lives on one server).
//!
//! Server logins use pgfunnel's own `server::connect` (SCRAM, md5 or cleartext).
//!
//! Two runtime flavours: `multi` (one tokio work-stealing runtime, like pgfunnel) and
//! `per-core` (one current-thread runtime per thread, each with its own SO_REUSEPORT
//! listener and its share of the pool size, registered on its own reactor: the pool
//! budget is shared, a connection is not).
//!
//! ```sh
//! cargo build --release --example floor_relay
//! FLOOR_PASSWORD=secret target/release/examples/floor_relay --listen-port 6433 \
//!     --port 5432 --user bench --dbname bench --pool-size 20 --flavour per-core
//! ```

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use pgfunnel::auth::Secret;
use pgfunnel::net::dns::DnsCache;
use pgfunnel::net::TlsConfigs;
use pgfunnel::server::{self, ServerConnection, ServerCredential, ServerTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Relay buffer per direction and client.
const BUF: usize = 16 * 1024;
/// Longest startup packet accepted.
const MAX_STARTUP: usize = 10_000;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const PROTOCOL_3: u32 = 196_608;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Flavour {
    /// One multi-thread (work-stealing) tokio runtime.
    Multi,
    /// One current-thread runtime per thread, SO_REUSEPORT listeners, the pool split.
    PerCore,
}

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Floor relay: a minimal transaction-mode pooler (no auth, loopback only)")]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 6433)]
    listen_port: u16,
    /// Postgres host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Postgres port.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// Role the servers log in as.
    #[arg(long)]
    user: String,
    /// Its password (an environment variable, so it stays out of `ps`).
    #[arg(long, env = "FLOOR_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Database of every server connection.
    #[arg(long)]
    dbname: String,
    /// Server connections in total.
    #[arg(long, default_value_t = 20)]
    pool_size: usize,
    /// Runtime flavour.
    #[arg(long, value_enum, default_value_t = Flavour::Multi)]
    flavour: Flavour,
    /// Worker threads (multi) or runtimes (per-core); default: the CPU count.
    #[arg(long)]
    threads: Option<usize>,
}

type Server = Box<ServerConnection>;

/// A fixed set of logged-in servers: idle ones (most recently returned first) and the
/// clients waiting for one (oldest first).
struct Pool {
    target: ServerTarget,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Server>,
    waiters: VecDeque<oneshot::Sender<Server>>,
}

impl Pool {
    /// Logs in `size` servers before returning.
    async fn connect(target: ServerTarget, size: usize) -> anyhow::Result<Arc<Pool>> {
        let pool = Arc::new(Pool {
            target,
            state: Mutex::default(),
        });
        for _ in 0..size {
            let conn = server::connect(&pool.target, Duration::from_secs(15))
                .await
                .context("server login")?;
            pool.put(Box::new(conn));
        }
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle server, or the next one returned after every client that waits already.
    async fn take(&self) -> Option<Server> {
        let rx = {
            let mut state = self.lock();
            if let Some(s) = state.idle.pop() {
                return Some(s);
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            rx
        };
        rx.await.ok()
    }

    /// Hands `server` to the oldest waiting client, or keeps it idle.
    fn put(&self, mut server: Server) {
        let mut state = self.lock();
        while let Some(w) = state.waiters.pop_front() {
            match w.send(server) {
                Ok(()) => return,
                Err(back) => server = back,
            }
        }
        state.idle.push(server);
    }

    /// A server was lost with its client: log in a new one in the background.
    fn replace(self: &Arc<Self>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match server::connect(&pool.target, Duration::from_secs(15)).await {
                    Ok(conn) => return pool.put(Box::new(conn)),
                    Err(e) => {
                        eprintln!("floor: server login failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

/// Walks frame headers across reads. Sees each message's type, and the first body byte
/// of ReadyForQuery.
#[derive(Default)]
struct Frames {
    /// Body bytes of the current message still to pass.
    skip: usize,
    head: [u8; 5],
    have: usize,
    /// The current message is ReadyForQuery and its status byte is next.
    status_next: bool,
}

/// What one walk over a read found.
#[derive(Default)]
struct Seen {
    /// Query and Sync messages (each is answered by one ReadyForQuery).
    requests: usize,
    /// ReadyForQuery messages, and the status of the last one.
    ready: usize,
    last_status: Option<u8>,
    terminate: bool,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.have == 0
    }

    fn walk(&mut self, mut buf: &[u8]) -> anyhow::Result<Seen> {
        let mut seen = Seen::default();
        while !buf.is_empty() {
            if self.skip > 0 {
                if self.status_next {
                    self.status_next = false;
                    seen.ready += 1;
                    seen.last_status = Some(buf[0]);
                }
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = &buf[n..];
                continue;
            }
            let n = (5 - self.have).min(buf.len());
            self.head[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            buf = &buf[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]);
            if len < 4 {
                bail!("invalid message length");
            }
            self.skip = len as usize - 4;
            match self.head[0] {
                b'Q' | b'S' => seen.requests += 1,
                b'X' => seen.terminate = true,
                b'Z' if self.skip > 0 => self.status_next = true,
                _ => {}
            }
        }
        Ok(seen)
    }
}

/// The login replies every client gets: AuthenticationOk, the first server's
/// ParameterStatus values, a BackendKeyData and ReadyForQuery.
fn hello(conn: &ServerConnection) -> Arc<[u8]> {
    let mut out = Vec::new();
    out.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    for name in [
        "server_version",
        "client_encoding",
        "standard_conforming_strings",
        "DateStyle",
        "integer_datetimes",
    ] {
        if let Some(value) = conn.params.get(name) {
            let len = 4 + name.len() + 1 + value.len() + 1;
            out.push(b'S');
            out.extend_from_slice(&(len as u32).to_be_bytes());
            for s in [name, value.as_str()] {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
    }
    out.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1]);
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    out.into()
}

/// Answers SSLRequest/GSSENCRequest with `N` and the startup packet with `hello`. False
/// for a CancelRequest or anything else (the connection is then closed).
async fn handshake(client: &mut TcpStream, hello: &[u8], buf: &mut [u8]) -> anyhow::Result<bool> {
    let mut have = 0;
    loop {
        while have < 8 || have < packet_len(buf) {
            if have == buf.len() {
                bail!("startup packet too long");
            }
            let n = client.read(&mut buf[have..]).await?;
            if n == 0 {
                return Ok(false);
            }
            have += n;
        }
        let len = packet_len(buf);
        if !(8..=MAX_STARTUP).contains(&len) {
            bail!("invalid startup packet length");
        }
        let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => client.write_all(b"N").await?,
            PROTOCOL_3 => {
                client.write_all(hello).await?;
                return Ok(true);
            }
            _ => return Ok(false),
        }
        buf.copy_within(len..have, 0);
        have -= len;
    }
}

fn packet_len(buf: &[u8]) -> usize {
    u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// One client: handshake, then requests until it leaves.
async fn serve(mut client: TcpStream, pool: Arc<Pool>, hello: Arc<[u8]>) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut cbuf = vec![0u8; BUF];
    if !handshake(&mut client, &hello, &mut cbuf[..MAX_STARTUP]).await? {
        return Ok(());
    }
    let mut sbuf = vec![0u8; BUF];
    let (mut cframes, mut sframes) = (Frames::default(), Frames::default());
    loop {
        let n = client.read(&mut cbuf).await?;
        if n == 0 {
            return Ok(());
        }
        let seen = cframes.walk(&cbuf[..n])?;
        if seen.terminate {
            return Ok(());
        }
        let Some(mut server) = pool.take().await else {
            bail!("pool closed");
        };
        let linked = Link {
            client: &mut client,
            server: &mut server,
            cframes: &mut cframes,
            sframes: &mut sframes,
            outstanding: seen.requests,
        };
        match linked.run(n, &mut cbuf, &mut sbuf).await {
            Ok(true) => pool.put(server),
            Ok(false) => {
                pool.replace();
                return Ok(());
            }
            Err(e) => {
                pool.replace();
                return Err(e);
            }
        }
    }
}

/// A client holding a server.
struct Link<'a> {
    client: &'a mut TcpStream,
    server: &'a mut Server,
    cframes: &'a mut Frames,
    sframes: &'a mut Frames,
    /// Queries and Syncs sent and not yet answered by ReadyForQuery.
    outstanding: usize,
}

impl Link<'_> {
    /// Sends the first `n` bytes of `cbuf`, then relays both ways. True when the server may
    /// go back to the pool, false when the client left while holding it.
    async fn run(mut self, n: usize, cbuf: &mut [u8], sbuf: &mut [u8]) -> anyhow::Result<bool> {
        self.server.stream.write_all(&cbuf[..n]).await?;
        loop {
            tokio::select! {
                biased;
                r = self.server.stream.read(sbuf) => {
                    let n = r?;
                    if n == 0 {
                        bail!("server closed");
                    }
                    let seen = self.sframes.walk(&sbuf[..n])?;
                    self.outstanding = self.outstanding.saturating_sub(seen.ready);
                    self.client.write_all(&sbuf[..n]).await?;
                    if self.outstanding == 0
                        && seen.last_status == Some(b'I')
                        && self.sframes.at_boundary()
                        && self.cframes.at_boundary()
                    {
                        return Ok(true);
                    }
                }
                r = self.client.read(cbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(false);
                    }
                    let seen = self.cframes.walk(&cbuf[..n])?;
                    if seen.terminate {
                        return Ok(false);
                    }
                    self.outstanding += seen.requests;
                    self.server.stream.write_all(&cbuf[..n]).await?;
                }
            }
        }
    }
}

/// Accepts clients until the process ends.
async fn accept_loop(listener: TcpListener, pool: Arc<Pool>, hello: Arc<[u8]>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let (pool, hello) = (Arc::clone(&pool), Arc::clone(&hello));
                tokio::spawn(async move {
                    if let Err(e) = serve(client, pool, hello).await {
                        eprintln!("floor: client: {e:#}");
                    }
                });
            }
            Err(e) => {
                eprintln!("floor: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn listener(port: u16, reuse_port: bool) -> anyhow::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    Ok(socket.listen(1024)?)
}

/// The pool's first idle server, for the login replies.
fn first_hello(pool: &Pool) -> anyhow::Result<Arc<[u8]>> {
    match pool.lock().idle.first() {
        Some(conn) => Ok(hello(conn)),
        None => bail!("no server logged in"),
    }
}

fn target(args: &Args) -> anyhow::Result<ServerTarget> {
    let settings = pgfunnel::config::Settings {
        server_tls_sslmode: pgfunnel::config::SslMode::Disable,
        ..Default::default()
    };
    Ok(ServerTarget {
        hosts: vec![args.host.clone()],
        port: args.port,
        dbname: args.dbname.clone(),
        user: args.user.clone(),
        credential: match &args.password {
            Some(p) => ServerCredential::Secret(Secret::Plain(p.clone())),
            None => ServerCredential::None,
        },
        startup_params: Vec::new(),
        tls: Arc::new(TlsConfigs::load(&settings)?),
        direct_tls: false,
        dns: Arc::new(DnsCache::new(Duration::from_secs(15))),
        options: Default::default(),
    })
}

fn run_multi(args: &Args, threads: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pool = Pool::connect(target(args)?, args.pool_size).await?;
        let hello = first_hello(&pool)?;
        let listener = listener(args.listen_port, false)?;
        eprintln!(
            "floor: multi-thread runtime ({threads} workers), {} servers, 127.0.0.1:{}",
            args.pool_size, args.listen_port
        );
        accept_loop(listener, pool, hello).await;
        Ok(())
    })
}

fn run_per_core(args: &Args, threads: usize) -> anyhow::Result<()> {
    let threads = threads.min(args.pool_size).max(1);
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    for i in 0..threads {
        // The pool budget split: each runtime's servers live on its own reactor.
        let share = args.pool_size / threads + usize::from(i < args.pool_size % threads);
        let target = target(args)?;
        let (barrier, port) = (Arc::clone(&barrier), args.listen_port);
        let handle = std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .spawn(move || {
                if let Err(e) = run_core(target, share, port, &barrier) {
                    // One runtime down would leave its share of clients unserved.
                    eprintln!("floor: runtime {i}: {e:#}");
                    std::process::exit(1);
                }
            })?;
        handles.push(handle);
    }
    eprintln!(
        "floor: {threads} current-thread runtimes, {} servers, 127.0.0.1:{}",
        args.pool_size, args.listen_port
    );
    for h in handles {
        if h.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }
    Ok(())
}

/// One current-thread runtime: its servers, then its SO_REUSEPORT listener.
fn run_core(
    target: ServerTarget,
    share: usize,
    port: u16,
    barrier: &Barrier,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pool = rt.block_on(Pool::connect(target, share));
    // Every runtime logs in before any listens, so clients spread over all.
    barrier.wait();
    let pool = pool?;
    rt.block_on(async {
        let hello = first_hello(&pool)?;
        let listener = listener(port, true)?;
        accept_loop(listener, pool, hello).await;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pool_size == 0 {
        bail!("--pool-size must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    match args.flavour {
        Flavour::Multi => run_multi(&args, threads),
        Flavour::PerCore => run_per_core(&args, threads),
    }
}
