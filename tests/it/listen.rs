//! LISTEN/NOTIFY in transaction mode through the pool's shared listener.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::harness::*;
use crate::proxy::*;

/// Connects and returns the client plus a channel of (channel, payload) notifications.
async fn listener_client(
    proxy: &Proxy,
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<(String, String)>,
) {
    let (c, mut connection) = tokio_postgres::connect(
        &proxy.conn_str("plain_user", "plain_pass", "app"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    (c, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification in time")
        .expect("connection alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_fan_out_to_listeners_that_hold_no_server() {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=1");
    let proxy = Proxy::simple(&opts, "").await;
    let channel = unique_name("jobs");
    let (a, mut a_rx) = listener_client(&proxy).await;
    let (c, mut c_rx) = listener_client(&proxy).await;
    a.batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("a listens");
    c.batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("c listens");
    // both listeners are idle; with a pool of one, b still gets the server at once
    let b = proxy.connect("plain_user", "plain_pass", "app").await;
    b.batch_execute(&format!("NOTIFY {channel}, 'hello'"))
        .await
        .expect("notify");
    assert_eq!(next(&mut a_rx).await, (channel.clone(), "hello".to_owned()));
    assert_eq!(next(&mut c_rx).await, (channel.clone(), "hello".to_owned()));
    // listeners keep running queries in between
    a.simple_query("select 1").await.expect("a queries");
    a.batch_execute(&format!("UNLISTEN {channel}"))
        .await
        .expect("unlisten");
    b.batch_execute(&format!("NOTIFY {channel}, 'second'"))
        .await
        .expect("notify");
    assert_eq!(next(&mut c_rx).await.1, "second", "c still listens");
    drop(c);
    b.batch_execute(&format!("NOTIFY {channel}, 'third'"))
        .await
        .expect("notify");
    a.batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen again");
    b.batch_execute(&format!("NOTIFY {channel}, 'fourth'"))
        .await
        .expect("notify");
    assert_eq!(
        next(&mut a_rx).await.1,
        "fourth",
        "a got nothing while unlistened, then the new one"
    );
}
