//! Opening a server connection for a waiting client. While the server sleeps or restarts
//! (refused, reset, timed out, `57P03 the database system is starting up`) it retries
//! with capped backoff until the client's query_wait_timeout; after a real login failure
//! (wrong password) it fails new attempts at once for server_login_retry, as PgBouncer.
//! The min_pool_size filler makes single attempts ([`Retry::Never`]) and backs off itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::PoolSettings;
use crate::error::sqlstate;
use crate::protocol::messages::ErrorFields;
use crate::server::{self, ServerConnection, ServerError, ServerTarget};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The last real login failure of a pool and when it happened.
#[derive(Debug, Default)]
pub(super) struct LoginFailure(Mutex<Option<(Instant, ErrorFields)>>);

impl LoginFailure {
    fn recent(&self, window: Duration) -> Option<ErrorFields> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((at, fields)) if at.elapsed() < window => Some(fields.clone()),
            _ => None,
        }
    }

    fn set(&self, value: Option<ErrorFields>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = value.map(|f| (Instant::now(), f));
    }
}

/// Counts a connect in progress (SHOW POOLS sv_login) until dropped, also when the
/// connect is abandoned midway.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub(super) fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether waiting may cure `e`: the server is down, restarting, or not accepting yet.
pub(super) fn is_transient(e: &ServerError) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ServerError::Timeout => true,
        ServerError::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::TimedOut
                | K::NotFound
        ),
        // cannot_connect_now (starting up, shutting down, in recovery), admin and crash
        // shutdown during login.
        ServerError::Rejected(f) => matches!(
            f.code.as_str(),
            sqlstate::CANNOT_CONNECT_NOW | sqlstate::ADMIN_SHUTDOWN | sqlstate::CRASH_SHUTDOWN
        ),
        _ => false,
    }
}

/// A refusal that will not change by retrying soon: bad password, no such role, hba.
fn is_login_failure(e: &ServerError) -> bool {
    matches!(e, ServerError::Rejected(f) if f.code.starts_with("28"))
}

/// Whether [`connect`] tries again after a transient failure.
#[derive(Debug, Clone, Copy)]
pub(super) enum Retry {
    /// Until this deadline (`None` = no limit): a client is waiting.
    Until(Option<Instant>),
    /// One attempt only (within connect_timeout).
    Never,
}

/// Connects, retrying transient failures as `retry` says.
pub(super) async fn connect(
    target: &ServerTarget,
    settings: &PoolSettings,
    failure: &LoginFailure,
    retry: Retry,
) -> Result<ServerConnection, ServerError> {
    let deadline = match retry {
        Retry::Until(deadline) => deadline,
        Retry::Never => Some(Instant::now() + settings.connect_timeout),
    };
    if let Some(fields) = failure.recent(settings.server_login_retry) {
        return Err(ServerError::Rejected(fields));
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        let timeout = match deadline {
            Some(d) => settings
                .connect_timeout
                .min(d.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
            None => settings.connect_timeout,
        };
        let e = match server::connect(target, timeout).await {
            Ok(conn) => {
                failure.set(None);
                return Ok(conn);
            }
            Err(e) => e,
        };
        if !is_transient(&e) || matches!(retry, Retry::Never) {
            if is_login_failure(&e) {
                if let ServerError::Rejected(f) = &e {
                    failure.set(Some(f.clone()));
                }
            }
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
            warn!(error = %e, "server still unavailable at query_wait_timeout");
            return Err(e);
        }
        debug!(error = %e, backoff_ms = backoff.as_millis() as u64, "server unavailable; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: &str) -> ServerError {
        ServerError::Rejected(ErrorFields {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
        })
    }

    #[test]
    fn startup_refusal_and_timeouts_are_transient_but_bad_passwords_are_not() {
        assert!(is_transient(&rejected("57P03")));
        assert!(is_transient(&ServerError::Timeout));
        assert!(is_transient(&ServerError::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(!is_transient(&rejected("28P01")));
        assert!(!is_transient(&ServerError::TlsRefused));
        assert!(is_login_failure(&rejected("28P01")));
        assert!(!is_login_failure(&rejected("57P03")));
    }

    #[tokio::test(start_paused = true)]
    async fn login_failures_are_remembered_for_the_retry_window() {
        let failure = LoginFailure::default();
        failure.set(Some(ErrorFields {
            code: "28P01".into(),
            ..Default::default()
        }));
        assert!(failure.recent(Duration::from_secs(15)).is_some());
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(failure.recent(Duration::from_secs(15)).is_none());
    }
}
