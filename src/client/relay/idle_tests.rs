use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;

use super::super::tests::{link, msg};
use super::super::{Relay, RelayEnd, RelayMode};
use super::IdleEnd;
use crate::client::params::Reported;
use crate::client::rewrite::Rewriter;
use crate::net::Stream;
use crate::pool::prepared::{ServerStatements, StatementRegistry};

/// The relay buffers' capacities (client and server side, raw and rewritten).
fn capacities(relay: &Relay) -> [usize; 4] {
    [&relay.c2s, &relay.s2c, &relay.cin, &relay.sin].map(|b| b.capacity())
}

/// Runs the relay over one transaction whose bytes are already written; it must end
/// with the server released.
async fn run_to_release(relay: &mut Relay, client: &mut Stream, server: &mut DuplexStream) {
    let (mut p, mut s, mut ps) = (
        HashMap::new(),
        Reported::default(),
        ServerStatements::default(),
    );
    let mut link = link(&mut p, &mut s, &mut ps);
    let end = relay.run(client, server, true, &mut link).await;
    assert!(matches!(end, RelayEnd::Released), "{end:?}");
}

/// After a whole transaction, a client waiting for its next request holds no relay
/// buffer memory at all (the buffers went back to the per-thread spares), and its next
/// request is still read in full.
#[tokio::test]
async fn idle_client_between_transactions_holds_no_buffers() {
    let (a, mut client_far) = tokio::net::UnixStream::pair().expect("pair");
    let mut client = Stream::Unix(a);
    let (mut server, mut server_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(1 << 20);
    relay.mode = RelayMode::Transaction;
    let query = msg(b'Q', b"select 1\0");
    client_far.write_all(&query).await.expect("write");
    let first = relay.wait_for_request(&mut client).await;
    assert!(matches!(first, IdleEnd::Request), "{first:?}");

    // One transaction through the relay: the buffers are in use.
    let mut reply = msg(b'C', b"SELECT 1\0");
    reply.extend(msg(b'Z', b"I"));
    server_far.write_all(&reply).await.expect("reply");
    run_to_release(&mut relay, &mut client, &mut server).await;
    assert!(capacities(&relay).iter().any(|&c| c > 0), "used buffers");
    let mut got = vec![0u8; reply.len()];
    client_far.read_exact(&mut got).await.expect("replies");
    assert_eq!(got, reply);
    let mut forwarded = vec![0u8; query.len()];
    server_far.read_exact(&mut forwarded).await.expect("query");

    // Idle: the wait is pending with nothing sent, and holds no buffer.
    {
        let wait = std::pin::pin!(relay.wait_for_request(&mut client));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.poll(&mut cx).is_pending(), "nothing was sent");
    }
    assert_eq!(capacities(&relay), [0; 4], "an idle client holds no buffer");

    // The next request is read whole.
    let next = msg(b'Q', b"select 2\0");
    client_far.write_all(&next).await.expect("write");
    let second = relay.wait_for_request(&mut client).await;
    assert!(matches!(second, IdleEnd::Request), "{second:?}");
    assert_eq!(&relay.c2s[..], &next[..]);
}

/// Runs one transaction (`request`, answered by `reply`) through a relay with the
/// prepared-statement rewriter, then polls the idle wait once (nothing more was sent).
async fn rewriting_relay_after(request: &[u8], reply: &[u8]) -> (Relay, Stream, UnixStream) {
    let (a, mut client_far) = UnixStream::pair().expect("pair");
    let mut client = Stream::Unix(a);
    let (mut server, mut server_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(1 << 20);
    relay.mode = RelayMode::Transaction;
    let registry = Arc::new(StatementRegistry::default());
    relay.rewriter = Some(Box::new(Rewriter::new(registry, 10)));
    client_far.write_all(request).await.expect("write");
    let first = relay.wait_for_request(&mut client).await;
    assert!(matches!(first, IdleEnd::Request), "{first:?}");
    server_far.write_all(reply).await.expect("reply");
    run_to_release(&mut relay, &mut client, &mut server).await;
    let mut got = vec![0u8; reply.len()];
    client_far.read_exact(&mut got).await.expect("replies");
    {
        let wait = std::pin::pin!(relay.wait_for_request(&mut client));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.poll(&mut cx).is_pending(), "nothing was sent");
    }
    (relay, client, client_far)
}

/// An idle client whose rewriter holds nothing (no prepared statement) keeps no rewriter;
/// it has one again, unchanged in effect, as soon as its next request arrives.
#[tokio::test]
async fn idle_client_without_prepared_statements_holds_no_rewriter() {
    let mut reply = msg(b'C', b"SELECT 1\0");
    reply.extend(msg(b'Z', b"I"));
    let query = msg(b'Q', b"select 1\0");
    let (mut relay, mut client, mut client_far) = rewriting_relay_after(&query, &reply).await;
    assert!(
        relay.rewriter.is_none(),
        "the idle client's rewriter was given up"
    );

    let next = msg(b'Q', b"select 2\0");
    client_far.write_all(&next).await.expect("write");
    let second = relay.wait_for_request(&mut client).await;
    assert!(matches!(second, IdleEnd::Request), "{second:?}");
    assert!(
        relay.rewriter.is_some(),
        "the rewriter is back for the request"
    );
    assert_eq!(&relay.cin[..], &next[..], "the request awaits rewriting");
    assert_eq!(relay.lone_query(), Some(&b"select 2\0"[..]));
}

/// A client that prepared a statement keeps its rewriter (and the statement) while idle.
#[tokio::test]
async fn idle_client_with_a_prepared_statement_keeps_its_rewriter() {
    let mut parse = msg(b'P', b"s1\0select 1\0\0\0");
    parse.extend(msg(b'S', b""));
    let mut reply = msg(b'1', b"");
    reply.extend(msg(b'Z', b"I"));
    let (relay, _client, _far) = rewriting_relay_after(&parse, &reply).await;
    assert!(
        relay.rewriter.is_some(),
        "its statement lives in the rewriter"
    );
}
