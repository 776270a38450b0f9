//! The word rules: neighbours of a few words anywhere in a text, comments and whitespace
//! skipped, also inside string literals (temp tables, WITH HOLD, SET ROLE, advisory locks,
//! `set_config`, pgfunnel's reserved statement names).

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::{Findings, PinReason, RESERVED_PREFIX};
use crate::client::lexer::{Kind, Tok};

pub(super) static RESERVED: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(RESERVED_PREFIX));

pub(super) fn word_text<'a>(lower: &'a [u8], t: Option<&Tok>) -> Option<&'a [u8]> {
    t.filter(|t| t.kind == Kind::Word).map(|t| t.text(lower))
}

/// The word rules: neighbours of a few words anywhere in the token list.
pub(super) fn words(lower: &[u8], toks: &[Tok], f: &mut Findings) {
    for (i, t) in toks.iter().enumerate() {
        if t.kind == Kind::Quoted && t.inner(lower).starts_with(b"pg_temp") {
            f.pg_temp = true;
        }
        if t.kind != Kind::Word {
            continue;
        }
        let w = t.text(lower);
        let prev = || word_text(lower, i.checked_sub(1).and_then(|j| toks.get(j)));
        let next = || word_text(lower, toks.get(i + 1));
        match w {
            b"temp" | b"temporary" => {
                if matches!(
                    prev(),
                    Some(b"create" | b"global" | b"local" | b"into" | b"replace")
                ) || matches!(
                    next(),
                    Some(b"table" | b"view" | b"sequence" | b"recursive")
                ) {
                    f.pin(PinReason::TempTable);
                }
            }
            b"create" | b"into" => f.create_or_into = true,
            b"hold" if prev() == Some(b"with") => f.pin(PinReason::HoldCursor),
            // `SET ROLE`, `SET SESSION ROLE`, `SET SESSION AUTHORIZATION` as statements (not
            // `UPDATE users SET role = …`).
            b"role" | b"authorization" if i >= 1 => {
                let p = toks[i - 1];
                let set_at = |j: usize| {
                    matches!(word_text(lower, toks.get(j)), Some(b"set" | b"reset"))
                        && starts_statement(lower, toks, j)
                };
                let session = p.is_word(lower, b"session") && i >= 2 && set_at(i - 2);
                let identity = if w == b"role" {
                    session || set_at(i - 1)
                } else {
                    session
                };
                if identity {
                    f.pin(PinReason::Identity);
                }
            }
            b"set_config" => {
                if let Some(reason) = set_config_pin(lower, &toks[i + 1..]) {
                    f.pin(reason);
                }
            }
            b"deallocate" | b"prepare" | b"execute" => f.statement_command = true,
            _ => {
                if w.starts_with(b"pg_advisory_lock") || w.starts_with(b"pg_try_advisory_lock") {
                    f.pin(PinReason::AdvisoryLock);
                } else if w.starts_with(b"pg_temp") {
                    f.pg_temp = true;
                }
            }
        }
    }
}

/// True when token `j` can begin a statement: first, after `;`, or after a plpgsql block
/// word.
pub(super) fn starts_statement(lower: &[u8], toks: &[Tok], j: usize) -> bool {
    let Some(before) = j.checked_sub(1).map(|k| toks[k]) else {
        return true;
    };
    before.is_punct(lower, b';')
        || matches!(
            word_text(lower, Some(&before)),
            Some(b"begin" | b"then" | b"else" | b"loop")
        )
}

/// `set_config(name, value, is_local)`: a pin unless `is_local` is literally true.
pub(super) fn set_config_pin(lower: &[u8], after: &[Tok]) -> Option<PinReason> {
    if !after.first().is_some_and(|t| t.is_punct(lower, b'(')) {
        return None;
    }
    let (mut depth, mut commas, mut third, mut third_len) = (0u32, 0u32, None, 0u32);
    let mut identity = false;
    let mut closed = false;
    for (k, t) in after.iter().enumerate() {
        if t.is_punct(lower, b'(') {
            depth += 1;
        } else if t.is_punct(lower, b')') {
            depth -= 1;
            if depth == 0 {
                closed = true;
                break;
            }
        } else if depth == 1 && t.is_punct(lower, b',') {
            commas += 1;
            continue;
        }
        if k == 1 && t.kind == Kind::Str {
            identity = matches!(t.inner(lower), b"role" | b"session_authorization");
        }
        if commas == 2 && k > 0 && depth >= 1 {
            third = Some(*t);
            third_len += 1;
        }
    }
    let local = closed
        && commas == 2
        && third_len == 1
        && third.is_some_and(|t| match t.kind {
            Kind::Word => t.text(lower) == b"true",
            Kind::Str => matches!(
                t.inner(lower),
                b"t" | b"true" | b"on" | b"y" | b"yes" | b"1"
            ),
            _ => false,
        });
    match (local, identity) {
        (true, _) => None,
        (false, true) => Some(PinReason::Identity),
        (false, false) => Some(PinReason::SessionState),
    }
}
