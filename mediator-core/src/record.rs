//! Recording how deliveries went, once for every transport.
//!
//! The router reports every delivery it makes (one per unicast or
//! any-of-group attempt, one per node of a broadcast) to the mediator's
//! recorders: always its own [`DeliveryStats`], which transports render
//! (Prometheus `/metrics`, the dashboard), and any [`Recorder`] added with
//! [`MediatorBuilder::recorder`](crate::MediatorBuilder::recorder).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::error::Error;
use crate::model::{Node, Target};

/// How one delivery to one node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The node replied, whatever its status.
    Replied(http::StatusCode),
    /// The node was reached but failed.
    Failed,
    /// Nothing of the request reached the node.
    Unreachable,
    /// The deadline passed first.
    TimedOut,
}

impl Outcome {
    /// How `result` ended.
    pub fn of<T>(result: &Result<T, Error>, status: impl FnOnce(&T) -> http::StatusCode) -> Self {
        match result {
            Ok(reply) => Outcome::Replied(status(reply)),
            Err(Error::DeadlinePassed { .. }) => Outcome::TimedOut,
            Err(Error::NodeUnreachable { .. }) => Outcome::Unreachable,
            Err(_) => Outcome::Failed,
        }
    }

    /// The label of this outcome in metrics: `ok`, `failed`,
    /// `unreachable` or `timed_out`.
    pub fn label(self) -> &'static str {
        OUTCOMES[self.index()]
    }

    fn index(self) -> usize {
        match self {
            Outcome::Replied(_) => 0,
            Outcome::Failed => 1,
            Outcome::Unreachable => 2,
            Outcome::TimedOut => 3,
        }
    }
}

const OUTCOMES: [&str; 4] = ["ok", "failed", "unreachable", "timed_out"];

/// One delivery, as recorders see it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Delivery<'a> {
    /// The node delivered to.
    pub node: &'a Node,
    /// How the caller addressed it.
    pub target: &'a Target,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, from handing it to the deliverer to its end.
    pub latency: Duration,
}

/// Receives every delivery the router makes.
///
/// Called on the hot path, once per delivery: keep it to a few atomic
/// operations, and never block.
///
/// ```
/// use mediator_core::record::{Delivery, Outcome, Recorder};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Counts the deliveries that did not reach their node.
/// #[derive(Default)]
/// struct Unreachable(AtomicU64);
///
/// impl Recorder for Unreachable {
///     fn record(&self, delivery: &Delivery<'_>) {
///         if delivery.outcome == Outcome::Unreachable {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// # let _ = Unreachable::default();
/// ```
pub trait Recorder: Send + Sync + 'static {
    /// Records one delivery.
    fn record(&self, delivery: &Delivery<'_>);
}

/// How many distinct groups get their own counters in [`DeliveryStats`].
pub const MAX_GROUPS: usize = 1_000;

/// The name the groups past [`MAX_GROUPS`] are counted under; no group can
/// be called that, since `~` is not allowed in group names.
pub const OVERFLOW_GROUP: &str = "~other";

/// Upper bounds of the latency buckets.
pub const LATENCY_BUCKETS: [Duration; 13] = [
    Duration::from_micros(1_000),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2_500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// Shards of the per-group map: enough that concurrent first sightings of
/// different groups rarely wait on one another.
const SHARDS: usize = 16;

#[derive(Default)]
struct GroupCounters {
    outcomes: [AtomicU64; 4],
    /// Per bucket, not cumulative; the last slot is past the last bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl GroupCounters {
    fn add(&self, outcome: Outcome, latency: Duration) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < latency);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GroupDeliveries {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GroupDeliveries {
            outcomes: std::array::from_fn(|i| load(&self.outcomes[i])),
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
            latency_sum: Duration::from_nanos(load(&self.sum_nanos)),
        }
    }
}

/// One group's deliveries so far, read from [`DeliveryStats::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDeliveries {
    outcomes: [u64; 4],
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of every delivery's latency.
    pub latency_sum: Duration,
}

impl GroupDeliveries {
    /// Deliveries that ended in each outcome, as `(label, count)`:
    /// `ok`, `failed`, `unreachable`, `timed_out`.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OUTCOMES.iter().copied().zip(self.outcomes.iter().copied())
    }

    /// Every delivery counted.
    pub fn total(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Cumulative latency counts, as Prometheus histograms write them:
    /// `(upper bound, deliveries that took at most that long)`, the last
    /// with no bound (`+Inf`).
    pub fn cumulative_buckets(&self) -> Vec<(Option<Duration>, u64)> {
        let mut seen = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                seen += count;
                (LATENCY_BUCKETS.get(i).copied(), seen)
            })
            .collect()
    }
}

