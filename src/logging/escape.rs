//! Escaping of text that goes into a log line. Anything a client or a server sent (user and
//! database names, application_name, peer strings, error texts, SQL) may contain a newline
//! that would forge a log line of its own, or terminal escape sequences; every log field
//! passes through [`EscapingWriter`], so one event is always one line of printable text.
//!
//! Escapes: `\n`, `\r`, `\t`; other C0 controls and DEL as `\xNN`; C1 controls and the
//! Unicode line and paragraph separators as `\u{NNNN}`; invalid UTF-8 (see [`EscapedBytes`])
//! as `\xNN` per byte. A backslash is left as it is.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Writes the escape of a character [`needs_escape`] picked.
fn write_escaped(c: char, out: &mut impl Write) -> fmt::Result {
    let code = c as u32;
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        _ if code < 0x20 || code == 0x7f => write!(out, "\\x{code:02x}"),
        _ => write!(out, "\\u{{{code:04x}}}"),
    }
}

/// Whether `c` is written escaped.
fn needs_escape(c: char) -> bool {
    let code = c as u32;
    code < 0x20 || (0x7f..=0x9f).contains(&code) || c == '\u{2028}' || c == '\u{2029}'
}

/// Writes `s` to `out` with every control character escaped.
pub fn escape_into(out: &mut impl Write, s: &str) -> fmt::Result {
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        out.write_str(&s[plain_from..i])?;
        write_escaped(c, out)?;
        plain_from = i + c.len_utf8();
    }
    out.write_str(&s[plain_from..])
}

/// `s` with every control character escaped (borrowed when there is none).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    // Writing to a String cannot fail.
    let _ = escape_into(&mut out, s);
    Cow::Owned(out)
}

/// A [`Write`] adapter that escapes everything written through it, for formatting a
/// `Display` or `Debug` value straight into a log line.
pub struct EscapingWriter<'a, W: Write>(pub &'a mut W);

impl<W: Write> Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s)
    }
}

/// Bytes shown as text: valid UTF-8 escaped as [`escape`] does, every byte of an invalid
/// sequence as `\xNN`. For logging raw protocol bytes.
#[derive(Debug, Clone, Copy)]
pub struct EscapedBytes<'a>(pub &'a [u8]);

impl fmt::Display for EscapedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            escape_into(f, chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_tabs_and_carriage_returns_become_backslash_letters() {
        assert_eq!(
            escape("bob\n2026-01-01T00:00:00Z  INFO login user=admin\r\tx"),
            "bob\\n2026-01-01T00:00:00Z  INFO login user=admin\\r\\tx"
        );
    }

    #[test]
    fn escape_sequences_and_other_controls_are_shown_as_hex() {
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape("a\0b\x07c\x7f"), "a\\x00b\\x07c\\x7f");
        assert_eq!(escape("\u{9b}31m\u{85}"), "\\u{009b}31m\\u{0085}");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn printable_text_passes_unchanged_and_borrowed() {
        for s in ["plain", "", "ünïcødé ✓ 日本", "back\\slash \"quoted\" 'x'"] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        let shown = EscapedBytes(b"ok\xff\xfe\n\xe2\x9c\x93\xc3").to_string();
        assert_eq!(shown, "ok\\xff\\xfe\\n\u{2713}\\xc3");
    }

    #[test]
    fn the_writer_escapes_formatted_values() {
        let mut out = String::new();
        let text = String::from("a\nb");
        write!(EscapingWriter(&mut out), "{:?} {text}", "x").expect("write");
        assert_eq!(out, "\"x\" a\\nb");
        assert!(!out.chars().any(|c| c.is_control()));
    }
}
