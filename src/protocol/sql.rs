//! Quoting of identifiers and literals in the SQL texts pgfunnel writes itself (SET
//! statements replayed on servers, LISTEN/UNLISTEN of the shared listener, the migration
//! history table).

/// Quotes a SQL string literal (E'' form when backslashes are present, so the result
/// does not depend on standard_conforming_strings).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
