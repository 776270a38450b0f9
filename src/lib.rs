//! pgfunnel: a PostgreSQL connection pooler.
//!
//! How a connection travels:
//! - `net::listener` accepts TCP and Unix-socket connections (refusing TCP ones over
//!   `max_client_conn` at accept, before any TLS) and spawns one task per client; `net::stream`
//!   is the byte stream (TCP, Unix, TLS) both sides use, `net::tls` builds the rustls configs
//!   with the verifiers of `net::tls_verify` and `net::tls_chain` (what OpenSSL accepts and
//!   webpki refuses: v1 certificates, a self-signed CA as its own end entity), `net::dns`
//!   caches server host names.
//! - `client::handshake` answers SSLRequest/GSSENCRequest (or direct TLS), serves
//!   CancelRequests through the `cancel` registry and reads the StartupMessage
//!   (`protocol::startup`).
//! - `client::access` picks the method (`auth_type`, `auth_hba_file`) and finds the secret
//!   (auth_file or `auth_query`); `client::login` runs the exchange with the sans-I/O `auth`
//!   verifiers (SCRAM with `auth::channel_binding` over TLS, md5, cleartext, trust), giving
//!   unknown users the same challenge kind, salt and work (`auth::plain_cache` derives
//!   plaintext users' verifiers once, off the relay threads).
//! - `client::session` resolves the (database, user) `pool::Pool`, sends the login replies,
//!   then loops: wait for a request, `Pool::checkout`, bring the server's parameters in line
//!   (`client::params`), relay (`client::relay`, the hot loop, with buffers lent by
//!   `client::buffers`), and release the server when `client::tracker` says it is idle
//!   (transaction/statement mode) or at disconnect after `server_reset_query` (session mode).
//!   A server is never returned dirty. In the relay, `client::validate` checks every client
//!   message against the protocol state before it is forwarded; `client::statement` (over
//!   `client::lexer`) finds SET/RESET, LISTEN and what pins in every statement of a query
//!   text; `client::rewrite` and `client::prepared` map named prepared statements onto shared
//!   servers; `client::timeouts` holds the exact deadlines and `client::link_stats` the
//!   accounting.
//! - `server` opens and logs in server connections (`connect`, `tls`, `login`, `auth_query`);
//!   `pool` bounds and reuses them (`limits` across pools, `gate` for PAUSE, `retry` while a
//!   server is down, `fill` for `min_pool_size`, `listen` for the shared LISTEN connection,
//!   `stats` for counters).
//! - `config` reads PgBouncer-format ini files (and URL mode); `cli` and `main` wire it up;
//!   `logging` sets up `tracing` output, escaping every field and colouring only a terminal.
//! - `admin` is the console on the virtual database `pgbouncer`/`pgfunnel` (SHOW views,
//!   control commands over the simple and extended protocol); `control` holds the actions it
//!   shares with the signal handlers (pause, reload, kill...), `reload` builds and swaps a new
//!   config, and `shutdown` the three shutdown modes. `client::registry` lists connected
//!   clients for SHOW CLIENTS and KILL.
//! - `metrics` serves /metrics (pgbouncer_exporter names plus per-pool histograms) and
//!   /health/live, /health/ready on `metrics_listen`.
//! - `error` maps each error kind to the SQLSTATE a client sees and a metric label.
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
pub mod edge;
pub mod error;
pub mod fleet;
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
