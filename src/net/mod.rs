//! Sockets: listeners (TCP and Unix) and the stream type shared by clients and servers.

pub mod listener;
pub mod stream;

pub use stream::Stream;
