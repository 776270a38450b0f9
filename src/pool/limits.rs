//! Connection limits shared by several pools: max_db_connections (all users of one
//! database) and max_user_connections (one user across databases). A server connection
//! holds one slot of each group it belongs to for its whole life, idle or not; when a
//! group is full, idle connections of sibling pools are closed to make room, as PgBouncer.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Pool, Tell};

/// query_wait_notify for a client waiting on a full shared limit (max_db_connections,
/// max_user_connections) rather than on its own pool: runs the notice once it is due.
pub(super) fn tell_if_due(notice: &mut Option<(tokio::time::Instant, Tell<'_>)>) {
    if notice
        .as_ref()
        .is_some_and(|n| n.0 <= tokio::time::Instant::now())
    {
        if let Some((_, tell)) = notice.take() {
            tell();
        }
    }
}

/// One shared limit.
#[derive(Debug)]
pub struct LimitGroup {
    slots: Arc<Semaphore>,
    members: Mutex<Vec<Weak<Pool>>>,
    /// (current maximum, slots still to take back after a shrink) for [`LimitGroup::resize`].
    size: Mutex<(usize, usize)>,
}

impl LimitGroup {
    /// A group allowing `max` server connections in total.
    pub fn new(max: usize) -> Arc<LimitGroup> {
        Arc::new(LimitGroup {
            slots: Arc::new(Semaphore::new(max)),
            members: Mutex::new(Vec::new()),
            size: Mutex::new((max, 0)),
        })
    }

    /// The current maximum.
    pub fn max(&self) -> usize {
        crate::panic::lock(&self.size).0
    }

    /// Changes the maximum (the fleet budget re-divided). Growing frees slots at once;
    /// shrinking takes free slots back now and the rest as connections close
    /// ([`LimitGroup::settle`] closes idle ones).
    pub fn resize(&self, max: usize) {
        {
            let mut size = crate::panic::lock(&self.size);
            let (old, debt) = *size;
            if max >= old {
                let paid = (max - old).min(debt);
                self.slots.add_permits(max - old - paid);
                *size = (max, debt - paid);
            } else {
                *size = (max, debt + old - max);
            }
        }
        self.settle();
    }

    /// True while a shrink is not yet paid back.
    pub fn owes(&self) -> bool {
        crate::panic::lock(&self.size).1 > 0
    }

    /// Pays one owed slot with `permit` (it is never given back); returns the permit when
    /// nothing is owed.
    fn take_back(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let mut size = crate::panic::lock(&self.size);
        if size.1 == 0 {
            return Some(permit);
        }
        size.1 -= 1;
        permit.forget();
        None
    }

    /// Takes back slots still owed after a shrink: free ones first, then by closing idle
    /// connections of member pools. Connections in use are never closed.
    pub fn settle(&self) {
        loop {
            {
                let mut size = crate::panic::lock(&self.size);
                if size.1 == 0 {
                    return;
                }
                size.1 -= self.slots.forget_permits(size.1);
                if size.1 == 0 {
                    return;
                }
            }
            let members: Vec<Arc<Pool>> = {
                let m = crate::panic::lock(&self.members);
                m.iter().filter_map(Weak::upgrade).collect()
            };
            if !members.iter().any(|p| p.close_one_idle()) {
                return;
            }
        }
    }

    /// Registers a pool whose idle connections may be closed to free slots.
    pub fn join(&self, pool: &Arc<Pool>) {
        let mut m = crate::panic::lock(&self.members);
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(pool));
    }

    /// Takes a slot if one is free, else closes an idle connection of a member pool and
    /// tries once more. Never waits: the caller retries (it may get an idle connection of
    /// its own pool back meanwhile, which needs no new slot).
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        let members: Vec<Arc<Pool>> = {
            let m = crate::panic::lock(&self.members);
            m.iter().filter_map(Weak::upgrade).collect()
        };
        if members.iter().any(|p| p.close_one_idle()) {
            return self.slots.clone().try_acquire_owned().ok();
        }
        None
    }

    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Called when a connection holding `slots` (one per group of `groups`, in order) goes back
/// to its pool: when some group owes slots after a shrink, the connection pays them and
/// must be closed (true); otherwise nothing changes (false). Busy pools rarely leave a
/// connection idle, so a shrink is paid here rather than by closing idle ones only.
pub fn repay(groups: &[Arc<LimitGroup>], slots: &mut Vec<OwnedSemaphorePermit>) -> bool {
    if !groups.iter().any(|g| g.owes()) || groups.len() != slots.len() {
        return false;
    }
    for (group, permit) in groups.iter().zip(slots.drain(..)) {
        drop(group.take_back(permit));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_grows_at_once_and_shrinks_as_slots_come_back() {
        let g = LimitGroup::new(4);
        let mut held: Vec<_> = (0..3)
            .map(|_| g.try_acquire().expect("free slot"))
            .collect();
        g.resize(1);
        assert_eq!(g.max(), 1);
        assert_eq!(g.available(), 0, "the free slot was taken back");
        assert!(g.owes(), "two slots in use are still owed");
        let groups = vec![g.clone()];
        let mut slots = vec![held.pop().expect("held")];
        assert!(
            repay(&groups, &mut slots),
            "an owing group closes the returning connection"
        );
        assert!(slots.is_empty());
        drop(held.pop());
        g.settle();
        assert!(!g.owes());
        assert_eq!(g.available(), 0, "one in use, maximum 1");
        g.resize(3);
        assert_eq!(g.available(), 2);
        let mut slots = vec![g.try_acquire().expect("slot")];
        assert!(
            !repay(&groups, &mut slots),
            "nothing owed: the connection stays"
        );
        assert_eq!(slots.len(), 1);
    }
}
