//! Tests of the test harness itself: the shared Postgres accepts each auth method it promises,
//! private instances survive stop/start and a killed postmaster, and the wait helpers time out.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::harness::*;

async fn current_user(client: &tokio_postgres::Client) -> String {
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("select current_user");
    row.get(0)
}

#[tokio::test]
async fn each_test_role_logs_in_over_tcp_with_its_auth_method() {
    let pg = PgServer::shared();
    for (user, password) in TEST_USERS {
        let client = pg.connect(user, password, APP_DB).await;
        assert_eq!(current_user(&client).await, user);
    }
    // log_connections names the method used for every role that has an authenticated identity.
    let log_path = pg.log_path();
    for (user, method) in [
        (SCRAM_USER, "scram-sha-256"),
        (MD5_USER, "md5"),
        (PLAIN_USER, "password"),
    ] {
        let needle = format!("identity=\"{user}\" method={method}");
        wait_until_msg(Duration::from_secs(10), &needle, || {
            std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains(&needle))
        });
    }
}

#[tokio::test]
async fn passwords_are_stored_as_scram_and_md5() {
    let pg = PgServer::shared();
    let stored = pg.admin_sql(&format!(
        "SELECT rolname || '=' || left(rolpassword, 14) FROM pg_authid \
         WHERE rolname IN ('{SCRAM_USER}', '{MD5_USER}') ORDER BY rolname"
    ));
    let lines: Vec<&str> = stored.lines().collect();
    assert_eq!(lines.len(), 2, "{stored}");
    assert!(lines[0].starts_with(&format!("{MD5_USER}=md5")), "{stored}");
    assert!(
        lines[1].starts_with(&format!("{SCRAM_USER}=SCRAM-SHA-256$")),
        "{stored}"
    );
}

#[tokio::test]
async fn wrong_password_fails_with_28p01() {
    let pg = PgServer::shared();
    for user in [SCRAM_USER, MD5_USER, PLAIN_USER] {
        let err = pg
            .try_connect(user, Some("wrong"), APP_DB)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{user}: {err}"
        );
    }
}

#[tokio::test]
async fn every_role_can_create_tables_in_both_databases() {
    let pg = PgServer::shared();
    for db in [APP_DB, APP2_DB] {
        for (user, password) in TEST_USERS {
            let client = pg.connect(user, password, db).await;
            let table = unique_name("selftest_t");
            client
                .batch_execute(&format!(
                    "CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1)"
                ))
                .await
                .unwrap_or_else(|e| panic!("{user} cannot create a table in {db}: {e}"));
        }
    }
}

#[tokio::test]
async fn create_database_gives_a_fresh_usable_database() {
    let pg = PgServer::shared();
    let db = pg.create_database("selftest_db");
    let client = pg.connect(TRUST_USER, None, &db).await;
    let row = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("select");
    assert_eq!(row.get::<_, String>(0), db);
}

#[test]
fn admin_sql_returns_unaligned_tuples_and_reports_errors() {
    let pg = PgServer::shared();
    assert_eq!(
        pg.admin_sql("SELECT 1, 'a' UNION ALL SELECT 2, 'b'"),
        "1|a\n2|b"
    );
    let err = pg
        .try_admin_sql_in(APP_DB, "SELECT * FROM no_such_table")
        .expect_err("must fail");
    assert!(err.contains("no_such_table"), "{err}");
}

#[test]
fn unique_names_differ_and_carry_the_prefix() {
    let a = unique_name("t");
    let b = unique_name("t");
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("t_{}_", std::process::id())), "{a}");
}

#[test]
#[should_panic(expected = "timed out after")]
fn wait_until_panics_when_the_condition_never_holds() {
    wait_until_msg(Duration::from_millis(100), "never", || false);
}

#[tokio::test]
async fn wait_until_async_returns_once_the_condition_holds() {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = flag.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        setter.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    wait_until_async(Duration::from_secs(5), "flag set by task", || {
        let flag = flag.clone();
        async move { flag.load(std::sync::atomic::Ordering::SeqCst) }
    })
    .await;
}

#[tokio::test]
async fn private_instance_keeps_data_across_stop_start_and_kill() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("start private pg");
    assert_ne!(pg.port(), PgServer::shared().port());
    pg.admin_sql_in(
        APP_DB,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42); GRANT SELECT ON kept TO PUBLIC; CHECKPOINT",
    );

    for mode in ["fast", "immediate"] {
        pg.stop(mode);
        assert!(!pg.is_running(), "still running after stop -m {mode}");
        let refused = pg
            .try_connect(SCRAM_USER, Some(SCRAM_PASSWORD), APP_DB)
            .await;
        assert!(refused.is_err(), "connected to a stopped server");
        pg.start_again();
        assert!(pg.is_running());
        let client = pg.connect(SCRAM_USER, Some(SCRAM_PASSWORD), APP_DB).await;
        let row = client
            .query_one("SELECT x FROM kept", &[])
            .await
            .expect("select after restart");
        assert_eq!(row.get::<_, i32>(0), 42, "after stop -m {mode}");
    }

    let client = pg.connect(MD5_USER, Some(MD5_PASSWORD), APP_DB).await;
    pg.kill_postmaster();
    assert!(!pg.is_running());
    wait_until_async(
        Duration::from_secs(10),
        "backend of killed postmaster to go",
        || {
            let client = &client;
            async move { client.simple_query("SELECT 1").await.is_err() }
        },
    )
    .await;
    pg.start_again();
    let client = pg.connect(PLAIN_USER, Some(PLAIN_PASSWORD), APP_DB).await;
    let row = client
        .query_one("SELECT x FROM kept", &[])
        .await
        .expect("select after crash");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(std::fs::read_to_string(pg.log_path())
        .expect("read log")
        .contains("database system is ready"));
}

#[tokio::test]
async fn create_role_logs_in_with_scram_and_backend_count_sees_it() {
    let pg = PgServer::shared();
    let role = pg.create_role("selftest_role", "role_pass");
    assert_eq!(pg.backend_count(&role, APP2_DB), 0);
    let client = pg.connect(&role, Some("role_pass"), APP2_DB).await;
    assert_eq!(current_user(&client).await, role);
    assert_eq!(pg.backend_count(&role, APP2_DB), 1);
    drop(client);
    // Async wait: the dropped client's connection task needs this runtime to close the socket.
    wait_until_async(
        Duration::from_secs(10),
        "backend to exit after client drop",
        || {
            let role = role.clone();
            async move { pg.backend_count(&role, APP2_DB) == 0 }
        },
    )
    .await;
}
