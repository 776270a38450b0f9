//! Unit tests of the rewriter: messages larger than the relay's read limit arrive in pieces.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::*;
use crate::pool::prepared::{ServerStatements, StatementRegistry};
use crate::protocol::messages::{self, put_cstr, put_message, Severity};

/// What the relay reads per call (its READ_CHUNK); the relay stops reading a side once
/// 64 KiB await, so a whole-handled message must not wait in `input`.
const CHUNK: usize = 16 * 1024;

fn parse(name: &str, query: &str) -> BytesMut {
    let mut m = BytesMut::new();
    put_message(&mut m, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, query);
        b.put_i16(0);
    });
    m
}

fn bind(statement: &str, param: &[u8]) -> BytesMut {
    let mut m = BytesMut::new();
    put_message(&mut m, b'B', |b| {
        put_cstr(b, "");
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(1);
        b.put_i32(param.len() as i32);
        b.put_slice(param);
        b.put_i16(0);
    });
    m
}

fn sync() -> BytesMut {
    let mut m = BytesMut::new();
    put_message(&mut m, b'S', |_| {});
    m
}

#[test]
fn bind_larger_than_the_relay_read_limit_streams_with_its_name_rewritten() {
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry, 10);
    let mut server = ServerStatements::default();
    let (mut out, mut s2c) = (BytesMut::new(), BytesMut::new());

    let mut input = parse("s1", "select $1::text");
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
    assert!(input.is_empty());
    assert_eq!(out, parse("PGFUNNEL_1", "select $1::text"), "Parse renamed");
    out.clear();

    let param: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut message = bind("s1", &param);
    message.extend_from_slice(&sync());
    let total = message.len();
    let mut fed = 0;
    while fed < total {
        let n = CHUNK.min(total - fed);
        input.extend_from_slice(&message[fed..fed + n]);
        fed += n;
        rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
        assert!(
            input.len() < 5,
            "after {fed} of {total} bytes the rewriter left {} bytes in the relay's buffer",
            input.len()
        );
        if fed < total - sync().len() {
            assert!(!out.is_empty(), "the Bind streams through as it arrives");
            assert!(!rw.is_settled(), "a half-read Bind is unsettled");
        }
    }
    let mut want = bind("PGFUNNEL_1", &param);
    want.extend_from_slice(&sync());
    assert_eq!(out.len(), want.len());
    assert!(out == want, "Bind renamed with its 300 kB parameter intact");
    assert!(s2c.is_empty());
}

#[test]
fn error_larger_than_the_relay_read_limit_is_gathered_and_forwarded() {
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry, 10);
    let mut server = ServerStatements::default();
    let (mut out, mut s2c) = (BytesMut::new(), BytesMut::new());
    let mut input = sync();
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);

    let mut reply = BytesMut::new();
    let detail = "d".repeat(200_000);
    messages::put_error(&mut reply, Severity::Error, "P0001", "big", Some(&detail));
    put_message(&mut reply, b'Z', |b| b.put_u8(b'I'));
    let (mut sin, mut to_client) = (BytesMut::new(), BytesMut::new());
    for piece in reply.chunks(CHUNK) {
        sin.extend_from_slice(piece);
        rw.server_to_client(&mut sin, &mut to_client, &mut server);
        assert!(
            sin.len() < 5,
            "{} bytes left in the relay's buffer",
            sin.len()
        );
    }
    assert!(
        to_client == reply,
        "error and ReadyForQuery forwarded unchanged"
    );
    assert!(rw.is_settled());
}

fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut m = BytesMut::new();
    put_message(&mut m, tag, |b| b.put_slice(body));
    m
}

