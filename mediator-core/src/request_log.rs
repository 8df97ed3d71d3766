//! The request line: what a transport tells of every request it answers,
//! and where that goes; and the request counts a transport without
//! metrics of its own keeps in the core ([`TransportStats`]).
//!
//! The HTTP transport's `MediatorService` and the QUIC transport's
//! listener each write one record per request. By default each becomes
//! one `tracing` event ([`TracingRequestLog`]), so it is filtered,
//! formatted and written by whatever subscriber the process has. A
//! [`RequestLog`] of your own receives the same record typed, which is for
//! a process that writes its lines itself (the `mediator` binary does, for
//! throughput) or sends them somewhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use tracing::Level;

use crate::auth::Identity;
use crate::record::LATENCY_BUCKETS;

/// The target of the request line's `tracing` event, as its text line
/// shows it: `INFO mediator_transport_http::server::routes: request ...`.
/// Every transport's request line has this target, the one it had when
/// only HTTP wrote it, so filters (`RUST_LOG`) and readers of the lines
/// keep working.
pub const REQUEST_TARGET: &str = "mediator_transport_http::server::routes";

/// One answered request, as its log line tells it. Tokens are never in
/// it: the path is without its query, and the sender is its verified name.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestRecord<'a> {
    /// `WARN` for a 5xx answer, `DEBUG` for a routine renewal, else `INFO`.
    pub level: Level,
    /// `request`, or `request failed` for a 5xx answer.
    pub message: &'static str,
    /// The caller's `x-request-id` when well-formed, else a new one.
    pub request_id: &'a str,
    /// The W3C trace id, continued or started.
    pub trace_id: Option<&'a str>,
    /// The parent id passed on to nodes.
    pub span_id: Option<&'a str>,
    /// The request's method.
    pub method: &'a Method,
    /// The path, without its query.
    pub path: &'a str,
    /// The peer, when the transport knows it (an HTTP server says who it
    /// is with the transport's `RemoteAddr`; a QUIC connection always
    /// knows).
    pub remote: Option<SocketAddr>,
    /// The caller: its node (`group/name`), `admin`, `operator` or
    /// `unverified` ([`sender_name`]); none when no credential was looked
    /// at.
    pub sender: Option<&'a str>,
    /// The forwarding target, as the path names it.
    pub target: Option<TargetName<'a>>,
    /// The node that answered a unicast or any-of-group request.
    pub node: Option<&'a str>,
    /// The transport that answered (`http`, `quic`), when it said.
    pub transport: Option<&'a str>,
    /// The answer's status.
    pub status: u16,
    /// From the request's arrival to its answer.
    pub duration: Duration,
}

impl<'a> RequestRecord<'a> {
    /// A record without the fields that may be absent; add those with the
    /// `with_` methods.
    pub fn new(
        level: Level,
        message: &'static str,
        request_id: &'a str,
        method: &'a Method,
        path: &'a str,
        status: u16,
        duration: Duration,
    ) -> Self {
        RequestRecord {
            level,
            message,
            request_id,
            trace_id: None,
            span_id: None,
            method,
            path,
            remote: None,
            sender: None,
            target: None,
            node: None,
            transport: None,
            status,
            duration,
        }
    }

    /// With the transport that answered.
    pub fn with_transport(mut self, transport: &'a str) -> Self {
        self.transport = Some(transport);
        self
    }

    /// With the trace id and the parent id passed on.
    pub fn with_trace(mut self, trace_id: &'a str, span_id: &'a str) -> Self {
        self.trace_id = Some(trace_id);
        self.span_id = Some(span_id);
        self
    }

    /// With the peer's address.
    pub fn with_remote(mut self, remote: SocketAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    /// With the caller's name.
    pub fn with_sender(mut self, sender: &'a str) -> Self {
        self.sender = Some(sender);
        self
    }

    /// With the forwarding target.
    pub fn with_target(mut self, target: TargetName<'a>) -> Self {
        self.target = Some(target);
        self
    }

    /// With the node that answered.
    pub fn with_node(mut self, node: &'a str) -> Self {
        self.node = Some(node);
        self
    }

    /// The duration in milliseconds, as the line writes it.
    pub fn duration_ms(&self) -> f64 {
        self.duration.as_secs_f64() * 1e3
    }
}

/// A forwarding target as the request line writes it: `group/name`,
/// `group/` (the unnamed node), `group/*` (all) or `group/?` (any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetName<'a> {
    /// The group, as the path spells it.
    pub group: &'a str,
    /// What follows the slash: the name, empty, `*` or `?`.
    pub rest: &'a str,
}

