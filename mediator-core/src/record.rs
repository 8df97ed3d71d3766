//! Recording how deliveries went, once for every transport.
//!
//! The router reports every delivery it makes (one per unicast or
//! any-of-group attempt, one per node of a broadcast) to the mediator's
//! recorders: always its own [`DeliveryStats`], which transports render
//! (Prometheus `/metrics`, the operator's console), and any [`Recorder`]
//! added with [`MediatorBuilder::recorder`](crate::MediatorBuilder::recorder).
//!
//! Besides totals per group, [`DeliveryStats`] keeps what an operator
//! watches: each node's requests, errors and health from its last
//! deliveries ([`NodeDeliveries`]), and per group the last 15 minutes in
//! 10-second buckets ([`SeriesPoint`]). Every part is bounded in memory.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::model::{Node, NodeKey, Target};
use crate::time::Timestamp;

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

    /// Whether the delivery went wrong: the node failed, was unreachable,
    /// ran out of time, or replied with a server error (5xx).
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Replied(status) => status.is_server_error(),
            Outcome::Failed | Outcome::Unreachable | Outcome::TimedOut => true,
        }
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

struct GroupCounters {
    outcomes: [AtomicU64; 4],
    /// Per bucket, not cumulative; the last slot is past the last bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    series: Series,
}

impl Default for GroupCounters {
    fn default() -> Self {
        GroupCounters {
            outcomes: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            series: Series::new(),
        }
    }
}

/// The latency bucket of `latency`: the index of the first bound it does
/// not pass, or past the last.
fn latency_bucket(latency: Duration) -> usize {
    LATENCY_BUCKETS.partition_point(|&bound| bound < latency)
}

impl GroupCounters {
    fn add(&self, outcome: Outcome, latency: Duration, now: Timestamp) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let bucket = latency_bucket(latency);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.series.add(now, outcome.is_error(), bucket);
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

/// How long one bucket of the recent-traffic series lasts.
pub const SERIES_STEP: Duration = Duration::from_secs(10);

/// How many buckets the series keeps: 15 minutes of [`SERIES_STEP`].
pub const SERIES_LEN: usize = 90;

/// One bucket of a ring: the period it holds (its start in whole steps
/// since the epoch), its deliveries, its errors and its latency histogram
/// (same bounds as [`LATENCY_BUCKETS`]). 32-bit counts: a 10-second bucket
/// of one group cannot see four billion deliveries.
struct SeriesSlot {
    period: AtomicI64,
    count: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; LATENCY_BUCKETS.len() + 1],
}

/// The last [`SERIES_LEN`] steps of one group, as a ring indexed by period.
///
/// Recording is lock-free: the first delivery of a new period claims the
/// slot (compare-and-swap of its period) and clears it. A delivery that
/// races that turn by a few nanoseconds may be lost from the series (never
/// from the totals), which a chart cannot show anyway.
struct Series {
    slots: Box<[SeriesSlot]>,
}

impl Series {
    fn new() -> Series {
        Series {
            slots: (0..SERIES_LEN)
                .map(|_| SeriesSlot {
                    period: AtomicI64::new(i64::MIN),
                    count: AtomicU32::new(0),
                    errors: AtomicU32::new(0),
                    latency: Default::default(),
                })
                .collect(),
        }
    }

    fn period_of(at: Timestamp) -> i64 {
        let step = i64::try_from(SERIES_STEP.as_millis()).unwrap_or(i64::MAX);
        at.as_millis().div_euclid(step)
    }

    fn slot(&self, period: i64) -> &SeriesSlot {
        // The ring's length fits in an i64, and rem_euclid is never negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let index = period.rem_euclid(SERIES_LEN as i64) as usize;
        &self.slots[index]
    }

