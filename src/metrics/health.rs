//! Readiness: can every configured database's server be reached? A cheap connect (TCP or
//! Unix socket, no login) per database with a short timeout, cached for a few seconds so
//! health probes never load the servers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::App;

/// How long a readiness result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// Connect timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One readiness evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Why pgfunnel as a whole is not ready (shutting down), if so.
    pub blocked: Option<&'static str>,
    /// Per database: `Ok` or the reason it cannot be reached.
    pub databases: Vec<(String, Result<(), String>)>,
}

impl Readiness {
    /// True when nothing blocks and every database is reachable.
    pub fn is_ready(&self) -> bool {
        self.blocked.is_none() && self.databases.iter().all(|(_, r)| r.is_ok())
    }

    /// `{"status":"ok","databases":{"app":"connected"}}`, or `"degraded"` with reasons.
    pub fn to_json(&self) -> String {
        let mut dbs = Vec::new();
        for (name, r) in &self.databases {
            let v = match r {
                Ok(()) => "connected".to_owned(),
                Err(e) => format!("unreachable: {e}"),
            };
            dbs.push(format!("{}:{}", json_str(name), json_str(&v)));
        }
        let status = if self.is_ready() { "ok" } else { "degraded" };
        let reason = self
            .blocked
            .map(|b| format!(",\"reason\":{}", json_str(b)))
            .unwrap_or_default();
        format!(
            "{{\"status\":\"{status}\"{reason},\"databases\":{{{}}}}}",
            dbs.join(",")
        )
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The cached readiness result.
#[derive(Debug, Default)]
pub struct HealthCache {
    cached: Mutex<Option<(Instant, Arc<Readiness>)>>,
}

/// Readiness now (probing at most every [`CACHE_FOR`]).
pub async fn readiness(app: &App) -> Arc<Readiness> {
    if let Some((at, r)) = app
        .metrics
        .health
        .cached
        .lock()
        .expect("health lock")
        .as_ref()
    {
        if at.elapsed() < CACHE_FOR {
            return r.clone();
        }
    }
    let config = app.config();
    let mut probes = tokio::task::JoinSet::new();
    for (i, d) in config.databases.iter().enumerate() {
        let hosts = if d.hosts.is_empty() {
            vec![config.settings.unix_socket_dir.clone()]
        } else {
            d.hosts.clone()
        };
        let (name, port) = (d.name.clone(), d.port);
        probes.spawn(async move { (i, name, probe(&hosts, port).await) });
    }
    let mut databases = Vec::new();
    while let Some(Ok(r)) = probes.join_next().await {
        databases.push(r);
    }
    databases.sort_by_key(|(i, _, _)| *i);
    let databases = databases.into_iter().map(|(_, n, r)| (n, r)).collect();
    let blocked = app
        .stopping
        .requested()
        .map(|_| "shutting down")
        .or_else(|| {
            // Fleet hook: a new instance takes no budget share yet.
            app.fleet.joining(&config).then_some("joining the fleet")
        });
    let r = Arc::new(Readiness { blocked, databases });
    *app.metrics.health.cached.lock().expect("health lock") = Some((Instant::now(), r.clone()));
    r
}

/// Opens and closes a socket to the first host that answers.
async fn probe(hosts: &[String], port: u16) -> Result<(), String> {
    let mut last = String::from("no host configured");
    for host in hosts {
        let attempt = async {
            if host.starts_with('/') {
                let path = std::path::Path::new(host).join(format!(".s.PGSQL.{port}"));
                tokio::net::UnixStream::connect(path).await.map(drop)
            } else {
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map(drop)
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e.kind().to_string(),
            Err(_) => last = "connect timed out".to_owned(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let ok = Readiness {
            blocked: None,
            databases: vec![("app".into(), Ok(()))],
        };
        assert_eq!(
            ok.to_json(),
            r#"{"status":"ok","databases":{"app":"connected"}}"#
        );
        let bad = Readiness {
            blocked: None,
            databases: vec![("a\"b".into(), Err("connection refused".into()))],
        };
        assert!(!bad.is_ready());
        assert_eq!(
            bad.to_json(),
            r#"{"status":"degraded","databases":{"a\"b":"unreachable: connection refused"}}"#
        );
    }

    #[tokio::test]
    async fn probe_reports_refused_ports() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(probe(&["127.0.0.1".into()], port).await, Ok(()));
        drop(l);
        assert!(probe(&["127.0.0.1".into()], port).await.is_err());
    }
}
