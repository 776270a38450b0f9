//! Splits the libpq-style values of `[databases]` and `[users]` entries into `(key, value)` pairs:
//! `key=value key2='quoted value'`, with `''` and `\'` (any `\x`) escapes inside quotes. Knows
//! nothing about which keys exist.

use super::problem::ConnStringProblem;

/// Parses `text` into pairs in order. Keys are lower-cased; whitespace around `=` is allowed, as
/// in PgBouncer. An unquoted value ends at whitespace and must not be empty (`key=''` is empty).
pub fn parse_conn_string(text: &str) -> Result<Vec<(String, String)>, ConnStringProblem> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        if key.is_empty() {
            return Err(ConnStringProblem::EmptyKey);
        }
        let after_key = rest[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return Err(ConnStringProblem::MissingEquals { key });
        };
        let after_eq = after_eq.trim_start();
        let (value, remainder) = if let Some(quoted) = after_eq.strip_prefix('\'') {
            unquote_value(quoted)
                .ok_or_else(|| ConnStringProblem::UnterminatedQuote { key: key.clone() })?
        } else {
            let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
            if end == 0 {
                return Err(ConnStringProblem::EmptyValue { key });
            }
            (after_eq[..end].to_owned(), &after_eq[end..])
        };
        pairs.push((key, value));
        rest = remainder.trim_start();
    }
    Ok(pairs)
}

/// Reads a single-quoted value (after the opening quote) up to its closing quote; returns the
/// value and the text after the quote, or `None` when the quote is never closed.
fn unquote_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if chars.peek().is_some_and(|&(_, next)| next == '\'') => {
                value.push('\'');
                chars.next();
            }
            '\'' => return Some((value, &text[i + 1..])),
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse_conn_string(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn plain_pairs_in_order() {
        assert_eq!(
            pairs("host=127.0.0.1 port=6666  dbname=p0"),
            vec![
                pair("host", "127.0.0.1"),
                pair("port", "6666"),
                pair("dbname", "p0")
            ]
        );
        assert!(pairs("").is_empty());
        assert!(pairs("   ").is_empty());
    }

    #[test]
    fn whitespace_around_equals_is_allowed() {
        assert_eq!(
            pairs("host = a  port= 1"),
            vec![pair("host", "a"), pair("port", "1")]
        );
    }

    #[test]
    fn quoted_values_keep_spaces_and_unescape() {
        assert_eq!(
            pairs("connect_query='set a=1; set b=2' user=x"),
            vec![pair("connect_query", "set a=1; set b=2"), pair("user", "x")]
        );
        assert_eq!(pairs(r"password='it''s'"), vec![pair("password", "it's")]);
        assert_eq!(
            pairs(r"password='it\'s \\ ok'"),
            vec![pair("password", r"it's \ ok")]
        );
        assert_eq!(pairs("password=''"), vec![pair("password", "")]);
    }

    #[test]
    fn keys_are_lower_cased() {
        assert_eq!(pairs("DBName=X"), vec![pair("dbname", "X")]);
    }

    #[test]
    fn malformed_strings_name_the_option() {
        assert_eq!(parse_conn_string("=x"), Err(ConnStringProblem::EmptyKey));
        assert_eq!(
            parse_conn_string("host"),
            Err(ConnStringProblem::MissingEquals { key: "host".into() })
        );
        assert_eq!(
            parse_conn_string("host="),
            Err(ConnStringProblem::EmptyValue { key: "host".into() })
        );
        assert_eq!(
            parse_conn_string("password='abc"),
            Err(ConnStringProblem::UnterminatedQuote {
                key: "password".into()
            })
        );
        assert_eq!(
            parse_conn_string(r"password='abc\'"),
            Err(ConnStringProblem::UnterminatedQuote {
                key: "password".into()
            })
        );
    }
}
