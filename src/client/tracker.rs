//! Sans-I/O bookkeeping of what a client has asked and the server has answered, which
//! decides when a server may go back to the pool.

/// Tracks outstanding requests on one linked (client, server) pair.
///
/// Rule (DESIGN §1): the server is released only when ReadyForQuery says `I` and no
/// request the client already sent still awaits its answer. Every Query, Sync and
/// FunctionCall is answered by exactly one ReadyForQuery; Parse/Bind/Describe/Close/
/// Execute/Flush without a following Sync leave the exchange open.
#[derive(Debug, Clone)]
pub struct Tracker {
    awaiting_ready: u32,
    unsynced: bool,
    status: u8,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            awaiting_ready: 0,
            unsynced: false,
            status: b'I',
        }
    }
}

impl Tracker {
    /// Records a message the client sent (by type byte).
    pub fn client_message(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.awaiting_ready += 1,
            b'S' => {
                self.awaiting_ready += 1;
                self.unsynced = false;
            }
            b'P' | b'B' | b'D' | b'C' | b'E' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// Records a ReadyForQuery from the server with its status byte.
    pub fn ready_for_query(&mut self, status: u8) {
        self.awaiting_ready = self.awaiting_ready.saturating_sub(1);
        self.status = status;
    }

    /// The transaction status from the last ReadyForQuery (`I`, `T` or `E`).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// True when the server is idle and owes the client nothing.
    pub fn is_idle(&self) -> bool {
        self.awaiting_ready == 0 && !self.unsynced && self.status == b'I'
    }

    /// True when the last ReadyForQuery said idle and every request is answered,
    /// but ignoring transaction status (used to tell an idle-in-transaction server).
    pub fn nothing_outstanding(&self) -> bool {
        self.awaiting_ready == 0 && !self.unsynced
    }

    /// Forgets everything (a fresh link).
    pub fn reset(&mut self) {
        *self = Tracker::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_query_releases_on_idle_ready() {
        let mut t = Tracker::default();
        t.client_message(b'Q');
        assert!(!t.is_idle());
        t.ready_for_query(b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn open_transaction_keeps_server() {
        let mut t = Tracker::default();
        t.client_message(b'Q');
        t.ready_for_query(b'T');
        assert!(!t.is_idle());
        assert!(t.nothing_outstanding());
        t.client_message(b'Q');
        t.ready_for_query(b'E');
        assert!(!t.is_idle());
        t.client_message(b'Q');
        t.ready_for_query(b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn pipeline_waits_for_every_sync() {
        let mut t = Tracker::default();
        for tag in [b'P', b'B', b'E', b'S', b'P', b'B', b'E', b'S'] {
            t.client_message(tag);
        }
        t.ready_for_query(b'I');
        assert!(!t.is_idle(), "second Sync still unanswered");
        t.ready_for_query(b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn flush_without_sync_keeps_server() {
        let mut t = Tracker::default();
        t.client_message(b'Q');
        t.client_message(b'P');
        t.client_message(b'H');
        t.ready_for_query(b'I');
        assert!(!t.is_idle(), "Parse+Flush after the query still open");
        t.client_message(b'S');
        t.ready_for_query(b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn function_call_counts_as_a_request() {
        let mut t = Tracker::default();
        t.client_message(b'F');
        assert!(!t.is_idle());
        t.ready_for_query(b'I');
        assert!(t.is_idle());
    }
}
