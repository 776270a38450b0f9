//! Reads PgBouncer's INI dialect into a flat list of `(section, key, value, file:line)` items:
//! `[section]` headers, `;`/`#` comments, `key = value`, `"quoted keys"` and `%include` (relative to
//! the including file's directory, at most 10 levels). Knows nothing about what keys mean.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::problem::SyntaxProblem;

/// How deep `%include` may nest (the main file is level 0).
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// The sections of a PgBouncer config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[databases]`: name = connection string.
    Databases,
    /// `[users]`: name = per-user options.
    Users,
    /// `[pgbouncer]` or its alias `[pgfunnel]`: settings.
    Pgbouncer,
    /// `[peers]`: PgBouncer peering (cancel forwarding).
    Peers,
}

impl Section {
    fn from_header(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "databases" => Some(Self::Databases),
            "users" => Some(Self::Users),
            "pgbouncer" | "pgfunnel" => Some(Self::Pgbouncer),
            "peers" => Some(Self::Peers),
            _ => None,
        }
    }
}

/// One `key = value` line, with where it came from. Keys keep their case (database and user names
/// are case-sensitive); values are trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniItem {
    /// The section the line is in.
    pub section: Section,
    /// The key, unquoted if it was `"quoted"`.
    pub key: String,
    /// The value after `=`, trimmed; may be empty.
    pub value: String,
    /// File and line.
    pub location: Location,
}

/// What reading a file gave: every good line, and every bad one (reading goes on after an error
/// so that `pgfunnel check` can report them all).
#[derive(Debug, Default)]
pub struct Parsed {
    /// The `key = value` lines, in order.
    pub items: Vec<IniItem>,
    /// Syntax errors, unknown sections and unreadable includes, in order.
    pub errors: Vec<ConfigError>,
}

/// Reads `path` and everything it includes, in order. Fails only when `path` itself cannot be read.
pub fn read_file(path: &Path) -> Result<Parsed, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(read_text(&text, path))
}

/// Reads `text` as if it were the contents of `origin`; includes are resolved against `origin`'s
/// directory and read from disk.
pub fn read_text(text: &str, origin: &Path) -> Parsed {
    let mut reader = Reader {
        parsed: Parsed::default(),
        section: None,
        skipping: false,
        stack: vec![canonical_or_same(origin)],
    };
    reader.read(text, origin);
    reader.parsed
}

fn canonical_or_same(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

struct Reader {
    parsed: Parsed,
    /// The current section; like PgBouncer, it carries into and out of included files.
    section: Option<Section>,
    /// Inside an unknown section (already reported): its lines are skipped.
    skipping: bool,
    /// Canonical paths of the files being read, outermost first.
    stack: Vec<PathBuf>,
}

impl Reader {
    fn read(&mut self, text: &str, file: &Path) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let location = Location {
                file: file.to_path_buf(),
                line: index + 1,
            };
            if let Err(e) = self.read_line(raw.trim(), location) {
                self.parsed.errors.push(e);
            }
        }
    }

    fn read_line(&mut self, line: &str, location: Location) -> Result<(), ConfigError> {
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            return Ok(());
        }
        if let Some(directive) = line.strip_prefix('%') {
            return self.directive(directive, location);
        }
        if line.starts_with('[') {
            return self.section_header(line, location);
        }
        if self.skipping {
            return Ok(());
        }
        let (key, value) = split_key_value(line).map_err(|problem| ConfigError::Syntax {
            location: location.clone(),
            problem,
        })?;
        let Some(section) = self.section else {
            return Err(syntax(location, SyntaxProblem::KeyOutsideSection));
        };
        self.parsed.items.push(IniItem {
            section,
            key,
            value,
            location,
        });
        Ok(())
    }

    fn section_header(&mut self, line: &str, location: Location) -> Result<(), ConfigError> {
        let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        else {
            return Err(syntax(location, SyntaxProblem::BadSectionHeader));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(['[', ']']) {
            return Err(syntax(location, SyntaxProblem::BadSectionHeader));
        }
        match Section::from_header(name) {
            Some(section) => {
                self.section = Some(section);
                self.skipping = false;
                Ok(())
            }
            None => {
                self.skipping = true;
                Err(ConfigError::UnknownSection {
                    location,
                    section: name.to_owned(),
                })
            }
        }
    }

    fn directive(&mut self, directive: &str, location: Location) -> Result<(), ConfigError> {
        let (word, rest) = directive
            .split_once(char::is_whitespace)
            .unwrap_or((directive, ""));
        if word != "include" {
            let problem = SyntaxProblem::UnknownDirective {
                directive: word.to_owned(),
            };
            return Err(syntax(location, problem));
        }
        let target = rest.trim();
        if target.is_empty() {
            return Err(syntax(location, SyntaxProblem::IncludeWithoutPath));
        }
        self.include(Path::new(target), location)
    }

    fn include(&mut self, target: &Path, location: Location) -> Result<(), ConfigError> {
        // Relative to the including file, not the working directory (PgBouncer uses the CWD):
        // a config directory can then be moved or packaged as a whole.
        let target = match location.file.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target.to_path_buf(),
        };
        let unreadable = |source| ConfigError::IncludeUnreadable {
            location: location.clone(),
            target: target.clone(),
            source,
        };
        let canonical = fs::canonicalize(&target).map_err(unreadable)?;
        if self.stack.contains(&canonical) {
            return Err(ConfigError::IncludeCycle { location, target });
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::IncludeTooDeep {
                location,
                limit: MAX_INCLUDE_DEPTH,
            });
        }
        let text = fs::read_to_string(&target).map_err(unreadable)?;
        self.stack.push(canonical);
        self.read(&text, &target);
        self.stack.pop();
        Ok(())
    }
}

