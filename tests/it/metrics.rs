//! The HTTP endpoint: /metrics parsed as Prometheus text with the exporter's names and
//! pgfunnel's histograms, health endpoints (readiness follows Postgres going down and up),
//! bad HTTP input and slow clients, and the shipped alert rules checked by promtool.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::proxy::*;

const METRICS_INI: &str = "metrics_listen = 127.0.0.1:0\nadmin_users = plain_user";

/// Sends raw bytes and returns the whole response (the server closes after one).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(request).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("response within 20 s")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    let code = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn metrics_addr(p: &Proxy) -> SocketAddr {
    p.running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("metrics_listen bound")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map(|b| b.count).unwrap_or(0.0),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
}

#[tokio::test]
async fn metrics_use_exporter_names_and_add_histograms() {
    PgServer::shared();
    let opts = format!("user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction");
    let p = Proxy::simple(&opts, METRICS_INI).await;
    let app = p.connect(SCRAM_USER, SCRAM_PASSWORD, "app").await;
    for _ in 0..5 {
        app.simple_query("select 1").await.expect("query");
    }
    let (code, body) = get(metrics_addr(&p), "/metrics").await;
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let app_db = [("database", "app")];
    let pool = [("database", "app"), ("user", SCRAM_USER)];
    assert_eq!(sample(&scrape, "pgbouncer_up", &[]), Some(1.0));
    assert!(
        sample(
            &scrape,
            "pgbouncer_stats_totals_queries_pooled_total",
            &app_db
        )
        .unwrap_or(0.0)
            >= 5.0
    );
    assert!(
        sample(
            &scrape,
            "pgbouncer_stats_totals_sql_transactions_pooled_total",
            &app_db
        )
        .unwrap_or(0.0)
            >= 5.0
    );
    assert!(
        sample(
            &scrape,
            "pgbouncer_stats_totals_received_bytes_total",
            &app_db
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        sample(&scrape, "pgbouncer_stats_queries_pooled_total", &app_db).unwrap_or(0.0) >= 5.0,
        "pre-0.11 name"
    );
    assert_eq!(
        sample(&scrape, "pgbouncer_pools_client_active_connections", &pool),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "pgbouncer_pools_server_idle_connections", &pool),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "pgbouncer_pools_client_maxwait_seconds", &pool),
        Some(0.0)
    );
    assert_eq!(
        sample(&scrape, "pgbouncer_databases_pool_size", &[("name", "app")]),
        Some(20.0)
    );
    assert_eq!(
        sample(&scrape, "pgbouncer_config_max_client_connections", &[]),
        Some(100.0)
    );
    assert!(sample(&scrape, "pgbouncer_used_clients", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        sample(
            &scrape,
            "pgbouncer_client_connections",
            &[("database", "app"), ("state", "idle")]
        ),
        Some(1.0)
    );
    assert!(sample(&scrape, "pgbouncer_version_info", &[]).is_some());
    for h in [
        "pgfunnel_query_duration_seconds",
        "pgfunnel_transaction_duration_seconds",
        "pgfunnel_client_wait_seconds",
    ] {
        let n = sample(&scrape, &format!("{h}_count"), &pool).unwrap_or(0.0);
        assert!(n >= 5.0, "{h}_count = {n}");
    }
    assert_eq!(
        sample(&scrape, "pgfunnel_server_connect_seconds_count", &pool),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "pgfunnel_server_connect_failures_total", &pool),
        Some(0.0)
    );
}

#[tokio::test]
async fn bad_http_input_gets_400_and_slow_clients_are_dropped() {
    PgServer::shared();
    let p = Proxy::simple("", METRICS_INI).await;
    let addr = metrics_addr(&p);
    let resp = raw(addr, b"\x16\x03\x01\x00\x05hello\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    let resp = raw(addr, b"HELO example.org\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert_eq!(get(addr, "/nope").await.0, 404);
    assert_eq!(
        raw(addr, b"POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .get(9..12),
        Some("405")
    );
    // A client that never finishes its request head is answered 408 and closed, while
    // other requests are served meanwhile.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /metrics HT")
        .await
        .expect("partial head");
    assert_eq!(
        get(addr, "/health/live").await,
        (200, "{\"status\":\"ok\"}".to_owned())
    );
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut out))
        .await
        .expect("slow client is dropped")
        .expect("read");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "dropped by the head timeout"
    );
}

#[tokio::test]
async fn readiness_flips_to_503_when_postgres_stops_and_back_when_it_starts() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("private postgres");
    let db = format!("app = host=127.0.0.1 port={} dbname=app", pg.port());
    let p = Proxy::start(&ini(&db, METRICS_INI), &userlist("")).await;
    let addr = metrics_addr(&p);
    let ready = get(addr, "/health/ready").await;
    assert_eq!(
        ready,
        (
            200,
            r#"{"status":"ok","databases":{"app":"connected"}}"#.to_owned()
        )
    );
    let pg = std::sync::Arc::new(pg);
    let pg2 = pg.clone();
    tokio::task::spawn_blocking(move || pg2.stop("fast"))
        .await
        .expect("stop");
    wait_until_async(Duration::from_secs(15), "readiness 503", || async {
        let (code, body) = get(addr, "/health/ready").await;
        code == 503 && body.contains("\"degraded\"") && body.contains("\"app\":\"unreachable")
    })
    .await;
    assert_eq!(
        get(addr, "/health/live").await.0,
        200,
        "liveness does not depend on Postgres"
    );
    let pg2 = pg.clone();
    tokio::task::spawn_blocking(move || pg2.start_again())
        .await
        .expect("start");
    wait_until_async(Duration::from_secs(15), "readiness 200 again", || async {
        get(addr, "/health/ready").await.0 == 200
    })
    .await;
}

fn promtool() -> std::process::Command {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool not found: install Debian's prometheus package (apt-get install prometheus; scripts/test.sh does)"
    );
    std::process::Command::new("promtool")
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pgfunnel-alerts.yml");
    let out = promtool()
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn dashboard_queries_use_exported_metric_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dash = std::fs::read_to_string(root.join("grafana-pgfunnel.json")).expect("dashboard");
    let rules = std::fs::read_to_string(root.join("pgfunnel-alerts.yml")).expect("rules");
    let known = pgfunnel::metrics::Metrics::new().metric_names();
    for text in [&dash, &rules] {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let base = word
                .strip_suffix("_bucket")
                .or_else(|| word.strip_suffix("_count"))
                .or_else(|| word.strip_suffix("_sum"))
                .unwrap_or(word);
            let metric = word.starts_with("pgbouncer_") || word.starts_with("pgfunnel_");
            if metric && !word.ends_with('_') && word != "pgbouncer_exporter" {
                assert!(
                    known.iter().any(|k| k == base || k == word),
                    "{word} is not exported"
                );
            }
        }
    }
}
