//! Dedicated server connections (replication clients): opened for one client with extra
//! startup parameters, never taken from or returned to the idle list, yet counted against
//! `pool_size` and the shared limits like any other connection of the pool. When the pool
//! is full of idle connections, one of them is closed to make room.

use std::time::Duration;

use tracing::debug;

use super::{Pool, PoolError, PooledServer};
use crate::server::ServerTarget;

impl Pool {
    /// Opens a server connection for one client only, logging in with the pool's target
    /// plus `extra` startup parameters (which replace the pool's own of the same name).
    /// Waits for a pool slot as a normal checkout does (FIFO, query_wait_timeout); the
    /// returned connection must be dropped or [`Pool::discard`]ed, never checked in.
    pub async fn open_dedicated(
        &self,
        extra: &[(String, String)],
    ) -> Result<PooledServer, PoolError> {
        let started = tokio::time::Instant::now();
        let wait = self.settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| started + wait);
        let (permit, handed, _) = self.pool_slot(&mut None, None).await?;
        if let Some(conn) = handed {
            // Not for us: a dedicated connection is always new.
            self.queue.with_idle(|idle| idle.push(conn));
        }
        // Idle connections hold no slot: with ours taken, close idle ones beyond what the
        // remaining slots allow, so the pool never holds more than pool_size connections.
        while self.idle_count() > self.queue.available() {
            if !self.close_one_idle() {
                break;
            }
        }
        let slots = loop {
            if let Some(slots) = self.try_limit_slots() {
                break slots;
            }
            if self.close_one_idle() {
                continue;
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(PoolError::Timeout);
            }
            tokio::select! {
                _ = self.returned.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        };
        let target = with_params(&self.target(), extra);
        let logging_in = super::retry::InFlight::start(&self.stats.logging_in);
        let opened = crate::server::connect(&target, self.settings.connect_timeout).await;
        drop(logging_in);
        let mut conn = match opened {
            Ok(c) => Box::new(c),
            Err(e) => {
                self.stats.timers.connect_failures.inc();
                return Err(e.into());
            }
        };
        self.stats.track(&conn.info);
        conn.slots = slots;
        debug!(server = conn.id, db = %self.key.database, user = %self.key.user, "dedicated server connected");
        Ok(self.lend(conn, permit, started.elapsed()))
    }
}

/// `target` with `extra` startup parameters replacing its own of the same name.
fn with_params(target: &ServerTarget, extra: &[(String, String)]) -> ServerTarget {
    let mut t = target.clone();
    t.startup_params
        .retain(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)));
    t.startup_params.extend(extra.iter().cloned());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_parameters_replace_the_pools_own() {
        let settings = crate::config::Settings::default();
        let target = ServerTarget {
            hosts: vec!["localhost".into()],
            port: 5432,
            dbname: "app".into(),
            user: "u".into(),
            credential: crate::server::ServerCredential::None,
            startup_params: vec![("application_name".into(), "pool".into())],
            tls: std::sync::Arc::new(crate::net::TlsConfigs::load(&settings).expect("tls")),
            direct_tls: false,
            dns: std::sync::Arc::new(crate::net::dns::DnsCache::new(Duration::from_secs(15))),
            options: Default::default(),
        };
        let extra = [
            ("replication".to_owned(), "database".to_owned()),
            ("application_name".to_owned(), "sub".to_owned()),
        ];
        let t = with_params(&target, &extra);
        assert_eq!(t.startup_params, extra.to_vec());
    }
}
