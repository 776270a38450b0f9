//! The typed `[pgbouncer]` section: one field per key pgfunnel acts on, PgBouncer 1.25 defaults,
//! and the cross-key checks. Parsing a single key lives in `keys.rs` (the key table).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, Location};
use super::kinds::{AuthType, LogFormat, PoolMode, ServerCheckQuery, SslMode};
use super::warning::{ConfigWarning, WarningMessage};

/// PgBouncer's default `auth_query` (1.25, with the VALID UNTIL check added for CVE-2025-2291).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

/// The effective `[pgbouncer]` settings. Field names are PgBouncer's key names; every default is
/// PgBouncer 1.25's (`src/main.c`). Time values are `Duration`s; `0` keeps PgBouncer's meaning
/// ("disabled"/"unlimited") wherever PgBouncer gives it one. Keys PgBouncer has but pgfunnel does
/// not act on are kept as raw text in `no_effect`.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each field is documented by PgBouncer's key of the same name
pub struct Settings {
    // -- where to listen
    /// Comma list of addresses; `*` = all; empty = Unix socket only.
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    /// Empty = no Unix socket; a leading `@` = Linux abstract namespace.
    pub unix_socket_dir: String,
    pub unix_socket_mode: u32,
    pub unix_socket_group: Option<String>,
    // -- authentication
    pub auth_type: AuthType,
    /// As written; see `Config::auth_file_path` for the resolved path.
    pub auth_file: Option<PathBuf>,
    pub auth_hba_file: Option<PathBuf>,
    pub auth_ident_file: Option<PathBuf>,
    pub auth_ldap_options: Option<String>,
    pub auth_user: Option<String>,
    pub auth_query: String,
    pub auth_dbname: Option<String>,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub scram_iterations: u32,
    // -- pooling
    pub pool_mode: PoolMode,
    pub max_client_conn: u32,
    /// 0 = unlimited (PgBouncer 1.24+).
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_db_client_connections: u32,
    pub max_user_connections: u32,
    pub max_user_client_connections: u32,
    pub max_prepared_statements: u32,
    pub max_packet_size: u32,
    /// Unanswered requests (Query, Sync, FunctionCall) per client before pgfunnel stops
    /// reading from it until answers drain (pgfunnel's own).
    pub max_client_pipeline: u32,
    /// Largest prepared-statement message (Parse, Bind) pgfunnel gathers whole to rewrite
    /// (pgfunnel's own); larger ones fail with 54000.
    pub max_prepared_message_size: u32,
    pub server_round_robin: bool,
    pub server_fast_close: bool,
    pub server_reset_query: Option<String>,
    pub server_reset_query_always: bool,
    pub server_check_query: ServerCheckQuery,
    pub server_check_delay: Duration,
    pub application_name_add_host: bool,
    pub ignore_startup_parameters: Vec<String>,
    pub track_extra_parameters: Vec<String>,
    pub login_notify_message: Option<String>,
    // -- timeouts
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub client_login_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub query_wait_notify: Duration,
    pub cancel_wait_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub transaction_timeout: Duration,
    pub autodb_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub dns_max_ttl: Duration,
    pub dns_nxdomain_ttl: Duration,
    // -- TCP
    pub tcp_keepalive: bool,
    pub tcp_keepcnt: u32,
    pub tcp_keepidle: Duration,
    pub tcp_keepintvl: Duration,
    /// Plain numbers are milliseconds, as in PgBouncer.
    pub tcp_user_timeout: Duration,
    // -- TLS toward clients
    pub client_tls_sslmode: SslMode,
    pub client_tls_key_file: Option<PathBuf>,
    pub client_tls_cert_file: Option<PathBuf>,
    pub client_tls_ca_file: Option<PathBuf>,
    pub client_tls_protocols: String,
    pub client_tls_ciphers: String,
    pub client_tls13_ciphers: Option<String>,
    // -- TLS toward servers
    pub server_tls_sslmode: SslMode,
    pub server_tls_ca_file: Option<PathBuf>,
    pub server_tls_key_file: Option<PathBuf>,
    pub server_tls_cert_file: Option<PathBuf>,
    pub server_tls_protocols: String,
    pub server_tls_ciphers: String,
    pub server_tls13_ciphers: Option<String>,
    // -- logging
    pub logfile: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub log_stats: bool,
    pub stats_period: Duration,
    pub verbose: u32,
    // -- fleet (peering, shared budget)
    pub peer_id: super::peers::PeerIdSetting,
    pub so_reuseport: bool,
    /// DNS name whose A/AAAA records are the peers (a headless Service); `None` = off.
    pub peers_dns: Option<String>,
    /// Server connections per database across the fleet; 0 = no fleet budget.
    pub fleet_max_db_connections: u32,
    /// Server connections per user across the fleet; 0 = no fleet budget.
    pub fleet_max_user_connections: u32,
    /// How long a peer that vanished keeps its budget share before the others take it.
    pub fleet_grace_period: Duration,
    // -- pgfunnel's own keys
    /// `host:port` of the Prometheus /metrics listener; `None` = off.
    pub metrics_listen: Option<String>,
    /// `host:port` of the edge listener (WebSocket and SQL over HTTP); `None` = off.
    pub edge_listen: Option<String>,
    /// Cleartext passwords over an unencrypted edge listener from non-loopback peers.
    pub edge_allow_plaintext: bool,
    /// Largest `/sql` request body in bytes (413 past it).
    pub edge_max_request_size: u32,
    /// Largest `/sql` response body in bytes (507 past it).
    pub edge_max_response_size: u32,
    /// Tokio worker threads; 0 = one per core.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    /// Distinct prepared statements remembered per pool (oldest unused evicted past it).
    pub max_pool_prepared_statements: u32,
    /// Notifications queued per LISTENing client; past it the client is disconnected.
    pub listen_queue_size: u32,
    /// Raw values of the keys pgfunnel accepts without acting on them (`KeySupport::NoEffect`).
    pub no_effect: BTreeMap<&'static str, String>,
    /// Where each explicitly set key was set (absent = default).
    pub set_at: BTreeMap<&'static str, Location>,
}

