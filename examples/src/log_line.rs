//! How the `mediator` binary turns an event into a line: byte for byte the
//! text of tracing-subscriber's default format (without colour) and of its
//! JSON format (fields flattened, current span, no target), at a fraction
//! of the cost.
//!
//! Every request writes one line, so what the stock formatters spend per
//! line shows in throughput: they format the date and time of day anew for
//! every line, build the JSON timestamp in a fresh `String`, and write each
//! number and plain string through `fmt` padding machinery. Here the text of
//! the current second is kept per thread and only the microseconds are
//! written per line; integers go through `itoa`, floats through the same
//! shortest form as before, and strings that need no escaping are copied as
//! they are. Anything unusual (escapes, errors, `Debug` values) takes the
//! stock path, so the lines stay the same.
//!
//! On a terminal the text format is coloured; colour is for people reading
//! along, not for throughput, so those lines are left to the stock
//! formatter.
//!
//! ```
//! use mediator_examples::log_line::TextLines;
//! let subscriber = tracing_subscriber::fmt()
//!     .with_ansi(false)
//!     .event_format(TextLines::default())
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || tracing::info!(status = 200u16, "request"));
//! ```

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Full, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Text lines as tracing-subscriber's default format writes them:
/// `2026-11-30T15:00:00.123456Z  INFO target: message key=value ...`.
#[derive(Debug, Default)]
pub struct TextLines {
    /// Writes the coloured lines, for a terminal.
    coloured: Format<Full>,
}

/// One JSON object per line as tracing-subscriber's JSON format writes it
/// when set up as [`stock_json`]. Give the layer
/// `.fmt_fields(JsonFields::new())` (what `.json()` sets), so that a span's
/// fields are kept as JSON.
#[derive(Debug, Default)]
pub struct JsonLines;

/// tracing-subscriber's own JSON format with the settings whose lines
/// [`JsonLines`] writes: fields at the top level, the current span but not
/// the list of spans, no target. The reference [`JsonLines`] is tested and
/// measured against.
pub fn stock_json() -> Format<Json> {
    tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_target(false)
        .with_current_span(true)
        .with_span_list(false)
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return self.coloured.format_event(ctx, writer, event);
        }
        let sanitize = writer.sanitizes_ansi_escapes();
        // The line is built in a buffer of its own and handed over in one
        // call: each write through `Writer` is a dynamic call, and a line
        // is some seventy of them.
        let mut line = String::with_capacity(LINE_CAPACITY);
        text_line(ctx, &mut line, event, sanitize)?;
        writer.write_str(&line)
    }
}

/// Room for a request line without growing.
const LINE_CAPACITY: usize = 512;

/// [`TextLines`]' line for `event`, without colour, into `line`.
fn text_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    line: &mut String,
    event: &Event<'_>,
    sanitize: bool,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    // Records from the `log` crate arrive as events of one bridge
    // callsite; their own target and level are in their fields.
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    write_timestamp(line)?;
    line.push(' ');
    line.push_str(padded_level(meta.level()));
    line.push(' ');
    if let Some(scope) = ctx.event_scope() {
        let mut seen = false;
        for span in scope.from_root() {
            line.push_str(span.metadata().name());
            seen = true;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    line.push('{');
                    line.push_str(fields);
                    line.push('}');
                }
            }
            line.push(':');
        }
        if seen {
            line.push(' ');
        }
    }
    line.push_str(meta.target());
    line.push_str(": ");
    let mut fields = TextFields {
        out: line,
        first: true,
        sanitize,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    line.push('\n');
    Ok(())
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(LINE_CAPACITY);
        json_line(ctx, &mut line, event)?;
        writer.write_str(&line)
    }
}

/// [`JsonLines`]' line for `event`, into `line`.
fn json_line<S>(
    ctx: &FmtContext<'_, S, JsonFields>,
    line: &mut String,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line)?;
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    let mut fields = JsonFieldsVisitor {
        out: line,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    let current = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());
    if let Some(span) = current {
        // The span's fields were kept as one JSON object with sorted
        // keys, which is what parsing and writing them again gives;
        // the span's name goes last.
        let extensions = span.extensions();
        let kept = extensions
            .get::<FormattedFields<JsonFields>>()
            .map(|fields| fields.as_str())
            .unwrap_or_default();
        let inner = kept
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_default();
        line.push_str(",\"span\":{");
        if !inner.is_empty() {
            line.push_str(inner);
            line.push(',');
        }
        line.push_str("\"name\":");
        json_string(line, span.metadata().name())?;
        line.push('}');
    }
    line.push_str("}\n");
    Ok(())
}

