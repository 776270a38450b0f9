//! Fuzz targets for every pgfunnel component that reads bytes from a peer or a file.
//! Each target takes arbitrary bytes and must never panic, loop or allocate without bound.
//! The same functions run under libFuzzer (`cargo fuzz run <name>`, see fuzz_targets/) and
//! as a seeded, time-bounded property test in the main crate (tests/fuzz_smoke.rs), which
//! includes this file by path so both always fuzz exactly the same code.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use pgfunnel::auth::{AuthFile, Hba, HbaRequest, ScramClient, ScramSecret, ScramServer};
use pgfunnel::client::lexer;
use pgfunnel::client::rewrite::Rewriter;
use pgfunnel::client::statement::recognise;
use pgfunnel::client::tracker::Tracker;
use pgfunnel::client::validate::{Validator, LARGE_MESSAGE_LIMIT, SMALL_MESSAGE_LIMIT};
use pgfunnel::config::Config;
use pgfunnel::pool::prepared::{ServerStatements, StatementRegistry};
use pgfunnel::protocol::frame::{Capture, FrameError, ScanEvent, Scanner};
use pgfunnel::protocol::startup::decode_startup;

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target by name (the names of the files in fuzz_targets/ and corpus/).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_scanner", frame_scanner),
    ("startup_packet", startup_packet),
    ("scram_server", scram_server),
    ("scram_client", scram_client),
    ("auth_file", auth_file),
    ("ini_config", ini_config),
    ("hba", hba),
    ("statement", statement),
    ("tracker", tracker),
    ("rewriter", rewriter),
    ("client_validator", client_validator),
];

/// Splits `data` at the first `0xff` byte (a separator no SCRAM message may contain).
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Replaces the first `@@` in `data` with `with` (lets the fuzzer echo a random nonce).
fn splice_nonce(data: &[u8], with: &[u8]) -> Vec<u8> {
    match data.windows(2).position(|w| w == b"@@") {
        Some(i) => [&data[..i], with, &data[i + 2..]].concat(),
        None => data.to_vec(),
    }
}

/// Owned copy of a scan event, to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Header(u8, u32),
    Message(u8, Vec<u8>),
}

fn scan(
    scanner: &mut Scanner,
    data: &[u8],
    out: &mut Vec<Ev>,
    stop: bool,
) -> Result<(), FrameError> {
    let mut rest = data;
    while !rest.is_empty() {
        let mut stopped = false;
        let n = scanner.feed(
            rest,
            |tag, _| {
                if tag.is_ascii_uppercase() {
                    Capture::Body
                } else {
                    Capture::Skip
                }
            },
            |ev| {
                out.push(match ev {
                    ScanEvent::Header { tag, len } => Ev::Header(tag, len),
                    ScanEvent::Message { tag, body } => Ev::Message(tag, body.to_vec()),
                });
                stopped = stop;
                !stop
            },
        )?;
        assert!(n <= rest.len(), "consumed more than fed");
        assert!(n == rest.len() || stopped, "stopped without being asked");
        if n == 0 && !stopped {
            break;
        }
        rest = &rest[n..];
    }
    Ok(())
}

/// The relay's frame scanner: the events must not depend on how the bytes are split into
/// reads, nor on stopping after each message; lengths below 4 or over the limit are errors.
pub fn frame_scanner(data: &[u8]) {
    let Some((&knobs, data)) = data.split_first() else {
        return;
    };
    let max_len = 16u32 << (knobs & 0x0f);
    let mut whole = Vec::new();
    let whole_result = scan(&mut Scanner::new(max_len), data, &mut whole, false);

    let mut chunked = Vec::new();
    let mut scanner = Scanner::new(max_len);
    let mut chunk_result = Ok(());
    let mut rest = data;
    let mut step = usize::from(knobs >> 4) + 1;
    while !rest.is_empty() && chunk_result.is_ok() {
        let n = step.min(rest.len());
        chunk_result = scan(&mut scanner, &rest[..n], &mut chunked, knobs & 0x80 != 0);
        rest = &rest[n..];
        step = step % 7 + 1;
    }
    assert_eq!(
        whole_result.is_err(),
        chunk_result.is_err(),
        "error depends on chunking"
    );
    if whole_result.is_ok() {
        assert_eq!(whole, chunked, "events depend on chunking");
    } else {
        assert_eq!(whole_result, chunk_result);
    }
}

