//! Sans-I/O comparison of migration files with the history table: what is applied, what is
//! pending, and what has drifted (changed checksum, missing file, new file below the latest
//! applied version). Does not decide what to do about it; `up` refuses, `status` shows.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::files::MigrationFile;

/// One row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRow {
    /// Version number.
    pub version: u64,
    /// Name recorded when applied.
    pub name: String,
    /// Checksum recorded when applied.
    pub checksum: String,
    /// When it was applied, as the server prints a timestamptz.
    pub applied_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// Who applied it.
    pub applied_by: String,
}

/// A disagreement between the history and the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The file of an applied version changed since.
    ChecksumChanged {
        /// The file.
        path: PathBuf,
        /// Recorded checksum.
        recorded: String,
        /// The file's checksum now.
        actual: String,
    },
    /// An applied version has no file any more.
    MissingFile {
        /// The version.
        version: u64,
        /// Its recorded name.
        name: String,
    },
    /// A pending file is numbered below the latest applied version.
    BelowLatest {
        /// The file.
        path: PathBuf,
        /// The latest applied version.
        latest: u64,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::ChecksumChanged {
                path,
                recorded,
                actual,
            } => write!(
                f,
                "{}: changed after it was applied (checksum {} recorded, {} now)",
                path.display(),
                short(recorded),
                short(actual)
            ),
            Drift::MissingFile { version, name } => {
                write!(
                    f,
                    "version {version} ({name}) is applied but its file is missing"
                )
            }
            Drift::BelowLatest { path, latest } => write!(
                f,
                "{}: not applied, but numbered below the latest applied version {latest}",
                path.display()
            ),
        }
    }
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// State of one version in `migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Applied and its file unchanged.
    Applied,
    /// Not applied yet.
    Pending,
    /// See the drift.
    Drifted(Drift),
}

/// One line of `migrate status`.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// Version number.
    pub version: u64,
    /// File name, or the recorded name when the file is missing.
    pub name: String,
    /// The state.
    pub state: State,
    /// The history row, when applied.
    pub applied: Option<AppliedRow>,
}

/// The outcome of comparing files with the history.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Files not applied yet, in version order (drifted ones included, see `drift`).
    pub pending: Vec<&'a MigrationFile>,
    /// Every disagreement.
    pub drift: Vec<Drift>,
    /// Every version known to either side, in order.
    pub rows: Vec<StatusRow>,
}

/// Compares `files` (sorted by version) with the `applied` history rows.
pub fn compare<'a>(files: &'a [MigrationFile], applied: &[AppliedRow]) -> Plan<'a> {
    let latest = applied.iter().map(|r| r.version).max();
    let by_version: BTreeMap<u64, &AppliedRow> = applied.iter().map(|r| (r.version, r)).collect();
    let mut rows: BTreeMap<u64, StatusRow> = BTreeMap::new();
    let mut pending = Vec::new();
    for file in files {
        let row = by_version.get(&file.version).copied();
        let state = file_state(file, row, latest, &mut pending);
        rows.insert(
            file.version,
            StatusRow {
                version: file.version,
                name: file.file_name(),
                state,
                applied: row.cloned(),
            },
        );
    }
    for r in applied {
        rows.entry(r.version).or_insert_with(|| StatusRow {
            version: r.version,
            name: r.name.clone(),
            state: State::Drifted(Drift::MissingFile {
                version: r.version,
                name: r.name.clone(),
            }),
            applied: Some(r.clone()),
        });
    }
    let rows: Vec<StatusRow> = rows.into_values().collect();
    let drift = rows
        .iter()
        .filter_map(|r| match &r.state {
            State::Drifted(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    Plan {
        pending,
        drift,
        rows,
    }
}

/// The state of `file` given its history `row` and the `latest` applied version; a file
/// not applied yet is also added to `pending`.
fn file_state<'a>(
    file: &'a MigrationFile,
    row: Option<&AppliedRow>,
    latest: Option<u64>,
    pending: &mut Vec<&'a MigrationFile>,
) -> State {
    match (row, latest) {
        (Some(r), _) if r.checksum != file.checksum => State::Drifted(Drift::ChecksumChanged {
            path: file.path.clone(),
            recorded: r.checksum.clone(),
            actual: file.checksum.clone(),
        }),
        (Some(_), _) => State::Applied,
        (None, Some(latest)) if file.version < latest => {
            pending.push(file);
            State::Drifted(Drift::BelowLatest {
                path: file.path.clone(),
                latest,
            })
        }
        (None, _) => {
            pending.push(file);
            State::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u64, text: &str) -> MigrationFile {
        let path = PathBuf::from(format!("m/{version:04}_v.sql"));
        MigrationFile::parse(path, version, "v".into(), text.as_bytes()).expect("parses")
    }

    fn applied(f: &MigrationFile) -> AppliedRow {
        AppliedRow {
            version: f.version,
            name: f.name.clone(),
            checksum: f.checksum.clone(),
            applied_at: "now".into(),
            duration_ms: 1,
            applied_by: "test".into(),
        }
    }

    #[test]
    fn unapplied_files_above_latest_are_pending_without_drift() {
        let files = vec![file(1, "a"), file(2, "b"), file(3, "c")];
        let history = vec![applied(&files[0])];
        let plan = compare(&files, &history);
        assert!(plan.drift.is_empty(), "{:?}", plan.drift);
        let pending: Vec<_> = plan.pending.iter().map(|f| f.version).collect();
        assert_eq!(pending, vec![2, 3]);
        assert_eq!(plan.rows[0].state, State::Applied);
        assert_eq!(plan.rows[1].state, State::Pending);
    }

    #[test]
    fn changed_missing_and_below_latest_files_are_drift() {
        let files = vec![file(1, "changed"), file(2, "new below"), file(4, "d")];
        let mut one = applied(&file(1, "original"));
        one.name = "one".into();
        let three = AppliedRow {
            version: 3,
            name: "gone".into(),
            ..one.clone()
        };
        let plan = compare(&files, &[one, three]);
        let text: Vec<String> = plan.drift.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text[0].contains("0001_v.sql: changed after it was applied"),
            "{text:?}"
        );
        assert!(
            text[1].contains(
                "0002_v.sql: not applied, but numbered below the latest applied version 3"
            ),
            "{text:?}"
        );
        assert!(
            text[2].contains("version 3 (gone) is applied but its file is missing"),
            "{text:?}"
        );
        assert_eq!(plan.rows.len(), 4);
        assert_eq!(plan.rows[3].state, State::Pending);
    }
}
