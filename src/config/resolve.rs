//! Precedence of per-user, per-database and global values: user > database > `[pgbouncer]`, for
//! the keys that exist at several levels. Pure lookups; the pool module caches the results.

use std::time::Duration;

use super::database::{DatabaseEntry, UserEntry};
use super::kinds::PoolMode;
use super::Config;

impl Config {
    /// Pool mode for a (database, user) pool: user's, else database's, else `pool_mode`.
    pub fn effective_pool_mode(&self, db: &DatabaseEntry, user: Option<&UserEntry>) -> PoolMode {
        user.and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(self.settings.pool_mode)
    }

    /// Pool size: user's `pool_size`, else database's, else `default_pool_size`. 0 = unlimited.
    pub fn effective_pool_size(&self, db: &DatabaseEntry, user: Option<&UserEntry>) -> u32 {
        user.and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(self.settings.default_pool_size)
    }

    /// Reserve pool size: user's, else database's, else `reserve_pool_size`.
    pub fn effective_reserve_pool_size(&self, db: &DatabaseEntry, user: Option<&UserEntry>) -> u32 {
        user.and_then(|u| u.reserve_pool_size)
            .or(db.reserve_pool_size)
            .unwrap_or(self.settings.reserve_pool_size)
    }

    /// Minimum pool size: database's, else `min_pool_size` (no per-user value exists).
    pub fn effective_min_pool_size(&self, db: &DatabaseEntry) -> u32 {
        db.min_pool_size.unwrap_or(self.settings.min_pool_size)
    }

    /// Longest wait for a server: user's, else database's, else `query_wait_timeout`. Zero = forever.
    pub fn effective_query_wait_timeout(
        &self,
        db: &DatabaseEntry,
        user: Option<&UserEntry>,
    ) -> Duration {
        user.and_then(|u| u.query_wait_timeout)
            .or(db.query_wait_timeout)
            .unwrap_or(self.settings.query_wait_timeout)
    }

    /// Server connection lifetime: database's, else `server_lifetime`.
    pub fn effective_server_lifetime(&self, db: &DatabaseEntry) -> Duration {
        db.server_lifetime.unwrap_or(self.settings.server_lifetime)
    }

    /// Server connections per database across users: database's, else `max_db_connections`. 0 = unlimited.
    pub fn effective_max_db_connections(&self, db: &DatabaseEntry) -> u32 {
        db.max_db_connections
            .unwrap_or(self.settings.max_db_connections)
    }

    /// Client connections per database: database's, else `max_db_client_connections`. 0 = unlimited.
    pub fn effective_max_db_client_connections(&self, db: &DatabaseEntry) -> u32 {
        db.max_db_client_connections
            .unwrap_or(self.settings.max_db_client_connections)
    }

    /// Server connections per user across databases: user's, else `max_user_connections`. 0 = unlimited.
    pub fn effective_max_user_connections(&self, user: Option<&UserEntry>) -> u32 {
        user.and_then(|u| u.max_user_connections)
            .unwrap_or(self.settings.max_user_connections)
    }

    /// Client connections per user: user's, else `max_user_client_connections`. 0 = unlimited.
    pub fn effective_max_user_client_connections(&self, user: Option<&UserEntry>) -> u32 {
        user.and_then(|u| u.max_user_client_connections)
            .unwrap_or(self.settings.max_user_client_connections)
    }

    /// Query timeout: user's, else `query_timeout`. Zero = none.
    pub fn effective_query_timeout(&self, user: Option<&UserEntry>) -> Duration {
        user.and_then(|u| u.query_timeout)
            .unwrap_or(self.settings.query_timeout)
    }

    /// Idle-in-transaction timeout: user's, else `idle_transaction_timeout`. Zero = none.
    pub fn effective_idle_transaction_timeout(&self, user: Option<&UserEntry>) -> Duration {
        user.and_then(|u| u.idle_transaction_timeout)
            .unwrap_or(self.settings.idle_transaction_timeout)
    }

