//! Recognises the few statements pgfunnel acts on, in every statement of a (multi-statement)
//! query text, on raw bytes (UTF-8 or not): session-level SET/RESET (remembered and replayed
//! on other servers), LISTEN/UNLISTEN, and what ties a client to its server: temp tables,
//! session advisory locks, WITH HOLD cursors, SQL PREPARE, LOAD, session identity changes
//! (`SET ROLE`, `SET SESSION AUTHORIZATION`), session-level `set_config`, and statements
//! that name pgfunnel's own server-side prepared statements. No general SQL parsing: the
//! text is lexed once ([`super::lexer`]) and a few words are looked at.
//!
//! Two kinds of rules:
//! - statement rules look at the first words of each `;`-separated statement (SET, RESET,
//!   DISCARD, LISTEN, UNLISTEN, PREPARE, LOAD);
//! - word rules look at word neighbours anywhere, comments and whitespace of any kind
//!   skipped (`CREATE TEMP`, `INTO TEMP`, `WITH HOLD`, `SET ROLE`, `pg_advisory_lock`,
//!   `set_config(…)`), also inside string literals (DO blocks, dynamic SQL): a false positive
//!   costs pooling efficiency, never isolation.
//!
//! The statement rules live in `rules`, the word rules in `words`.
//!
//! When a plain string holds a backslash, where it ends depends on
//! `standard_conforming_strings`: the text is read both ways and the pins of both count.

use std::cell::RefCell;

use super::lexer::{self, Kind, Tok};

