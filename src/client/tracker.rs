//! Sans-I/O bookkeeping of what a client has asked and the server has answered: decides
//! when a server may go back to the pool, which session-level SET/RESET statements took
//! effect, and whether the client created state that pins it to its server.

use std::collections::{HashMap, VecDeque};

use super::statement::{recognise, PinReason, Recognised};
use crate::protocol::messages::take_cstr;

/// Largest Query/Parse text inspected for SET and pins; a longer Query pins its client
/// ([`PinReason::Uninspected`]).
pub const MAX_INSPECTED: u32 = 1024 * 1024;

/// Largest Bind/Execute body captured (only their names are read).
const MAX_NAMES_BODY: u32 = 64 * 1024;

/// A change to the client's session settings that the server confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingChange {
    /// `SET name ...` succeeded outside a transaction (or in one that committed).
    Set {
        /// Lowercase name.
        name: String,
        /// Statement to replay.
        sql: String,
    },
    /// `RESET name` succeeded.
    Reset(String),
    /// `RESET ALL` / `DISCARD ALL` succeeded.
    ResetAll,
}

/// Follows COPY FROM STDIN in a client's own message stream. In copy-in mode the server
/// ignores Sync and Flush ([protocol docs, "COPY Operations"][copy]), yet tokio-postgres
/// sends Bind, Execute, Sync, waits for CopyInResponse, then CopyData, CopyDone, Sync: one
/// ReadyForQuery for two Syncs. Copy-in is recognised when the client sends CopyData,
/// CopyDone or CopyFail: the Syncs it sent since its last Execute reached a server that was
/// already copying. (A client that sent a Sync after the Execute and then streamed data
/// without waiting for CopyInResponse, for a COPY that failed at once, would be miscounted;
/// no driver we know of does that.)
///
/// [copy]: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-COPY
#[derive(Debug, Default)]
pub struct CopyInWatch {
    /// Syncs since the last Execute/Query; None once a copy ended (no COPY pending).
    syncs_since_execute: Option<usize>,
    copying: bool,
}

/// What a client message means for reply bookkeeping, given COPY FROM STDIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStep {
    /// Counted as usual.
    Normal,
    /// A Sync the server ignores (sent in copy-in mode): it gets no ReadyForQuery.
    IgnoredSync,
    /// Copy-in began: the last `ignored_syncs` Syncs get no ReadyForQuery.
    Began {
        /// Syncs sent after the COPY's Execute, before this message.
        ignored_syncs: usize,
    },
}

impl CopyInWatch {
    /// Feeds the type of every client message, in order.
    pub fn client_message(&mut self, tag: u8) -> CopyStep {
        match tag {
            b'E' | b'Q' => {
                self.syncs_since_execute = Some(0);
                CopyStep::Normal
            }
            b'S' if self.copying => CopyStep::IgnoredSync,
            b'S' => {
                if let Some(n) = self.syncs_since_execute.as_mut() {
                    *n += 1;
                }
                CopyStep::Normal
            }
            b'd' | b'c' | b'f' => {
                let step = if self.copying {
                    CopyStep::Normal
                } else {
                    self.copying = true;
                    CopyStep::Began {
                        ignored_syncs: self.syncs_since_execute.take().unwrap_or(0),
                    }
                };
                if tag != b'd' {
                    self.copying = false;
                }
                step
            }
            _ => CopyStep::Normal,
        }
    }
}

#[derive(Debug, Default)]
struct Request {
    action: Option<Recognised>,
    failed: bool,
}

