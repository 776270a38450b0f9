//! Host name resolution for server connections, cached up to `dns_max_ttl` (PgBouncer
//! ignores the real DNS TTL too); a name that does not exist is remembered as such for
//! `dns_nxdomain_ttl`, so a typo'd host is not looked up at every client. IP literals are
//! never looked up. Callers try every
//! returned address and call [`DnsCache::forget`] when none answered, so a moved host is
//! looked up again on the next attempt.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (host, port) -> when resolved and the addresses.
type Entries = HashMap<(String, u16), (Instant, Arc<[SocketAddr]>)>;

/// (host, port) -> when the lookup said the name does not exist.
type Missing = HashMap<(String, u16), Instant>;

/// Resolved addresses by (host, port).
#[derive(Debug)]
pub struct DnsCache {
    ttl: Duration,
    nxdomain_ttl: Duration,
    entries: Mutex<Entries>,
    missing: Mutex<Missing>,
    lookups: std::sync::atomic::AtomicU64,
}

impl DnsCache {
    /// A cache keeping answers for `ttl` (0 = look up every time).
    pub fn new(ttl: Duration) -> DnsCache {
        DnsCache {
            ttl,
            nxdomain_ttl: Duration::ZERO,
            entries: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            lookups: Default::default(),
        }
    }

    /// A cache for `dns_max_ttl` and `dns_nxdomain_ttl`.
    pub fn from_settings(s: &crate::config::Settings) -> DnsCache {
        DnsCache {
            nxdomain_ttl: s.dns_nxdomain_ttl,
            ..DnsCache::new(s.dns_max_ttl)
        }
    }

    /// How many real lookups this cache made (not counting answers from the cache).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
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
        if let Some(at) = lock(&self.missing).get(&key) {
            if at.elapsed() < self.nxdomain_ttl {
                return Err(no_such_host());
            }
        }
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = tokio::net::lookup_host((bare, port)).await;
        let addrs: Arc<[SocketAddr]> = match found {
            Ok(a) => a.collect(),
            // getaddrinfo's "name or service not known" has no ErrorKind of its own; only
            // answers that say the name does not exist are remembered.
            Err(e) if e.to_string().contains("not known") => Arc::from([]),
            Err(e) => return Err(e),
        };
        if addrs.is_empty() {
            if !self.nxdomain_ttl.is_zero() {
                lock(&self.missing).insert(key, Instant::now());
            }
            return Err(no_such_host());
        }
        lock(&self.missing).remove(&key);
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
        lock(&self.entries)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error for a host name that does not exist (logged as `server DNS lookup failed`).
fn no_such_host() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address")
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
    async fn a_missing_name_is_remembered_for_dns_nxdomain_ttl() {
        let cache = DnsCache {
            nxdomain_ttl: Duration::from_secs(60),
            ..DnsCache::new(Duration::from_secs(60))
        };
        let name = "no-such-host.invalid";
        let first = cache.resolve(name, 5432).await.expect_err("no such host");
        assert_eq!(first.kind(), io::ErrorKind::NotFound);
        assert_eq!(cache.lookups(), 1);
        let again = cache.resolve(name, 5432).await.expect_err("still missing");
        assert_eq!(again.kind(), io::ErrorKind::NotFound);
        assert_eq!(cache.lookups(), 1, "the second answer came from the cache");
        let plain = DnsCache::new(Duration::from_secs(60));
        let _ = plain.resolve(name, 5432).await.expect_err("no such host");
        let _ = plain.resolve(name, 5432).await.expect_err("no such host");
        assert_eq!(
            plain.lookups(),
            2,
            "dns_nxdomain_ttl = 0 looks up every time"
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