impl fmt::Display for TargetName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.group)?;
        f.write_str("/")?;
        f.write_str(self.rest)
    }
}

/// Where request records go.
///
/// The HTTP transport's `MediatorService::request_log` and the QUIC
/// transport's `QuicListener::request_log` take one; both hand it a record
/// per request answered.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// use mediator_core::request_log::{RequestLog, RequestRecord};
/// use tracing::Level;
///
/// /// Keeps the status and path of every request instead of writing lines.
/// #[derive(Clone, Default)]
/// struct Kept(Arc<Mutex<Vec<(u16, String)>>>);
///
/// impl RequestLog for Kept {
///     fn record(&self, record: &RequestRecord<'_>) {
///         let entry = (record.status, record.path.to_owned());
///         self.0.lock().expect("not poisoned").push(entry);
///     }
/// }
///
/// let kept = Kept::default();
/// let method = http::Method::POST;
/// let record = RequestRecord::new(Level::INFO, "request", "r-1", &method, "/greet", 200, Duration::from_millis(3))
///     .with_sender("billing/worker-1");
/// kept.record(&record);
/// assert_eq!(kept.0.lock().expect("not poisoned")[0], (200, "/greet".to_owned()));
/// ```
pub trait RequestLog: Send + Sync + 'static {
    /// Whether a record at `level` is wanted; when not, none is built.
    /// By default every one is.
    fn enabled(&self, level: Level) -> bool {
        let _ = level;
        true
    }

    /// Called once per answered request whose level is
    /// [`enabled`](Self::enabled), after its answer is built.
    fn record(&self, record: &RequestRecord<'_>);
}

/// Whether the process's `tracing` subscriber takes a request line at
/// `level`: its filter (`RUST_LOG`) asked about [`REQUEST_TARGET`].
pub fn tracing_enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: REQUEST_TARGET, Level::ERROR),
        Level::WARN => tracing::enabled!(target: REQUEST_TARGET, Level::WARN),
        Level::INFO => tracing::enabled!(target: REQUEST_TARGET, Level::INFO),
        Level::DEBUG => tracing::enabled!(target: REQUEST_TARGET, Level::DEBUG),
        Level::TRACE => tracing::enabled!(target: REQUEST_TARGET, Level::TRACE),
    }
}

/// The default [`RequestLog`]: one `tracing` event per request, with target
/// [`REQUEST_TARGET`], at the record's level, with the record's fields
/// (`request_id`, `trace_id`, `span_id`, `method`, `path`, `remote`,
/// `sender`, `target`, `node`, `transport`, `status`, `duration_ms`; absent ones left
/// out).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingRequestLog;

impl RequestLog for TracingRequestLog {
    fn enabled(&self, level: Level) -> bool {
        tracing_enabled(level)
    }

    fn record(&self, record: &RequestRecord<'_>) {
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "mediator_transport_http::server::routes",
                    $level,
                    request_id = record.request_id,
                    trace_id = record.trace_id,
                    span_id = record.span_id,
                    method = %record.method,
                    path = record.path,
                    remote = record.remote.map(|a| tracing::field::display(RemoteText(a))),
                    sender = record.sender.map(tracing::field::display),
                    target = record.target.map(tracing::field::display),
                    node = record.node,
                    transport = record.transport,
                    status = record.status,
                    duration_ms = record.duration_ms(),
                    "{}",
                    record.message
                )
            };
        }
        match record.level {
            Level::ERROR => line!(Level::ERROR),
            Level::WARN => line!(Level::WARN),
            Level::INFO => line!(Level::INFO),
            Level::DEBUG => line!(Level::DEBUG),
            Level::TRACE => line!(Level::TRACE),
        }
    }
}

/// A caller's address as `SocketAddr`'s `Display` writes it. An IPv4
/// address is put together in a buffer and handed over in one write:
/// `Display` for it goes through `fmt` once per octet and once for the
/// port.
pub struct RemoteText(pub SocketAddr);

