//! Startup and shutdown of a pgfunnel: bind listeners, start the janitor (reaping,
//! min_pool_size, memory trim), the shutdown driver, stats periods and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use super::{load_hba, App, Users};
use crate::config::Config;
use crate::net::listener;
use crate::net::tls::TlsConfigs;
use crate::pool::Pool;

/// A started pgfunnel.
#[derive(Debug)]
pub struct Running {
    /// The shared state.
    pub app: Arc<App>,
    /// Bound TCP addresses (useful when listen_port is 0 in tests).
    pub tcp_addrs: Vec<SocketAddr>,
    /// The Unix socket path, if any.
    pub unix_path: Option<PathBuf>,
    /// The bound metrics_listen address, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound edge_listen address, if any.
    pub edge_addr: Option<SocketAddr>,
}

/// Binds listeners and starts serving in the current tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let users = Users::load(&config)?;
    let tls = TlsConfigs::load(&config.settings).context("cannot set up TLS")?;
    let hba = load_hba(&config)?;
    let s = &config.settings;
    let listeners = listener::bind(
        &s.listen_addr,
        s.listen_port,
        &s.unix_socket_dir,
        s.unix_socket_mode,
        s.unix_socket_group.as_deref(),
        s.so_reuseport,
    )?;
    let tcp_addrs = listeners
        .tcp
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let unix_path = listeners.unix.as_ref().map(|(_, p)| p.clone());
    let app = App::new(config, users, tls, hba);
    let mut metrics_addr = None;
    listener::spawn_accept_loops(&app, listeners);
    spawn_janitor(&app);
    crate::fleet::spawn(&app);
    crate::shutdown::spawn_driver(&app);
    crate::metrics::period::spawn_stats_period(&app);
    if let Some(addr) = app.config().settings.metrics_listen.clone() {
        let bound = crate::metrics::http::serve(&app, &addr).await?;
        info!(addr = %bound, "metrics listening");
        metrics_addr = Some(bound);
    }
    let edge_addr = crate::edge::start(&app).await?;
    Ok(Running {
        app,
        tcp_addrs,
        unix_path,
        metrics_addr,
        edge_addr,
    })
}

fn spawn_janitor(app: &Arc<App>) {
    let app2 = app.clone();
    app.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut peak_clients = 0usize;
        let mut idle_pools = crate::pool::IdlePools::default();
        loop {
            tokio::select! {
                _ = app2.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // After a crowd of clients left, hand the freed heap back to the OS (glibc keeps
            // it in its arenas otherwise, and RSS would stay at the peak).
            let clients = app2.client_count.load(Ordering::Relaxed);
            peak_clients = peak_clients.max(clients);
            if peak_clients >= clients + 256 && clients <= peak_clients / 2 {
                // SAFETY: malloc_trim only releases free memory; it is thread safe in glibc.
                unsafe { libc::malloc_trim(0) };
                peak_clients = clients;
            }
            crate::pool::fill::open_forced_pools(&app2);
            let pools: Vec<Arc<Pool>> = app2.pools.iter().map(|p| p.clone()).collect();
            for pool in pools {
                pool.reap();
                if pool.settings.min_pool_size > 0 {
                    tokio::spawn(async move { pool.fill_min().await });
                }
            }
            idle_pools.sweep(&app2.pools);
        }
        for pool in app2.pools.iter() {
            pool.close_idle_because(crate::logging::close_reason::CloseReason::ShuttingDown);
        }
    });
}

impl Running {
    /// Stops accepting, waits up to `grace` for clients to leave, then returns.
    pub async fn shutdown(self, grace: Duration) {
        info!("shutting down");
        self.app.shutdown.cancel();
        self.app.tasks.close();
        let _ = tokio::time::timeout(grace, self.app.tasks.wait()).await;
    }
}
