//! Test harness for the integration-test binary: a real PostgreSQL started from the OS package
//! (`pg`) and small helpers for waiting on events and naming per-test objects (`util`).
//! It does not start pgfunnel itself; tests do that with the crate's own API.
#![allow(dead_code)] // every test module uses a different subset of the harness

pub mod certs;
mod os;
pub mod pg;
pub mod relay;
pub mod util;

pub use certs::*;
pub use pg::*;
pub use util::*;
