//! Field and event formatters that escape every value (see [`super::escape`]): the text
//! format's `message name=value …` and the JSON format's objects, for events and spans.
//! They never write colour codes themselves, so span fields formatted once serve both a
//! coloured terminal and a plain logfile.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::EscapingWriter;

/// Text fields: the message, then `name=value` pairs, every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

/// Starts writing a field: the separator unless it is the first, then its name (without
/// `r#`); `None` to skip it (`log.*` metadata, or an earlier write failed).
fn begin_field(
    out: &mut impl Write,
    field: &Field,
    empty: &mut bool,
    result: &mut fmt::Result,
    separator: char,
) -> Option<&'static str> {
    let name = field.name();
    if result.is_err() || name.starts_with("log.") {
        return None;
    }
    if !std::mem::replace(empty, false) {
        *result = out.write_char(separator);
    }
    result
        .is_ok()
        .then(|| name.strip_prefix("r#").unwrap_or(name))
}

impl TextVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false to skip the field.
    fn start(&mut self, field: &Field) -> bool {
        let w = &mut self.writer;
        match begin_field(w, field, &mut self.empty, &mut self.result, ' ') {
            Some("message") => true,
            Some(name) => {
                self.result = write!(w, "{name}=");
                self.result.is_ok()
            }
            None => false,
        }
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{}", ErrorChain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = write!(EscapingWriter(&mut self.writer), "{value:?}");
        }
    }
}

/// An error and its sources, `error: source: source`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// JSON fields: `"name":value` pairs joined by commas (no braces), strings escaped first
/// as in the text format and then for JSON. Spans keep their fields in this form.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonVisitor {
            out: &mut writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor {
            empty: current.fields.is_empty(),
            out: &mut current.fields,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes a JSON string's contents: quotes, backslashes and (defensively) any control
/// character escaped for JSON.
struct JsonQuote<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonQuote<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (i, c) in s.char_indices() {
            if c != '"' && c != '\\' && c >= ' ' {
                continue;
            }
            self.0.write_str(&s[plain_from..i])?;
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                _ => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            plain_from = i + 1;
        }
        self.0.write_str(&s[plain_from..])
    }
}

/// Writes `value` (formatted) as an escaped JSON string.
fn json_string(out: &mut impl Write, value: impl fmt::Display) -> fmt::Result {
    out.write_char('"')?;
    write!(EscapingWriter(&mut JsonQuote(out)), "{value}")?;
    out.write_char('"')
}

struct JsonVisitor<'a, W: Write> {
    out: &'a mut W,
    empty: bool,
    result: fmt::Result,
}

impl<W: Write> JsonVisitor<'_, W> {
    /// Writes the separator and the key; false to skip the field.
    fn key(&mut self, field: &Field) -> bool {
        let Some(name) = begin_field(self.out, field, &mut self.empty, &mut self.result, ',')
        else {
            return false;
        };
        self.result = json_string(self.out, name).and_then(|()| self.out.write_char(':'));
        self.result.is_ok()
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }
}

impl<W: Write> Visit for JsonVisitor<'_, W> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.result = json_string(self.out, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.result = json_string(self.out, ErrorChain(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.result = json_string(self.out, format_args!("{value:?}"));
        }
    }
}

/// One JSON object per event, as tracing-subscriber's JSON format lays it out:
/// `timestamp`, `level`, `fields`, `target`, the innermost `span` and all `spans`.
#[derive(Debug, Default)]
pub struct JsonEvent {
    timer: SystemTime,
}

impl<S> FormatEvent<S, JsonFields> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = String::new();
        self.timer.format_time(&mut Writer::new(&mut time))?;
        writer.write_str("{\"timestamp\":")?;
        json_string(&mut writer, &time)?;
        write!(writer, ",\"level\":\"{}\",\"fields\":{{", meta.level())?;
        let mut visitor = JsonVisitor {
            out: &mut writer,
            empty: true,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str("},\"target\":")?;
        json_string(&mut writer, meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<_> = scope.from_root().collect();
            let span_json =
                |w: &mut Writer<'_>, span: &tracing_subscriber::registry::SpanRef<'_, S>| {
                    w.write_char('{')?;
                    if let Some(f) = span.extensions().get::<FormattedFields<JsonFields>>() {
                        if !f.fields.is_empty() {
                            write!(w, "{},", f.fields)?;
                        }
                    }
                    w.write_str("\"name\":")?;
                    json_string(w, span.name())?;
                    w.write_char('}')
                };
            if let Some(leaf) = spans.last() {
                writer.write_str(",\"span\":")?;
                span_json(&mut writer, leaf)?;
            }
            writer.write_str(",\"spans\":[")?;
            for (i, span) in spans.iter().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                span_json(&mut writer, span)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}
