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
}

impl LimitGroup {
    /// A group allowing `max` server connections in total.
    pub fn new(max: usize) -> Arc<LimitGroup> {
        Arc::new(LimitGroup {
            slots: Arc::new(Semaphore::new(max)),
            members: Mutex::new(Vec::new()),
        })
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
