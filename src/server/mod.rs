//! Server connections: connecting and logging in to Postgres (`connect`, with TLS in
//! `tls` and the authentication exchange in `login`), what pgfunnel logs in with
//! (`credential`), and the connection type with its reported parameters and cancel key
//! (`conn`). Pooling policy lives in `pool`.

pub mod auth_query;
pub mod conn;
pub mod connect;
pub mod credential;
mod login;
pub mod options;
pub mod tls;

pub use conn::{BackendKey, CancelAddr, ServerConnection, ServerError, ServerInfo};
pub use connect::{connect, ServerTarget};
pub use credential::{PassThrough, ServerCredential};
pub use options::ConnectOptions;
