//! Session parameters that travel with a client: the reported values it was shown
//! (ParameterStatus) and the settings it asked for at startup that Postgres does not
//! report. Computes the statement that brings a server in line before linking.

use std::collections::HashMap;
use std::sync::Arc;

use super::tracker::SettingChange;
use crate::server::ServerConnection;

/// Reported parameters a client cannot change (or that differ by role, not by session).
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
    "scram_iterations",
];

/// Reported parameters with the values a client has been shown, keyed by the server's
/// spelling (`DateStyle`, `TimeZone`, ...): the pool's welcome values, shared by all its
/// clients, plus this client's own values where they differ (idle clients stay small).
#[derive(Debug, Default, Clone)]
pub struct Reported {
    base: Arc<HashMap<String, String>>,
    own: Vec<(String, String)>,
}

impl Reported {
    /// The value shown for `name` (exact spelling).
    pub fn get(&self, name: &str) -> Option<&String> {
        match self.own.iter().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v),
            None => self.base.get(name),
        }
    }

    /// Records that the client was shown `value` for `name`.
    pub fn insert(&mut self, name: String, value: String) {
        let pos = self.own.iter().position(|(k, _)| *k == name);
        if self.base.get(&name) == Some(&value) {
            if let Some(i) = pos {
                self.own.swap_remove(i);
            }
            return;
        }
        match pos {
            Some(i) => self.own[i].1 = value,
            None => self.own.push((name, value)),
        }
    }

    /// Every name with the value shown, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        let base = self
            .base
            .iter()
            .filter(|(k, _)| !self.own.iter().any(|(o, _)| o == *k));
        base.chain(self.own.iter().map(|(k, v)| (k, v)))
    }

    /// Every name, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }
}

/// A client's session parameters.
#[derive(Debug, Default, Clone)]
pub struct ClientParams {
    /// Reported parameters with the values this client has been shown.
    pub expected: Reported,
    /// Unreported settings (`statement_timeout`, `search_path`, `options=-c` from startup,
    /// and session-level SET statements): lowercase name and the SQL that applies it.
    pub settings: Vec<(String, String)>,
    /// Cached [`ClientParams::fingerprint`]; `None` after any change.
    fp: Option<u64>,
}

impl ClientParams {
    /// Builds a client's parameters from the pool's welcome values and the client's
    /// startup parameters (already stripped of user, database and ignored names).
    pub fn from_startup(
        welcome: &Arc<HashMap<String, String>>,
        startup: &[(String, String)],
    ) -> Self {
        let mut p = ClientParams {
            expected: Reported {
                base: welcome.clone(),
                own: Vec::new(),
            },
            settings: Vec::new(),
            fp: None,
        };
        for (name, value) in startup {
            if name == "options" {
                for (k, v) in parse_options(value) {
                    p.set(welcome, &k, v);
                }
            } else {
                p.set(welcome, name, value.clone());
            }
        }
        p
    }

    fn set(&mut self, welcome: &HashMap<String, String>, name: &str, value: String) {
        if let Some(key) = welcome.keys().find(|k| k.eq_ignore_ascii_case(name)) {
            if !READ_ONLY.contains(&key.as_str()) {
                let shown =
                    super::canonical::value(key, &value, welcome.get(key).map(String::as_str));
                self.expected.insert(key.clone(), shown);
            }
            return;
        }
        let lower = name.to_ascii_lowercase();
        let sql = format!(
            "SELECT pg_catalog.set_config({}, {}, false);",
            quote_literal(&lower),
            quote_literal(&value)
        );
        self.put_setting(lower, sql);
    }

