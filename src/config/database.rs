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
#[path = "database_tests.rs"]
mod tests;
