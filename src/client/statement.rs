//! Recognises the few statements pgfunnel acts on, by looking at the start of a query
//! text only: session-level SET/RESET (remembered and replayed on other servers) and
//! statements that tie a client to its server (temp tables, session advisory locks,
//! WITH HOLD cursors, LISTEN, SQL PREPARE). No general SQL parsing.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// What a query text means to the pooler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognised {
    /// `SET [SESSION] name ...` as a single statement: replay `sql` on other servers.
    Set {
        /// Lowercase parameter name.
        name: String,
        /// The statement text to replay.
        sql: String,
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` (or `DISCARD ALL`, which also resets parameters).
    ResetAll,
    /// `LISTEN channel` as a single statement (served by the pool's shared listener).
    Listen(String),
    /// `UNLISTEN channel` (`None`: `UNLISTEN *`).
    Unlisten(Option<String>),
    /// Creates state that lives on this server connection only.
    Pins(PinReason),
}

/// Why a client must keep its server until it disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// CREATE TEMP/TEMPORARY TABLE (or other temporary objects).
    TempTable,
    /// pg_advisory_lock and friends at session level.
    AdvisoryLock,
    /// DECLARE ... WITH HOLD.
    HoldCursor,
    /// LISTEN.
    Listen,
    /// SQL-level PREPARE.
    Prepare,
    /// LOAD of a library.
    Load,
}

impl PinReason {
    /// Short label for logs and stats.
    pub fn label(self) -> &'static str {
        match self {
            PinReason::TempTable => "temp_table",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::HoldCursor => "with_hold_cursor",
            PinReason::Listen => "listen",
            PinReason::Prepare => "prepare",
            PinReason::Load => "load",
        }
    }
}

/// Recognises `sql` (a Query or Parse text). Returns `None` for everything else.
pub fn recognise(sql: &[u8]) -> Option<Recognised> {
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim_end_matches(['\0']);
    let trimmed = skip_space_and_comments(text);
    let first = first_word(trimmed);
    if first.eq_ignore_ascii_case("set") {
        return recognise_set(trimmed);
    }
    if first.eq_ignore_ascii_case("reset") {
        let rest = single_statement(trimmed[5..].trim())?;
        if rest.eq_ignore_ascii_case("all") {
            return Some(Recognised::ResetAll);
        }
        return valid_name(rest).then(|| Recognised::Reset(rest.to_ascii_lowercase()));
    }
    if first.eq_ignore_ascii_case("discard") {
        let rest = single_statement(trimmed[7..].trim())?;
        return rest
            .eq_ignore_ascii_case("all")
            .then_some(Recognised::ResetAll);
    }
    if first.eq_ignore_ascii_case("listen") {
        if let Some(ch) = single_statement(trimmed[6..].trim()).and_then(channel_name) {
            return Some(Recognised::Listen(ch));
        }
    }
    if first.eq_ignore_ascii_case("unlisten") {
        let rest = single_statement(trimmed[8..].trim())?;
        if rest == "*" {
            return Some(Recognised::Unlisten(None));
        }
        return channel_name(rest).map(|c| Recognised::Unlisten(Some(c)));
    }
    pin_reason(text).map(Recognised::Pins)
}

/// A channel identifier as Postgres stores it: unquoted names fold to lower case,
/// `"Quoted"` ones keep their case. Anything else is not recognised.
fn channel_name(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let name = inner.replace("\"\"", "\"");
        return (!name.is_empty() && !inner.replace("\"\"", "").contains('"')).then_some(name);
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    ok.then(|| s.to_ascii_lowercase())
}

fn recognise_set(stmt: &str) -> Option<Recognised> {
    let body = single_statement(stmt[3..].trim_start())?;
    let mut words = body.split_whitespace();
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("local")
        || name.eq_ignore_ascii_case("transaction")
        || name.eq_ignore_ascii_case("constraints")
    {
        return None;
    }
    if name.eq_ignore_ascii_case("session") {
        name = words.next()?;
        if name.eq_ignore_ascii_case("characteristics") {
            return None;
        }
    }
    let name = if name.eq_ignore_ascii_case("time") {
        "timezone".to_owned()
    } else if name.eq_ignore_ascii_case("authorization") {
        "session_authorization".to_owned()
    } else {
        let n = name.split(['=', '\'']).next().unwrap_or(name);
        if !valid_name(n) {
            return None;
        }
        n.to_ascii_lowercase()
    };
    Some(Recognised::Set {
        name,
        sql: format!("{};", stmt.trim_end().trim_end_matches(';').trim_end()),
    })
}

/// The statement without a trailing `;`, or `None` when the text holds more than one
/// statement (a `;` followed by anything but space). Quoted `;` makes it unrecognised,
/// which is the safe side.
fn single_statement(s: &str) -> Option<&str> {
    let s = s.trim_end();
    let s = s.strip_suffix(';').unwrap_or(s).trim_end();
    (!s.contains(';') && !s.contains("--") && !s.contains("/*")).then_some(s)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn first_word(s: &str) -> &str {
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

fn skip_space_and_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map(|(_, r)| r).unwrap_or("");
        } else {
            return s;
        }
    }
}

/// Finds session-bound constructs anywhere in the text (case-insensitive substring
/// checks; a false positive only costs pooling efficiency, never correctness). Runs on
/// every query: the text is lowercased once into a reused buffer and searched with
/// SIMD substring finders instead of a case-folding compare at every offset.
fn pin_reason(text: &str) -> Option<PinReason> {
    let f = &*PIN_FINDERS;
    let found = with_lowercase(text.as_bytes(), |lower| {
        let has = |finder: &Finder<'static>| finder.find(lower).is_some();
        if has(&f.pg) && (has(&f.advisory_lock) || has(&f.try_advisory_lock)) {
            return Some(PinReason::AdvisoryLock);
        }
        if has(&f.create) && (has(&f.temp) || has(&f.temporary) || has(&f.pg_temp)) {
            return Some(PinReason::TempTable);
        }
        if has(&f.with_hold) {
            return Some(PinReason::HoldCursor);
        }
        None
    });
    if found.is_some() {
        return found;
    }
    let start = first_word(skip_space_and_comments(text));
    [
        ("listen", PinReason::Listen),
        ("prepare", PinReason::Prepare),
        ("load", PinReason::Load),
    ]
    .into_iter()
    .find_map(|(word, reason)| start.eq_ignore_ascii_case(word).then_some(reason))
}

/// Substring searchers for `pin_reason`, built once (building one costs more than a search).
struct PinFinders {
    pg: Finder<'static>,
    advisory_lock: Finder<'static>,
    try_advisory_lock: Finder<'static>,
    create: Finder<'static>,
    temp: Finder<'static>,
    temporary: Finder<'static>,
    pg_temp: Finder<'static>,
    with_hold: Finder<'static>,
}

static PIN_FINDERS: LazyLock<PinFinders> = LazyLock::new(|| PinFinders {
    pg: Finder::new(b"pg_"),
    advisory_lock: Finder::new(b"pg_advisory_lock"),
    try_advisory_lock: Finder::new(b"pg_try_advisory_lock"),
    create: Finder::new(b"create"),
    temp: Finder::new(b" temp "),
    temporary: Finder::new(b" temporary "),
    pg_temp: Finder::new(b"pg_temp"),
    with_hold: Finder::new(b"with hold"),
});

/// Texts up to this size are lowercased into a per-thread buffer that is kept; longer
/// ones get a buffer of their own, so one huge query does not pin memory.
const KEPT_LOWERCASE: usize = 16 * 1024;

/// Calls `f` with an ASCII-lowercased copy of `text`.
fn with_lowercase<R>(text: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static LOWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if text.len() > KEPT_LOWERCASE {
        return f(&text.to_ascii_lowercase());
    }
    LOWER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.extend(text.iter().map(u8::to_ascii_lowercase));
            f(&buf)
        }
        Err(_) => f(&text.to_ascii_lowercase()),
    })
}

/// `LISTEN`/`UNLISTEN` as a single statement (what the shared listener serves); cheap
/// for everything else, which is rejected on its first word.
pub fn recognise_listen(sql: &[u8]) -> Option<Recognised> {
    let text = std::str::from_utf8(sql).ok()?;
    let first = first_word(skip_space_and_comments(text));
    if !first.eq_ignore_ascii_case("listen") && !first.eq_ignore_ascii_case("unlisten") {
        return None;
    }
    recognise(sql).filter(|r| matches!(r, Recognised::Listen(_) | Recognised::Unlisten(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, sql: &str) -> Option<Recognised> {
        Some(Recognised::Set {
            name: name.into(),
            sql: sql.into(),
        })
    }

    #[test]
    fn recognises_session_set_forms() {
        assert_eq!(
            recognise(b"SET statement_timeout = '5s'"),
            set("statement_timeout", "SET statement_timeout = '5s';")
        );
        assert_eq!(
            recognise(b"  set SESSION search_path TO a, b;  "),
            set("search_path", "set SESSION search_path TO a, b;")
        );
        assert_eq!(
            recognise(b"SET TIME ZONE 'UTC'\0"),
            set("timezone", "SET TIME ZONE 'UTC';")
        );
        assert_eq!(
            recognise(b"set myapp.tenant='x'"),
            set("myapp.tenant", "set myapp.tenant='x';")
        );
        assert_eq!(
            recognise(b"-- comment\nSET work_mem=1"),
            set("work_mem", "SET work_mem=1;")
        );
    }

    #[test]
    fn ignores_local_transaction_and_multi_statement_sets() {
        assert_eq!(recognise(b"SET LOCAL work_mem = 1"), None);
        assert_eq!(
            recognise(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            None
        );
        assert_eq!(recognise(b"SET a = 1; SET b = 2"), None);
        assert_eq!(recognise(b"SET a = ';'"), None);
        assert_eq!(recognise(b"select 1"), None);
        assert_eq!(recognise(b"SETTLE"), None);
        assert_eq!(recognise(&[0xff, 0xfe]), None);
    }

    #[test]
    fn recognises_resets() {
        assert_eq!(recognise(b"RESET ALL"), Some(Recognised::ResetAll));
        assert_eq!(recognise(b"discard all;"), Some(Recognised::ResetAll));
        assert_eq!(
            recognise(b"RESET work_mem"),
            Some(Recognised::Reset("work_mem".into()))
        );
        assert_eq!(recognise(b"RESET a; select 1"), None);
    }

    #[test]
    fn recognises_listen_and_unlisten() {
        assert_eq!(
            recognise(b"LISTEN Jobs"),
            Some(Recognised::Listen("jobs".into()))
        );
        assert_eq!(
            recognise(b"listen \"Mixed\";"),
            Some(Recognised::Listen("Mixed".into()))
        );
        assert_eq!(recognise(b"UNLISTEN *"), Some(Recognised::Unlisten(None)));
        assert_eq!(
            recognise(b"unlisten jobs"),
            Some(Recognised::Unlisten(Some("jobs".into())))
        );
        assert_eq!(
            recognise(b"LISTEN a; select 1"),
            Some(Recognised::Pins(PinReason::Listen))
        );
    }

    #[test]
    fn recognises_pins() {
        assert_eq!(
            recognise(b"CREATE TEMP TABLE t(x int)"),
            Some(Recognised::Pins(PinReason::TempTable))
        );
        assert_eq!(
            recognise(b"create temporary table t as select 1"),
            Some(Recognised::Pins(PinReason::TempTable))
        );
        assert_eq!(
            recognise(b"select pg_advisory_lock(1)"),
            Some(Recognised::Pins(PinReason::AdvisoryLock))
        );
        assert_eq!(
            recognise(b"select pg_advisory_xact_lock(1)"),
            None,
            "transaction-level locks end with the transaction"
        );
        assert_eq!(
            recognise(b"DECLARE c CURSOR WITH HOLD FOR select 1"),
            Some(Recognised::Pins(PinReason::HoldCursor))
        );
        assert_eq!(
            recognise(b"LISTEN ch"),
            Some(Recognised::Listen("ch".into()))
        );
        assert_eq!(
            recognise(b"PREPARE p AS select 1"),
            Some(Recognised::Pins(PinReason::Prepare))
        );
        assert_eq!(recognise(b"select 'no temp here'"), None);
        assert_eq!(
            recognise(b"Select PG_Advisory_Lock(1)"),
            Some(Recognised::Pins(PinReason::AdvisoryLock))
        );
        let mut long = b"select 1 from t where x = '".to_vec();
        long.extend(std::iter::repeat_n(b'a', KEPT_LOWERCASE));
        long.extend(b"' and y in (select pg_try_ADVISORY_lock(2))");
        assert_eq!(
            recognise(&long),
            Some(Recognised::Pins(PinReason::AdvisoryLock))
        );
    }

    #[test]
    fn recognise_listen_only_takes_listen_forms() {
        assert_eq!(
            recognise_listen(b" /* c */ LISTEN Jobs;"),
            Some(Recognised::Listen("jobs".into()))
        );
        assert_eq!(
            recognise_listen(b"unlisten *"),
            Some(Recognised::Unlisten(None))
        );
        assert_eq!(recognise_listen(b"LISTEN a; select 1"), None);
        assert_eq!(recognise_listen(b"select pg_advisory_lock(1)"), None);
        assert_eq!(recognise_listen(b"SET a = 1"), None);
    }
}
