//! Timeouts of a linked client (query_timeout, idle_transaction_timeout,
//! transaction_timeout) computed as exact deadlines from the relay's clock, so they fire
//! within milliseconds instead of on a 333 ms janitor tick as in PgBouncer.

use std::time::{Duration, Instant};

use super::relay::LinkClock;
use super::tracker::Tracker;

/// The timeouts that apply to one client (0 = off).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkTimeouts {
    /// Close a client idle (no server) longer than this.
    pub client_idle: Duration,
    /// Cancel a query running longer than this.
    pub query: Duration,
    /// Close a client idle inside a transaction longer than this.
    pub idle_transaction: Duration,
    /// Close a client whose transaction is open longer than this.
    pub transaction: Duration,
}

/// Which timeout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// query_timeout.
    Query,
    /// idle_transaction_timeout.
    IdleTransaction,
    /// transaction_timeout.
    Transaction,
}

impl LinkTimeouts {
    /// True when any timeout that watches a linked client is set.
    pub fn any_linked(&self) -> bool {
        !(self.query.is_zero() && self.idle_transaction.is_zero() && self.transaction.is_zero())
    }

    fn deadlines(&self, clock: &LinkClock, tracker: &Tracker) -> [(Option<Instant>, Expired); 3] {
        let after =
            |since: Option<Instant>, d: Duration| since.filter(|_| !d.is_zero()).map(|s| s + d);
        let in_txn = tracker.status() != b'I';
        let idle_in_txn = in_txn && tracker.nothing_outstanding();
        [
            (after(clock.busy_since, self.query), Expired::Query),
            (
                after(
                    Some(clock.last_activity).filter(|_| idle_in_txn),
                    self.idle_transaction,
                ),
                Expired::IdleTransaction,
            ),
            (
                after(clock.txn_since.filter(|_| in_txn), self.transaction),
                Expired::Transaction,
            ),
        ]
    }

    /// The earliest moment a timeout could fire in the current state, if any.
    pub fn next_deadline(&self, clock: &LinkClock, tracker: &Tracker) -> Option<Instant> {
        self.deadlines(clock, tracker)
            .iter()
            .filter_map(|(d, _)| *d)
            .min()
    }

    /// The timeout that has passed now, if any (transaction limits before query limits).
    pub fn expired(&self, clock: &LinkClock, tracker: &Tracker) -> Option<Expired> {
        let now = Instant::now();
        let mut passed: Vec<Expired> = self
            .deadlines(clock, tracker)
            .iter()
            .filter(|(d, _)| d.is_some_and(|d| d <= now))
            .map(|(_, e)| *e)
            .collect();
        passed.sort_by_key(|e| match e {
            Expired::Transaction => 0,
            Expired::IdleTransaction => 1,
            Expired::Query => 2,
        });
        passed.first().copied()
    }
}
