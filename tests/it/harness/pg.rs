//! A throwaway PostgreSQL for end-to-end tests: `initdb` + `pg_ctl` from the OS package into a fresh
//! temp dir on a free loopback port (as the `postgres` OS user when running as root), with one role
//! per auth method. It never skips: missing binaries are a panic that says how to install them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use super::os::{
    append, child_pids, find_bindir, pg_tool_command, pid_alive, postgres_os_user, proc_stat,
    reap_stale_servers, run, spawn_watchdog, stop_cluster_quietly, strip_pg_env, temp_base,
    TEMP_PREFIX,
};
use super::util::{free_port, tail_file, wait_until_msg};

/// Superuser created by `initdb -U`; trusted over the socket and over TCP.
pub const SUPERUSER: &str = "postgres";
/// Logs in with SCRAM-SHA-256 over TCP (password stored as a SCRAM verifier).
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASSWORD: &str = "scram_pass";
/// Logs in with md5 over TCP (password stored as an md5 hash).
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5_pass";
/// Logs in with cleartext `password` auth over TCP.
pub const PLAIN_USER: &str = "plain_user";
pub const PLAIN_PASSWORD: &str = "plain_pass";
/// Logs in with `trust` over TCP; has no password.
pub const TRUST_USER: &str = "trust_user";
/// Owned by `SCRAM_USER`; every test role may connect and create in schema `public`.
pub const APP_DB: &str = "app";
/// A second database with the same grants as `APP_DB`.
pub const APP2_DB: &str = "app2";
/// The four test roles and their passwords, in hba order.
pub const TEST_USERS: [(&str, Option<&str>); 4] = [
    (SCRAM_USER, Some(SCRAM_PASSWORD)),
    (MD5_USER, Some(MD5_PASSWORD)),
    (PLAIN_USER, Some(PLAIN_PASSWORD)),
    (TRUST_USER, None),
];

const PG_CTL_TIMEOUT_SECS: &str = "60";

const HBA: &str = "\
local all all trust
local replication all trust
host replication postgres 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all plain_user 127.0.0.1/32 password
host all md5_user 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
";

/// A running (or deliberately stopped) PostgreSQL cluster in its own temp dir. Dropping a private
/// instance stops it (`immediate`) and removes the dir; the shared one is stopped at process exit
/// (atexit). If the process is killed instead, a watchdog child does the same.
pub struct PgServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    /// Stops the cluster and removes `dir` when its stdin closes, even if this process is killed.
    watchdog: Option<std::process::Child>,
}

static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    // Unwinding out of an atexit handler would abort; a failed cleanup must not fail the run.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(server)) = SHARED.get() {
            server.shutdown_quietly();
            let _ = std::fs::remove_dir_all(server.dir.path());
        }
    });
}