    fn add(&self, now: Timestamp, error: bool, bucket: usize) {
        let period = Self::period_of(now);
        let slot = self.slot(period);
        let seen = slot.period.load(Ordering::Acquire);
        if seen != period {
            if seen > period {
                // A clock that went back: this bucket is gone already.
                return;
            }
            if slot
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.count.store(0, Ordering::Relaxed);
                slot.errors.store(0, Ordering::Relaxed);
                for b in &slot.latency {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The [`SERIES_LEN`] steps up to the one holding `now`, oldest first;
    /// steps without deliveries are zero.
    fn read(&self, now: Timestamp) -> Vec<SeriesPoint> {
        let last = Self::period_of(now);
        let step = i64::try_from(SERIES_STEP.as_millis()).unwrap_or(i64::MAX);
        (0..SERIES_LEN as i64)
            .rev()
            .map(|back| {
                let period = last - back;
                let slot = self.slot(period);
                let start = Timestamp::from_millis(period.saturating_mul(step));
                if slot.period.load(Ordering::Acquire) != period {
                    return SeriesPoint::empty(start);
                }
                let latency: [u64; LATENCY_BUCKETS.len() + 1] =
                    std::array::from_fn(|i| u64::from(slot.latency[i].load(Ordering::Relaxed)));
                SeriesPoint {
                    start,
                    requests: u64::from(slot.count.load(Ordering::Relaxed)),
                    errors: u64::from(slot.errors.load(Ordering::Relaxed)),
                    p50: quantile(&latency, 0.50),
                    p99: quantile(&latency, 0.99),
                }
            })
            .collect()
    }
}

/// The upper bound of the latency bucket holding quantile `q` of the
/// deliveries counted in `buckets`: `None` without deliveries, and the
/// last bound's double when it lies past the last bound (the histogram
/// knows no more than "longer").
fn quantile(buckets: &[u64; LATENCY_BUCKETS.len() + 1], q: f64) -> Option<Duration> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // Counts are far below 2^52, so the float is exact enough for a rank.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(
                LATENCY_BUCKETS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 2),
            );
        }
    }
    None
}

/// One step of a group's recent traffic, read from
/// [`DeliveryStats::series`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeriesPoint {
    /// When the step began.
    pub start: Timestamp,
    /// Deliveries that ended in it.
    pub requests: u64,
    /// Those that went wrong ([`Outcome::is_error`]).
    pub errors: u64,
    /// The median latency, as the upper bound of its histogram bucket.
    pub p50: Option<Duration>,
    /// The 99th percentile latency, as the upper bound of its bucket.
    pub p99: Option<Duration>,
}

impl SeriesPoint {
    fn empty(start: Timestamp) -> SeriesPoint {
        SeriesPoint {
            start,
            requests: 0,
            errors: 0,
            p50: None,
            p99: None,
        }
    }
}

/// How many nodes get counters of their own in [`DeliveryStats`]; past
/// it, deliveries to further nodes count only in their group's totals.
pub const MAX_NODES: usize = 10_000;

/// How many of a node's last outcomes are kept for its health.
pub const RECENT_OUTCOMES: usize = 16;

/// A node's counters: totals, the time of its last delivery and last good
/// answer, and its last [`RECENT_OUTCOMES`] outcomes packed four bits each
/// (the outcome's index plus one; zero is "none yet"), so that recording
/// is one shift in a compare-and-swap loop.
#[derive(Default)]
struct NodeCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    last_delivery: AtomicI64,
    last_answer: AtomicI64,
    recent: AtomicU64,
}

impl NodeCounters {
    fn add(&self, outcome: Outcome, now: Timestamp) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let error = outcome.is_error();
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.last_delivery
            .fetch_max(now.as_millis(), Ordering::Relaxed);
        if matches!(outcome, Outcome::Replied(_)) {
            self.last_answer
                .fetch_max(now.as_millis(), Ordering::Relaxed);
        }
        // 5xx replies are kept as failures: the node answered, but not well.
        let code = if error && matches!(outcome, Outcome::Replied(_)) {
            Outcome::Failed.index()
        } else {
            outcome.index()
        } as u64
            + 1;
        let _ = self
            .recent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                Some((packed << 4) | code)
            });
    }

    fn snapshot(&self) -> NodeDeliveries {
        let recent_packed = self.recent.load(Ordering::Relaxed);
        let recent = (0..RECENT_OUTCOMES)
            .map(|i| (recent_packed >> (4 * i)) & 0xf)
            .take_while(|code| *code != 0)
            .filter_map(|code| usize::try_from(code - 1).ok())
            .filter_map(HealthOutcome::from_index)
            .collect();
        let at = |millis: i64| (millis != 0).then(|| Timestamp::from_millis(millis));
        NodeDeliveries {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_delivery: at(self.last_delivery.load(Ordering::Relaxed)),
            last_answer: at(self.last_answer.load(Ordering::Relaxed)),
            recent,
        }
    }
}

/// A delivery's outcome as a node's health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthOutcome {
    /// The node answered, without a server error.
    Ok,
    /// The node was reached but failed, or answered with a 5xx.
    Failed,
    /// Nothing of the request reached the node (connection refused, no
    /// route): it is down or gone.
    Unreachable,
    /// The node did not answer in time.
    TimedOut,
}

