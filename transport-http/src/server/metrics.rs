//! The Prometheus exposition served at `GET /metrics`, encoded by
//! `prometheus-client`: the service's own request counters beside the
//! requests other transports counted in the core, the mediator's delivery,
//! store, eviction and in-flight figures read from the core at each
//! scrape, the process's own resources, and the build.
//!
//! Recording happens on every request, so it takes a counter cached per
//! route and status (created once, on the first such request) and one
//! histogram observation: no label set is built per request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mediator_core::record::GroupDeliveries;
use mediator_core::store_stats::{StoreOp, STORE_LATENCY_BUCKETS};
use mediator_core::Mediator;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes `100..=999` (all `http::StatusCode` allows), one slot each.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 900;

/// The `Content-Type` of the exposition (the Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Who may read `GET /metrics`, and whether its delivery series, which are
/// labelled by group name, are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsAccess {
    /// Anyone, every series (the default, as scrapers rarely hold a token).
    #[default]
    Open,
    /// Anyone, but the per-group delivery series only with an admin's
    /// credentials, so group names do not leak to the world.
    OpenWithoutGroups,
    /// Only with an admin's credentials (401 without, 403 for a node).
    Admin,
}

impl std::str::FromStr for MetricsAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(MetricsAccess::Open),
            "open-without-groups" => Ok(MetricsAccess::OpenWithoutGroups),
            "admin" => Ok(MetricsAccess::Admin),
            other => Err(format!(
                "{other:?}: expected open, open-without-groups or admin"
            )),
        }
    }
}

/// The route a request is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    One,
    Any,
    Many,
    Register,
    Renew,
    Remove,
    /// `/admin/*` and the console.
    Admin,
    Token,
    /// Probes, `/metrics` and unknown paths.
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 9] = [
        RouteLabel::One,
        RouteLabel::Any,
        RouteLabel::Many,
        RouteLabel::Register,
        RouteLabel::Renew,
        RouteLabel::Remove,
        RouteLabel::Admin,
        RouteLabel::Token,
        RouteLabel::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RouteLabel::One => "one",
            RouteLabel::Any => "any",
            RouteLabel::Many => "many",
            RouteLabel::Register => "register",
            RouteLabel::Renew => "renew",
            RouteLabel::Remove => "remove",
            RouteLabel::Admin => "admin",
            RouteLabel::Token => "token",
            RouteLabel::Other => "other",
        }
    }

    /// Whether the route is a call, which the core counts
    /// ([`TransportStats`](mediator_core::request_log::TransportStats)).
    pub(crate) fn is_call(self) -> bool {
        matches!(self, RouteLabel::One | RouteLabel::Any | RouteLabel::Many)
    }
}

/// The transport label of the requests this service answers.
const HTTP: &str = "http";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    transport: &'static str,
    route: &'static str,
}

/// The request metrics of one [`MediatorService`](super::MediatorService)
/// and its clones, and the registry the process figures are encoded from.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Arc<HttpRequests>,
}

/// The requests this service answered.
#[derive(Debug)]
struct HttpRequests {
    /// `mediator_requests_total`, by route then status, made on first use.
    by_status: Box<[OnceLock<Counter>]>,
    /// `mediator_request_duration_seconds`, by route, made at start so
    /// that every route shows (at zero) from the first scrape.
    durations: [Histogram; RouteLabel::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "mediator_build_info",
            "The running build: always 1, its version as a label",
            build,
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            requests: Arc::new(HttpRequests {
                by_status: (0..RouteLabel::ALL.len() * STATUSES)
                    .map(|_| OnceLock::new())
                    .collect(),
                durations: RouteLabel::ALL.map(|_| Histogram::new(BUCKETS)),
            }),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn request(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        if let Some(slot) = status
            .checked_sub(FIRST_STATUS)
            .map(usize::from)
            .filter(|&i| i < STATUSES)
            .and_then(|i| self.requests.by_status.get(route as usize * STATUSES + i))
        {
            slot.get_or_init(Counter::default).inc();
        }
        self.requests.durations[route as usize].observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4) of the request
    /// metrics (this service's, `transport="http"`, and those other
    /// transports counted in the core), the process and build figures, and
    /// `mediator`'s own: the delivery series (only with `groups`, as they
    /// are labelled by group name), the store calls, evictions, deliveries
    /// in flight, the routing table's size and the attached nodes.
    pub(crate) fn render(&self, mediator: &Mediator, groups: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(RequestCollector {
            http: Arc::clone(&self.requests),
            mediator: mediator.clone(),
        }));
        scrape.register_collector(Box::new(MediatorCollector {
            mediator: mediator.clone(),
            groups,
        }));
        // Writing into a `String` cannot fail, nor can any collector here.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &scrape);
        out
    }
}

