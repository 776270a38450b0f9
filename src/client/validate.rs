//! Checks a logged-in client's message stream against the protocol state before any of it
//! reaches a server: message types that do not exist after login, password messages,
//! COPY messages where no COPY FROM STDIN can be, and lengths Postgres itself would refuse.
//! Sans-I/O: the relay feeds it every header; it owns no buffer.
//!
//! A refused message is answered with `08P01` and a close, as PgBouncer does. Postgres
//! answers the same messages with FATAL and exits, so forwarding them would cost a pooled
//! server (and every client waiting for one); a stray CopyData/CopyDone/CopyFail is
//! ignored by Postgres without a reply, which would make pgfunnel's reply bookkeeping
//! count wrong and hand a server on while answers are still in flight.

use thiserror::Error;

use crate::protocol::FrameError;

/// Postgres's limit for messages that carry only names and counts (Describe, Close,
/// Execute, Sync, Flush, CopyDone, CopyFail, Terminate): `PQ_SMALL_MESSAGE_LIMIT`.
pub const SMALL_MESSAGE_LIMIT: u32 = 10_000;
/// Postgres's limit for messages that carry query text or data (Query, Parse, Bind,
/// FunctionCall, CopyData): `PQ_LARGE_MESSAGE_LIMIT` (MaxAllocSize - 1).
pub const LARGE_MESSAGE_LIMIT: u32 = 0x3fff_fffe;

/// Why a client's message was refused before reaching a server (all `08P01`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientViolation {
    /// The stream's framing is broken (length below 4, over max_packet_size).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// No such message type exists in the protocol after login.
    #[error("invalid frontend message type {tag}")]
    UnknownType {
        /// The type byte, as a number (never echoed raw).
        tag: u8,
    },
    /// A password, SASL or GSS response after authentication finished.
    #[error("unexpected password message after authentication")]
    PasswordAfterLogin,
    /// CopyData, CopyDone or CopyFail while the server is not receiving a COPY.
    #[error("unexpected {what} message: no COPY FROM STDIN in progress")]
    CopyOutsideCopyIn {
        /// The message's name.
        what: &'static str,
    },
    /// Another message inside COPY data the client streams before the server confirmed
    /// the COPY (Postgres refuses those during a COPY too).
    #[error("unexpected message type {tag} during COPY from stdin")]
    InsideCopy {
        /// The type byte, as a number.
        tag: u8,
    },
    /// A length Postgres refuses for this message type (it would close the connection).
    #[error("invalid message length {len} for message type {tag} (at most {max})")]
    Length {
        /// The type byte, as a number.
        tag: u8,
        /// The length field as sent.
        len: u32,
        /// Postgres's limit for this type.
        max: u32,
    },
}

/// Where the client's stream stands with respect to COPY FROM STDIN.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// No COPY: copy messages are refused.
    #[default]
    None,
    /// The client streams copy data right after a simple Query, before the server's
    /// CopyInResponse (asyncpg and pgx do). Only copy messages may follow until CopyDone/
    /// CopyFail; should the Query not start a COPY, Postgres ignores them, and no Sync can
    /// be among them to upset the count of replies.
    Speculative,
    /// The server sent CopyInResponse (or CopyBothResponse) and the client has not yet
    /// ended that copy with CopyDone or CopyFail.
    Open,
}

/// Protocol state of one client's stream, as far as validation needs it.
#[derive(Debug, Default, Clone)]
pub struct Validator {
    copy: Copy,
    /// The client's last request message was a simple Query.
    after_query: bool,
}

impl Validator {
    /// Checks the header of the client's next message (type byte and length field, which
    /// includes its own 4 bytes) and updates the state; `unanswered` tells whether some
    /// request still awaits its ReadyForQuery. Nothing of a refused message may be
    /// forwarded.
    pub fn client_message(
        &mut self,
        tag: u8,
        len: u32,
        unanswered: bool,
    ) -> Result<(), ClientViolation> {
        if self.copy == Copy::Speculative && !matches!(tag, b'd' | b'c' | b'f') {
            return Err(ClientViolation::InsideCopy { tag });
        }
        let max = match tag {
            b'Q' | b'P' | b'B' | b'F' => LARGE_MESSAGE_LIMIT,
            b'D' | b'C' | b'E' | b'S' | b'H' | b'X' => SMALL_MESSAGE_LIMIT,
            b'd' | b'c' | b'f' => {
                if self.copy == Copy::None && self.after_query && unanswered {
                    self.copy = Copy::Speculative;
                }
                if self.copy == Copy::None {
                    let what = match tag {
                        b'd' => "CopyData",
                        b'c' => "CopyDone",
                        _ => "CopyFail",
                    };
                    return Err(ClientViolation::CopyOutsideCopyIn { what });
                }
                if tag == b'd' {
                    LARGE_MESSAGE_LIMIT
                } else {
                    SMALL_MESSAGE_LIMIT
                }
            }
            b'p' => return Err(ClientViolation::PasswordAfterLogin),
            _ => return Err(ClientViolation::UnknownType { tag }),
        };
        if len > max {
            return Err(ClientViolation::Length { tag, len, max });
        }
        match tag {
            b'c' | b'f' => self.copy = Copy::None,
            b'Q' => self.after_query = true,
            b'd' => {}
            _ => self.after_query = false,
        }
        Ok(())
    }

