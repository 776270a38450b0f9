use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The per-link state the relay borrows, from the caller's parts (also used by
/// `idle::tests`).
pub(super) fn link<'a>(
    params: &'a mut HashMap<String, String>,
    seen: &'a mut Reported,
    prepared: &'a mut ServerStatements,
) -> LinkState<'a> {
    LinkState {
        params,
        seen,
        prepared,
    }
}

/// One protocol message: tag, length, body.
pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Runs the relay with fresh link state for at most `ms` milliseconds; None when it was
/// still running then.
async fn run_for(
    relay: &mut Relay,
    client: &mut DuplexStream,
    server: &mut DuplexStream,
    ms: u64,
) -> Option<RelayEnd> {
    let (mut p, mut s) = (HashMap::new(), Reported::default());
    let mut ps = ServerStatements::default();
    let mut state = link(&mut p, &mut s, &mut ps);
    let run = relay.run(client, server, true, &mut state);
    tokio::time::timeout(std::time::Duration::from_millis(ms), run)
        .await
        .ok()
}

/// A transaction-mode relay whose client (far end `client_far`) sent the Query `sql`,
/// read as the request that asks for a server (far end `server_far`).
async fn requested(
    sql: &[u8],
) -> (
    Relay,
    DuplexStream,
    DuplexStream,
    DuplexStream,
    DuplexStream,
) {
    let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
    let (server, server_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(1 << 20);
    relay.mode = RelayMode::Transaction;
    client_far.write_all(&msg(b'Q', sql)).await.unwrap();
    assert!(matches!(
        relay.wait_for_request(&mut client).await,
        IdleEnd::Request
    ));
    (relay, client, client_far, server, server_far)
}

#[tokio::test]
async fn releases_server_on_ready_for_query_idle() {
    let (mut relay, mut client, mut client_far, mut server, mut server_far) =
        requested(b"select 1\0").await;
    let server_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 14];
        server_far.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf[0], b'Q');
        let mut reply = msg(b'T', b"\0\0");
        reply.extend(msg(b'C', b"SELECT 1\0"));
        reply.extend(msg(b'Z', b"I"));
        server_far.write_all(&reply).await.unwrap();
        server_far
    });
    let (mut p, mut s) = (HashMap::new(), Reported::default());
    let mut ps = ServerStatements::default();
    let end = relay
        .run(
            &mut client,
            &mut server,
            true,
            &mut link(&mut p, &mut s, &mut ps),
        )
        .await;
    assert!(matches!(end, RelayEnd::Released), "{end:?}");
    let mut got = vec![0u8; 7 + 14 + 6];
    client_far.read_exact(&mut got).await.unwrap();
    assert_eq!(got[got.len() - 6..], msg(b'Z', b"I")[..]);
    drop(server_task.await.unwrap());
}

#[tokio::test]
async fn keeps_server_while_in_transaction_and_tracks_parameters() {
    let (mut relay, mut client, mut client_far, mut server, mut server_far) =
        requested(b"begin\0").await;
    let mut reply = msg(b'S', b"TimeZone\0UTC\0");
    reply.extend(msg(b'Z', b"T"));
    server_far.write_all(&reply).await.unwrap();
    let (mut p, mut s) = (HashMap::new(), Reported::default());
    let mut ps = ServerStatements::default();
    let end = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        relay.run(
            &mut client,
            &mut server,
            true,
            &mut link(&mut p, &mut s, &mut ps),
        ),
    )
    .await;
    assert!(end.is_err(), "must stay linked inside a transaction");
    assert_eq!(p.get("TimeZone").map(String::as_str), Some("UTC"));
    assert_eq!(s.get("TimeZone").map(String::as_str), Some("UTC"));
    // the client leaves mid-transaction: reported as ClientGone, tracker not idle
    client_far.write_all(&msg(b'X', b"")).await.unwrap();
    let end = relay
        .run(
            &mut client,
            &mut server,
            true,
            &mut link(&mut p, &mut s, &mut ps),
        )
        .await;
    assert!(matches!(end, RelayEnd::ClientGone), "{end:?}");
    assert!(!relay.tracker.is_idle());
    let mut fwd = vec![0u8; 11];
    server_far.read_exact(&mut fwd).await.unwrap();
    assert_eq!(fwd[0], b'Q', "Terminate must not reach the server");
}

