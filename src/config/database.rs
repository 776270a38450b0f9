//! `[databases]` and `[users]` entries: what each option means and how a connection string turns
//! into a typed entry. Unset options stay `None` so that precedence (user > database > global)
//! can be resolved later (`resolve.rs`).

use std::fmt;
use std::time::Duration;

use super::connstr::parse_conn_string;
use super::error::{ConfigError, Location};
use super::kinds::{LoadBalanceHosts, PoolMode};
use super::problem::Expected;
use super::url_mode::UrlTls;
use super::value::{parse_duration, parse_list, parse_port, parse_u32};
use super::warning::{ConfigWarning, WarningMessage};

/// The name of the fallback database entry.
pub const FALLBACK_NAME: &str = "*";

/// PostgreSQL's default port, used when an entry sets none.
pub const DEFAULT_PORT: u16 = 5432;

/// A password from the config. `Debug` prints `***`; call [`Password::expose`] only where the
/// password is sent to a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself: never log or display it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One `[databases]` entry: how to reach the server for a client database name, plus per-database
/// overrides (`None` = inherit from `[pgbouncer]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseEntry {
    /// The name clients connect to (`*` for the fallback entry).
    pub name: String,
    /// Server hosts in order; empty = the Unix socket directory (`/tmp`, as libpq).
    pub hosts: Vec<String>,
    /// Server port, one for all hosts (default 5432).
    pub port: u16,
    /// Server database name; `None` = same as `name` (see [`DatabaseEntry::server_dbname`]).
    pub dbname: Option<String>,
    /// Forced server user: all clients share one pool logged in as this user.
    pub user: Option<String>,
    /// Password for the forced user.
    pub password: Option<Password>,
    /// User that runs `auth_query` for this database.
    pub auth_user: Option<String>,
    /// Per-database `auth_query`.
    pub auth_query: Option<String>,
    /// Database in which `auth_query` runs.
    pub auth_dbname: Option<String>,
    /// Per (database, user) pool size; 0 = unlimited.
    pub pool_size: Option<u32>,
    /// Connections kept open even without clients.
    pub min_pool_size: Option<u32>,
    /// Extra connections after `reserve_pool_timeout` (option `reserve_pool_size` or `reserve_pool`).
    pub reserve_pool_size: Option<u32>,
    /// SQL run once on each new server connection.
    pub connect_query: Option<String>,
    /// Per-database pool mode.
    pub pool_mode: Option<PoolMode>,
    /// How to pick among `hosts`.
    pub load_balance_hosts: LoadBalanceHosts,
    /// Server connections for this database across all users; 0 = unlimited.
    pub max_db_connections: Option<u32>,
    /// Client connections to this database; 0 = unlimited.
    pub max_db_client_connections: Option<u32>,
    /// Per-database `server_lifetime`.
    pub server_lifetime: Option<Duration>,
    /// Per-database `query_wait_timeout`.
    pub query_wait_timeout: Option<Duration>,
    /// Startup parameter sent to the server.
    pub client_encoding: Option<String>,
    /// Startup parameter sent to the server.
    pub datestyle: Option<String>,
    /// Startup parameter sent to the server.
    pub timezone: Option<String>,
    /// Startup parameter sent to the server.
    pub application_name: Option<String>,
    /// TLS parameters from the URL in URL mode; `None` for entries from a file.
    pub url_tls: Option<UrlTls>,
    /// True when this entry was made from the `*` fallback for a name not in the file.
    pub auto: bool,
    /// Where the entry was defined.
    pub location: Location,
}

impl DatabaseEntry {
    /// An entry with no options: Unix socket, port 5432, everything inherited.
    pub fn new(name: impl Into<String>, location: Location) -> Self {
        Self {
            name: name.into(),
            hosts: Vec::new(),
            port: DEFAULT_PORT,
            dbname: None,
            user: None,
            password: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            connect_query: None,
            pool_mode: None,
            load_balance_hosts: LoadBalanceHosts::RoundRobin,
            max_db_connections: None,
            max_db_client_connections: None,
            server_lifetime: None,
            query_wait_timeout: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
            application_name: None,
            url_tls: None,
            auto: false,
            location,
        }
    }

