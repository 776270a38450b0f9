//! The integration-test binary: a real PostgreSQL (started by `harness`) and pgfunnel
//! started in-process (`proxy`) or as the built binary (`cli`).

mod harness;
mod harness_selftest;
mod proxy;

mod admin;
mod auth;
mod bad_input;
mod cli;
mod metrics;
mod migrate;
mod session_pool;
mod signals;
mod transaction_pool;