impl HealthOutcome {
    fn from_index(index: usize) -> Option<HealthOutcome> {
        Some(match index {
            0 => HealthOutcome::Ok,
            1 => HealthOutcome::Failed,
            2 => HealthOutcome::Unreachable,
            3 => HealthOutcome::TimedOut,
            _ => return None,
        })
    }

    /// `ok`, `failed`, `unreachable` or `timed_out`.
    pub fn label(self) -> &'static str {
        match self {
            HealthOutcome::Ok => "ok",
            HealthOutcome::Failed => "failed",
            HealthOutcome::Unreachable => "unreachable",
            HealthOutcome::TimedOut => "timed_out",
        }
    }
}

/// A node's health, judged from its last delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No delivery yet.
    Unknown,
    /// The last delivery was answered.
    Ok,
    /// The last delivery reached the node and failed, timed out or got a
    /// server error.
    Failing,
    /// The last delivery could not reach the node at all.
    Unreachable,
}

impl Health {
    /// `unknown`, `ok`, `failing` or `unreachable`.
    pub fn label(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Failing => "failing",
            Health::Unreachable => "unreachable",
        }
    }
}

/// One node's deliveries, read from [`DeliveryStats::node`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeDeliveries {
    /// Deliveries made to it.
    pub requests: u64,
    /// Those that went wrong ([`Outcome::is_error`]).
    pub errors: u64,
    /// When the last delivery ended.
    pub last_delivery: Option<Timestamp>,
    /// When the node last answered.
    pub last_answer: Option<Timestamp>,
    /// Its last outcomes, newest first, at most [`RECENT_OUTCOMES`].
    pub recent: Vec<HealthOutcome>,
}

