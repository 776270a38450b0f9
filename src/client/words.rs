//! The few SQL words pgfunnel reads itself in a lone statement (`DEALLOCATE name`,
//! `NOTIFY channel`): white space, a keyword, an identifier as Postgres folds it.

/// An identifier as Postgres reads it.
#[derive(Debug)]
pub(crate) enum Ident {
    /// Unquoted, folded to lower case.
    Bare(Vec<u8>),
    /// Double-quoted, `""` unescaped.
    Quoted(Vec<u8>),
}

/// `s` without its leading white space.
pub(crate) fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// `word` (any case) followed by white space or a quote; returns what follows the space.
pub(crate) fn keyword<'a>(s: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &s[word.len()..];
    match rest.first() {
        Some(b) if b.is_ascii_whitespace() => Some(skip_space(rest)),
        Some(b'"') => Some(rest),
        _ => None,
    }
}

/// An identifier at the start of `s` (after white space) and what follows it.
pub(crate) fn identifier(s: &[u8]) -> Option<(Ident, &[u8])> {
    let s = skip_space(s);
    if let Some(body) = s.strip_prefix(b"\"") {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match body.get(i)? {
                b'"' if body.get(i + 1) == Some(&b'"') => {
                    out.push(b'"');
                    i += 2;
                }
                b'"' => break,
                &b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        return (!out.is_empty()).then_some((Ident::Quoted(out), &body[i + 1..]));
    }
    let first = *s.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
        return None;
    }
    let n = s
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80)
        .count();
    Some((Ident::Bare(s[..n].to_ascii_lowercase()), &s[n..]))
}
