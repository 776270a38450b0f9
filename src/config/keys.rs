//! The one table of `[pgbouncer]` keys: how each is parsed into `Settings`, printed back, whether a
//! reload can change it, and whether pgfunnel acts on it. `pgfunnel check`, SHOW CONFIG and the
//! loader all iterate this table; add a key here and nowhere else.

use super::kinds::{AuthType, LogFormat, PoolMode, ServerCheckQuery, SslMode};
use super::peers::PeerIdSetting;
use super::problem::Expected;
use super::settings::Settings;
use super::value::{
    parse_bool, parse_duration, parse_list, parse_millis, parse_octal_mode, parse_opt_path,
    parse_opt_string, parse_port, parse_u32, show_bool, show_list, show_millis, show_secs,
};

/// Whether pgfunnel acts on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySupport {
    /// Parsed into a typed `Settings` field that pgfunnel uses.
    Applied,
    /// A PgBouncer key pgfunnel accepts (so PgBouncer configs load) but ignores; its raw value is
    /// kept in `Settings::no_effect` and loading warns "accepted but has no effect in pgfunnel".
    NoEffect,
}

/// One `[pgbouncer]` key.
#[derive(Debug, Clone, Copy)]
pub struct SettingKey {
    /// PgBouncer's spelling (lower case).
    pub name: &'static str,
    /// Whether pgfunnel acts on it.
    pub support: KeySupport,
    /// False for keys PgBouncer marks `CF_NO_RELOAD` (a change needs a restart).
    pub reloadable: bool,
    apply: fn(&mut Settings, &str) -> Result<(), Expected>,
    show: fn(&Settings) -> String,
}

impl SettingKey {
    /// Parses `value` into `settings`; on failure says what is allowed and leaves `settings` as is.
    pub fn apply(&self, settings: &mut Settings, value: &str) -> Result<(), Expected> {
        (self.apply)(settings, value)
    }

    /// The key's value in `settings`, spelled as in the config file (durations in seconds,
    /// booleans `0`/`1`, lists comma-joined). Secrets are masked.
    pub fn value_in(&self, settings: &Settings) -> String {
        (self.show)(settings)
    }

    /// The default value, spelled as in the config file.
    pub fn default_value(&self) -> String {
        (self.show)(&Settings::default())
    }
}

/// Finds a key by name, ignoring case.
pub fn find_key(name: &str) -> Option<&'static SettingKey> {
    SETTING_KEYS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(name))
}

const RELOAD: bool = true;
const RESTART: bool = false;

/// An applied key: `$parse` turns the text into the field's type, `$show` prints the field back.
macro_rules! applied {
    ($name:literal, $field:ident, $reload:expr, $parse:expr, $show:expr) => {
        SettingKey {
            name: $name,
            support: KeySupport::Applied,
            reloadable: $reload,
            apply: |s, v| {
                s.$field = ($parse)(v)?;
                Ok(())
            },
            show: |s| ($show)(&s.$field),
        }
    };
}

/// A key pgfunnel accepts without acting on it, with PgBouncer's default as text.
macro_rules! no_effect {
    ($name:literal, $reload:expr, $default:literal) => {
        SettingKey {
            name: $name,
            support: KeySupport::NoEffect,
            reloadable: $reload,
            apply: |s, v| {
                s.no_effect.insert($name, v.trim().to_owned());
                Ok(())
            },
            show: |s| {
                s.no_effect
                    .get($name)
                    .cloned()
                    .unwrap_or_else(|| $default.to_owned())
            },
        }
    };
}

fn ok<T>(value: T) -> Result<T, Expected> {
    Ok(value)
}
fn string(v: &str) -> Result<String, Expected> {
    ok(v.trim().to_owned())
}
fn opt_string(v: &str) -> Result<Option<String>, Expected> {
    ok(parse_opt_string(v))
}
fn opt_path(v: &str) -> Result<Option<std::path::PathBuf>, Expected> {
    ok(parse_opt_path(v))
}
fn list(v: &str) -> Result<Vec<String>, Expected> {
    ok(parse_list(v))
}
fn count(v: &str) -> Result<u32, Expected> {
    parse_u32(v, 0, i32::MAX as u32)
}
fn positive(v: &str) -> Result<u32, Expected> {
    parse_u32(v, 1, i32::MAX as u32)
}
fn packet_size(v: &str) -> Result<u32, Expected> {
    parse_u32(v, 1, u32::MAX)
}
fn verbosity(v: &str) -> Result<u32, Expected> {
    parse_u32(v, 0, 10)
}
fn threads(v: &str) -> Result<usize, Expected> {
    parse_u32(v, 0, 1024).map(|n| n as usize)
}
fn check_query(v: &str) -> Result<ServerCheckQuery, Expected> {
    ok(ServerCheckQuery::parse(v))
}
fn show_check_query(v: &ServerCheckQuery) -> String {
    v.as_config_text().to_owned()
}
fn show_ms(v: &std::time::Duration) -> String {
    show_millis(*v)
}
fn show_octal(v: &u32) -> String {
    format!("0{v:o}")
}
fn show_text(v: &str) -> String {
    v.to_owned()
}
fn show_opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}
fn show_opt_path(v: &Option<std::path::PathBuf>) -> String {
    v.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}
