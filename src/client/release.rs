//! The release decision: when a link ends, whether its server goes back to the pool, is
//! closed, or stays linked, and whether the client's session ends (and with which error).
//! Pure functions of what the link reported, so every case is tested in a table; the
//! session carries the decision out ([`super::session`]).
//!
//! The rule that keeps a dirty server out of the pool: a server is checked in only when
//! the relay ended the link because the server is idle and owes nothing
//! ([`RelayEnd::Released`]), no cancel request reached it during the link, and no Parse
//! too large to inspect went through it. A server a client left behind is reused only when
//! it is clean, and after `server_reset_query` when the mode or a pin requires one
//! ([`after_client_left`]).

use super::relay::RelayEnd;
use super::statement::{recognise, PinReason, Recognised};
use super::timeouts::Expired;
use super::tracker::Tracker;
use crate::config::PoolMode;
use crate::error::{ClientError, ErrorKind};

/// What a finished link reports to the release decision.
#[derive(Debug)]
pub struct LinkEnd<'a> {
    /// How the relay run ended.
    pub end: &'a RelayEnd,
    /// A cancel request reached the server while it was linked to this client.
    pub cancelled: bool,
    /// The link timer that ended the link (idle_transaction_timeout, transaction_timeout).
    pub timed_out: Option<Expired>,
    /// The link's request/transaction accounting.
    pub tracker: &'a Tracker,
    /// Everything sent to the server was answered and nothing is half-sent or half-read.
    pub server_clean: bool,
    /// Session mode with `server_fast_close`: the pool marked this server for closing
    /// (RECONNECT, a RELOAD or DNS change of its connection settings) and everything it
    /// sent reached the client.
    pub obsolete: bool,
}

/// What becomes of the server (and the client) after a link.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The server goes back to the pool; the client carries on.
    Checkin,
    /// The server is closed (the reason is logged); the client carries on.
    Discard(&'static str),
    /// The link goes on: the server stays with the client (a timer tick).
    Keep,
    /// The client's session ends: it is told `error` (if any), and the server is released
    /// as `server` says.
    Close {
        /// Sent to the client before its connection closes (`None`: it already left).
        error: Option<ClientError>,
        /// What becomes of the server.
        server: ServerFate,
    },
}

/// What becomes of a server when its client's session ends.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerFate {
    /// Closed; the reason is logged.
    Discard(&'static str),
    /// Decided by [`after_client_left`] (the client left; the server may be reusable).
    ClientLeft,
    /// Closed because the pool marked it for closing (`server_fast_close`), logged as
    /// PgBouncer's `database configuration changed`.
    Obsolete,
}

/// What becomes of a server whose client left: closed, or reused after running `reset`.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterClientLeft {
    /// Closed; the reason is logged.
    Discard(&'static str),
    /// Back to the pool, after `reset` succeeded when there is one (and the server still
    /// runs as the pool's role).
    Reuse {
        /// The reset query to run first.
        reset: Option<String>,
    },
}

/// The settings that decide whether a server a client left behind can be reused.
#[derive(Debug, Clone)]
pub struct ResetPolicy {
    /// The client's pool mode.
    pub mode: PoolMode,
    /// `server_reset_query` (blank: none).
    pub reset_query: Option<String>,
    /// `server_reset_query_always`.
    pub reset_always: bool,
}

/// Decides what becomes of the server (and the client) after a link ended as `link` says.
/// The first question is what ended the link: a link timer, `server_fast_close`, or the
/// relay ([`relay_ended`]).
pub fn disposition(link: &LinkEnd<'_>) -> Disposition {
    if let Some(timer) = link.timed_out {
        if let Some(d) = timer_ended(timer) {
            return d;
        }
    }
    if fast_close_now(link) {
        return close(
            ErrorKind::ServerRetired,
            FAST_CLOSE_MESSAGE,
            ServerFate::Obsolete,
        );
    }
    relay_ended(link)
}

/// A link timer that ends the session: the client is disconnected and its server, in the
/// middle of a transaction, closed. `None` for query_timeout (the link cancelled the
/// query and went on; how the relay ended decides).
fn timer_ended(timer: Expired) -> Option<Disposition> {
    let (kind, msg) = match timer {
        Expired::IdleTransaction => (
            ErrorKind::IdleTransactionTimeout,
            "idle transaction timeout",
        ),
        Expired::Transaction => (ErrorKind::TransactionTimeout, "transaction timeout"),
        Expired::Query => return None,
    };
    Some(close(kind, msg, ServerFate::Discard(msg)))
}