/// The level as the default format writes it: right-aligned in five.
fn padded_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The second last written on this thread and its text up to the
    /// fraction: `2026-11-30T15:00:00.`. Lines come thousands a second, so
    /// the date and time of day change for about one line in thousands.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Writes the current time as `2026-11-30T15:00:00.123456Z` (UTC,
/// microseconds), the stock formatters' form.
pub fn write_timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    // A clock before 1970 or past 9999 is not one this service runs on;
    // the stock formatters also write this when they cannot tell the time.
    const UNKNOWN: &str = "<unknown time>";
    let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return out.write_str(UNKNOWN);
    };
    let seconds = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        match second_prefix(seconds) {
            Some(text) => prefix = text,
            None => return out.write_str(UNKNOWN),
        }
        SECOND.set((seconds, prefix));
    }
    let mut text = [0u8; 27];
    text[..20].copy_from_slice(&prefix);
    let mut micros = since.subsec_micros();
    for digit in text[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    text[26] = b'Z';
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch, or `None` past
/// the years the format has four digits for.
fn second_prefix(seconds: u64) -> Option<[u8; 20]> {
    let time = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, u32::from(u8::from(time.month())));
    put(8, 2, u32::from(time.day()));
    put(11, 2, u32::from(time.hour()));
    put(14, 2, u32::from(time.minute()));
    put(17, 2, u32::from(time.second()));
    Some(text)
}

/// `record_u64`, `record_i64` and `record_bool` of a field visitor whose
/// `start(field)` writes what goes before a value and says whether to go
/// on: numbers and booleans read the same in text and in JSON.
macro_rules! plain_values {
    () => {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if self.start(field) {
                self.result = self.out.write_str(itoa::Buffer::new().format(value));
            }
        }

        fn record_i64(&mut self, field: &Field, value: i64) {
            if self.start(field) {
                self.result = self.out.write_str(itoa::Buffer::new().format(value));
            }
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            if self.start(field) {
                self.result = self.out.write_str(if value { "true" } else { "false" });
            }
        }
    };
}

/// Writes an event's fields as the default format's field formatter does
/// with colour off: the message bare, then `name=value` with `Debug`
/// values, one space apart; fields the `log` bridge adds are left out.
struct TextFields<'w> {
    out: &'w mut String,
    first: bool,
    /// Escape terminal control characters in the message.
    sanitize: bool,
    result: fmt::Result,
}

impl TextFields<'_> {
    /// Starts a `name=` field; false when the field is not written.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        self.pad();
        self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.out.push('=');
        true
    }

    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(' ');
        }
    }

    fn message(&mut self, message: &dyn fmt::Debug) {
        self.pad();
        if self.result.is_err() {
            return;
        }
        self.result = if self.sanitize {
            write!(Sanitizing(&mut *self.out), "{message:?}")
        } else {
            write!(self.out, "{message:?}")
        };
    }
}

impl Visit for TextFields<'_> {
    plain_values!();

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            let mut digits = zmij::Buffer::new();
            match as_debug_writes(&mut digits, value) {
                Some(text) => self.out.push_str(text),
                None => self.result = write!(self.out, "{value:?}"),
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.pad();
                self.result = if self.sanitize {
                    Sanitizing(&mut *self.out).write_str(value)
                } else {
                    self.out.write_str(value)
                };
            }
        } else if self.start(field) {
            self.result = debug_str(self.out, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // As the default format: the error, then its chain of sources as
        // a second field `<name>.sources=[..]`, each escaped like a message.
        let sanitize = self.sanitize;
        let shown = Escaped(format_args!("{value}"), sanitize);
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{shown} {}.sources={}",
                    field.name(),
                    Sources(source, sanitize)
                ),
            ),
            None => self.record_debug(field, &format_args!("{shown}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.message(value);
            }
        } else if self.start(field) {
            self.result = write!(self.out, "{value:?}");
        }
    }
}

