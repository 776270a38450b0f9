//! The admin console against a real Postgres: SHOW views column by column against PgBouncer
//! 1.25's lists, every control command's effect, access rules, psql and tokio-postgres
//! (extended protocol), peer login over the Unix socket, and Debian's exporter.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::*;
use crate::proxy::*;

const ADMIN: (&str, &str) = (PLAIN_USER, PLAIN_PASSWORD);
const STATS: (&str, &str) = (MD5_USER, MD5_PASSWORD);
const CONSOLE_INI: &str = "admin_users = plain_user\nstats_users = md5_user";

async fn txn_proxy(extra: &str) -> Proxy {
    PgServer::shared();
    let opts = format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction");
    Proxy::simple(&opts, &format!("{CONSOLE_INI}\n{extra}")).await
}

async fn console(p: &Proxy, who: (&str, &str)) -> Client {
    p.connect(who.0, who.1, "pgbouncer").await
}

/// Rows of a simple-protocol query as maps column -> text.
pub(crate) async fn rows(c: &Client, sql: &str) -> Vec<Vec<(String, Option<String>)>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn field<'a>(row: &'a [(String, Option<String>)], name: &str) -> &'a str {
    row.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
        .unwrap_or("")
}

async fn pool_field(c: &Client, db: &str, name: &str) -> String {
    rows(c, "SHOW POOLS")
        .await
        .iter()
        .find(|r| field(r, "database") == db)
        .map(|r| field(r, name).to_owned())
        .unwrap_or_default()
}

/// PgBouncer 1.25's columns (admin.c, stats.c) with their type letters; SHOW CLIENTS and
/// SERVERS add pgfunnel's `transport` after PgBouncer's 21.
const EXPECTED: [(&str, &str, &str); 15] = [
    ("VERSION", "s", "version"),
    ("CONFIG", "ssss", "key value default changeable"),
    ("DATABASES", "ssissiiiissiiiiii", "name host port database force_user pool_size min_pool_size reserve_pool_size server_lifetime pool_mode load_balance_hosts max_connections current_connections max_client_connections current_client_connections paused disabled"),
    ("POOLS", "ssiiiiiiiiiiiiiss", "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us pool_mode load_balance_hosts"),
    ("CLIENTS", "ssssssisissiiississiis", "type user database replication state addr port local_addr local_port connect_time request_time wait wait_us close_needed ptr link remote_pid tls application_name prepared_statements id transport"),
    ("SERVERS", "ssssssisissiiississiis", "type user database replication state addr port local_addr local_port connect_time request_time wait wait_us close_needed ptr link remote_pid tls application_name prepared_statements id transport"),
    ("STATS", "sNNNNNNNNNNNNNNNNNNNNNNNN", "database total_server_assignment_count total_xact_count total_query_count total_received total_sent total_xact_time total_query_time total_wait_time total_client_parse_count total_server_parse_count total_bind_count total_client_login_count avg_server_assignment_count avg_xact_count avg_query_count avg_recv avg_sent avg_xact_time avg_query_time avg_wait_time avg_client_parse_count avg_server_parse_count avg_bind_count avg_client_login_count"),
    ("STATS_TOTALS", "sNNNNNNNNNNNN", "database server_assignment_count xact_count query_count bytes_received bytes_sent xact_time query_time wait_time client_parse_count server_parse_count bind_count client_login_count"),
    ("STATS_AVERAGES", "sNNNNNNNNNNNN", "database server_assignment_count xact_count query_count bytes_received bytes_sent xact_time query_time wait_time avg_client_parse_count avg_server_parse_count avg_bind_count avg_client_login_count"),
    ("TOTALS", "sN", "name value"),
    ("LISTS", "si", "list items"),
    ("USERS", "ssssiiii", "name pool_size reserve_pool_size pool_mode max_user_connections current_connections max_user_client_connections current_client_connections"),
    ("STATE", "ss", "key value"),
    ("DNS_HOSTS", "sqs", "hostname ttl addrs"),
    ("DNS_ZONES", "sqi", "zonename serial count"),
];

fn letter(t: &Type) -> char {
    match *t {
        Type::TEXT => 's',
        Type::INT4 => 'i',
        Type::INT8 => 'q',
        Type::NUMERIC => 'N',
        _ => '?',
    }
}