    /// Transaction timeout: user's, else `transaction_timeout`. Zero = none.
    pub fn effective_transaction_timeout(&self, user: Option<&UserEntry>) -> Duration {
        user.and_then(|u| u.transaction_timeout)
            .unwrap_or(self.settings.transaction_timeout)
    }

    /// Client idle timeout: user's, else `client_idle_timeout`. Zero = none.
    pub fn effective_client_idle_timeout(&self, user: Option<&UserEntry>) -> Duration {
        user.and_then(|u| u.client_idle_timeout)
            .unwrap_or(self.settings.client_idle_timeout)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    const TEXT: &str = "
[databases]
plain = host=h
tuned = host=h pool_mode=transaction pool_size=7 reserve_pool=3 query_wait_timeout=30 server_lifetime=60 min_pool_size=2 max_db_connections=9

[users]
alice = pool_mode=statement pool_size=2 reserve_pool_size=1 query_wait_timeout=5 query_timeout=1.5 max_user_connections=4
bob = max_user_client_connections=3

[pgbouncer]
pool_mode = session
default_pool_size = 11
reserve_pool_size = 4
query_wait_timeout = 100
";

    fn config() -> Config {
        Config::parse_str(TEXT, Path::new("prec.ini")).expect("valid config")
    }

    #[test]
    fn user_beats_database_beats_global() {
        let c = config();
        let plain = c.database("plain").expect("plain");
        let tuned = c.database("tuned").expect("tuned");
        let alice = c.user("alice");
        let bob = c.user("bob");
        assert_eq!(c.effective_pool_mode(&plain, None), PoolMode::Session);
        assert_eq!(c.effective_pool_mode(&tuned, bob), PoolMode::Transaction);
        assert_eq!(c.effective_pool_mode(&tuned, alice), PoolMode::Statement);
        assert_eq!(c.effective_pool_size(&plain, bob), 11);
        assert_eq!(c.effective_pool_size(&tuned, bob), 7);
        assert_eq!(c.effective_pool_size(&tuned, alice), 2);
        assert_eq!(c.effective_reserve_pool_size(&plain, None), 4);
        assert_eq!(c.effective_reserve_pool_size(&tuned, None), 3);
        assert_eq!(c.effective_reserve_pool_size(&tuned, alice), 1);
        assert_eq!(
            c.effective_query_wait_timeout(&plain, None),
            Duration::from_secs(100)
        );
        assert_eq!(
            c.effective_query_wait_timeout(&tuned, bob),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.effective_query_wait_timeout(&tuned, alice),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn database_and_user_only_values() {
        let c = config();
        let plain = c.database("plain").expect("plain");
        let tuned = c.database("tuned").expect("tuned");
        assert_eq!(c.effective_min_pool_size(&plain), 0);
        assert_eq!(c.effective_min_pool_size(&tuned), 2);
        assert_eq!(
            c.effective_server_lifetime(&plain),
            Duration::from_secs(3600)
        );
        assert_eq!(c.effective_server_lifetime(&tuned), Duration::from_secs(60));
        assert_eq!(c.effective_max_db_connections(&tuned), 9);
        assert_eq!(c.effective_max_db_client_connections(&tuned), 0);
        assert_eq!(c.effective_max_user_connections(c.user("alice")), 4);
        assert_eq!(c.effective_max_user_connections(None), 0);
        assert_eq!(c.effective_max_user_client_connections(c.user("bob")), 3);
        assert_eq!(
            c.effective_query_timeout(c.user("alice")),
            Duration::from_millis(1500)
        );
        assert_eq!(c.effective_query_timeout(c.user("bob")), Duration::ZERO);
        assert_eq!(c.effective_idle_transaction_timeout(None), Duration::ZERO);
        assert_eq!(c.effective_transaction_timeout(None), Duration::ZERO);
        assert_eq!(c.effective_client_idle_timeout(None), Duration::ZERO);
    }
}