/// Startup, SSLRequest, GSSENCRequest and CancelRequest bodies (after the length field).
pub fn startup_packet(data: &[u8]) {
    let _ = decode_startup(data);
}

/// pgfunnel as SCRAM server: client-first then client-final (`@@` in the final message
/// stands for the combined nonce, so the fuzzer gets past the nonce check).
pub fn scram_server(data: &[u8]) {
    let (first, last) = split2(data);
    let secret = ScramSecret::from_password(b"pencil", b"fuzz-salt-123456", 16);
    let mut servers = [
        ScramServer::new(secret),
        ScramServer::for_unknown_user("nobody", b"fuzz mock key"),
    ];
    for server in &mut servers {
        let Ok(server_first) = server.client_first("SCRAM-SHA-256", first) else {
            continue;
        };
        let nonce = server_first
            .split(|&b| b == b',')
            .next()
            .and_then(|r| r.strip_prefix(b"r="))
            .unwrap_or_default();
        let _ = server.client_final(&splice_nonce(last, nonce));
    }
}

/// pgfunnel as SCRAM client toward a (hostile) server: server-first then server-final. `@@`
/// in server-first stands for the client's nonce. Iteration counts the client accepts are
/// computed for real, so the target skips inputs asking for more than 4096 (the cap itself
/// is checked by unit and flood tests).
pub fn scram_client(data: &[u8]) {
    let (first, last) = split2(data);
    if asks_many_iterations(first) {
        return;
    }
    let mut client = ScramClient::with_password(b"pencil");
    let client_first = client.client_first();
    let nonce = client_first
        .rsplit(|&b| b == b'=')
        .next()
        .unwrap_or_default();
    if client.server_first(&splice_nonce(first, nonce)).is_ok() {
        let _ = client.server_final(last);
    }
}

