//! PgBouncer parity (issue 16, points 2, 8 and 9): auth_query users and its configuration
//! errors, the console's client limits, auth_query logins and counters, SHOW SOCKETS /
//! ACTIVE_SOCKETS / MEM, `--version`, `ignore_startup_parameters` inside `options`, long
//! passwords, and 53300 messages that name the limit.

use tokio_postgres::Client;

use crate::admin::rows;
use crate::harness::*;
use crate::proxy::*;

fn field<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

/// The row of `view` whose `key` column is `value`.
async fn row_where(
    c: &Client,
    view: &str,
    key: &str,
    value: &str,
) -> Vec<(String, Option<String>)> {
    rows(c, view)
        .await
        .into_iter()
        .find(|r| field(r, key) == Some(value))
        .unwrap_or_else(|| panic!("{view}: no row with {key} = {value}"))
}

fn number(row: &[(String, Option<String>)], name: &str) -> i64 {
    field(row, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {row:?}"))
}

/// A LOGIN role with no password (NULL rolpassword).
fn role_without_password(pg: &PgServer, prefix: &str) -> String {
    let name = unique_name(prefix);
    pg.admin_sql(&format!("CREATE ROLE {name} LOGIN"));
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_rows_with_null_passwords_are_users_that_only_trust_admits() {
    let pg = PgServer::shared();
    let trusted = role_without_password(pg, "aq_null_trusted");
    let by_password = role_without_password(pg, "aq_null_md5");
    let nobody = unique_name("aq_nobody");
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        format!(
            "host all {trusted} 127.0.0.1/32 trust\n\
             host all {nobody} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 md5\n"
        ),
    )
    .expect("write hba");
    // The auth_user (postgres) is not in the auth_file: it connects without a password
    // (the test Postgres trusts it). The forced user lets password-less roles reach a server.
    let extra = format!(
        "auth_type = hba\nauth_hba_file = {}\nauth_user = postgres",
        hba.display()
    );
    let db = db_line("app", "app", "user=postgres");
    let proxy = Proxy::start(&ini(&db, &extra), "\"someone_else\" \"pw\"\n").await;
    let c = proxy.connect(&trusted, "x", "app").await;
    let row = c.query_one("select 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 1);
    let e = proxy
        .try_connect(&by_password, "anything", "app")
        .await
        .expect_err("a NULL password matches no password");
    assert_eq!(sqlstate(&e), "28P01");
    let e = proxy
        .try_connect(&nobody, "x", "app")
        .await
        .expect_err("zero rows: unknown, even under trust");
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_that_cannot_run_is_a_config_error_and_database_settings_win() {
    let pg = PgServer::shared();
    let role = pg.create_role("aq_cfg", "aq_cfg_pw");
    let host = format!("host=127.0.0.1 port={}", pg.port());
    let databases = format!(
        "authdb = {host} dbname=app\n\
         via_console = {host} dbname=app auth_dbname=pgbouncer\n\
         via_disabled = {host} dbname=app auth_dbname=authdb auth_user=postgres\n\
         bad_query = {host} dbname=app auth_user=postgres auth_query='SELECT $1::text, (1/0)::text'\n\
         own_user = {host} dbname=app auth_user=postgres\n\
         global_user = {host} dbname=app"
    );
    // The global auth_user cannot log in to Postgres; own_user's setting overrides it.
    let extra = "auth_user = aq_no_such_role\nadmin_users = plain_user";
    let proxy = Proxy::start(&ini(&databases, extra), &userlist("")).await;
    let c = proxy.connect(&role, "aq_cfg_pw", "own_user").await;
    let row = c
        .query_one("select current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), role);
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    admin.simple_query("DISABLE authdb").await.expect("disable");
    for (db, expected) in [
        ("via_console", "bouncer config error"),
        (
            "via_disabled",
            "authentication database \"authdb\" is disabled",
        ),
        ("bad_query", "auth_query failed"),
        ("global_user", "auth_query: no server connection"),
    ] {
        let e = proxy
            .try_connect(&role, "aq_cfg_pw", db)
            .await
            .expect_err(db);
        assert_eq!(sqlstate(&e), "08P01", "{db}: {}", message(&e));
        assert_eq!(message(&e), expected, "{db}");
    }
    // The console uses the global settings; without auth_dbname it would query itself.
    let e = proxy
        .try_connect(&role, "aq_cfg_pw", "pgbouncer")
        .await
        .expect_err("console lookup without auth_dbname");
    assert_eq!(message(&e), "bouncer config error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_obeys_client_limits_except_for_admins_and_counts_its_logins() {
    let pg = PgServer::shared();
    let stats_role = pg.create_role("console_aq", "console_aq_pw");
    let extra = format!(
        "auth_user = postgres\nauth_dbname = app\nadmin_users = plain_user\n\
         stats_users = {stats_role}\nmax_db_client_connections = 1"
    );
    let proxy = Proxy::start(&ini(&db_line("app", "app", ""), &extra), &userlist("")).await;
    // The stats user is only known to Postgres: found through auth_query.
    let stats = proxy
        .connect(&stats_role, "console_aq_pw", "pgbouncer")
        .await;
    assert_eq!(rows(&stats, "SHOW VERSION").await.len(), 1);
    let e = proxy
        .try_connect(&stats_role, "wrong", "pgbouncer")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    let e = proxy
        .try_connect(&stats_role, "console_aq_pw", "pgbouncer")
        .await
        .expect_err("the console is full for non-admins");
    assert_eq!(sqlstate(&e), "53300");
    assert_eq!(
        message(&e),
        "client connections exceeded (max_db_client_connections)"
    );
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let admin2 = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let db = row_where(&admin, "SHOW DATABASES", "name", "pgbouncer").await;
    assert_eq!(number(&db, "max_client_connections"), 1);
    assert!(number(&db, "current_client_connections") >= 3, "{db:?}");
    let totals = row_where(&admin2, "SHOW STATS_TOTALS", "database", "pgbouncer").await;
    assert_eq!(number(&totals, "client_login_count"), 3);
    assert!(number(&totals, "query_count") >= 3, "{totals:?}");
    let all = row_where(&admin2, "SHOW TOTALS", "name", "total_client_login_count").await;
    assert_eq!(number(&all, "value"), 3, "no app client logged in yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_active_sockets_and_mem_report_live_connections() {
    PgServer::shared();
    let extra = "admin_users = plain_user\npool_mode = transaction";
    let proxy = Proxy::simple("", extra).await;
    let app = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1").await.expect("query");
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let sockets = rows(&admin, "SHOW SOCKETS").await;
    let kinds: Vec<(&str, &str)> = sockets
        .iter()
        .map(|r| {
            (
                field(r, "type").unwrap_or(""),
                field(r, "database").unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("C", "app")), "{kinds:?}");
    assert!(kinds.contains(&("S", "app")), "{kinds:?}");
    assert!(kinds.contains(&("C", "pgbouncer")), "{kinds:?}");
    let last = sockets[0].last().expect("columns");
    assert_eq!(last, &("send_avail".to_owned(), None));
    // The app client is idle between transactions, its server back in the pool; the console
    // client running this command is active.
    wait_until_async(
        std::time::Duration::from_secs(10),
        "the app client idle and its server back in the pool",
        || async {
            let sockets = rows(&admin, "SHOW SOCKETS").await;
            let app_rows: Vec<_> = sockets
                .iter()
                .filter(|r| field(r, "database") == Some("app"))
                .map(|r| field(r, "state").unwrap_or(""))
                .collect();
            app_rows.iter().all(|s| *s == "idle") && app_rows.len() == 2
        },
    )
    .await;
    let active = rows(&admin, "SHOW ACTIVE_SOCKETS").await;
    let dbs: Vec<&str> = active
        .iter()
        .map(|r| field(r, "database").unwrap_or(""))
        .collect();
    assert_eq!(dbs, ["pgbouncer"], "{active:?}");
    let mem = rows(&admin, "SHOW MEM").await;
    let used = |name: &str| {
        mem.iter()
            .find(|r| field(r, "name") == Some(name))
            .map(|r| number(r, "used"))
            .unwrap_or_else(|| panic!("no {name} in {mem:?}"))
    };
    assert_eq!(used("client_cache"), 2);
    assert_eq!(used("server_cache"), 1);
    assert_eq!(used("pool_cache"), 1);
    let rss = mem
        .iter()
        .find(|r| field(r, "name") == Some("rss"))
        .expect("rss row");
    assert!(number(rss, "memtotal") > 1 << 20, "{rss:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_flag_prints_what_show_version_shows() {
    PgServer::shared();
    let proxy = Proxy::simple("", "admin_users = plain_user").await;
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let shown = rows(&admin, "SHOW VERSION").await;
    let shown = field(&shown[0], "version").expect("version").to_owned();
    assert!(shown.starts_with("PgBouncer 1."), "{shown}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgfunnel"))
        .arg("--version")
        .output()
        .expect("run pgfunnel --version");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), shown);
}

async fn connect_with(
    proxy: &Proxy,
    user: &str,
    password: &str,
    options: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user(user)
        .password(password)
        .dbname("app")
        .options(options);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn show(c: &Client, name: &str) -> String {
    let row = c
        .query_one(&format!("show {name}"), &[])
        .await
        .unwrap_or_else(|e| panic!("show {name}: {e}"));
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_startup_parameters_are_dropped_from_options_too() {
    PgServer::shared();
    let extra = "ignore_startup_parameters = extra_float_digits, search_path";
    let proxy = Proxy::simple("", extra).await;
    let options = "-c search_path=no_such_schema -c work_mem=77kB --extra-float-digits=3";
    let c = connect_with(&proxy, PLAIN_USER, PLAIN_PASSWORD, options)
        .await
        .expect("connect");
    assert_eq!(show(&c, "search_path").await, "\"$user\", public");
    assert_eq!(show(&c, "work_mem").await, "77kB");
    assert_ne!(show(&c, "extra_float_digits").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_up_to_pgbouncers_auth_packet_limit_log_in() {
    PgServer::shared();
    let long = "p".repeat(65_000);
    let too_long = "q".repeat(70_000);
    let users = userlist(&format!(
        "\"long_user\" \"{long}\"\n\"too_long_user\" \"{too_long}\"\n"
    ));
    let opts = format!("user={PLAIN_USER} password={PLAIN_PASSWORD}");
    let text = ini(&db_line("app", "app", &opts), "auth_type = plain");
    let proxy = Proxy::start(&text, &users).await;
    let c = connect_with(&proxy, "long_user", &long, "")
        .await
        .expect("a 65,000-byte password logs in");
    c.simple_query("select 1").await.expect("query");
    // Refused (08P01 if the client reads the error before the close cuts its write short).
    let refused = connect_with(&proxy, "too_long_user", &too_long, "").await;
    assert!(refused.is_err(), "over 65,531 bytes: refused");
    proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients_of_one_user_names_max_user_client_connections() {
    PgServer::shared();
    let users = "[users]\nplain_user = max_user_client_connections=1";
    let text = ini(&db_line("app", "app", ""), "")
        .replace("[pgbouncer]", &format!("{users}\n[pgbouncer]"));
    let proxy = Proxy::start(&text, &userlist("")).await;
    let _first = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let e = proxy
        .try_connect(PLAIN_USER, PLAIN_PASSWORD, "app")
        .await
        .expect_err("second client of the user");
    assert_eq!(sqlstate(&e), "53300");
    assert_eq!(
        message(&e),
        "client connections exceeded (max_user_client_connections)"
    );
}

async fn server_statement_count(c: &Client) -> i64 {
    let sql = "select count(*) from pg_prepared_statements where name like 'PGFUNNEL_%'";
    let row = rows(c, sql).await;
    number(&row[0], "count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_max_prepared_statements_shrinks_open_server_connections() {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=1");
    let proxy = Proxy::simple(&opts, "admin_users = plain_user").await;
    let c = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    for i in 0..4 {
        c.prepare(&format!("select {i}::int"))
            .await
            .expect("prepare");
    }
    assert_eq!(server_statement_count(&c).await, 4);
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    admin
        .simple_query("SET max_prepared_statements = 2")
        .await
        .expect("set");
    // The client and its server were open before the SET; the next Parse applies it.
    let st = c.prepare("select 10::int").await.expect("prepare");
    assert_eq!(
        c.query_one(&st, &[]).await.expect("run").get::<_, i32>(0),
        10
    );
    assert_eq!(server_statement_count(&c).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_and_bind_counters_count_prepared_statement_traffic() {
    PgServer::shared();
    let opts =
        format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size=1");
    let proxy = Proxy::simple(&opts, "admin_users = plain_user").await;
    let a = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let b = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    let st = a.prepare("select $1::int * 2").await.expect("prepare");
    for i in 0..3 {
        let row = a.query_one(&st, &[&i]).await.expect("run");
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    // The same text from another client: a new client Parse, answered without the server.
    let st = b.prepare("select $1::int * 2").await.expect("prepare");
    b.query_one(&st, &[&5i32]).await.expect("run");
    let admin = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "pgbouncer").await;
    let totals = row_where(&admin, "SHOW STATS_TOTALS", "database", "app").await;
    assert_eq!(number(&totals, "client_parse_count"), 2, "{totals:?}");
    assert_eq!(number(&totals, "server_parse_count"), 1, "{totals:?}");
    assert_eq!(number(&totals, "bind_count"), 4, "{totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_notify_also_tells_clients_held_by_max_db_connections() {
    use futures::StreamExt;
    PgServer::shared();
    let extra = "pool_mode = transaction\nquery_wait_notify = 1";
    let proxy = Proxy::simple("max_db_connections=1", extra).await;
    // Another user: its own pool has room, the database's limit has none. It logs in
    // first (a pool's first login needs a server), so its server is idle when the holder's
    // pool takes the database's only slot from it.
    let (waiter, mut connection) = tokio_postgres::connect(
        &proxy.conn_str(SCRAM_USER, SCRAM_PASSWORD, "app"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    let holder = proxy.connect(PLAIN_USER, PLAIN_PASSWORD, "app").await;
    holder
        .batch_execute("begin; select 1")
        .await
        .expect("begin");
    let query = tokio::spawn(async move { waiter.simple_query("select 2").await.map(|_| ()) });
    let notice = tokio::time::timeout(std::time::Duration::from_secs(20), notices.recv())
        .await
        .expect("a notice while held by max_db_connections");
    assert!(
        notice.is_some_and(|m| m.contains("client being queued")),
        "query_wait_notify text"
    );
    holder.batch_execute("commit").await.expect("commit");
    query
        .await
        .expect("join")
        .expect("the queued query runs once the slot frees");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_of_a_forced_user_database_is_kept_without_clients() {
    let pg = PgServer::shared();
    let marker = unique_name("warm_forced");
    let opts = format!(
        "user={SCRAM_USER} password={SCRAM_PASSWORD} min_pool_size=2 application_name={marker}"
    );
    let _proxy = Proxy::simple(&opts, "").await;
    // No client ever connects.
    wait_until_async(
        std::time::Duration::from_secs(15),
        "two warm servers",
        || async {
            pg.admin_sql(&format!(
                "select count(*) from pg_stat_activity where application_name = '{marker}'"
            ))
            .trim()
            .parse::<i64>()
            .expect("n")
                >= 2
        },
    )
    .await;
}