#[tokio::test]
async fn unknown_message_type_is_refused_while_idle() {
    let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(1 << 20);
    client_far.write_all(&msg(b'z', b"")).await.unwrap();
    assert!(matches!(
        relay.wait_for_request(&mut client).await,
        IdleEnd::ClientProtocol(ClientViolation::UnknownType { tag: b'z' })
    ));
    assert!(relay.c2s.is_empty(), "nothing of it is kept");
}

#[tokio::test]
async fn refused_message_split_across_reads_never_reaches_the_server() {
    let (mut relay, mut client, mut client_far, mut server, mut server_far) =
        requested(b"begin\0").await;
    server_far.write_all(&msg(b'Z', b"T")).await.unwrap();
    let password = msg(b'p', b"secret\0");
    client_far.write_all(&password[..2]).await.unwrap();
    let end = run_for(&mut relay, &mut client, &mut server, 100).await;
    assert!(end.is_none(), "half a header: still linked");
    client_far.write_all(&password[2..]).await.unwrap();
    let end = run_for(&mut relay, &mut client, &mut server, 10_000).await;
    let end = end.expect("the relay ends");
    assert!(
        matches!(
            end,
            RelayEnd::ClientProtocol(ClientViolation::PasswordAfterLogin)
        ),
        "{end:?}"
    );
    assert!(!relay.server_clean(), "inside a transaction: not reusable");
    drop(server);
    let mut got = Vec::new();
    server_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(
        got,
        msg(b'Q', b"begin\0"),
        "not a byte of the password message"
    );
}

#[tokio::test]
async fn client_is_not_read_while_its_pipeline_is_full() {
    let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
    let (mut server, mut server_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(1 << 20);
    relay.mode = RelayMode::Transaction;
    relay.max_pipeline = 3;
    let pool = std::sync::Arc::new(crate::pool::stats::PoolStats::new(
        crate::pool::stats::Timers::detached(),
    ));
    relay.stats = LinkStats::for_pool(&pool, tracing::Span::none());
    let syncs = msg(b'S', b"").repeat(3);
    client_far.write_all(&syncs).await.unwrap();
    assert!(matches!(
        relay.wait_for_request(&mut client).await,
        IdleEnd::Request
    ));
    assert!(run_for(&mut relay, &mut client, &mut server, 100)
        .await
        .is_none());
    client_far.write_all(&syncs).await.unwrap();
    assert!(run_for(&mut relay, &mut client, &mut server, 100)
        .await
        .is_none());
    let mut got = vec![0u8; 15];
    server_far.read_exact(&mut got).await.unwrap();
    assert_eq!(
        relay.tracker.outstanding(),
        3,
        "the next three are not read"
    );
    server_far
        .write_all(&msg(b'Z', b"I").repeat(3))
        .await
        .unwrap();
    assert!(run_for(&mut relay, &mut client, &mut server, 100)
        .await
        .is_none());
    assert_eq!(relay.tracker.outstanding(), 3, "read once answers drained");
    server_far.read_exact(&mut got).await.unwrap();
    assert_eq!(got, syncs);
    assert_eq!(
        pool.timers.pipeline_full.get(),
        2,
        "each stretch of back-pressure is counted once"
    );
}

#[tokio::test]
async fn oversized_client_message_is_a_protocol_error() {
    let (mut client, mut client_far) = tokio::io::duplex(1 << 16);
    let mut relay = Relay::new(100);
    client_far.write_all(&[b'Q', 0, 1, 0, 0]).await.unwrap();
    assert!(matches!(
        relay.wait_for_request(&mut client).await,
        IdleEnd::ClientProtocol(ClientViolation::Frame(FrameError::TooLarge { .. }))
    ));
}
