//! Restarts without drops: so_reuseport lets a new instance bind next to a draining one,
//! in-process and as processes under pgbench.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_lets_a_new_instance_serve_while_the_old_one_drains() {
    PgServer::shared();
    let port = free_port();
    let db = db_line("app", "app", &forced());
    let extra = "so_reuseport = 1\npool_mode = transaction";
    let old = Member::start("127.0.0.1", port, &db, extra).await;
    let held = old.connect("app").await;
    held.batch_execute("begin; create temp table t (x int); insert into t values (1)")
        .await
        .expect("transaction on the old instance");

    // Without so_reuseport the port is taken; with it the new version binds next to the old.
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("p.ini");
    std::fs::write(
        &ini,
        format!("[databases]\n{db}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"),
    )
    .expect("write");
    let refused = app::start(Config::load(&ini).expect("config")).await;
    assert!(refused.is_err(), "a second bind without so_reuseport fails");
    let new = Member::start("127.0.0.1", port, &db, extra).await;

    // The old one drains (SIGTERM's mode): it stops accepting at once, its client goes on.
    old.app()
        .stopping
        .request(pgfunnel::shutdown::ShutdownMode::WaitForClients);
    wait_until_async(Duration::from_secs(10), "old listener closed", || async {
        old.app().shutdown.is_cancelled()
    })
    .await;
    for i in 0..20 {
        let c = new.connect("app").await;
        let rows = c
            .simple_query(&format!("select {i}"))
            .await
            .expect("served by the new instance");
        assert!(rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    }
    assert_eq!(
        old.app().clients.list().len(),
        1,
        "only the held client is on the old instance"
    );
    let n = held
        .simple_query("select count(*) from t")
        .await
        .expect("the held transaction continues");
    assert!(n
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("1"))));
    held.batch_execute("commit")
        .await
        .expect("commit on the draining instance");
    assert!(
        !old.app().stopping.finished.is_cancelled(),
        "still draining while the client stays"
    );
    drop(held);
    let finished = old.app().stopping.finished.clone();
    tokio::time::timeout(Duration::from_secs(10), finished.cancelled())
        .await
        .expect("the old instance finishes once its last client left");
}

/// A pgfunnel process of the rolling-restart test: slot `slot` of the config in `dir`.
fn spawn_slot(dir: &std::path::Path, slot: u16) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg(dir.join(format!("{slot}.ini")))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{slot}.log"))).expect("log file"))
        .spawn()
        .expect("pgfunnel starts")
}

/// Waits until the slot's Unix socket answers (the process is serving).
fn wait_serving(dir: &std::path::Path, slot: u16, port: u16) {
    let path = dir.join(slot.to_string()).join(format!(".s.PGSQL.{port}"));
    wait_until_msg(Duration::from_secs(20), "new slot serving", || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
}

#[test]
fn rolling_restart_with_so_reuseport_under_pgbench_fails_no_transaction() {
    let pg = PgServer::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = free_port();
    // Four slots on one port: 1 and 2 run, 3 and 4 take over from them (a new process
    // needs its own peer id, Unix socket and metrics port while the old one drains).
    let mut common = format!(
        "[databases]\n{}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         so_reuseport = 1\nauth_type = trust\nauth_file = {}/userlist.txt\n\
         pool_mode = transaction\ndefault_pool_size = 5\n[peers]\n",
        db_line("app", "app", &forced()),
        d.display()
    );
    for slot in 1..=4 {
        common.push_str(&format!(
            "{slot} = host={}/{slot} port={port}\n",
            d.display()
        ));
        std::fs::create_dir(d.join(slot.to_string())).expect("slot dir");
        std::fs::write(
            d.join(format!("{slot}.ini")),
            format!(
                "%include {}/common.ini\n[pgbouncer]\npeer_id = {slot}\nunix_socket_dir = {}/{slot}\n",
                d.display(),
                d.display()
            ),
        )
        .expect("write slot ini");
    }
    std::fs::write(d.join("common.ini"), common).expect("write common");
    std::fs::write(d.join("userlist.txt"), userlist("")).expect("write userlist");
    std::fs::write(d.join("bench.sql"), "select 1;\n").expect("write script");
    let mut running = vec![spawn_slot(d, 1), spawn_slot(d, 2)];
    wait_serving(d, 1, port);
    wait_serving(d, 2, port);
    // -C: a new connection per transaction, so connections keep arriving through the switch
    // (100 a second: the old process accepts what the kernel queued on its socket before it
    // closes it and serves clients still logging in; tcp_migrate_req is a host setting,
    // left alone here).
    let bench = std::process::Command::new(pg.bindir().join("pgbench"))
        .args([
            "-n", "-C", "-c", "4", "-j", "2", "-T", "8", "-R", "100", "-f",
        ])
        .arg(d.join("bench.sql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "plain_user",
            "app",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench starts");
    for (old, new) in [(0usize, 3u16), (1, 4)] {
        std::thread::sleep(Duration::from_secs(2));
        running.push(spawn_slot(d, new));
        wait_serving(d, new, port);
        let pid = running[old].id() as i32;
        // SAFETY: kill sends a signal to a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = running[old].wait().expect("old slot exits after draining");
        assert!(status.success(), "slot {} exited with {status}", old + 1);
    }
    let out = bench.wait_with_output().expect("pgbench finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for child in running.iter_mut().skip(2) {
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0 "), "{text}");
    assert!(!text.contains("aborted"), "{text}");
    let done: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("pgbench summary");
    assert!(done > 0, "{text}");
    eprintln!("rolling restart under pgbench -C: {done} transactions, 0 failed");
}
