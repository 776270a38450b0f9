use std::collections::HashMap;
use std::future::Future;
use std::task::{Context, Waker};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::tests::{link, msg};
use super::super::{Relay, RelayEnd, RelayMode};
use super::IdleEnd;
use crate::client::params::Reported;
use crate::net::Stream;
use crate::pool::prepared::ServerStatements;

/// The relay buffers' capacities (client and server side, raw and rewritten).
fn capacities(relay: &Relay) -> [usize; 4] {
    [&relay.c2s, &relay.s2c, &relay.cin, &relay.sin].map(|b| b.capacity())
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
    let (mut p, mut s, mut ps) = (
        HashMap::new(),
        Reported::default(),
        ServerStatements::default(),
    );
    let mut link = link(&mut p, &mut s, &mut ps);
    let end = relay.run(&mut client, &mut server, true, &mut link).await;
    assert!(matches!(end, RelayEnd::Released), "{end:?}");
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
