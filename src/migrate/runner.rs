//! Applies one migration: in its own transaction together with its history row, behind the
//! transaction-level migration lock, re-reading the history once the lock is held (so a run
//! that lost the race sees the migration applied and skips it). No-transaction files run
//! statement by statement behind the session-level lock instead.

use std::time::{Duration, Instant};

use tokio_postgres::error::ErrorPosition;
use tokio_postgres::Client;

use super::error::MigrateError;
use super::files::MigrationFile;
use super::history::{self, HistoryTable, Recheck};
use super::split::Piece;

/// lock_timeout and statement_timeout for the migration's own statements (`None`: the
/// server's defaults). The wait for the migration lock is never cut by them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `lock_timeout`.
    pub lock: Option<Duration>,
    /// `statement_timeout`.
    pub statement: Option<Duration>,
}

impl Timeouts {
    /// SET statements for them: `SET LOCAL` inside a transaction, plain `SET` in a session.
    fn set_sql(&self, local: bool) -> String {
        let scope = if local { "SET LOCAL" } else { "SET" };
        let value = |d: Option<Duration>| match d {
            Some(d) => format!("'{}ms'", d.as_millis()),
            None => "DEFAULT".to_owned(),
        };
        format!(
            "{scope} lock_timeout TO {}; {scope} statement_timeout TO {}",
            value(self.lock),
            value(self.statement)
        )
    }
}

/// What happened to one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This run applied it, taking this long (lock wait excluded).
    Now(Duration),
    /// Another run applied it while this one waited for the lock.
    ByAnotherRun,
}

/// Applies migrations on one connection.
pub struct Runner<'a> {
    /// The connection.
    pub client: &'a Client,
    /// Where history rows go.
    pub table: &'a HistoryTable,
    /// Timeouts for the migrations' statements.
    pub timeouts: Timeouts,
    /// This machine's name, recorded in `applied_by`.
    pub host: String,
}

impl Runner<'_> {
    /// Applies `file` exactly once or not at all (a no-transaction file: statement by
    /// statement, the history row written only when all succeeded). Callers must have
    /// checked that no-transaction files run on a session connection.
    pub async fn apply(&self, file: &MigrationFile) -> Result<Applied, MigrateError> {
        if file.no_transaction {
            self.apply_outside_transaction(file).await
        } else {
            self.apply_in_transaction(file).await
        }
    }

    async fn apply_in_transaction(&self, file: &MigrationFile) -> Result<Applied, MigrateError> {
        let guard = format!(
            "{}; {}",
            self.table.begin_locked_sql(),
            self.table.recheck_sql(file.version)
        );
        let rows = self.run(file, &guard, "taking the migration lock").await?;
        match HistoryTable::recheck(file, rows.last()) {
            Recheck::Proceed => {}
            Recheck::AlreadyApplied => {
                history::rollback(self.client).await;
                return Ok(Applied::ByAnotherRun);
            }
            Recheck::Drift(d) => {
                history::rollback(self.client).await;
                return Err(MigrateError::Drift { problems: vec![d] });
            }
        }
        let started = Instant::now();
        self.run(file, &self.timeouts.set_sql(true), "setting timeouts")
            .await?;
        for piece in &file.pieces {
            if let Err(e) = self.client.batch_execute(&piece.sql).await {
                return Err(self.piece_failed(file, piece, e).await);
            }
        }
        let elapsed = started.elapsed();
        let record = format!(
            "{}; COMMIT",
            self.table.insert_sql(file, elapsed.as_millis(), &self.host)
        );
        if let Err(source) = self.client.batch_execute(&record).await {
            if self.lost(&source) {
                return Err(MigrateError::ConnectionLost {
                    path: file.path.clone(),
                    during_commit: true,
                    source,
                });
            }
            history::rollback(self.client).await;
            return Err(MigrateError::Database {
                step: "recording the migration",
                source,
            });
        }
        Ok(Applied::Now(elapsed))
    }

    async fn apply_outside_transaction(
        &self,
        file: &MigrationFile,
    ) -> Result<Applied, MigrateError> {
        self.run(
            file,
            &self.table.session_lock_sql(),
            "taking the migration lock",
        )
        .await?;
        let result = self.run_statements(file).await;
        let cleanup = format!(
            "RESET lock_timeout; RESET statement_timeout; {}",
            self.table.session_unlock_sql()
        );
        if let Err(e) = self.client.batch_execute(&cleanup).await {
            // The server drops session locks with the connection; nothing else holds them.
            tracing::warn!(error = %e, "releasing the migration lock failed");
        }
        result
    }

    async fn run_statements(&self, file: &MigrationFile) -> Result<Applied, MigrateError> {
        let rows = self
            .run(
                file,
                &self.table.recheck_sql(file.version),
                "reading the history table",
            )
            .await?;
        match HistoryTable::recheck(file, rows.last()) {
            Recheck::Proceed => {}
            Recheck::AlreadyApplied => return Ok(Applied::ByAnotherRun),
            Recheck::Drift(d) => return Err(MigrateError::Drift { problems: vec![d] }),
        }
        let started = Instant::now();
        self.run(file, &self.timeouts.set_sql(false), "setting timeouts")
            .await?;
        for piece in &file.pieces {
            if let Err(e) = self.client.batch_execute(&piece.sql).await {
                return Err(self.piece_failed(file, piece, e).await);
            }
        }
        let elapsed = started.elapsed();
        let record = self.table.insert_sql(file, elapsed.as_millis(), &self.host);
        self.run(file, &record, "recording the migration").await?;
        Ok(Applied::Now(elapsed))
    }

    /// Runs pgfunnel's own `sql`; on error rolls back (harmless outside a transaction).
    async fn run(
        &self,
        file: &MigrationFile,
        sql: &str,
        step: &'static str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryRow>, MigrateError> {
        match history::query_rows(self.client, sql).await {
            Ok(rows) => Ok(rows),
            Err(source) if self.lost(&source) => Err(MigrateError::ConnectionLost {
                path: file.path.clone(),
                during_commit: false,
                source,
            }),
            Err(source) => {
                history::rollback(self.client).await;
                Err(MigrateError::Database { step, source })
            }
        }
    }

    /// Turns a failed piece into the error naming file and line, after rolling back.
    async fn piece_failed(
        &self,
        file: &MigrationFile,
        piece: &Piece,
        source: tokio_postgres::Error,
    ) -> MigrateError {
        if self.lost(&source) {
            return MigrateError::ConnectionLost {
                path: file.path.clone(),
                during_commit: false,
                source,
            };
        }
        history::rollback(self.client).await;
        let line = match source.as_db_error().and_then(|d| d.position()) {
            Some(ErrorPosition::Original(p)) => piece.line_of_position(*p),
            _ => piece.first_code_line(),
        };
        tracing::debug!(file = %file.path.display(), line, "migration failed");
        MigrateError::MigrationFailed {
            path: file.path.clone(),
            line,
            no_transaction: file.no_transaction,
            source,
        }
    }

    /// Whether `e` means the connection is gone (rather than a statement failing).
    fn lost(&self, e: &tokio_postgres::Error) -> bool {
        let fatal = e
            .as_db_error()
            .is_some_and(|d| matches!(d.severity(), "FATAL" | "PANIC"));
        fatal || e.is_closed() || self.client.is_closed() || e.as_db_error().is_none()
    }
}
