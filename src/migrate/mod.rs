//! `pgfunnel migrate`: applies numbered SQL migrations exactly once, also through pgfunnel in
//! transaction mode, and reports status and drift. Owns files, history table, locking and
//! output; `main.rs` only builds the runtime and turns the result into an exit code.
//!
//! Files: `files.rs` + `split.rs` (discovery, Drizzle breakpoints, markers, statements),
//! `plan.rs` (files vs history: pending and drift), `history.rs` (table and lock SQL),
//! `runner.rs` (one migration per transaction), `target.rs` (connecting, pooler probe,
//! admin RECONNECT), `report.rs` (stdout), `error.rs` (errors and exit codes).

mod error;
mod files;
mod history;
mod plan;
mod report;
mod runner;
mod split;
mod target;

use std::io::Write;

pub use error::MigrateError;
pub use files::{discover, parse_file_name, FileName, MigrationFile, NO_TRANSACTION_MARKER};
pub use history::{HistoryTable, TABLE};
pub use plan::{compare, AppliedRow, Drift, Plan, State, StatusRow};
pub use runner::{Applied, Runner, Timeouts};
pub use split::{Piece, BREAKPOINT};
pub use target::{behind_transaction_pooler, notify_pooler, Target};

use crate::cli::{MigrateAction, MigrateArgs};

/// Runs `migrate` as the command line asked, printing to `out`. `Ok` means exit code 0;
/// see [`MigrateError::exit_code`] for the others.
pub async fn run(args: &MigrateArgs, out: &mut dyn Write) -> Result<(), MigrateError> {
    let files = files::discover(&args.dir)?;
    let target = match (&args.database, &args.config, &args.database_url) {
        (Some(name), Some(config), _) => Target::from_config(config, name)?,
        (_, _, Some(url)) => Target::from_url(url)?,
        _ if args.dry_run && args.action == MigrateAction::Up => {
            // No database to compare with: every (validated) file counts as pending.
            let _ = writeln!(
                out,
                "-- no database given: listing every migration in {} as pending",
                args.dir.display()
            );
            let pending: Vec<&MigrationFile> = files
                .iter()
                .filter(|f| args.target.is_none_or(|t| f.version <= t))
                .collect();
            report::dry_run(out, &pending);
            return Ok(());
        }
        _ => return Err(MigrateError::NoDatabase),
    };
    let client = target.connect().await?;
    let table = HistoryTable::new(&args.schema);
    match args.action {
        MigrateAction::Status => {
            let applied = table.read(&client).await?;
            report::status(out, &plan::compare(&files, &applied));
            Ok(())
        }
        MigrateAction::Verify => {
            let applied = table.read(&client).await?;
            let plan = plan::compare(&files, &applied);
            if !plan.drift.is_empty() {
                return Err(MigrateError::Drift {
                    problems: plan.drift,
                });
            }
            report::summary(out, &plan);
            Ok(())
        }
        MigrateAction::Up => up(args, &target, &client, &table, &files, out).await,
    }
}

async fn up(
    args: &MigrateArgs,
    target: &Target,
    client: &tokio_postgres::Client,
    table: &HistoryTable,
    files: &[MigrationFile],
    out: &mut dyn Write,
) -> Result<(), MigrateError> {
    if !args.dry_run {
        table.ensure(client).await?;
    }
    let applied = table.read(client).await?;
    let plan = plan::compare(files, &applied);
    if !plan.drift.is_empty() {
        return Err(MigrateError::Drift {
            problems: plan.drift,
        });
    }
    let pending: Vec<&MigrationFile> = plan
        .pending
        .into_iter()
        .filter(|f| args.target.is_none_or(|t| f.version <= t))
        .collect();
    if args.dry_run {
        report::dry_run(out, &pending);
        return Ok(());
    }
    if let Some(file) = pending.iter().find(|f| f.no_transaction) {
        if target::behind_transaction_pooler(target, client).await? {
            return Err(MigrateError::NeedsSession {
                path: file.path.clone(),
            });
        }
    }
    let runner = Runner {
        client,
        table,
        timeouts: Timeouts {
            lock: args.lock_timeout,
            statement: args.statement_timeout,
        },
        host: host_name(),
    };
    let count = apply_all(&runner, &pending, out).await?;
    report::line(
        out,
        &format!(
            "{count} migration(s) applied, history in {}",
            table.qualified()
        ),
    );
    if count > 0 {
        if let Some(url) = &args.pgfunnel_admin {
            tell_pooler(url, out).await;
        }
    }
    Ok(())
}

/// Applies `pending` in order, reporting each; stops at the first failure. Returns how
/// many this run applied (not those another run applied meanwhile).
async fn apply_all(
    runner: &Runner<'_>,
    pending: &[&MigrationFile],
    out: &mut dyn Write,
) -> Result<usize, MigrateError> {
    let mut count = 0;
    for file in pending {
        report::progress(out, &format!("applying {} ... ", file.file_name()));
        match runner.apply(file).await {
            Ok(Applied::Now(took)) => {
                count += 1;
                report::line(out, &format!("ok ({} ms)", took.as_millis()));
            }
            Ok(Applied::ByAnotherRun) => report::line(out, "already applied by another run"),
            Err(e) => {
                report::line(out, "FAILED");
                return Err(e);
            }
        }
    }
    Ok(count)
}

/// RECONNECT on a pgfunnel admin console; a failure is reported, never fatal (the
/// migrations are committed by then).
async fn tell_pooler(url: &str, out: &mut dyn Write) {
    match target::notify_pooler(url).await {
        Ok(()) => report::line(
            out,
            "pgfunnel told to replace its server connections (RECONNECT)",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "pgfunnel admin console unreachable");
            report::line(
                out,
                &format!("note: could not send RECONNECT to the pgfunnel admin console ({e}); clients may see stale cached plans until their server connections are replaced"),
            );
        }
    }
}

/// This machine's name for `applied_by`, or "unknown".
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
