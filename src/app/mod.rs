//! The shared state of a running pgfunnel ([`App`]: config, users, pools, client limits,
//! cancel registry, shutdown) and what is built on it: pool planning (`pools`), client
//! admission and the accept -> session flow (`admission`), the narrow contexts the client
//! side sees (`context`), and startup (`startup`: bind listeners, janitor, serve).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::auth::{Hba, HbaError, Secret};
use crate::cancel::CancelRegistry;
use crate::client::registry::ClientRegistry;
use crate::config::{AuthType, Config};
use crate::control::ControlState;
use crate::metrics::Metrics;
use crate::net::dns::DnsCache;
use crate::net::tls::{TlsConfigs, TlsError};
use crate::pool::{LimitGroup, Pool, PoolKey};
use crate::shutdown::ShutdownCtl;

pub mod admission;
mod context;
mod pools;
mod startup;

pub use crate::users::Users;
pub use admission::{handle, spawn, ClientAdmission};
pub use startup::{start, Running};

/// Shared state, passed to every task as `Arc<App>`.
#[derive(Debug)]
pub struct App {
    config: ArcSwap<Config>,
    users: ArcSwap<Users>,
    /// Server pools by (database, user).
    pub pools: DashMap<PoolKey, Arc<Pool>>,
    db_limits: DashMap<String, Arc<LimitGroup>>,
    user_limits: DashMap<String, Arc<LimitGroup>>,
    client_counts: Arc<admission::ClientCounts>,
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
    Hba::load(&crate::auth::resolve_hba_path(dir, file))
        .and_then(|h| crate::auth::IdentMap::attach(h, config))
        .map(Some)
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
            dns: Arc::new(DnsCache::from_settings(&config.settings)),
            looked_up: DashMap::new(),
            hba: ArcSwapOption::from(hba.map(Arc::new)),
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            pools: DashMap::new(),
            db_limits: DashMap::new(),
            user_limits: DashMap::new(),
            client_counts: Arc::default(),
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
        self.users.load().secret(user).cloned()
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
        self.users.load().names().cloned().collect()
    }

    /// True when users come from an auth_file (trust then still requires the user to exist).
    pub fn has_auth_file(&self) -> bool {
        self.users.load().from_file()
    }
}
