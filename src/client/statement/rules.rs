//! The statement rules: the first words of one `;`-separated statement (SET, RESET,
//! DISCARD, LISTEN, UNLISTEN, PREPARE, LOAD) and the names they carry.

use super::words::word_text;
use super::{Findings, PinReason, Recognised};
use crate::client::lexer::{Kind, Tok};

/// The statement rules for one statement (`st` non-empty). `raw` is the original text (the
/// tokens' offsets index both); `None` inside a string literal, where only pins count.
pub(super) fn statement(
    raw: Option<&[u8]>,
    lower: &[u8],
    st: &[Tok],
    f: &mut Findings,
) -> Option<Recognised> {
    let rest = &st[1..];
    match word_text(lower, st.first())? {
        b"set" => set_statement(raw, lower, st, f),
        b"reset" => reset_statement(raw, lower, rest, f),
        b"discard" => {
            (rest.len() == 1 && rest[0].is_word(lower, b"all")).then_some(Recognised::ResetAll)
        }
        b"listen" => {
            let ch = match (raw, rest) {
                (Some(raw), [one]) => channel_name(raw, lower, one),
                _ => None,
            };
            if ch.is_none() {
                f.pin(PinReason::Listen);
            }
            ch.map(Recognised::Listen)
        }
        b"unlisten" => match (raw, rest) {
            (Some(_), [one]) if one.is_punct(lower, b'*') => Some(Recognised::Unlisten(None)),
            (Some(raw), [one]) => {
                channel_name(raw, lower, one).map(|c| Recognised::Unlisten(Some(c)))
            }
            _ => None,
        },
        b"prepare" => {
            f.pin(PinReason::Prepare);
            None
        }
        b"load" => {
            f.pin(PinReason::Load);
            None
        }
        _ => None,
    }
}

pub(super) fn set_statement(
    raw: Option<&[u8]>,
    lower: &[u8],
    st: &[Tok],
    f: &mut Findings,
) -> Option<Recognised> {
    let at = |i: usize| word_text(lower, st.get(i));
    let mut i = 1;
    match at(i) {
        Some(b"local" | b"transaction" | b"constraints") => return None,
        Some(b"session") => {
            i += 1;
            match at(i) {
                Some(b"characteristics") => {
                    f.pin(PinReason::SessionState);
                    return None;
                }
                Some(b"authorization") => {
                    f.pin(PinReason::Identity);
                    return None;
                }
                _ => {}
            }
        }
        _ => {}
    }
    let name = match (at(i), at(i + 1)) {
        (Some(b"role" | b"authorization"), _) => None,
        (Some(b"time"), Some(b"zone")) => Some("timezone".to_owned()),
        (Some(b"names"), _) => Some("client_encoding".to_owned()),
        (Some(b"schema"), _) => Some("search_path".to_owned()),
        (Some(b"xml"), Some(b"option")) => Some("xmloption".to_owned()),
        _ => match qualified_name(raw.unwrap_or(lower), lower, &st[i.min(st.len())..]) {
            Some(n) => Some(n),
            None => {
                // Not a form we know: whatever it sets cannot be replayed.
                f.pin(PinReason::SessionState);
                return None;
            }
        },
    };
    let Some(name) = name.filter(|n| n != "role" && n != "session_authorization") else {
        f.pin(PinReason::Identity);
        return None;
    };
    let sql = raw.and_then(|raw| {
        let text = &raw[st[0].start as usize..st[st.len() - 1].end as usize];
        std::str::from_utf8(text).ok().map(|t| format!("{t};"))
    });
    match sql {
        Some(sql) => Some(Recognised::Set { name, sql }),
        None => {
            // Not UTF-8, or a session SET inside a DO block: nothing to replay.
            f.pin(PinReason::SessionState);
            None
        }
    }
}

pub(super) fn reset_statement(
    raw: Option<&[u8]>,
    lower: &[u8],
    rest: &[Tok],
    f: &mut Findings,
) -> Option<Recognised> {
    let at = |i: usize| word_text(lower, rest.get(i));
    let name = match (at(0), at(1)) {
        (Some(b"all"), None) if rest.len() == 1 => return Some(Recognised::ResetAll),
        (Some(b"role" | b"session" | b"authorization"), _) => None,
        (Some(b"time"), Some(b"zone")) => Some("timezone".to_owned()),
        _ => Some(qualified_name(raw.unwrap_or(lower), lower, rest)?),
    };
    match name.filter(|n| n != "role" && n != "session_authorization") {
        Some(n) => Some(Recognised::Reset(n)),
        None => {
            f.pin(PinReason::Identity);
            None
        }
    }
}

/// `name` or `a.b` (words fold to lower case, quoted parts keep theirs) at the start of
/// `toks`; `None` when it is not a name or not UTF-8.
pub(super) fn qualified_name(raw: &[u8], lower: &[u8], toks: &[Tok]) -> Option<String> {
    let mut name = String::new();
    let mut i = 0;
    loop {
        let part = match toks.get(i)? {
            t if t.kind == Kind::Word => std::str::from_utf8(t.text(lower)).ok()?.to_owned(),
            t if t.kind == Kind::Quoted => unquote(raw, t)?,
            _ => return None,
        };
        name.push_str(&part);
        if !toks.get(i + 1).is_some_and(|t| t.is_punct(lower, b'.')) {
            return Some(name);
        }
        name.push('.');
        i += 2;
    }
}

/// A quoted identifier's name (`""` is a quote), when closed, non-empty and UTF-8.
pub(super) fn unquote(raw: &[u8], t: &Tok) -> Option<String> {
    let closed = t.end > t.inner_end && raw.get(t.inner_end as usize) == Some(&b'"');
    let inner = std::str::from_utf8(t.inner(raw)).ok()?;
    (closed && !inner.is_empty()).then(|| inner.replace("\"\"", "\""))
}

/// A channel identifier as Postgres stores it: unquoted names fold to lower case,
/// `"Quoted"` ones keep their case. Anything else is not recognised.
pub(super) fn channel_name(raw: &[u8], lower: &[u8], t: &Tok) -> Option<String> {
    match t.kind {
        Kind::Word => String::from_utf8(t.text(lower).to_vec()).ok(),
        Kind::Quoted => unquote(raw, t),
        _ => None,
    }
}
