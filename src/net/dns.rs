//! Host name resolution for server connections, cached up to `dns_max_ttl` (PgBouncer
//! ignores the real DNS TTL too). IP literals are never looked up. Callers try every
//! returned address and call [`DnsCache::forget`] when none answered, so a moved host is
//! looked up again on the next attempt.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (host, port) -> when resolved and the addresses.
type Entries = HashMap<(String, u16), (Instant, Arc<[SocketAddr]>)>;

/// Resolved addresses by (host, port).
#[derive(Debug)]
pub struct DnsCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl DnsCache {
    /// A cache keeping answers for `ttl` (0 = look up every time).
    pub fn new(ttl: Duration) -> DnsCache {
        DnsCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Every address of `host`, from the cache when fresh. An empty answer is an error.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Arc<[SocketAddr]>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        if let Some((at, addrs)) = self.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((bare, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "host name resolved to no address",
            ));
        }
        if !self.ttl.is_zero() {
            self.lock().insert(key, (Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }

    /// Drops the cached answer for `host` (none of its addresses answered).
    pub fn forget(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_owned(), port));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_skip_lookup_and_names_are_cached_until_forgotten() {
        let cache = DnsCache::new(Duration::from_secs(60));
        let v6 = cache.resolve("::1", 5432).await.expect("literal");
        assert_eq!(&*v6, &["[::1]:5432".parse().expect("addr")]);
        let first = cache.resolve("localhost", 5432).await.expect("localhost");
        assert!(!first.is_empty());
        let second = cache.resolve("localhost", 5432).await.expect("cached");
        assert!(
            Arc::ptr_eq(&first, &second),
            "second answer comes from the cache"
        );
        cache.forget("localhost", 5432);
        let third = cache.resolve("localhost", 5432).await.expect("again");
        assert!(
            !Arc::ptr_eq(&first, &third),
            "forgotten entries are looked up again"
        );
    }

    #[tokio::test]
    async fn zero_ttl_never_caches() {
        let cache = DnsCache::new(Duration::ZERO);
        let a = cache.resolve("localhost", 1).await.expect("a");
        let b = cache.resolve("localhost", 1).await.expect("b");
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
