//! Migration files: finds `NNNN_name.sql` / `NNNN_name.up.sql` in a folder, checks numbering,
//! reads markers and checksums, and cuts each file into the pieces sent to the server.
//! Does not talk to a database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::MigrateError;
use super::split::{self, Piece};

/// A line (trimmed) that marks a file to run outside a transaction, statement by statement.
pub const NO_TRANSACTION_MARKER: &str = "-- pgfunnel:no-transaction";

/// One migration file, read and parsed.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// The number the file name starts with.
    pub version: u64,
    /// The name after `NNNN_`, without `.up.sql`/`.sql`.
    pub name: String,
    /// The path as found in the folder.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub checksum: String,
    /// Whether the file carries [`NO_TRANSACTION_MARKER`].
    pub no_transaction: bool,
    /// What is sent to the server, in order: one piece per Drizzle breakpoint chunk (the whole
    /// file when it has none), or one piece per statement for a no-transaction file.
    pub pieces: Vec<Piece>,
}

impl MigrationFile {
    /// The file name (for messages).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Parses `bytes` as the file `path` with the given version and name.
    pub fn parse(
        path: PathBuf,
        version: u64,
        name: String,
        bytes: &[u8],
    ) -> Result<MigrationFile, MigrateError> {
        let text = std::str::from_utf8(bytes).map_err(|e| MigrateError::NotUtf8 {
            path: path.clone(),
            valid_up_to: e.valid_up_to(),
        })?;
        let no_transaction = text.lines().any(|l| l.trim() == NO_TRANSACTION_MARKER);
        let chunks = split::breakpoint_chunks(text);
        let statements: Vec<Piece> = chunks.iter().flat_map(split::statements).collect();
        if !no_transaction {
            // A COMMIT in the file would end pgfunnel's transaction, its lock with it, early.
            if let Some(st) = statements.iter().find(|st| controls_transaction(&st.sql)) {
                return Err(MigrateError::OwnTransaction {
                    path,
                    line: st.first_code_line(),
                });
            }
        }
        let pieces = if no_transaction { statements } else { chunks };
        Ok(MigrationFile {
            version,
            name,
            path,
            checksum: checksum(bytes),
            no_transaction,
            pieces,
        })
    }
}

/// Whether a statement begins or ends a transaction (BEGIN, START TRANSACTION, COMMIT,
/// ABORT, ROLLBACK without TO, COMMIT/ROLLBACK PREPARED). `END` is not checked: it also
/// closes `BEGIN ATOMIC` function bodies, which the statement splitter cuts apart.
fn controls_transaction(statement: &str) -> bool {
    let code = statement[split::code_start(statement)..].to_ascii_lowercase();
    let mut words = code
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty());
    match (words.next(), words.next()) {
        (Some("begin" | "commit" | "abort"), _) => true,
        (Some("start"), Some("transaction")) => true,
        (Some("rollback"), second) => second != Some("to"),
        _ => false,
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn checksum(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a file name in the migrations folder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileName {
    /// `NNNN_name.sql` or `NNNN_name.up.sql`: (version, name).
    Migration(u64, String),
    /// Not SQL, or a down migration (`.down.sql`): `migrate` ignores it.
    Ignored,
    /// A `.sql` file without a `NNNN_name` shape.
    Invalid,
}

/// Classifies a file name of the migrations folder.
pub fn parse_file_name(file_name: &str) -> FileName {
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return FileName::Ignored;
    };
    if stem.ends_with(".down") {
        return FileName::Ignored;
    }
    let stem = stem.strip_suffix(".up").unwrap_or(stem);
    let Some((number, name)) = stem.split_once('_') else {
        return FileName::Invalid;
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return FileName::Invalid;
    }
    // The history stores versions as bigint.
    match number.parse::<i64>() {
        Ok(version) => FileName::Migration(version.unsigned_abs(), name.to_owned()),
        Err(_) => FileName::Invalid,
    }
}

/// Reads every migration file of `dir` (not its subfolders, e.g. Drizzle's `meta/`), sorted by
/// version. Errors name the offending file: unreadable, not UTF-8, a bad `.sql` name, or two
/// files with one version.
pub fn discover(dir: &Path) -> Result<Vec<MigrationFile>, MigrateError> {
    let read_dir = |source| MigrateError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut found: BTreeMap<u64, (PathBuf, String)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let (version, name) = match parse_file_name(&file_name) {
            FileName::Migration(version, name) => (version, name),
            FileName::Ignored => continue,
            FileName::Invalid => return Err(MigrateError::BadFileName { path }),
        };
        if let Some((first, _)) = found.get(&version) {
            let (first, second) = ordered(first.clone(), path);
            return Err(MigrateError::DuplicateVersion {
                version,
                first,
                second,
            });
        }
        found.insert(version, (path, name));
    }
    found
        .into_iter()
        .map(|(version, (path, name))| {
            let bytes = std::fs::read(&path).map_err(|source| MigrateError::ReadFile {
                path: path.clone(),
                source,
            })?;
            MigrationFile::parse(path, version, name, &bytes)
        })
        .collect()
}

