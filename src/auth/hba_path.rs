//! Where a relative `auth_hba_file` is read from. pgfunnel resolves relative paths against
//! the config file's directory (auth_file too), which keeps working when the process runs
//! elsewhere (systemd starts services in `/`). PgBouncer opens the name as given, relative to
//! its working directory; a setup that relies on that keeps working: when the file is not
//! beside the config but is in the working directory, that one is used.

use std::path::{Path, PathBuf};

/// The path to read `file` from, for a config file in `config_dir` (`None`: URL mode, no
/// config file; the name is used as given).
pub fn resolve_hba_path(config_dir: Option<&Path>, file: &Path) -> PathBuf {
    let Some(dir) = config_dir.filter(|_| file.is_relative()) else {
        return file.to_path_buf();
    };
    let beside = dir.join(file);
    if !beside.exists() && file.exists() {
        return std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    }
    beside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_prefer_the_config_directory_then_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Cargo.toml is in the working directory of `cargo test` (the crate root).
        let name = Path::new("Cargo.toml");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(resolve_hba_path(Some(dir.path()), name), cwd.join(name));
        std::fs::write(dir.path().join(name), "").expect("write");
        assert_eq!(
            resolve_hba_path(Some(dir.path()), name),
            dir.path().join(name)
        );
        let missing = Path::new("no_such_hba.conf");
        assert_eq!(
            resolve_hba_path(Some(dir.path()), missing),
            dir.path().join(missing),
            "missing everywhere: the config directory, so the error names that path"
        );
        let absolute = dir.path().join("x.conf");
        assert_eq!(
            resolve_hba_path(Some(Path::new("/etc")), &absolute),
            absolute
        );
        assert_eq!(resolve_hba_path(None, name), name);
    }
}