    /// Records a server message type: CopyInResponse (`G`) and CopyBothResponse (`W`)
    /// open a copy the client may feed. A copy the server aborts (ErrorResponse) stays
    /// open until the client ends it: Postgres ignores the rest of the client's data.
    pub fn server_message(&mut self, tag: u8) {
        if matches!(tag, b'G' | b'W') {
            self.copy = Copy::Open;
        }
    }

    /// True while the client may send CopyData whatever else it sent.
    pub fn in_copy_in(&self) -> bool {
        self.copy != Copy::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_frontend_message_of_the_extended_and_simple_protocols() {
        let mut v = Validator::default();
        for tag in *b"QPBDCESHFX" {
            assert_eq!(v.client_message(tag, 4, false), Ok(()), "{}", tag as char);
        }
    }

    #[test]
    fn refuses_message_types_that_do_not_exist() {
        let mut v = Validator::default();
        for tag in [b'z', 0, b'Z', 0xff, b'G'] {
            assert_eq!(
                v.client_message(tag, 4, false),
                Err(ClientViolation::UnknownType { tag })
            );
        }
    }

    #[test]
    fn refuses_password_message_after_login() {
        let mut v = Validator::default();
        assert_eq!(
            v.client_message(b'p', 12, true),
            Err(ClientViolation::PasswordAfterLogin)
        );
    }

    #[test]
    fn copy_messages_only_between_copy_in_response_and_copy_done() {
        let mut v = Validator::default();
        for tag in *b"dcf" {
            assert!(matches!(
                v.client_message(tag, 4, false),
                Err(ClientViolation::CopyOutsideCopyIn { .. })
            ));
        }
        v.server_message(b'G');
        assert!(v.in_copy_in());
        assert_eq!(v.client_message(b'd', 1000, false), Ok(()));
        assert_eq!(
            v.client_message(b'S', 4, false),
            Ok(()),
            "ignored by Postgres"
        );
        assert_eq!(v.client_message(b'c', 4, false), Ok(()));
        assert!(!v.in_copy_in());
        assert!(v.client_message(b'd', 8, false).is_err(), "copy ended");
        v.server_message(b'G');
        assert_eq!(v.client_message(b'f', 10, false), Ok(()));
        assert!(
            v.client_message(b'c', 4, false).is_err(),
            "CopyFail ended it"
        );
    }

    #[test]
    fn copy_aborted_by_the_server_stays_open_until_the_client_ends_it() {
        let mut v = Validator::default();
        v.server_message(b'G');
        v.server_message(b'E');
        v.server_message(b'Z');
        assert_eq!(v.client_message(b'd', 100, false), Ok(()));
        assert_eq!(v.client_message(b'c', 4, false), Ok(()));
    }

    #[test]
    fn copy_data_may_follow_an_unanswered_query_before_copy_in_response() {
        let mut v = Validator::default();
        assert_eq!(v.client_message(b'Q', 30, false), Ok(()));
        assert_eq!(v.client_message(b'd', 100, true), Ok(()));
        assert_eq!(
            v.client_message(b'S', 4, true),
            Err(ClientViolation::InsideCopy { tag: b'S' }),
            "nothing but copy data until CopyDone"
        );
        v.server_message(b'G');
        assert_eq!(v.client_message(b'c', 4, true), Ok(()));
        assert_eq!(v.client_message(b'Q', 30, false), Ok(()));
        assert!(
            v.client_message(b'd', 100, false).is_err(),
            "the query was answered: no COPY can start"
        );
    }

    #[test]
    fn copy_data_after_an_extended_protocol_request_waits_for_copy_in_response() {
        let mut v = Validator::default();
        for tag in *b"BES" {
            assert_eq!(v.client_message(tag, 4, true), Ok(()));
        }
        assert!(v.client_message(b'd', 10, true).is_err());
    }

    #[test]
    fn refuses_lengths_postgres_refuses() {
        let mut v = Validator::default();
        assert_eq!(v.client_message(b'S', SMALL_MESSAGE_LIMIT, false), Ok(()));
        assert_eq!(
            v.client_message(b'S', SMALL_MESSAGE_LIMIT + 1, false),
            Err(ClientViolation::Length {
                tag: b'S',
                len: SMALL_MESSAGE_LIMIT + 1,
                max: SMALL_MESSAGE_LIMIT
            })
        );
        assert_eq!(v.client_message(b'P', LARGE_MESSAGE_LIMIT, false), Ok(()));
        assert!(
            v.client_message(b'P', 1_610_612_736, false).is_err(),
            "1.5 GB"
        );
        assert!(v.client_message(b'D', 20_000, false).is_err());
    }

    #[test]
    fn messages_name_the_type_as_a_number() {
        let e = Validator::default()
            .client_message(b'z', 4, false)
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid frontend message type 122");
    }
}
