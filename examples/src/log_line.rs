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

use std::io::Write as _;

use mediator_transport_http::request_log::{
    self, RemoteText, RequestLog, RequestRecord, TracingRequestLog, REQUEST_TARGET,
};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Full, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::log_writer::BufferedWriter;
use crate::logs::LogFormat;

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
    text_head(line, meta.level())?;
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
    json_head(line, meta.level())?;
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

/// The request line written straight into the log buffer: the bytes
/// [`TextLines`] or [`JsonLines`] would write for [`TracingRequestLog`]'s
/// event, without the event. The event hands each field over through a
/// dynamic visitor and formats `Display` values through `fmt`; this writes
/// the record's typed fields as they are: 283 ns a text line where the
/// event takes 430 ns through [`TextLines`] (criterion bench `log_line`).
///
/// The record still goes through `tracing` when the line would read
/// otherwise: coloured for a terminal, or inside a span (whose name and
/// fields the line then carries). `RUST_LOG` filters it as it filters the
/// event, by its level and [`REQUEST_TARGET`].
///
/// ```
/// use mediator_examples::log_line::RequestLines;
/// use mediator_examples::logs::LogFormat;
///
/// let (writer, guard) = mediator_examples::log_writer::stderr();
/// let lines = RequestLines::new(writer, LogFormat::Json);
/// let mediator = mediator_core::Mediator::builder()
///     .request_log(lines)
///     # .registry(mediator_core::MemoryRegistry::new())
///     # .authenticator(mediator_core::Authenticator::hs256("a secret of at least 32 bytes!!!"))
///     .build()
///     .expect("mediator");
/// # drop(mediator);
/// # drop(guard);
/// ```
#[derive(Clone, Debug)]
pub struct RequestLines {
    writer: BufferedWriter,
    format: LogFormat,
    /// Off when the lines are coloured: those are left to the subscriber.
    direct: bool,
}

impl RequestLines {
    /// Request lines in `format`, appended to `writer`, the buffer the
    /// subscriber writes to (so that lines keep their order).
    pub fn new(writer: BufferedWriter, format: LogFormat) -> Self {
        RequestLines {
            writer,
            format,
            direct: true,
        }
    }

    /// Leaves every record to `tracing` when `coloured`: the subscriber's
    /// coloured lines are for people reading along.
    pub fn coloured(mut self, coloured: bool) -> Self {
        self.direct = !coloured || self.format == LogFormat::Json;
        self
    }
}

impl RequestLog for RequestLines {
    fn enabled(&self, level: Level) -> bool {
        request_log::tracing_enabled(level)
    }

    fn record(&self, record: &RequestRecord<'_>) {
        if !self.direct || !tracing::Span::current().is_none() {
            return TracingRequestLog.record(record);
        }
        let mut line = String::with_capacity(LINE_CAPACITY);
        if request_line(&mut line, self.format, record).is_ok() {
            // The buffer takes the line whole or counts it as dropped.
            let _ = self.writer.make_writer().write_all(line.as_bytes());
        }
    }
}

/// The line for `record` in `format`, into `line`.
fn request_line(line: &mut String, format: LogFormat, record: &RequestRecord<'_>) -> fmt::Result {
    match format {
        LogFormat::Text => {
            text_head(line, &record.level)?;
            line.push_str(REQUEST_TARGET);
            line.push_str(": ");
            let mut fields = TextFields {
                out: line,
                first: true,
                sanitize: true,
                result: Ok(()),
            };
            request_fields(&mut fields, record);
            fields.result?;
            line.push('\n');
        }
        LogFormat::Json => {
            json_head(line, &record.level)?;
            let mut fields = JsonFieldsVisitor {
                out: line,
                result: Ok(()),
            };
            request_fields(&mut fields, record);
            fields.result?;
            line.push_str("}\n");
        }
    }
    Ok(())
}