/// Tracks outstanding requests on one linked (client, server) pair.
///
/// Release rule: the server goes back only when ReadyForQuery says `I` and no
/// request the client already sent still awaits its answer. Every Query, Sync and
/// FunctionCall is answered by exactly one ReadyForQuery; Parse/Bind/Describe/Close/
/// Execute/Flush without a following Sync leave the exchange open.
#[derive(Debug)]
pub struct Tracker {
    requests: VecDeque<Request>,
    unsynced: bool,
    status: u8,
    batch_action: Option<Recognised>,
    batch_executes: u32,
    statements: HashMap<Vec<u8>, Recognised>,
    portals: HashMap<Vec<u8>, Recognised>,
    in_transaction: Vec<SettingChange>,
    last_tag_commit: Option<bool>,
    copy: CopyInWatch,
    /// Confirmed setting changes, drained by the session.
    pub changes: Vec<SettingChange>,
    /// Set when the client created server-bound state.
    pub pin: Option<PinReason>,
    /// A Parse too large to inspect was seen this link: its statement may have changed the
    /// session unseen, so the server is closed instead of reused (see `client_length`).
    pub uninspected_parse: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            requests: VecDeque::new(),
            unsynced: false,
            status: b'I',
            batch_action: None,
            batch_executes: 0,
            statements: HashMap::new(),
            portals: HashMap::new(),
            in_transaction: Vec::new(),
            last_tag_commit: None,
            copy: CopyInWatch::default(),
            changes: Vec::new(),
            pin: None,
            uninspected_parse: false,
        }
    }
}

impl Tracker {
    /// Whether the body of a client message with this type and length must be captured.
    pub fn wants_client_body(tag: u8, len: u32) -> bool {
        match tag {
            b'Q' | b'P' => len <= MAX_INSPECTED,
            b'B' | b'E' => len <= MAX_NAMES_BODY,
            _ => false,
        }
    }

    /// Records a client message's length: a Query too large to inspect pins. A Parse that
    /// large is not inspected either; pinning it would change how the rewriter streams or
    /// refuses it, so instead the server it reaches is closed when the link ends.
    pub fn client_length(&mut self, tag: u8, len: u32) {
        if len > MAX_INSPECTED {
            match tag {
                b'Q' => {
                    self.pin.get_or_insert(PinReason::Uninspected);
                }
                b'P' => self.uninspected_parse = true,
                _ => {}
            }
        }
    }

    /// Records a ParameterStatus: a changed `session_authorization` or `is_superuser`
    /// (however the client changed its identity) pins the client to its server.
    pub fn parameter_status(&mut self, name: &str, old: Option<&String>, new: &str) {
        let identity = matches!(name, "session_authorization" | "is_superuser");
        if identity && old.is_some_and(|o| o != new) {
            self.pin.get_or_insert(PinReason::Identity);
        }
    }