fn show_num<T: ToString>(v: &T) -> String {
    v.to_string()
}
fn show_flag(v: &bool) -> String {
    show_bool(*v)
}
fn show_dur(v: &std::time::Duration) -> String {
    show_secs(*v)
}
fn show_items(v: &[String]) -> String {
    show_list(v)
}
/// LDAP options may carry `ldapbindpasswd=`: never print them then.
fn show_ldap_options(v: &Option<String>) -> String {
    match v {
        Some(text) if text.to_ascii_lowercase().contains("ldapbindpasswd") => {
            "(hidden: contains ldapbindpasswd)".into()
        }
        other => show_opt(other),
    }
}

/// Every `[pgbouncer]` key PgBouncer 1.25/1.26 knows, plus pgfunnel's own (`log_format`,
/// `metrics_listen`, `worker_threads`, `max_client_pipeline`, `max_prepared_message_size`,
/// `listen_queue_size`, `max_pool_prepared_statements`, the `edge_*` keys),
/// in alphabetical order as PgBouncer's SHOW CONFIG lists them.
#[rustfmt::skip]
pub static SETTING_KEYS: &[SettingKey] = &[
    applied!("admin_users", admin_users, RELOAD, list, show_items),
    applied!("application_name_add_host", application_name_add_host, RELOAD, parse_bool, show_flag),
    applied!("auth_dbname", auth_dbname, RELOAD, opt_string, show_opt),
    applied!("auth_file", auth_file, RELOAD, opt_path, show_opt_path),
    applied!("auth_hba_file", auth_hba_file, RELOAD, opt_path, show_opt_path),
    applied!("auth_ident_file", auth_ident_file, RELOAD, opt_path, show_opt_path),
    applied!("auth_ldap_options", auth_ldap_options, RELOAD, opt_string, show_ldap_options),
    applied!("auth_query", auth_query, RELOAD, string, show_text),
    applied!("auth_type", auth_type, RELOAD, AuthType::parse, show_num),
    applied!("auth_user", auth_user, RELOAD, opt_string, show_opt),
    applied!("autodb_idle_timeout", autodb_idle_timeout, RELOAD, parse_duration, show_dur),
    applied!("cancel_wait_timeout", cancel_wait_timeout, RELOAD, parse_duration, show_dur),
    applied!("client_idle_timeout", client_idle_timeout, RELOAD, parse_duration, show_dur),
    applied!("client_login_timeout", client_login_timeout, RELOAD, parse_duration, show_dur),
    applied!("client_tls13_ciphers", client_tls13_ciphers, RELOAD, opt_string, show_opt),
    applied!("client_tls_ca_file", client_tls_ca_file, RELOAD, opt_path, show_opt_path),
    applied!("client_tls_cert_file", client_tls_cert_file, RELOAD, opt_path, show_opt_path),
    applied!("client_tls_ciphers", client_tls_ciphers, RELOAD, string, show_text),
    no_effect!("client_tls_dheparams", RELOAD, "auto"),
    no_effect!("client_tls_ecdhcurve", RELOAD, "auto"),
    applied!("client_tls_key_file", client_tls_key_file, RELOAD, opt_path, show_opt_path),
    applied!("client_tls_protocols", client_tls_protocols, RELOAD, string, show_text),
    applied!("client_tls_sslmode", client_tls_sslmode, RELOAD, SslMode::parse, show_num),
    no_effect!("conffile", RELOAD, ""),
    applied!("default_pool_size", default_pool_size, RELOAD, count, show_num),
    no_effect!("disable_pqexec", RESTART, "0"),
    applied!("dns_max_ttl", dns_max_ttl, RELOAD, parse_duration, show_dur),
    applied!("dns_nxdomain_ttl", dns_nxdomain_ttl, RELOAD, parse_duration, show_dur),
    no_effect!("dns_zone_check_period", RELOAD, "0"),
    applied!("edge_allow_plaintext", edge_allow_plaintext, RELOAD, parse_bool, show_flag),
    applied!("edge_listen", edge_listen, RESTART, opt_string, show_opt),
    applied!("edge_max_request_size", edge_max_request_size, RELOAD, positive, show_num),
    applied!("edge_max_response_size", edge_max_response_size, RELOAD, positive, show_num),
    applied!("fleet_grace_period", fleet_grace_period, RELOAD, parse_duration, show_dur),
    applied!("fleet_max_db_connections", fleet_max_db_connections, RESTART, count, show_num),
    applied!("fleet_max_user_connections", fleet_max_user_connections, RESTART, count, show_num),
    applied!("idle_transaction_timeout", idle_transaction_timeout, RELOAD, parse_duration, show_dur),
    applied!("ignore_startup_parameters", ignore_startup_parameters, RELOAD, list, show_items),
    no_effect!("job_name", RESTART, "pgbouncer"),
    applied!("listen_addr", listen_addr, RESTART, list, show_items),
    no_effect!("listen_backlog", RESTART, "128"),
    applied!("listen_port", listen_port, RESTART, parse_port, show_num),
    applied!("listen_queue_size", listen_queue_size, RELOAD, positive, show_num),
    applied!("log_connections", log_connections, RELOAD, parse_bool, show_flag),
    applied!("log_disconnections", log_disconnections, RELOAD, parse_bool, show_flag),
    applied!("log_format", log_format, RESTART, LogFormat::parse, show_num),
    applied!("log_pooler_errors", log_pooler_errors, RELOAD, parse_bool, show_flag),
    applied!("log_stats", log_stats, RELOAD, parse_bool, show_flag),
    applied!("logfile", logfile, RELOAD, opt_path, show_opt_path),
    applied!("login_notify_message", login_notify_message, RELOAD, opt_string, show_opt),
    applied!("max_client_conn", max_client_conn, RELOAD, positive, show_num),
    applied!("max_client_pipeline", max_client_pipeline, RELOAD, positive, show_num),
    applied!("max_db_client_connections", max_db_client_connections, RELOAD, count, show_num),
    applied!("max_db_connections", max_db_connections, RELOAD, count, show_num),
    applied!("max_packet_size", max_packet_size, RELOAD, packet_size, show_num),
    applied!("max_pool_prepared_statements", max_pool_prepared_statements, RELOAD, positive, show_num),
    applied!("max_prepared_message_size", max_prepared_message_size, RELOAD, packet_size, show_num),
    applied!("max_prepared_statements", max_prepared_statements, RELOAD, count, show_num),
    applied!("max_user_client_connections", max_user_client_connections, RELOAD, count, show_num),
    applied!("max_user_connections", max_user_connections, RELOAD, count, show_num),
    applied!("metrics_listen", metrics_listen, RESTART, opt_string, show_opt),
    applied!("min_pool_size", min_pool_size, RELOAD, count, show_num),
    applied!("peer_id", peer_id, RESTART, PeerIdSetting::parse, PeerIdSetting::show),
    applied!("peers_dns", peers_dns, RELOAD, opt_string, show_opt),
    applied!("pidfile", pidfile, RESTART, opt_path, show_opt_path),
    no_effect!("pkt_buf", RESTART, "4096"),
    applied!("pool_idle_timeout", pool_idle_timeout, RELOAD, parse_duration, show_dur),
    applied!("pool_mode", pool_mode, RELOAD, PoolMode::parse, show_num),
    applied!("query_timeout", query_timeout, RELOAD, parse_duration, show_dur),
    applied!("query_wait_notify", query_wait_notify, RELOAD, parse_duration, show_dur),
    applied!("query_wait_timeout", query_wait_timeout, RELOAD, parse_duration, show_dur),
    applied!("reserve_pool_size", reserve_pool_size, RELOAD, count, show_num),
    applied!("reserve_pool_timeout", reserve_pool_timeout, RELOAD, parse_duration, show_dur),
    no_effect!("resolv_conf", RESTART, ""),
    no_effect!("sbuf_loopcnt", RELOAD, "5"),
    applied!("scram_iterations", scram_iterations, RELOAD, positive, show_num),
    applied!("server_check_delay", server_check_delay, RELOAD, parse_duration, show_dur),
    applied!("server_check_query", server_check_query, RELOAD, check_query, show_check_query),
    applied!("server_connect_timeout", server_connect_timeout, RELOAD, parse_duration, show_dur),
    applied!("server_fast_close", server_fast_close, RELOAD, parse_bool, show_flag),
    applied!("server_idle_timeout", server_idle_timeout, RELOAD, parse_duration, show_dur),
    applied!("server_lifetime", server_lifetime, RELOAD, parse_duration, show_dur),
    applied!("server_login_retry", server_login_retry, RELOAD, parse_duration, show_dur),
    applied!("server_reset_query", server_reset_query, RELOAD, opt_string, show_opt),
    applied!("server_reset_query_always", server_reset_query_always, RELOAD, parse_bool, show_flag),
    applied!("server_round_robin", server_round_robin, RELOAD, parse_bool, show_flag),
    applied!("server_tls13_ciphers", server_tls13_ciphers, RELOAD, opt_string, show_opt),
    applied!("server_tls_ca_file", server_tls_ca_file, RELOAD, opt_path, show_opt_path),
    applied!("server_tls_cert_file", server_tls_cert_file, RELOAD, opt_path, show_opt_path),
    applied!("server_tls_ciphers", server_tls_ciphers, RELOAD, string, show_text),
    applied!("server_tls_key_file", server_tls_key_file, RELOAD, opt_path, show_opt_path),
    applied!("server_tls_protocols", server_tls_protocols, RELOAD, string, show_text),
    applied!("server_tls_sslmode", server_tls_sslmode, RELOAD, SslMode::parse, show_num),
    no_effect!("service_name", RESTART, ""),
    applied!("so_reuseport", so_reuseport, RESTART, parse_bool, show_flag),
    applied!("stats_period", stats_period, RELOAD, parse_duration, show_dur),
    applied!("stats_users", stats_users, RELOAD, list, show_items),
    no_effect!("suspend_timeout", RELOAD, "10"),
    no_effect!("syslog", RELOAD, "0"),
    no_effect!("syslog_facility", RELOAD, "daemon"),
    no_effect!("syslog_ident", RELOAD, "pgbouncer"),
    no_effect!("tcp_defer_accept", RELOAD, "1"),
    applied!("tcp_keepalive", tcp_keepalive, RELOAD, parse_bool, show_flag),
    applied!("tcp_keepcnt", tcp_keepcnt, RELOAD, count, show_num),
    applied!("tcp_keepidle", tcp_keepidle, RELOAD, parse_duration, show_dur),
    applied!("tcp_keepintvl", tcp_keepintvl, RELOAD, parse_duration, show_dur),
    no_effect!("tcp_socket_buffer", RELOAD, "0"),
    applied!("tcp_user_timeout", tcp_user_timeout, RELOAD, parse_millis, show_ms),
    applied!("track_extra_parameters", track_extra_parameters, RESTART, list, show_items),
    applied!("transaction_timeout", transaction_timeout, RELOAD, parse_duration, show_dur),
    applied!("unix_socket_dir", unix_socket_dir, RESTART, string, show_text),
    applied!("unix_socket_group", unix_socket_group, RESTART, opt_string, show_opt),
    applied!("unix_socket_mode", unix_socket_mode, RESTART, parse_octal_mode, show_octal),
    no_effect!("user", RESTART, ""),
    applied!("verbose", verbose, RELOAD, verbosity, show_num),
    applied!("worker_threads", worker_threads, RESTART, threads, show_num),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in SETTING_KEYS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn every_key_prints_its_default_and_reparses_it() {
        for key in SETTING_KEYS {
            let mut settings = Settings::default();
            let text = key.default_value();
            key.apply(&mut settings, &text)
                .unwrap_or_else(|e| panic!("{} default {text:?} does not reparse: {e}", key.name));
            assert_eq!(key.value_in(&settings), text, "{}", key.name);
        }
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(find_key("Pool_Mode").map(|k| k.name), Some("pool_mode"));
        assert!(find_key("no_such_key").is_none());
    }

    #[test]
    fn ldap_bind_password_is_never_shown() {
        let key = find_key("auth_ldap_options").expect("known key");
        let mut settings = Settings::default();
        key.apply(&mut settings, "ldapserver=x ldapbindpasswd=secret")
            .expect("string");
        assert!(!key.value_in(&settings).contains("secret"));
    }

    #[test]
    fn no_effect_keys_keep_raw_value() {
        let key = find_key("tcp_defer_accept").expect("known key");
        assert_eq!(key.support, KeySupport::NoEffect);
        let mut settings = Settings::default();
        key.apply(&mut settings, " 0 ").expect("any text");
        assert_eq!(key.value_in(&settings), "0");
        assert_eq!(key.default_value(), "1");
    }
}