/// Per-group delivery counters and latency histograms, kept by every
/// mediator ([`Mediator::delivery_stats`](crate::Mediator::delivery_stats)).
///
/// Recording costs a few relaxed atomic additions; a group's counters are
/// created under a write lock the first time it is seen. The number of
/// groups is capped at [`MAX_GROUPS`], so names cannot grow memory without
/// bound; later groups are counted under [`OVERFLOW_GROUP`].
pub struct DeliveryStats {
    shards: [RwLock<HashMap<Box<str>, GroupCounters>>; SHARDS],
    hasher: RandomState,
    groups: AtomicUsize,
    max_groups: usize,
    overflow: GroupCounters,
}

impl std::fmt::Debug for DeliveryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStats")
            .field("groups", &self.groups.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for DeliveryStats {
    fn default() -> Self {
        DeliveryStats::with_max_groups(MAX_GROUPS)
    }
}

impl DeliveryStats {
    /// Counters for at most `max_groups` distinct groups.
    pub fn with_max_groups(max_groups: usize) -> Self {
        DeliveryStats {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
            groups: AtomicUsize::new(0),
            max_groups,
            overflow: GroupCounters::default(),
        }
    }

    fn shard(&self, group: &str) -> &RwLock<HashMap<Box<str>, GroupCounters>> {
        // The hash picks a shard; truncating it is the point.
        #[allow(clippy::cast_possible_truncation)]
        let index = self.hasher.hash_one(group) as usize % SHARDS;
        &self.shards[index]
    }

    /// Counts one delivery to a node of `group`.
    pub fn add(&self, group: &str, outcome: Outcome, latency: Duration) {
        let shard = self.shard(group);
        // Counters stay meaningful even if a holder of the lock panicked.
        if let Some(counters) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
        {
            counters.add(outcome, latency);
            return;
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = map.get(group) {
            counters.add(outcome, latency);
            return;
        }
        let admitted = self
            .groups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_groups).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            let counters = GroupCounters::default();
            counters.add(outcome, latency);
            map.insert(group.into(), counters);
        } else {
            self.overflow.add(outcome, latency);
        }
    }

    /// Every group's counters, by group name; the groups past the cap
    /// appear once, as [`OVERFLOW_GROUP`].
    pub fn snapshot(&self) -> BTreeMap<String, GroupDeliveries> {
        let mut all = BTreeMap::new();
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (group, counters) in map.iter() {
                all.insert(group.to_string(), counters.snapshot());
            }
        }
        let overflow = self.overflow.snapshot();
        if overflow.total() > 0 {
            all.insert(OVERFLOW_GROUP.to_owned(), overflow);
        }
        all
    }
}

impl Recorder for DeliveryStats {
    fn record(&self, delivery: &Delivery<'_>) {
        self.add(
            delivery.node.key.group(),
            delivery.outcome,
            delivery.latency,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_group_outcome_and_latency() {
        let stats = DeliveryStats::with_max_groups(2);
        stats.add(
            "a",
            Outcome::Replied(http::StatusCode::OK),
            Duration::from_micros(900),
        );
        stats.add("a", Outcome::TimedOut, Duration::from_secs(20));
        stats.add("b", Outcome::Unreachable, Duration::from_millis(3));
        stats.add("c", Outcome::Failed, Duration::from_millis(3));
        stats.add("d", Outcome::Failed, Duration::from_millis(3));
        let snap = stats.snapshot();
        assert_eq!(snap.keys().collect::<Vec<_>>(), ["a", "b", OVERFLOW_GROUP]);
        let a = &snap["a"];
        let counts: Vec<_> = a.outcomes().collect();
        assert_eq!(
            counts,
            [
                ("ok", 1),
                ("failed", 0),
                ("unreachable", 0),
                ("timed_out", 1)
            ]
        );
        let buckets = a.cumulative_buckets();
        assert_eq!(buckets[0], (Some(Duration::from_millis(1)), 1));
        assert_eq!(buckets.last(), Some(&(None, 2)));
        assert_eq!(buckets[buckets.len() - 2].1, 1, "20 s is past every bound");
        assert_eq!(snap[OVERFLOW_GROUP].total(), 2);
    }
}
