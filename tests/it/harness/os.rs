//! OS-level plumbing for the Postgres harness: finding the server binaries, running them (as the
//! `postgres` OS user when root), pids and `/proc`, temp dirs, and reaping servers left by dead
//! test processes. Knows nothing about roles, databases or SQL.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install them with: apt-get update && apt-get install -y postgresql \
     (scripts/test.sh does this), or point PGFUNNEL_PG_BINDIR at a directory holding initdb";
pub(super) const TEMP_PREFIX: &str = "pgfunnel-pg-";

/// A `Command` for server tool `tool` in `bindir`, wrapped in `runuser -u postgres --` when
/// `as_postgres_user`, with the caller's `PG*` variables removed and `cwd` as working dir.
pub(super) fn pg_tool_command(
    bindir: &Path,
    tool: &str,
    as_postgres_user: bool,
    cwd: &Path,
) -> Command {
    let mut cmd = if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    };
    strip_pg_env(&mut cmd);
    // The postgres user cannot read root's cwd; run somewhere it owns.
    cmd.current_dir(cwd);
    cmd
}

/// `pg_ctl stop -m immediate` on `data`, ignoring every failure (cleanup paths only).
pub(super) fn stop_cluster_quietly(bindir: &Path, data: &Path, as_postgres_user: bool) {
    let cwd = data.parent().unwrap_or(Path::new("/"));
    let mut cmd = pg_tool_command(bindir, "pg_ctl", as_postgres_user, cwd);
    cmd.arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "30", "-s", "stop"]);
    let _ = run(&mut cmd);
}

/// Runs `cmd` with no stdin, returning stdout, or a description with stderr on failure.
pub(super) fn run(cmd: &mut Command) -> Result<String, String> {
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{cmd:?} exited with {}\n{stderr}{stdout}",
            out.status
        ))
    }
}

/// Removes every `PG*` environment variable from `cmd`.
pub(super) fn strip_pg_env(cmd: &mut Command) {
    // PGHOST, PGPASSWORD, PGDATA, PGOPTIONS... from the caller must not leak into the test cluster.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// Appends `text` to an existing file, keeping its owner and mode; panics on failure.
pub(super) fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// `$PGFUNNEL_PG_BINDIR`, else `pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`;
/// each must hold `initdb`. Panics with the install command otherwise.
pub(super) fn find_bindir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGFUNNEL_PG_BINDIR").map(PathBuf::from) {
        assert!(
            has_initdb(&dir),
            "PGFUNNEL_PG_BINDIR={} has no initdb/pg_ctl",
            dir.display()
        );
        return dir;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!("PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}"),
    }
}

/// (uid, gid) of the `postgres` OS user; panics when there is none.
pub(super) fn postgres_os_user() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated literal; the record is read before any other call.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` OS user to run the server as; {INSTALL_HINT}"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// The temp base: `$TMPDIR` unless (as root) the postgres user could not reach it or the unix
/// socket path would be too long; then `/tmp`.
pub(super) fn temp_base(as_postgres_user: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    let too_long = base.as_os_str().len() > 60;
    let unreachable = as_postgres_user
        && base
            .ancestors()
            .any(|dir| !std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if too_long || unreachable {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// Stops and removes servers left by test processes that died without their atexit cleanup
/// (SIGKILL, abort): temp dirs `pgfunnel-pg-<pid>-*` whose pid is gone.
pub(super) fn reap_stale_servers(base: &Path, bindir: &Path, as_postgres_user: bool) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let data = entry.path().join("data");
        if data.join("postmaster.pid").exists() {
            stop_cluster_quietly(bindir, &data, as_postgres_user);
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Alive and not a zombie (a SIGKILLed postmaster may stay a zombie under a non-reaping init).
pub(super) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence/permission.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !matches!(proc_stat(pid), Some(('Z', _)))
}

/// (state, ppid) from `/proc/<pid>/stat`.
pub(super) fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parens: fields start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Pids whose parent is `parent`, from `/proc` (empty if unreadable).
pub(super) fn child_pids(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Spawns a watchdog that outlives this process: it blocks reading the returned child's stdin
/// and, once that reaches EOF (this process exited, crashed or was killed, or the handle was
/// dropped), stops the cluster in `dir/data` (`immediate`) and removes `dir`. It ignores
/// SIGINT/SIGTERM/SIGHUP so that a Ctrl-C aimed at `cargo test` does not take it down first.
pub(super) fn spawn_watchdog(
    bindir: &Path,
    dir: &Path,
    as_postgres_user: bool,
) -> std::io::Result<std::process::Child> {
    let mut stop = pg_tool_command(bindir, "pg_ctl", as_postgres_user, dir);
    stop.arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "immediate", "-w", "-t", "30", "-s", "stop"]);
    let script = r#"trap '' INT TERM HUP
read -r _ || true
if [ -f "$WATCHDOG_DIR/data/postmaster.pid" ]; then "$@" >/dev/null 2>&1; fi
rm -rf -- "$WATCHDOG_DIR""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("pgfunnel-pg-watchdog");
    cmd.arg(stop.get_program()).args(stop.get_args());
    strip_pg_env(&mut cmd);
    cmd.env("WATCHDOG_DIR", dir).current_dir("/");
    cmd.stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn()
}