/// `value` as `{value:?}` writes it, from zmij's digits where the two
/// agree, else `None`. Both write the fewest digits that read back as
/// `value`, but they part in two places: `Debug` turns to exponents below
/// 1e-4 and from 1e16 on, zmij at other points; and when two such digit
/// strings are equally near, which can only happen when `value`'s exact
/// decimal form has at most 18 digits, they round the tie differently. A
/// value with 23 or more bits after the binary point has at least 19, so
/// it cannot tie. Measured durations have all 52 bits in use; whole and
/// short binary fractions are left to `Debug`.
fn as_debug_writes(digits: &mut zmij::Buffer, value: f64) -> Option<&str> {
    if !(1e-4..1e15).contains(&value.abs()) {
        return None;
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    let fraction_bits = 52 - exponent - i64::from(mantissa.trailing_zeros());
    (fraction_bits >= 23).then(|| digits.format_finite(value))
}

/// A string as `Debug` writes it: quoted, with escapes.
fn debug_str(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.write_char('"')?;
        out.write_str(value)?;
        out.write_char('"')
    } else {
        write!(out, "{value:?}")
    }
}

/// Passes text on with the characters that could steer a terminal (ESC,
/// BEL, BS, FF, DEL and the C1 controls) written as escapes, as the
/// default format does for messages and errors.
struct Sanitizing<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Sanitizing<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // 0xc2 leads the UTF-8 form of every C1 control.
        if !text
            .bytes()
            .any(|b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2))
        {
            return self.0.write_str(text);
        }
        for ch in text.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// A `Display` value written through [`Sanitizing`] when asked to.
struct Escaped<T>(T, bool);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(Sanitizing(f), "{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An error and its sources as `[first, second, ..]`.
struct Sources<'e>(&'e (dyn std::error::Error + 'static), bool);

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&Escaped(format_args!("{error}"), self.1));
            next = error.source();
        }
        list.finish()
    }
}

/// Writes an event's fields as `,"name":value` pairs the way the JSON
/// format's flattened visitor does: strings and `Debug` values as JSON
/// strings, numbers and booleans as themselves.
struct JsonFieldsVisitor<'w> {
    out: &'w mut String,
    result: fmt::Result,
}

impl JsonFieldsVisitor<'_> {
    /// Starts a `,"name":` entry; false after an error.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_char(',')
                .and_then(|()| json_string(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'));
        }
        self.result.is_ok()
    }
}

impl Visit for JsonFieldsVisitor<'_> {
    plain_values!();

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field) {
            self.result = json_string(self.out, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            // serde_json's own form of the number, which it takes from
            // zmij, and `null` when it is not finite.
            if value.is_finite() {
                self.out.push_str(zmij::Buffer::new().format_finite(value));
            } else {
                self.out.push_str("null");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = self
                .out
                .write_char('"')
                .and_then(|()| write!(JsonEscaping(&mut *self.out), "{value:?}"))
                .and_then(|()| self.out.write_char('"'));
        }
    }
}

/// Writes `text` as a JSON string.
fn json_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaping(&mut *out).write_str(text)?;
    out.write_char('"')
}

