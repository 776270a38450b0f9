//! PgBouncer's `auth_file` (userlist.txt): one `"user" "secret"` pair per line. Owns reading
//! and parsing into a user → [`Secret`] map; reloading and auth_query live elsewhere.

use super::secret::Secret;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with an auth_file line. Carries no part of the line, so it can never leak a
/// secret into a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFileSyntax {
    /// The line does not start with a double-quoted user name.
    MissingUser,
    /// The user name's closing quote is missing.
    UnterminatedUser,
    /// No second double-quoted field (the secret) follows the user name.
    MissingSecret,
    /// The secret's closing quote is missing.
    UnterminatedSecret,
    /// The file is not valid UTF-8 at this line.
    NotUtf8,
}

impl fmt::Display for AuthFileSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFileSyntax::MissingUser => "expected a double-quoted user name",
            AuthFileSyntax::UnterminatedUser => "unterminated quoted user name",
            AuthFileSyntax::MissingSecret => "expected a double-quoted secret after the user name",
            AuthFileSyntax::UnterminatedSecret => "unterminated quoted secret",
            AuthFileSyntax::NotUtf8 => "invalid UTF-8",
        })
    }
}

/// Failure to load an auth_file. Messages name the file (and line) but never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("could not read auth_file {}: {source}", .path.display())]
    Read {
        /// File that was read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A line is malformed; the whole file is rejected.
    #[error("auth_file {}, line {line}: {reason}", .path.display())]
    Syntax {
        /// File that was parsed.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never includes line content).
        reason: AuthFileSyntax,
    },
}

/// Parsed auth_file: user name → stored secret.
///
/// `Debug` lists only the path and the number of users.
#[derive(Clone, Default)]
pub struct AuthFile {
    path: PathBuf,
    users: HashMap<String, Secret>,
}

impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFile")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

impl AuthFile {
    /// Reads and parses the file at `path` (blocking I/O: call from a blocking context).
    /// See [`AuthFile::parse`] for the format.
    pub fn load(path: impl AsRef<Path>) -> Result<AuthFile, AuthFileError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => AuthFile::parse(&text, path),
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
                Err(AuthFileError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    reason: AuthFileSyntax::NotUtf8,
                })
            }
        }
    }

    /// Parses auth_file text; `origin_path` is only used in errors and [`AuthFile::path`].
    ///
    /// Format (PgBouncer's): each non-blank line holds at least two double-quoted fields,
    /// user then secret; `""` inside quotes is a literal quote; text between the two fields
    /// and after the second is ignored; lines whose first non-blank character is `;` or `#`
    /// are comments. A later line for the same user replaces an earlier one (as PgBouncer).
    /// Any malformed line rejects the whole file with its line number.
    pub fn parse(text: &str, origin_path: impl AsRef<Path>) -> Result<AuthFile, AuthFileError> {
        let path = origin_path.as_ref().to_path_buf();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some((user, secret))) => {
                    users.insert(user, Secret::parse(&secret));
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(AuthFileError::Syntax {
                        path,
                        line: index + 1,
                        reason,
                    })
                }
            }
        }
        Ok(AuthFile { path, users })
    }

    /// The stored secret for `user` (exact, case-sensitive match), if listed.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// Number of distinct users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file lists no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Path the file was loaded from (or the origin given to [`AuthFile::parse`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Listed user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// Parses one line: `Ok(None)` for blank and comment lines, else (user, secret) unescaped.
fn parse_line(line: &str) -> Result<Option<(String, String)>, AuthFileSyntax> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
        return Ok(None);
    }
    let after_open = trimmed
        .strip_prefix('"')
        .ok_or(AuthFileSyntax::MissingUser)?;
    let (user, rest) = read_quoted(after_open).ok_or(AuthFileSyntax::UnterminatedUser)?;
    // PgBouncer skips whatever lies between the two fields up to the next quote.
    let open = rest.find('"').ok_or(AuthFileSyntax::MissingSecret)?;
    let (secret, _ignored) =
        read_quoted(&rest[open + 1..]).ok_or(AuthFileSyntax::UnterminatedSecret)?;
    Ok(Some((user, secret)))
}

