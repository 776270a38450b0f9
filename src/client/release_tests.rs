use std::io;

use super::*;
use crate::client::validate::ClientViolation;
use crate::protocol::frame::FrameError;

fn tracker(pin: Option<PinReason>, uninspected_parse: bool) -> Tracker {
    let mut t = Tracker::default();
    t.pin = pin;
    t.uninspected_parse = uninspected_parse;
    t
}

fn link<'a>(end: &'a RelayEnd, t: &'a Tracker, cancelled: bool, clean: bool) -> LinkEnd<'a> {
    LinkEnd {
        end,
        cancelled,
        timed_out: None,
        tracker: t,
        server_clean: clean,
        obsolete: false,
    }
}

fn closes_with(d: &Disposition) -> Option<(&str, bool)> {
    match d {
        Disposition::Close { error, server } => Some((
            error.as_ref().map_or("", |e| &*e.code),
            *server == ServerFate::ClientLeft,
        )),
        _ => None,
    }
}

#[test]
fn released_server_goes_back_only_without_cancel_or_uninspected_parse() {
    let end = RelayEnd::Released;
    // (cancelled, uninspected parse, expected checkin)
    let table = [
        (false, false, true),
        (true, false, false),
        (false, true, false),
        (true, true, false),
    ];
    for (cancelled, uninspected, checkin) in table {
        let t = tracker(None, uninspected);
        let d = disposition(&link(&end, &t, cancelled, true));
        assert_eq!(
            d == Disposition::Checkin,
            checkin,
            "cancelled={cancelled} uninspected={uninspected}: {d:?}"
        );
        if !checkin {
            assert!(matches!(d, Disposition::Discard(_)), "{d:?}");
        }
    }
}

#[test]
fn a_tick_keeps_the_link() {
    let t = tracker(None, false);
    let end = RelayEnd::Tick;
    assert_eq!(
        disposition(&link(&end, &t, false, false)),
        Disposition::Keep
    );
}

#[test]
fn link_timeouts_close_client_and_server_with_their_sqlstate() {
    let t = tracker(None, false);
    let end = RelayEnd::Tick;
    for (expired, code) in [
        (Expired::IdleTransaction, "08P01"),
        (Expired::Transaction, "08P01"),
    ] {
        let mut l = link(&end, &t, false, true);
        l.timed_out = Some(expired);
        let d = disposition(&l);
        assert_eq!(closes_with(&d), Some((code, false)), "{expired:?}: {d:?}");
    }
    // query_timeout cancels the query; it never ends the link by itself.
    let mut l = link(&end, &t, false, true);
    l.timed_out = Some(Expired::Query);
    assert_eq!(disposition(&l), Disposition::Keep);
}

#[test]
fn every_end_that_ends_the_session_says_how() {
    let t = tracker(None, false);
    let violation = ClientViolation::UnknownType { tag: 1 };
    let frame = FrameError::InvalidLength { tag: 'D', len: 1 };
    // (end, SQLSTATE sent ("" = none), server left to after_client_left)
    let table = [
        (RelayEnd::ClientGone, "", true),
        (RelayEnd::ClientIo(io::Error::other("reset")), "", true),
        (RelayEnd::ClientProtocol(violation), "08P01", true),
        (RelayEnd::TransactionInStatementMode, "08P01", false),
        (
            RelayEnd::ServerGone(io::Error::other("eof")),
            "08006",
            false,
        ),
        (RelayEnd::ServerProtocol(frame), "08006", false),
    ];
    for (end, code, client_left) in table {
        let d = disposition(&link(&end, &t, false, true));
        assert_eq!(closes_with(&d), Some((code, client_left)), "{end:?}: {d:?}");
        if let Disposition::Close { error: Some(e), .. } = &d {
            assert!(e.closes_connection(), "{end:?}");
        }
    }
}

fn policy(mode: PoolMode, reset: Option<&str>, always: bool) -> ResetPolicy {
    ResetPolicy {
        mode,
        reset_query: reset.map(str::to_owned),
        reset_always: always,
    }
}

fn reuse(reset: Option<&str>) -> AfterClientLeft {
    AfterClientLeft::Reuse {
        reset: reset.map(str::to_owned),
    }
}

