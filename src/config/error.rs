//! Errors of config loading. Every one names the file (and line when there is one) and none
//! echoes a password. The parsers decide what is wrong; `problem.rs` holds the typed details.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::problem::{ConnStringProblem, Expected, SyntaxProblem, UrlProblem};

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
    #[error("{}: cannot read config file: {source}", path.display())]
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
    /// The same `[pgbouncer]` key twice in one file (PgBouncer silently takes the last; we refuse).
    #[error("{location}: duplicate key {key}, already set at line {first_line} of the same file")]
    DuplicateKey {
        /// The second occurrence.
        location: Location,
        /// The key, lower-cased.
        key: String,
        /// Line of the first occurrence in the same file.
        first_line: usize,
    },
    /// The same database name twice.
    #[error("{location}: database \"{name}\" is already defined at {first}")]
    DuplicateDatabase {
        /// The second definition.
        location: Location,
        /// The database name.
        name: String,
        /// The first definition.
        first: Location,
    },
    /// The same user name twice in `[users]`.
    #[error("{location}: user \"{name}\" is already defined at {first}")]
    DuplicateUser {
        /// The second definition.
        location: Location,
        /// The user name.
        name: String,
        /// The first definition.
        first: Location,
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
    /// A URL for URL mode that cannot be used.
    #[error("database URL {shown}: {problem}")]
    Url {
        /// The URL redacted: no password, `-` for a missing part.
        shown: String,
        /// What is wrong.
        problem: UrlProblem,
    },
}
