//! A small SQL lexer over raw bytes (any byte sequence, UTF-8 or not) for the statement
//! recogniser: words, quoted identifiers, string literals (`'…'`, `E'…'`, `$tag$…$tag$`) and
//! single-byte punctuation, with whitespace and comments (`--`, nested `/* */`) skipped.
//! Statements are separated by `;` tokens, so a `;` inside a literal, identifier or comment
//! never splits. It knows no grammar; callers look at a few words.
//!
//! Expects ASCII-lowercased input (keywords compare as plain bytes). Strings and comments are
//! skipped with `memchr` searches, so cost is one pass over the text.

use memchr::{memchr, memchr2, memmem};

/// Kind of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unquoted identifier, keyword or number (`[a-z0-9_$]` and non-ASCII bytes).
    Word,
    /// A `"quoted identifier"`; `inner` is the text between the quotes.
    Quoted,
    /// A string literal of any form; `inner` is its content.
    Str,
    /// Any other single byte (`;`, `(`, `,`, `.`, operators, `$1`'s `$`...).
    Punct,
}

/// One token: `start..end` in the text, and the content range for quoted forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok {
    /// What it is.
    pub kind: Kind,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
    /// Content start (quoted forms; equals `start` otherwise).
    pub inner_start: u32,
    /// Content end.
    pub inner_end: u32,
}

impl Tok {
    /// The token's bytes in `text`.
    pub fn text<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        &text[self.start as usize..self.end as usize]
    }

    /// The content (between the quotes for quoted forms) in `text`.
    pub fn inner<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        &text[self.inner_start as usize..self.inner_end as usize]
    }

    /// True for the word `w` (lowercase).
    pub fn is_word(&self, text: &[u8], w: &[u8]) -> bool {
        self.kind == Kind::Word && self.text(text) == w
    }

    /// True for the punctuation byte `b`.
    pub fn is_punct(&self, text: &[u8], b: u8) -> bool {
        self.kind == Kind::Punct && text[self.start as usize] == b
    }
}

/// Byte classes: identifier start (`[A-Za-z_]`, non-ASCII) and continuation (plus digits
/// and `$`), looked up per byte.
const START: u8 = 1;
const CONT: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            t[b] = START | CONT;
        } else if c.is_ascii_digit() || c == b'$' {
            t[b] = CONT;
        }
        b += 1;
    }
    t
};

fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & START != 0
}

/// True for a byte that continues an identifier (`[A-Za-z0-9_$]`, non-ASCII).
pub fn is_ident(b: u8) -> bool {
    CLASS[b as usize] & CONT != 0
}

/// Lexes `text` (texts over 4 GiB are cut at 4 GiB), appending tokens to `out`.
/// `backslash_escapes` makes `\` escape in plain `'…'` strings too (what Postgres does with
/// `standard_conforming_strings = off`). Returns true when a plain string held a backslash,
/// i.e. when that setting could change where the string ends.
pub fn lex(text: &[u8], backslash_escapes: bool, out: &mut Vec<Tok>) -> bool {
    let s = &text[..text.len().min(u32::MAX as usize)];
    let n = s.len();
    let mut ambiguous = false;
    let mut i = 0;
    while i < n {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if next == Some(b'-') => {
                i = memchr2(b'\n', b'\r', &s[i..]).map_or(n, |p| i + p + 1);
            }
            b'/' if next == Some(b'*') => i = skip_block_comment(s, i),
            b'\'' => {
                let (end, backslash) = quote_string(s, i, backslash_escapes, out);
                ambiguous |= backslash;
                i = end;
            }
            b'"' => {
                let end = quoted_end(s, i + 1, b'"');
                push(
                    out,
                    Kind::Quoted,
                    i,
                    end,
                    i + 1,
                    end.saturating_sub(1).max(i + 1),
                );
                i = end;
            }
            b'$' => i = dollar(s, i, out),
            _ if is_ident_start(c) || c.is_ascii_digit() => {
                let mut j = i + 1;
                while j < n && is_ident(s[j]) {
                    j += 1;
                }
                push(out, Kind::Word, i, j, i, j);
                i = j;
            }
            _ => {
                push(out, Kind::Punct, i, i + 1, i, i + 1);
                i += 1;
            }
        }
    }
    ambiguous
}

