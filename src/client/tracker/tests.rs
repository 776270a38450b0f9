use super::*;

fn query(t: &mut Tracker, sql: &str) {
    t.client_message(b'Q');
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    t.client_body(b'Q', &body);
}

#[test]
fn simple_query_releases_on_idle_ready() {
    let mut t = Tracker::default();
    t.client_message(b'Q');
    assert!(!t.is_idle());
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn open_transaction_keeps_server() {
    let mut t = Tracker::default();
    t.client_message(b'Q');
    t.ready_for_query(b'T');
    assert!(!t.is_idle());
    assert!(t.nothing_outstanding());
    t.client_message(b'Q');
    t.ready_for_query(b'E');
    assert!(!t.is_idle());
    t.client_message(b'Q');
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn pipeline_waits_for_every_sync() {
    let mut t = Tracker::default();
    for tag in [b'P', b'B', b'E', b'S', b'P', b'B', b'E', b'S'] {
        t.client_message(tag);
    }
    t.ready_for_query(b'I');
    assert!(!t.is_idle(), "second Sync still unanswered");
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn flush_without_sync_keeps_server() {
    let mut t = Tracker::default();
    t.client_message(b'Q');
    t.client_message(b'P');
    t.client_message(b'H');
    t.ready_for_query(b'I');
    assert!(!t.is_idle(), "Parse+Flush after the query still open");
    t.client_message(b'S');
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn sync_sent_before_copy_data_gets_no_ready_for_query() {
    // tokio-postgres's copy_in: Bind, Execute, Sync, (CopyInResponse), data, CopyDone, Sync.
    let mut t = Tracker::default();
    for tag in [b'B', b'E', b'S'] {
        t.client_message(tag);
    }
    for tag in [b'd', b'd', b'c', b'S'] {
        t.client_message(tag);
    }
    t.ready_for_query(b'I');
    assert!(
        t.is_idle(),
        "the Sync sent in copy-in mode was ignored by the server"
    );
    t.client_message(b'Q');
    assert!(!t.is_idle());
    t.ready_for_query(b'I');
    assert!(t.is_idle(), "later requests are counted as before");
}

#[test]
fn copy_fail_after_ignored_sync_still_waits_for_the_next_sync() {
    let mut t = Tracker::default();
    for tag in [b'B', b'E', b'S', b'f'] {
        t.client_message(tag);
    }
    assert!(
        !t.is_idle(),
        "the exchange is open until a Sync after CopyFail"
    );
    t.client_message(b'S');
    t.server_error();
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn simple_query_copy_and_syncs_after_copy_done_count_as_usual() {
    let mut t = Tracker::default();
    for tag in [b'Q', b'd', b'c'] {
        t.client_message(tag);
    }
    t.ready_for_query(b'I');
    assert!(t.is_idle());
    // A pipeline after the copy: both Syncs are answered.
    for tag in [b'P', b'B', b'E', b'S', b'B', b'E', b'S'] {
        t.client_message(tag);
    }
    t.ready_for_query(b'I');
    assert!(!t.is_idle());
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn function_call_counts_as_a_request() {
    let mut t = Tracker::default();
    t.client_message(b'F');
    assert!(!t.is_idle());
    t.ready_for_query(b'I');
    assert!(t.is_idle());
}

#[test]
fn successful_set_outside_transaction_is_reported() {
    let mut t = Tracker::default();
    query(&mut t, "SET statement_timeout = '5s'");
    t.command_complete(b"SET\0");
    t.ready_for_query(b'I');
    assert_eq!(
        t.changes,
        vec![SettingChange::Set {
            name: "statement_timeout".into(),
            sql: "SET statement_timeout = '5s';".into()
        }]
    );
}

#[test]
fn failed_set_is_not_reported() {
    let mut t = Tracker::default();
    query(&mut t, "SET no_such_param = 1");
    t.server_error();
    t.ready_for_query(b'I');
    assert!(t.changes.is_empty());
}

#[test]
fn set_in_transaction_counts_only_after_commit() {
    let mut t = Tracker::default();
    query(&mut t, "BEGIN");
    t.ready_for_query(b'T');
    query(&mut t, "SET work_mem = '8MB'");
    t.ready_for_query(b'T');
    query(&mut t, "ROLLBACK");
    t.command_complete(b"ROLLBACK\0");
    t.ready_for_query(b'I');
    assert!(t.changes.is_empty(), "rolled back");
    query(&mut t, "BEGIN");
    t.ready_for_query(b'T');
    query(&mut t, "SET work_mem = '8MB'");
    t.ready_for_query(b'T');
    query(&mut t, "COMMIT");
    t.command_complete(b"COMMIT\0");
    t.ready_for_query(b'I');
    assert_eq!(t.changes.len(), 1, "committed");
}

#[test]
fn extended_protocol_set_is_tracked_through_named_statements() {
    let mut t = Tracker::default();
    t.client_message(b'P');
    t.client_body(b'P', b"s1\0SET search_path = app\0\0\0");
    t.client_message(b'D');
    t.client_message(b'S');
    t.ready_for_query(b'I');
    bind_execute_sync(&mut t, b"\0s1\0\0\0\0\0\0\0");
    assert_eq!(
        t.changes,
        vec![SettingChange::Set {
            name: "search_path".into(),
            sql: "SET search_path = app;".into()
        }]
    );
}

/// The client binds `bind` (a Bind body) to the unnamed portal, executes it and syncs;
/// the server answers ReadyForQuery `I`.
fn bind_execute_sync(t: &mut Tracker, bind: &[u8]) {
    t.client_message(b'B');
    t.client_body(b'B', bind);
    t.client_message(b'E');
    t.client_body(b'E', b"\0\0\0\0\0");
    t.client_message(b'S');
    t.ready_for_query(b'I');
}

#[test]
fn a_statement_parsed_again_under_its_name_forgets_its_set() {
    let mut t = Tracker::default();
    t.client_message(b'P');
    t.client_body(b'P', b"s1\0SET search_path = app\0\0\0");
    t.client_message(b'P');
    t.client_body(b'P', b"s1\0SELECT 1\0\0\0");
    bind_execute_sync(&mut t, b"\0s1\0\0\0\0\0\0\0");
    // An unnamed statement nothing was noted for: nothing to look up or forget.
    t.client_message(b'P');
    t.client_body(b'P', b"\0SELECT 2\0\0\0");
    bind_execute_sync(&mut t, b"\0\0\0\0\0\0\0\0");
    assert!(t.changes.is_empty(), "{:?}", t.changes);
}

#[test]
fn every_set_of_a_multi_statement_query_is_reported() {
    let mut t = Tracker::default();
    query(&mut t, "SET a = 1; select 1; SET b = 2");
    t.ready_for_query(b'I');
    assert_eq!(t.changes.len(), 2);
    query(&mut t, "SET c = 1; select 1/0");
    t.server_error();
    t.ready_for_query(b'I');
    assert_eq!(t.changes.len(), 2, "a failed query string applied nothing");
}

#[test]
fn identity_reported_by_the_server_pins() {
    let mut t = Tracker::default();
    let was = "app".to_owned();
    t.parameter_status("session_authorization", Some(&was), "app");
    t.parameter_status("TimeZone", Some(&was), "UTC");
    assert_eq!(t.pin, None);
    t.parameter_status("session_authorization", Some(&was), "other");
    assert_eq!(t.pin, Some(PinReason::Identity));
}

#[test]
fn oversized_query_text_pins() {
    let mut t = Tracker::default();
    t.client_length(b'Q', MAX_INSPECTED);
    t.client_length(b'B', MAX_INSPECTED + 1);
    assert_eq!(t.pin, None);
    t.client_length(b'P', MAX_INSPECTED + 1);
    assert_eq!(t.pin, None, "a large Parse does not pin");
    assert!(t.uninspected_parse, "but its server is not reused");
    t.client_length(b'Q', MAX_INSPECTED + 1);
    assert_eq!(t.pin, Some(PinReason::Uninspected));
}

#[test]
fn pins_are_noticed_when_sent() {
    let mut t = Tracker::default();
    query(&mut t, "CREATE TEMP TABLE x(a int)");
    assert_eq!(t.pin, Some(PinReason::TempTable));
}
