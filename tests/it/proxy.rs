//! Starts pgfunnel in-process for a test: writes the ini (and auth_file) into a temp dir,
//! binds 127.0.0.1 on a free port, and offers connection helpers for tokio-postgres.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgfunnel::app::{self, Running};
use pgfunnel::config::Config;
use tokio_postgres::{Client, NoTls};

use crate::harness::PgServer;

/// A pgfunnel running inside the test process.
pub struct Proxy {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub unix_path: Option<PathBuf>,
}

/// Default [pgbouncer] lines of a test config; `extra` lines are appended and win.
pub fn ini(databases: &str, extra: &str) -> String {
    let overridden = |key: &str| {
        extra
            .lines()
            .any(|l| l.split('=').next().map(str::trim) == Some(key))
    };
    let mut text = format!("[databases]\n{databases}\n[pgbouncer]\n");
    for (k, v) in [
        ("listen_addr", "127.0.0.1"),
        ("listen_port", "6432"),
        ("unix_socket_dir", ""),
        ("auth_file", "userlist.txt"),
    ] {
        if !overridden(k) {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// An auth_file with every harness user (plain secrets) plus `extra` lines.
pub fn userlist(extra: &str) -> String {
    format!(
        "\"scram_user\" \"scram_pass\"\n\"md5_user\" \"md5_pass\"\n\"plain_user\" \"plain_pass\"\n\"trust_user\" \"\"\n{extra}"
    )
}

/// `[databases]` line for the shared Postgres: `name = host=127.0.0.1 port=N dbname=db <opts>`.
pub fn db_line(name: &str, db: &str, opts: &str) -> String {
    let pg = PgServer::shared();
    format!(
        "{name} = host=127.0.0.1 port={} dbname={db} {opts}",
        pg.port()
    )
}

impl Proxy {
    /// Starts pgfunnel with this ini text and auth_file text.
    pub async fn start(ini_text: &str, users: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let ini_path = dir.path().join("pgfunnel.ini");
        std::fs::write(&ini_path, ini_text).expect("write ini");
        std::fs::write(dir.path().join("userlist.txt"), users).expect("write userlist");
        let mut config =
            Config::load(&ini_path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        // TCP on an ephemeral port; a Unix socket needs a real port number in its name.
        config.settings.listen_port = if config.settings.unix_socket_dir.is_empty() {
            0
        } else {
            crate::harness::free_port()
        };
        let running = app::start(config).await.expect("pgfunnel starts");
        let addr = running.tcp_addrs[0];
        let unix_path = running.unix_path.clone();
        Proxy {
            running: Some(running),
            addr,
            dir,
            unix_path,
        }
    }

    /// Starts with the shared Postgres's `app` database as `app` (and `*` fallback off).
    pub async fn simple(opts: &str, extra: &str) -> Proxy {
        let text = ini(&db_line("app", "app", opts), extra);
        Proxy::start(&text, &userlist("")).await
    }

    /// libpq-style connection string to this proxy.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=20",
            self.addr.port()
        )
    }

    /// Connects with tokio-postgres; panics on failure.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> Client {
        self.try_connect(user, password, db)
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// Connects with tokio-postgres.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(user, password, db), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The port number in the Unix socket's name (`.s.PGSQL.<port>`), for libpq's `port=`.
    pub fn unix_port(&self) -> String {
        self.unix_path
            .as_ref()
            .and_then(|u| u.to_str())
            .and_then(|s| s.rsplit('.').next())
            .expect("a Unix socket")
            .to_owned()
    }

    /// Stops the proxy (clients are cut off).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.app.shutdown.cancel();
        }
    }
}

/// The SQLSTATE of a tokio-postgres error, or "" when it has none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// The server-side message of a tokio-postgres error, or its Display.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// A StartupMessage for protocol `version` (`3 << 16` is 3.0) with these parameters.
pub fn startup_message(params: &[(&str, &str)], version: i32) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend(body);
    p
}
