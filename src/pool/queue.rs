//! The slots of one pool (pool_size, reserve_pool), its idle connections and the clients
//! queued for a slot, under one lock. A slot coming back goes straight to the oldest
//! waiting client, with the connection when one comes back with it (checkin); only
//! without a waiter does the connection go to the idle list and the slot become free.
//! One deadline task per pool (spawned when a client first queues with a deadline) wakes
//! at the oldest waiter's next due time for query_wait_notify, reserve_pool_timeout and
//! query_wait_timeout: a queued checkout arms no timer of its own.
//!
//! Generic over the connection type so the hand-off rules are tested without servers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A pool_size (or reserve_pool) slot held by a connection on loan or being opened.
/// Dropping it frees the slot: the oldest waiting client gets it at once.
pub struct Slot<T: Send + 'static> {
    queue: Option<Arc<SlotQueue<T>>>,
    reserve: bool,
}

impl<T: Send + 'static> Slot<T> {
    fn new(queue: &Arc<SlotQueue<T>>, reserve: bool) -> Self {
        Slot {
            queue: Some(queue.clone()),
            reserve,
        }
    }

    /// Whether this is a reserve_pool slot.
    pub fn is_reserve(&self) -> bool {
        self.reserve
    }

    /// Forgets the slot without freeing it (the caller accounts for it under the lock).
    fn disarm(mut self) -> bool {
        self.queue = None;
        self.reserve
    }
}

impl<T: Send + 'static> Drop for Slot<T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.put_back(self.reserve, None);
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("reserve", &self.reserve)
            .finish()
    }
}

/// A slot and, when one came with it, an idle connection.
pub type Grant<T> = (Slot<T>, Option<T>);

/// When a queued checkout's events fall due (None: never).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plan {
    /// query_wait_notify.
    pub notice_at: Option<Instant>,
    /// reserve_pool_timeout (only with a reserve pool).
    pub reserve_at: Option<Instant>,
    /// query_wait_timeout.
    pub deadline: Option<Instant>,
}

impl Plan {
    fn next(&self) -> Option<Instant> {
        [self.notice_at, self.reserve_at, self.deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What a queued checkout learns.
pub enum Event<T: Send + 'static> {
    /// query_wait_notify is due (once); keep waiting.
    Notice,
    /// A slot (and maybe a connection) is ours.
    Granted(Grant<T>),
    /// query_wait_timeout passed.
    TimedOut,
    /// Look around: pgfunnel may be stopping ([`SlotQueue::interrupt_all`]); the place in
    /// the queue is kept.
    Interrupted,
}

/// The slots, idle connections and queue of one pool.
pub struct SlotQueue<T: Send + 'static> {
    state: Mutex<State<T>>,
    wake_timer: Arc<Notify>,
}

struct State<T: Send + 'static> {
    idle: Vec<T>,
    /// pool_size slots nobody holds. Invariant: when > 0, nobody waits.
    free: usize,
    /// Slots still to retire as they come back (pool_size shrunk while they were held).
    owed: usize,
    reserve_free: usize,
    waiters: VecDeque<Entry<T>>,
    /// When the deadline task looks next (None: it sleeps until woken).
    armed: Option<Instant>,
    timer_started: bool,
}

struct Entry<T: Send + 'static> {
    ticket: Arc<Ticket<T>>,
    plan: Plan,
    reserve_ok: bool,
}