/// The request families: this service's requests and those other
/// transports (QUIC) counted in the core, in one family each, told apart
/// by their `transport` label.
struct RequestCollector {
    http: Arc<HttpRequests>,
    mediator: Mediator,
}

impl std::fmt::Debug for RequestCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCollector").finish_non_exhaustive()
    }
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let others = self.mediator.transport_stats().requests();
        let counted = self.http.by_status.iter().any(|slot| slot.get().is_some())
            || others.iter().any(|counts| !counts.statuses.is_empty());
        // Requests show from the first one answered: a family without a
        // series would only say that none has been.
        if counted {
            let mut family = encoder.encode_descriptor(
                "mediator_requests",
                "Requests answered, by transport, route and status.",
                None,
                MetricType::Counter,
            )?;
            for (i, slot) in self.http.by_status.iter().enumerate() {
                let Some(counter) = slot.get() else { continue };
                let labels = RequestLabels {
                    transport: HTTP,
                    route: RouteLabel::ALL[i / STATUSES].as_str(),
                    // Below 1000: the slots hold statuses 100 to 999.
                    status: FIRST_STATUS + (i % STATUSES) as u16,
                };
                counter.encode(family.encode_family(&labels)?)?;
            }
            for counts in &others {
                for &(status, count) in &counts.statuses {
                    let labels = RequestLabels {
                        transport: counts.transport,
                        route: counts.route,
                        status,
                    };
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "mediator_request_duration_seconds",
            "Time from a request's arrival to its answer, by transport and route.",
            None,
            MetricType::Histogram,
        )?;
        for (route, histogram) in RouteLabel::ALL.iter().zip(&self.http.durations) {
            if route.is_call() {
                // Counted by the core, with the other transports' calls.
                continue;
            }
            let labels = RouteLabels {
                transport: HTTP,
                route: route.as_str(),
            };
            histogram.encode(family.encode_family(&labels)?)?;
        }
        for counts in &others {
            let labels = RouteLabels {
                transport: counts.transport,
                route: counts.route,
            };
            encode_histogram(
                family.encode_family(&labels)?,
                counts.cumulative_buckets.iter().map(|&(bound, _)| bound),
                counts.cumulative_buckets.iter().map(|&(_, seen)| seen),
                counts.duration_sum,
            )?;
        }
        Ok(())
    }
}

/// What the mediator knows, read at each scrape.
struct MediatorCollector {
    mediator: Mediator,
    groups: bool,
}

impl std::fmt::Debug for MediatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediatorCollector")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Collector for MediatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let deliveries = if self.groups {
            self.mediator.delivery_stats().snapshot()
        } else {
            Default::default()
        };
        write_deliveries(&mut encoder, &deliveries)?;
        write_store(&mut encoder, &self.mediator)?;

        let evictions = ConstCounter::new(self.mediator.evictions());
        evictions.encode(encoder.encode_descriptor(
            "mediator_evictions",
            "Nodes evicted because their lease ran out.",
            None,
            MetricType::Counter,
        )?)?;
        let in_flight = ConstGauge::new(self.mediator.deliveries_in_flight() as u64);
        in_flight.encode(encoder.encode_descriptor(
            "mediator_deliveries_in_flight",
            "Deliveries to nodes under way now (a broadcast counts one per node asked).",
            None,
            MetricType::Gauge,
        )?)?;
        let nodes = ConstGauge::new(self.mediator.routes().len() as u64);
        nodes.encode(encoder.encode_descriptor(
            "mediator_nodes",
            "Registrations in this mediator's routing table.",
            None,
            MetricType::Gauge,
        )?)?;
        let (passed, handed_over) = self.mediator.transport_stats().pass_through();
        let mut family = encoder.encode_descriptor(
            "mediator_pass_through",
            "Calls the HTTP listener's pass-through answered itself (answered), and connections it handed to the full path (handed_over).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in [("answered", passed), ("handed_over", handed_over)] {
            ConstCounter::new(count).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "mediator_attached_nodes",
            "Nodes attached to this mediator instance over a live connection, by transport.",
            None,
            MetricType::Gauge,
        )?;
        for (transport, count) in self.mediator.transport_stats().attached() {
            ConstGauge::new(count as u64)
                .encode(family.encode_family(&[("transport", transport)])?)?;
        }
        Ok(())
    }
}

/// A histogram from cumulative counts per bound (the last one `+Inf`).
fn encode_histogram(
    mut encoder: MetricEncoder<'_>,
    bounds: impl Iterator<Item = Option<Duration>>,
    cumulative: impl Iterator<Item = u64>,
    sum: Duration,
) -> std::fmt::Result {
    let mut buckets = Vec::with_capacity(16);
    let mut before = 0;
    for (bound, seen) in bounds.zip(cumulative) {
        let le = bound.map_or(f64::INFINITY, |b| b.as_secs_f64());
        buckets.push((le, seen - before));
        before = seen;
    }
    encoder.encode_histogram::<NoLabelSet>(sum.as_secs_f64(), before, &buckets, None)
}