    /// The database name to send to the server: `dbname`, else the entry's name.
    pub fn server_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }

    /// True for the `*` fallback entry itself.
    pub fn is_fallback(&self) -> bool {
        self.name == FALLBACK_NAME
    }
}

/// One `[users]` entry: per-user overrides (`None` = inherit).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // fields are PgBouncer's per-user options of the same name
pub struct UserEntry {
    /// The user name (case-sensitive).
    pub name: String,
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
    pub query_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    /// Where the entry was defined.
    pub location: Location,
}

/// What an option handler did with an option.
enum Handled {
    Done,
    Unknown,
    /// `port=a,b`: the first is used; warn.
    ExtraPorts(u16),
}

fn count(v: &str) -> Result<Option<u32>, Expected> {
    parse_u32(v, 0, i32::MAX as u32).map(Some)
}

fn time(v: &str) -> Result<Option<Duration>, Expected> {
    parse_duration(v).map(Some)
}

fn text(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn apply_db_option(e: &mut DatabaseEntry, key: &str, v: &str) -> Result<Handled, Expected> {
    match key {
        "host" => e.hosts = parse_list(v),
        "port" => return apply_port(e, v),
        "dbname" => e.dbname = text(v),
        "user" => e.user = text(v),
        "password" => e.password = Some(Password::new(v)),
        "auth_user" => e.auth_user = text(v),
        "auth_query" => e.auth_query = text(v),
        "auth_dbname" => e.auth_dbname = text(v),
        "pool_size" => e.pool_size = count(v)?,
        "min_pool_size" => e.min_pool_size = count(v)?,
        "reserve_pool_size" | "reserve_pool" => e.reserve_pool_size = count(v)?,
        "connect_query" => e.connect_query = text(v),
        "pool_mode" => e.pool_mode = Some(PoolMode::parse(v)?),
        "load_balance_hosts" => e.load_balance_hosts = LoadBalanceHosts::parse(v)?,
        "max_db_connections" => e.max_db_connections = count(v)?,
        "max_db_client_connections" => e.max_db_client_connections = count(v)?,
        "server_lifetime" => e.server_lifetime = time(v)?,
        "query_wait_timeout" => e.query_wait_timeout = time(v)?,
        "client_encoding" => e.client_encoding = text(v),
        "datestyle" => e.datestyle = text(v),
        "timezone" => e.timezone = text(v),
        "application_name" => e.application_name = text(v),
        _ => return Ok(Handled::Unknown),
    }
    Ok(Handled::Done)
}

fn apply_port(e: &mut DatabaseEntry, v: &str) -> Result<Handled, Expected> {
    let ports = parse_list(v)
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    let first = *ports
        .first()
        .ok_or(Expected::Integer { min: 1, max: 65535 })?;
    e.port = first;
    if ports.iter().any(|&p| p != first) {
        Ok(Handled::ExtraPorts(first))
    } else {
        Ok(Handled::Done)
    }
}

fn apply_user_option(u: &mut UserEntry, key: &str, v: &str) -> Result<Handled, Expected> {
    match key {
        "pool_mode" => u.pool_mode = Some(PoolMode::parse(v)?),
        "pool_size" => u.pool_size = count(v)?,
        "reserve_pool_size" | "reserve_pool" => u.reserve_pool_size = count(v)?,
        "max_user_connections" => u.max_user_connections = count(v)?,
        "max_user_client_connections" => u.max_user_client_connections = count(v)?,
        "query_timeout" => u.query_timeout = time(v)?,
        "idle_transaction_timeout" => u.idle_transaction_timeout = time(v)?,
        "transaction_timeout" => u.transaction_timeout = time(v)?,
        "client_idle_timeout" => u.client_idle_timeout = time(v)?,
        "query_wait_timeout" => u.query_wait_timeout = time(v)?,
        _ => return Ok(Handled::Unknown),
    }
    Ok(Handled::Done)
}

/// Runs every `key=value` of `connstr` through `apply`, turning failures into located errors and
/// unknown options into warnings.
fn apply_all<T>(
    target: &mut T,
    entry: &str,
    connstr: &str,
    location: &Location,
    warnings: &mut Vec<ConfigWarning>,
    apply: fn(&mut T, &str, &str) -> Result<Handled, Expected>,
) -> Result<(), ConfigError> {
    let pairs = parse_conn_string(connstr).map_err(|problem| ConfigError::ConnString {
        location: location.clone(),
        entry: entry.to_owned(),
        problem,
    })?;
    for (key, value) in pairs {
        let handled =
            apply(target, &key, &value).map_err(|expected| ConfigError::InvalidEntryValue {
                location: location.clone(),
                entry: entry.to_owned(),
                key: key.clone(),
                value: value.clone(),
                expected,
            })?;
        let message = match handled {
            Handled::Done => continue,
            Handled::Unknown => WarningMessage::UnknownOption {
                entry: entry.to_owned(),
            },
            Handled::ExtraPorts(used) => WarningMessage::ExtraPortsIgnored {
                entry: entry.to_owned(),
                used,
            },
        };
        warnings.push(ConfigWarning::new(location, key, message));
    }
    Ok(())
}

/// Builds a `[databases]` entry from its name and connection string. Unknown options become
/// warnings; bad values and malformed strings are errors naming file, line, entry and option.
pub fn parse_database_entry(
    name: &str,
    connstr: &str,
    location: &Location,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<DatabaseEntry, ConfigError> {
    let mut entry = DatabaseEntry::new(name, location.clone());
    apply_all(
        &mut entry,
        name,
        connstr,
        location,
        warnings,
        apply_db_option,
    )?;
    if let (Some(min), Some(size)) = (entry.min_pool_size, entry.pool_size) {
        if size != 0 && min > size {
            let message = WarningMessage::MinPoolAbovePoolSize {
                entry: name.to_owned(),
            };
            warnings.push(ConfigWarning::new(location, "min_pool_size", message));
        }
    }
    Ok(entry)
}

/// Builds a `[users]` entry; same error and warning rules as [`parse_database_entry`].
pub fn parse_user_entry(
    name: &str,
    options: &str,
    location: &Location,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<UserEntry, ConfigError> {
    let mut entry = UserEntry {
        name: name.to_owned(),
        pool_mode: None,
        pool_size: None,
        reserve_pool_size: None,
        max_user_connections: None,
        max_user_client_connections: None,
        query_timeout: None,
        idle_transaction_timeout: None,
        transaction_timeout: None,
        client_idle_timeout: None,
        query_wait_timeout: None,
        location: location.clone(),
    };
    apply_all(
        &mut entry,
        name,
        options,
        location,
        warnings,
        apply_user_option,
    )?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Location {
        Location {
            file: "db.ini".into(),
            line: 7,
        }
    }

    fn db(connstr: &str) -> (DatabaseEntry, Vec<ConfigWarning>) {
        let mut warnings = Vec::new();
        let entry = parse_database_entry("app", connstr, &loc(), &mut warnings)
            .unwrap_or_else(|e| panic!("{e}"));
        (entry, warnings)
    }

    fn db_error(connstr: &str) -> String {
        parse_database_entry("app", connstr, &loc(), &mut Vec::new())
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn empty_entry_means_unix_socket_and_inherit_everything() {
        let (e, w) = db("");
        assert!(e.hosts.is_empty());
        assert_eq!(e.port, 5432);
        assert_eq!(e.server_dbname(), "app");
        assert_eq!(e.pool_size, None);
        assert_eq!(e.pool_mode, None);
        assert!(w.is_empty());
    }

    #[test]
    fn every_database_option_is_applied() {
        let (e, w) = db(
            "host=a,b port=6000 dbname=real user=u password='p w' auth_user=au \
             auth_query='SELECT 1' auth_dbname=adb pool_size=3 min_pool_size=1 reserve_pool_size=2 \
             connect_query='SET x=1' pool_mode=transaction load_balance_hosts=disable max_db_connections=9 \
             max_db_client_connections=8 server_lifetime=0.5 query_wait_timeout=2min client_encoding=UTF8 \
             datestyle=ISO timezone=UTC application_name=app1",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(e.hosts, vec!["a", "b"]);
        assert_eq!(e.port, 6000);
        assert_eq!(e.server_dbname(), "real");
        assert_eq!(e.user.as_deref(), Some("u"));
        assert_eq!(e.password.as_ref().map(Password::expose), Some("p w"));
        assert_eq!(e.auth_user.as_deref(), Some("au"));
        assert_eq!(e.auth_query.as_deref(), Some("SELECT 1"));
        assert_eq!(e.auth_dbname.as_deref(), Some("adb"));
        assert_eq!(
            (e.pool_size, e.min_pool_size, e.reserve_pool_size),
            (Some(3), Some(1), Some(2))
        );
        assert_eq!(e.connect_query.as_deref(), Some("SET x=1"));
        assert_eq!(e.pool_mode, Some(PoolMode::Transaction));
        assert_eq!(e.load_balance_hosts, LoadBalanceHosts::Disable);
        assert_eq!(
            (e.max_db_connections, e.max_db_client_connections),
            (Some(9), Some(8))
        );
        assert_eq!(e.server_lifetime, Some(Duration::from_millis(500)));
        assert_eq!(e.query_wait_timeout, Some(Duration::from_secs(120)));
        assert_eq!(e.client_encoding.as_deref(), Some("UTF8"));
        assert_eq!(e.datestyle.as_deref(), Some("ISO"));
        assert_eq!(e.timezone.as_deref(), Some("UTC"));
        assert_eq!(e.application_name.as_deref(), Some("app1"));
    }

    #[test]
    fn reserve_pool_is_an_alias() {
        assert_eq!(db("reserve_pool=4").0.reserve_pool_size, Some(4));
    }

    #[test]
    fn ipv6_hosts_in_lists() {
        assert_eq!(db("host=127.0.0.1,::1").0.hosts, vec!["127.0.0.1", "::1"]);
    }

    #[test]
    fn several_ports_keep_the_first_and_warn() {
        let (e, w) = db("host=a,b port=6000,6001");
        assert_eq!(e.port, 6000);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "port");
        let (_, w) = db("port=6000,6000");
        assert!(w.is_empty());
    }

    #[test]
    fn unknown_option_is_a_warning_with_location() {
        let (_, w) = db("host=a target_session_attrs=read-write");
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "db.ini:7: target_session_attrs: unknown option in entry \"app\", ignored"
        );
    }

    #[test]
    fn bad_option_values_name_entry_key_value_and_allowed() {
        assert_eq!(
            db_error("pool_mode=sessionx"),
            "db.ini:7: app: pool_mode = \"sessionx\": expected one of session, transaction, statement"
        );
        assert_eq!(
            db_error("pool_size=-1"),
            "db.ini:7: app: pool_size = \"-1\": expected an integer from 0 to 2147483647"
        );
        assert!(db_error("port=0").contains("port = \"0\": expected an integer from 1 to 65535"));
        assert!(db_error("server_lifetime=soon")
            .contains("server_lifetime = \"soon\": expected a time"));
        assert!(
            db_error("load_balance_hosts=random").contains("expected one of round-robin, disable")
        );
    }

    #[test]
    fn malformed_connection_string_hides_the_text() {
        let err = db_error("password='secret");
        assert_eq!(
            err,
            "db.ini:7: app: option password: unterminated quoted value"
        );
        assert!(!err.contains("secret"));
    }

    #[test]
    fn debug_output_hides_passwords() {
        let (e, _) = db("password=hunter2");
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn min_pool_above_pool_size_warns() {
        let (_, w) = db("min_pool_size=5 pool_size=2");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "min_pool_size");
    }

    #[test]
    fn every_user_option_is_applied() {
        let mut warnings = Vec::new();
        let u = parse_user_entry(
            "alice",
            "pool_mode=statement pool_size=1 reserve_pool_size=2 max_user_connections=3 \
             max_user_client_connections=4 query_timeout=5 idle_transaction_timeout=6 transaction_timeout=7 \
             client_idle_timeout=8 query_wait_timeout=9 colour=blue",
            &loc(),
            &mut warnings,
        )
        .expect("valid user");
        assert_eq!(u.pool_mode, Some(PoolMode::Statement));
        assert_eq!((u.pool_size, u.reserve_pool_size), (Some(1), Some(2)));
        assert_eq!(
            (u.max_user_connections, u.max_user_client_connections),
            (Some(3), Some(4))
        );
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(u.query_timeout, secs(5));
        assert_eq!(u.idle_transaction_timeout, secs(6));
        assert_eq!(u.transaction_timeout, secs(7));
        assert_eq!(u.client_idle_timeout, secs(8));
        assert_eq!(u.query_wait_timeout, secs(9));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "colour");
    }
}