/// The record's fields in the order of [`TracingRequestLog`]'s event.
fn request_fields(fields: &mut impl LineFields, record: &RequestRecord<'_>) {
    fields.message(record.message);
    fields.text("request_id", record.request_id);
    if let Some(trace_id) = record.trace_id {
        fields.text("trace_id", trace_id);
    }
    if let Some(span_id) = record.span_id {
        fields.text("span_id", span_id);
    }
    fields.shown("method", &[record.method.as_str()]);
    fields.text("path", record.path);
    if let Some(remote) = record.remote {
        match RemoteText(remote).v4() {
            Some(text) => fields.shown("remote", &[text.as_str()]),
            None => fields.shown("remote", &[&remote.to_string()]),
        }
    }
    if let Some(sender) = record.sender {
        fields.shown("sender", &[sender]);
    }
    if let Some(target) = record.target {
        fields.shown("target", &[target.group, "/", target.rest]);
    }
    if let Some(node) = record.node {
        fields.text("node", node);
    }
    if let Some(transport) = record.transport {
        fields.text("transport", transport);
    }
    fields.unsigned("status", u64::from(record.status));
    fields.float("duration_ms", record.duration_ms());
}

/// What a text line starts with: `2026-11-30T15:00:00.123456Z  INFO `.
fn text_head(line: &mut String, level: &Level) -> fmt::Result {
    write_timestamp(line)?;
    line.push(' ');
    line.push_str(padded_level(level));
    line.push(' ');
    Ok(())
}

/// What a JSON line starts with: `{"timestamp":"…","level":"INFO"`.
fn json_head(line: &mut String, level: &Level) -> fmt::Result {
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line)?;
    line.push_str("\",\"level\":\"");
    line.push_str(level.as_str());
    line.push('"');
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

/// `record_u64`, `record_i64`, `record_bool` and `record_f64` of a field
/// visitor that is a [`LineFields`]: numbers and booleans read the same in
/// text and in JSON, apart from floats, which [`LineFields::float`] writes.
macro_rules! plain_values {
    () => {
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.unsigned(field.name(), value);
        }

        fn record_i64(&mut self, field: &Field, value: i64) {
            if self.start(field.name()) {
                self.out.push_str(itoa::Buffer::new().format(value));
            }
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            if self.start(field.name()) {
                self.out.push_str(if value { "true" } else { "false" });
            }
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            self.float(field.name(), value);
        }
    };
}

