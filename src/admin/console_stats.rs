//! The console's own counters: its logins and commands, reported under the database
//! `pgbouncer` in SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS as PgBouncer
//! reports its admin pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::pool::StatsTotals;

/// Logins and commands of console clients, with the stats_period snapshots averages use.
#[derive(Debug, Default)]
pub struct ConsoleStats {
    logins: AtomicU64,
    commands: AtomicU64,
    snapshots: Mutex<(StatsTotals, StatsTotals)>,
}

impl ConsoleStats {
    /// Counts a console login.
    pub fn logged_in(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a console command (one query, its own transaction).
    pub fn command(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// The cumulative figures now.
    pub fn totals(&self) -> StatsTotals {
        let commands = self.commands.load(Ordering::Relaxed);
        StatsTotals {
            xact_count: commands,
            query_count: commands,
            client_login_count: self.logins.load(Ordering::Relaxed),
            ..StatsTotals::default()
        }
    }

    /// Moves the stats_period window, as the pools' counters do.
    pub fn rotate(&self) {
        let now = self.totals();
        let mut s = crate::panic::lock(&self.snapshots);
        s.0 = s.1;
        s.1 = now;
    }

    /// The snapshot taken one stats_period ago.
    pub fn older(&self) -> StatsTotals {
        crate::panic::lock(&self.snapshots).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_and_commands_show_in_totals_and_rotate_into_older() {
        let s = ConsoleStats::default();
        s.logged_in();
        s.command();
        s.command();
        let t = s.totals();
        assert_eq!(
            (t.client_login_count, t.query_count, t.xact_count),
            (1, 2, 2)
        );
        assert_eq!(s.older(), StatsTotals::default());
        s.rotate();
        s.rotate();
        assert_eq!(s.older(), t);
    }
}