    fn put_setting(&mut self, name: String, sql: String) {
        self.fp = None;
        match self.settings.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = sql,
            None => self.settings.push((name, sql)),
        }
    }

    /// A digest of the settable reported values and the unreported settings, cached until
    /// the next change. A server that was brought in line with an equal digest needs no
    /// sync (the per-transaction fast path).
    pub fn fingerprint(&mut self) -> u64 {
        if let Some(fp) = self.fp {
            return fp;
        }
        use std::hash::{Hash, Hasher};
        let mut reported: Vec<(&String, &String)> = self
            .expected
            .iter()
            .filter(|(k, _)| !READ_ONLY.contains(&k.as_str()))
            .collect();
        reported.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        reported.hash(&mut h);
        self.settings.hash(&mut h);
        let fp = h.finish();
        self.fp = Some(fp);
        fp
    }

    /// Forgets the cached fingerprint (call after changing `expected` directly).
    pub fn invalidate(&mut self) {
        self.fp = None;
    }

    /// Applies a SET/RESET the server confirmed while this client was linked to `server`
    /// (so the server already has it). Reported parameters are skipped: ParameterStatus
    /// already keeps `expected` current.
    pub fn apply_change(&mut self, change: SettingChange, server: &mut ServerConnection) {
        self.fp = None;
        server.synced_fp = None;
        match change {
            SettingChange::Set { name, sql } => {
                if self.expected.keys().any(|k| k.eq_ignore_ascii_case(&name)) {
                    return;
                }
                server.applied.insert(name.clone(), sql.clone());
                self.put_setting(name, sql);
            }
            SettingChange::Reset(name) => {
                self.settings.retain(|(k, _)| *k != name);
                server.applied.remove(&name);
            }
            SettingChange::ResetAll => {
                self.settings.clear();
                server.applied.clear();
            }
        }
    }

    /// The statement that makes `server` match this client, or `None` when it already does.
    /// Reported values are compared with what the server last reported; unreported
    /// settings with what pgfunnel applied earlier (leftovers of other clients are RESET).
    pub fn sync_sql(&self, server: &ServerConnection) -> Option<String> {
        let mut sets: Vec<(&str, &str)> = Vec::new();
        for (k, v) in self.expected.iter() {
            if READ_ONLY.contains(&k.as_str()) {
                continue;
            }
            if server.params.get(k) != Some(v) {
                sets.push((k, v));
            }
        }
        let replays: Vec<&str> = self
            .settings
            .iter()
            .filter(|(k, sql)| server.applied.get(k) != Some(sql))
            .map(|(_, sql)| sql.as_str())
            .collect();
        let resets: Vec<&str> = server
            .applied
            .keys()
            .filter(|k| !self.settings.iter().any(|(n, _)| n == *k))
            .map(String::as_str)
            .collect();
        if sets.is_empty() && resets.is_empty() && replays.is_empty() {
            return None;
        }
        let mut sql = String::new();
        for k in resets {
            sql.push_str("RESET ");
            sql.push_str(&quote_ident(k));
            sql.push(';');
        }
        if !sets.is_empty() {
            sql.push_str("SELECT ");
            for (i, (k, v)) in sets.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("pg_catalog.set_config(");
                sql.push_str(&quote_literal(k));
                sql.push(',');
                sql.push_str(&quote_literal(v));
                sql.push_str(",false)");
            }
            sql.push(';');
        }
        for r in replays {
            sql.push_str(r);
        }
        Some(sql)
    }

    /// Records on `server` that the unreported settings now match this client.
    pub fn mark_applied(&self, server: &mut ServerConnection) {
        server.synced_fp = None;
        server.applied.clear();
        for (k, v) in &self.settings {
            server.applied.insert(k.clone(), v.clone());
        }
    }
}

/// Parses libpq's `options` value: `-c name=value`, `-cname=value` and `--name=value`
/// items separated by spaces; `\ ` escapes a space inside a value.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let item = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("--").map(str::to_owned)
        };
        if let Some((k, v)) = item.as_deref().and_then(|i| i.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

/// Quotes a SQL string literal (E'' form when backslashes are present, so the result
/// does not depend on standard_conforming_strings).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome() -> HashMap<String, String> {
        [
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("application_name", ""),
            ("server_version", "15"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn startup_parameters_split_into_reported_and_settings() {
        let startup = vec![
            ("datestyle".to_owned(), "German".to_owned()),
            ("application_name".to_owned(), "app".to_owned()),
            ("statement_timeout".to_owned(), "5s".to_owned()),
            (
                "options".to_owned(),
                "-c search_path=a,b --lock-timeout=1s -cwork_mem=8MB".to_owned(),
            ),
            ("server_version".to_owned(), "99".to_owned()),
        ];
        let p = ClientParams::from_startup(&Arc::new(welcome()), &startup);
        assert_eq!(
            p.expected.get("DateStyle").unwrap(),
            "German, DMY",
            "in the spelling Postgres reports"
        );
        assert_eq!(p.expected.get("application_name").unwrap(), "app");
        assert_eq!(
            p.expected.get("server_version").unwrap(),
            "15",
            "read-only values are not overridden"
        );
        assert_eq!(
            p.settings
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            vec![
                "statement_timeout",
                "search_path",
                "lock_timeout",
                "work_mem"
            ]
        );
        assert_eq!(
            p.settings[1].1,
            "SELECT pg_catalog.set_config('search_path', 'a,b', false);"
        );
    }

    #[test]
    fn reported_values_share_the_welcome_and_keep_only_differences() {
        let welcome = Arc::new(welcome());
        let mut p = ClientParams::from_startup(&welcome, &[]);
        assert!(p.expected.own.is_empty(), "a default client owns nothing");
        p.expected.insert("TimeZone".into(), "Europe/Paris".into());
        assert_eq!(p.expected.get("TimeZone").unwrap(), "Europe/Paris");
        assert_eq!(p.expected.iter().count(), welcome.len());
        p.expected.insert("TimeZone".into(), "UTC".into());
        assert!(p.expected.own.is_empty(), "back to the welcome value");
        p.expected.insert("new_param".into(), "x".into());
        assert_eq!(p.expected.iter().count(), welcome.len() + 1);
    }

    #[test]
    fn quoting_is_injection_safe() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn options_escapes_spaces() {
        assert_eq!(
            parse_options("-c app=a\\ b"),
            vec![("app".into(), "a b".into())]
        );
        assert!(parse_options("-x junk").is_empty());
    }
}
