//! pgfunnel: a PostgreSQL connection pooler.
//!
//! How a connection travels (see DESIGN.md §1):
//! - `net::listener` accepts TCP and Unix-socket connections and spawns one task per client.
//! - `client::handshake` answers SSLRequest/GSSENCRequest, serves CancelRequests through
//!   the `cancel` registry and reads the StartupMessage (`protocol::startup`).
//! - `client::login` authenticates the client with the `auth` verifiers (SCRAM, md5,
//!   cleartext, trust) against the auth_file users held by `app::App`.
//! - `client::session` resolves the (database, user) `pool::Pool`, sends the login replies,
//!   then loops: wait for a request, `Pool::checkout`, bring the server's parameters in line
//!   (`client::params`), relay (`client::relay`, the hot loop), and release the server when
//!   `client::tracker` says it is idle (transaction/statement mode) or at disconnect after
//!   `server_reset_query` (session mode). A server is never returned dirty.
//! - `server` opens and logs in server connections; `pool` bounds and reuses them.
//! - `config` reads PgBouncer-format ini files (and URL mode); `cli` and `main` wire it up.
//! - `admin` is the console on the virtual database `pgbouncer`/`pgfunnel` (SHOW views,
//!   control commands over the simple and extended protocol); `control` holds the actions it
//!   shares with the signal handlers (pause, reload, kill...) and `shutdown` the three
//!   shutdown modes. `client::registry` lists connected clients for SHOW CLIENTS and KILL.
//! - `metrics` serves /metrics (pgbouncer_exporter names plus per-pool histograms) and
//!   /health/live, /health/ready on `metrics_listen`.
//! - `panic`: a panic ends one client task only and is logged as a bug; std locks recover.
//! - `migrate` is the `pgfunnel migrate` subcommand: numbered SQL migrations applied once,
//!   each in its own transaction behind a transaction-level lock (safe through the pooler).
//!
//! Lint policy: no `unwrap()` outside tests; `expect` only where failure is a bug.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod panic;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod shutdown;
