//! Operator control of a running pgfunnel: PAUSE/RESUME, ENABLE/DISABLE, RECONNECT,
//! KILL/KILL_CLIENT, WAIT_CLOSE, RELOAD and SET. Shared by the admin console and the signal
//! handlers; no protocol code here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tracing::info;

use crate::app::App;
use crate::config::{ConfigError, Expected};
use crate::pool::Pool;

/// Names the admin console answers to; they are never pooled databases.
pub const CONSOLE_DATABASES: [&str; 2] = ["pgbouncer", "pgfunnel"];

/// Whether `db` names the admin console.
pub fn is_console(db: &str) -> bool {
    CONSOLE_DATABASES.contains(&db)
}

/// Why a control command was refused.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The database is neither configured nor has a pool.
    #[error("no such database: {0}")]
    NoDatabase(String),
    /// The command cannot target the admin console.
    #[error("cannot {action} admin db: {db}")]
    ConsoleDatabase {
        /// The command word.
        action: &'static str,
        /// The console name given.
        db: String,
    },
    /// PAUSE while already paused.
    #[error("already suspended/paused")]
    AlreadyPaused,
    /// RESUME while not paused.
    #[error("pooler is not paused/suspended")]
    NotPaused,
    /// RESUME db for a database that is not paused.
    #[error("database {0} is not paused")]
    DatabaseNotPaused(String),
    /// KILL_CLIENT with an id no client has.
    #[error("client not found")]
    NoClient,
    /// RESUME during shutdown.
    #[error("pooler is shutting down")]
    ShuttingDown,
    /// RELOAD in URL mode.
    #[error("RELOAD needs a config file (pgfunnel runs in URL mode)")]
    NoConfigFile,
    /// The new config file is invalid; the old config stays.
    #[error("RELOAD failed: {0}")]
    Config(#[from] Box<ConfigError>),
    /// The auth_file could not be read; the old config stays.
    #[error("RELOAD failed: {0:#}")]
    Users(anyhow::Error),
    /// SET of a key PgBouncer does not know.
    #[error("unknown config key: {0}")]
    UnknownKey(String),
    /// SET of a key that needs a restart.
    #[error("{0} cannot be changed at run time")]
    NotChangeable(&'static str),
    /// SET of a TLS setting that leaves TLS unusable (a missing or mismatched file, ...).
    #[error("SET {key} failed, TLS setup unchanged: {source}")]
    Tls {
        /// The key.
        key: &'static str,
        /// Why the new setup could not be built.
        source: crate::net::tls::TlsError,
    },
    /// SET of auth_hba_file / auth_type naming rules that cannot be loaded.
    #[error("SET {key} failed, HBA rules unchanged: {source}")]
    Hba {
        /// The key.
        key: &'static str,
        /// Why the rules could not be loaded.
        source: crate::auth::HbaError,
    },
    /// SET with a value the key does not accept.
    #[error("bad value for {key}: {expected}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What it accepts.
        expected: Expected,
    },
}

#[derive(Debug, Default)]
struct Flags {
    paused_all: bool,
    paused: HashSet<String>,
    disabled: HashSet<String>,
}

/// Which databases are paused or disabled, and the console's own counters.
#[derive(Debug, Default)]
pub struct ControlState {
    flags: Mutex<Flags>,
    /// Console logins and commands (SHOW STATS row `pgbouncer`).
    pub console: crate::admin::console_stats::ConsoleStats,
}

impl ControlState {
    /// Whether checkouts for `db` are held (pgfunnel or the database paused).
    pub fn is_paused(&self, db: &str) -> bool {
        let f = self.flags.lock().expect("control lock poisoned");
        f.paused_all || f.paused.contains(db)
    }

    /// Whether pgfunnel as a whole is paused (SHOW STATE).
    pub fn is_paused_all(&self) -> bool {
        self.flags.lock().expect("control lock poisoned").paused_all
    }

    /// Whether `db` refuses new clients (DISABLE).
    pub fn is_disabled(&self, db: &str) -> bool {
        let f = self.flags.lock().expect("control lock poisoned");
        f.disabled.contains(db)
    }
}

impl App {
    fn pools_of(&self, db: Option<&str>) -> Vec<Arc<Pool>> {
        self.pools
            .iter()
            .filter(|p| db.is_none_or(|d| p.key.database == d))
            .map(|p| p.clone())
            .collect()
    }

    /// Checks that `db` can be the target of `action`.
    fn check_db(&self, action: &'static str, db: &str) -> Result<(), ControlError> {
        if is_console(db) {
            return Err(ControlError::ConsoleDatabase {
                action,
                db: db.to_owned(),
            });
        }
        let known = self.config().database(db).is_some() || !self.pools_of(Some(db)).is_empty();
        if known {
            Ok(())
        } else {
            Err(ControlError::NoDatabase(db.to_owned()))
        }
    }