/// Passes text on escaped for the inside of a JSON string, with the
/// escapes serde_json writes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`,
/// and `\u00XX` for the other control characters.
struct JsonEscaping<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for JsonEscaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        let mut start = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Cut only at ASCII bytes, so each piece is whole UTF-8.
            self.0.write_str(&text[start..at])?;
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.write_str("\\u00")?;
                self.0.write_char(char::from(HEX[usize::from(byte >> 4)]))?;
                self.0
                    .write_char(char::from(HEX[usize::from(byte & 0xf)]))?;
            } else {
                self.0.write_str(escape)?;
            }
            start = at + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A destination that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Kept {
        type Writer = Kept;

        fn make_writer(&'a self) -> Kept {
            self.clone()
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("UTF-8")
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \u{1b}[31m failure")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner \"cause\"")
        }
    }

    impl std::error::Error for Inner {}

    /// Events of every kind of value, strings that need escaping in text
    /// and in JSON, errors, spans and a record of the `log` crate.
    fn events() {
        let remote: std::net::SocketAddr = "127.0.0.1:50412".parse().expect("address");
        let sender: Option<&str> = None;
        tracing::info!(
            request_id = "order-17",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id = "00f067aa0ba902b7",
            method = %http::Method::POST,
            path = "/one/app/echo/x",
            remote = Some(tracing::field::display(remote)),
            sender = sender.map(tracing::field::display),
            target = Some(tracing::field::display("app/echo")),
            node = Some("app/echo"),
            status = 200u16,
            duration_ms = 0.412_5_f64,
            "request"
        );
        tracing::warn!(
            quoted = "say \"hi\" \\ \n\t\u{1}\u{8}\u{c}\r\u{1b}[0m \u{7f} é \u{85} \u{301}",
            negative = -3i64,
            flag = true,
            tiny = 1e-7,
            small = 0.000_05,
            whole = 3.0,
            huge = 1.5e300,
            nan = f64::NAN,
            infinite = f64::INFINITY,
            r#type = "raw",
            big = u64::MAX,
            wide = u128::MAX,
            debugged = ?vec!["a\"b", "c"],
            "escapes \u{1b}[31m red \u{85} \u{7}bell {}",
            42
        );
        tracing::info!(message = "a message \u{1b} given as a str", extra = 1);
        let error = Outer(Inner);
        tracing::error!(error = &error as &dyn std::error::Error, "failed");
        tracing::error!(error = &Inner as &dyn std::error::Error);
        let span = tracing::info_span!("request", request_id = "r-1", n = 3u8);
        span.in_scope(|| {
            tracing::info!(inner = 1, "inside");
            let nested = tracing::info_span!("nested", x = "y\"z", empty = tracing::field::Empty);
            nested.record("empty", "filled later");
            nested.in_scope(|| tracing::debug!("deeper"));
            let bare = tracing::info_span!("bare");
            bare.in_scope(|| tracing::trace!(k = "v"));
        });
        tracing_log::format_trace(
            &tracing_log::log::Record::builder()
                .args(format_args!("from the log crate"))
                .level(tracing_log::log::Level::Warn)
                .target("some::library")
                .module_path(Some("some::library"))
                .file(Some("library.rs"))
                .line(Some(3))
                .build(),
        )
        .expect("bridged");
    }

    /// What `subscriber` writes for [`events`].
    fn written(make: impl FnOnce(Kept) -> tracing::Dispatch) -> String {
        let kept = Kept::default();
        tracing::dispatcher::with_default(&make(kept.clone()), events);
        kept.text()
    }

    const STAMP: usize = "2026-11-30T15:00:00.123456Z".len();

    #[test]
    fn text_lines_are_the_default_formats_lines() {
        let stock = written(|kept| {
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(Level::TRACE)
                .with_writer(kept)
                .into()
        });
        let own = written(|kept| {
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(Level::TRACE)
                .with_writer(kept)
                .event_format(TextLines::default())
                .into()
        });
        assert_eq!(stock.lines().count(), 9, "{stock}");
        assert_eq!(own.lines().count(), stock.lines().count(), "{own}");
        for (own, stock) in own.lines().zip(stock.lines()) {
            assert_eq!(own[STAMP..], stock[STAMP..]);
            assert_timestamp(&own[..STAMP]);
        }
        assert!(own.contains("request{request_id=\"r-1\" n=3}:nested{x=\"y\\\"z\""));
        assert!(own.contains(" WARN some::library: from the log crate\n"));
    }

    #[test]
    fn json_lines_are_the_json_formats_lines_and_valid_json() {
        let stock = written(|kept| {
            tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .with_writer(kept)
                .fmt_fields(JsonFields::new())
                .event_format(stock_json())
                .into()
        });
        let own = written(|kept| {
            tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .with_writer(kept)
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .into()
        });
        assert_eq!(stock.lines().count(), 9, "{stock}");
        assert_eq!(own.lines().count(), stock.lines().count(), "{own}");
        let at = "{\"timestamp\":\"".len();
        for (own, stock) in own.lines().zip(stock.lines()) {
            assert_eq!(own[..at], stock[..at]);
            assert_eq!(own[at + STAMP..], stock[at + STAMP..]);
            assert_timestamp(&own[at..at + STAMP]);
            let value: serde_json::Value = serde_json::from_str(own).expect("JSON");
            assert!(value.is_object(), "{own}");
        }
        let first: serde_json::Value =
            serde_json::from_str(own.lines().next().expect("a line")).expect("JSON");
        assert_eq!(first["status"], 200);
        assert_eq!(first["duration_ms"], 0.4125);
        assert_eq!(first["method"], "POST");
        assert_eq!(first["remote"], "127.0.0.1:50412");
        assert!(first.get("sender").is_none(), "{first}");
        let second: serde_json::Value =
            serde_json::from_str(own.lines().nth(1).expect("a line")).expect("JSON");
        assert_eq!(
            second["quoted"],
            "say \"hi\" \\ \n\t\u{1}\u{8}\u{c}\r\u{1b}[0m \u{7f} é \u{85} \u{301}"
        );
        assert_eq!(second["nan"], serde_json::Value::Null);
    }

    /// `stamp` is a UTC time with microseconds within a minute of now.
    fn assert_timestamp(stamp: &str) {
        let parsed =
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{stamp}: {e}"));
        assert!((time::OffsetDateTime::now_utc() - parsed).abs() < time::Duration::minutes(1));
        assert_eq!(stamp.len(), STAMP, "{stamp}");
        assert!(stamp.ends_with('Z'), "{stamp}");
    }

    #[test]
    fn the_timestamp_reads_as_the_stock_timer_writes_it() {
        // Both within one second, which a few tries are sure to find.
        let mut tries = 0;
        loop {
            let mut stock = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut stock))
                .expect("stock time");
            let mut own = String::new();
            write_timestamp(&mut own).expect("own time");
            if own[..20] == stock[..20] {
                assert_eq!(own.len(), stock.len(), "{own} {stock}");
                assert!(own[20..] >= stock[20..], "{own} {stock}");
                break;
            }
            tries += 1;
            assert!(tries < 5, "{own} {stock}");
        }
    }

    #[test]
    fn floats_written_as_decimals_read_as_debug_writes_them() {
        const N: usize = 100_000;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values = vec![0.0, -0.0, 1e-4, -1e-4, 5.0, 0.1 + 0.2, 1e15 - 1.0, 999.999];
        // Halfway between two shortest candidates: Debug and zmij differ.
        for tie in [512.000_061_035_156_25, 19_035_519_972_062.812_5] {
            assert_eq!(as_debug_writes(&mut zmij::Buffer::new(), tie), None);
            values.push(tie);
        }
        for _ in 0..N {
            // Any mantissa, binary exponents from 2^-15 to 2^50.
            let bits = next();
            let exponent = 1023 - 15 + (bits >> 52) % 66;
            values.push(f64::from_bits(exponent << 52 | (bits & ((1 << 52) - 1))));
            // Durations in milliseconds as the request line computes them.
            let nanos = next() % 10_000_000_000;
            values.push(std::time::Duration::from_nanos(nanos).as_secs_f64() * 1e3);
        }
        let mut checked = 0;
        for value in values {
            if let Some(own) = as_debug_writes(&mut zmij::Buffer::new(), value) {
                assert_eq!(own, format!("{value:?}"));
                checked += 1;
            }
        }
        assert!(checked > N, "{checked}");
    }

    #[test]
    fn seconds_become_dates_across_years_months_and_leap_days() {
        let text =
            |seconds| second_prefix(seconds).map(|t| String::from_utf8_lossy(&t).into_owned());
        assert_eq!(text(0).as_deref(), Some("1970-01-01T00:00:00."));
        assert_eq!(text(951_782_400).as_deref(), Some("2000-02-29T00:00:00."));
        assert_eq!(text(1_798_761_599).as_deref(), Some("2026-12-31T23:59:59."));
        assert_eq!(
            text(253_402_300_799).as_deref(),
            Some("9999-12-31T23:59:59.")
        );
        assert_eq!(text(253_402_300_800), None);
    }
}
