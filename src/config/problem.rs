//! What exactly is wrong with a value, a line, a connection string or a URL: the typed tails of
//! `ConfigError` messages. Display gives the wording; none of them carries a password.

use std::fmt;

/// What a value must look like: the tail of an invalid-value message (`expected <this>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// One of a fixed list of keywords.
    OneOf(&'static [&'static str]),
    /// 0/1/yes/no/on/off/true/false.
    Bool,
    /// A whole number in an inclusive range.
    Integer {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A time value: plain seconds (fractions allowed) or a number with a unit.
    Duration,
    /// A time value whose plain numbers mean milliseconds.
    Milliseconds,
    /// An octal file mode.
    OctalMode,
    /// A peer id: 1 to 16383 (`peer_id` also takes 0 = off and `auto`).
    PeerId,
    /// A `[peers]` entry's `host`.
    PeerHost,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OneOf(names) => write!(f, "one of {}", names.join(", ")),
            Self::Bool => f.write_str("a boolean: 0, 1, yes, no, on, off, true or false"),
            Self::Integer { min, max } => write!(f, "an integer from {min} to {max}"),
            Self::Duration => f.write_str(
                "a time: seconds (fractions allowed, e.g. 0.5) or a number with unit us, ms, s, min, h or d",
            ),
            Self::Milliseconds => {
                f.write_str("a time: milliseconds, or a number with unit us, ms, s, min, h or d")
            }
            Self::OctalMode => f.write_str("an octal file mode from 0 to 0777, e.g. 0770"),
            Self::PeerId => f.write_str("a peer id from 1 to 16383 (peer_id: also 0 or auto)"),
            Self::PeerHost => f.write_str("a host: address, DNS name or Unix socket directory"),
        }
    }
}

/// A line of the INI file that is not a comment, a section header, `%include` or `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxProblem {
    /// Neither `[section]`, `%include` nor `key = value`.
    MissingEquals,
    /// `= value` with nothing before the `=`.
    EmptyKey,
    /// A `key = value` line before any `[section]` header.
    KeyOutsideSection,
    /// A line starting with `[` that is not `[name]`.
    BadSectionHeader,
    /// A `"quoted name"` without its closing quote.
    UnterminatedQuotedName,
    /// `%include` without a path.
    IncludeWithoutPath,
    /// A `%word` other than `%include`.
    UnknownDirective {
        /// The directive as written, without the `%`.
        directive: String,
    },
}

impl fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingEquals => {
                f.write_str("syntax error: expected `key = value`, `[section]` or `%include file`")
            }
            Self::EmptyKey => f.write_str("syntax error: no key before `=`"),
            Self::KeyOutsideSection => f.write_str("syntax error: key before any [section] header"),
            Self::BadSectionHeader => {
                f.write_str("syntax error: malformed section header, expected `[name]`")
            }
            Self::UnterminatedQuotedName => {
                f.write_str("syntax error: unterminated \"quoted name\"")
            }
            Self::IncludeWithoutPath => f.write_str("syntax error: %include needs a file path"),
            Self::UnknownDirective { directive } => {
                write!(
                    f,
                    "syntax error: unknown directive %{directive} (only %include exists)"
                )
            }
        }
    }
}

/// A `[databases]`/`[users]` value that is not a valid `key=value ...` connection string. Never
/// carries the text itself (it may hold a password), only the option name involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnStringProblem {
    /// `=value` with no option name.
    EmptyKey,
    /// An option name not followed by `=`.
    MissingEquals {
        /// The option name.
        key: String,
    },
    /// `key=` with nothing after it (PgBouncer refuses empty values too; use `key=''`).
    EmptyValue {
        /// The option name.
        key: String,
    },
    /// `key='...` without the closing quote.
    UnterminatedQuote {
        /// The option name.
        key: String,
    },
}

impl fmt::Display for ConnStringProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyKey => f.write_str("option without a name before `=`"),
            Self::MissingEquals { key } => write!(f, "option {key} has no `=value`"),
            Self::EmptyValue { key } => write!(
                f,
                "option {key} has an empty value (write {key}='' for an empty string)"
            ),
            Self::UnterminatedQuote { key } => write!(f, "option {key}: unterminated quoted value"),
        }
    }
}

/// Why a `postgres://` URL given for URL mode was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// The text is not a URL at all.
    Unparsable(url::ParseError),
    /// A scheme other than `postgres` or `postgresql`.
    BadScheme {
        /// The scheme found.
        scheme: String,
    },
    /// No user name before `@`.
    MissingUser,
    /// A `%` escape that is not two hex digits or decodes to invalid UTF-8.
    BadPercentEncoding {
        /// Which part of the URL (user, password, host, database).
        part: &'static str,
    },
    /// Port 0.
    BadPort,
    /// A query parameter pgfunnel does not know (libpq refuses those too).
    UnknownParameter {
        /// The parameter name.
        name: String,
    },
    /// A query parameter that needs another one (`sslcert` and `sslkey` go together).
    MissingParameter {
        /// The parameter missing.
        name: &'static str,
        /// The parameter given that needs it.
        with: &'static str,
    },
    /// A known query parameter with a bad value.
    BadParameter {
        /// The parameter name.
        name: String,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: Expected,
    },
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparsable(e) => write!(f, "not a valid URL: {e}"),
            Self::BadScheme { scheme } => {
                write!(f, "scheme {scheme}:// is not supported, use postgres:// or postgresql://")
            }
            Self::MissingUser => f.write_str("a user name is required: postgres://USER[:PASSWORD]@HOST[:PORT]/DB"),
            Self::BadPercentEncoding { part } => write!(f, "bad percent-encoding in the {part}"),
            Self::BadPort => f.write_str("port must be from 1 to 65535"),
            Self::UnknownParameter { name } => write!(
                f,
                "unknown parameter {name}; known: sslmode, sslrootcert, sslcert, sslkey, sslnegotiation, application_name"
            ),
            Self::MissingParameter { name, with } => write!(f, "{with} is given without {name}"),
            Self::BadParameter { name, value, expected } => write!(f, "{name} = \"{value}\": expected {expected}"),
        }
    }
}
