//! The panic hook (`pgfunnel::panic::install_hook`) in a test binary of its own: the hook
//! and tracing's callsite cache are process-wide, so sharing a process with tests that
//! install other subscribers or panic on purpose made the captured log come out empty.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pgfunnel::panic::{install_hook, lock};

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
    assert!(text.contains("tests/panic_hook.rs"), "location: {text}");
    assert!(text.contains("client{id=7}"), "span of the client: {text}");
}