    /// Records a client message header (every message, captured or not).
    pub fn client_message(&mut self, tag: u8) {
        match self.copy.client_message(tag) {
            CopyStep::Normal => {}
            CopyStep::IgnoredSync => return,
            CopyStep::Began { ignored_syncs } => {
                // Their entries are the newest: nothing after the COPY's Execute was answered.
                let keep = self.requests.len().saturating_sub(ignored_syncs);
                self.requests.truncate(keep);
                if ignored_syncs > 0 {
                    // The exchange stays open until a Sync after CopyDone/CopyFail.
                    self.unsynced = true;
                }
            }
        }
        match tag {
            b'Q' | b'F' => self.requests.push_back(Request::default()),
            b'S' => {
                let action = if self.batch_executes == 1 {
                    self.batch_action.take()
                } else {
                    None
                };
                self.batch_action = None;
                self.batch_executes = 0;
                self.requests.push_back(Request {
                    action,
                    failed: false,
                });
                self.unsynced = false;
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            b'E' => {
                self.unsynced = true;
                self.batch_executes += 1;
            }
            _ => {}
        }
    }

    /// Inspects a captured client message body (Query, Parse, Bind, Execute).
    pub fn client_body(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Q' => {
                let action = recognise(body);
                self.note_pin(&action);
                if let Some(last) = self.requests.back_mut() {
                    last.action = action;
                }
            }
            b'P' => {
                let mut rest = body;
                let (Some(name), Some(query)) = (take_cstr(&mut rest), take_cstr(&mut rest)) else {
                    return;
                };
                let action = recognise(query);
                self.note_pin(&action);
                match action {
                    Some(a) => _ = self.statements.insert(name.to_vec(), a),
                    None => forget(&mut self.statements, name),
                }
            }
            b'B' => {
                let mut rest = body;
                let (Some(portal), Some(stmt)) = (take_cstr(&mut rest), take_cstr(&mut rest))
                else {
                    return;
                };
                match look_up(&self.statements, stmt) {
                    Some(a) => _ = self.portals.insert(portal.to_vec(), a),
                    None => forget(&mut self.portals, portal),
                }
            }
            b'E' => {
                let mut rest = body;
                if let Some(portal) = take_cstr(&mut rest) {
                    self.batch_action = look_up(&self.portals, portal);
                }
            }
            _ => {}
        }
    }

    fn note_pin(&mut self, action: &Option<Recognised>) {
        match action {
            Some(Recognised::Pins(reason)) => {
                self.pin.get_or_insert(*reason);
            }
            // LISTEN that reaches a server (inside a transaction, extended protocol) lives
            // on that server: keep the client there.
            Some(Recognised::Listen(_)) => {
                self.pin.get_or_insert(PinReason::Listen);
            }
            _ => {}
        }
    }

    /// Marks the request `back` places before the newest (0 = newest) as failed: pgfunnel
    /// refused its batch without the server failing it (see `client::rewrite`).
    pub fn refused(&mut self, back: usize) {
        let at = self.requests.len().checked_sub(back + 1);
        if let Some(request) = at.and_then(|i| self.requests.get_mut(i)) {
            request.failed = true;
        }
    }

    /// Forgets the most recent request (a statement pgfunnel answered itself).
    pub fn forget_last_request(&mut self) {
        self.requests.pop_back();
    }

    /// Whether the body of a server message must be captured.
    pub fn wants_server_body(tag: u8) -> bool {
        matches!(tag, b'Z' | b'S' | b'E' | b'C')
    }

    /// Records an ErrorResponse from the server.
    pub fn server_error(&mut self) {
        if let Some(head) = self.requests.front_mut() {
            head.failed = true;
        }
    }

    /// Records a CommandComplete tag (to tell COMMIT from ROLLBACK).
    pub fn command_complete(&mut self, tag: &[u8]) {
        let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
        if tag == b"COMMIT" {
            self.last_tag_commit = Some(true);
        } else if tag == b"ROLLBACK" {
            self.last_tag_commit = Some(false);
        }
    }

    /// Records a ReadyForQuery from the server with its status byte.
    pub fn ready_for_query(&mut self, status: u8) {
        let request = self.requests.pop_front().unwrap_or_default();
        let action = if request.failed { None } else { request.action };
        let target = match status {
            b'I' => {
                if self.status != b'I' && self.last_tag_commit == Some(true) {
                    self.changes.append(&mut self.in_transaction);
                }
                self.in_transaction.clear();
                &mut self.changes
            }
            _ => &mut self.in_transaction,
        };
        if let Some(action) = action {
            push_changes(action, target);
        }
        self.last_tag_commit = None;
        self.status = status;
    }

    /// The transaction status from the last ReadyForQuery (`I`, `T` or `E`).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// True when the server is idle and owes the client nothing.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty() && !self.unsynced && self.status == b'I'
    }

    /// Requests (Query, Sync, FunctionCall) that still await their ReadyForQuery.
    pub fn outstanding(&self) -> usize {
        self.requests.len()
    }

    /// True when every request is answered (whatever the transaction status).
    pub fn nothing_outstanding(&self) -> bool {
        self.requests.is_empty() && !self.unsynced
    }
}

/// The setting changes a successful request made.
fn push_changes(action: Recognised, out: &mut Vec<SettingChange>) {
    match action {
        Recognised::Set { name, sql } => out.push(SettingChange::Set { name, sql }),
        Recognised::Reset(n) => out.push(SettingChange::Reset(n)),
        Recognised::ResetAll => out.push(SettingChange::ResetAll),
        Recognised::Several(all) => {
            for a in all {
                push_changes(a, out);
            }
        }
        _ => {}
    }
}

/// The action noted for a statement or portal name. An empty map (the usual case: only
/// statements the recogniser acts on are noted) answers without hashing the name.
fn look_up(map: &HashMap<Vec<u8>, Recognised>, name: &[u8]) -> Option<Recognised> {
    if map.is_empty() {
        return None;
    }
    map.get(name).cloned()
}

/// Forgets what was noted for `name`; nothing to hash when nothing is noted.
fn forget(map: &mut HashMap<Vec<u8>, Recognised>, name: &[u8]) {
    if !map.is_empty() {
        map.remove(name);
    }
}

#[cfg(test)]
mod tests;
