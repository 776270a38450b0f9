//! The shared state of a running pgfunnel (config, users, pools, cancel registry,
//! shutdown) and its startup: bind listeners, start the janitor, serve until shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::auth::{AuthFile, Hba, HbaError, Secret};
use crate::cancel::CancelRegistry;
use crate::client::registry::ClientRegistry;
use crate::config::{AuthType, Config, ServerCheckQuery, SslNegotiation};
use crate::control::ControlState;
use crate::metrics::Metrics;
use crate::net::dns::DnsCache;
use crate::net::listener;
use crate::net::tls::{TlsConfigs, TlsError};
use crate::pool::{LimitGroup, Pool, PoolKey, PoolSettings};
use crate::server::{ServerCredential, ServerTarget};
use crate::shutdown::ShutdownCtl;

/// Users pgfunnel can authenticate clients against: auth_file entries plus, in URL
/// mode, the upstream's user.
#[derive(Debug, Default)]
pub struct Users {
    secrets: HashMap<String, Secret>,
    from_file: bool,
    /// How many users hold SCRAM secrets (the challenge mix unknown users copy).
    mix: crate::auth::SecretMix,
    /// SCRAM verifiers derived from plaintext secrets; a reload starts a new one.
    plain_scram: crate::auth::PlainScramCache,
}

impl Users {
    /// Loads the auth_file named by the config (if any) and adds URL-mode credentials.
    pub fn load(config: &Config) -> anyhow::Result<Users> {
        let mut users = Users::default();
        if let Some(path) = &config.auth_file_path {
            let file = AuthFile::load(path)
                .with_context(|| format!("cannot load auth_file {}", path.display()))?;
            users.secrets = file
                .users()
                .filter_map(|u| file.get(u).map(|s| (u.to_owned(), s.clone())))
                .collect();
            users.from_file = true;
        }
        if !users.from_file {
            // URL mode (or a config without auth_file): clients log in with the user and
            // password of the database entries.
            for db in &config.databases {
                if let (Some(u), Some(p)) = (&db.user, &db.password) {
                    users
                        .secrets
                        .entry(u.clone())
                        .or_insert_with(|| Secret::Plain(p.expose().to_owned()));
                }
            }
        }
        users.mix = crate::auth::SecretMix::of(users.secrets.values());
        Ok(users)
    }

    /// How many of these users hold SCRAM secrets, out of how many.
    pub fn mix(&self) -> crate::auth::SecretMix {
        self.mix
    }

    /// SCRAM verifiers derived from these users' plaintext secrets.
    pub fn plain_scram(&self) -> &crate::auth::PlainScramCache {
        &self.plain_scram
    }
}

/// Shared state, passed to every task as `Arc<App>`.
#[derive(Debug)]
pub struct App {
    config: ArcSwap<Config>,
    users: ArcSwap<Users>,
    /// Server pools by (database, user).
    pub pools: DashMap<PoolKey, Arc<Pool>>,
    db_limits: DashMap<String, Arc<LimitGroup>>,
    user_limits: DashMap<String, Arc<LimitGroup>>,
    client_counts: DashMap<(u8, String), usize>,
    /// Cancel keys of connected clients.
    pub cancel: Arc<CancelRegistry>,
    /// Peers and the fleet budget (`fleet`).
    pub fleet: Arc<crate::fleet::Fleet>,
    /// Session-mode clients' keys that carry their server's real pid.
    pub session_keys: Arc<crate::client::backend_key::SessionKeys>,
    /// Connected clients (for max_client_conn).
    pub client_count: AtomicUsize,
    /// Fires when pgfunnel shuts down.
    pub shutdown: CancellationToken,
    /// Every task pgfunnel spawned (accept loops, clients, janitor).
    pub tasks: TaskTracker,
    next_client_id: AtomicU64,
    /// Per-process key that makes unknown users' fake SCRAM salts stable.
    pub scram_mock_key: [u8; 32],
    /// Connected clients (SHOW CLIENTS, KILL).
    pub clients: Arc<ClientRegistry>,
    /// Paused and disabled databases.
    pub control: ControlState,
    /// Prometheus registry and metric handles.
    pub metrics: Arc<Metrics>,
    /// Shutdown requests (signals, SHUTDOWN) and their completion.
    pub stopping: ShutdownCtl,
    /// When pgfunnel started.
    pub started_at: std::time::SystemTime,
    /// TLS toward clients and toward servers; swapped by [`App::reload_tls`].
    pub tls: Arc<TlsConfigs>,
    /// Server host names resolved, kept up to dns_max_ttl.
    pub dns: Arc<DnsCache>,
    /// Secrets found by `auth_query`, for server logins of those users.
    looked_up: DashMap<String, Secret>,
    hba: ArcSwapOption<Hba>,
}

