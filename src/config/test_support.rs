//! Test helpers: where PgBouncer's sample configs and pgfunnel's own fixtures live, and
//! temporary config trees.

use std::path::{Path, PathBuf};

/// The shared PgBouncer sample files (`shared/testdata/pgbouncer` beside the repository, as in
/// CI), or `None` when this checkout has none: the caller skips itself. The first skip in a test
/// binary prints one line to stderr (bypassing the test harness's capture). Under CI (`CI` set)
/// a missing folder is a failure, never a skip.
pub fn shared_testdata() -> Option<PathBuf> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        manifest.join("../shared/testdata/pgbouncer"),
        manifest.join("../../shared/testdata/pgbouncer"),
    ];
    let found = candidates.iter().find(|dir| dir.is_dir()).cloned();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PgBouncer sample files not found in {candidates:?}; CI must have shared/ beside the repository"
        );
        NOTICE.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: ../shared/testdata/pgbouncer not found: tests against PgBouncer's own sample files are skipped \
                 (pgfunnel's own fixtures in tests/fixtures still run)"
            );
        });
    }
    found
}

/// Path of one of pgfunnel's own fixtures (`tests/fixtures/...`), which must exist.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(path.is_file(), "missing fixture {}", path.display());
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
