//! Helpers shared by integration tests: waiting on a condition with a timeout (never bare sleeps),
//! unique per-test names, free loopback ports and a process's memory. Nothing here knows
//! about Postgres.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often `wait_until` / `wait_until_async` re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` every `POLL_INTERVAL` until it returns true; panics (at the caller's
/// location) if it is still false after `timeout`. Blocking: inside a tokio test whose condition
/// depends on other tasks of the same runtime, use `wait_until_async` instead.
#[track_caller]
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("wait_until: condition still false after {timeout:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Like `wait_until` but names what is awaited in the panic message.
#[track_caller]
pub fn wait_until_msg(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Async variant of `wait_until`: awaits `condition()` every `POLL_INTERVAL` (yielding to the
/// runtime in between) and panics with `what` if it is still false after `timeout`.
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A name unique within this machine for the life of this process: `{prefix}_{pid}_{n}`.
/// Lowercase-safe as an unquoted SQL identifier when `prefix` is.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// A loopback TCP port that was free a moment ago (bind port 0, read it, close). Another process
/// may take it before the caller binds it, so callers that can retry on EADDRINUSE should.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// The last `max_bytes` bytes of a text file (lossy UTF-8), or a note saying it is unreadable.
pub fn tail_file(path: &std::path::Path, max_bytes: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max_bytes);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Resident set size of this whole test process in KiB (an in-process proxy included, and
/// every test running concurrently); `vm_rss_kib_of` a child's pid measures only that child.
pub fn vm_rss_kib() -> u64 {
    vm_rss_kib_of(std::process::id())
}

/// Resident set size in KiB of the live process `pid`, from `/proc/<pid>/status`.
pub fn vm_rss_kib_of(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS line")
}
