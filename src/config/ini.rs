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
#[path = "ini_tests.rs"]
mod tests;