#[tokio::test]
async fn show_views_have_pgbouncer_columns_names_order_and_types() {
    let p = txn_proxy("").await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1")
        .await
        .expect("query through the pool");
    let c = console(&p, ADMIN).await;
    for (view, letters, names) in EXPECTED {
        // prepare = Parse + Describe over the extended protocol: the columns without running it
        let st = c
            .prepare(&format!("SHOW {view}"))
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
        let got_names: Vec<&str> = st.columns().iter().map(|c| c.name()).collect();
        assert_eq!(got_names.join(" "), names, "SHOW {view} columns");
        let got_types: String = st.columns().iter().map(|c| letter(c.type_())).collect();
        assert_eq!(got_types, letters, "SHOW {view} types");
    }
    let lists: Vec<String> = rows(&c, "SHOW LISTS")
        .await
        .iter()
        .map(|r| field(r, "list").to_owned())
        .collect();
    assert_eq!(
        lists.join(" "),
        "databases users peers pools peer_pools free_clients used_clients login_clients free_servers used_servers dns_names dns_zones dns_queries dns_pending"
    );
    let totals: Vec<String> = rows(&c, "SHOW TOTALS")
        .await
        .iter()
        .map(|r| field(r, "name").to_owned())
        .collect();
    assert_eq!(totals.len(), 24);
    assert_eq!(totals[0], "total_server_assignment_count");
    assert_eq!(totals[12], "avg_server_assignment_count");
}

