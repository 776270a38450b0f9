//! Errors of `pgfunnel migrate` and the exit code each maps to. Owns the wording a user sees;
//! does not print anything itself.

use std::path::PathBuf;

use crate::config::ConfigError;

use super::plan::Drift;

/// Everything `migrate` can fail with. Each variant names the file, database target or
/// migration involved; none carries a password.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The config's database entry has no user and PGUSER is not set.
    #[error("{config}: database {name:?} has no user= and PGUSER is not set; add user= or use --database-url", config = .config.display())]
    NoUser {
        /// The database name.
        name: String,
        /// The config file.
        config: PathBuf,
    },
    /// Neither --database-url/DATABASE_URL nor --database was given.
    #[error(
        "no database given: use --database-url URL, DATABASE_URL, or --database NAME --config FILE"
    )]
    NoDatabase,
    /// The --config file could not be loaded (boxed: config errors are large and rare).
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// --database names no entry of the config file.
    #[error("{config}: no database {name:?} in [databases]")]
    UnknownDatabase {
        /// The name given.
        name: String,
        /// The config file.
        config: PathBuf,
    },
    /// The database URL does not parse.
    #[error("invalid database URL: {}", describe(.source))]
    BadUrl {
        /// tokio-postgres's parse error (it never echoes the password).
        source: tokio_postgres::Error,
    },
    /// Connecting or logging in failed.
    #[error("cannot connect to {target}: {}", describe(.source))]
    Connect {
        /// `host:port/dbname as user`.
        target: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The migrations folder cannot be listed.
    #[error("cannot read migrations folder {}: {source}", dir.display())]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A migration file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A migration file is not UTF-8.
    #[error("{}: not valid UTF-8 (byte {valid_up_to})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Bytes before the first invalid one.
        valid_up_to: usize,
    },
    /// A `.sql` file whose name does not start with `NNNN_`.
    #[error("{}: not a migration file name (expected NNNN_name.sql or NNNN_name.up.sql)", path.display())]
    BadFileName {
        /// The file.
        path: PathBuf,
    },
    /// A transactional file with its own BEGIN/COMMIT/ROLLBACK.
    #[error("{}:{line}: the file controls its own transaction; remove BEGIN/COMMIT (each migration already runs in one transaction with its history row) or mark it {}", path.display(), super::files::NO_TRANSACTION_MARKER)]
    OwnTransaction {
        /// The file.
        path: PathBuf,
        /// Line of the offending statement.
        line: usize,
    },
    /// Two files carry the same version number.
    #[error("duplicate migration version {version}: {} and {}", first.display(), second.display())]
    DuplicateVersion {
        /// The version.
        version: u64,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// The history disagrees with the files; nothing was applied.
    #[error("migration history has drifted from the files, nothing applied:{}", list_drift(.problems))]
    Drift {
        /// Every disagreement found.
        problems: Vec<Drift>,
    },
    /// A statement of a migration failed; the migration was rolled back (or, for a
    /// no-transaction file, the statements before it stay applied) and later ones not attempted.
    #[error("{}:{line}: {} ({}){}", path.display(), server_message(.source), sqlstate(.source), rollback_note(*.no_transaction))]
    MigrationFailed {
        /// The file.
        path: PathBuf,
        /// 1-based line the server's error position points at (the statement's first line
        /// when the server gave no position).
        line: usize,
        /// Whether the file ran outside a transaction.
        no_transaction: bool,
        /// The server's error.
        source: tokio_postgres::Error,
    },
    /// The connection broke while a migration ran.
    #[error("{}: connection lost {}: {}", path.display(), if *.during_commit { "during COMMIT: the migration may or may not be applied, `pgfunnel migrate status` tells" } else { "before COMMIT: the migration was rolled back by the server" }, describe(.source))]
    ConnectionLost {
        /// The file being applied.
        path: PathBuf,
        /// Whether COMMIT had been sent.
        during_commit: bool,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// A history-table or lock query failed.
    #[error("{step} failed: {}", describe(.source))]
    Database {
        /// What pgfunnel was doing.
        step: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// A `-- pgfunnel:no-transaction` file needs a session, but the connection is behind a
    /// transaction pooler.
    #[error("{}: marked -- pgfunnel:no-transaction, which needs a session connection (direct to Postgres or a session-mode pool), but this connection is behind a transaction pooler; nothing applied. Run migrate with a direct or session-mode URL", path.display())]
    NeedsSession {
        /// The first such file pending.
        path: PathBuf,
    },
}

impl MigrateError {
    /// The process exit code: 3 drift, 4 bad migration files, 5 no-transaction file behind
    /// a transaction pooler, 1 everything else (clap uses 2 for a bad command line).
    pub fn exit_code(&self) -> u8 {
        match self {
            MigrateError::Drift { .. } => 3,
            MigrateError::ReadDir { .. }
            | MigrateError::ReadFile { .. }
            | MigrateError::NotUtf8 { .. }
            | MigrateError::BadFileName { .. }
            | MigrateError::OwnTransaction { .. }
            | MigrateError::DuplicateVersion { .. } => 4,
            MigrateError::NeedsSession { .. } => 5,
            _ => 1,
        }
    }
}

/// At most this many drift lines in one message; `migrate status` lists them all.
const MAX_DRIFT_LINES: usize = 20;

fn list_drift(problems: &[Drift]) -> String {
    let mut text: String = problems
        .iter()
        .take(MAX_DRIFT_LINES)
        .map(|p| format!("\n  {p}"))
        .collect();
    if problems.len() > MAX_DRIFT_LINES {
        let more = problems.len() - MAX_DRIFT_LINES;
        text.push_str(&format!(
            "\n  ... and {more} more (`pgfunnel migrate status` lists all)"
        ));
    }
    text
}

/// The driver's error with the server's message when there is one (tokio-postgres's own
/// Display says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(_) => format!("{} ({})", server_message(e), sqlstate(e)),
        None => e.to_string(),
    }
}

fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}; {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => format!("SQLSTATE {}", code.code()),
        None => "no SQLSTATE".to_owned(),
    }
}

fn rollback_note(no_transaction: bool) -> &'static str {
    if no_transaction {
        "; no-transaction file: the statements before this one stay applied, no history row was written, later migrations were not attempted"
    } else {
        "; rolled back, later migrations were not attempted"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_drift_lists_are_cut_with_a_count() {
        let problems: Vec<Drift> = (1..=25)
            .map(|version| Drift::MissingFile {
                version,
                name: format!("m{version}"),
            })
            .collect();
        let text = MigrateError::Drift { problems }.to_string();
        assert!(
            text.contains("version 20 (m20)") && !text.contains("version 21 (m21)"),
            "{text}"
        );
        assert!(
            text.ends_with("... and 5 more (`pgfunnel migrate status` lists all)"),
            "{text}"
        );
    }
}