#[test]
fn sync_sent_before_copy_data_expects_no_ready_for_query() {
    // tokio-postgres's copy_in: Bind, Execute, Sync, then (after CopyInResponse) CopyData,
    // CopyDone, Sync. Postgres ignores the first Sync in copy-in mode and sends one
    // ReadyForQuery; a made-up ParseComplete queued behind a phantom Sync came out late.
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry, 10);
    let mut server = ServerStatements::default();
    let (mut out, mut s2c) = (BytesMut::new(), BytesMut::new());
    let mut c2s = BytesMut::new();
    let mut sin = BytesMut::new();

    let mut input = parse("s0", "copy t from stdin");
    input.extend_from_slice(&sync());
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
    sin.extend_from_slice(&message(b'1', b""));
    sin.extend_from_slice(&message(b'Z', b"I"));
    rw.server_to_client(&mut sin, &mut c2s, &mut server);
    assert!(rw.is_settled());

    let mut input = bind("s0", b"");
    input.extend_from_slice(&message(b'E', b"\0\0\0\0\0"));
    input.extend_from_slice(&sync());
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
    sin.extend_from_slice(&message(b'2', b""));
    sin.extend_from_slice(&message(b'G', b"\0\0\0"));
    rw.server_to_client(&mut sin, &mut c2s, &mut server);
    let mut input = message(b'd', b"1\tx\n");
    input.extend_from_slice(&message(b'c', b""));
    input.extend_from_slice(&sync());
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
    sin.extend_from_slice(&message(b'C', b"COPY 1\0"));
    sin.extend_from_slice(&message(b'Z', b"I"));
    c2s.clear();
    rw.server_to_client(&mut sin, &mut c2s, &mut server);
    let mut want = message(b'C', b"COPY 1\0");
    want.extend_from_slice(&message(b'Z', b"I"));
    assert_eq!(c2s, want);
    assert!(rw.is_settled(), "one ReadyForQuery answered both Syncs");

    // The statement exists on the server: its Parse is answered by pgfunnel at once.
    let mut input = parse("s1", "copy t from stdin");
    rw.client_to_server(&mut input, &mut out, &mut server, &mut s2c);
    assert_eq!(
        s2c,
        message(b'1', b""),
        "made-up ParseComplete not held back"
    );
}

/// Feeds `message` in relay-sized reads; returns what went to the server.
fn feed_in_chunks(rw: &mut Rewriter, server: &mut ServerStatements, message: &[u8]) -> BytesMut {
    let (mut input, mut out, mut s2c) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    for piece in message.chunks(CHUNK) {
        input.extend_from_slice(piece);
        rw.client_to_server(&mut input, &mut out, server, &mut s2c);
        assert!(input.len() < 5, "nothing whole waits in the relay's buffer");
    }
    out
}

/// As `feed_in_chunks`, also returning what the rewriter wrote to the client itself.
fn feed_both(
    rw: &mut Rewriter,
    server: &mut ServerStatements,
    message: &[u8],
) -> (BytesMut, BytesMut) {
    let (mut input, mut out, mut s2c) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    for piece in message.chunks(CHUNK) {
        input.extend_from_slice(piece);
        rw.client_to_server(&mut input, &mut out, server, &mut s2c);
        assert!(input.len() < 5, "nothing whole waits in the relay's buffer");
    }
    (out, s2c)
}

#[test]
fn named_parse_over_the_gather_limit_is_refused_with_54000_and_dropped() {
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry.clone(), 10);
    rw.set_max_gathered(100_000);
    let mut server = ServerStatements::default();
    let query = format!("select '{}'", "x".repeat(300_000));
    let mut message = parse("big", &query);
    message.extend_from_slice(&sync());
    let (out, to_client) = feed_both(&mut rw, &mut server, &message);
    assert_eq!(out, sync(), "only the Sync reaches the server: {out:?}");
    assert_eq!(registry.len(), 0, "nothing of it was kept");
    let text = String::from_utf8_lossy(&to_client);
    assert!(text.contains("C54000"), "{text:?}");
    assert!(text.contains("max_prepared_message_size"), "{text:?}");
    assert_eq!(
        rw.take_refused_requests().collect::<Vec<_>>(),
        vec![0],
        "the tracker is told the newest request (this Sync) failed"
    );
    // The Sync's ReadyForQuery follows the error.
    let mut reply = BytesMut::new();
    put_message(&mut reply, b'Z', |b| b.put_u8(b'I'));
    let mut to_client = BytesMut::new();
    rw.server_to_client(&mut reply, &mut to_client, &mut server);
    assert_eq!(&to_client[..], b"Z\0\0\0\x05I");
    assert!(rw.is_settled());
}

