//! The listener's Prometheus counters, served at `GET /metrics`.
//!
//! Recording happens on every request, so it costs a few relaxed atomic
//! additions: per-route counters live in fixed arrays indexed by route and
//! status, and per-group delivery counters in a sharded map that takes a
//! write lock only the first time a group is seen. The number of distinct
//! groups is capped, so names cannot grow the map without bound; past the
//! cap, deliveries are counted under `group="other"`.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

/// How many distinct groups get their own delivery counters.
pub(crate) const MAX_GROUPS: usize = 1_000;

/// The label the groups past [`MAX_GROUPS`] are counted under.
const OVERFLOW_GROUP: &str = "other";

/// Shards of the per-group map: enough that concurrent first sightings of
/// different groups rarely wait on one another.
const SHARDS: usize = 16;

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

/// How one delivery to one node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The node replied, whatever its status.
    Ok = 0,
    /// The node was reached but failed.
    Failed = 1,
    /// Nothing reached a node.
    Unreachable = 2,
    /// The deadline passed first.
    TimedOut = 3,
}

const OUTCOMES: [&str; 4] = ["ok", "failed", "unreachable", "timed_out"];

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

#[derive(Default)]
struct GroupStats([AtomicU64; 4]);

impl GroupStats {
    fn add(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn load(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Counters of one listener.
pub(crate) struct Metrics {
    routes: [RouteStats; RouteLabel::ALL.len()],
    shards: [RwLock<HashMap<Box<str>, GroupStats>>; SHARDS],
    hasher: RandomState,
    groups: AtomicUsize,
    max_groups: usize,
    overflow: GroupStats,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("groups", &self.groups.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::with_max_groups(MAX_GROUPS)
    }
}

impl Metrics {
    fn with_max_groups(max_groups: usize) -> Self {
        Metrics {
            routes: std::array::from_fn(|_| RouteStats::new()),
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
            groups: AtomicUsize::new(0),
            max_groups,
            overflow: GroupStats::default(),
        }
    }

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

    /// Counts one delivery to a node of `group`.
    pub(crate) fn delivery(&self, group: &str, outcome: Outcome) {
        // The hash picks a shard; truncating it is the point.
        #[allow(clippy::cast_possible_truncation)]
        let shard = &self.shards[self.hasher.hash_one(group) as usize % SHARDS];
        // Counters stay meaningful even if a holder of the lock panicked.
        if let Some(stats) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
        {
            stats.add(outcome);
            return;
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = map.get(group) {
            stats.add(outcome);
            return;
        }
        let admitted = self
            .groups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_groups).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            let stats = GroupStats::default();
            stats.add(outcome);
            map.insert(group.into(), stats);
        } else {
            self.overflow.add(outcome);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter, with
    /// `nodes` as the routing table's size.
    pub(crate) fn render(&self, nodes: usize) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a `String` cannot fail.
        let _ = self.write_to(&mut out, nodes);
        out
    }

    fn write_to(&self, out: &mut String, nodes: usize) -> std::fmt::Result {
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

        writeln!(
            out,
            "# HELP mediator_deliveries_total Forwarded deliveries, by target group and outcome \
             (one per node for /many)."
        )?;
        writeln!(out, "# TYPE mediator_deliveries_total counter")?;
        let mut groups: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (group, stats) in map.iter() {
                groups.insert(group.to_string(), stats.load());
            }
        }
        let overflow = self.overflow.load();
        if overflow.iter().any(|&n| n > 0) {
            // A group really named "other" shares the overflow's series.
            let entry = groups.entry(OVERFLOW_GROUP.to_owned()).or_default();
            for (total, n) in entry.iter_mut().zip(overflow) {
                *total += n;
            }
        }
        for (group, counts) in &groups {
            let group = escape_label(group);
            for (outcome, count) in OUTCOMES.iter().zip(counts) {
                writeln!(
                    out,
                    "mediator_deliveries_total{{group=\"{group}\",outcome=\"{outcome}\"}} {count}"
                )?;
            }
        }

        writeln!(
            out,
            "# HELP mediator_nodes Registrations in this mediator's routing table."
        )?;
        writeln!(out, "# TYPE mediator_nodes gauge")?;
        writeln!(out, "mediator_nodes {nodes}")
    }
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
        let text = metrics.render(0);
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
    fn groups_past_the_cap_fold_into_other() {
        let metrics = Metrics::with_max_groups(2);
        metrics.delivery("a", Outcome::Ok);
        metrics.delivery("b", Outcome::Failed);
        metrics.delivery("c", Outcome::Unreachable);
        metrics.delivery("d", Outcome::TimedOut);
        metrics.delivery("a", Outcome::Ok);
        let text = metrics.render(7);
        for line in [
            "mediator_deliveries_total{group=\"a\",outcome=\"ok\"} 2",
            "mediator_deliveries_total{group=\"b\",outcome=\"failed\"} 1",
            "mediator_deliveries_total{group=\"other\",outcome=\"unreachable\"} 1",
            "mediator_deliveries_total{group=\"other\",outcome=\"timed_out\"} 1",
            "mediator_nodes 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("group=\"c\""), "{text}");
        assert!(!text.contains("group=\"d\""), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