/// The HBA rules of `auth_hba_file` when `auth_type = hba` (also for `pgfunnel check`).
pub fn load_hba(config: &Config) -> Result<Option<Hba>, HbaError> {
    let s = &config.settings;
    let (AuthType::Hba, Some(file)) = (s.auth_type, &s.auth_hba_file) else {
        return Ok(None);
    };
    let dir = config.path.as_deref().and_then(|p| p.parent());
    Hba::load(&crate::auth::resolve_hba_path(dir, file)).map(Some)
}

impl App {
    /// Builds the state from a validated config, its users, and the TLS configs and HBA
    /// rules loaded from the files it names.
    pub fn new(config: Config, users: Users, tls: TlsConfigs, hba: Option<Hba>) -> Arc<App> {
        Arc::new(App {
            cancel: Arc::new(CancelRegistry::new(crate::fleet::own_peer_id(
                &config.settings,
            ))),
            fleet: crate::fleet::Fleet::new(&config),
            tls: Arc::new(tls),
            dns: Arc::new(DnsCache::new(config.settings.dns_max_ttl)),
            looked_up: DashMap::new(),
            hba: ArcSwapOption::from(hba.map(Arc::new)),
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            pools: DashMap::new(),
            db_limits: DashMap::new(),
            user_limits: DashMap::new(),
            client_counts: DashMap::new(),
            session_keys: Arc::default(),
            client_count: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_client_id: AtomicU64::new(1),
            scram_mock_key: crate::auth::ScramServer::generate_mock_key(),
            clients: Arc::new(ClientRegistry::default()),
            control: ControlState::default(),
            metrics: Arc::new(Metrics::new()),
            stopping: ShutdownCtl::default(),
            started_at: std::time::SystemTime::now(),
        })
    }

    /// The current config (one atomic load).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Re-reads the certificate, key and CA files named by the current config (RELOAD,
    /// SIGHUP). New connections use them; open ones keep theirs. On error the old
    /// configs stay in force and the error names the file.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.reload(&self.config().settings)?;
        info!("tls certificates reloaded");
        Ok(())
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The secret of `user` from the auth_file (or URL), if listed there.
    pub fn stored_secret(&self, user: &str) -> Option<Secret> {
        self.users.load().secrets.get(user).cloned()
    }