impl Default for Settings {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        let secs = Duration::from_secs;
        Self {
            listen_addr: Vec::new(),
            listen_port: 6432,
            unix_socket_dir: s("/tmp"),
            unix_socket_mode: 0o777,
            unix_socket_group: None,
            auth_type: AuthType::Md5,
            auth_file: None,
            auth_hba_file: None,
            auth_ident_file: None,
            auth_ldap_options: None,
            auth_user: None,
            auth_query: s(DEFAULT_AUTH_QUERY),
            auth_dbname: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            scram_iterations: 4096,
            pool_mode: PoolMode::Session,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: secs(5),
            max_db_connections: 0,
            peer_id: super::peers::PeerIdSetting::Off,
            so_reuseport: false,
            peers_dns: None,
            fleet_max_db_connections: 0,
            fleet_max_user_connections: 0,
            fleet_grace_period: secs(30),
            max_db_client_connections: 0,
            max_user_connections: 0,
            max_user_client_connections: 0,
            max_prepared_statements: 200,
            max_pool_prepared_statements: 10_000,
            listen_queue_size: 1024,
            max_packet_size: 2_147_483_647,
            max_client_pipeline: 4096,
            max_prepared_message_size: 16 * 1024 * 1024,
            server_round_robin: false,
            server_fast_close: false,
            server_reset_query: Some(s("DISCARD ALL")),
            server_reset_query_always: false,
            server_check_query: ServerCheckQuery::EmptyQuery,
            server_check_delay: secs(30),
            application_name_add_host: false,
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: vec![s("IntervalStyle")],
            login_notify_message: None,
            server_lifetime: secs(3600),
            server_idle_timeout: secs(600),
            server_connect_timeout: secs(15),
            server_login_retry: secs(15),
            client_login_timeout: secs(60),
            client_idle_timeout: Duration::ZERO,
            query_timeout: Duration::ZERO,
            query_wait_timeout: secs(120),
            query_wait_notify: secs(5),
            cancel_wait_timeout: secs(10),
            idle_transaction_timeout: Duration::ZERO,
            transaction_timeout: Duration::ZERO,
            autodb_idle_timeout: secs(3600),
            pool_idle_timeout: Duration::ZERO,
            dns_max_ttl: secs(15),
            dns_nxdomain_ttl: secs(15),
            tcp_keepalive: true,
            tcp_keepcnt: 0,
            tcp_keepidle: Duration::ZERO,
            tcp_keepintvl: Duration::ZERO,
            tcp_user_timeout: Duration::ZERO,
            client_tls_sslmode: SslMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: s("secure"),
            client_tls_ciphers: s("default"),
            client_tls13_ciphers: None,
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_key_file: None,
            server_tls_cert_file: None,
            server_tls_protocols: s("secure"),
            server_tls_ciphers: s("default"),
            server_tls13_ciphers: None,
            logfile: None,
            pidfile: None,
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            log_stats: true,
            stats_period: secs(60),
            verbose: 0,
            metrics_listen: None,
            edge_listen: None,
            edge_allow_plaintext: false,
            edge_max_request_size: 10 << 20,
            edge_max_response_size: 10 << 20,
            worker_threads: 0,
            log_format: LogFormat::Text,
            no_effect: BTreeMap::new(),
            set_at: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// True when `key` (PgBouncer's spelling, lower case) was set in the file rather than defaulted.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.set_at.contains_key(key)
    }

