//! Sans-I/O pieces of the Postgres wire protocol: the streaming frame scanner used by the
//! relay, first-packet decoding, and builders/parsers for the messages pgfunnel itself
//! writes or reads, and the quoting of the SQL it writes. No sockets live here (except `read_startup`, which only reads).

pub mod frame;
pub mod messages;
pub mod sql;
pub mod startup;

pub use frame::{Capture, FrameError, ScanEvent, Scanner};
