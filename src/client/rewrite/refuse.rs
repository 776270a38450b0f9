//! Client messages pgfunnel refuses itself (a Parse of a name the client already has, a
//! Bind or Describe of a name it never prepared, a message over
//! `max_prepared_message_size`), answered as Postgres answers the same mistake: the
//! ErrorResponse in its place, every message up to the next Sync skipped, then one
//! ReadyForQuery with the transaction status Postgres would report.
//!
//! Nothing reaches the server for them whenever that gives Postgres's outcome: the client's
//! transaction state is known (every earlier Sync and Query answered) and not inside a
//! transaction block (`I`, or `E` where the block is failed already), and no Execute of the
//! same batch went to the server (its work would have to be rolled back). Then the refused
//! message and what follows it up to Sync are dropped, the error is made up in order, and
//! the Sync goes to the server, whose ReadyForQuery carries the real status: Postgres's log
//! shows nothing. Otherwise (a transaction block, or earlier work of the batch to undo) the
//! server itself must fail the batch so the block is aborted as Postgres would abort it:
//! it gets a Describe of a statement name pgfunnel never creates, and its error is
//! replaced by pgfunnel's. That case leaves one `prepared statement "pgfunnel: statement
//! refused" does not exist` line in the Postgres log; no SQL is ever made up.

use bytes::{Buf, BufMut, BytesMut};

use super::framing::Sent;
use super::{Expect, Kind, Rewriter};
use crate::error::{ClientError, ErrorKind};
use crate::protocol::messages::{put_cstr, put_message};

impl Rewriter {
    /// Refuses the client message being handled with an ERROR of `kind` and `text`.
    pub(super) fn refuse(&mut self, out: &mut BytesMut, kind: ErrorKind, text: String) {
        let err = ClientError::error(kind, text).to_message().freeze();
        if self.refusable_without_server() {
            self.expect.push_back(Expect::Fake(err));
            self.refused = true;
            return;
        }
        put_message(out, b'D', |b| {
            b.put_u8(b'S');
            put_cstr(b, "pgfunnel: statement refused");
        });
        self.expect.push_back(Expect::Replace(err));
    }

    /// Whether skipping to Sync without the server gives Postgres's outcome (see above).
    fn refusable_without_server(&self) -> bool {
        !self.batch_executed && matches!(self.known_status(), Some(b'I' | b'E'))
    }

    /// The client's transaction status at this point of its stream, when known: every
    /// earlier Sync and Query was answered (rare callers only: it scans the queue).
    pub(super) fn known_status(&self) -> Option<u8> {
        let pending = self.expect.iter().any(|e| {
            matches!(
                e,
                Expect::Forward {
                    kind: Kind::Sync | Kind::Query,
                    ..
                }
            )
        });
        (!pending).then_some(self.last_ready)
    }

    /// A client message too large to handle whole (its header starts `input`): counted
    /// when it is a Query or FunctionCall (those always stream, so only here); true when
    /// it is dropped, being after a refusal and before its Sync.
    pub(super) fn large_skipped(&mut self, tag: u8, len: usize, input: &mut BytesMut) -> bool {
        if matches!(tag, b'Q' | b'F') {
            self.requests_seen += 1;
        }
        if !self.refused {
            return false;
        }
        self.client_discarding = true;
        input.advance(5);
        self.client_streaming = len - 4;
        true
    }

    /// A client message after a refusal: dropped, up to the Sync, which goes to the server
    /// (its ReadyForQuery follows the made-up error).
    pub(super) fn skip_refused(&mut self, msg: &[u8]) -> Sent {
        if msg[0] != b'S' {
            return Sent::Handled;
        }
        self.refused = false;
        self.refused_requests.push(self.requests_seen);
        self.note_plain(b'S');
        Sent::Unchanged
    }
}
