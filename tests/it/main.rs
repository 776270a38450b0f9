//! The integration-test binary: a real PostgreSQL (started by `harness`) and pgfunnel
//! started in-process (`proxy`) or as the built binary (`cli`).

mod harness;
mod harness_selftest;
mod proxy;

mod admin;
mod auth;
mod auth_stored;
mod bad_input;
mod bench_compare;
mod chaos;
mod cli;
mod deploy;
mod drivers;
mod edge;
mod fleet;
mod flood;
mod hostile_auth;
mod hostile_ops;
mod hostile_state;
mod hostile_stream;
mod listen;
mod metrics;
mod migrate;
mod parity;
mod pgb_logs;
mod pgb_settings;
mod pgb_wire;
mod prepared;
mod relay_stress;
mod replication;
mod server_tls;
mod session_pool;
mod shutdown_modes;
mod signals;
mod soak;
mod timeouts;
mod tls;
mod tls_parity;
mod transaction_pool;
mod transparency;
mod upstream;
