//! Pool planning: which pool serves a (database, user), what its server target and
//! settings are under a config, with the shared per-database and per-user server limits
//! attached; and the per-user settings a client's link obeys (pool mode, timeouts).

use std::sync::Arc;

use super::App;
use crate::auth::Secret;
use crate::client::timeouts::LinkTimeouts;
use crate::config::{Config, DatabaseEntry, PoolMode, ServerCheckQuery, SslNegotiation};
use crate::pool::{LimitGroup, Pool, PoolKey, PoolSettings};
use crate::server::{ServerCredential, ServerTarget};

impl App {
    /// The timeouts that apply to a client logged in as `user` (the `[users]` overrides first).
    pub fn link_timeouts(&self, user: &str) -> LinkTimeouts {
        let config = self.config();
        let u = config.user(user);
        LinkTimeouts {
            client_idle: config.effective_client_idle_timeout(u),
            query: config.effective_query_timeout(u),
            idle_transaction: config.effective_idle_transaction_timeout(u),
            transaction: config.effective_transaction_timeout(u),
        }
    }

    /// The pool mode for a client of `database` logging in as `user` (user > database > global).
    pub fn pool_mode_for(&self, database: &str, user: &str) -> PoolMode {
        let config = self.config();
        match config.database_cow(database) {
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
        let entry = config.database_cow(database)?;
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
        crate::pool::note_auto_database(&self.pools, &entry);
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
            options: crate::server::ConnectOptions::new(s, entry.connect_query.clone()),
        };
        let settings = pool_settings(config, &entry, &server_user);
        Some((key, target, settings))
    }
}

/// The settings of the pool of `entry` logging in as `server_user` under `config` (shared
/// limits not yet attached).
fn pool_settings(config: &Config, entry: &DatabaseEntry, server_user: &str) -> PoolSettings {
    let s = &config.settings;
    let user_entry = config.user(server_user);
    PoolSettings {
        pool_size: config.effective_pool_size(entry, user_entry) as usize,
        reserve_pool_size: config.effective_reserve_pool_size(entry, user_entry) as usize,
        reserve_pool_timeout: s.reserve_pool_timeout,
        query_wait_timeout: config.effective_query_wait_timeout(entry, user_entry),
        connect_timeout: s.server_connect_timeout,
        server_lifetime: config.effective_server_lifetime(entry),
        server_idle_timeout: s.server_idle_timeout,
        min_pool_size: config.effective_min_pool_size(entry) as usize,
        server_check_delay: s.server_check_delay,
        server_check_query: match &s.server_check_query {
            ServerCheckQuery::EmptyQuery => Some(String::new()),
            ServerCheckQuery::Disabled => None,
            ServerCheckQuery::Sql(q) => Some(q.clone()),
        },
        limits: Vec::new(),
        server_login_retry: s.server_login_retry,
    }
}