fn asks_many_iterations(msg: &[u8]) -> bool {
    msg.windows(2).enumerate().any(|(i, w)| {
        w == b"i=" && {
            let digits: Vec<u8> = msg[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            digits.len() > 4
                || std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
                    > Some(4096)
        }
    })
}

/// PgBouncer's auth_file format (`"user" "secret"` lines).
pub fn auth_file(data: &[u8]) {
    if let Ok(file) = AuthFile::parse(&String::from_utf8_lossy(data), "userlist.txt") {
        for user in file.users().collect::<Vec<_>>() {
            let _ = file.get(user);
        }
    }
}

/// The ini config (PgBouncer format with pgfunnel keys). `%include` would read arbitrary
/// files, so inputs with `%` are skipped; the include logic has its own tests.
pub fn ini_config(data: &[u8]) {
    if data.contains(&b'%') {
        return;
    }
    let origin = Path::new("/nonexistent-pgfunnel-fuzz/pgbouncer.ini");
    if let Ok(config) = Config::parse_str(&String::from_utf8_lossy(data), origin) {
        let _ = config.effective_settings();
        let _ = config.database("app");
    }
}

/// pg_hba.conf subset, then lookups that walk every rule.
pub fn hba(data: &[u8]) {
    let Ok(hba) = Hba::parse(&String::from_utf8_lossy(data)) else {
        return;
    };
    let addrs: [Option<IpAddr>; 3] = [
        None,
        Some("127.0.0.1".parse().expect("literal")),
        Some("::1".parse().expect("literal")),
    ];
    for addr in addrs {
        for tls in [false, true] {
            let _ = hba.lookup(&HbaRequest {
                database: "app",
                user: "app",
                addr,
                tls,
                replication: false,
            });
        }
    }
}

/// The SET/RESET/LISTEN/pin statement recogniser on Query and Parse texts, and the
/// lexer under it: tokens stay inside the text, in order, and statements split only on
/// `;` tokens.
pub fn statement(data: &[u8]) {
    let _ = recognise(data);
    for escapes in [false, true] {
        let mut toks = Vec::new();
        lexer::lex(data, escapes, &mut toks);
        let mut last_end = 0;
        for t in &toks {
            assert!(t.start >= last_end && t.start < t.end && t.end as usize <= data.len());
            assert!(t.inner_start <= t.inner_end && t.inner_end <= t.end);
            last_end = t.end;
        }
        let n: usize = lexer::statements(data, &toks).map(|r| r.len()).sum();
        let semis = toks.iter().filter(|t| t.is_punct(data, b';')).count();
        assert_eq!(n + semis, toks.len());
    }
}

/// Cursor over fuzz bytes; runs dry with zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const CLIENT_TAGS: &[u8] = b"QPBDCEHSFdcfX";
const SERVER_TAGS: &[u8] = b"123CDEZTnstIGHWcdANSKV";

/// The transaction/request tracker driven by an arbitrary sequence of client messages and
/// server replies; its answers must stay consistent (idle implies nothing outstanding).
pub fn tracker(data: &[u8]) {
    let mut t = Tracker::default();
    let mut input = Bytes(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 10_000 {
        steps += 1;
        let op = input.byte();
        let tag = CLIENT_TAGS[usize::from(input.byte()) % CLIENT_TAGS.len()];
        match op % 6 {
            0 => t.client_message(tag),
            1 => {
                t.client_message(tag);
                let n = usize::from(input.byte());
                t.client_body(tag, input.take(n));
            }
            2 => t.server_error(),
            3 => {
                let n = usize::from(input.byte() % 16);
                t.command_complete(input.take(n));
            }
            4 => t.ready_for_query(*b"ITE".get(usize::from(input.byte() % 4)).unwrap_or(&b'?')),
            _ => t.forget_last_request(),
        }
        if t.is_idle() {
            assert!(t.nothing_outstanding(), "idle with requests outstanding");
        }
        t.changes.clear();
    }
}

fn put_msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// A plausible body for `tag` built from fuzz bytes: names and texts from a tiny alphabet,
/// so statement names collide and Parse/Bind/Close refer to each other.
fn client_body(input: &mut Bytes<'_>, tag: u8) -> Vec<u8> {
    let name = |input: &mut Bytes<'_>| -> Vec<u8> {
        match input.byte() % 4 {
            0 => Vec::new(),
            k => vec![b'a' + k],
        }
    };
    let mut body = Vec::new();
    match tag {
        b'P' => {
            body.extend(name(input));
            body.push(0);
            body.extend_from_slice(
                [b"SELECT 1" as &[u8], b"SELECT 2", b"SET x = 1"][usize::from(input.byte() % 3)],
            );
            body.push(0);
            body.extend_from_slice(&[0, 0]);
        }
        b'B' => {
            body.extend(name(input));
            body.push(0);
            body.extend(name(input));
            body.push(0);
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        b'D' | b'C' => {
            body.push(if input.byte() & 1 == 0 { b'S' } else { b'P' });
            body.extend(name(input));
            body.push(0);
        }
        b'E' => {
            body.extend(name(input));
            body.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        b'Q' => body.extend_from_slice(b"SELECT 1\0"),
        _ => {}
    }
    if input.byte().is_multiple_of(8) {
        // Sometimes truncated or garbage, as a hostile client would send.
        let n = usize::from(input.byte());
        body.truncate(n % (body.len() + 1));
        body.extend_from_slice(input.take(n % 8));
    }
    body
}

/// The prepared-statement rewriter between a random client message stream and random
/// server replies, delivered in random pieces: it must not panic, must consume every
/// complete message it is given, and must not grow without bound.
pub fn rewriter(data: &[u8]) {
    let mut input = Bytes(data);
    let capacity = usize::from(input.byte() % 4) + 1;
    let registry = Arc::new(StatementRegistry::default());
    let mut rw = Rewriter::new(registry.clone(), capacity);
    let mut server = ServerStatements::default();
    let (mut c_in, mut s_in) = (BytesMut::new(), BytesMut::new());
    let (mut c_pending, mut s_pending) = (BytesMut::new(), BytesMut::new());
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        let op = input.byte();
        match op % 4 {
            0 => {
                let tag = CLIENT_TAGS[usize::from(input.byte()) % CLIENT_TAGS.len()];
                let body = client_body(&mut input, tag);
                put_msg(&mut c_pending, tag, &body);
            }
            1 => {
                let tag = SERVER_TAGS[usize::from(input.byte()) % SERVER_TAGS.len()];
                let body: Vec<u8> = match tag {
                    b'Z' => vec![*b"ITE".get(usize::from(input.byte() % 3)).unwrap_or(&b'I')],
                    b'E' => b"SERROR\0C26000\0Mfuzz\0\0".to_vec(),
                    b'C' => b"SELECT 1\0".to_vec(),
                    _ => {
                        let n = usize::from(input.byte() % 16);
                        input.take(n).to_vec()
                    }
                };
                put_msg(&mut s_pending, tag, &body);
            }
            2 => {
                let n = usize::from(input.byte()).min(c_pending.len());
                c_in.extend_from_slice(&c_pending.split_to(n));
                rw.client_to_server(&mut c_in, &mut to_server, &mut server, &mut to_client);
                assert_incomplete(&c_in, "client_to_server left a whole message");
            }
            _ => {
                let n = usize::from(input.byte()).min(s_pending.len());
                s_in.extend_from_slice(&s_pending.split_to(n));
                rw.server_to_client(&mut s_in, &mut to_client, &mut server);
                assert_incomplete(&s_in, "server_to_client left a whole message");
            }
        }
        to_server.clear();
        to_client.clear();
        // Over capacity is allowed transiently: when the server fails a pipeline, the
        // evicting Closes it skipped are undone (the server still has those statements) and
        // the next Parse trims the LRU again. It can never hold what the pool never saw.
        assert!(
            server.len() <= registry.len(),
            "server holds unknown statements"
        );
    }
    let _ = rw.is_settled();
}

/// After a rewriter pass, what stays in `buf` is less than one whole message.
fn assert_incomplete(buf: &BytesMut, what: &str) {
    if buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert!(buf.len() < len + 1, "{what}: {} bytes left", buf.len());
    }
}

/// The relay's client-side checks: random bytes in random reads through the frame scanner
/// and the validator, with random server message types in between (CopyInResponse opens a
/// copy) and a random answered/unanswered state. Every accepted message has a type and length Postgres accepts, copy messages
/// pass only inside a copy, and a refused message starts after the last byte that could
/// have been forwarded (incomplete headers are held back), at its own type byte.
pub fn client_validator(data: &[u8]) {
    let mut input = Bytes(data);
    let mut scanner = Scanner::new(1 << 20);
    let mut validator = Validator::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        let op = input.byte();
        if op & 0x80 != 0 {
            validator.server_message(*b"GWEZCTD".get(usize::from(op & 0x07)).unwrap_or(&b'N'));
            continue;
        }
        let unanswered = op & 0x40 != 0;
        let start = buf.len();
        buf.extend_from_slice(input.take(usize::from(op & 0x1f) + 1));
        // What the relay may already have forwarded: everything before this read's bytes
        // except an incomplete header held back.
        let forwarded = start - scanner.partial_header_len();
        let mut refused = None;
        let result = scanner.feed(
            &buf[start..],
            |_, _| Capture::Skip,
            |ev| {
                let ScanEvent::Header { tag, len } = ev else {
                    return true;
                };
                let copy_open = validator.in_copy_in();
                match validator.client_message(tag, len, unanswered) {
                    Ok(()) => {
                        let max = if b"QPBFd".contains(&tag) {
                            LARGE_MESSAGE_LIMIT
                        } else {
                            SMALL_MESSAGE_LIMIT
                        };
                        assert!(b"QPBDCESHFXdcf".contains(&tag), "accepted type {tag}");
                        assert!(len <= max, "accepted length {len} for {tag}");
                        assert!(
                            copy_open || unanswered || !b"dcf".contains(&tag),
                            "copy message where no COPY can be"
                        );
                        true
                    }
                    Err(e) => {
                        refused = Some(tag);
                        let _ = e.to_string();
                        false
                    }
                }
            },
        );
        let failed = result.is_err();
        let consumed = match result {
            Ok(n) => n,
            Err(_) => scanner.consumed_before_error(),
        };
        if refused.is_none() && !failed {
            continue;
        }
        let at = (start + consumed)
            .checked_sub(5)
            .expect("a refused header is whole");
        assert!(at >= forwarded, "part of a refused header was forwardable");
        if let Some(tag) = refused {
            assert_eq!(buf[at], tag, "refused message starts at its type byte");
        }
        return;
    }
}