/// What a query text means to the pooler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognised {
    /// `SET [SESSION] name ...`: replay `sql` on other servers.
    Set {
        /// Lowercase parameter name.
        name: String,
        /// The statement text to replay.
        sql: String,
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` (or `DISCARD ALL`, which also resets parameters).
    ResetAll,
    /// `LISTEN channel` as a single statement (served by the pool's shared listener).
    Listen(String),
    /// `UNLISTEN channel` (`None`: `UNLISTEN *`).
    Unlisten(Option<String>),
    /// Creates state that lives on this server connection only.
    Pins(PinReason),
    /// Several statements with session-level SET/RESET among them: the `Set`, `Reset` and
    /// `ResetAll` of each, in order (a failed multi-statement query applies none of them).
    Several(Vec<Recognised>),
}

/// Why a client must keep its server until it disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// CREATE TEMP/TEMPORARY TABLE, SELECT … INTO TEMP, objects in pg_temp.
    TempTable,
    /// pg_advisory_lock and friends at session level.
    AdvisoryLock,
    /// DECLARE ... WITH HOLD.
    HoldCursor,
    /// LISTEN.
    Listen,
    /// SQL-level PREPARE.
    Prepare,
    /// LOAD of a library.
    Load,
    /// SET ROLE / SET SESSION AUTHORIZATION (or their RESET), or the server reported a
    /// changed `session_authorization` / `is_superuser`.
    Identity,
    /// Session state pgfunnel cannot replay: `set_config(…, false)`, SET SESSION
    /// CHARACTERISTICS, a SET whose text is not UTF-8, SET in a multi-statement query with
    /// its own transaction control.
    SessionState,
    /// A statement naming pgfunnel's server-side prepared statements (`PGFUNNEL_…`).
    ReservedName,
    /// A query text too large to inspect.
    Uninspected,
}

impl PinReason {
    /// Short label for logs and stats.
    pub fn label(self) -> &'static str {
        match self {
            PinReason::TempTable => "temp_table",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::HoldCursor => "with_hold_cursor",
            PinReason::Listen => "listen",
            PinReason::Prepare => "prepare",
            PinReason::Load => "load",
            PinReason::Identity => "session_identity",
            PinReason::SessionState => "session_state",
            PinReason::ReservedName => "reserved_statement_name",
            PinReason::Uninspected => "uninspected_query",
        }
    }
}

/// Prefix of pgfunnel's server-side statement names, lowercase (see `prepared`).
pub const RESERVED_PREFIX: &[u8] = b"pgfunnel_";

/// Recognises `sql` (a Query or Parse text). Returns `None` for everything else.
pub fn recognise(sql: &[u8]) -> Option<Recognised> {
    let end = sql.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let raw = &sql[..end];
    if !may_matter(raw) {
        return None;
    }
    with_lowercase(raw, |lower| {
        with_tokens(|toks| recognise_lowered(raw, lower, toks))
    })
}

fn recognise_lowered(raw: &[u8], lower: &[u8], toks: &mut Vec<Tok>) -> Option<Recognised> {
    let ambiguous = lexer::lex(lower, false, toks);
    let first = analyse(raw, lower, toks);
    if !ambiguous {
        return first;
    }
    toks.clear();
    lexer::lex(lower, true, toks);
    let second = analyse(raw, lower, toks);
    if first == second {
        return first;
    }
    match (first, second) {
        (Some(Recognised::Pins(r)), _) | (_, Some(Recognised::Pins(r))) => {
            Some(Recognised::Pins(r))
        }
        // The two readings disagree on what the text sets: keep the server.
        _ => Some(Recognised::Pins(PinReason::SessionState)),
    }
}

/// What the word rules found.
#[derive(Debug, Default)]
struct Findings {
    pin: Option<PinReason>,
    create_or_into: bool,
    pg_temp: bool,
    statement_command: bool,
}

impl Findings {
    fn pin(&mut self, reason: PinReason) {
        self.pin.get_or_insert(reason);
    }
}

/// Nested string literals are read as SQL this deep (DO bodies, EXECUTE '…' inside them).
const MAX_NESTING: u32 = 2;
/// Shorter literals cannot hold anything a rule looks for.
const MIN_NESTED: u32 = 8;

fn analyse(raw: &[u8], lower: &[u8], toks: &mut Vec<Tok>) -> Option<Recognised> {
    let mut f = Findings::default();
    let top = toks.len();
    let mut count = 0;
    let mut actions = Vec::new();
    let mut is_do = false;
    let mut txn_control = false;
    for range in lexer::statements(lower, &toks[..top]) {
        count += 1;
        let st = &toks[range];
        match st[0].text(lower) {
            b"do" => is_do = true,
            b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
            | b"release" => txn_control = true,
            _ => {}
        }
        if let Some(a) = statement(Some(raw), lower, st, &mut f) {
            actions.push(a);
        }
    }
    words(lower, &toks[..top], &mut f);
    for i in 0..top {
        let t = toks[i];
        if t.kind == Kind::Str && t.inner_end - t.inner_start >= MIN_NESTED {
            nested(t.inner(lower), 1, is_do, toks, &mut f);
        }
    }
    toks.truncate(top);
    let escaped_names = memchr::memmem::find(lower, b"u&\"").is_some();
    if f.statement_command && (RESERVED.find(lower).is_some() || escaped_names) {
        // The more telling reason wins over PREPARE's.
        f.pin = Some(PinReason::ReservedName);
    }
    if f.pg_temp && f.create_or_into {
        f.pin(PinReason::TempTable);
    }
    if count == 1 {
        return match f.pin {
            Some(r) => Some(Recognised::Pins(r)),
            None => actions.pop(),
        };
    }
    for a in &actions {
        match a {
            Recognised::Listen(_) => f.pin(PinReason::Listen),
            Recognised::Set { .. } | Recognised::Reset(_) | Recognised::ResetAll if txn_control => {
                f.pin(PinReason::SessionState)
            }
            _ => {}
        }
    }
    if let Some(r) = f.pin {
        return Some(Recognised::Pins(r));
    }
    actions.retain(|a| !matches!(a, Recognised::Unlisten(_)));
    (!actions.is_empty()).then_some(Recognised::Several(actions))
}

/// Reads a string literal's content as SQL for the word rules (and, inside a DO block, the
/// statement rules), appending its tokens after the caller's and removing them again.
fn nested(text: &[u8], depth: u32, is_do: bool, toks: &mut Vec<Tok>, f: &mut Findings) {
    let base = toks.len();
    lexer::lex(text, false, toks);
    let end = toks.len();
    words(text, &toks[base..end], f);
    if is_do {
        for range in lexer::statements(text, &toks[base..end]) {
            let mut st = &toks[base..end][range];
            // plpgsql: the first statement of a block follows BEGIN, others THEN/ELSE/LOOP.
            while st.len() > 1 && matches!(st[0].text(text), b"begin" | b"then" | b"else" | b"loop")
            {
                st = &st[1..];
            }
            statement(None, text, st, f);
        }
    }
    if depth < MAX_NESTING {
        for i in base..end {
            let t = toks[i];
            if t.kind == Kind::Str && t.inner_end - t.inner_start >= MIN_NESTED {
                nested(t.inner(text), depth + 1, is_do, toks, f);
            }
        }
    }
    toks.truncate(base);
}

/// Texts up to this size are lowercased into a per-thread buffer that is kept; longer
/// ones get a buffer of their own, so one huge query does not pin memory.
const KEPT_LOWERCASE: usize = 16 * 1024;

/// Calls `f` with an ASCII-lowercased copy of `text`.
fn with_lowercase<R>(text: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static LOWER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    if text.len() > KEPT_LOWERCASE {
        return f(&text.to_ascii_lowercase());
    }
    LOWER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.extend(text.iter().map(u8::to_ascii_lowercase));
            f(&buf)
        }
        Err(_) => f(&text.to_ascii_lowercase()),
    })
}

/// Token lists up to this many entries keep their per-thread buffer.
const KEPT_TOKENS: usize = 4096;

/// Calls `f` with an empty token buffer (per thread, reused).
fn with_tokens<R>(f: impl FnOnce(&mut Vec<Tok>) -> R) -> R {
    thread_local! {
        static TOKENS: RefCell<Vec<Tok>> = const { RefCell::new(Vec::new()) };
    }
    TOKENS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut toks) => {
            toks.clear();
            let r = f(&mut toks);
            if toks.capacity() > KEPT_TOKENS {
                *toks = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// `LISTEN`/`UNLISTEN` as a single statement (what the shared listener serves); cheap
/// for everything else, which is rejected on its first word.
pub fn recognise_listen(sql: &[u8]) -> Option<Recognised> {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let head = &sql[start..];
    let word = |w: &[u8]| head.len() >= w.len() && head[..w.len()].eq_ignore_ascii_case(w);
    // A leading comment: let the full recogniser decide.
    if !(word(b"listen") || word(b"unlisten") || word(b"--") || word(b"/*")) {
        return None;
    }
    recognise(sql).filter(|r| matches!(r, Recognised::Listen(_) | Recognised::Unlisten(_)))
}

mod fast_path;
mod rules;
mod words;

use fast_path::may_matter;
#[cfg(test)]
use fast_path::{set_may_start_statement, Match, TRIGGERS, WORD};
use rules::statement;
use words::{words, RESERVED};

#[cfg(test)]
mod tests;
