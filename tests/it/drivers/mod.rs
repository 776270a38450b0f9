//! The driver suite: real client drivers, installed from their own registries, run through
//! pgfunnel in transaction mode with a pool of 2 servers and many concurrent clients each.
//! Every driver runs the same scenario (tests/drivers/README.md): prepared selects and inserts,
//! rollbacks, errors, large results and parameters, COPY, LISTEN/NOTIFY and SET. The Python,
//! Node and Java programs live in tests/drivers/ and run as subprocesses (`external`); the Rust
//! drivers run in-process (`tokio_pg`, `sqlx_pg`).

mod external;
mod sqlx_pg;
mod tokio_pg;

use crate::harness::*;
use crate::proxy::*;

/// Concurrent client connections per driver.
pub const CLIENTS: usize = 12;
/// Servers in the pool: far fewer than clients, so statements meet servers that lack them.
pub const POOL_SIZE: usize = 2;
/// The login the drivers use towards pgfunnel (SCRAM, from the auth_file).
pub const USER: &str = "plain_user";
pub const PASSWORD: &str = "plain_pass";
pub const DB: &str = "app";
/// Rounds of the concurrent phase per client.
pub const ROUNDS: i32 = 15;
pub const BIG_ROWS: i32 = 50_000;
/// 5 MiB: far above every internal buffer of pgfunnel (64 KiB).
pub const BIG_VALUE_LEN: usize = 5 * 1024 * 1024;

/// pgfunnel for one driver: transaction mode, POOL_SIZE servers, SCRAM towards clients.
pub async fn start_proxy() -> Proxy {
    PgServer::shared();
    let opts = format!(
        "user={SCRAM_USER} password={SCRAM_PASSWORD} pool_mode=transaction pool_size={POOL_SIZE}"
    );
    Proxy::simple(&opts, "auth_type = scram-sha-256").await
}

/// The 5 MiB text every driver stores and reads back.
pub fn big_value() -> String {
    "0123456789abcdef".repeat(BIG_VALUE_LEN / 16)
}

/// A statement_timeout only client `ci` uses, as Postgres prints it (never a whole second).
pub fn client_timeout(ci: usize) -> String {
    format!("{}ms", 10_001 + ci)
}

/// The rows every driver copies in and expects back out, as COPY text.
pub fn copy_text() -> String {
    (1..=1000)
        .map(|i| format!("{i}\tcopy row {i} with tab\\t\n"))
        .collect()
}

/// Hex md5 as Postgres's md5() prints it, computed by Postgres's own rules (RFC 1321).
pub fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