impl PgServer {
    /// One server for the whole test binary, started on first use and stopped (`immediate`) when
    /// the process exits. Isolate tests by `unique_name`d objects; never stop this one (use
    /// `PgServer::start()` for fault tests). If startup failed, every caller panics with why.
    pub fn shared() -> &'static PgServer {
        let result = SHARED.get_or_init(|| {
            let started = std::panic::catch_unwind(PgServer::start).map_err(|payload| {
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string())
            });
            if started.is_ok() {
                // SAFETY: registering a plain extern "C" fn with no captured state.
                unsafe { libc::atexit(stop_shared_at_exit) };
            }
            started
        });
        match result {
            Ok(server) => server,
            Err(why) => panic!("shared PostgreSQL failed to start: {why}"),
        }
    }

    /// Starts a private server (blocking, ~1-3 s): initdb into a fresh temp dir, config and hba,
    /// `pg_ctl start` on a free 127.0.0.1 port (retrying on a port race), then the test roles and
    /// databases. Panics with the server log's tail on any failure.
    pub fn start() -> PgServer {
        static REAP: Once = Once::new();
        let bindir = find_bindir();
        // SAFETY: geteuid has no preconditions. Postgres refuses to run as root.
        let as_postgres_user = unsafe { libc::geteuid() } == 0;
        let base = temp_base(as_postgres_user);
        REAP.call_once(|| reap_stale_servers(&base, &bindir, as_postgres_user));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("create temp dir in {}: {e}", base.display()));
        if as_postgres_user {
            let (uid, gid) = postgres_os_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", dir.path().display()));
        }
        let watchdog = spawn_watchdog(&bindir, dir.path(), as_postgres_user)
            .unwrap_or_else(|e| panic!("spawn watchdog shell (sh): {e}"));
        let mut server = PgServer {
            dir,
            bindir,
            port: free_port(),
            as_postgres_user,
            watchdog: Some(watchdog),
        };
        server.init_cluster();
        server.start_on_free_port();
        server.create_roles_and_databases();
        server
    }

    /// TCP port Postgres listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    /// Directory holding the unix socket `.s.PGSQL.<port>` (the temp dir itself).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// The server log (stderr of postgres, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }
    /// Directory of initdb/pg_ctl/postgres/psql in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
    /// `postgres://user[:password]@127.0.0.1:port/db` (names and passwords here need no escaping).
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let auth = match password {
            Some(pw) => format!("{user}:{pw}"),
            None => user.to_string(),
        };
        format!("postgres://{auth}@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server with `pg_ctl stop -m <mode>` (`smart`, `fast` or `immediate`) and waits
    /// until it has exited. Panics if it was not running.
    pub fn stop(&self, mode: &str) {
        assert!(
            matches!(mode, "smart" | "fast" | "immediate"),
            "stop mode must be smart, fast or immediate, got {mode:?}"
        );
        let data = self.data_dir();
        let mut cmd = self.pg_tool("pg_ctl");
        cmd.arg("-D").arg(&data);
        cmd.args(["-m", mode, "-w", "-t", PG_CTL_TIMEOUT_SECS, "-s", "stop"]);
        if let Err(e) = run(&mut cmd) {
            panic!(
                "pg_ctl stop -m {mode} failed: {e}\n--- log tail ---\n{}",
                self.log_tail()
            );
        }
    }

    /// Starts a stopped (or killed) server again on the same port and data dir, waiting until it
    /// accepts connections. Panics (with the log tail) if it does not come up.
    pub fn start_again(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!(
                "pg_ctl start failed: {e}\n--- log tail ---\n{}",
                self.log_tail()
            );
        }
    }

    /// SIGKILLs the postmaster (pid from `postmaster.pid`), then waits until it and the children
    /// it had are gone, so that `start_again` can run crash recovery at once.
    pub fn kill_postmaster(&self) {
        let pid = self
            .postmaster_pid()
            .expect("kill_postmaster: server is not running");
        let children = child_pids(pid);
        // SAFETY: plain syscall on a pid we just read from postmaster.pid.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        wait_until_msg(
            Duration::from_secs(30),
            "killed postmaster and its children to exit",
            || !pid_alive(pid) && children.iter().all(|&c| !pid_alive(c)),
        );
        if proc_stat(pid).is_some() {
            // A zombie (our init does not reap) still passes kill(pid, 0), so the next postmaster
            // would refuse the lock file: do what it would do for a dead owner.
            self.remove_stale_lock_file();
        }
    }

    /// Removes `postmaster.pid`, its SysV shared memory segment (line 7: `key shmid`) and the
    /// socket lock file, as a new postmaster does when their owner is dead. Only when it is dead.
    fn remove_stale_lock_file(&self) {
        let lock = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        let shmid = text
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
        if let Some(shmid) = shmid {
            // SAFETY: IPC_RMID on a segment no process is attached to any more; no buffer passed.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        std::fs::remove_file(&lock)
            .unwrap_or_else(|e| panic!("remove stale {}: {e}", lock.display()));
        // The unix socket has its own lock file naming the same pid.
        let socket = self.dir.path().join(format!(".s.PGSQL.{}", self.port));
        let _ = std::fs::remove_file(socket.with_extension(format!("{}.lock", self.port)));
        let _ = std::fs::remove_file(socket);
    }

    /// Whether the postmaster named in `postmaster.pid` is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(pid_alive)
    }

    /// Pid on the first line of `postmaster.pid`, if the file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs `sql` as superuser in database `postgres` over the unix socket
    /// (`psql -X -A -t -v ON_ERROR_STOP=1`) and returns its output, trailing newline removed.
    /// Panics with psql's stderr on error. One `-c`: several statements run as one transaction,
    /// so send CREATE DATABASE alone.
    pub fn admin_sql(&self, sql: &str) -> String {
        self.admin_sql_in("postgres", sql)
    }

    /// `admin_sql` in database `db`.
    pub fn admin_sql_in(&self, db: &str, sql: &str) -> String {
        self.try_admin_sql_in(db, sql)
            .unwrap_or_else(|e| panic!("admin SQL failed in db {db}: {sql}\n{e}"))
    }

    /// `admin_sql_in` returning psql's error text instead of panicking.
    pub fn try_admin_sql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.bindir.join("psql"));
        strip_pg_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"]);
        cmd.arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string());
        cmd.args(["-U", SUPERUSER, "-d", db, "-c", sql]);
        run(&mut cmd).map(|out| out.trim_end_matches('\n').to_string())
    }

    /// Connects straight to Postgres over TCP (no TLS) and spawns the connection task on the
    /// current tokio runtime. Panics if the login fails.
    pub async fn connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> tokio_postgres::Client {
        self.try_connect(user, password, db)
            .await
            .unwrap_or_else(|e| panic!("connect as {user} to {db} on {}: {e}", self.addr()))
    }

    /// `connect` returning the login error (e.g. to check its SQLSTATE).
    pub async fn try_connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db);
        config.connect_timeout(Duration::from_secs(10));
        if let Some(pw) = password {
            config.password(pw);
        }
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // The test decides what a dropped connection means; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates a fresh database `unique_name(prefix)` owned by `SCRAM_USER` with the same grants
    /// as `APP_DB`, and returns its name.
    pub fn create_database(&self, prefix: &str) -> String {
        let name = super::util::unique_name(prefix);
        self.create_granted_database(&name);
        name
    }

    /// Creates a LOGIN role `unique_name(prefix)` with `password` stored as SCRAM (so it logs in
    /// over TCP with scram-sha-256), allowed to connect and create in `APP_DB` and `APP2_DB`.
    pub fn create_role(&self, prefix: &str, password: &str) -> String {
        let name = super::util::unique_name(prefix);
        self.admin_sql(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"));
        for db in [APP_DB, APP2_DB] {
            self.admin_sql(&format!("GRANT ALL ON DATABASE {db} TO {name}"));
            self.admin_sql_in(db, &format!("GRANT ALL ON SCHEMA public TO {name}"));
        }
        name
    }

    /// Turns TLS on: writes `cert_pem`/`key_pem` (and `ca_pem`, which makes Postgres ask for
    /// client certificates it can check) into the data dir, sets `ssl = on`, puts `hba_lines`
    /// before the harness's rules, reloads, and waits until new sessions see `ssl = on`.
    pub fn enable_ssl(&self, cert_pem: &str, key_pem: &str, ca_pem: Option<&str>, hba_lines: &str) {
        let data = self.data_dir();
        let mut files = vec![("server.crt", cert_pem), ("server.key", key_pem)];
        let mut conf =
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_string();
        if let Some(ca) = ca_pem {
            files.push(("root.crt", ca));
            conf.push_str("ssl_ca_file = 'root.crt'\n");
        }
        for (name, text) in files {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
            if self.as_postgres_user {
                let (uid, gid) = postgres_os_user();
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), format!("{hba_lines}\n{HBA}"))
            .expect("write pg_hba.conf");
        self.admin_sql("SELECT pg_reload_conf()");
        wait_until_msg(Duration::from_secs(30), "ssl = on after reload", || {
            self.try_admin_sql_in("postgres", "SHOW ssl")
                .is_ok_and(|v| v == "on")
        });
    }

    /// Number of client backends (server connections, as a pooler sees them) of `user` on `db`,
    /// from `pg_stat_activity`. Pair with `wait_until` to await a pool growing or shrinking.
    pub fn backend_count(&self, user: &str, db: &str) -> usize {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND usename = '{user}' AND datname = '{db}'"
        );
        let out = self.admin_sql(&sql);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("count from {sql:?} = {out:?}: {e}"))
    }

    fn create_granted_database(&self, name: &str) {
        let roles = TEST_USERS.map(|(user, _)| user).join(", ");
        self.admin_sql(&format!("CREATE DATABASE {name} OWNER {SCRAM_USER}"));
        self.admin_sql(&format!("GRANT ALL ON DATABASE {name} TO {roles}"));
        self.admin_sql_in(name, &format!("GRANT ALL ON SCHEMA public TO {roles}"));
    }

    fn init_cluster(&self) {
        let mut cmd = self.pg_tool("initdb");
        cmd.arg("-D").arg(self.data_dir());
        cmd.args([
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]);
        cmd.args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]);
        if let Err(e) = run(&mut cmd) {
            panic!("initdb failed: {e}");
        }
        let overrides = format!(
            "\n# pgfunnel test harness\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nmax_connections = 300\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 128MB\n\
             logging_collector = off\nlog_connections = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\npassword_encryption = 'scram-sha-256'\n\
             wal_level = logical\nmax_wal_senders = 20\nmax_replication_slots = 20\n",
            self.port,
            self.dir.path().display()
        );
        append(&self.data_dir().join("postgresql.conf"), &overrides);
        // Truncating keeps the file's owner (postgres) and mode.
        std::fs::write(self.data_dir().join("pg_hba.conf"), HBA).expect("write pg_hba.conf");
    }

    fn start_on_free_port(&mut self) {
        for attempt in 1..=5 {
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(e) if attempt < 5 && self.log_tail().contains("Address already in use") => {
                    // Someone took the port between free_port() and bind: later lines win.
                    let port = free_port();
                    append(
                        &self.data_dir().join("postgresql.conf"),
                        &format!("port = {port}\n"),
                    );
                    self.port = port;
                    eprintln!("postgres port race ({e}); retrying on {port}");
                }
                Err(e) => panic!(
                    "pg_ctl start failed: {e}\n--- log tail ---\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut cmd = self.pg_tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path());
        cmd.args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-s", "start"]);
        run(&mut cmd).map(|_| ())
    }

    fn create_roles_and_databases(&self) {
        self.admin_sql(&format!(
            "CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'"
        ));
        self.admin_sql(&format!(
            "SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}'"
        ));
        self.admin_sql(&format!(
            "CREATE ROLE {PLAIN_USER} LOGIN PASSWORD '{PLAIN_PASSWORD}'"
        ));
        self.admin_sql(&format!("CREATE ROLE {TRUST_USER} LOGIN"));
        self.create_granted_database(APP_DB);
        self.create_granted_database(APP2_DB);
    }

    /// Best-effort `pg_ctl stop -m immediate` for cleanup paths; never panics.
    fn shutdown_quietly(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            stop_cluster_quietly(&self.bindir, &self.data_dir(), self.as_postgres_user);
        }
    }

    fn log_tail(&self) -> String {
        tail_file(&self.log_path(), 4000)
    }

    /// A command for a server tool, run as the postgres OS user when we are root.
    fn pg_tool(&self, tool: &str) -> Command {
        pg_tool_command(&self.bindir, tool, self.as_postgres_user, self.dir.path())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown_quietly();
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}