    /// Where `key` was set, when it was set explicitly.
    pub fn location_of(&self, key: &str) -> Option<&Location> {
        self.set_at.get(key)
    }

    /// Checks combinations of keys; single values were checked when parsed. Returns warnings for
    /// combinations that work but are probably not meant. `origin` names the config for errors
    /// about keys that were not set in a file (URL mode).
    pub(crate) fn validate(&self, origin: &Path) -> Result<Vec<ConfigWarning>, ConfigError> {
        let (warnings, errors) = self.problems(origin);
        match ConfigError::from_list(errors) {
            Some(e) => Err(e),
            None => Ok(warnings),
        }
    }

    /// [`Settings::validate`], returning every error instead of the first.
    pub(crate) fn problems(&self, origin: &Path) -> (Vec<ConfigWarning>, Vec<ConfigError>) {
        let at = |key: &str| {
            self.location_of(key).cloned().unwrap_or_else(|| Location {
                file: origin.to_path_buf(),
                line: 0,
            })
        };
        let requires =
            |key: &'static str, value: String, needed: &'static str| ConfigError::Requires {
                location: at(key),
                key,
                value,
                needed,
            };
        let mut errors = Vec::new();
        if matches!(self.auth_type, AuthType::Pam | AuthType::Ldap) {
            errors.push(ConfigError::Unsupported {
                location: at("auth_type"),
                key: "auth_type",
                value: self.auth_type.to_string(),
                reason: "PAM and LDAP authentication are not supported by pgfunnel; \
                         use scram-sha-256, md5, cert or hba",
            });
        }
        if self.auth_type == AuthType::Hba && self.auth_hba_file.is_none() {
            errors.push(requires("auth_type", "hba".into(), "auth_hba_file"));
        }
        if self.client_tls_sslmode != SslMode::Disable
            && (self.client_tls_key_file.is_none() || self.client_tls_cert_file.is_none())
        {
            let value = self.client_tls_sslmode.to_string();
            errors.push(requires(
                "client_tls_sslmode",
                value,
                "client_tls_key_file and client_tls_cert_file",
            ));
        }
        for (key, other) in [
            ("server_tls_key_file", "server_tls_cert_file"),
            ("server_tls_cert_file", "server_tls_key_file"),
            ("client_tls_key_file", "client_tls_cert_file"),
            ("client_tls_cert_file", "client_tls_key_file"),
        ] {
            if let (Some(path), None) = (self.tls_file(key), self.tls_file(other)) {
                errors.push(requires(key, path.display().to_string(), other));
            }
        }
        if self.listen_addr.is_empty() && self.unix_socket_dir.is_empty() {
            let key = if self.is_explicit("unix_socket_dir") {
                "unix_socket_dir"
            } else {
                "listen_addr"
            };
            let other = if key == "listen_addr" {
                "unix_socket_dir"
            } else {
                "listen_addr"
            };
            errors.push(ConfigError::NothingToListenOn {
                location: at(key),
                key,
                other,
            });
        }
        let mut warnings = Vec::new();
        if self.default_pool_size != 0 && self.min_pool_size > self.default_pool_size {
            let location = at("min_pool_size");
            warnings.push(ConfigWarning::new(
                &location,
                "min_pool_size",
                WarningMessage::MinPoolAbovePoolSize {
                    entry: "[pgbouncer]".into(),
                },
            ));
        }
        (warnings, errors)
    }

    fn tls_file(&self, key: &str) -> Option<&PathBuf> {
        match key {
            "server_tls_key_file" => self.server_tls_key_file.as_ref(),
            "server_tls_cert_file" => self.server_tls_cert_file.as_ref(),
            "client_tls_key_file" => self.client_tls_key_file.as_ref(),
            "client_tls_cert_file" => self.client_tls_cert_file.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
