use std::sync::{Arc, Mutex};

use super::*;

/// A log destination the test reads back.
#[derive(Clone, Default)]
pub(super) struct Captured(pub(super) Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::panic::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const EVIL_USER: &str = "bob\n2026-01-01T00:00:00.000000Z  INFO pgfunnel: admin logged in\x1b[31m";

/// Logs one event with hostile fields inside a hostile span, through `layer`.
fn log_hostile_event(json: bool, colour: bool) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber =
        tracing_subscriber::registry().with(layer(move || writer.clone(), json, colour));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("client", id = 7u64, peer = %"10.0.0.1\r\n", app = tracing::field::Empty);
        span.record("app", "psql\u{9b}2J");
        let _entered = span.enter();
        let db: &str = "db\ttab";
        let err = std::io::Error::other("server said:\nFATAL \x07");
        tracing::warn!(user = %EVIL_USER, db, error = %err, sql = ?"select\u{7f}", "login of {} failed", "x\ny");
    });
    let bytes = crate::panic::lock(&out.0).clone();
    String::from_utf8(bytes).expect("log output is UTF-8")
}

/// One line, ending in a newline, with no other control character.
fn assert_one_clean_line(text: &str) {
    let body = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("ends in a newline: {text:?}"));
    assert!(
        !body.chars().any(|c| c.is_control() || c == '\u{2028}'),
        "control characters in {body:?}"
    );
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    assert!(use_colour(true, None));
    assert!(use_colour(true, Some(OsStr::new(""))));
    assert!(!use_colour(true, Some(OsStr::new("1"))));
    assert!(!use_colour(false, None));
    assert!(!use_colour(false, Some(OsStr::new(""))));
}

#[test]
fn text_log_escapes_every_field_message_and_span_value_on_one_line() {
    let text = log_hostile_event(false, false);
    assert_one_clean_line(&text);
    assert!(
        text.contains(
            "user=bob\\n2026-01-01T00:00:00.000000Z  INFO pgfunnel: admin logged in\\x1b[31m"
        ),
        "{text}"
    );
    assert!(text.contains("login of x\\ny failed"), "{text}");
    assert!(text.contains("db=\"db\\ttab\""), "{text}");
    assert!(text.contains("error=server said:\\nFATAL \\x07"), "{text}");
    assert!(text.contains("peer=10.0.0.1\\r\\n"), "{text}");
    assert!(text.contains("app=\"psql\\u{9b}2J\""), "{text}");
    assert!(text.contains(" WARN "), "{text}");
}

#[test]
fn coloured_text_keeps_client_escape_codes_escaped() {
    let text = log_hostile_event(false, true);
    assert!(text.contains("\x1b["), "the level is coloured: {text:?}");
    assert!(text.contains("\\x1b[31m"), "{text:?}");
    assert!(!text.contains("in\x1b[31m"), "{text:?}");
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
}

#[test]
fn json_log_is_valid_json_with_escaped_values_on_one_line() {
    let text = log_hostile_event(true, true);
    assert_one_clean_line(&text);
    assert!(!text.contains('\x1b'), "no colour in JSON: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["target"], module_path!());
    let fields = &v["fields"];
    assert_eq!(fields["user"], super::escape(EVIL_USER).as_ref());
    assert_eq!(fields["message"], "login of x\\ny failed");
    assert_eq!(fields["db"], "db\\ttab");
    assert_eq!(fields["sql"], "\"select\\u{7f}\"");
    assert_eq!(v["span"]["name"], "client");
    assert_eq!(v["span"]["id"], 7);
    assert_eq!(v["span"]["peer"], "10.0.0.1\\r\\n");
    assert_eq!(v["span"]["app"], "psql\\u{009b}2J");
    assert_eq!(v["spans"][0]["name"], "client");
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
}
