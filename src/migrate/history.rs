//! The history table `pgfunnel_migrations`: its DDL, the SQL that reads, guards and records
//! it, and the transaction-level lock that serialises concurrent `migrate up` runs. Every
//! statement here uses the simple query protocol with quoted literals, so it works through a
//! transaction pooler (no prepared statements outliving a transaction).

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

pub use crate::protocol::sql::{quote_ident, quote_literal};

use super::error::MigrateError;
use super::files::MigrationFile;
use super::plan::{AppliedRow, Drift};

/// Name of the history table (its schema is chosen with `--schema`).
pub const TABLE: &str = "pgfunnel_migrations";

/// The history table of one schema.
#[derive(Debug, Clone)]
pub struct HistoryTable {
    schema: String,
    lock_key: i64,
}

/// What the history says about a file once the lock is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// Not applied and nothing newer applied: go ahead.
    Proceed,
    /// Another run applied this very file meanwhile.
    AlreadyApplied,
    /// Another run applied something that disagrees with this file.
    Drift(Drift),
}

impl HistoryTable {
    /// The table in `schema`; the advisory lock key is derived from the schema name, so runs
    /// against different schemas of one database do not wait on each other.
    pub fn new(schema: &str) -> HistoryTable {
        let digest = Sha256::digest(format!("pgfunnel migrate {schema}.{TABLE}").as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        HistoryTable {
            schema: schema.to_owned(),
            lock_key: i64::from_be_bytes(key),
        }
    }

    /// `"schema"."pgfunnel_migrations"`, quoted.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(TABLE))
    }

    /// Statements that open a READ COMMITTED transaction and wait, without timeout, for the
    /// transaction-level migration lock. It is released at COMMIT/ROLLBACK, so it holds no
    /// session state and works through a transaction pooler.
    pub fn begin_locked_sql(&self) -> String {
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 0; \
             SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({})",
            self.lock_key
        )
    }

    /// Waits for the session-level migration lock (same key as the transaction-level one);
    /// only for no-transaction files on a connection known to be a session.
    pub fn session_lock_sql(&self) -> String {
        format!(
            "BEGIN; SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; \
             SELECT pg_advisory_lock({}); COMMIT",
            self.lock_key
        )
    }

    /// Releases what [`HistoryTable::session_lock_sql`] took.
    pub fn session_unlock_sql(&self) -> String {
        format!("SELECT pg_advisory_unlock({})", self.lock_key)
    }

    /// One row: the recorded checksum of `version` (NULL when absent) and the latest version.
    pub fn recheck_sql(&self, version: u64) -> String {
        let t = self.qualified();
        format!("SELECT (SELECT checksum FROM {t} WHERE version = {version}), (SELECT max(version) FROM {t})")
    }

    /// Interprets the last row of [`HistoryTable::recheck_sql`]'s answer for `file`.
    pub fn recheck(file: &MigrationFile, row: Option<&SimpleQueryRow>) -> Recheck {
        let recorded = row.and_then(|r| r.get(0));
        let latest = row
            .and_then(|r| r.get(1))
            .and_then(|v| v.parse::<u64>().ok());
        match (recorded, latest) {
            (Some(sum), _) if sum == file.checksum => Recheck::AlreadyApplied,
            (Some(sum), _) => Recheck::Drift(Drift::ChecksumChanged {
                path: file.path.clone(),
                recorded: sum.to_owned(),
                actual: file.checksum.clone(),
            }),
            (None, Some(latest)) if latest > file.version => Recheck::Drift(Drift::BelowLatest {
                path: file.path.clone(),
                latest,
            }),
            _ => Recheck::Proceed,
        }
    }

    /// The INSERT recording `file` as applied, `applied_by` being `current_user@host`.
    pub fn insert_sql(&self, file: &MigrationFile, duration_ms: u128, host: &str) -> String {
        format!(
            "INSERT INTO {} (version, name, checksum, applied_at, duration_ms, applied_by, no_transaction) \
             VALUES ({}, {}, {}, clock_timestamp(), {duration_ms}, current_user || {}, {})",
            self.qualified(),
            file.version,
            quote_literal(&file.name),
            quote_literal(&file.checksum),
            quote_literal(&format!("@{host}")),
            file.no_transaction
        )
    }

    /// Whether the table exists.
    pub async fn exists(&self, client: &Client) -> Result<bool, MigrateError> {
        let sql = format!(
            "SELECT to_regclass({}) IS NOT NULL",
            quote_literal(&self.qualified())
        );
        let rows = query_rows(client, &sql)
            .await
            .map_err(|source| MigrateError::Database {
                step: "looking up the history table",
                source,
            })?;
        Ok(rows.last().and_then(|r| r.get(0)) == Some("t"))
    }

    /// Creates the schema (when missing) and the table, under the migration lock so that
    /// concurrent first runs do not race on CREATE.
    pub async fn ensure(&self, client: &Client) -> Result<(), MigrateError> {
        if self.exists(client).await? {
            return Ok(());
        }
        let schema = quote_ident(&self.schema);
        // CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database: only when missing.
        let sql = format!(
            "{}; DO $pgfunnel$ BEGIN IF to_regnamespace({}) IS NULL THEN CREATE SCHEMA {schema}; END IF; END $pgfunnel$; \
             CREATE TABLE IF NOT EXISTS {} (\
               version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, \
               applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), duration_ms bigint NOT NULL, \
               applied_by text NOT NULL, no_transaction boolean NOT NULL DEFAULT false); COMMIT",
            self.begin_locked_sql(),
            quote_literal(&quote_ident(&self.schema)),
            self.qualified()
        );
        if let Err(source) = client.batch_execute(&sql).await {
            rollback(client).await;
            return Err(MigrateError::Database {
                step: "creating the history table",
                source,
            });
        }
        Ok(())
    }

    /// Every history row in version order; none when the table does not exist.
    pub async fn read(&self, client: &Client) -> Result<Vec<AppliedRow>, MigrateError> {
        if !self.exists(client).await? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT version, name, checksum, applied_at::text, duration_ms, applied_by FROM {} ORDER BY version",
            self.qualified()
        );
        let rows = query_rows(client, &sql)
            .await
            .map_err(|source| MigrateError::Database {
                step: "reading the history table",
                source,
            })?;
        let text = |r: &SimpleQueryRow, i| r.get(i).unwrap_or_default().to_owned();
        Ok(rows
            .iter()
            .map(|r| AppliedRow {
                version: text(r, 0).parse().unwrap_or_default(),
                name: text(r, 1),
                checksum: text(r, 2),
                applied_at: text(r, 3),
                duration_ms: text(r, 4).parse().unwrap_or_default(),
                applied_by: text(r, 5),
            })
            .collect())
    }
}

/// Runs `sql` (one or more statements) and returns the rows of all of them, in order.
pub async fn query_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// Best-effort ROLLBACK after an error (the server may already be gone).
pub async fn rollback(client: &Client) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %e, "rollback after error failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes_and_escapes_backslashes() {
        assert_eq!(quote_ident("My \"schema\""), "\"My \"\"schema\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn lock_key_depends_on_the_schema_only() {
        assert_eq!(
            HistoryTable::new("a").lock_key,
            HistoryTable::new("a").lock_key
        );
        assert_ne!(
            HistoryTable::new("a").lock_key,
            HistoryTable::new("b").lock_key
        );
        assert!(HistoryTable::new("app")
            .begin_locked_sql()
            .contains("pg_advisory_xact_lock("));
    }
}
