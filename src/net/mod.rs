//! Sockets: listeners (TCP and Unix), the stream type shared by clients and servers, and
//! the TLS configs for both sides (`tls`, with the verifiers in `tls_verify` and the checks
//! for certificates webpki refuses but OpenSSL accepts in `tls_chain`).

pub mod dns;
pub mod edge_stream;
pub mod listener;
pub mod stream;
pub mod tls;
pub mod tls_chain;
pub mod tls_verify;

pub use edge_stream::EdgeStream;
pub use stream::{PollReadReady, Stream};
pub use tls::TlsConfigs;