/// Orders two paths so messages do not depend on directory listing order.
fn ordered(a: PathBuf, b: PathBuf) -> (PathBuf, PathBuf) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn file_names_give_version_and_name_and_skip_down_and_non_sql() {
        use FileName::*;
        assert_eq!(
            parse_file_name("0001_add_index.sql"),
            Migration(1, "add_index".into())
        );
        assert_eq!(
            parse_file_name("0012_users.up.sql"),
            Migration(12, "users".into())
        );
        assert_eq!(
            parse_file_name("20240101120000_x.sql"),
            Migration(20240101120000, "x".into())
        );
        assert_eq!(parse_file_name("0012_users.down.sql"), Ignored);
        assert_eq!(parse_file_name("_journal.json"), Ignored);
        assert_eq!(parse_file_name("README.md"), Ignored);
        for bad in [
            "initial.sql",
            "0001.sql",
            "00a1_x.sql",
            "0001_.sql",
            "99999999999999999999999_x.sql",
        ] {
            assert_eq!(parse_file_name(bad), Invalid, "{bad}");
        }
    }

    #[test]
    fn discover_sorts_numerically_and_ignores_subfolders() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "10_ten.sql", "select 10;");
        write(dir.path(), "9_nine.up.sql", "select 9;");
        write(dir.path(), "9_nine.down.sql", "select -9;");
        std::fs::create_dir(dir.path().join("meta")).expect("mkdir");
        write(&dir.path().join("meta"), "_journal.json", "{}");
        let files = discover(dir.path()).expect("valid");
        let versions: Vec<_> = files.iter().map(|f| (f.version, f.name.as_str())).collect();
        assert_eq!(versions, vec![(9, "nine"), (10, "ten")]);
    }

    #[test]
    fn duplicate_versions_are_refused_naming_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "0001_a.sql", "select 1;");
        write(dir.path(), "1_b.up.sql", "select 1;");
        let err = discover(dir.path()).expect_err("duplicate");
        let msg = err.to_string();
        assert!(msg.contains("duplicate migration version 1"), "{msg}");
        assert!(
            msg.contains("0001_a.sql") && msg.contains("1_b.up.sql"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn bad_sql_file_name_and_missing_folder_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "schema.sql", "select 1;");
        let err = discover(dir.path()).expect_err("bad name");
        assert!(err.to_string().contains("schema.sql"), "{err}");
        let err = discover(&dir.path().join("absent")).expect_err("no folder");
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn marker_makes_a_file_run_statement_by_statement() {
        let text = "-- pgfunnel:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\nCREATE INDEX CONCURRENTLY b ON t (y);\n";
        let f = MigrationFile::parse("0003_idx.sql".into(), 3, "idx".into(), text.as_bytes())
            .expect("parses");
        assert!(f.no_transaction);
        assert_eq!(f.pieces.len(), 2);
        assert_eq!((f.pieces[0].first_line, f.pieces[1].first_line), (1, 2));
        let plain = MigrationFile::parse(
            "0003_idx.sql".into(),
            3,
            "idx".into(),
            b"select 1;\nselect 2;\n",
        )
        .expect("parses");
        assert!(!plain.no_transaction);
        assert_eq!(plain.pieces.len(), 1, "a transactional file is sent whole");
    }

    #[test]
    fn transactional_file_with_its_own_commit_is_refused_with_its_line() {
        let text = "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n";
        let err = MigrationFile::parse("0001_x.sql".into(), 1, "x".into(), text.as_bytes())
            .expect_err("own transaction");
        assert!(err.to_string().starts_with("0001_x.sql:1: "), "{err}");
        assert_eq!(err.exit_code(), 4);
        let body = "DO $$ BEGIN PERFORM 1; END $$;\nSAVEPOINT a;\nROLLBACK TO SAVEPOINT a;\n\
                    CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n";
        MigrationFile::parse("0002_y.sql".into(), 2, "y".into(), body.as_bytes())
            .expect("plpgsql BEGIN, savepoints and BEGIN ATOMIC are not transaction control");
    }

    #[test]
    fn checksum_is_sha256_hex_of_the_bytes() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn non_utf8_file_is_an_error_naming_it() {
        let err = MigrationFile::parse("0001_x.sql".into(), 1, "x".into(), b"select '\xff';")
            .expect_err("not utf-8");
        assert!(
            err.to_string().contains("0001_x.sql: not valid UTF-8"),
            "{err}"
        );
    }
}
