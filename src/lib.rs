//! pgfunnel: a PostgreSQL connection pooler, a drop-in for PgBouncer.
//!
//! The life of a client connection:
//! 1. Accept. `net::listener` accepts TCP and Unix-socket connections (refusing TCP ones
//!    over `max_client_conn` before any TLS) and hands each to `app::spawn`, which
//!    registers it (`client::registry`, for SHOW CLIENTS and KILL) and runs it as one task.
//!    `net::stream` is the byte stream both sides use (TCP, Unix, TLS); `net::tls` builds
//!    the rustls configs (with `net::tls_verify` and `net::tls_chain` for what OpenSSL
//!    accepts and webpki refuses), `net::dns` caches server host names.
//! 2. Handshake and admission (`app::admission`). `client::handshake` answers
//!    SSLRequest/GSSENCRequest (or direct TLS), serves CancelRequests through the `cancel`
//!    registry and reads the StartupMessage (`protocol::startup`). The console database
//!    (`pgbouncer`/`pgfunnel`) goes to `admin`; a full `max_client_conn` or a disabled
//!    database is refused; everyone else becomes a `client::session::Session`, which sees
//!    the running pgfunnel only through the narrow traits of `client::context`.
//! 3. Authentication. `client::access` picks the method (`auth_type`, `auth_hba_file`) and
//!    finds the secret (`users`, or `auth_query` through a pool); `client::login` runs the
//!    exchange with the sans-I/O `auth` verifiers (SCRAM with channel binding over TLS,
//!    md5, cleartext, trust), giving unknown users the same challenge kind, salt and work.
//! 4. Login. The session resolves its (database, user) `pool::Pool` (planned by
//!    `app::pools`), counts itself against the client limits, and sends the login replies
//!    from the parameters the pool's first server reported.
//! 5. The link cycle (`client::link`), until the client leaves: wait for a request with no
//!    server held (`client::idle`: notifications, client_idle_timeout, a lone LISTEN served
//!    by the pool's shared listener, `pool::listen`); check out a server (`pool::checkout`:
//!    FIFO wait, reserve pool, shared limits); bring its parameters in line with the
//!    client's (`client::params`); relay (`client::relay`: the I/O pump, with every client
//!    message checked by `client::validate` and watched by `client::tracker`, which uses
//!    `client::statement` over `client::lexer` to find SET/RESET, LISTEN and what pins a
//!    client to its server; `client::rewrite` maps named prepared statements onto the
//!    pool-wide registry of `pool::prepared`; `client::timeouts` holds the link's
//!    deadlines); then release the server as `client::release` decides.
//! 6. Release. A server goes back to the pool only when it is idle and owes nothing, no
//!    cancel reached it during the link, and no query text too large to inspect went
//!    through it; a server whose client left is reused only when clean, after
//!    `server_reset_query` where the mode or a pin requires one. Everything else is
//!    closed. `pool::maintenance` closes idle servers past their idle time or lifetime.
//! 7. Errors. Whatever the client is told about a failure is an `error::ClientError`
//!    (SQLSTATE, severity, text), written by one function.
//!
//! Around it: `server` opens and logs in server connections (`connect`, `tls`, `login`,
//! `auth_query`); `pool` also holds `limits` across pools, `gate` for PAUSE, `retry`
//! while a server is down, `fill` for `min_pool_size` and `stats`. `config` reads
//! PgBouncer-format ini files (and URL mode); `cli` and `main` wire it up; `logging` sets
//! up `tracing` output, escaping every field. `admin` is the console (SHOW views, control
//! commands); `control` holds the actions it shares with the signal handlers, `reload`
//! builds and swaps a new config, `shutdown` the three shutdown modes. `metrics` serves
//! /metrics and the health endpoints. `panic`: a panic ends one client task only. `migrate`
//! is the `pgfunnel migrate` subcommand. ARCHITECTURE.md has the module map and the
//! invariants.
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
pub mod users;
