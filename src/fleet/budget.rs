//! Dividing one upstream budget (`fleet_max_db_connections`, `fleet_max_user_connections`)
//! among the live peers. The budget is dealt round-robin in peer-id order: with `n` members
//! the member ranked `r` gets `ceil((budget - r) / n)`, so shares differ by at most one and
//! sum to exactly the budget. Dealing is monotone: a member's share under any superset of
//! the true membership is never larger than under the truth, so instances whose views
//! still hold a departed peer (the grace period) or already hold a newcomer never exceed
//! the budget together. The remaining risk is a newcomer counted by itself before the
//! others see it and shrink; a newcomer therefore takes nothing for a few refresh periods
//! (`join_delay`). Connections already open above a shrunk share are closed as they go
//! idle, never in the middle of a transaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The share of `budget` for `me` among `members` (which should hold `me`; it is counted
/// either way). 0 budget = no fleet budget: returns 0, meaning "no limit" to the caller.
pub fn share(budget: u32, members: &[u16], me: u16) -> u32 {
    let mut ids: Vec<u16> = members.to_vec();
    ids.push(me);
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len() as u64;
    let rank = ids.iter().position(|&id| id == me).unwrap_or(0) as u64;
    let budget = u64::from(budget);
    if rank >= budget {
        return 0;
    }
    ((budget - rank).div_ceil(n)) as u32
}

/// Which peers count as live: seen within the grace period, plus this instance.
#[derive(Debug)]
pub struct Membership {
    me: u16,
    grace: Duration,
    join_delay: Duration,
    started: Instant,
    expect_peers: bool,
    last_seen: BTreeMap<u16, Instant>,
}

impl Membership {
    /// Membership of `me`, started `now`; a lost peer counts for `grace` after it was last
    /// seen, and `me` takes no share for `join_delay` while others are live, or at all
    /// when `expect_peers` (peers are configured but not probed yet).
    pub fn new(
        me: u16,
        grace: Duration,
        join_delay: Duration,
        now: Instant,
        expect_peers: bool,
    ) -> Membership {
        Membership {
            me,
            grace,
            join_delay,
            started: now,
            expect_peers,
            last_seen: BTreeMap::new(),
        }
    }

    /// Records that peer `id` answered at `now`.
    pub fn saw(&mut self, id: u16, now: Instant) {
        if id != self.me {
            self.last_seen.insert(id, now);
        }
    }

    /// Changes the grace period (RELOAD).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Live members at `now` (sorted, with `me`); peers past the grace are forgotten.
    pub fn members(&mut self, now: Instant) -> Vec<u16> {
        let grace = self.grace;
        self.last_seen
            .retain(|_, seen| now.saturating_duration_since(*seen) <= grace);
        let mut ids: Vec<u16> = self.last_seen.keys().copied().collect();
        ids.push(self.me);
        ids.sort_unstable();
        ids
    }

    /// True while this instance waits for the others to see it (it takes no share).
    pub fn joining(&mut self, now: Instant) -> bool {
        let early = now.saturating_duration_since(self.started) < self.join_delay;
        early && (self.expect_peers || self.members(now).len() > 1)
    }

    /// This instance's share of `budget` at `now`: 0 while it is still joining a fleet
    /// that has other live members.
    pub fn my_share(&mut self, budget: u32, now: Instant) -> u32 {
        if self.joining(now) {
            return 0;
        }
        share(budget, &self.members(now), self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_for_a_table_of_budgets_and_fleets() {
        // (budget, members, expected shares in member order)
        let table: &[(u32, &[u16], &[u32])] = &[
            (100, &[1], &[100]),
            (100, &[1, 2], &[50, 50]),
            (100, &[1, 2, 3], &[34, 33, 33]),
            (10, &[5, 9, 200, 16383], &[3, 3, 2, 2]),
            (5, &[1, 2, 3], &[2, 2, 1]),
            (2, &[1, 2, 3], &[1, 1, 0]),
            (1, &[4, 2], &[0, 1]),
            (0, &[1, 2], &[0, 0]),
            (7, &[3, 1, 2], &[2, 3, 2]),
        ];
        for (budget, members, expected) in table {
            let got: Vec<u32> = members
                .iter()
                .map(|&m| share(*budget, members, m))
                .collect();
            assert_eq!(&got, expected, "budget {budget} among {members:?}");
            assert_eq!(got.iter().sum::<u32>(), *budget, "shares sum to the budget");
        }
    }

    #[test]
    fn any_superset_view_never_gives_more_than_the_true_view() {
        let truth: &[u16] = &[2, 5, 9];
        for budget in 0..40u32 {
            for extra in [1u16, 3, 7, 12] {
                let mut view = truth.to_vec();
                view.push(extra);
                for &m in truth {
                    assert!(
                        share(budget, &view, m) <= share(budget, truth, m),
                        "budget {budget}, peer {m}, extra {extra}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_lost_peer_keeps_its_share_until_the_grace_ends() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut m = Membership::new(1, grace, Duration::ZERO, t0, true);
        m.saw(2, t0);
        m.saw(3, t0);
        assert_eq!(m.my_share(90, t0), 30);
        // Peer 3 stops answering; 2 keeps answering.
        let t1 = t0 + Duration::from_secs(20);
        m.saw(2, t1);
        assert_eq!(m.my_share(90, t1), 30, "within the grace: 3 still counted");
        let t2 = t0 + Duration::from_secs(31);
        m.saw(2, t2);
        assert_eq!(m.members(t2), vec![1, 2]);
        assert_eq!(
            m.my_share(90, t2),
            45,
            "after the grace: 3's share reclaimed"
        );
    }

    #[test]
    fn a_newcomer_takes_nothing_until_the_others_can_have_seen_it() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(5);
        let mut alone = Membership::new(4, Duration::from_secs(30), delay, t0, false);
        assert_eq!(alone.my_share(10, t0), 10, "alone: no one to wait for");
        let mut expecting = Membership::new(4, Duration::from_secs(30), delay, t0, true);
        assert_eq!(
            expecting.my_share(10, t0),
            0,
            "peers configured: wait for them"
        );
        let mut m = Membership::new(4, Duration::from_secs(30), delay, t0, false);
        m.saw(1, t0);
        assert_eq!(m.my_share(10, t0), 0);
        assert_eq!(m.my_share(10, t0 + delay), 5);
    }
}
