//! Warnings: things in a config that pgfunnel accepts but the user should hear about (unknown
//! keys, PgBouncer keys without effect here). `pgfunnel check` prints them; the server logs them.

use std::fmt;
use std::path::PathBuf;

use super::error::Location;

/// Something in the config pgfunnel accepts but the user should know about. `pgfunnel check`
/// prints these; the server logs them at startup and on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file the key is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The key or option name concerned (lower-cased), or the entry name for whole entries.
    pub key: String,
    /// What is worth knowing.
    pub message: WarningMessage,
}

impl ConfigWarning {
    /// Builds a warning at `location`.
    pub fn new(location: &Location, key: impl Into<String>, message: WarningMessage) -> Self {
        Self {
            file: location.file.clone(),
            line: location.line,
            key: key.into(),
            message,
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {}: {}", self.key, self.message)
    }
}

/// The kinds of [`ConfigWarning`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningMessage {
    /// A `[pgbouncer]` key neither PgBouncer nor pgfunnel knows.
    UnknownKey,
    /// A PgBouncer key that pgfunnel stores but does not act on.
    NoEffect,
    /// An unknown option inside a `[databases]`/`[users]` entry.
    UnknownOption {
        /// The database or user name.
        entry: String,
    },
    /// `port=a,b`: like PgBouncer, one port is used for all hosts.
    ExtraPortsIgnored {
        /// The database name.
        entry: String,
        /// The port used.
        used: u16,
    },
    /// A key, database or user given again in the same file: as in PgBouncer the later one
    /// wins; the warning names both places.
    Repeated {
        /// "key", "database" or "user".
        what: &'static str,
        /// Where it was set first.
        first: Location,
    },
    /// A setting that leaves pgfunnel unable to do anything useful yet, e.g. no `[databases]`.
    Incomplete {
        /// What is missing and what follows.
        detail: &'static str,
    },
    /// `min_pool_size` larger than the pool size that applies.
    MinPoolAbovePoolSize {
        /// The database name (or `[pgbouncer]`).
        entry: String,
    },
}

impl fmt::Display for WarningMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey => f.write_str("unknown key, ignored"),
            Self::NoEffect => f.write_str("accepted but has no effect in pgfunnel"),
            Self::UnknownOption { entry } => {
                write!(f, "unknown option in entry \"{entry}\", ignored")
            }
            Self::ExtraPortsIgnored { entry, used } => {
                write!(
                    f,
                    "entry \"{entry}\": one port serves all hosts, using {used} (as PgBouncer does)"
                )
            }
            Self::Repeated { what, first } => write!(
                f,
                "{what} set again; this later value wins over the one at {first} (as in PgBouncer)"
            ),
            Self::Incomplete { detail } => f.write_str(detail),
            Self::MinPoolAbovePoolSize { entry } => {
                write!(
                    f,
                    "{entry}: min_pool_size is larger than the pool size, the pool size caps it"
                )
            }
        }
    }
}
