//! The fleet budget: two peers under load never hold more server connections than the
//! budget (counted in pg_stat_activity) while one starts and stops.

use super::*;
/// Server connections of `role` on `app`, as Postgres counts them.
async fn backends(probe: &Client, role: &str) -> usize {
    let sql = format!(
        "select count(*) from pg_stat_activity where backend_type = 'client backend' \
         and usename = '{role}' and datname = 'app'"
    );
    let rows = probe.simple_query(&sql).await.expect("count backends");
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .expect("a count")
}

/// Runs short transactions on `m` from `clients` clients until `stop` fires.
fn load(
    m: &Member,
    clients: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let conn = format!(
        "host={} port={} user=plain_user password=plain_pass dbname=app connect_timeout=30",
        m.addr.ip(),
        m.addr.port()
    );
    (0..clients)
        .map(|_| {
            let conn = conn.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (c, connection) = tokio_postgres::connect(&conn, NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                let mut done = 0u64;
                // Bounded: at most 2000 statements per client.
                while !stop.is_cancelled() && done < 2000 {
                    let q = c.simple_query("select pg_sleep(0.01)");
                    tokio::select! {
                        r = q => { r.expect("query under the budget"); done += 1; }
                        _ = stop.cancelled() => break,
                    }
                }
                done
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_budget_holds_while_a_peer_starts_and_stops() {
    let pg = PgServer::shared();
    let role = pg.create_role("fleet_budget", "budget_pw");
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let db = db_line("app", "app", &format!("user={role} password=budget_pw"));
    let extra = |id: usize| {
        format!(
            "peer_id = {id}\npool_mode = transaction\ndefault_pool_size = 10\n\
             fleet_max_db_connections = 4\nfleet_grace_period = 2\ndns_max_ttl = 0.5\n{}",
            peers_section(&ports)
        )
    };
    let probe = pg.connect(SUPERUSER, None, "postgres").await;
    let mut peak = 0usize;
    let mut sample = |n: usize| peak = peak.max(n);

    // A alone: peer 2 is listed but down, so after the grace A takes the whole budget.
    let a = Member::start("127.0.0.1", ports[0], &db, &extra(1)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load_a = load(&a, 8, &stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = backends(&probe, &role).await;
        sample(n);
        if n == 4 && a.app().fleet.shares().0 == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never took the budget: {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B joins under load: A shrinks to 2 before B takes its 2.
    let mut b = Member::start("127.0.0.1", ports[1], &db, &extra(2)).await;
    let stop_b = tokio_util::sync::CancellationToken::new();
    let load_b = load(&b, 8, &stop_b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = backends(&probe, &role).await;
        sample(n);
        let b_servers: usize = b
            .app()
            .pools
            .iter()
            .map(|p| p.idle_count() + p.stats.active.load(Ordering::Relaxed))
            .sum();
        if a.app().fleet.shares().0 == 2 && b.app().fleet.shares().0 == 2 && b_servers > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never got its share"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B's clients leave and B stops (as its process exits after a drain, its server
    // connections close): A takes B's share back only after the grace period.
    stop_b.cancel();
    let mut done = 0;
    for h in load_b {
        done += h.await.expect("load task on B");
    }
    let b_app = b.app().clone();
    let stopped = tokio::time::Instant::now();
    b.stop().await;
    // The in-process stop leaves B's idle server connections to its pools; a process that
    // exits closes them. Close them and wait until Postgres saw them go.
    for p in b_app.pools.iter() {
        p.close_idle();
    }
    drop(b_app);
    let servers_of_a = || -> usize {
        a.app()
            .pools
            .iter()
            .map(|p| p.idle_count() + p.stats.active.load(Ordering::Relaxed))
            .sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = backends(&probe, &role).await;
        sample(n);
        if n <= servers_of_a() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's servers never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = stopped + Duration::from_secs(20);
    loop {
        let n = backends(&probe, &role).await;
        sample(n);
        if a.app().fleet.shares().0 == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never reclaimed B's share"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The grace counts from B's last answer, at most one refresh period (0.5 s) before it
    // stopped.
    assert!(
        stopped.elapsed() >= Duration::from_millis(1400),
        "B's share was reclaimed before the grace period"
    );
    stop.cancel();
    for h in load_a {
        done += h.await.expect("load task");
    }
    assert!(done > 0, "the load ran");
    assert!(
        peak <= 4,
        "the fleet opened {peak} server connections over a budget of 4"
    );
}
