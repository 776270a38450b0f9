//! Where `migrate` connects: a URL or a database of a pgfunnel config; whether that
//! connection is a real session or sits behind a transaction pooler; and the optional
//! RECONNECT sent to a running pgfunnel's admin console afterwards.

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use super::error::MigrateError;
use super::history::query_rows;
use crate::config::Config as PgfunnelConfig;

/// How long connecting may take before `migrate` gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra connections the pooler probe opens at most.
const PROBE_ROUNDS: usize = 3;
/// Upper bound for the whole pooler probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A database to migrate.
#[derive(Clone)]
pub struct Target {
    config: Config,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Target {
    /// From a `postgres://` URL (or libpq key=value string).
    pub fn from_url(url: &str) -> Result<Target, MigrateError> {
        let config: Config = url
            .parse()
            .map_err(|source| MigrateError::BadUrl { source })?;
        Ok(Target::with_defaults(config))
    }

    /// From database `name` of the pgfunnel config file `path`: its first host, port, dbname,
    /// user and password (user and password fall back to PGUSER/PGPASSWORD).
    pub fn from_config(path: &std::path::Path, name: &str) -> Result<Target, MigrateError> {
        let loaded = PgfunnelConfig::load(path).map_err(|e| MigrateError::Config(Box::new(e)))?;
        let entry = loaded
            .database(name)
            .ok_or_else(|| MigrateError::UnknownDatabase {
                name: name.to_owned(),
                config: path.to_path_buf(),
            })?;
        let mut config = Config::new();
        for host in &entry.hosts {
            config.host(host);
        }
        config.port(entry.port).dbname(entry.server_dbname());
        let user = entry.user.clone().or_else(|| std::env::var("PGUSER").ok());
        let Some(user) = user else {
            return Err(MigrateError::NoUser {
                name: name.to_owned(),
                config: path.to_path_buf(),
            });
        };
        config.user(&user);
        match (&entry.password, std::env::var("PGPASSWORD")) {
            (Some(pw), _) => config.password(pw.expose()),
            (None, Ok(pw)) => config.password(pw),
            (None, Err(_)) => &mut config,
        };
        Ok(Target::with_defaults(config))
    }

    fn with_defaults(mut config: Config) -> Target {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("pgfunnel migrate");
        }
        Target { config }
    }

    /// `host:port/dbname as user`, for messages (never the password).
    pub fn label(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            self.config.get_dbname().unwrap_or("?"),
            self.config.get_user().unwrap_or("?")
        )
    }

    /// Connects (no TLS yet) and drives the connection on a spawned task.
    pub async fn connect(&self) -> Result<Client, MigrateError> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|source| MigrateError::Connect {
                    target: self.label(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "migrate connection ended");
            }
        });
        Ok(client)
    }
}

/// Whether `client` is behind a transaction (or statement) pooler rather than pinned to one
/// server session. Probe: remember this connection's backend pid; open up to
/// [`PROBE_ROUNDS`] other connections, each holding a transaction open; if one of them lands
/// on that backend, or this connection's next query runs on another one, the server
/// connection is not ours between transactions. A session always keeps its backend. A probe
/// that cannot finish counts as pooled (refusing is the safe answer).
pub async fn behind_transaction_pooler(
    target: &Target,
    client: &Client,
) -> Result<bool, MigrateError> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe(target, client)).await {
        Ok(result) => result,
        Err(_) => Ok(true),
    }
}

async fn probe(target: &Target, client: &Client) -> Result<bool, MigrateError> {
    let ours = backend_pid(client, "SELECT pg_backend_pid()").await?;
    let mut holders = Vec::new();
    let mut pooled = false;
    for _ in 0..PROBE_ROUNDS {
        let other = target.connect().await?;
        let theirs = backend_pid(&other, "BEGIN; SELECT pg_backend_pid()").await?;
        holders.push(other);
        if theirs == ours || backend_pid(client, "SELECT pg_backend_pid()").await? != ours {
            pooled = true;
            break;
        }
    }
    for other in holders {
        super::history::rollback(&other).await;
    }
    tracing::debug!(pooled, "transaction pooler probe");
    Ok(pooled)
}

async fn backend_pid(client: &Client, sql: &str) -> Result<String, MigrateError> {
    let rows = query_rows(client, sql)
        .await
        .map_err(|source| MigrateError::Database {
            step: "probing for a transaction pooler",
            source,
        })?;
    Ok(rows
        .last()
        .and_then(|r| r.get(0))
        .unwrap_or_default()
        .to_owned())
}

/// Sends `RECONNECT` to the pgfunnel (or PgBouncer) admin console at `url`, so server
/// connections holding statements prepared before the migration are replaced once idle.
pub async fn notify_pooler(url: &str) -> Result<(), tokio_postgres::Error> {
    let mut config: Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.simple_query("RECONNECT").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_host_port_db_and_user_but_not_the_password() {
        let t = Target::from_url("postgres://alice:s3cret@db.example:6432/shop").expect("valid");
        assert_eq!(t.label(), "db.example:6432/shop as alice");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn bad_url_is_an_error() {
        assert!(matches!(
            Target::from_url("postgres://h:notaport/db"),
            Err(MigrateError::BadUrl { .. })
        ));
    }

    #[test]
    fn config_database_gives_host_port_dbname_and_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ini = dir.path().join("pgfunnel.ini");
        std::fs::write(
            &ini,
            "[databases]\nshop = host=10.0.0.5 port=5433 dbname=shop_prod user=deploy password=x\n[pgbouncer]\n",
        )
        .expect("write");
        let t = Target::from_config(&ini, "shop").expect("found");
        assert_eq!(t.label(), "10.0.0.5:5433/shop_prod as deploy");
        let err = Target::from_config(&ini, "other").expect_err("absent");
        assert!(err.to_string().contains("no database \"other\""), "{err}");
    }
}
