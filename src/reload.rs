//! RELOAD (SIGHUP) and SET: build the new config, keep what needs a restart, swap it in
//! with one store, then apply what can change live to existing pools (pool_size, server
//! target and credentials). Other per-pool settings apply to pools created afterwards.
//! TLS settings and the HBA file apply to the next connection; a SET that would leave
//! them unusable is refused and the running setup stays.

use std::sync::Arc;

use tracing::{info, warn};

use crate::app::{App, Users};
use crate::config::{find_key, Config};
use crate::control::ControlError;
use crate::pool::Pool;

impl App {
    /// RELOAD (SIGHUP): rereads the config file and the auth_file. Keys that need a
    /// restart keep their running values. On error nothing changes.
    pub fn reload(&self) -> Result<(), ControlError> {
        let old = self.config();
        let path = old.path.clone().ok_or(ControlError::NoConfigFile)?;
        let mut new = Config::load(&path).map_err(Box::new)?;
        keep_restart_only(&old, &mut new);
        let users = Users::load(&new).map_err(ControlError::Users)?;
        new.log_warnings();
        self.install_config(new, users);
        // Changed certificate/key files and HBA rules apply to new connections; on error the
        // previous ones stay in force.
        if let Err(e) = self.reload_tls() {
            tracing::error!(error = %e, "TLS reload failed; keeping the previous TLS setup");
        }
        if let Err(e) = self.reload_hba() {
            tracing::error!(error = %e, "HBA reload failed; keeping the previous rules");
        }
        info!(path = %path.display(), "config reloaded");
        Ok(())
    }

    /// SET key = value: changes one reloadable setting of the running config.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), ControlError> {
        let k = find_key(key).ok_or_else(|| ControlError::UnknownKey(key.to_owned()))?;
        if !k.reloadable {
            return Err(ControlError::NotChangeable(k.name));
        }
        let mut new = (*self.config()).clone();
        k.apply(&mut new.settings, value)
            .map_err(|expected| ControlError::BadValue {
                key: k.name,
                expected,
            })?;
        let users = Users::load(&new).map_err(ControlError::Users)?;
        // Like RELOAD, but a value that leaves TLS or the HBA rules unusable is refused
        // and the running setup stays.
        let tls = k.name.starts_with("client_tls") || k.name.starts_with("server_tls");
        let hba = matches!(k.name, "auth_hba_file" | "auth_type");
        if hba {
            crate::app::load_hba(&new).map_err(|source| ControlError::Hba {
                key: k.name,
                source,
            })?;
        }
        if tls {
            self.tls
                .reload(&new.settings)
                .map_err(|source| ControlError::Tls {
                    key: k.name,
                    source,
                })?;
        }
        self.install_config(new, users);
        if hba {
            if let Err(e) = self.reload_hba() {
                tracing::error!(error = %e, "HBA reload failed; keeping the previous rules");
            }
        }
        info!(key = k.name, value, "setting changed");
        Ok(())
    }

    /// Replaces the config and users (RELOAD, SET) and applies what can change live:
    /// pool sizes and server targets (host, port, dbname, password) of existing pools.
    pub fn install_config(&self, config: Config, users: Users) {
        self.store_config(config, users);
        let config = self.config();
        self.fleet.reload(&config);
        let pools: Vec<Arc<Pool>> = self.pools.iter().map(|p| p.clone()).collect();
        for pool in pools {
            let Some((_, target, settings)) =
                self.plan_pool(&config, &pool.key.database, &pool.key.user)
            else {
                continue;
            };
            let max_prepared = config.settings.max_prepared_statements as usize;
            pool.statements.set_server_capacity(max_prepared);
            if !pool.resize(settings.pool_size) {
                warn!(db = %pool.key.database, user = %pool.key.user, "pool_size change to or from 0 needs a restart");
            }
            pool.refresh_options(&target);
            if *pool.target() != target {
                info!(db = %pool.key.database, user = %pool.key.user, "server target changed: reconnecting");
                pool.retarget(target);
            }
        }
    }
}

/// Copies every key PgBouncer marks not reloadable from the running config, plus the
/// listen port (which tests and `--port` may have overridden).
fn keep_restart_only(old: &Config, new: &mut Config) {
    for key in crate::config::SETTING_KEYS.iter().filter(|k| !k.reloadable) {
        let _ = key.apply(&mut new.settings, &key.value_in(&old.settings));
    }
    new.settings.listen_port = old.settings.listen_port;
    new.settings.listen_addr = old.settings.listen_addr.clone();
    new.settings.unix_socket_dir = old.settings.unix_socket_dir.clone();
}