/// Reads a quoted field's body (opening quote already consumed) up to its closing quote,
/// turning `""` into `"`. Returns the value and the text after the closing quote.
fn read_quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = text;
    loop {
        let quote = rest.find('"')?;
        value.push_str(&rest[..quote]);
        let after = &rest[quote + 1..];
        match after.strip_prefix('"') {
            Some(escaped_rest) => {
                value.push('"');
                rest = escaped_rest;
            }
            None => return Some((value, after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pgbouncer_sample_userlist() {
        let Some(dir) = crate::config::test_support::shared_testdata() else {
            return; // skipped: no shared PgBouncer samples in this checkout
        };
        let file = AuthFile::load(dir.join("userlist.txt")).expect("sample parses");
        assert_eq!(file.len(), 3);
        assert_eq!(file.get("marko"), Some(&Secret::Plain("asdasd".into())));
        assert_eq!(file.get("postgres"), Some(&Secret::Plain("asdasd".into())));
        assert_eq!(file.get("pgbouncer"), Some(&Secret::Plain("fake".into())));
        assert_eq!(file.get("nobody"), None);
    }

    #[test]
    fn loads_own_fixture_userlist_with_every_kind_of_secret() {
        let path = crate::config::test_support::fixture("config/userlist.txt");
        let file = AuthFile::load(path).expect("fixture parses");
        assert_eq!(file.len(), 5);
        assert_eq!(
            file.get("alice"),
            Some(&Secret::Plain("alice-plain".into()))
        );
        assert!(matches!(file.get("bob"), Some(Secret::Md5(_))));
        assert!(matches!(file.get("carol"), Some(Secret::Scram(_))));
        assert_eq!(
            file.get("we \"quote\""),
            Some(&Secret::Plain("it's fine".into()))
        );
    }

    #[test]
    fn parses_escaped_quotes_comments_blank_lines_and_trailing_text() {
        let text = "; comment\n  # another\n\n\"a\"\"b\" \"pw\"\"x\" trailing junk\r\n\
                    \t\"md5user\"   \"md5000102030405060708090a0b0c0d0e0f\"\n\"empty\" \"\"\n";
        let file = AuthFile::parse(text, "/etc/pgfunnel/userlist.txt").expect("valid");
        assert_eq!(file.len(), 3);
        assert_eq!(file.get("a\"b"), Some(&Secret::Plain("pw\"x".into())));
        assert!(matches!(file.get("md5user"), Some(Secret::Md5(_))));
        assert_eq!(file.get("empty"), Some(&Secret::Plain(String::new())));
        assert_eq!(file.path(), Path::new("/etc/pgfunnel/userlist.txt"));
    }

    #[test]
    fn later_line_for_same_user_wins() {
        let file = AuthFile::parse("\"u\" \"one\"\n\"u\" \"two\"\n", "x").expect("valid");
        assert_eq!(file.len(), 1);
        assert_eq!(file.get("u"), Some(&Secret::Plain("two".into())));
    }

    #[test]
    fn malformed_line_error_names_path_and_line_but_not_secret() {
        let cases = [
            (
                "\"ok\" \"fine\"\n\"bob\" \"hunter2\n",
                2,
                AuthFileSyntax::UnterminatedSecret,
            ),
            ("\"bob\" hunter2\n", 1, AuthFileSyntax::MissingSecret),
            ("\n\nbob \"hunter2\"\n", 3, AuthFileSyntax::MissingUser),
            ("\"bob hunter2\n", 1, AuthFileSyntax::UnterminatedUser),
        ];
        for (text, line, reason) in cases {
            let err = AuthFile::parse(text, "/etc/userlist.txt").expect_err("malformed");
            let message = err.to_string();
            assert!(message.contains("/etc/userlist.txt"), "{message}");
            assert!(message.contains(&format!("line {line}")), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!format!("{err:?}").contains("hunter2"));
            assert!(matches!(err, AuthFileError::Syntax { reason: r, .. } if r == reason));
        }
    }

    #[test]
    fn load_reports_missing_file_and_invalid_utf8() {
        let dir = std::env::temp_dir().join(format!("pgfunnel-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.txt");
        let err = AuthFile::load(&missing).expect_err("missing");
        assert!(matches!(err, AuthFileError::Read { .. }));
        assert!(err.to_string().contains("missing.txt"));
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"\"a\" \"b\"\n\"c\" \"\xff\"\n").expect("write");
        let err = AuthFile::load(&bad).expect_err("not utf-8");
        assert!(matches!(
            err,
            AuthFileError::Syntax {
                line: 2,
                reason: AuthFileSyntax::NotUtf8,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let file = AuthFile::parse("\"bob\" \"hunter2\"\n", "x").expect("valid");
        assert!(!format!("{file:?}").contains("hunter2"));
    }
}
