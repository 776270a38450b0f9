//! One queued checkout's side of the slot queue: its mailbox ([`Ticket`]) and its place
//! in the queue ([`Waiting`]), which hands back whatever reaches it after it gave up.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::{Event, Grant, SlotQueue};

pub(super) enum Outcome<T: Send + 'static> {
    Granted(Grant<T>),
    TimedOut,
}

/// One queued checkout's mailbox: the queue settles it once, the deadline task may flag
/// a notice (and a shutdown an interrupt), the waiter polls it.
pub(super) struct Ticket<T: Send + 'static>(Mutex<TicketState<T>>);

pub(super) struct TicketState<T: Send + 'static> {
    outcome: Option<Outcome<T>>,
    notice_due: bool,
    interrupted: bool,
    gone: bool,
    waker: Option<Waker>,
}

impl<T: Send + 'static> Default for Ticket<T> {
    fn default() -> Self {
        Ticket(Mutex::new(TicketState {
            outcome: None,
            notice_due: false,
            interrupted: false,
            gone: false,
            waker: None,
        }))
    }
}

impl<T: Send + 'static> Ticket<T> {
    /// Delivers `outcome` (and returns the waker to call) unless the waiter is gone, in
    /// which case the outcome comes back.
    pub(super) fn settle(&self, outcome: Outcome<T>) -> Result<Option<Waker>, Outcome<T>> {
        let mut t = crate::panic::lock(&self.0);
        if t.gone {
            return Err(outcome);
        }
        t.outcome = Some(outcome);
        Ok(t.waker.take())
    }

    pub(super) fn notice(&self) -> Option<Waker> {
        let mut t = crate::panic::lock(&self.0);
        t.notice_due = true;
        t.waker.take()
    }

    pub(super) fn interrupt(&self) -> Option<Waker> {
        let mut t = crate::panic::lock(&self.0);
        t.interrupted = true;
        t.waker.take()
    }

    pub(super) fn is_gone(&self) -> bool {
        crate::panic::lock(&self.0).gone
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Event<T>> {
        let mut t = crate::panic::lock(&self.0);
        match t.outcome.take() {
            Some(Outcome::Granted(g)) => return Poll::Ready(Event::Granted(g)),
            Some(Outcome::TimedOut) => return Poll::Ready(Event::TimedOut),
            None => {}
        }
        if std::mem::take(&mut t.notice_due) {
            return Poll::Ready(Event::Notice);
        }
        if std::mem::take(&mut t.interrupted) {
            return Poll::Ready(Event::Interrupted);
        }
        if !t.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            t.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A place in the queue. Dropping it leaves the queue; a slot or connection that reached
/// it meanwhile goes on to the next waiter (or back to the pool), never lost.
pub struct Waiting<T: Send + 'static> {
    ticket: Arc<Ticket<T>>,
    queue: Arc<SlotQueue<T>>,
}

impl<T: Send + 'static> Waiting<T> {
    pub(super) fn new(ticket: Arc<Ticket<T>>, queue: Arc<SlotQueue<T>>) -> Self {
        Waiting { ticket, queue }
    }

    /// The next thing that happens to this waiter. Cancel safe.
    pub async fn next(&mut self) -> Event<T> {
        std::future::poll_fn(|cx| self.ticket.poll(cx)).await
    }
}

impl<T: Send + 'static> fmt::Debug for Waiting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waiting")
    }
}

impl<T: Send + 'static> Drop for Waiting<T> {
    fn drop(&mut self) {
        let late = {
            let mut t = crate::panic::lock(&self.ticket.0);
            t.gone = true;
            t.outcome.take()
        };
        if let Some(Outcome::Granted((slot, conn))) = late {
            self.queue.checkin(slot, conn);
        }
    }
}
