//! Errors of config loading. Every one names the file (and line when there is one) and none
//! echoes a password. The parsers decide what is wrong; `problem.rs` holds the typed details.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::problem::{ConnStringProblem, Expected, SyntaxProblem, UrlProblem};
use super::url_mode::redact_urls;

/// A place in a config file: the path as it was reached (the main file as given, an include joined
/// to the including file's directory) and a 1-based line number. Displays as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Path of the file, as given or as joined for an include (not canonicalized).
    pub file: PathBuf,
    /// 1-based line number inside `file`.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything that stops a config from loading. Display is one line that starts with `file:line:`
/// (or the file alone when no line applies) and never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The main config file could not be read.
    #[error("{}: cannot read config file: {source}", redact_urls(&path.display().to_string()))]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A line that is not valid INI.
    #[error("{location}: {problem}")]
    Syntax {
        /// Where.
        location: Location,
        /// What is wrong.
        problem: SyntaxProblem,
    },
    /// A `[section]` other than databases, users, pgbouncer (alias pgfunnel) or peers.
    #[error("{location}: unknown section [{section}]; expected [databases], [users], [pgbouncer] (or [pgfunnel]) or [peers]")]
    UnknownSection {
        /// Where the header is.
        location: Location,
        /// The section name as written.
        section: String,
    },
    /// An `%include` whose file cannot be read.
    #[error("{location}: %include {}: {source}", target.display())]
    IncludeUnreadable {
        /// Where the `%include` line is.
        location: Location,
        /// The resolved path of the included file.
        target: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `%include` nested deeper than the limit.
    #[error("{location}: %include nested deeper than {limit} levels")]
    IncludeTooDeep {
        /// Where the offending `%include` line is.
        location: Location,
        /// The nesting limit.
        limit: usize,
    },
    /// A file that (directly or indirectly) includes itself.
    #[error("{location}: %include {} includes itself (recursive include)", target.display())]
    IncludeCycle {
        /// Where the offending `%include` line is.
        location: Location,
        /// The resolved path of the included file.
        target: PathBuf,
    },
    /// A database name pgfunnel keeps for itself (the admin console).
    #[error("{location}: database name \"{name}\" is reserved for the admin console")]
    ReservedDatabase {
        /// Where.
        location: Location,
        /// The name.
        name: String,
    },
    /// A `[pgbouncer]` value of the wrong shape, e.g. `pool_mode = "sessionx"`.
    #[error("{location}: {key} = \"{value}\": expected {expected}")]
    InvalidValue {
        /// Where.
        location: Location,
        /// The key, lower-cased.
        key: String,
        /// The value as written.
        value: String,
        /// What is allowed.
        expected: Expected,
    },
    /// A bad option value inside a `[databases]` or `[users]` entry.
    #[error("{location}: {entry}: {key} = \"{value}\": expected {expected}")]
    InvalidEntryValue {
        /// Where the entry is.
        location: Location,
        /// The database or user name.
        entry: String,
        /// The option name, lower-cased.
        key: String,
        /// The value as written (never a password: passwords have no shape to get wrong).
        value: String,
        /// What is allowed.
        expected: Expected,
    },
    /// A `[databases]`/`[users]` value that is not a connection string.
    #[error("{location}: {entry}: {problem}")]
    ConnString {
        /// Where the entry is.
        location: Location,
        /// The database or user name.
        entry: String,
        /// What is wrong.
        problem: ConnStringProblem,
    },
    /// A setting whose value needs another setting that is missing.
    #[error("{location}: {key} = \"{value}\" requires {needed} to be set")]
    Requires {
        /// Where `key` is set.
        location: Location,
        /// The setting that has the requirement.
        key: &'static str,
        /// Its value.
        value: String,
        /// The setting(s) that must be set too.
        needed: &'static str,
    },
    /// A combination of settings that leaves pgfunnel nothing to do.
    #[error("{location}: {key} is empty and so is {other}: pgfunnel would accept no connections")]
    NothingToListenOn {
        /// Where `key` is set.
        location: Location,
        /// The setting emptied here.
        key: &'static str,
        /// The other setting that is empty too.
        other: &'static str,
    },
    /// `auth_file` is set but cannot be read.
    #[error("{location}: auth_file {}: {source}", path.display())]
    AuthFile {
        /// Where `auth_file` is set.
        location: Location,
        /// The resolved path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A value pgfunnel refuses on purpose, e.g. `auth_type = pam`, which PgBouncer supports and
    /// pgfunnel does not: accepting it would authenticate some other way than the file says.
    #[error("{location}: {key} = \"{value}\": {reason}")]
    Unsupported {
        /// Where the key is set.
        location: Location,
        /// The key.
        key: &'static str,
        /// The value as configured.
        value: String,
        /// Why it is refused and what to use instead.
        reason: &'static str,
    },
    /// A file or directory the config names that `serve` would fail to open at startup.
    #[error("{location}: {key} {}: {problem}", path.display())]
    UnusablePath {
        /// Where the key is set.
        location: Location,
        /// The key (`logfile`, `pidfile`, `unix_socket_dir`).
        key: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong, e.g. "directory /var/log/nope does not exist".
        problem: String,
    },
    /// Several problems, each its own error, in file order. Displays one per line.
    #[error("{}", list(errors))]
    Many {
        /// The problems, at least two.
        errors: Vec<ConfigError>,
    },
    /// A URL for URL mode that cannot be used.
    #[error("database URL {shown}: {problem}")]
    Url {
        /// The URL redacted: no password, `-` for a missing part.
        shown: String,
        /// What is wrong.
        problem: UrlProblem,
    },
}

fn list(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl ConfigError {
    /// One error for `errors`: `None` when empty, the error itself when alone, else [`ConfigError::Many`].
    pub fn from_list(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Many { errors }),
        }
    }

    /// Where the problem is, when it is at a line of a file.
    pub fn location(&self) -> Option<&Location> {
        use ConfigError::*;
        match self {
            Syntax { location, .. }
            | UnknownSection { location, .. }
            | IncludeUnreadable { location, .. }
            | IncludeTooDeep { location, .. }
            | IncludeCycle { location, .. }
            | ReservedDatabase { location, .. }
            | InvalidValue { location, .. }
            | InvalidEntryValue { location, .. }
            | ConnString { location, .. }
            | Requires { location, .. }
            | NothingToListenOn { location, .. }
            | AuthFile { location, .. }
            | Unsupported { location, .. }
            | UnusablePath { location, .. } => Some(location),
            Read { .. } | Many { .. } | Url { .. } => None,
        }
    }

    /// Every single problem: the list of a [`ConfigError::Many`], else this error alone.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many { errors } => errors.iter().flat_map(|e| e.problems()).collect(),
            other => vec![other],
        }
    }
}