impl RemoteText {
    /// An IPv4 address and port as text without `fmt`; `None` for IPv6.
    pub fn v4(&self) -> Option<AddrText> {
        let SocketAddr::V4(v4) = self.0 else {
            return None;
        };
        let mut text = AddrText::default();
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                text.byte(b'.');
            }
            text.number(u16::from(octet));
        }
        text.byte(b':');
        text.number(v4.port());
        Some(text)
    }
}

impl fmt::Display for RemoteText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.v4() {
            Some(text) => f.write_str(text.as_str()),
            None => self.0.fmt(f),
        }
    }
}

/// An IPv4 address and port as text: `255.255.255.255:65535` is the
/// longest.
#[derive(Debug, Default)]
pub struct AddrText {
    bytes: [u8; 21],
    len: usize,
}

impl AddrText {
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn number(&mut self, value: u16) {
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &digit in &digits[at..] {
            self.byte(digit);
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots and a colon are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// A caller as the request line names it: its node (`group/name`),
/// `admin` (an operator's token with the admin role), `operator` (an
/// operator's token without it) or `unverified` (the original's tokens
/// without `sub`, whose holder is unproven).
///
/// ```
/// use mediator_core::request_log::sender_name;
/// use mediator_core::Identity;
/// assert_eq!(sender_name(&Identity::internal()), "admin");
/// ```
pub fn sender_name(identity: &Identity) -> &str {
    match (&identity.key, identity.verified, identity.admin) {
        (Some(key), true, _) => key.as_str(),
        (None, true, true) => "admin",
        (None, true, false) => "operator",
        (_, false, _) => "unverified",
    }
}

/// The calls every transport answered, counted by the core's request
/// lifecycle ([`Mediator::handle`](crate::Mediator::handle)), for whatever
/// renders the mediator's metrics (the HTTP transport's `/metrics`): by
/// transport, route and status, with their durations; and how many nodes
/// are attached to each transport.
///
/// The HTTP service counts its routes other than calls (registrations,
/// probes, the operator's) itself; every call, on every transport, is
/// counted here, so one scrape shows them all. Memory is
/// bounded: transports and routes are names fixed in code, and statuses
/// are counted only from 100 to 999.
///
/// ```
/// use std::time::Duration;
/// use mediator_core::request_log::TransportStats;
///
/// let stats = TransportStats::default();
/// stats.request("quic", "one", 200, Duration::from_millis(3));
/// stats.request("quic", "one", 504, Duration::from_secs(11));
/// stats.set_attached("quic", 2);
/// let counts = stats.requests();
/// assert_eq!((counts[0].transport, counts[0].route), ("quic", "one"));
/// assert_eq!(counts[0].statuses, [(200, 1), (504, 1)]);
/// assert_eq!(counts[0].cumulative_buckets.last(), Some(&(None, 2)));
/// assert_eq!(stats.attached(), [("quic", 2)]);
/// ```
#[derive(Debug, Default)]
pub struct TransportStats {
    /// One entry per transport and route, in the order first seen: a
    /// handful, searched in place (names fixed in code usually compare by
    /// address), where a map would compare strings on every request.
    requests: Mutex<Vec<RouteCounts>>,
    attached: Mutex<BTreeMap<&'static str, usize>>,
    /// Calls a transport's pass-through answered itself.
    passed: std::sync::atomic::AtomicU64,
    /// Connections a pass-through handed to its transport's full path.
    handed_over: std::sync::atomic::AtomicU64,
}

/// The statuses counted: 100 to 999.
const STATUSES: usize = 900;

#[derive(Debug)]
struct RouteCounts {
    transport: &'static str,
    route: &'static str,
    /// By status, from 100.
    statuses: Box<[u64; STATUSES]>,
    /// Per bucket, not cumulative; the last slot is past the last bound.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: Duration,
}

impl RouteCounts {
    fn new(transport: &'static str, route: &'static str) -> RouteCounts {
        RouteCounts {
            transport,
            route,
            statuses: Box::new([0; STATUSES]),
            buckets: [0; LATENCY_BUCKETS.len() + 1],
            sum: Duration::ZERO,
        }
    }

    fn is(&self, transport: &str, route: &str) -> bool {
        let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
        same(self.transport, transport) && same(self.route, route)
    }
}

/// The entry of `transport` and `route` in `requests`, made when missing.
fn entry<'a>(
    requests: &'a mut Vec<RouteCounts>,
    transport: &'static str,
    route: &'static str,
) -> &'a mut RouteCounts {
    let at = match requests.iter().position(|c| c.is(transport, route)) {
        Some(at) => at,
        None => {
            requests.push(RouteCounts::new(transport, route));
            requests.len() - 1
        }
    };
    &mut requests[at]
}

/// The requests one transport answered on one route, as
/// [`TransportStats::requests`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// The transport (`quic`).
    pub transport: &'static str,
    /// The route, as the HTTP metrics name theirs (`one`, `any`, `many`,
    /// `other`).
    pub route: &'static str,
    /// How many requests were answered with each status, by status.
    pub statuses: Vec<(u16, u64)>,
    /// Requests that took at most each bound of
    /// [`LATENCY_BUCKETS`], cumulative; the last entry (`None`) counts
    /// every request.
    pub cumulative_buckets: Vec<(Option<Duration>, u64)>,
    /// The sum of every request's duration.
    pub duration_sum: Duration,
}

