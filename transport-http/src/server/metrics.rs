//! The Prometheus exposition served at `GET /metrics`: the service's own
//! request counters, and the delivery counters the core keeps for every
//! transport ([`DeliveryStats`]).
//!
//! Recording happens on every request, so it costs a few relaxed atomic
//! additions into fixed arrays indexed by route and status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mediator_core::record::{DeliveryStats, GroupDeliveries};

/// Upper bounds of the latency buckets, in seconds as written in `le`, and
/// in nanoseconds for comparing.
const BUCKETS: [(&str, u64); 13] = [
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
    ("5", 5_000_000_000),
    ("10", 10_000_000_000),
];

/// Status codes `100..=999` (all `http::StatusCode` allows), one slot each.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 900;

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
    /// `/admin/*` and the dashboard.
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
}

struct RouteStats {
    statuses: Box<[AtomicU64]>,
    /// Per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The request counters of one [`MediatorService`](super::MediatorService)
/// and its clones.
pub(crate) struct Metrics {
    routes: [RouteStats; RouteLabel::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: std::array::from_fn(|_| RouteStats::new()),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn request(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        let stats = &self.routes[route as usize];
        if let Some(slot) = status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| stats.statuses.get(usize::from(i)))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS.partition_point(|&(_, bound)| bound < nanos);
        stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stats.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of the request
    /// counters (only with `groups`, as they are labelled by group name),
    /// and `nodes` as the routing table's size.
    pub(crate) fn render(&self, deliveries: &DeliveryStats, nodes: usize, groups: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let deliveries = if groups {
            deliveries.snapshot()
        } else {
            BTreeMap::new()
        };
        // Writing to a `String` cannot fail.
        let _ = self.write_to(&mut out, &deliveries, nodes);
        out
    }

    fn write_to(
        &self,
        out: &mut String,
        deliveries: &BTreeMap<String, GroupDeliveries>,
        nodes: usize,
    ) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP mediator_requests_total Requests answered, by route and status."
        )?;
        writeln!(out, "# TYPE mediator_requests_total counter")?;
        for route in RouteLabel::ALL {
            let stats = &self.routes[route as usize];
            for (offset, count) in stats.statuses.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    writeln!(
                        out,
                        "mediator_requests_total{{route=\"{}\",status=\"{}\"}} {count}",
                        route.as_str(),
                        usize::from(FIRST_STATUS) + offset
                    )?;
                }
            }
        }

        writeln!(
            out,
            "# HELP mediator_request_duration_seconds Time from a request's arrival to its answer, by route."
        )?;
        writeln!(out, "# TYPE mediator_request_duration_seconds histogram")?;
        for route in RouteLabel::ALL {
            let stats = &self.routes[route as usize];
            let route = route.as_str();
            let mut cumulative = 0u64;
            for (i, count) in stats.buckets.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map_or("+Inf", |&(le, _)| le);
                writeln!(
                    out,
                    "mediator_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                )?;
            }
            // Seconds from nanoseconds; f64 keeps ample precision here.
            #[allow(clippy::cast_precision_loss)]
            let sum = stats.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            writeln!(
                out,
                "mediator_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
            )?;
            // The count is the buckets' total, so it always equals `+Inf`
            // even while requests are being recorded.
            writeln!(
                out,
                "mediator_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
            )?;
        }

        write_deliveries(out, deliveries)?;

        writeln!(
            out,
            "# HELP mediator_nodes Registrations in this mediator's routing table."
        )?;
        writeln!(out, "# TYPE mediator_nodes gauge")?;
        writeln!(out, "mediator_nodes {nodes}")
    }
}

