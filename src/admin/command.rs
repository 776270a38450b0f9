//! The admin console's command language, parsed without I/O: `SHOW view`, `SET key = value`
//! and the control words (PAUSE, RESUME, RECONNECT, RELOAD, KILL, KILL_CLIENT, DISABLE,
//! ENABLE, WAIT_CLOSE, SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]). Same grammar as
//! PgBouncer's `admin.c` regexes: one command, optional argument (a word or a
//! double-quoted name), optional trailing semicolon, case-insensitive keywords.

use thiserror::Error;

use crate::shutdown::ShutdownMode;

/// The SHOW views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the SHOW word of the same name
pub enum View {
    Help,
    Version,
    Config,
    Databases,
    Pools,
    Clients,
    Servers,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Lists,
    Users,
    State,
    DnsHosts,
    DnsZones,
    Sockets,
    ActiveSockets,
    Mem,
    Peers,
    PeerPools,
}

impl View {
    fn parse(word: &str) -> Option<View> {
        Some(match word.to_ascii_lowercase().as_str() {
            "help" => View::Help,
            "version" => View::Version,
            "config" => View::Config,
            "databases" => View::Databases,
            "pools" => View::Pools,
            "clients" => View::Clients,
            "servers" => View::Servers,
            "stats" => View::Stats,
            "stats_totals" => View::StatsTotals,
            "stats_averages" => View::StatsAverages,
            "totals" => View::Totals,
            "lists" => View::Lists,
            "users" => View::Users,
            "state" => View::State,
            "dns_hosts" => View::DnsHosts,
            "dns_zones" => View::DnsZones,
            "sockets" => View::Sockets,
            "active_sockets" => View::ActiveSockets,
            "mem" => View::Mem,
            "peers" => View::Peers,
            "peer_pools" => View::PeerPools,
            _ => return None,
        })
    }
}

/// Session parameters clients ask for with SHOW / SET that the console fakes (admin.c).
pub const FAKE_PARAMS: [(&str, &str); 5] = [
    ("client_encoding", "UTF-8"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "ISO"),
    ("timezone", "GMT"),
];

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // variants are the console commands of the same name
pub enum Command {
    /// An empty query string.
    Empty,
    Show(View),
    /// SHOW of a faked session parameter: (name, value).
    ShowParam(&'static str, &'static str),
    Set {
        key: String,
        value: String,
    },
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    Reload,
    Kill(Option<String>),
    KillClient(u64),
    Disable(String),
    Enable(String),
    WaitClose(Option<String>),
    Shutdown(ShutdownMode),
}

impl Command {
    /// Whether stats_users may run it (read-only SHOW and faked parameters).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Command::Empty | Command::Show(_) | Command::ShowParam(..)
        )
    }
}

/// Why a query is not a console command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Not a command of the console language.
    #[error("invalid command '{0}', use SHOW HELP;")]
    Syntax(String),
    /// A command whose argument is required or malformed.
    #[error("{0}")]
    BadArgument(&'static str),
}

/// Why SUSPEND is refused (PgBouncer 1.26 removed it with online restart).
pub const SUSPEND_REFUSED: &str = "SUSPEND is not supported: it served online restart (-R), \
     which pgfunnel does not have and PgBouncer 1.26 removed; use PAUSE and RESUME";

/// Parses one console query.
pub fn parse(query: &str) -> Result<Command, ParseError> {
    let syntax = || ParseError::Syntax(query.to_owned());
    let q = query.trim();
    let q = q.strip_suffix(';').unwrap_or(q).trim_end();
    if q.is_empty() {
        return Ok(Command::Empty);
    }
    let (word, rest) = split_word(q);
    if word.eq_ignore_ascii_case("set") {
        return parse_set(rest).ok_or_else(syntax);
    }
    let arg = parse_arg(rest).ok_or_else(syntax)?;
    let word = word.to_ascii_lowercase();
    let need = |a: Option<String>, msg| a.ok_or(ParseError::BadArgument(msg));
    Ok(match word.as_str() {
        "show" | "select" => {
            let name = arg.ok_or_else(syntax)?;
            if let Some(&(n, v)) = FAKE_PARAMS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                return Ok(Command::ShowParam(n, v));
            }
            Command::Show(View::parse(&name).ok_or_else(syntax)?)
        }
        "suspend" => return Err(ParseError::BadArgument(SUSPEND_REFUSED)),
        "pause" => Command::Pause(arg),
        "resume" => Command::Resume(arg),
        "reconnect" => Command::Reconnect(arg),
        "reload" if arg.is_none() => Command::Reload,
        "kill" => Command::Kill(arg),
        "kill_client" => {
            let id = need(arg, "invalid client pointer supplied")?;
            let id = id
                .parse()
                .map_err(|_| ParseError::BadArgument("invalid client pointer supplied"))?;
            Command::KillClient(id)
        }
        "disable" => Command::Disable(need(arg, "a database is required")?),
        "enable" => Command::Enable(need(arg, "a database is required")?),
        "wait_close" => Command::WaitClose(arg),
        "shutdown" => Command::Shutdown(match arg.as_deref().map(str::to_ascii_lowercase) {
            None => ShutdownMode::Immediate,
            Some(a) if a == "wait_for_servers" => ShutdownMode::WaitForServers,
            Some(a) if a == "wait_for_clients" => ShutdownMode::WaitForClients,
            Some(_) => return Err(syntax()),
        }),
        _ => return Err(syntax()),
    })
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits the leading word (`[A-Za-z0-9_]+`) from the rest.
fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !is_word_char(c)).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The optional argument after a command word: nothing, a word, or a "quoted" name.
/// `None` when there is something else (a syntax error).
fn parse_arg(rest: &str) -> Option<Option<String>> {
    if rest.is_empty() {
        return Some(None);
    }
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(None);
    }
    let (value, tail) = take_value(rest, '"')?;
    tail.trim().is_empty().then_some(Some(value))
}

