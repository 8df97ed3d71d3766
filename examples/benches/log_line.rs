//! The cost of one request line, from the event to the log writer's
//! buffer: the stock tracing-subscriber formatters against the binary's
//! own, text and JSON, with the request line's eleven fields, behind the
//! binary's filter (`info`); and the same line from the typed record the
//! binary writes itself (`RequestLines`).
//!
//! ```sh
//! cargo bench -p mediator-examples --bench log_line
//! ```

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use mediator_examples::log_line::{stock_json, JsonLines, RequestLines, TextLines};
use mediator_examples::log_writer::{self, BufferedWriter};
use mediator_examples::logs::LogFormat;
use mediator_transport_http::request_log::TargetName;
use mediator_transport_http::{RequestLog, RequestRecord};
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::fmt::{FormatEvent, FormatFields};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Registry;

/// The request line as the HTTP server writes it.
fn request_line(remote: SocketAddr, duration_ms: f64) {
    let request_id = "8f3c2a1b9d4e4f60";
    let status = 200u16;
    let method = http::Method::POST;
    tracing::event!(
        tracing::Level::INFO,
        request_id,
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
        span_id = "00f067aa0ba902b7",
        %method,
        path = "/one/app/echo/x",
        remote = Some(tracing::field::display(remote)),
        sender = Some(tracing::field::display("app/caller")),
        target = Some(tracing::field::display("app/echo")),
        node = Some("app/echo"),
        status,
        duration_ms,
        "request"
    );
}

/// Sets up one subscriber around the log writer.
type Build = fn(BufferedWriter) -> tracing::Dispatch;

/// The binary's subscriber (filter, writer) with `fields` and `format`.
fn dispatch<N, E>(writer: BufferedWriter, fields: N, format: E) -> tracing::Dispatch
where
    N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    E: FormatEvent<Registry, N> + Send + Sync + 'static,
{
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(writer)
            .fmt_fields(fields)
            .event_format(format)
            .finish(),
    )
}

fn formatters(c: &mut Criterion) {
    let remote: SocketAddr = "127.0.0.1:50412".parse().expect("an address");
    let subscribers: [(&str, Build); 4] = [
        ("text, stock", |w| {
            dispatch(w, DefaultFields::new(), tracing_subscriber::fmt::format())
        }),
        ("text, own", |w| {
            dispatch(w, DefaultFields::new(), TextLines::default())
        }),
        ("json, stock", |w| {
            dispatch(w, JsonFields::new(), stock_json())
        }),
        ("json, own", |w| dispatch(w, JsonFields::new(), JsonLines)),
    ];
    let mut group = c.benchmark_group("request line");
    for (name, subscriber) in subscribers {
        let (writer, guard) = log_writer::to(std::io::sink());
        let dispatch = subscriber(writer);
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(|| request_line(remote, 0.4125)));
        });
        drop(guard);
    }
    let method = http::Method::POST;
    let record = RequestRecord::new(
        tracing::Level::INFO,
        "request",
        "8f3c2a1b9d4e4f60",
        &method,
        "/one/app/echo/x",
        200,
        std::time::Duration::from_nanos(412_517),
    )
    .with_trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    .with_remote(remote)
    .with_sender("app/caller")
    .with_target(TargetName {
        group: "app",
        rest: "echo",
    })
    .with_node("app/echo");
    for (name, format) in [
        ("text, record", LogFormat::Text),
        ("json, record", LogFormat::Json),
    ] {
        let (writer, guard) = log_writer::to(std::io::sink());
        let lines = RequestLines::new(writer.clone(), format);
        let dispatch = dispatch(writer, DefaultFields::new(), TextLines::default());
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| {
                b.iter(|| {
                    if lines.enabled(record.level) {
                        lines.record(&record);
                    }
                });
            });
        });
        drop(guard);
    }
    group.finish();
}

criterion_group!(benches, formatters);
criterion_main!(benches);