#[test]
fn unnamed_parse_over_the_gather_limit_streams_unchanged() {
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry, 10);
    rw.set_max_gathered(100_000);
    let mut server = ServerStatements::default();
    let query = format!("select '{}'", "x".repeat(300_000));
    let mut message = parse("", &query);
    message.extend_from_slice(&sync());
    let out = feed_in_chunks(&mut rw, &mut server, &message);
    assert!(out == message, "forwarded byte for byte");
}

#[test]
fn large_bind_of_an_unknown_statement_in_a_transaction_block_fails_the_block_on_the_server() {
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry, 10);
    let mut server = ServerStatements::default();
    let mut begin = BytesMut::new();
    put_message(&mut begin, b'Q', |b| put_cstr(b, "BEGIN"));
    feed_in_chunks(&mut rw, &mut server, &begin);
    let mut reply = BytesMut::new();
    put_message(&mut reply, b'C', |b| put_cstr(b, "BEGIN"));
    put_message(&mut reply, b'Z', |b| b.put_u8(b'T'));
    rw.server_to_client(&mut reply, &mut BytesMut::new(), &mut server);
    let mut message = bind("nope", &vec![7u8; 200_000]);
    message.extend_from_slice(&sync());
    let out = feed_in_chunks(&mut rw, &mut server, &message);
    assert!(
        out.len() < 200,
        "the parameters are dropped: {} bytes",
        out.len()
    );
    assert_eq!(
        out[0], b'D',
        "no SQL is sent to make the server fail: {out:?}"
    );
    let mut reply = BytesMut::new();
    messages::put_error(
        &mut reply,
        Severity::Error,
        "26000",
        "no such statement",
        None,
    );
    put_message(&mut reply, b'Z', |b| b.put_u8(b'E'));
    let mut to_client = BytesMut::new();
    rw.server_to_client(&mut reply, &mut to_client, &mut server);
    let text = String::from_utf8_lossy(&to_client);
    assert!(text.contains("C26000"), "{text:?}");
    assert!(!text.contains("no such statement"), "{text:?}");
    assert!(rw.is_settled());
}

fn query(sql: &str) -> BytesMut {
    let mut m = BytesMut::new();
    put_message(&mut m, b'Q', |b| put_cstr(b, sql));
    m
}

/// The rewriter's output (to the server, to the client) for `client` messages then
/// `replies`, with `waiting` bytes already in both output buffers: fed all at once, or
/// one message per call.
fn outputs(
    client: &[BytesMut],
    replies: &[BytesMut],
    waiting: &[u8],
    one_by_one: bool,
) -> [BytesMut; 2] {
    let mut rw = Rewriter::new(Arc::new(StatementRegistry::default()), 10);
    rw.set_notify_pids(7, 9);
    let mut server = ServerStatements::default();
    let (mut c2s, mut s2c) = (BytesMut::from(waiting), BytesMut::from(waiting));
    let mut input = BytesMut::new();
    for (i, m) in client.iter().enumerate() {
        input.extend_from_slice(m);
        if one_by_one || i + 1 == client.len() {
            rw.client_to_server(&mut input, &mut c2s, &mut server, &mut s2c);
            assert!(input.is_empty());
        }
    }
    for (i, m) in replies.iter().enumerate() {
        input.extend_from_slice(m);
        if one_by_one || i + 1 == replies.len() {
            rw.server_to_client(&mut input, &mut s2c, &mut server);
            assert!(input.is_empty());
        }
    }
    [c2s, s2c]
}