impl<T: Send + 'static> SlotQueue<T> {
    /// A queue with `size` slots and `reserve` reserve slots.
    pub fn new(size: usize, reserve: usize) -> Arc<Self> {
        Arc::new(SlotQueue {
            state: Mutex::new(State {
                idle: Vec::new(),
                free: size,
                owed: 0,
                reserve_free: reserve,
                waiters: VecDeque::new(),
                armed: None,
                timer_started: false,
            }),
            wake_timer: Arc::new(Notify::new()),
        })
    }

    /// A free slot and the idle connection to reuse (the last returned one, or with
    /// `oldest_first` the one idle longest), or a place at the back of the queue, its
    /// deadlines from `plan` (called only then, under the lock).
    pub fn take_or_queue(
        self: &Arc<Self>,
        oldest_first: bool,
        plan: impl FnOnce() -> Plan,
    ) -> Result<Grant<T>, Waiting<T>> {
        let mut st = crate::panic::lock(&self.state);
        if st.free > 0 {
            st.free -= 1;
            let conn = st.take_idle(oldest_first);
            return Ok((Slot::new(self, false), conn));
        }
        let ticket = Arc::new(Ticket::default());
        let plan = plan();
        let due = plan.next();
        st.waiters.push_back(Entry {
            ticket: ticket.clone(),
            plan,
            reserve_ok: false,
        });
        if let Some(due) = due {
            if !st.timer_started {
                st.timer_started = true;
                let (queue, wake) = (Arc::downgrade(self), self.wake_timer.clone());
                tokio::spawn(run_deadlines(queue, wake));
            }
            if st.armed.is_none_or(|a| due < a) {
                self.wake_timer.notify_one();
            }
        }
        Err(Waiting::new(ticket, self.clone()))
    }

    /// A free slot only when nobody waits for it (min_pool_size filling).
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot<T>> {
        let mut st = crate::panic::lock(&self.state);
        (st.free > 0).then(|| {
            st.free -= 1;
            Slot::new(self, false)
        })
    }

    /// Returns a slot (`reserve` or not) with `conn` when a connection comes back with it:
    /// both go to the oldest waiting client; without one the connection is idle again.
    pub fn checkin(self: &Arc<Self>, slot: Slot<T>, conn: Option<T>) {
        self.put_back(slot.disarm(), conn);
    }

    fn put_back(self: &Arc<Self>, reserve: bool, conn: Option<T>) {
        let waker = {
            let mut st = crate::panic::lock(&self.state);
            self.pass(&mut st, reserve, conn)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Hands a freed slot (and `conn`) to the head of the queue; a reserve slot only to a
    /// head past reserve_pool_timeout. Waiters that gave up are skipped and dropped.
    fn pass(
        self: &Arc<Self>,
        st: &mut State<T>,
        reserve: bool,
        mut conn: Option<T>,
    ) -> Option<Waker> {
        if !reserve && st.owed > 0 {
            st.owed -= 1;
        } else {
            while st.waiters.front().is_some_and(|h| !reserve || h.reserve_ok) {
                let Some(head) = st.waiters.pop_front() else {
                    break;
                };
                let slot = Slot::new(self, reserve);
                match head.ticket.settle(Outcome::Granted((slot, conn.take()))) {
                    Ok(waker) => {
                        // The connection went with it.
                        return waker;
                    }
                    Err(Outcome::Granted((slot, back))) => {
                        slot.disarm();
                        conn = back;
                    }
                    Err(Outcome::TimedOut) => {}
                }
            }
            if reserve {
                st.reserve_free += 1;
            } else {
                st.free += 1;
            }
        }
        if let Some(c) = conn {
            st.idle.push(c);
        }
        None
    }

    /// pool_size changed from `old` to `new` (both > 0): new slots go to waiters first;
    /// a shrink takes free slots now and held ones as they come back.
    pub fn resize(self: &Arc<Self>, old: usize, new: usize) {
        let mut wakers = Vec::new();
        {
            let mut st = crate::panic::lock(&self.state);
            if new > old {
                for _ in old..new {
                    wakers.extend(self.pass(&mut st, false, None));
                }
            } else {
                let shrink = old - new;
                let now = shrink.min(st.free);
                st.free -= now;
                st.owed += shrink - now;
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Free pool_size slots right now.
    pub fn available(&self) -> usize {
        crate::panic::lock(&self.state).free
    }

    /// Runs `f` on the idle list (reaping, RECONNECT, SHOW SERVERS).
    pub fn with_idle<R>(&self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        f(&mut crate::panic::lock(&self.state).idle)
    }

    /// Takes the idle connection to reuse (see [`SlotQueue::take_or_queue`]).
    pub fn take_idle(&self, oldest_first: bool) -> Option<T> {
        crate::panic::lock(&self.state).take_idle(oldest_first)
    }

    /// Wakes every waiter with [`Event::Interrupted`] (a shutdown started).
    pub fn interrupt_all(&self) {
        let wakers: Vec<Waker> = {
            let st = crate::panic::lock(&self.state);
            st.waiters
                .iter()
                .filter_map(|e| e.ticket.interrupt())
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Wakes the waiters whose events are due at `now`: notices, reserve slots, timeouts.
    /// Returns when the next one falls due.
    fn fire(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut wakers = Vec::new();
        let mut st = crate::panic::lock(&self.state);
        let mut next: Option<Instant> = None;
        let mut waiters = std::mem::take(&mut st.waiters);
        waiters.retain_mut(|e| {
            if e.ticket.is_gone() {
                return false;
            }
            if e.plan.deadline.is_some_and(|d| d <= now) {
                wakers.extend(e.ticket.settle(Outcome::TimedOut).ok().flatten());
                return false;
            }
            if e.plan.notice_at.is_some_and(|t| t <= now) {
                e.plan.notice_at = None;
                wakers.extend(e.ticket.notice());
            }
            if e.plan.reserve_at.is_some_and(|t| t <= now) {
                e.plan.reserve_at = None;
                e.reserve_ok = true;
            }
            if e.reserve_ok && st.reserve_free > 0 {
                st.reserve_free -= 1;
                let slot = Slot::new(self, true);
                match e.ticket.settle(Outcome::Granted((slot, None))) {
                    Ok(w) => wakers.extend(w),
                    Err(Outcome::Granted((slot, _))) => {
                        slot.disarm();
                        st.reserve_free += 1;
                    }
                    Err(Outcome::TimedOut) => {}
                }
                return false;
            }
            next = [next, e.plan.next()].into_iter().flatten().min();
            true
        });
        st.waiters = waiters;
        st.armed = next;
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        next
    }
}

impl<T: Send + 'static> State<T> {
    fn take_idle(&mut self, oldest_first: bool) -> Option<T> {
        if oldest_first && !self.idle.is_empty() {
            Some(self.idle.remove(0))
        } else {
            self.idle.pop()
        }
    }
}

impl<T: Send + 'static> Drop for SlotQueue<T> {
    fn drop(&mut self) {
        // Ends the deadline task (it holds only a weak reference).
        self.wake_timer.notify_one();
    }
}

impl<T: Send + 'static> fmt::Debug for SlotQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = crate::panic::lock(&self.state);
        f.debug_struct("SlotQueue")
            .field("idle", &st.idle.len())
            .field("free", &st.free)
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

/// The pool's deadline task: sleeps until the next due event of any waiter (the oldest's,
/// as they all wait by the same rules) and ends with the queue.
async fn run_deadlines<T: Send + 'static>(queue: Weak<SlotQueue<T>>, wake: Arc<Notify>) {
    loop {
        let next = match queue.upgrade() {
            Some(q) => q.fire(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

mod ticket;
pub use ticket::Waiting;
use ticket::{Outcome, Ticket};

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