impl NodeDeliveries {
    /// Its health, from the last delivery: unreachable and failing are
    /// told apart, since one means "down or gone" and the other "up but
    /// broken".
    pub fn health(&self) -> Health {
        match self.recent.first() {
            None => Health::Unknown,
            Some(HealthOutcome::Ok) => Health::Ok,
            Some(HealthOutcome::Unreachable) => Health::Unreachable,
            Some(HealthOutcome::Failed | HealthOutcome::TimedOut) => Health::Failing,
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

/// Applies `update` to the counters under `key` in `shard`, creating them
/// (with `make` for the key) while fewer than `max` exist, as `count`
/// tracks; returns whether `key` has counters. The read lock serves every
/// delivery but a key's first; the write lock is taken only then.
fn update_or_admit<K, Q, C>(
    shard: &RwLock<HashMap<K, C>>,
    key: &Q,
    make: impl FnOnce() -> K,
    count: &AtomicUsize,
    max: usize,
    update: impl Fn(&C),
) -> bool
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    C: Default,
{
    // Counters stay meaningful even if a holder of the lock panicked.
    if let Some(counters) = shard
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
    {
        update(counters);
        return true;
    }
    let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(counters) = map.get(key) {
        update(counters);
        return true;
    }
    let admitted = count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok();
    if admitted {
        let counters = C::default();
        update(&counters);
        map.insert(make(), counters);
    }
    admitted
}

/// Per-group delivery counters and latency histograms, per-group recent
/// series and per-node counters, kept by every mediator
/// ([`Mediator::delivery_stats`](crate::Mediator::delivery_stats)).
///
/// Recording costs a few relaxed atomic operations and one uncontended
/// read lock per map (a shard of groups, a shard of nodes); a group's or
/// node's counters are created under a write lock the first time it is
/// seen. Memory is bounded: at most [`MAX_GROUPS`] groups (later ones are
/// counted under [`OVERFLOW_GROUP`]), each with a ring of [`SERIES_LEN`]
/// buckets (about 6.5 KiB), and at most [`MAX_NODES`] nodes (later ones
/// count only in their group), which the mediator forgets when they
/// deregister or expire.
///
/// ```
/// use std::time::Duration;
/// use mediator_core::record::{DeliveryStats, Health, Outcome};
/// use mediator_core::NodeKey;
///
/// let stats = DeliveryStats::default();
/// let api = NodeKey::named("users", "api")?;
/// stats.add_for_node(&api, Outcome::Replied(http::StatusCode::OK), Duration::from_millis(3));
/// stats.add_for_node(&api, Outcome::Unreachable, Duration::from_millis(1));
/// let node = stats.node(&api).expect("seen");
/// assert_eq!((node.requests, node.errors), (2, 1));
/// assert_eq!(node.health(), Health::Unreachable);
/// assert_eq!(stats.series("users").expect("seen").last().unwrap().requests, 2);
/// # Ok::<(), mediator_core::Error>(())
/// ```
pub struct DeliveryStats {
    shards: [RwLock<HashMap<Box<str>, GroupCounters>>; SHARDS],
    nodes: [RwLock<HashMap<NodeKey, NodeCounters>>; SHARDS],
    hasher: RandomState,
    groups: AtomicUsize,
    max_groups: usize,
    node_count: AtomicUsize,
    max_nodes: usize,
    overflow: GroupCounters,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DeliveryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStats")
            .field("groups", &self.groups.load(Ordering::Relaxed))
            .field("nodes", &self.node_count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for DeliveryStats {
    fn default() -> Self {
        DeliveryStats::with_max_groups(MAX_GROUPS)
    }
}

impl DeliveryStats {
    /// Counters for at most `max_groups` distinct groups (and
    /// [`MAX_NODES`] nodes), timed by the system clock.
    pub fn with_max_groups(max_groups: usize) -> Self {
        DeliveryStats {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            nodes: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
            groups: AtomicUsize::new(0),
            max_groups,
            node_count: AtomicUsize::new(0),
            max_nodes: MAX_NODES,
            overflow: GroupCounters::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same, with counters for at most `max_nodes` nodes.
    pub fn with_max_nodes(mut self, max_nodes: usize) -> Self {
        self.max_nodes = max_nodes;
        self
    }

    /// Times the series and the nodes' last deliveries by `clock` (the
    /// mediator passes its own, so a manual clock drives them in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn shard_index(&self, value: impl std::hash::Hash) -> usize {
        // The hash picks a shard; truncating it is the point.
        #[allow(clippy::cast_possible_truncation)]
        let index = self.hasher.hash_one(value) as usize % SHARDS;
        index
    }

    fn shard(&self, group: &str) -> &RwLock<HashMap<Box<str>, GroupCounters>> {
        &self.shards[self.shard_index(group)]
    }

    /// Counts one delivery to a node of `group`.
    pub fn add(&self, group: &str, outcome: Outcome, latency: Duration) {
        self.add_at(group, outcome, latency, self.clock.now());
    }

    /// Counts one delivery to node `key`, in its group and for the node.
    pub fn add_for_node(&self, key: &NodeKey, outcome: Outcome, latency: Duration) {
        let now = self.clock.now();
        self.add_at(key.group(), outcome, latency, now);
        self.add_node(key, outcome, now);
    }

    fn add_at(&self, group: &str, outcome: Outcome, latency: Duration, now: Timestamp) {
        let admitted = update_or_admit(
            self.shard(group),
            group,
            || group.into(),
            &self.groups,
            self.max_groups,
            |counters: &GroupCounters| counters.add(outcome, latency, now),
        );
        if !admitted {
            self.overflow.add(outcome, latency, now);
        }
    }

    fn add_node(&self, key: &NodeKey, outcome: Outcome, now: Timestamp) {
        // Past the cap a node counts only in its group's totals.
        update_or_admit(
            &self.nodes[self.shard_index(key)],
            key,
            || key.clone(),
            &self.node_count,
            self.max_nodes,
            |counters: &NodeCounters| counters.add(outcome, now),
        );
    }

    /// Node `key`'s counters, if it had a delivery and is tracked.
    pub fn node(&self, key: &NodeKey) -> Option<NodeDeliveries> {
        let shard = &self.nodes[self.shard_index(key)];
        let map = shard.read().unwrap_or_else(PoisonError::into_inner);
        map.get(key).map(NodeCounters::snapshot)
    }

    /// Forgets node `key`'s counters (it deregistered or expired), making
    /// room for another; returns whether it was tracked.
    pub fn forget_node(&self, key: &NodeKey) -> bool {
        let shard = &self.nodes[self.shard_index(key)];
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        let removed = map.remove(key).is_some();
        if removed {
            self.node_count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// How many nodes have counters of their own.
    pub fn tracked_nodes(&self) -> usize {
        self.node_count.load(Ordering::Relaxed)
    }

    /// Group `group`'s last [`SERIES_LEN`] steps of [`SERIES_STEP`], oldest
    /// first and ending with the step under way; `None` for a group never
    /// delivered to ([`OVERFLOW_GROUP`] names the groups past the cap).
    pub fn series(&self, group: &str) -> Option<Vec<SeriesPoint>> {
        let now = self.clock.now();
        if group == OVERFLOW_GROUP {
            return (self.overflow.snapshot().total() > 0).then(|| self.overflow.series.read(now));
        }
        let map = self
            .shard(group)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(group).map(|counters| counters.series.read(now))
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
        self.add_for_node(&delivery.node.key, delivery.outcome, delivery.latency);
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

    use crate::clock::ManualClock;

    fn key(text: &str) -> NodeKey {
        text.parse().expect("a node key")
    }

    #[test]
    fn nodes_keep_totals_and_health_from_their_last_outcome() {
        let stats = DeliveryStats::default().with_max_nodes(2);
        let (a, b, c) = (key("g/a"), key("g/b"), key("h/c"));
        let ok = Outcome::Replied(http::StatusCode::OK);
        let ms = Duration::from_millis(2);
        assert!(stats.node(&a).is_none());
        stats.add_for_node(&a, ok, ms);
        assert_eq!(stats.node(&a).expect("a").health(), Health::Ok);
        stats.add_for_node(&a, Outcome::Replied(http::StatusCode::BAD_GATEWAY), ms);
        assert_eq!(stats.node(&a).expect("a").health(), Health::Failing);
        stats.add_for_node(&a, Outcome::Unreachable, ms);
        let seen = stats.node(&a).expect("a");
        assert_eq!(seen.health(), Health::Unreachable);
        assert_eq!((seen.requests, seen.errors), (3, 2));
        assert_eq!(
            seen.recent,
            [
                HealthOutcome::Unreachable,
                HealthOutcome::Failed,
                HealthOutcome::Ok
            ]
        );
        stats.add_for_node(&b, Outcome::TimedOut, ms);
        assert_eq!(stats.node(&b).expect("b").health(), Health::Failing);
        // Past the cap a node counts only in its group.
        stats.add_for_node(&c, ok, ms);
        assert!(stats.node(&c).is_none());
        assert_eq!(stats.snapshot()["h"].total(), 1);
        // Forgetting one makes room for another.
        assert!(stats.forget_node(&a));
        assert!(!stats.forget_node(&a));
        stats.add_for_node(&c, ok, ms);
        assert_eq!(stats.node(&c).expect("c").requests, 1);
        assert_eq!(stats.tracked_nodes(), 2);
    }

    #[test]
    fn only_the_last_outcomes_are_kept() {
        let stats = DeliveryStats::default();
        let a = key("g/a");
        for _ in 0..RECENT_OUTCOMES + 5 {
            stats.add_for_node(&a, Outcome::Failed, Duration::ZERO);
        }
        stats.add_for_node(&a, Outcome::Replied(http::StatusCode::OK), Duration::ZERO);
        let seen = stats.node(&a).expect("a");
        assert_eq!(seen.recent.len(), RECENT_OUTCOMES);
        assert_eq!(seen.recent[0], HealthOutcome::Ok);
        assert_eq!(seen.health(), Health::Ok);
        assert_eq!(seen.requests, RECENT_OUTCOMES as u64 + 6);
    }

    #[test]
    fn series_fill_buckets_by_time_and_forget_after_fifteen_minutes() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let stats = DeliveryStats::default().with_clock(Arc::new(clock.clone()));
        let ok = Outcome::Replied(http::StatusCode::OK);
        for _ in 0..99 {
            stats.add("g", ok, Duration::from_millis(3));
        }
        stats.add("g", Outcome::Failed, Duration::from_millis(700));
        clock.advance(SERIES_STEP);
        stats.add("g", ok, Duration::from_micros(500));

        let series = stats.series("g").expect("g");
        assert_eq!(series.len(), SERIES_LEN);
        let (before, last) = (&series[SERIES_LEN - 2], &series[SERIES_LEN - 1]);
        assert_eq!((before.requests, before.errors), (100, 1));
        assert_eq!(before.p50, Some(Duration::from_millis(5)));
        assert_eq!(before.p99, Some(Duration::from_millis(5)));
        assert_eq!(last.requests, 1);
        assert_eq!(last.p99, Some(Duration::from_millis(1)));
        assert_eq!(
            last.start.as_millis() - before.start.as_millis(),
            10_000,
            "steps are 10 s apart"
        );
        assert!(series[..SERIES_LEN - 2].iter().all(|p| p.requests == 0));
        assert!(stats.series("nobody").is_none());

        // A full ring later the old buckets read as empty, and a bucket
        // reused for a new period starts from zero.
        clock.advance(SERIES_STEP * SERIES_LEN as u32);
        stats.add("g", ok, Duration::from_secs(20));
        let series = stats.series("g").expect("g");
        assert_eq!(series.iter().map(|p| p.requests).sum::<u64>(), 1);
        assert_eq!(
            series[SERIES_LEN - 1].p99,
            Some(Duration::from_secs(20)),
            "past the last bound: twice it"
        );
    }
}
