use super::*;

#[test]
fn averages_follow_pgbouncer_rules() {
    let older = StatsTotals {
        query_count: 10,
        query_time: 1000,
        xact_count: 5,
        xact_time: 500,
        ..Default::default()
    };
    let now = StatsTotals {
        query_count: 30,
        query_time: 5000,
        xact_count: 5,
        xact_time: 900,
        bytes_received: 2000,
        ..Default::default()
    };
    let avg = now.averages(&older, Duration::from_secs(2));
    assert_eq!(avg.query_count, 10, "20 queries in 2 s");
    assert_eq!(avg.query_time, 200, "4000 us over 20 queries");
    assert_eq!(avg.xact_time, 0, "no transaction finished: no average");
    assert_eq!(avg.bytes_received, 1000);
    assert_eq!(now.averages(&older, Duration::ZERO), StatsTotals::default());
}

#[test]
fn waiters_and_loans_are_tracked() {
    let stats = PoolStats::new(Timers::detached());
    let t = stats.wait_started();
    assert_eq!(stats.waiting.load(Ordering::Relaxed), 1);
    drop(t);
    assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
    assert_eq!(stats.max_wait(), Duration::ZERO);
    let info = Arc::new(ServerInfo {
        id: 7,
        addr: "127.0.0.1".into(),
        port: 5432,
        local_addr: String::new(),
        local_port: 0,
        connect_time: std::time::SystemTime::now(),
        pid: 1,
        created: Instant::now(),
        replication: "none",
        on_loan: Default::default(),
    });
    stats.track(&info);
    assert!(stats.on_loan().is_empty());
    stats.lent(&info, Duration::from_millis(3));
    assert_eq!(stats.on_loan().len(), 1);
    assert_eq!(stats.totals().wait_time, 3000);
    stats.returned(&info);
    assert!(stats.on_loan().is_empty());
    assert_eq!(stats.active.load(Ordering::Relaxed), 0);
}
