//! Logging setup: `tracing` events to stderr and to `logfile`, as text or JSON lines.
//!
//! Every field value and message is escaped ([`escape`]): what a client or server sent
//! cannot start a log line of its own or put terminal escape sequences into the log.
//! Colour codes go only to a terminal ([`use_colour`]): never to `logfile`, a pipe, a
//! file, journald or JSON output, and not when `NO_COLOR` is set to a non-empty value.

use std::ffi::OsStr;
use std::io::IsTerminal;

use anyhow::Context;
use tracing::Subscriber;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{prelude::*, EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

pub mod close_reason;
pub mod escape;
mod fields;

pub use escape::{escape, EscapedBytes};
pub use fields::{JsonEvent, JsonFields, TextFields};

/// The environment variable holding a tracing filter that overrides `-v`/`verbose`.
pub const FILTER_ENV: &str = "PGFUNNEL_LOG";

/// Whether a stream gets colour codes: only when it is a terminal and `no_color` (the
/// value of `NO_COLOR`) is unset or empty.
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// [`use_colour`] for this process's stderr.
fn stderr_colour() -> bool {
    use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// A formatting layer writing to `writer`: JSON lines (never coloured) or text.
pub fn layer<S, W>(writer: W, json: bool, colour: bool) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    if json {
        fmt::layer()
            .fmt_fields(JsonFields)
            .event_format(JsonEvent::default())
            .with_ansi(false)
            .with_writer(writer)
            .boxed()
    } else {
        fmt::layer()
            .fmt_fields(TextFields)
            .with_ansi(colour)
            .with_writer(writer)
            .boxed()
    }
}

/// Sets up logging for serving: stderr unless `quiet`, plus `logfile` when set, at the
/// level of `-v` count plus `verbose` (info, debug, trace) unless `PGFUNNEL_LOG` is set.
pub fn init(config: &Config, verbose: u8, quiet: bool) -> anyhow::Result<()> {
    let level = match u32::from(verbose) + config.settings.verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // One global filter, and without PGFUNNEL_LOG a plain level: each client's span is
    // entered at every poll of its task, and per-layer filters (or EnvFilter, which takes
    // a lock) would run their bookkeeping there every time.
    let global: BoxedLayer<Registry> = match EnvFilter::try_from_env(FILTER_ENV) {
        Ok(f) if std::env::var_os(FILTER_ENV).is_some() => Box::new(f),
        _ => Box::new(level),
    };
    let json = config.settings.log_format == LogFormat::Json;
    let stderr_layer = (!quiet).then(|| layer(std::io::stderr, json, stderr_colour()));
    let file_layer = match &config.settings.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open logfile {}", path.display()))?;
            Some(layer(std::sync::Mutex::new(file), json, false))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(global)
        .with(stderr_layer)
        .with(file_layer)
        .init();
    Ok(())
}

/// Sets up logging for `migrate`: text to stderr at warn (`-v` info, `-vv` debug, `-vvv`
/// trace) unless `PGFUNNEL_LOG` is set.
pub fn init_migrate(verbose: u8) {
    let level = ["warn", "info", "debug", "trace"][usize::from(verbose.min(3))];
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(std::io::stderr, false, stderr_colour()))
        .init();
}

#[cfg(test)]
mod tests;