/// Lexes the `'…'` string starting at `i` (with its `E` prefix when the word before it is
/// a lone `e`), appending it to `out`. Returns where it ends and whether a plain string
/// (no escapes) held a backslash.
fn quote_string(s: &[u8], i: usize, backslash_escapes: bool, out: &mut Vec<Tok>) -> (usize, bool) {
    // E'…' (the `e` directly before the quote, starting its own word).
    let e_prefix = out
        .last()
        .is_some_and(|t| t.kind == Kind::Word && t.end as usize == i && t.text(s) == b"e");
    let start = if e_prefix {
        out.pop().map_or(i, |t| t.start as usize)
    } else {
        i
    };
    let escapes = e_prefix || backslash_escapes;
    let end = string_end(s, i + 1, escapes);
    let ambiguous = !escapes && memchr(b'\\', &s[i + 1..end]).is_some();
    push(
        out,
        Kind::Str,
        start,
        end,
        i + 1,
        end.saturating_sub(1).max(i + 1),
    );
    (end, ambiguous)
}

/// Lexes the `$tag$…$tag$` string at `i`, or a lone `$` when no tag starts there,
/// appending it to `out`. Returns where it ends.
fn dollar(s: &[u8], i: usize, out: &mut Vec<Tok>) -> usize {
    let n = s.len();
    match dollar_tag(s, i) {
        Some(tag_end) => {
            let tag = &s[i..tag_end];
            let (inner_end, end) = match memmem::find(&s[tag_end..], tag) {
                Some(p) => (tag_end + p, tag_end + p + tag.len()),
                None => (n, n),
            };
            push(out, Kind::Str, i, end, tag_end, inner_end);
            end
        }
        None => {
            push(out, Kind::Punct, i, i + 1, i, i + 1);
            i + 1
        }
    }
}

fn push(
    out: &mut Vec<Tok>,
    kind: Kind,
    start: usize,
    end: usize,
    inner_start: usize,
    inner_end: usize,
) {
    // Lengths were capped at u32::MAX above.
    out.push(Tok {
        kind,
        start: start as u32,
        end: end as u32,
        inner_start: inner_start as u32,
        inner_end: inner_end.max(inner_start) as u32,
    });
}

/// End (one past the closing quote) of a `'…'` string whose content starts at `from`;
/// `''` is a quote inside. With `escapes`, `\` escapes the next byte. Unterminated: the end
/// of the text.
fn string_end(s: &[u8], mut from: usize, escapes: bool) -> usize {
    if !escapes {
        return quoted_end(s, from, b'\'');
    }
    while let Some(p) = memchr2(b'\'', b'\\', &s[from..]) {
        let at = from + p;
        // `\x` and `''` both continue the string.
        if s[at] == b'\\' || s.get(at + 1) == Some(&b'\'') {
            from = at + 2;
        } else {
            return at + 1;
        }
        if from >= s.len() {
            break;
        }
    }
    s.len()
}

/// End of a form quoted with `q` (doubled `q` inside) whose content starts at `from`.
fn quoted_end(s: &[u8], mut from: usize, q: u8) -> usize {
    while let Some(p) = memchr(q, &s[from..]) {
        let at = from + p;
        if s.get(at + 1) == Some(&q) {
            from = at + 2;
            if from >= s.len() {
                break;
            }
        } else {
            return at + 1;
        }
    }
    s.len()
}

/// End of a `/* … */` comment starting at `i` (they nest in Postgres).
fn skip_block_comment(s: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while let Some(p) = memchr2(b'*', b'/', &s[j..]) {
        let at = j + p;
        match (s[at], s.get(at + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                j = at + 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                j = at + 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j = at + 1,
        }
        if j >= s.len() {
            break;
        }
    }
    s.len()
}

/// When a dollar quote opens at `i` (`$$` or `$tag$`), the end of its opening tag.
fn dollar_tag(s: &[u8], i: usize) -> Option<usize> {
    // `a$b$` is one identifier: a `$` right after an identifier byte opens nothing. The
    // word scanner consumes those, so here `$` starts a token.
    let mut j = i + 1;
    match s.get(j) {
        Some(b'$') => return Some(j + 1),
        Some(&b) if is_ident_start(b) => {}
        _ => return None,
    }
    while j < s.len() && is_ident(s[j]) && s[j] != b'$' {
        j += 1;
    }
    (s.get(j) == Some(&b'$')).then_some(j + 1)
}

/// The statements of a token list: ranges between `;` tokens, empty ones left out.
pub fn statements<'a>(
    text: &'a [u8],
    toks: &'a [Tok],
) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        while !done {
            let boundary = if i == toks.len() {
                done = true;
                true
            } else {
                toks[i].is_punct(text, b';')
            };
            let range = start..i;
            i += 1;
            if boundary {
                start = i;
                if !range.is_empty() {
                    return Some(range);
                }
            }
        }
        None
    })
}

#[cfg(test)]
#[path = "lexer_tests.rs"]
mod tests;