impl TransportStats {
    /// Counts one call a pass-through answered itself
    /// ([`Passing::finish`](crate::inbound::Passing::finish) does).
    pub fn passed(&self) {
        self.passed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one connection a pass-through handed to its transport's
    /// full path.
    pub fn handed_over(&self) {
        self.handed_over
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Calls answered by a pass-through, and connections handed from one
    /// to the full path, so far.
    pub fn pass_through(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.passed.load(Relaxed), self.handed_over.load(Relaxed))
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        transport: &'static str,
        route: &'static str,
        status: u16,
        duration: Duration,
    ) {
        // Entries are updated whole under the lock; a panic elsewhere
        // cannot leave one half-written.
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < duration);
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = entry(&mut requests, transport, route);
        if let Some(slot) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| counts.statuses.get_mut(i))
        {
            *slot += 1;
        }
        counts.buckets[bucket] += 1;
        counts.sum = counts.sum.saturating_add(duration);
    }

    /// Makes `routes` of `transport` show, at zero, before their first
    /// request: a scrape then lists every route a transport answers.
    pub fn declare(&self, transport: &'static str, routes: &[&'static str]) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        for &route in routes {
            entry(&mut requests, transport, route);
        }
    }

    /// The counts so far, by transport then route.
    pub fn requests(&self) -> Vec<RequestCounts> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<&RouteCounts> = requests.iter().collect();
        sorted.sort_by_key(|c| (c.transport, c.route));
        sorted
            .into_iter()
            .map(|counts| {
                let mut seen = 0;
                RequestCounts {
                    transport: counts.transport,
                    route: counts.route,
                    statuses: (100u16..)
                        .zip(counts.statuses.iter())
                        .filter(|(_, &n)| n > 0)
                        .map(|(s, &n)| (s, n))
                        .collect(),
                    cumulative_buckets: counts
                        .buckets
                        .iter()
                        .enumerate()
                        .map(|(i, count)| {
                            seen += count;
                            (LATENCY_BUCKETS.get(i).copied(), seen)
                        })
                        .collect(),
                    duration_sum: counts.sum,
                }
            })
            .collect()
    }

    /// Says how many nodes are attached to `transport` now.
    pub fn set_attached(&self, transport: &'static str, nodes: usize) {
        self.attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(transport, nodes);
    }

    /// The nodes attached now, by transport, for the transports that said.
    pub fn attached(&self) -> Vec<(&'static str, usize)> {
        self.attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&t, &n)| (t, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::RemoteText;

    #[test]
    fn remote_addresses_read_as_their_display() {
        let mut addresses: Vec<SocketAddr> = [
            "0.0.0.0:0",
            "127.0.0.1:50412",
            "255.255.255.255:65535",
            "10.0.9.100:8",
            "[::1]:8080",
            "[fe80::1%2]:443",
        ]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect();
        for n in 0..2_000u32 {
            let bits = n.wrapping_mul(2_654_435_761);
            addresses.push(SocketAddr::from((bits.to_be_bytes(), (bits >> 7) as u16)));
        }
        for address in addresses {
            assert_eq!(RemoteText(address).to_string(), address.to_string());
        }
    }
}