#[test]
fn messages_read_together_come_out_as_when_read_one_by_one() {
    let execute = message(b'E', b"\0\0\0\0\0");
    let ready = message(b'Z', b"I");
    let done = message(b'C', b"SELECT 1\0");
    let mut error = BytesMut::new();
    messages::put_error(&mut error, Severity::Error, "42P01", "no such table", None);
    // A notification from the linked server itself (pid 7) is rewritten in place.
    let own_notify = message(b'A', b"\0\0\0\x07chan\0\0");
    let cases: [(Vec<BytesMut>, Vec<BytesMut>); 3] = [
        // unchanged, rewritten (named Parse and Bind), unchanged
        (
            vec![
                query("select 1"),
                parse("s1", "select $1"),
                bind("s1", b"x"),
                execute.clone(),
                sync(),
            ],
            vec![
                done.clone(),
                own_notify.clone(),
                ready.clone(),
                message(b'1', b""),
                message(b'2', b""),
                done.clone(),
                ready.clone(),
            ],
        ),
        // an unknown statement refused between unchanged messages; the server fails the
        // injected request
        (
            vec![
                query("select 1"),
                bind("nope", b"x"),
                execute.clone(),
                sync(),
                query("select 2"),
            ],
            vec![
                done.clone(),
                ready.clone(),
                error.clone(),
                ready.clone(),
                done.clone(),
                ready.clone(),
            ],
        ),
        // made-up replies (ParseComplete of a known statement, CloseComplete) in order
        (
            vec![
                parse("a", "select 1"),
                sync(),
                parse("a2", "select 1"),
                message(b'C', b"Sa\0"),
                bind("a2", b""),
                execute.clone(),
                sync(),
            ],
            vec![
                message(b'1', b""),
                ready.clone(),
                message(b'2', b""),
                done.clone(),
                ready.clone(),
            ],
        ),
    ];
    for (client, replies) in &cases {
        for waiting in [&b""[..], b"waiting"] {
            let together = outputs(client, replies, waiting, false);
            let apart = outputs(client, replies, waiting, true);
            assert_eq!(together, apart, "client {client:?}, replies {replies:?}");
            assert!(together[0].starts_with(waiting) && together[1].starts_with(waiting));
        }
    }
}

#[test]
fn unchanged_messages_move_without_a_copy() {
    let mut rw = Rewriter::new(Arc::new(StatementRegistry::default()), 10);
    let mut server = ServerStatements::default();
    let (mut c2s, mut s2c) = (
        BytesMut::with_capacity(CHUNK),
        BytesMut::with_capacity(CHUNK),
    );
    let mut input = BytesMut::with_capacity(CHUNK);
    input.extend_from_slice(&parse("", "select $1"));
    input.extend_from_slice(&bind("", b"x"));
    input.extend_from_slice(&sync());
    let (sent, memory) = (input.clone(), input.as_ptr());
    rw.client_to_server(&mut input, &mut c2s, &mut server, &mut s2c);
    assert_eq!(c2s, sent);
    assert_eq!(c2s.as_ptr(), memory, "the output took the input's memory");
    assert!(
        input.is_empty() && input.capacity() >= CHUNK,
        "the input has room to read"
    );

    input.extend_from_slice(&message(b'1', b""));
    input.extend_from_slice(&message(b'2', b""));
    input.extend_from_slice(&message(b'Z', b"I"));
    input.extend_from_slice(&message(b'C', b"S")[..3]); // the start of a later message
    let memory = input.as_ptr();
    rw.server_to_client(&mut input, &mut s2c, &mut server);
    assert_eq!(s2c.len(), 5 + 5 + 6);
    assert_eq!(s2c.as_ptr(), memory, "the output took the input's memory");
    assert_eq!(
        &input[..],
        &message(b'C', b"S")[..3],
        "an incomplete header stays"
    );
}