/// `key (=|TO) value` where value is a word, a 'string' or a "name".
fn parse_set(rest: &str) -> Option<Command> {
    let rest = rest.trim_start();
    let (key, tail) = if rest.starts_with('"') {
        take_value(rest, '"')?
    } else {
        let (k, t) = split_word(rest);
        (k.to_owned(), t)
    };
    if key.is_empty() {
        return None;
    }
    let tail = tail.trim_start();
    let tail = if let Some(t) = tail.strip_prefix('=') {
        t
    } else {
        let (w, t) = split_word(tail);
        if !w.eq_ignore_ascii_case("to") {
            return None;
        }
        t
    };
    let tail = tail.trim();
    let (value, after) = match tail.chars().next()? {
        '\'' => take_value(tail, '\'')?,
        '"' => take_value(tail, '"')?,
        _ => {
            let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
            (tail[..end].to_owned(), &tail[end..])
        }
    };
    after
        .trim()
        .is_empty()
        .then_some(Command::Set { key, value })
}

/// Takes a value quoted with `quote` (doubled quotes escape) or a bare word.
fn take_value(s: &str, quote: char) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix(quote) {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                if chars.peek().map(|(_, n)| *n) == Some(quote) {
                    out.push(quote);
                    chars.next();
                    continue;
                }
                return Some((out, &body[i + 1..]));
            }
            out.push(c);
        }
        return None;
    }
    let (w, tail) = split_word(s);
    (!w.is_empty()).then(|| (w.to_owned(), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_views_case_insensitive_with_semicolon() {
        assert_eq!(parse("SHOW POOLS;"), Ok(Command::Show(View::Pools)));
        assert_eq!(
            parse("  show stats_totals ; "),
            Ok(Command::Show(View::StatsTotals))
        );
        assert_eq!(parse("select version"), Ok(Command::Show(View::Version)));
        assert_eq!(
            parse("show client_encoding"),
            Ok(Command::ShowParam("client_encoding", "UTF-8"))
        );
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse(";"), Ok(Command::Empty));
    }

    #[test]
    fn unknown_views_and_words_are_syntax_errors_naming_show_help() {
        for q in [
            "SHOW NOPE",
            "SHOW",
            "FROB",
            "SHOW POOLS EXTRA",
            "select 1 + 1",
            "PAUSE a b",
        ] {
            let e = parse(q).expect_err(q);
            assert_eq!(e, ParseError::Syntax(q.to_owned()));
            assert!(e.to_string().contains("use SHOW HELP"), "{e}");
        }
    }

    #[test]
    fn control_commands_and_arguments() {
        assert_eq!(parse("PAUSE"), Ok(Command::Pause(None)));
        assert_eq!(parse("pause app;"), Ok(Command::Pause(Some("app".into()))));
        assert_eq!(
            parse("RESUME \"my db\""),
            Ok(Command::Resume(Some("my db".into())))
        );
        assert_eq!(parse("RECONNECT"), Ok(Command::Reconnect(None)));
        assert_eq!(parse("RELOAD"), Ok(Command::Reload));
        assert!(parse("RELOAD now").is_err());
        assert_eq!(parse("KILL app"), Ok(Command::Kill(Some("app".into()))));
        assert_eq!(parse("KILL_CLIENT 42"), Ok(Command::KillClient(42)));
        assert_eq!(
            parse("KILL_CLIENT abc"),
            Err(ParseError::BadArgument("invalid client pointer supplied"))
        );
        assert_eq!(
            parse("DISABLE"),
            Err(ParseError::BadArgument("a database is required"))
        );
        assert_eq!(parse("ENABLE app"), Ok(Command::Enable("app".into())));
        assert_eq!(parse("WAIT_CLOSE"), Ok(Command::WaitClose(None)));
        assert_eq!(
            parse("SHUTDOWN"),
            Ok(Command::Shutdown(ShutdownMode::Immediate))
        );
        assert_eq!(
            parse("shutdown wait_for_clients"),
            Ok(Command::Shutdown(ShutdownMode::WaitForClients))
        );
        assert!(parse("SHUTDOWN LATER").is_err());
        assert!(Command::Show(View::Pools).is_read_only());
        assert!(!Command::Reload.is_read_only());
    }

    #[test]
    fn set_forms() {
        let set = |k: &str, v: &str| {
            Ok(Command::Set {
                key: k.into(),
                value: v.into(),
            })
        };
        assert_eq!(
            parse("SET default_pool_size = 5"),
            set("default_pool_size", "5")
        );
        assert_eq!(
            parse("set query_wait_timeout=0.5;"),
            set("query_wait_timeout", "0.5")
        );
        assert_eq!(
            parse("SET server_reset_query TO 'DISCARD ''ALL'''"),
            set("server_reset_query", "DISCARD 'ALL'")
        );
        assert_eq!(
            parse("SET admin_users = \"a,b\""),
            set("admin_users", "a,b")
        );
        assert!(parse("SET = 5").is_err());
        assert!(parse("SET x 5").is_err());
        assert!(parse("SET x = 'unterminated").is_err());
        assert!(parse("SET x = 1 2").is_err());
    }
}
