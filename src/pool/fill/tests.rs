use std::sync::Arc;

use super::*;
use crate::pool::{PoolKey, PoolSettings, Timers};
use crate::server::{ServerCredential, ServerTarget};

/// A loopback port nothing listens on (connections are refused).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn pool(port: u16, connect_timeout: Duration) -> Arc<Pool> {
    let settings = crate::config::Settings::default();
    let target = ServerTarget {
        hosts: vec!["127.0.0.1".into()],
        port,
        dbname: "app".into(),
        user: "u".into(),
        credential: ServerCredential::None,
        startup_params: Vec::new(),
        tls: Arc::new(crate::net::TlsConfigs::load(&settings).expect("tls")),
        direct_tls: false,
        dns: Arc::new(crate::net::dns::DnsCache::new(Duration::from_secs(15))),
        options: Default::default(),
    };
    let settings = PoolSettings {
        pool_size: 1,
        reserve_pool_size: 0,
        reserve_pool_timeout: Duration::ZERO,
        query_wait_timeout: Duration::from_secs(60),
        connect_timeout,
        server_lifetime: Duration::ZERO,
        server_idle_timeout: Duration::ZERO,
        min_pool_size: 1,
        server_check_delay: Duration::ZERO,
        server_check_query: None,
        limits: Vec::new(),
        server_login_retry: Duration::ZERO,
    };
    let key = PoolKey {
        database: "app".into(),
        user: "u".into(),
    };
    Pool::new(key, target, settings, Timers::detached())
}

#[tokio::test]
async fn a_fill_during_an_outage_makes_one_attempt_and_keeps_no_slot() {
    let p = pool(closed_port(), Duration::from_secs(30));
    tokio::time::timeout(Duration::from_secs(20), p.fill_min())
        .await
        .expect("the fill returns after its attempt instead of retrying");
    assert_eq!(p.queue.available(), 1, "the slot is free again");
    assert_eq!(p.stats.logging_in.load(Ordering::Relaxed), 0);
    assert_eq!(p.stats.timers.connect_failures.get(), 1);
    assert_eq!(p.idle_count(), 0);
    // The next janitor tick comes within the backoff: no new attempt.
    p.fill_min().await;
    assert_eq!(p.stats.timers.connect_failures.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_after_each_failure_up_to_the_cap_and_resets_on_success() {
    let f = Filler::default();
    let mut expected = FIRST_BACKOFF;
    for _ in 0..6 {
        let run = f.start().expect("due");
        drop(run);
        f.failed();
        assert!(f.start().is_none(), "backing off");
        tokio::time::advance(expected - Duration::from_millis(1)).await;
        assert!(f.start().is_none(), "still backing off");
        tokio::time::advance(Duration::from_millis(1)).await;
        expected = (expected * 2).min(MAX_BACKOFF);
    }
    assert_eq!(expected, MAX_BACKOFF);
    let run = f.start().expect("due");
    assert!(f.start().is_none(), "one fill at a time");
    drop(run);
    f.succeeded();
    f.failed();
    tokio::time::advance(FIRST_BACKOFF).await;
    assert!(
        f.start().is_some(),
        "back to the first pause after a success"
    );
}

#[tokio::test]
async fn a_fill_attempt_gives_its_slot_to_a_client_that_queues() {
    // A server that accepts and never answers: the fill's attempt would last its whole
    // connect_timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let p = pool(port, Duration::from_secs(60));
    let filler = tokio::spawn({
        let p = p.clone();
        async move { p.fill_min().await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.stats.logging_in.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the fill starts connecting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.queue.available(), 0, "the fill holds the slot");
    let client = tokio::spawn({
        let p = p.clone();
        async move { p.checkout().await.map(|_| ()) }
    });
    tokio::time::timeout(Duration::from_secs(10), filler)
        .await
        .expect("the fill gives up its attempt")
        .expect("fill task");
    // The client has the slot now and connects itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.stats.waiting.load(Ordering::Relaxed) > 0 {
        assert!(Instant::now() < deadline, "the client gets the slot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        p.stats.logging_in.load(Ordering::Relaxed),
        1,
        "the client's attempt"
    );
    assert_eq!(p.stats.timers.connect_failures.get(), 0);
    client.abort();
    accepted.abort();
}
