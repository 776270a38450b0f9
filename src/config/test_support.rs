//! Test helpers: where PgBouncer's sample configs live, and temporary config trees.

use std::path::{Path, PathBuf};

/// The shared PgBouncer test data folder. Panics with a clear message when it is absent: these
/// tests must never skip silently.
pub fn testdata_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        manifest.join("../shared/testdata/pgbouncer"),
        manifest.join("../../shared/testdata/pgbouncer"),
    ];
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "PgBouncer test data not found; looked in {:?}. These files come from shared/testdata/pgbouncer \
                 in the project; check it out beside the crate (do not copy the files into the crate).",
                candidates
            )
        })
}

/// Path of one file in [`testdata_dir`], which must exist.
pub fn testdata_file(name: &str) -> PathBuf {
    let path = testdata_dir().join(name);
    assert!(path.is_file(), "missing test data file {}", path.display());
    path
}

/// Writes `files` (relative name, contents) into a new temporary directory.
pub fn temp_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, text).expect("write temp file");
    }
    dir
}