/// The delivery families: outcomes and latency per target group, as the
/// core recorded them (one delivery per node asked, retries included).
fn write_deliveries(
    out: &mut String,
    deliveries: &BTreeMap<String, GroupDeliveries>,
) -> std::fmt::Result {
    writeln!(
        out,
        "# HELP mediator_deliveries_total Deliveries to nodes, by target group and outcome \
         (one per node asked)."
    )?;
    writeln!(out, "# TYPE mediator_deliveries_total counter")?;
    for (group, counts) in deliveries {
        let group = escape_label(group);
        for (outcome, count) in counts.outcomes() {
            writeln!(
                out,
                "mediator_deliveries_total{{group=\"{group}\",outcome=\"{outcome}\"}} {count}"
            )?;
        }
    }

    writeln!(
        out,
        "# HELP mediator_delivery_duration_seconds Time from handing a request to a node's \
         transport to its end, by target group."
    )?;
    writeln!(out, "# TYPE mediator_delivery_duration_seconds histogram")?;
    for (group, counts) in deliveries {
        let group = escape_label(group);
        let mut total = 0;
        for (bound, cumulative) in counts.cumulative_buckets() {
            let le = bound.map_or_else(|| "+Inf".to_owned(), |b| b.as_secs_f64().to_string());
            writeln!(
                out,
                "mediator_delivery_duration_seconds_bucket{{group=\"{group}\",le=\"{le}\"}} {cumulative}"
            )?;
            total = cumulative;
        }
        writeln!(
            out,
            "mediator_delivery_duration_seconds_sum{{group=\"{group}\"}} {}",
            counts.latency_sum.as_secs_f64()
        )?;
        writeln!(
            out,
            "mediator_delivery_duration_seconds_count{{group=\"{group}\"}} {total}"
        )?;
    }
    Ok(())
}

/// A label value as the exposition format quotes it. Group names are
/// validated to `[A-Za-z0-9_-]`, so this is a guard, not a habit.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket() {
        let metrics = Metrics::default();
        metrics.request(RouteLabel::One, 200, Duration::from_micros(500));
        metrics.request(RouteLabel::One, 200, Duration::from_millis(1));
        metrics.request(RouteLabel::One, 502, Duration::from_millis(3));
        metrics.request(RouteLabel::One, 504, Duration::from_secs(11));
        let text = metrics.render(&DeliveryStats::default(), 0, true);
        for line in [
            "mediator_requests_total{route=\"one\",status=\"200\"} 2",
            "mediator_requests_total{route=\"one\",status=\"502\"} 1",
            "mediator_request_duration_seconds_bucket{route=\"one\",le=\"0.001\"} 2",
            "mediator_request_duration_seconds_bucket{route=\"one\",le=\"0.0025\"} 2",
            "mediator_request_duration_seconds_bucket{route=\"one\",le=\"0.005\"} 3",
            "mediator_request_duration_seconds_bucket{route=\"one\",le=\"10\"} 3",
            "mediator_request_duration_seconds_bucket{route=\"one\",le=\"+Inf\"} 4",
            "mediator_request_duration_seconds_count{route=\"one\"} 4",
            "mediator_request_duration_seconds_sum{route=\"one\"} 11.0045",
            "mediator_request_duration_seconds_count{route=\"many\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn deliveries_come_from_the_cores_stats() {
        use mediator_core::record::Outcome;
        let stats = DeliveryStats::with_max_groups(2);
        let ok = Outcome::Replied(http::StatusCode::OK);
        stats.add("a", ok, Duration::from_millis(3));
        stats.add("a", ok, Duration::from_millis(30));
        stats.add("b", Outcome::Failed, Duration::from_millis(1));
        stats.add("c", Outcome::Unreachable, Duration::from_secs(20));
        let text = Metrics::default().render(&stats, 7, true);
        for line in [
            "mediator_deliveries_total{group=\"a\",outcome=\"ok\"} 2",
            "mediator_deliveries_total{group=\"a\",outcome=\"timed_out\"} 0",
            "mediator_deliveries_total{group=\"b\",outcome=\"failed\"} 1",
            "mediator_deliveries_total{group=\"~other\",outcome=\"unreachable\"} 1",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.001\"} 0",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.005\"} 1",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"0.05\"} 2",
            "mediator_delivery_duration_seconds_bucket{group=\"a\",le=\"+Inf\"} 2",
            "mediator_delivery_duration_seconds_sum{group=\"a\"} 0.033",
            "mediator_delivery_duration_seconds_count{group=\"a\"} 2",
            "mediator_delivery_duration_seconds_bucket{group=\"~other\",le=\"10\"} 0",
            "mediator_delivery_duration_seconds_count{group=\"~other\"} 1",
            "mediator_nodes 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("group=\"c\""), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
