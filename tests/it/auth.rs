//! Client- and server-side authentication through pgfunnel against a real Postgres.

use crate::harness::*;
use crate::proxy::*;

/// md5 secret as stored in an auth_file: "md5" + md5(password + user).
fn md5_secret(user: &str, password: &str) -> String {
    pgfunnel::auth::md5_secret(user, password.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_methods_accept_right_and_refuse_wrong_passwords() {
    let pg = PgServer::shared();
    let scram_secret = pgfunnel::auth::ScramSecret::for_plain_password(b"s3cret").to_string();
    let users = userlist(&format!(
        "\"u_scram_secret\" \"{scram_secret}\"\n\"u_md5_secret\" \"{}\"\n",
        md5_secret("u_md5_secret", "m5pw")
    ));
    for auth_type in ["scram-sha-256", "md5", "plain", "trust"] {
        let dbs = format!(
            "{}\n{}",
            db_line(
                "app",
                "app",
                &format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
            ),
            db_line(
                "other",
                "app2",
                &format!("user={SCRAM_USER} password={SCRAM_PASSWORD}")
            )
        );
        let proxy = Proxy::start(&ini(&dbs, &format!("auth_type = {auth_type}")), &users).await;
        // plain secret works with every method
        let c = proxy.connect("plain_user", "plain_pass", "app").await;
        let row = c
            .query_one("select current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(
            row.get::<_, String>(0),
            SCRAM_USER,
            "forced user= logs in to the server"
        );
        // A SCRAM secret works with every method but trust checks nothing (md5 switches
        // to SCRAM, plain verifies the cleartext against the secret).
        proxy.connect("u_scram_secret", "s3cret", "app").await;
        if auth_type == "md5" || auth_type == "trust" {
            proxy.connect("u_md5_secret", "m5pw", "app").await;
        }
        if auth_type == "trust" {
            proxy.connect("plain_user", "anything", "app").await;
            let e = proxy
                .try_connect("nobody", "x", "app")
                .await
                .expect_err("unknown user refused under trust");
            assert_eq!(sqlstate(&e), "28P01");
            continue;
        }
        let wrong = proxy
            .try_connect("plain_user", "wrong", "app")
            .await
            .expect_err("wrong password");
        let unknown = proxy
            .try_connect("nobody", "wrong", "app")
            .await
            .expect_err("unknown user");
        assert_eq!(sqlstate(&wrong), "28P01", "{auth_type}");
        assert_eq!(sqlstate(&unknown), "28P01", "{auth_type}");
        assert_eq!(
            message(&wrong),
            "password authentication failed for user \"plain_user\""
        );
        assert_eq!(
            message(&unknown),
            "password authentication failed for user \"nobody\""
        );
        let _ = pg;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_works_with_scram_md5_cleartext_and_trust() {
    let pg = PgServer::shared();
    let users = userlist(&format!(
        "\"md5_hash_user\" \"{}\"\n",
        md5_secret(MD5_USER, MD5_PASSWORD)
    ));
    let dbs = [
        db_line(
            "via_scram",
            "app",
            &format!("user={SCRAM_USER} password={SCRAM_PASSWORD}"),
        ),
        db_line(
            "via_md5",
            "app",
            &format!("user={MD5_USER} password={MD5_PASSWORD}"),
        ),
        db_line(
            "via_plain",
            "app",
            &format!("user={PLAIN_USER} password={PLAIN_PASSWORD}"),
        ),
        db_line("via_trust", "app", &format!("user={TRUST_USER}")),
        // no password in the entry: the client's own auth_file secret is used
        db_line("passthrough", "app", ""),
    ]
    .join("\n");
    let proxy = Proxy::start(&ini(&dbs, "auth_type = md5"), &users).await;
    for (db, user) in [
        ("via_scram", SCRAM_USER),
        ("via_md5", MD5_USER),
        ("via_plain", PLAIN_USER),
        ("via_trust", TRUST_USER),
    ] {
        let c = proxy.connect("plain_user", "plain_pass", db).await;
        let row = c
            .query_one("select current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user, "{db}");
    }
    let c = proxy
        .connect(SCRAM_USER, SCRAM_PASSWORD, "passthrough")
        .await;
    let row = c
        .query_one("select current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), SCRAM_USER);
    let _ = pg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_errors_reach_the_client_with_their_sqlstate() {
    PgServer::shared();
    let dbs = [
        db_line("badpw", "app", &format!("user={SCRAM_USER} password=wrong")),
        db_line(
            "nodb",
            "does_not_exist_db",
            &format!("user={SCRAM_USER} password={SCRAM_PASSWORD}"),
        ),
    ]
    .join("\n");
    let proxy = Proxy::start(&ini(&dbs, "auth_type = md5"), &userlist("")).await;
    let e = proxy
        .try_connect("plain_user", "plain_pass", "badpw")
        .await
        .expect_err("server refuses");
    assert_eq!(sqlstate(&e), "28P01");
    let e = proxy
        .try_connect("plain_user", "plain_pass", "nodb")
        .await
        .expect_err("no such db on server");
    assert_eq!(sqlstate(&e), "3D000");
    assert!(message(&e).contains("does_not_exist_db"), "{}", message(&e));
    // a database pgfunnel does not know is reported only after authentication
    let e = proxy
        .try_connect("plain_user", "wrong", "not_configured")
        .await
        .expect_err("auth first");
    assert_eq!(sqlstate(&e), "28P01");
    let e = proxy
        .try_connect("plain_user", "plain_pass", "not_configured")
        .await
        .expect_err("unknown db");
    assert_eq!(sqlstate(&e), "3D000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_database_entry_serves_any_name() {
    let pg = PgServer::shared();
    let dbs = format!(
        "* = host=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD}",
        pg.port()
    );
    let proxy = Proxy::start(&ini(&dbs, "auth_type = md5"), &userlist("")).await;
    let c = proxy.connect("plain_user", "plain_pass", "app2").await;
    let row = c
        .query_one("select current_database()::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "app2");
}
