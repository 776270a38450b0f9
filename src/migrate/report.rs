//! What `migrate` prints on stdout: the status table, the dry-run listing and progress
//! lines. Write errors (a closed pipe) are ignored: the exit code still tells the outcome.

use std::io::Write;

use super::files::MigrationFile;
use super::plan::{Plan, State};

/// Prints one line per version: state, file, and when/how long/by whom it was applied.
pub fn status(out: &mut dyn Write, plan: &Plan<'_>) {
    let _ = writeln!(
        out,
        "{:<10} {:<9} {:<40} applied",
        "version", "state", "file"
    );
    for row in &plan.rows {
        let state = match &row.state {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Drifted(_) => "DRIFTED",
        };
        let applied = row
            .applied
            .as_ref()
            .map(|a| format!("{} ({} ms, {})", a.applied_at, a.duration_ms, a.applied_by))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<10} {:<9} {:<40} {applied}",
            row.version, state, row.name
        );
        if let State::Drifted(d) = &row.state {
            let _ = writeln!(out, "{:<10} {:<9} ^ {d}", "", "");
        }
    }
    summary(out, plan);
}

/// One line: how many applied, pending, drifted.
pub fn summary(out: &mut dyn Write, plan: &Plan<'_>) {
    let applied = plan
        .rows
        .iter()
        .filter(|r| r.state == State::Applied)
        .count();
    let _ = writeln!(
        out,
        "{applied} applied, {} pending, {} drifted",
        plan.pending.len(),
        plan.drift.len()
    );
}

/// Prints what `up` would run: each file, how it would run, and its SQL.
pub fn dry_run(out: &mut dyn Write, pending: &[&MigrationFile]) {
    if pending.is_empty() {
        let _ = writeln!(out, "dry run: nothing to apply");
        return;
    }
    for file in pending {
        let how = if file.no_transaction {
            "outside a transaction, statement by statement"
        } else {
            "in one transaction"
        };
        let _ = writeln!(out, "-- would apply {} ({how}):", file.path.display());
        for piece in &file.pieces {
            let _ = writeln!(out, "{}", piece.sql.trim());
        }
    }
    let _ = writeln!(
        out,
        "dry run: {} migration(s) would be applied, nothing changed",
        pending.len()
    );
}

/// Prints `text` without a newline and flushes, so a long migration shows which one runs.
pub fn progress(out: &mut dyn Write, text: &str) {
    let _ = write!(out, "{text}");
    let _ = out.flush();
}

/// Prints a whole line.
pub fn line(out: &mut dyn Write, text: &str) {
    let _ = writeln!(out, "{text}");
}
