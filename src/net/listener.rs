//! Binding the configured listeners (TCP on listen_addr/listen_port, the Unix socket
//! `unix_socket_dir/.s.PGSQL.<port>`) and accepting connections into client tasks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tracing::{debug, info, warn};

use crate::app::App;
use crate::error::ErrorKind;
use crate::net::sockopt::TcpTuning;
use crate::net::Stream;
use crate::protocol::messages::{self, Severity};

/// Bound listeners, ready to accept.
#[derive(Debug, Default)]
pub struct Listeners {
    /// TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// The Unix socket listener and its path.
    pub unix: Option<(UnixListener, PathBuf)>,
}

/// Resolves listen_addr entries: `*` means every IPv4 and IPv6 address.
fn listen_addrs(entries: &[String], port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for e in entries {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if e == "*" {
            out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
            out.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
            continue;
        }
        let host = e.trim_start_matches('[').trim_end_matches(']');
        let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("listen_addr {e:?} does not resolve"))?
            .collect();
        out.extend(resolved);
    }
    out.dedup();
    Ok(out)
}

/// Binds every configured listener (with SO_REUSEPORT when `reuseport`). Fails with the
/// address or path that could not be bound.
pub fn bind(
    addrs: &[String],
    port: u16,
    unix_dir: &str,
    unix_mode: u32,
    unix_group: Option<&str>,
    reuseport: bool,
) -> anyhow::Result<Listeners> {
    let mut l = Listeners::default();
    for addr in listen_addrs(addrs, port)? {
        let sock = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        sock.set_reuseaddr(true)?;
        // so_reuseport: a second process (the next version, during a rolling restart)
        // binds the same port; the kernel spreads new connections over both.
        sock.set_reuseport(reuseport)?;
        if addr.is_ipv6() {
            // `*` binds both families separately; keep the v6 socket v6-only.
            let s2 = socket2::SockRef::from(&sock);
            let _ = s2.set_only_v6(true);
        }
        sock.bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        l.tcp.push(
            sock.listen(1024)
                .with_context(|| format!("cannot listen on {addr}"))?,
        );
    }
    if !unix_dir.is_empty() {
        let path = Path::new(unix_dir).join(format!(".s.PGSQL.{port}"));
        if path.exists() {
            // A stale socket from a previous run; refuse only if something answers on it.
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                anyhow::bail!(
                    "unix socket {} is in use by another process",
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(unix_mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        if let Some(group) = unix_group.filter(|g| !g.is_empty()) {
            set_group(&path, group)?;
        }
        l.unix = Some((listener, path));
    }
    Ok(l)
}

fn set_group(path: &Path, group: &str) -> anyhow::Result<()> {
    let cname = std::ffi::CString::new(group).context("unix_socket_group contains NUL")?;
    // SAFETY: getgrnam returns a pointer to static storage or NULL; read gr_gid at once.
    let gid = unsafe {
        let gr = libc::getgrnam(cname.as_ptr());
        if gr.is_null() {
            anyhow::bail!("unix_socket_group {group:?} does not exist");
        }
        (*gr).gr_gid
    };
    std::os::unix::fs::chown(path, None, Some(gid))
        .with_context(|| format!("cannot chgrp {} to {group}", path.display()))
}

/// True when `max_client_conn` clients (logged in or still in their handshake) are
/// connected. Checked at accept for TCP, before any TLS handshake, so half-open handshakes
/// cannot hold more tasks than the limit allows. Unix-socket connections are checked after
/// the startup packet instead, where the admin console stays exempt.
fn at_client_limit(app: &App) -> bool {
    let max = app.config().settings.max_client_conn as usize;
    app.client_count.load(Ordering::Acquire) >= max
}

/// Longest time a refused connection is kept: to hand over the error and let the peer
/// close first.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers a connection over `max_client_conn` with a plaintext FATAL 53300 (as Postgres
/// does before any TLS) and closes it, on a short-lived task.
fn refuse_at_accept(app: &App, mut sock: TcpStream, peer: SocketAddr) {
    warn!(peer = %peer, max_client_conn = app.config().settings.max_client_conn, "too many clients: refused at accept");
    let mut buf = BytesMut::new();
    let code = ErrorKind::TooManyClients.sqlstate();
    messages::put_error(&mut buf, Severity::Fatal, code, TOO_MANY_CLIENTS, None);
    app.tasks.spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            sock.write_all(&buf).await?;
            sock.shutdown().await?;
            // Closing with the client's startup packet unread would reset the connection
            // and could discard the error before the client reads it: drain a little first.
            let mut sink = [0u8; 1024];
            let mut drained = 0;
            while drained < REFUSAL_DRAIN_LIMIT {
                match sock.read(&mut sink).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Hands an accepted TCP connection to its client task, or refuses it over max_client_conn.
fn admit_tcp(app: &Arc<App>, sock: TcpStream, peer: SocketAddr) {
    let _ = sock.set_nodelay(true);
    let tuning = TcpTuning::from_settings(&app.config().settings);
    if let Err(e) = tuning.apply(&sock) {
        debug!(error = %e, "tcp_keepalive/tcp_user_timeout not applied");
    }
    if at_client_limit(app) {
        refuse_at_accept(app, sock, peer);
        return;
    }
    crate::app::spawn(app, Stream::Tcp(sock), peer.to_string());
}

/// Accepts every connection the kernel queued on `l` (completed handshakes) until none is
/// left, then closes it. Called once the listener stopped accepting; the accepts are direct
/// calls, not reactor readiness, so a connection whose wake-up is still pending is taken too.
fn drain_queue(app: &Arc<App>, l: TcpListener) {
    let Ok(std_l) = l.into_std() else {
        return;
    };
    let mut drained = 0usize;
    loop {
        match std_l.accept() {
            Ok((sock, peer)) => {
                let sock = sock
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(sock));
                match sock {
                    Ok(sock) => {
                        drained += 1;
                        admit_tcp(app, sock, peer);
                    }
                    Err(e) => warn!(error = %e, "queued connection not served"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                warn!(error = %e, "accept failed while draining the listener");
                break;
            }
        }
    }
    info!(drained, "listener closed after accepting its queue");
}

/// Most bytes read (and ignored) from a refused connection before it is closed.
const REFUSAL_DRAIN_LIMIT: usize = 16 * 1024;

/// The 53300 message for a client over `max_client_conn`, worded as PgBouncer's so that it
/// names the limit that was hit.
pub const TOO_MANY_CLIENTS: &str = "no more connections allowed (max_client_conn)";

/// Spawns accept loops for every listener; they stop when the app shuts down. On a graceful
/// shutdown a TCP listener first accepts what the kernel already queued on it (those
/// clients would otherwise be reset when it closes; see `shutdown`).
pub fn spawn_accept_loops(app: &Arc<App>, listeners: Listeners) {
    for l in listeners.tcp {
        if let Ok(a) = l.local_addr() {
            info!(addr = %a, "listening");
        }
        let open = app.stopping.listener_open();
        app.tasks.spawn(tcp_accept_loop(app.clone(), l, open));
    }
    if let Some((l, path)) = listeners.unix {
        info!(path = %path.display(), "listening");
        app.tasks.spawn(unix_accept_loop(app.clone(), l, path));
    }
}

/// Accepts TCP clients until shutdown, then (on a graceful one) the queued ones; `open`
/// counts this listener as open until then.
async fn tcp_accept_loop(app2: Arc<App>, l: TcpListener, open: crate::shutdown::ListenerOpen) {
    loop {
        let accepted = tokio::select! {
            _ = app2.shutdown.cancelled() => break,
            r = l.accept() => r,
        };
        match accepted {
            Ok((sock, peer)) => admit_tcp(&app2, sock, peer),
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    if app2.stopping.drains_listeners() {
        drain_queue(&app2, l);
    }
    drop(open);
}

/// Accepts Unix socket clients until shutdown, then removes the socket file at `path`.
async fn unix_accept_loop(app2: Arc<App>, l: UnixListener, path: PathBuf) {
    // During SHUTDOWN the socket stays open for the admin console until the
    // shutdown finished (pooled clients are refused after their startup packet).
    let closed = async {
        app2.shutdown.cancelled().await;
        if app2.stopping.requested().is_some() {
            app2.stopping.finished.cancelled().await;
        }
    };
    tokio::pin!(closed);
    loop {
        let accepted = tokio::select! {
            _ = &mut closed => break,
            r = l.accept() => r,
        };
        match accepted {
            Ok((sock, _)) => {
                crate::app::spawn(&app2, Stream::Unix(sock), "unix".to_owned());
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}