/// The decision by how the relay ended the link: the server was released, a timer ticked,
/// or one side left or broke the protocol (the session ends).
fn relay_ended(link: &LinkEnd<'_>) -> Disposition {
    match link.end {
        RelayEnd::Released => released(link),
        RelayEnd::Tick => Disposition::Keep,
        RelayEnd::ClientGone | RelayEnd::ClientIo(_) => Disposition::Close {
            error: None,
            server: ServerFate::ClientLeft,
        },
        RelayEnd::ClientProtocol(e) => Disposition::Close {
            error: Some(ClientError::fatal(ErrorKind::Protocol, e.to_string())),
            server: ServerFate::ClientLeft,
        },
        RelayEnd::TransactionInStatementMode => close(
            ErrorKind::Protocol,
            "transaction blocks not allowed in statement pooling mode",
            ServerFate::Discard("transaction block in statement mode"),
        ),
        RelayEnd::ServerGone(_) => close(
            ErrorKind::ServerGone,
            "server conn crashed?",
            ServerFate::Discard("server connection lost while linked"),
        ),
        RelayEnd::ServerProtocol(_) => close(
            ErrorKind::ServerGone,
            "server protocol violation",
            ServerFate::Discard("server protocol violation"),
        ),
    }
}

/// The server is idle and owes nothing: it goes back to the pool unless a cancel or a
/// Parse too large to inspect reached it during the link.
fn released(link: &LinkEnd<'_>) -> Disposition {
    if link.cancelled {
        Disposition::Discard("server had a cancel during this link: not reused")
    } else if link.tracker.uninspected_parse {
        Disposition::Discard("a Parse too large to inspect reached this server: not reused")
    } else {
        Disposition::Checkin
    }
}

/// The session ends with a FATAL `kind` error saying `message`; the server goes as
/// `server` says.
fn close(kind: ErrorKind, message: &'static str, server: ServerFate) -> Disposition {
    Disposition::Close {
        error: Some(ClientError::fatal(kind, message)),
        server,
    }
}

/// What a client is told when `server_fast_close` closes its server (PgBouncer's words).
pub const FAST_CLOSE_MESSAGE: &str = "database configuration changed";

/// `server_fast_close`: a session-mode server marked for closing is closed as soon as its
/// transaction ended (ReadyForQuery `I`, nothing outstanding, nothing half-sent), not when
/// its client leaves.
fn fast_close_now(link: &LinkEnd<'_>) -> bool {
    link.obsolete
        && link.timed_out.is_none()
        && matches!(link.end, RelayEnd::Tick)
        && link.server_clean
        && !link.cancelled
}

/// Decides whether a server whose client left (with the link ending as `link` says) can be
/// reused: only when it is clean, and after `server_reset_query` in session mode, after a
/// pin or with `server_reset_query_always`. Pinned state is known to be undone only by
/// `DISCARD ALL`: with another reset query such a server is closed.
pub fn after_client_left(link: &LinkEnd<'_>, policy: &ResetPolicy) -> AfterClientLeft {
    let clean = link.server_clean && !link.cancelled && !link.tracker.uninspected_parse;
    if !clean {
        return AfterClientLeft::Discard("client left mid-transaction: closing server");
    }
    let reset = policy.reset_query.clone().filter(|q| !q.trim().is_empty());
    let pin = link.tracker.pin;
    let session = policy.mode == PoolMode::Session;
    let must_reset = session || pin.is_some() || policy.reset_always;
    let strict = pin.is_some_and(|p| !session || p == PinReason::Identity);
    if strict && !reset.as_deref().is_some_and(is_discard_all) {
        return AfterClientLeft::Discard(
            "pinned client left and server_reset_query is not DISCARD ALL: closing server",
        );
    }
    AfterClientLeft::Reuse {
        reset: reset.filter(|_| must_reset),
    }
}

/// True for a reset query that is `DISCARD ALL` (any case, optional `;`).
pub fn is_discard_all(q: &str) -> bool {
    matches!(recognise(q.as_bytes()), Some(Recognised::ResetAll))
        && q.trim_start()
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("discard"))
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
