//! The integration-test binary: a real PostgreSQL (started by `harness`) and pgfunnel
//! started in-process (`proxy`) or as the built binary (`cli`).

mod harness;
mod harness_selftest;
mod proxy;

mod auth;
mod bad_input;
mod cli;
mod drivers;
mod migrate;
mod prepared;
mod session_pool;
mod transaction_pool;
