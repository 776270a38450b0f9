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
    use std::io::Write;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

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

    #[test]
    fn panic_in_one_task_is_logged_as_bug_with_its_span_and_others_keep_running() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let previous = std::panic::take_hook();
        install_hook();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (panicked, survivor) = tracing::subscriber::with_default(subscriber, || {
            rt.block_on(async {
                use tracing::Instrument;
                let bad = tokio::spawn(
                    async { panic!("deliberate test panic 42") }
                        .instrument(tracing::info_span!("client", id = 7u64)),
                );
                let good = tokio::spawn(async { 40 + 2 });
                (bad.await, good.await)
            })
        });
        std::panic::set_hook(previous);
        assert!(panicked.expect_err("task panicked").is_panic());
        assert_eq!(survivor.expect("other task unaffected"), 42);
        let text = String::from_utf8(lock(&out.0).clone()).expect("utf8 log");
        assert!(text.contains("ERROR"), "error level: {text}");
        assert!(text.contains("bug: panic"), "{text}");
        assert!(text.contains("deliberate test panic 42"), "{text}");
        assert!(text.contains("src/panic.rs"), "location: {text}");
        assert!(text.contains("client{id=7}"), "span of the client: {text}");
    }
}
