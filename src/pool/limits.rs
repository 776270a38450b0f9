//! Connection limits shared by several pools: max_db_connections (all users of one
//! database) and max_user_connections (one user across databases). A server connection
//! holds one slot of each group it belongs to for its whole life, idle or not; when a
//! group is full, idle connections of sibling pools are closed to make room, as PgBouncer.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Pool;

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