/// A line's fields, written by name: what the event visitors and the
/// request line's own path ([`RequestLines`]) both write, so that the two
/// give the same bytes.
trait LineFields {
    /// The message, before the other fields.
    fn message(&mut self, text: &str);
    /// A string value (quoted in text).
    fn text(&mut self, name: &str, value: &str);
    /// A `Display` value, given as the pieces of its text (bare in text).
    fn shown(&mut self, name: &str, pieces: &[&str]);
    /// An unsigned integer.
    fn unsigned(&mut self, name: &str, value: u64);
    /// A float.
    fn float(&mut self, name: &str, value: f64);
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
    fn start(&mut self, name: &str) -> bool {
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

    fn debug_message(&mut self, message: &dyn fmt::Debug) {
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

impl LineFields for TextFields<'_> {
    fn message(&mut self, text: &str) {
        if self.result.is_ok() {
            self.pad();
            self.result = if self.sanitize {
                Sanitizing(&mut *self.out).write_str(text)
            } else {
                self.out.write_str(text)
            };
        }
    }

    fn text(&mut self, name: &str, value: &str) {
        if self.start(name) {
            self.result = debug_str(self.out, value);
        }
    }

    fn shown(&mut self, name: &str, pieces: &[&str]) {
        if self.start(name) {
            for piece in pieces {
                self.out.push_str(piece);
            }
        }
    }

    fn unsigned(&mut self, name: &str, value: u64) {
        if self.start(name) {
            self.out.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn float(&mut self, name: &str, value: f64) {
        let value = shown_float(name, value);
        if self.start(name) {
            let mut digits = zmij::Buffer::new();
            match as_debug_writes(&mut digits, value) {
                Some(text) => self.out.push_str(text),
                None => self.result = write!(self.out, "{value:?}"),
            }
        }
    }
}

impl Visit for TextFields<'_> {
    plain_values!();

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(value);
        } else {
            self.text(field.name(), value);
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
            self.debug_message(value);
        } else if self.start(field.name()) {
            self.result = write!(self.out, "{value:?}");
        }
    }
}

/// A float field as a line shows it: milliseconds (a name ending in `_ms`)
/// to the microsecond, 3 decimals, as a person reads them — `0.42` rather
/// than the `0.42035500000000003` a measured duration's binary fraction
/// spells out; every other float as it is.
fn shown_float(name: &str, value: f64) -> f64 {
    if name.ends_with("_ms") && value.is_finite() {
        (value * 1e3).round() / 1e3
    } else {
        value
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
    if is_plain(value.as_bytes()) {
        out.write_char('"')?;
        out.write_str(value)?;
        out.write_char('"')
    } else {
        write!(out, "{value:?}")
    }
}

/// Whether `bytes` are printable ASCII without `"` and `\\`: what `Debug`
/// writes as it is. Ids and paths run to dozens of bytes a field, so
/// eight are looked at a time.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `word` is below `n` (exact for `n` up to 128).
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let any_equal = |word: u64, byte: u8| any_below(word ^ (ONES * u64::from(byte)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_ne_bytes(eight);
        if word & HIGHS != 0
            || any_below(word, 0x20)
            || any_equal(word, 0x7f)
            || any_equal(word, b'"')
            || any_equal(word, b'\\')
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
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
    fn start(&mut self, name: &str) -> bool {
        if self.result.is_ok() {
            self.out.push(',');
            self.result = json_string(self.out, name);
            self.out.push(':');
        }
        self.result.is_ok()
    }
}

impl LineFields for JsonFieldsVisitor<'_> {
    fn message(&mut self, text: &str) {
        self.text("message", text);
    }

    fn text(&mut self, name: &str, value: &str) {
        if self.start(name) {
            self.result = json_string(self.out, value);
        }
    }

    fn shown(&mut self, name: &str, pieces: &[&str]) {
        if self.start(name) {
            self.out.push('"');
            for piece in pieces {
                self.result = self
                    .result
                    .and_then(|()| JsonEscaping(&mut *self.out).write_str(piece));
            }
            self.out.push('"');
        }
    }

    fn unsigned(&mut self, name: &str, value: u64) {
        if self.start(name) {
            self.out.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn float(&mut self, name: &str, value: f64) {
        let value = shown_float(name, value);
        if self.start(name) {
            // serde_json's own form of the number, which it takes from
            // zmij, and `null` when it is not finite.
            if value.is_finite() {
                self.out.push_str(zmij::Buffer::new().format_finite(value));
            } else {
                self.out.push_str("null");
            }
        }
    }
}

impl Visit for JsonFieldsVisitor<'_> {
    plain_values!();

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field.name()) {
            self.out.push('"');
            self.result = write!(JsonEscaping(&mut *self.out), "{value:?}");
            self.out.push('"');
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
            duration_ms = 0.412_f64,
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
        assert_eq!(first["duration_ms"], 0.412);
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

    /// Requests as the request line tells them: every optional field
    /// present or not, IPv4 and IPv6 callers, strings that need escaping,
    /// each kind of target, and a routine renewal below `info`.
    fn records(method: &http::Method) -> Vec<RequestRecord<'_>> {
        use mediator_transport_http::request_log::TargetName;
        let full = RequestRecord::new(
            Level::INFO,
            "request",
            "order-17",
            method,
            "/one/app/echo/x",
            200,
            std::time::Duration::from_micros(841),
        )
        .with_trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        .with_remote("127.0.0.1:50412".parse().expect("address"))
        .with_sender("app/caller")
        .with_target(TargetName {
            group: "app",
            rest: "echo",
        })
        .with_node("app/echo")
        .with_transport("http");
        let bare = RequestRecord::new(
            Level::WARN,
            "request failed",
            "r-\"quoted\" \\ é",
            method,
            "/many/g\u{1}/\u{7f}x",
            502,
            std::time::Duration::from_nanos(123_456_789),
        )
        .with_remote("[fe80::1%2]:443".parse().expect("address"))
        .with_target(TargetName {
            group: "g",
            rest: "*",
        });
        let any = RequestRecord::new(
            Level::INFO,
            "request",
            "r-3",
            method,
            "/any/g/",
            404,
            std::time::Duration::from_secs(2),
        )
        .with_sender("admin")
        .with_target(TargetName {
            group: "g",
            rest: "?",
        })
        .with_transport("quic");
        let renewal = RequestRecord::new(
            Level::DEBUG,
            "request",
            "r-4",
            method,
            "/renew",
            200,
            std::time::Duration::from_micros(90),
        );
        vec![full, bare, any, renewal]
    }

    /// The lines of `records` through `log`, under the binary's
    /// subscriber in `format` at `info`.
    fn request_lines(format: crate::logs::LogFormat, direct: bool) -> String {
        let kept = Kept::default();
        let (writer, guard) = crate::log_writer::to(kept.clone());
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer(writer.clone());
        let dispatch: tracing::Dispatch = match format {
            crate::logs::LogFormat::Text => builder.event_format(TextLines::default()).into(),
            crate::logs::LogFormat::Json => builder
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .into(),
        };
        let log: Box<dyn RequestLog> = if direct {
            Box::new(RequestLines::new(writer, format))
        } else {
            Box::new(TracingRequestLog)
        };
        let method = http::Method::POST;
        tracing::dispatcher::with_default(&dispatch, || {
            for record in records(&method) {
                if log.enabled(record.level) {
                    log.record(&record);
                }
            }
        });
        drop(guard);
        kept.text()
    }

    #[test]
    fn request_lines_are_the_events_lines() {
        for (format, at) in [
            (crate::logs::LogFormat::Text, 0),
            (crate::logs::LogFormat::Json, "{\"timestamp\":\"".len()),
        ] {
            let event = request_lines(format, false);
            let direct = request_lines(format, true);
            // The renewal is below `info`.
            assert_eq!(event.lines().count(), 3, "{event}");
            assert_eq!(direct.lines().count(), 3, "{direct}");
            for (direct, event) in direct.lines().zip(event.lines()) {
                assert_eq!(direct[..at], event[..at]);
                assert_eq!(direct[at + STAMP..], event[at + STAMP..]);
                assert_timestamp(&direct[at..at + STAMP]);
            }
        }
        let text = request_lines(crate::logs::LogFormat::Text, true);
        assert!(
            text.contains(" INFO mediator_transport_http::server::routes: request request_id=\"order-17\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\" span_id=\"00f067aa0ba902b7\" method=POST path=\"/one/app/echo/x\" remote=127.0.0.1:50412 sender=app/caller target=app/echo node=\"app/echo\" transport=\"http\" status=200 duration_ms=0.841\n"),
            "{text}"
        );
        assert!(text.contains(" WARN mediator_transport_http::server::routes: request failed "));
        assert!(text.contains(" remote=[fe80::1%2]:443 target=g/* status=502 "));
    }

    #[test]
    fn request_lines_inside_a_span_carry_it() {
        let kept = Kept::default();
        let (writer, guard) = crate::log_writer::to(kept.clone());
        let dispatch: tracing::Dispatch = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer.clone())
            .event_format(TextLines::default())
            .into();
        let lines = RequestLines::new(writer, crate::logs::LogFormat::Text);
        let method = http::Method::GET;
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("outer", job = 7);
            span.in_scope(|| lines.record(&records(&method)[0]));
        });
        drop(guard);
        let text = kept.text();
        assert!(
            text.contains(" INFO outer{job=7}: mediator_transport_http::server::routes: request request_id=\"order-17\""),
            "{text}"
        );
    }

    #[test]
    fn milliseconds_are_written_to_the_microsecond() {
        for (format, expected) in [
            (crate::logs::LogFormat::Text, "duration_ms=0.42 "),
            (crate::logs::LogFormat::Json, "\"duration_ms\":0.42,"),
        ] {
            let kept = Kept::default();
            let (writer, guard) = crate::log_writer::to(kept.clone());
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(writer);
            let dispatch: tracing::Dispatch = match format {
                crate::logs::LogFormat::Text => builder.event_format(TextLines::default()).into(),
                crate::logs::LogFormat::Json => builder
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .into(),
            };
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::info!(
                    duration_ms = 0.420_355_000_000_000_03_f64,
                    ratio = 0.420_355_f64,
                    "done"
                );
            });
            drop(guard);
            let line = kept.text();
            assert!(line.contains(expected), "{line}");
            assert!(line.contains("0.420355"), "other floats stay whole: {line}");
        }
    }

    #[test]
    fn plain_strings_are_those_debug_writes_unchanged() {
        let mut samples: Vec<Vec<u8>> = vec![Vec::new(), b"order-17".to_vec()];
        for byte in 0..=255u8 {
            for at in 0..17 {
                let mut text = b"0123456789abcdef".to_vec();
                text.insert(at, byte);
                samples.push(text);
            }
        }
        for bytes in samples {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                assert!(!is_plain(&bytes));
                continue;
            };
            let unchanged = format!("{text:?}") == format!("\"{text}\"") && text.is_ascii();
            assert_eq!(is_plain(&bytes), unchanged, "{text:?}");
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
        for tie in [512.0 + 1.0 / 16_384.0, 19_035_519_972_062.0 + 0.8125] {
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