#[test]
fn a_server_left_behind_is_reused_only_when_clean() {
    let end = RelayEnd::ClientGone;
    let p = policy(PoolMode::Transaction, Some("DISCARD ALL"), false);
    // (server clean, cancelled, uninspected parse, reused)
    let table = [
        (true, false, false, true),
        (false, false, false, false),
        (true, true, false, false),
        (true, false, true, false),
    ];
    for (clean, cancelled, uninspected, reused) in table {
        let t = tracker(None, uninspected);
        let d = after_client_left(&link(&end, &t, cancelled, clean), &p);
        assert_eq!(
            matches!(d, AfterClientLeft::Reuse { .. }),
            reused,
            "clean={clean} cancelled={cancelled} uninspected={uninspected}: {d:?}"
        );
    }
}

#[test]
fn reset_runs_in_session_mode_after_a_pin_or_when_always() {
    use PoolMode::{Session, Transaction};
    let end = RelayEnd::ClientGone;
    let lock = Some(PinReason::AdvisoryLock);
    let identity = Some(PinReason::Identity);
    let discard_all = Some("discard all;");
    let other = Some("RESET ALL");
    // (mode, pin, reset query, always, expected)
    let table = [
        (Transaction, None, discard_all, false, reuse(None)),
        (Transaction, None, discard_all, true, reuse(discard_all)),
        (Session, None, other, false, reuse(other)),
        (Session, None, Some("  "), false, reuse(None)),
        (Session, lock, other, false, reuse(other)),
        (Transaction, lock, discard_all, false, reuse(discard_all)),
        (Session, identity, discard_all, false, reuse(discard_all)),
    ];
    for (mode, pin, reset, always, expected) in table {
        let t = tracker(pin, false);
        let d = after_client_left(&link(&end, &t, false, true), &policy(mode, reset, always));
        assert_eq!(d, expected, "{mode:?} {pin:?} {reset:?} always={always}");
    }
}

#[test]
fn pinned_state_without_discard_all_closes_the_server() {
    use PoolMode::{Session, Transaction};
    let end = RelayEnd::ClientGone;
    // (mode, pin, reset query)
    let table = [
        (Transaction, PinReason::TempTable, Some("RESET ALL")),
        (Transaction, PinReason::TempTable, None),
        (Session, PinReason::Identity, Some("RESET ALL")),
        (Session, PinReason::Identity, None),
    ];
    for (mode, pin, reset) in table {
        let t = tracker(Some(pin), false);
        let d = after_client_left(&link(&end, &t, false, true), &policy(mode, reset, false));
        assert!(
            matches!(d, AfterClientLeft::Discard(_)),
            "{mode:?} {pin:?} {reset:?}: {d:?}"
        );
    }
}

#[test]
fn discard_all_is_recognised_in_any_case_with_optional_semicolon() {
    for (q, yes) in [
        ("DISCARD ALL", true),
        ("discard all;", true),
        ("  Discard All ; ", true),
        ("RESET ALL", false),
        ("DISCARD PLANS", false),
        ("", false),
    ] {
        assert_eq!(is_discard_all(q), yes, "{q:?}");
    }
}

#[test]
fn fast_close_ends_the_session_once_the_marked_server_is_idle() {
    let t = tracker(None, false);
    let tick = RelayEnd::Tick;
    let marked = |clean| LinkEnd {
        obsolete: true,
        ..link(&tick, &t, false, clean)
    };
    match disposition(&marked(true)) {
        Disposition::Close {
            error: Some(e),
            server: ServerFate::Obsolete,
        } => {
            assert_eq!(&*e.code, "08P01");
            assert_eq!(&*e.message, "database configuration changed");
        }
        d => panic!("{d:?}"),
    }
    // mid-transaction (or with bytes in flight) the link goes on
    assert_eq!(disposition(&marked(false)), Disposition::Keep);
    // not marked, or server_fast_close off: the session keeps its server
    assert_eq!(
        disposition(&link(&tick, &t, false, true)),
        Disposition::Keep
    );
    // a marked server whose client left is decided as any other
    let gone = RelayEnd::ClientGone;
    let left = LinkEnd {
        obsolete: true,
        ..link(&gone, &t, false, true)
    };
    assert_eq!(closes_with(&disposition(&left)), Some(("", true)));
}