/// The delivery families: outcomes and latency per target group, as the
/// core recorded them (one delivery per node asked, retries included).
fn write_deliveries(
    encoder: &mut DescriptorEncoder<'_>,
    deliveries: &std::collections::BTreeMap<String, GroupDeliveries>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        "mediator_deliveries",
        "Deliveries to nodes, by target group and outcome (one per node asked).",
        None,
        MetricType::Counter,
    )?;
    for (group, counts) in deliveries {
        for (outcome, count) in counts.outcomes() {
            let labels = [("group", group.as_str()), ("outcome", outcome)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "mediator_delivery_duration_seconds",
        "Time from handing a request to a node's transport to its end, by target group.",
        None,
        MetricType::Histogram,
    )?;
    for (group, counts) in deliveries {
        let labels = [("group", group.as_str())];
        let buckets = counts.cumulative_buckets();
        encode_histogram(
            family.encode_family(&labels)?,
            buckets.iter().map(|&(bound, _)| bound),
            buckets.iter().map(|&(_, seen)| seen),
            counts.latency_sum,
        )?;
    }
    Ok(())
}

/// The store families: calls, errors and latency per registry operation.
fn write_store(encoder: &mut DescriptorEncoder<'_>, mediator: &Mediator) -> std::fmt::Result {
    let stats = mediator.store_stats();
    let snapshots = StoreOp::ALL.map(|op| (op.label(), stats.snapshot(op)));
    let mut family = encoder.encode_descriptor(
        "mediator_store_calls",
        "Calls the mediator made to its registry, by operation.",
        None,
        MetricType::Counter,
    )?;
    for (op, snap) in &snapshots {
        ConstCounter::new(snap.calls).encode(family.encode_family(&[("op", *op)])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "mediator_store_errors",
        "Registry calls that failed, by operation.",
        None,
        MetricType::Counter,
    )?;
    for (op, snap) in &snapshots {
        ConstCounter::new(snap.errors).encode(family.encode_family(&[("op", *op)])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "mediator_store_call_duration_seconds",
        "Time a registry call took, by operation.",
        None,
        MetricType::Histogram,
    )?;
    for (op, snap) in &snapshots {
        encode_histogram(
            family.encode_family(&[("op", *op)])?,
            STORE_LATENCY_BUCKETS
                .iter()
                .copied()
                .map(Some)
                .chain(std::iter::once(None)),
            snap.cumulative_buckets.iter().copied(),
            snap.latency_sum,
        )?;
    }
    Ok(())
}

/// The process's resident memory, CPU time and open descriptors, read from
/// `/proc/self` at each scrape; on a system without it the series are
/// left out rather than shown as zero.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second in `/proc/self/stat`: `USER_HZ`, which Linux
/// fixes at 100 in its user-space ABI on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessCollector {
    fn resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields are
        // counted from the last `)`; utime and stime are fields 14 and 15.
        let after = stat.get(stat.rfind(')')? + 1..)?;
        let mut fields = after.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        // Tick counts stay far below 2^52, where f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        let ticks = (user + system) as f64;
        Some(ticks / TICKS_PER_SECOND)
    }

    fn open_fds() -> Option<u64> {
        let dir = std::fs::read_dir("/proc/self/fd").ok()?;
        // One of them is the directory being read, which is not the
        // process's own doing.
        Some((dir.count() as u64).saturating_sub(1))
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        if let Some(bytes) = Self::resident_bytes() {
            ConstGauge::new(bytes).encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(seconds) = Self::cpu_seconds() {
            ConstCounter::new(seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Some(fds) = Self::open_fds() {
            ConstGauge::new(fds).encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mediator_core::record::Outcome;
    use mediator_core::{Authenticator, MemoryRegistry};

    fn mediator() -> Mediator {
        Mediator::builder()
            .registry(MemoryRegistry::new())
            .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
            .build()
            .expect("a valid mediator")
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    #[test]
    fn durations_land_in_their_bucket() {
        let metrics = Metrics::default();
        metrics.request(RouteLabel::Register, 200, Duration::from_micros(500));
        metrics.request(RouteLabel::Register, 200, Duration::from_millis(1));
        metrics.request(RouteLabel::Register, 502, Duration::from_millis(3));
        metrics.request(RouteLabel::Register, 504, Duration::from_secs(11));
        metrics.request(RouteLabel::Register, 1000, Duration::from_secs(1));
        let text = metrics.render(&mediator(), true);
        for line in [
            "mediator_requests_total{transport=\"http\",route=\"register\",status=\"200\"} 2",
            "mediator_requests_total{transport=\"http\",route=\"register\",status=\"502\"} 1",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"0.001\"} 2",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"0.0025\"} 2",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"0.005\"} 3",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"1\"} 4",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"10\"} 4",
            "mediator_request_duration_seconds_bucket{transport=\"http\",route=\"register\",le=\"+Inf\"} 5",
            "mediator_request_duration_seconds_count{transport=\"http\",route=\"register\"} 5",
            "mediator_request_duration_seconds_sum{transport=\"http\",route=\"register\"} 12.0045",
            "mediator_request_duration_seconds_count{transport=\"http\",route=\"token\"} 0",
            "mediator_nodes 0",
            "mediator_evictions_total 0",
            "mediator_deliveries_in_flight 0",
        ] {
            has(&text, line);
        }
        assert!(!text.contains("status=\"1000\""), "{text}");
    }

    #[test]
    fn other_transports_requests_share_the_families() {
        let mediator = mediator();
        let metrics = Metrics::default();
        metrics.request(RouteLabel::One, 200, Duration::from_millis(2));
        let stats = mediator.transport_stats();
        stats.request("quic", "one", 200, Duration::from_millis(2));
        stats.request("quic", "one", 200, Duration::from_millis(20));
        stats.request("quic", "many", 408, Duration::from_secs(1));
        stats.set_attached("quic", 3);
        let text = metrics.render(&mediator, false);
        for line in [
            "mediator_requests_total{transport=\"http\",route=\"one\",status=\"200\"} 1",
            "mediator_requests_total{transport=\"quic\",route=\"one\",status=\"200\"} 2",
            "mediator_requests_total{transport=\"quic\",route=\"many\",status=\"408\"} 1",
            "mediator_request_duration_seconds_bucket{transport=\"quic\",route=\"one\",le=\"0.0025\"} 1",
            "mediator_request_duration_seconds_bucket{transport=\"quic\",route=\"one\",le=\"+Inf\"} 2",
            "mediator_request_duration_seconds_count{transport=\"quic\",route=\"one\"} 2",
            "mediator_request_duration_seconds_sum{transport=\"quic\",route=\"one\"} 0.022",
            "mediator_attached_nodes{transport=\"quic\"} 3",
        ] {
            has(&text, line);
        }
        for family in [
            "mediator_requests_total",
            "mediator_request_duration_seconds",
        ] {
            let declared = text
                .lines()
                .filter(|l| l.starts_with(&format!("# TYPE {family} ")))
                .count();
            assert_eq!(declared, 1, "{family} declared once in\n{text}");
        }
    }

    #[test]
    fn deliveries_come_from_the_cores_stats_when_groups_are_shown() {
        let mediator = mediator();
        let stats = mediator.delivery_stats();
        let ok = Outcome::Replied(http::StatusCode::OK);
        stats.add("a", ok, Duration::from_millis(3));
        stats.add("a", ok, Duration::from_millis(30));
        stats.add("b", Outcome::Failed, Duration::from_millis(1));
        let text = Metrics::default().render(&mediator, true);
        for line in [
            "mediator_deliveries_total{group=\"a\",outcome=\"ok\"} 2",
            "mediator_deliveries_total{group=\"a\",outcome=\"timed_out\"} 0",
            "mediator_deliveries_total{group=\"b\",outcome=\"failed\"} 1",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.001\"} 0",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.005\"} 1",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.05\"} 2",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"+Inf\"} 2",
            "mediator_delivery_duration_seconds_sum{group=\"a\"} 0.033",
            "mediator_delivery_duration_seconds_count{group=\"a\"} 2",
        ] {
            has(&text, line);
        }
        let hidden = Metrics::default().render(&mediator, false);
        assert!(!hidden.contains("group="), "{hidden}");
        has(&hidden, "# TYPE mediator_deliveries_total counter");
    }

    #[test]
    fn store_calls_build_and_process_are_shown() {
        let mediator = mediator();
        mediator
            .store_stats()
            .add(StoreOp::Get, Duration::from_micros(300), true);
        let text = Metrics::default().render(&mediator, true);
        for line in [
            "mediator_store_calls_total{op=\"get\"} 1",
            "mediator_store_errors_total{op=\"get\"} 1",
            "mediator_store_calls_total{op=\"upsert\"} 0",
            "mediator_store_call_duration_seconds_bucket{op=\"get\",le=\"0.00025\"} 0",
            "mediator_store_call_duration_seconds_bucket{op=\"get\",le=\"0.0005\"} 1",
            "mediator_store_call_duration_seconds_count{op=\"get\"} 1",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            has(&text, line);
        }
        has(
            &text,
            &format!(
                "mediator_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        );
        let fds = text
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(fds.is_some_and(|n| n >= 3), "{text}");
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(rss.is_some_and(|n| n > 1 << 20), "{text}");
    }
}
