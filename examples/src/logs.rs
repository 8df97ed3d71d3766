//! The `mediator` binary's log output: human-readable text or one JSON
//! object per line, filtered by `RUST_LOG` (default `info`), coloured only
//! on a terminal.
//!
//! ```
//! use mediator_examples::logs::LogFormat;
//! assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
//! assert!("xml".parse::<LogFormat>().is_err());
//! ```

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::EnvFilter;

use crate::log_line::{JsonLines, RequestLines, TextLines};
use crate::log_writer::LogWriterGuard;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level, for collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: expected text or json")),
        }
    }
}

/// Installs the global subscriber writing `format` to standard error,
/// filtered by `RUST_LOG` (`info` when unset or unreadable). Colour codes
/// are written only when standard error is a terminal, so files and pipes
/// get plain text. Lines are formatted by [`log_line`](crate::log_line)
/// and go through the bounded buffer of [`log_writer`](crate::log_writer),
/// so no request waits for standard error; keep the returned guard until
/// the end (dropping it writes what is buffered).
///
/// The request lines for that subscriber are then [`request_lines`].
pub fn init(format: LogFormat) -> LogWriterGuard {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = crate::log_writer::stderr();
    let coloured = std::io::stderr().is_terminal();
    let lines = RequestLines::new(writer.clone(), format).coloured(coloured);
    // A second `init` finds the subscriber installed and panics below,
    // as it always has; the first one's lines stay.
    let _ = REQUEST_LINES.set(lines);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            .with_ansi(coloured)
            .event_format(TextLines::default())
            .init(),
        // JsonLines leaves the event's module path out: the request line has a
        // `target` field of its own (the node or group addressed), and a
        // JSON object cannot hold two keys of one name.
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .init(),
    }
    guard
}

/// The request lines of the subscriber [`init`] installed, written
/// straight into its buffer; `None` before `init`, when the request line
/// is best left to `tracing` (the default of
/// [`MediatorService`](mediator_transport_http::MediatorService)).
pub fn request_lines() -> Option<RequestLines> {
    REQUEST_LINES.get().cloned()
}

static REQUEST_LINES: OnceLock<RequestLines> = OnceLock::new();

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// A line for standard output that a person or a script waits for
/// (`mediator listening on …`): the `message` alone as text, or, under
/// `--log-format json`, one JSON object like the log's lines, with the
/// `message` and each of `fields`.
///
/// ```
/// use mediator_examples::logs::{banner_line, LogFormat};
/// let line = banner_line(LogFormat::Json, "mediator listening on http://127.0.0.1:8080",
///     &[("url", "http://127.0.0.1:8080")]);
/// let value: serde_json::Value = serde_json::from_str(&line).unwrap();
/// assert_eq!(value["url"], "http://127.0.0.1:8080");
/// assert_eq!(value["level"], "INFO");
/// assert_eq!(banner_line(LogFormat::Text, "hi", &[("a", "b")]), "hi");
/// ```
pub fn banner_line(format: LogFormat, message: &str, fields: &[(&str, &str)]) -> String {
    match format {
        LogFormat::Text => message.to_owned(),
        LogFormat::Json => {
            let mut line = serde_json::Map::new();
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            line.insert("timestamp".into(), now.into());
            line.insert("level".into(), "INFO".into());
            line.insert("message".into(), message.into());
            for (name, value) in fields {
                line.insert((*name).into(), (*value).into());
            }
            serde_json::Value::Object(line).to_string()
        }
    }
}

/// Prints [`banner_line`] in the format [`init`] was given (text before it).
pub fn banner(message: &str, fields: &[(&str, &str)]) {
    let format = FORMAT.get().copied().unwrap_or_default();
    println!("{}", banner_line(format, message, fields));
}