    /// The loaded users (auth_file or URL), with their challenge mix and derived verifiers.
    pub fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }

    /// The secret of `user`: auth_file first, then the last `auth_query` answer.
    pub fn secret_for(&self, user: &str) -> Option<Secret> {
        self.stored_secret(user)
            .or_else(|| self.looked_up.get(user).map(|s| s.clone()))
    }

    /// Records an `auth_query` answer (`None` forgets the user: expired or removed).
    pub fn remember_looked_up(&self, user: &str, secret: Option<Secret>) {
        match secret {
            Some(s) => {
                self.looked_up.insert(user.to_owned(), s);
            }
            None => {
                self.looked_up.remove(user);
            }
        }
    }

    /// The parsed `auth_hba_file`, when one is loaded.
    pub fn hba(&self) -> Option<Arc<Hba>> {
        self.hba.load_full()
    }

    /// Re-reads `auth_hba_file` (RELOAD, SIGHUP); on error the old rules stay in force.
    pub fn reload_hba(&self) -> Result<(), HbaError> {
        self.hba.store(load_hba(&self.config())?.map(Arc::new));
        Ok(())
    }

    /// Swaps in a new config and users with one store each (readers see old or new).
    pub(crate) fn store_config(&self, config: Config, users: Users) {
        self.users.store(Arc::new(users));
        self.config.store(Arc::new(config));
    }

    /// Names of the users pgfunnel can authenticate (SHOW USERS, SHOW LISTS).
    pub fn user_names(&self) -> Vec<String> {
        self.users.load().secrets.keys().cloned().collect()
    }

    /// True when users come from an auth_file (trust then still requires the user to exist).
    pub fn has_auth_file(&self) -> bool {
        self.users.load().from_file
    }

    /// The timeouts that apply to a client logged in as `user` ([users] overrides first).
    pub fn link_timeouts(&self, user: &str) -> crate::client::timeouts::LinkTimeouts {
        let config = self.config();
        let u = config.user(user);
        crate::client::timeouts::LinkTimeouts {
            client_idle: config.effective_client_idle_timeout(u),
            query: config.effective_query_timeout(u),
            idle_transaction: config.effective_idle_transaction_timeout(u),
            transaction: config.effective_transaction_timeout(u),
        }
    }

    /// Counts a client against max_db_client_connections and max_user_client_connections.
    /// Returns the name of the limit that is full, or a guard that uncounts on drop.
    pub fn admit_client(
        self: &Arc<Self>,
        database: &str,
        user: &str,
    ) -> Result<ClientSlot, &'static str> {
        let config = self.config();
        let db_max = config
            .database(database)
            .map(|e| config.effective_max_db_client_connections(&e))
            .unwrap_or(config.settings.max_db_client_connections);
        let user_max = config.effective_max_user_client_connections(config.user(user));
        let keys = [
            (
                0u8,
                database.to_owned(),
                db_max,
                "max_db_client_connections",
            ),
            (
                1u8,
                user.to_owned(),
                user_max,
                "max_user_client_connections",
            ),
        ];
        let mut taken = Vec::new();
        for (kind, name, max, label) in keys {
            let mut count = self.client_counts.entry((kind, name.clone())).or_insert(0);
            if max > 0 && *count >= max as usize {
                drop(count);
                drop(ClientSlot {
                    app: self.clone(),
                    keys: taken,
                });
                return Err(label);
            }
            *count += 1;
            taken.push((kind, name));
        }
        Ok(ClientSlot {
            app: self.clone(),
            keys: taken,
        })
    }

    /// The pool mode for a client of `database` logging in as `user` (user > database > global).
    pub fn pool_mode_for(&self, database: &str, user: &str) -> crate::config::PoolMode {
        let config = self.config();
        match config.database(database) {
            Some(entry) => {
                let server_user = entry.user.clone().unwrap_or_else(|| user.to_owned());
                config.effective_pool_mode(&entry, config.user(&server_user))
            }
            None => config.settings.pool_mode,
        }
    }

    /// The pool serving `client_user` on `database`, created on first use. `None` when the
    /// database is not configured and there is no `*` fallback.
    pub fn pool_for(&self, database: &str, client_user: &str) -> Option<Arc<Pool>> {
        let config = self.config();
        let entry = config.database(database)?;
        let server_user = entry.user.clone().unwrap_or_else(|| client_user.to_owned());
        self.pool_as(database, &server_user)
    }

    /// The pool of `database` logging in to the server as `server_user` (a forced user, the
    /// client's own name, or `auth_user` for auth_query), created on first use.
    pub fn pool_as(&self, database: &str, server_user: &str) -> Option<Arc<Pool>> {
        let key = PoolKey {
            database: database.to_owned(),
            user: server_user.to_owned(),
        };
        if let Some(p) = self.pools.get(&key) {
            return Some(p.clone());
        }
        let config = self.config();
        let (key, target, settings) = self.plan_pool_as(&config, database, server_user)?;
        let entry = config.database(database)?;
        let user_entry = config.user(&key.user);
        let mut groups = Vec::new();
        let max_db = config.effective_max_db_connections(&entry) as usize;
        if max_db > 0 {
            groups.push(
                self.db_limits
                    .entry(database.to_owned())
                    .or_insert_with(|| LimitGroup::new(max_db))
                    .clone(),
            );
        }
        let max_user = config.effective_max_user_connections(user_entry) as usize;
        if max_user > 0 {
            groups.push(
                self.user_limits
                    .entry(key.user.clone())
                    .or_insert_with(|| LimitGroup::new(max_user))
                    .clone(),
            );
        }
        groups.extend(self.fleet.limit_groups(&config, database, &key.user));
        let mut settings = settings;
        settings.limits = groups.clone();
        let pool = self
            .pools
            .entry(key.clone())
            .or_insert_with(|| {
                let timers = self.metrics.timers_for(&key.database, &key.user);
                let p = Pool::new(key, target, settings, timers);
                if self.control.is_paused(database) {
                    p.gate.set_paused(true);
                }
                for g in &groups {
                    g.join(&p);
                }
                p
            })
            .clone();
        Some(pool)
    }

    /// What a pool for `client_user` on `database` looks like under `config`: its key,
    /// server target and settings (shared limits not yet attached).
    pub fn plan_pool(
        &self,
        config: &Config,
        database: &str,
        client_user: &str,
    ) -> Option<(PoolKey, ServerTarget, PoolSettings)> {
        let entry = config.database(database)?;
        let server_user = entry.user.clone().unwrap_or_else(|| client_user.to_owned());
        self.plan_pool_as(config, database, &server_user)
    }

    /// What the pool of `database` logging in as `server_user` looks like under `config`.
    fn plan_pool_as(
        &self,
        config: &Config,
        database: &str,
        server_user: &str,
    ) -> Option<(PoolKey, ServerTarget, PoolSettings)> {
        let entry = config.database(database)?;
        let key = PoolKey {
            database: database.to_owned(),
            user: server_user.to_owned(),
        };
        let server_user = server_user.to_owned();
        let forced_password = entry
            .password
            .as_ref()
            .filter(|_| entry.user.as_deref().is_none_or(|u| u == server_user));
        let credential = match forced_password {
            Some(pw) => ServerCredential::Secret(Secret::Plain(pw.expose().to_owned())),
            None => ServerCredential::for_secret(self.secret_for(&server_user)),
        };
        let s = &config.settings;
        let hosts = if entry.hosts.is_empty() {
            vec![s.unix_socket_dir.clone()]
        } else {
            entry.hosts.clone()
        };
        let mut startup_params = Vec::new();
        for (k, v) in [
            ("client_encoding", &entry.client_encoding),
            ("datestyle", &entry.datestyle),
            ("timezone", &entry.timezone),
            ("application_name", &entry.application_name),
        ] {
            if let Some(v) = v {
                startup_params.push((k.to_owned(), v.clone()));
            }
        }
        let target = ServerTarget {
            hosts,
            port: entry.port,
            dbname: entry.server_dbname().to_owned(),
            user: server_user.clone(),
            credential,
            startup_params,
            tls: self.tls.clone(),
            dns: self.dns.clone(),
            direct_tls: entry
                .url_tls
                .as_ref()
                .is_some_and(|t| t.sslnegotiation == Some(SslNegotiation::Direct)),
        };
        let user_entry = config.user(&server_user);
        let settings = PoolSettings {
            pool_size: config.effective_pool_size(&entry, user_entry) as usize,
            reserve_pool_size: config.effective_reserve_pool_size(&entry, user_entry) as usize,
            reserve_pool_timeout: s.reserve_pool_timeout,
            query_wait_timeout: config.effective_query_wait_timeout(&entry, user_entry),
            connect_timeout: s.server_connect_timeout,
            server_lifetime: config.effective_server_lifetime(&entry),
            server_idle_timeout: s.server_idle_timeout,
            min_pool_size: config.effective_min_pool_size(&entry) as usize,
            server_check_delay: s.server_check_delay,
            server_check_query: match &s.server_check_query {
                ServerCheckQuery::EmptyQuery => Some(String::new()),
                ServerCheckQuery::Disabled => None,
                ServerCheckQuery::Sql(q) => Some(q.clone()),
            },
            limits: Vec::new(),
            server_login_retry: s.server_login_retry,
        };
        Some((key, target, settings))
    }
}

/// A client counted against per-database and per-user client limits.
#[derive(Debug)]
pub struct ClientSlot {
    app: Arc<App>,
    keys: Vec<(u8, String)>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        for k in self.keys.drain(..) {
            if let Some(mut c) = self.app.client_counts.get_mut(&k) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

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
        }
        for pool in app2.pools.iter() {
            pool.close_idle();
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