#[tokio::test]
async fn show_views_report_live_figures() {
    let p = txn_proxy("").await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    for _ in 0..3 {
        app.simple_query("select 1").await.expect("query");
    }
    let c = console(&p, ADMIN).await;
    let stats = rows(&c, "SHOW STATS_TOTALS").await;
    let app_stats = stats
        .iter()
        .find(|r| field(r, "database") == "app")
        .expect("app row");
    let n = |k: &str| field(app_stats, k).parse::<u64>().unwrap_or(0);
    assert!(n("query_count") >= 3, "{app_stats:?}");
    assert!(n("xact_count") >= 3 && n("bytes_received") > 0 && n("bytes_sent") > 0);
    assert!(n("server_assignment_count") >= 3 && n("client_login_count") >= 1);
    assert_eq!(pool_field(&c, "app", "cl_active").await, "1");
    assert_eq!(pool_field(&c, "app", "sv_idle").await, "1");
    assert_eq!(pool_field(&c, "app", "pool_mode").await, "transaction");
    let clients = rows(&c, "SHOW CLIENTS").await;
    let me = clients
        .iter()
        .find(|r| field(r, "database") == "app")
        .expect("app client");
    assert_eq!(
        (field(me, "type"), field(me, "state"), field(me, "user")),
        ("C", "idle", SCRAM_USER)
    );
    assert_eq!(field(me, "addr"), "127.0.0.1");
    let servers = rows(&c, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(
        (field(&servers[0], "type"), field(&servers[0], "state")),
        ("S", "idle")
    );
    let dbs = rows(&c, "SHOW DATABASES").await;
    let names: Vec<&str> = dbs.iter().map(|r| field(r, "name")).collect();
    assert_eq!(names, ["app", "pgbouncer"]);
    assert_eq!(field(&dbs[0], "force_user"), SCRAM_USER);
    assert_eq!(field(&dbs[0], "current_connections"), "1");
    let state = rows(&c, "SHOW STATE").await;
    assert_eq!(field(&state[0], "value"), "yes");
    let version = rows(&c, "SHOW VERSION").await;
    assert!(field(&version[0], "version").starts_with("PgBouncer 1.25.2 (pgfunnel "));
}

#[tokio::test]
async fn console_works_over_the_extended_protocol() {
    let p = txn_proxy("").await;
    let c = console(&p, ADMIN).await;
    // tokio-postgres `query` prepares and asks for binary results
    let pools = c
        .query("SHOW POOLS", &[])
        .await
        .expect("extended SHOW POOLS");
    let console_pool = pools
        .iter()
        .find(|r| r.get::<_, String>("database") == "pgbouncer")
        .expect("console pool");
    assert_eq!(
        console_pool.get::<_, i32>("cl_active"),
        1,
        "this connection"
    );
    let ver = c.query_one("SHOW VERSION", &[]).await.expect("version");
    assert!(ver.get::<_, String>(0).starts_with("PgBouncer"));
    let n = c
        .execute("RECONNECT", &[])
        .await
        .expect("a command over the extended protocol");
    assert_eq!(n, 0);
    let err = c.query("SHOW NOPE", &[]).await.expect_err("unknown view");
    assert!(message(&err).contains("use SHOW HELP"), "{err}");
    // the connection recovers after the error (Sync resets it)
    assert_eq!(
        c.query("SHOW STATE", &[]).await.expect("after error").len(),
        3
    );
}

#[tokio::test]
async fn unknown_commands_and_bad_arguments_get_clear_errors() {
    let p = txn_proxy("").await;
    let c = console(&p, ADMIN).await;
    for (sql, want) in [
        ("FROBNICATE", "invalid command 'FROBNICATE', use SHOW HELP;"),
        ("SHOW NOPE", "invalid command 'SHOW NOPE', use SHOW HELP;"),
        ("KILL_CLIENT abc", "invalid client pointer supplied"),
        ("KILL_CLIENT 999999", "client not found"),
        ("DISABLE", "a database is required"),
        ("PAUSE nosuchdb", "no such database: nosuchdb"),
        ("RESUME", "pooler is not paused/suspended"),
        ("SET no_such_key = 1", "unknown config key: no_such_key"),
        (
            "SET listen_port = 1",
            "listen_port cannot be changed at run time",
        ),
        (
            "SET default_pool_size = many",
            "bad value for default_pool_size",
        ),
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert!(message(&e).contains(want), "{sql}: {}", message(&e));
        assert_eq!(sqlstate(&e), "08P01", "{sql}");
    }
    // SHOW HELP is a notice listing the commands, the session goes on
    c.simple_query("SHOW HELP").await.expect("help");
    assert_eq!(rows(&c, "SHOW STATE").await.len(), 3);
}

#[tokio::test]
async fn stats_users_may_only_show_and_others_may_not_log_in() {
    let p = txn_proxy("").await;
    let s = console(&p, STATS).await;
    assert!(!rows(&s, "SHOW POOLS").await.is_empty());
    for sql in [
        "KILL_CLIENT 1",
        "PAUSE",
        "RELOAD",
        "SET default_pool_size = 3",
        "SHUTDOWN",
    ] {
        let e = s.simple_query(sql).await.expect_err(sql);
        assert_eq!(message(&e), "admin access needed", "{sql}");
    }
    let e = p
        .try_connect(SCRAM_USER, SCRAM_PASSWORD, "pgbouncer")
        .await
        .expect_err("not listed");
    assert_eq!(message(&e), "not allowed");
    let e = p
        .try_connect(PLAIN_USER, "wrong", "pgbouncer")
        .await
        .expect_err("bad password");
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test]
async fn pause_holds_new_transactions_until_resume() {
    let p = txn_proxy("").await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1").await.expect("warm the pool");
    let c = console(&p, ADMIN).await;
    c.simple_query("PAUSE app").await.expect("pause");
    assert_eq!(
        pool_field(&c, "app", "sv_idle").await,
        "0",
        "PAUSE closes idle servers"
    );
    let dbs = rows(&c, "SHOW DATABASES").await;
    assert_eq!(field(&dbs[0], "paused"), "1");
    let held = tokio::spawn(async move {
        let r = app.simple_query("select 42").await;
        (app, r)
    });
    wait_until_async(Duration::from_secs(10), "cl_waiting = 1", || async {
        pool_field(&c, "app", "cl_waiting").await == "1"
    })
    .await;
    assert!(!held.is_finished(), "a transaction must wait while paused");
    let clients = rows(&c, "SHOW CLIENTS").await;
    assert!(
        clients.iter().any(|r| field(r, "state") == "waiting"),
        "{clients:?}"
    );
    c.simple_query("RESUME app").await.expect("resume");
    let (_app, r) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("RESUME releases the held transaction")
        .expect("task");
    r.expect("the held query succeeds");
}

async fn backend_pid(c: &Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

#[tokio::test]
async fn reconnect_closes_servers_once_idle() {
    let p = txn_proxy("").await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    let before = backend_pid(&app).await;
    assert_eq!(before, backend_pid(&app).await, "one server is reused");
    app.simple_query("begin").await.expect("begin");
    let c = console(&p, ADMIN).await;
    c.simple_query("RECONNECT app").await.expect("reconnect");
    let servers = rows(&c, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 1);
    assert_eq!(
        (
            field(&servers[0], "state"),
            field(&servers[0], "close_needed")
        ),
        ("active", "1")
    );
    assert_eq!(
        backend_pid(&app).await,
        before,
        "the running transaction keeps its server"
    );
    app.simple_query("commit").await.expect("commit");
    c.simple_query("WAIT_CLOSE app")
        .await
        .expect("nothing marked is lent any more");
    let after = backend_pid(&app).await;
    assert_ne!(after, before, "the server was closed when released");
}

#[tokio::test]
async fn kill_client_ends_only_that_client() {
    let p = txn_proxy("").await;
    let conn = |name: &str| {
        format!(
            "{} application_name={name}",
            p.conn_str(SCRAM_USER, SCRAM_PASSWORD, "app")
        )
    };
    let connect = |s: String| async move {
        let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c
    };
    let victim = connect(conn("victim")).await;
    let bystander = connect(conn("bystander")).await;
    victim.simple_query("select 1").await.expect("victim works");
    let c = console(&p, ADMIN).await;
    let clients = rows(&c, "SHOW CLIENTS").await;
    let id = clients
        .iter()
        .find(|r| field(r, "application_name") == "victim")
        .map(|r| field(r, "id").to_owned())
        .expect("victim listed");
    c.simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("kill_client");
    wait_until_async(
        Duration::from_secs(10),
        "victim's connection to close",
        || async { victim.is_closed() || victim.simple_query("select 1").await.is_err() },
    )
    .await;
    bystander
        .simple_query("select 1")
        .await
        .expect("the other client is untouched");
    let left: Vec<String> = rows(&c, "SHOW CLIENTS")
        .await
        .iter()
        .map(|r| field(r, "application_name").to_owned())
        .collect();
    assert!(
        !left.contains(&"victim".to_owned()) && left.contains(&"bystander".to_owned()),
        "{left:?}"
    );
}

#[tokio::test]
async fn disable_refuses_new_clients_and_kill_drops_existing() {
    let p = txn_proxy("").await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1").await.expect("works");
    let c = console(&p, ADMIN).await;
    c.simple_query("DISABLE app").await.expect("disable");
    let e = p
        .try_connect(SCRAM_USER, SCRAM_PASSWORD, "app")
        .await
        .expect_err("disabled");
    assert!(
        message(&e).contains("database does not allow connections: app"),
        "{e}"
    );
    c.simple_query("ENABLE app").await.expect("enable");
    p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    c.simple_query("KILL app").await.expect("kill");
    wait_until_async(
        Duration::from_secs(10),
        "killed client to close",
        || async { app.simple_query("select 1").await.is_err() },
    )
    .await;
    assert_eq!(
        rows(&c, "SHOW STATE").await.len(),
        3,
        "the console survives KILL"
    );
}

#[tokio::test]
async fn set_and_reload_change_the_running_config() {
    // the database has no pool_size of its own, so default_pool_size applies
    let opts = format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction");
    let p = Proxy::simple(&opts, CONSOLE_INI).await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1")
        .await
        .expect("creates the pool");
    let pool_size = || {
        let running = p.running.as_ref().expect("running");
        let pool = running
            .app
            .pools
            .iter()
            .next()
            .map(|e| e.value().clone())
            .expect("pool");
        pool.pool_size()
    };
    assert_eq!(pool_size(), 20);
    let c = console(&p, ADMIN).await;
    let get = |rs: &[Vec<(String, Option<String>)>], k: &str| {
        rs.iter()
            .find(|r| field(r, "key") == k)
            .map(|r| field(r, "value").to_owned())
    };
    c.simple_query("SET default_pool_size = 7")
        .await
        .expect("set");
    assert_eq!(
        get(&rows(&c, "SHOW CONFIG").await, "default_pool_size").as_deref(),
        Some("7")
    );
    let ini = p.dir.path().join("pgfunnel.ini");
    let text = std::fs::read_to_string(&ini).expect("ini");
    std::fs::write(&ini, format!("{text}\nquery_wait_timeout = 33\n")).expect("rewrite ini");
    c.simple_query("RELOAD").await.expect("reload");
    let cfg = rows(&c, "SHOW CONFIG").await;
    assert_eq!(get(&cfg, "query_wait_timeout").as_deref(), Some("33"));
    assert_eq!(
        get(&cfg, "default_pool_size").as_deref(),
        Some("20"),
        "the file wins on RELOAD"
    );
    std::fs::write(&ini, "[pgbouncer]\npool_mode = nonsense\n").expect("break ini");
    let e = c.simple_query("RELOAD").await.expect_err("bad file");
    assert!(message(&e).starts_with("RELOAD failed"), "{e}");
    assert_eq!(
        get(&rows(&c, "SHOW CONFIG").await, "query_wait_timeout").as_deref(),
        Some("33")
    );
}

fn psql() -> std::process::Command {
    let mut cmd = std::process::Command::new("psql");
    cmd.env_remove("PGSERVICE").env_remove("PGOPTIONS");
    cmd
}

#[tokio::test]
async fn psql_reads_the_console() {
    let p = txn_proxy("").await;
    let port = p.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        psql()
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                ADMIN.0,
                "-d",
                "pgbouncer",
                "-c",
                "SHOW VERSION",
            ])
            .env("PGPASSWORD", ADMIN.1)
            .output()
            .expect("psql runs (apt-get install postgresql-client)")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("PgBouncer 1.25.2"), "{stdout}");
}