fn syntax(location: Location, problem: SyntaxProblem) -> ConfigError {
    ConfigError::Syntax { location, problem }
}

/// Splits `key = value`, where the key may be a `"quoted name"` with `""` for a quote.
fn split_key_value(line: &str) -> Result<(String, String), SyntaxProblem> {
    let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let (name, after) = unquote_name(quoted)?;
        (name, after.trim_start())
    } else {
        let end = line.find('=').ok_or(SyntaxProblem::MissingEquals)?;
        (line[..end].trim().to_owned(), &line[end..])
    };
    let value = rest.strip_prefix('=').ok_or(SyntaxProblem::MissingEquals)?;
    if key.is_empty() {
        return Err(SyntaxProblem::EmptyKey);
    }
    Ok((key, value.trim().to_owned()))
}

/// Reads a double-quoted name up to its closing quote; returns the name and the text after it.
fn unquote_name(text: &str) -> Result<(String, &str), SyntaxProblem> {
    let mut name = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            name.push(c);
        } else if chars.peek().is_some_and(|&(_, next)| next == '"') {
            name.push('"');
            chars.next();
        } else {
            return Ok((name, &text[i + 1..]));
        }
    }
    Err(SyntaxProblem::UnterminatedQuotedName)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::temp_tree;

    fn items(text: &str) -> Vec<IniItem> {
        let parsed = read_text(text, Path::new("t.ini"));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.items
    }

    fn error(text: &str) -> String {
        let parsed = read_text(text, Path::new("t.ini"));
        parsed.errors.first().expect("must fail").to_string()
    }

    fn first_error(parsed: Result<Parsed, ConfigError>) -> ConfigError {
        match parsed {
            Err(e) => e,
            Ok(mut p) => {
                assert!(!p.errors.is_empty(), "must fail");
                p.errors.remove(0)
            }
        }
    }

    fn items_of(parsed: Result<Parsed, ConfigError>) -> Vec<IniItem> {
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.items
    }

    #[test]
    fn reading_goes_on_after_errors_and_reports_each() {
        let parsed = read_text(
            "[pgbouncer]\nbad line\nlisten_port = 1\n[nope]\nx = 1\n[databases]\n\"q = 2\nfoo = host=a\n",
            Path::new("t.ini"),
        );
        let lines: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("t.ini:2: syntax error"), "{lines:?}");
        assert!(
            lines[1].starts_with("t.ini:4: unknown section [nope]"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("t.ini:7: syntax error"), "{lines:?}");
        let keys: Vec<&str> = parsed.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["listen_port", "foo"],
            "lines of the unknown section are skipped"
        );
    }

    #[test]
    fn reads_sections_keys_and_values_with_lines() {
        let got = items(
            "; comment\n# other\n[databases]\nfoo = host=a\n\n[PgBouncer]\nlisten_port=6432\nlogfile =\n",
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].section, Section::Databases);
        assert_eq!(
            (got[0].key.as_str(), got[0].value.as_str()),
            ("foo", "host=a")
        );
        assert_eq!(got[0].location.line, 4);
        assert_eq!(got[1].section, Section::Pgbouncer);
        assert_eq!(
            (got[1].key.as_str(), got[1].value.as_str()),
            ("listen_port", "6432")
        );
        assert_eq!(
            (got[2].key.as_str(), got[2].value.as_str()),
            ("logfile", "")
        );
        assert_eq!(got[2].location.to_string(), "t.ini:8");
    }

    #[test]
    fn pgfunnel_section_is_an_alias() {
        let got = items("[pgfunnel]\nverbose = 1\n");
        assert_eq!(got[0].section, Section::Pgbouncer);
    }

    #[test]
    fn quoted_names_allow_any_character() {
        let got = items("[databases]\n\"my db\"\"x\" = host=a\n\"*\"=\n");
        assert_eq!(got[0].key, "my db\"x");
        assert_eq!(got[1].key, "*");
        assert_eq!(got[1].value, "");
    }

    #[test]
    fn value_may_contain_equals_and_keeps_inner_spaces() {
        let got = items("[databases]\nfoo =  host=a  port=1  \n");
        assert_eq!(got[0].value, "host=a  port=1");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            error("[pgbouncer]\n\njust words\n"),
            "t.ini:3: syntax error: expected `key = value`, `[section]` or `%include file`"
        );
        assert_eq!(
            error("a = b\n"),
            "t.ini:1: syntax error: key before any [section] header"
        );
        assert_eq!(
            error("[pgbouncer]\n = 1\n"),
            "t.ini:2: syntax error: no key before `=`"
        );
        assert!(
            error("[pgbouncer\n").starts_with("t.ini:1: syntax error: malformed section header")
        );
        assert!(
            error("[databases]\n\"abc = x\n").starts_with("t.ini:2: syntax error: unterminated")
        );
        assert!(error("[databases]\n\"abc\" x\n").starts_with("t.ini:2: syntax error: expected"));
        assert!(
            error("%include\n").starts_with("t.ini:1: syntax error: %include needs a file path")
        );
        assert!(error("%define x\n").contains("unknown directive %define"));
    }

    #[test]
    fn unknown_section_is_an_error() {
        assert_eq!(
            error("[pgbouncer]\n[database]\n"),
            "t.ini:2: unknown section [database]; expected [databases], [users], [pgbouncer] (or [pgfunnel]) or [peers]"
        );
    }

    #[test]
    fn include_is_relative_to_including_file_and_keeps_section() {
        let dir = temp_tree(&[
            (
                "main.ini",
                "[pgbouncer]\nlisten_port = 1\n%include conf.d/extra.ini\nverbose = 2\n",
            ),
            (
                "conf.d/extra.ini",
                "listen_port = 2\n[databases]\nfoo = host=b\n",
            ),
        ]);
        let got = items_of(read_file(&dir.path().join("main.ini")));
        let summary: Vec<_> = got
            .iter()
            .map(|i| (i.section, i.key.as_str(), i.location.line))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Section::Pgbouncer, "listen_port", 2),
                (Section::Pgbouncer, "listen_port", 1),
                (Section::Databases, "foo", 3),
                // the section set inside the include carries on after it, as in PgBouncer
                (Section::Databases, "verbose", 4),
            ]
        );
        assert!(got[1].location.file.ends_with("conf.d/extra.ini"));
    }

    #[test]
    fn missing_include_names_file_line_and_target() {
        let dir = temp_tree(&[("main.ini", "[pgbouncer]\n\n%include nope.ini\n")]);
        let main = dir.path().join("main.ini");
        let err = first_error(read_file(&main)).to_string();
        assert!(
            err.starts_with(&format!("{}:3: %include ", main.display())),
            "{err}"
        );
        assert!(err.contains("nope.ini"), "{err}");
    }

    #[test]
    fn recursive_include_is_refused() {
        let dir = temp_tree(&[
            ("a.ini", "[pgbouncer]\n%include b.ini\n"),
            ("b.ini", "%include a.ini\n"),
        ]);
        let err = first_error(read_file(&dir.path().join("a.ini")));
        assert!(
            matches!(err, ConfigError::IncludeCycle { ref location, .. } if location.line == 1),
            "{err}"
        );
        assert!(err.to_string().contains("recursive include"), "{err}");
    }

    #[test]
    fn include_depth_is_limited() {
        let mut files: Vec<(String, String)> = (0..=MAX_INCLUDE_DEPTH)
            .map(|n| (format!("f{n}.ini"), format!("%include f{}.ini\n", n + 1)))
            .collect();
        files.push((
            format!("f{}.ini", MAX_INCLUDE_DEPTH + 1),
            "[pgbouncer]\n".into(),
        ));
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = temp_tree(&refs);
        let err = first_error(read_file(&dir.path().join("f0.ini")));
        assert!(
            matches!(err, ConfigError::IncludeTooDeep { limit: 10, .. }),
            "{err}"
        );

        // exactly MAX_INCLUDE_DEPTH levels is fine
        let dir = temp_tree(&refs[..MAX_INCLUDE_DEPTH]);
        std::fs::write(
            dir.path().join(format!("f{MAX_INCLUDE_DEPTH}.ini")),
            "[pgbouncer]\n",
        )
        .expect("write");
        items_of(read_file(&dir.path().join("f0.ini")));
    }

    #[test]
    fn missing_main_file_names_it() {
        let err = first_error(read_file(Path::new("/nonexistent/pgfunnel.ini")));
        assert!(
            err.to_string()
                .starts_with("/nonexistent/pgfunnel.ini: cannot read config file"),
            "{err}"
        );
    }
}
