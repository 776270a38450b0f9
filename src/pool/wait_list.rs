//! The clients waiting for a slot of one pool, oldest first, for SHOW POOLS `maxwait`.
//! Waits start in token order and mostly end in that order too (the slot queue is FIFO),
//! so the list is a ring of `(token, start)` sorted by token: starting and ending a wait
//! at the head touch one entry and, once warm, allocate nothing.

use std::collections::VecDeque;
use std::time::Instant;

/// Starts of the waits in progress, by token.
#[derive(Debug, Default)]
pub struct WaitList {
    waits: VecDeque<(u64, Instant)>,
    next: u64,
}

impl WaitList {
    /// Records a wait that started at `at`; returns its token for [`WaitList::end`].
    pub fn start(&mut self, at: Instant) -> u64 {
        let token = self.next;
        self.next += 1;
        self.waits.push_back((token, at));
        token
    }

    /// Forgets the wait of `token` (got its slot, timed out or was abandoned).
    pub fn end(&mut self, token: u64) {
        if self.waits.front().is_some_and(|w| w.0 == token) {
            self.waits.pop_front();
        } else if let Ok(i) = self.waits.binary_search_by_key(&token, |w| w.0) {
            self.waits.remove(i);
        }
    }

    /// When the oldest wait in progress started.
    pub fn oldest(&self) -> Option<Instant> {
        self.waits.front().map(|w| w.1)
    }

    /// Number of waits in progress.
    pub fn len(&self) -> usize {
        self.waits.len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn oldest_wait_is_the_first_still_in_progress_whatever_order_they_end() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut list = WaitList::default();
        assert_eq!(list.oldest(), None);
        let a = list.start(at(0));
        let b = list.start(at(1));
        let c = list.start(at(2));
        list.end(b); // from the middle: a timeout or an abandoned wait
        assert_eq!((list.oldest(), list.len()), (Some(at(0)), 2));
        list.end(a);
        assert_eq!(list.oldest(), Some(at(2)));
        list.end(a); // twice: nothing more happens
        assert_eq!(list.len(), 1);
        let d = list.start(at(3));
        list.end(c);
        assert_eq!(list.oldest(), Some(at(3)));
        list.end(d);
        assert!(list.is_empty());
        assert_eq!(list.oldest(), None);
    }
}