async fn unix_proxy() -> (Proxy, std::path::PathBuf) {
    PgServer::shared();
    let sock_dir = tempfile::tempdir().expect("socket dir").keep();
    let opts = format!("user={SCRAM_USER} password={SCRAM_PASSWORD}");
    let extra = format!("{CONSOLE_INI}\nunix_socket_dir = {}", sock_dir.display());
    (Proxy::simple(&opts, &extra).await, sock_dir)
}

#[tokio::test]
async fn os_user_logs_in_as_pgbouncer_over_the_unix_socket_without_password() {
    let (p, dir) = unix_proxy().await;
    let port = p.unix_port();
    let conn = format!(
        "host={} port={port} user=pgbouncer dbname=pgbouncer",
        dir.display()
    );
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("peer login");
    tokio::spawn(connection);
    c.simple_query("RECONNECT")
        .await
        .expect("peer login is an admin");
    // over TCP the same user needs a password and is not in admin_users
    assert!(p.try_connect("pgbouncer", "", "pgbouncer").await.is_err());
}

#[tokio::test]
async fn debian_pgbouncer_exporter_reads_the_console() {
    let (p, dir) = unix_proxy().await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    app.simple_query("select 1").await.expect("query");
    let port = p.unix_port();
    // Debian 12 ships prometheus-pgbouncer-exporter 1.7 (Christopher Baines's, Python), whose
    // collectors run SHOW LISTS/POOLS/DATABASES/STATS over psycopg2. Its STATS and DATABASES
    // collectors read columns PgBouncer removed in 1.8 (total_requests, reserve_pool), so
    // against PgBouncer 1.25 (and pgfunnel, which matches it) only LISTS and POOLS work.
    let script = format!(
        r#"
import sys
from prometheus_pgbouncer_exporter.utils import get_connection
from prometheus_pgbouncer_exporter.collectors import ListsCollector, PoolsCollector, StatsCollector
conn = get_connection("pgbouncer", "{port}", "{dir}")
out = {{}}
for c in [ListsCollector(connection=conn), PoolsCollector(databases=None, connection=conn)]:
    for fam in c.collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
try:
    list(StatsCollector(databases=None, connection=conn).collect())
    print("stats-collector-ok")
except KeyError as e:
    print("stats-collector-keyerror", e)
for (name, labels), v in sorted(out.items()):
    print(name, dict(labels), v)
"#,
        dir = dir.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .expect("python3")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_pgbouncer_exporter'"),
        "Debian's exporter is missing: apt-get install prometheus-pgbouncer-exporter (scripts/test.sh does)"
    );
    assert!(out.status.success(), "{stderr}");
    let value = |name: &str, label: &str| -> f64 {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} {label} not in:\n{stdout}"))
    };
    assert!(value("pgbouncer_used_clients", "{}") >= 2.0, "{stdout}");
    assert!(value("pgbouncer_pools", "{}") >= 2.0);
    assert!(value("pgbouncer_used_servers", "{}") >= 1.0);
    assert_eq!(value("pgbouncer_active_clients", "'app'"), 1.0);
    assert!(
        stdout.contains("stats-collector-keyerror 'total_requests'"),
        "{stdout}"
    );
}
