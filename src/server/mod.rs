//! Server connections: connecting and logging in to Postgres (`connect`), the connection
//! type with its reported parameters and cancel key (`conn`), and the internal queries
//! pgfunnel runs on it (parameter sync, reset). Pooling policy lives in `pool`.

pub mod conn;
pub mod connect;

pub use conn::{BackendKey, CancelAddr, ServerConnection, ServerError, ServerInfo};
pub use connect::{connect, ServerCredential, ServerTarget};
