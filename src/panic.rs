//! Panic policy: a panic is a bug, never an outage. Each client runs in its own tokio
//! task, so a panic ends that client only; [`install_hook`] makes every panic an
//! error-level log line (inside the panicking client's span), and [`lock`] lets the
//! other clients keep using a std `Mutex` that a panicking task held.

use std::sync::{Mutex, MutexGuard};

/// Replaces the default panic hook (which writes to stderr, bypassing the log setup) with
/// one that logs `bug: panic` at error level through `tracing`, with the message, the
/// source location and the thread. Call once, after logging is set up. The current span
/// (e.g. `client{id, peer}`) is attached by the subscriber, so the log names the client
/// whose task died.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = payload_text(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = %message,
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
            "bug: panic; this connection is closed, others are unaffected (please report)"
        );
    }));
}

/// The text of a panic payload (`panic!("...")` gives `&str` or `String`).
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}

/// Locks `mutex`, recovering it if a task panicked while holding it. Use this only for
/// data that stays consistent at every point a panic could happen inside the critical
/// section (plain push/pop/insert/remove/clone with no multi-step invariants), which is
/// what every lock of the pool, limit and listen modules protects.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_survives_a_panic_while_held() {
        let m = Arc::new(Mutex::new(vec![1]));
        let m2 = m.clone();
        let joined = std::thread::spawn(move || {
            let mut g = m2.lock().expect("fresh lock");
            g.push(2);
            panic!("deliberate panic while holding the lock");
        })
        .join();
        assert!(joined.is_err(), "the thread panicked");
        assert!(m.is_poisoned());
        lock(&m).push(3);
        assert_eq!(*lock(&m), vec![1, 2, 3]);
    }
}
