//! The per-query fast path of [`super::recognise`]: one pass over the raw text's words
//! that rules out, without lexing, a text none of the rules could act on.

use super::super::lexer;
use super::RESERVED_PREFIX;

/// How a word found in a text matches one of [`TRIGGERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// The whole word, any case.
    Word,
    /// The word starts with it, any case.
    Prefix,
    /// The whole word, where a statement may start (`SET`, not `UPDATE t SET`).
    StatementStart,
    /// `U&"…"`: an identifier that can spell any name with escapes.
    UnicodeEscape,
}

/// The words some rule needs (statement and word rules alike). A text holding none of them
/// (and no `--` comment, which could hide a statement start) is skipped without lexing.
pub(super) const TRIGGERS: &[(&[u8], Match)] = &[
    (b"set", Match::StatementStart),
    (b"set_config", Match::Word),
    (b"reset", Match::Word),
    (b"load", Match::Word),
    (b"listen", Match::Word),
    (b"unlisten", Match::Word),
    (b"u", Match::UnicodeEscape),
    (b"discard", Match::Word),
    (b"hold", Match::Word),
    (b"temp", Match::Word),
    (b"temporary", Match::Word),
    (b"prepare", Match::Word),
    (b"pg_temp", Match::Prefix),
    (b"pg_advisory_lock", Match::Prefix),
    (b"pg_try_advisory_lock", Match::Prefix),
    (RESERVED_PREFIX, Match::Prefix),
];

/// Bytes of a word for the fast path: the lexer's identifier bytes but `$` (`$q$SET` holds
/// the word SET after a dollar quote's tag).
pub(super) static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
        b += 1;
    }
    t
};

/// For each byte, the [`TRIGGERS`] (bit `i` for `TRIGGERS[i]`) a word starting with it may
/// be, either case: most words stop at this lookup.
static CANDIDATES: [u32; 256] = {
    assert!(TRIGGERS.len() <= 32);
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < TRIGGERS.len() {
        let c = TRIGGERS[i].0[0];
        t[c.to_ascii_lowercase() as usize] |= 1 << i;
        t[c.to_ascii_uppercase() as usize] |= 1 << i;
        i += 1;
    }
    t
};

/// The per-query fast path: one pass over the words of the raw text. False only when no
/// rule could fire: none of the [`TRIGGERS`] occurs, and no `--` comment could hide a
/// statement start. Everything else takes the full path, which decides.
pub(super) fn may_matter(s: &[u8]) -> bool {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let c = s[i];
        if !WORD[c as usize] {
            if c == b'-' && s.get(i + 1) == Some(&b'-') {
                return true;
            }
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < n && WORD[s[i] as usize] {
            i += 1;
        }
        let candidates = CANDIDATES[c as usize];
        if candidates != 0 && word_may_matter(s, start, &s[start..i], candidates) {
            return true;
        }
    }
    false
}

/// Whether the word `w`, at `start` in `s`, is one of the [`TRIGGERS`] in `candidates`.
fn word_may_matter(s: &[u8], start: usize, w: &[u8], mut candidates: u32) -> bool {
    while candidates != 0 {
        let (k, how) = TRIGGERS[candidates.trailing_zeros() as usize];
        candidates &= candidates - 1;
        let hit = match how {
            Match::Word => w.eq_ignore_ascii_case(k),
            Match::Prefix => w.len() >= k.len() && w[..k.len()].eq_ignore_ascii_case(k),
            Match::StatementStart => w.eq_ignore_ascii_case(k) && set_may_start_statement(s, start),
            Match::UnicodeEscape => w.eq_ignore_ascii_case(k) && s.get(start + 1) == Some(&b'&'),
        };
        if hit {
            return true;
        }
    }
    false
}

/// False for `UPDATE t SET …`, `ALTER … SET …`: a SET right after a name or `)` starts
/// no statement (after BEGIN/THEN/ELSE/LOOP of a plpgsql block it may).
pub(super) fn set_may_start_statement(s: &[u8], start: usize) -> bool {
    let Some(p) = s[..start].iter().rposition(|b| !b.is_ascii_whitespace()) else {
        return true;
    };
    match s[p] {
        b'"' | b')' | b']' => false,
        // the end of a dollar quote (`$x$SET …` inside EXECUTE)
        b'$' => true,
        b if lexer::is_ident(b) => {
            let from = s[..=p]
                .iter()
                .rposition(|&b| !lexer::is_ident(b))
                .map_or(0, |q| q + 1);
            let prev = &s[from..=p];
            [&b"begin"[..], b"then", b"else", b"loop"]
                .iter()
                .any(|k| prev.eq_ignore_ascii_case(k))
        }
        _ => true,
    }
}