    /// PAUSE [db]: new transactions wait; returns once every lent server came back, then
    /// closes the idle ones (as PgBouncer). Cancel safe (the pause stays in force).
    pub async fn pause(&self, db: Option<&str>) -> Result<(), ControlError> {
        if let Some(d) = db {
            self.check_db("pause", d)?;
        }
        {
            let mut f = self.control.flags.lock().expect("control lock poisoned");
            if f.paused_all || db.is_some_and(|d| f.paused.contains(d)) {
                return Err(ControlError::AlreadyPaused);
            }
            match db {
                Some(d) => f.paused.insert(d.to_owned()),
                None => std::mem::replace(&mut f.paused_all, true),
            };
        }
        info!(db = db.unwrap_or("*"), "pause");
        let pools = self.pools_of(db);
        for p in &pools {
            p.gate.set_paused(true);
        }
        for p in &pools {
            p.stats.wait_all_returned().await;
            p.close_idle();
        }
        Ok(())
    }

    /// RESUME [db]: opens the gates PAUSE closed.
    pub fn resume(&self, db: Option<&str>) -> Result<(), ControlError> {
        if self.stopping.requested().is_some() {
            return Err(ControlError::ShuttingDown);
        }
        {
            let mut f = self.control.flags.lock().expect("control lock poisoned");
            match db {
                Some(d) => {
                    if !f.paused.remove(d) {
                        return Err(ControlError::DatabaseNotPaused(d.to_owned()));
                    }
                }
                None if !f.paused_all && f.paused.is_empty() => {
                    return Err(ControlError::NotPaused)
                }
                None => {
                    f.paused_all = false;
                    f.paused.clear();
                }
            }
        }
        info!(db = db.unwrap_or("*"), "resume");
        for p in self.pools_of(None) {
            p.gate.set_paused(self.control.is_paused(&p.key.database));
        }
        Ok(())
    }

    /// RECONNECT [db]: closes idle servers now and lent ones when they come back.
    pub fn reconnect(&self, db: Option<&str>) -> Result<(), ControlError> {
        if let Some(d) = db {
            self.check_db("reconnect", d)?;
        }
        for p in self.pools_of(db) {
            p.reconnect();
        }
        Ok(())
    }

    /// KILL [db]: ends the database's clients (all pooled clients without db) and closes
    /// its idle servers; lent servers close with their clients.
    pub fn kill(&self, db: Option<&str>) -> Result<usize, ControlError> {
        if let Some(d) = db {
            self.check_db("kill", d)?;
        }
        let n = self.clients.kill_where(|e| {
            e.identity()
                .is_some_and(|i| !is_console(&i.database) && db.is_none_or(|d| i.database == d))
        });
        for p in self.pools_of(db) {
            p.reconnect();
        }
        info!(db = db.unwrap_or("*"), clients = n, "kill");
        Ok(n)
    }

    /// KILL_CLIENT id: ends that one client.
    pub fn kill_client(&self, id: u64) -> Result<(), ControlError> {
        let entry = self.clients.get(id).ok_or(ControlError::NoClient)?;
        entry.kill();
        info!(client = id, "kill_client");
        Ok(())
    }

    /// DISABLE db (`true`) / ENABLE db (`false`): whether new clients are refused.
    pub fn set_disabled(&self, db: &str, disabled: bool) -> Result<(), ControlError> {
        self.check_db(if disabled { "disable" } else { "enable" }, db)?;
        let mut f = self.control.flags.lock().expect("control lock poisoned");
        if disabled {
            f.disabled.insert(db.to_owned());
        } else {
            f.disabled.remove(db);
        }
        Ok(())
    }

    /// WAIT_CLOSE [db]: returns once no server marked by RECONNECT (or a reload) is still lent.
    pub async fn wait_close(&self, db: Option<&str>) -> Result<(), ControlError> {
        if let Some(d) = db {
            self.check_db("wait_close", d)?;
        }
        for p in self.pools_of(db) {
            p.wait_marked_returned().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_names() {
        assert!(is_console("pgbouncer") && is_console("pgfunnel"));
        assert!(!is_console("app"));
    }

    #[test]
    fn state_flags() {
        let c = ControlState::default();
        c.flags.lock().expect("lock").paused.insert("a".into());
        assert!(c.is_paused("a") && !c.is_paused("b") && !c.is_paused_all());
        c.flags.lock().expect("lock").disabled.insert("b".into());
        assert!(c.is_disabled("b"));
    }
}
