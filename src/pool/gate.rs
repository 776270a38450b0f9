//! The pause gate of a pool (PAUSE/RESUME, SIGUSR1/SIGUSR2, SHUTDOWN WAIT_FOR_SERVERS): while
//! closed, checkouts wait before taking a slot; servers already lent are untouched.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Open (serving) or closed (paused). Checking it is one atomic load; only a checkout
/// that finds it closed subscribes to the watch to wait for the opening.
#[derive(Debug)]
pub struct Gate {
    closed: AtomicBool,
    paused: watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            closed: AtomicBool::new(false),
            paused: watch::Sender::new(false),
        }
    }
}

impl Gate {
    /// Closes (`true`) or opens (`false`) the gate; waiters wake on opening.
    pub fn set_paused(&self, paused: bool) {
        // Under the watch's lock, so the flag and the watch never disagree for long.
        self.paused.send_modify(|p| {
            *p = paused;
            self.closed.store(paused, Ordering::Release);
        });
    }

    /// Whether the gate is closed.
    pub fn is_paused(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Returns at once when open, else when the gate opens. Cancel safe.
    pub async fn wait_open(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`, so wait_for cannot fail while we borrow it.
        let _ = rx.wait_for(|paused| !paused).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn closed_gate_holds_until_opened() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.wait_open().await;
        gate.set_paused(true);
        assert!(gate.is_paused());
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move { g2.wait_open().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a paused gate must hold");
        gate.set_paused(false);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("opened gate releases waiters")
            .expect("waiter task");
    }
}
