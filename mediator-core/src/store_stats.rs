//! How the mediator's calls to its [`Registry`] go: count, errors and
//! latency per operation, kept in one place by a thin wrapper the builder
//! puts around every registry.
//!
//! ```
//! use mediator_core::store_stats::StoreOp;
//! use mediator_core::*;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .build()?;
//! mediator.nodes(None).await?;
//! let list = mediator.store_stats().snapshot(StoreOp::List);
//! assert_eq!((list.calls, list.errors), (1, 0));
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::StoreError;
use crate::formation::{ChangePage, Instance, RetiredInstance};
use crate::model::{Node, NodeId, NodeKey, Registration};
use crate::registry::Registry;
use crate::time::Timestamp;

/// One kind of call to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`Registry::upsert`].
    Upsert,
    /// [`Registry::renew`].
    Renew,
    /// [`Registry::remove`].
    Remove,
    /// [`Registry::remove_key`].
    RemoveKey,
    /// [`Registry::get`].
    Get,
    /// [`Registry::get_by_id`].
    GetById,
    /// [`Registry::list`].
    List,
    /// [`Registry::list_page`].
    ListPage,
    /// [`Registry::evict_expired`].
    EvictExpired,
    /// [`Registry::ping`].
    Ping,
    /// [`Registry::changes`].
    Changes,
    /// [`Registry::compact_changes`].
    CompactChanges,
    /// [`Registry::announce_instance`].
    AnnounceInstance,
    /// [`Registry::instances`].
    Instances,
    /// [`Registry::retire_instance`].
    RetireInstance,
    /// [`Registry::expire_instances`].
    ExpireInstances,
}

impl StoreOp {
    /// Every operation, in a fixed order.
    pub const ALL: [StoreOp; 16] = [
        StoreOp::Upsert,
        StoreOp::Renew,
        StoreOp::Remove,
        StoreOp::RemoveKey,
        StoreOp::Get,
        StoreOp::GetById,
        StoreOp::List,
        StoreOp::ListPage,
        StoreOp::EvictExpired,
        StoreOp::Ping,
        StoreOp::Changes,
        StoreOp::CompactChanges,
        StoreOp::AnnounceInstance,
        StoreOp::Instances,
        StoreOp::RetireInstance,
        StoreOp::ExpireInstances,
    ];

    /// The operation's label in metrics, the name of the trait method.
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Upsert => "upsert",
            StoreOp::Renew => "renew",
            StoreOp::Remove => "remove",
            StoreOp::RemoveKey => "remove_key",
            StoreOp::Get => "get",
            StoreOp::GetById => "get_by_id",
            StoreOp::List => "list",
            StoreOp::ListPage => "list_page",
            StoreOp::EvictExpired => "evict_expired",
            StoreOp::Ping => "ping",
            StoreOp::Changes => "changes",
            StoreOp::CompactChanges => "compact_changes",
            StoreOp::AnnounceInstance => "announce_instance",
            StoreOp::Instances => "instances",
            StoreOp::RetireInstance => "retire_instance",
            StoreOp::ExpireInstances => "expire_instances",
        }
    }
}

/// Upper bounds of the store latency buckets: an embedded store answers in
/// microseconds, a remote one in milliseconds, a sick one in seconds.
pub const STORE_LATENCY_BUCKETS: [Duration; 12] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

#[derive(Default)]
struct OpCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Per bucket, not cumulative; the last slot is past the last bound.
    buckets: [AtomicU64; STORE_LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// One operation's calls so far, read from [`StoreStats::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpSnapshot {
    /// Calls made, failed or not.
    pub calls: u64,
    /// Calls that answered an error.
    pub errors: u64,
    /// Calls per latency bucket, cumulative, as Prometheus histograms
    /// count them: one per bound of [`STORE_LATENCY_BUCKETS`], then the
    /// total.
    pub cumulative_buckets: Vec<u64>,
    /// The sum of every call's latency.
    pub latency_sum: Duration,
}

/// Counters of the mediator's registry calls, per [`StoreOp`]
/// ([`Mediator::store_stats`](crate::Mediator::store_stats)); recording
/// costs a few relaxed atomic additions.
#[derive(Default)]
pub struct StoreStats {
    ops: [OpCounters; StoreOp::ALL.len()],
}

impl std::fmt::Debug for StoreStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreStats").finish_non_exhaustive()
    }
}

impl StoreStats {
    /// Counts one call of `op` that took `latency`.
    pub fn add(&self, op: StoreOp, latency: Duration, failed: bool) {
        let counters = &self.ops[op as usize];
        counters.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = STORE_LATENCY_BUCKETS.partition_point(|&bound| bound < latency);
        counters.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        counters.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters of `op` so far.
    pub fn snapshot(&self, op: StoreOp) -> OpSnapshot {
        let counters = &self.ops[op as usize];
        let mut seen = 0;
        let cumulative_buckets = counters
            .buckets
            .iter()
            .map(|count| {
                seen += count.load(Ordering::Relaxed);
                seen
            })
            .collect();
        OpSnapshot {
            calls: counters.calls.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            cumulative_buckets,
            latency_sum: Duration::from_nanos(counters.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The registry the mediator calls: the configured one, timed.
pub(crate) struct TimedRegistry {
    inner: Arc<dyn Registry>,
    stats: Arc<StoreStats>,
}

impl TimedRegistry {
    pub(crate) fn new(inner: Arc<dyn Registry>, stats: Arc<StoreStats>) -> Self {
        TimedRegistry { inner, stats }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.stats.add(op, started.elapsed(), result.is_err());
        result
    }
}

#[async_trait]
impl Registry for TimedRegistry {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        self.timed(StoreOp::Upsert, self.inner.upsert(registration, now))
            .await
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.timed(StoreOp::Renew, self.inner.renew(key, ttl, now))
            .await
    }
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        self.timed(StoreOp::Remove, self.inner.remove(id)).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        self.timed(StoreOp::RemoveKey, self.inner.remove_key(key))
            .await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        self.timed(StoreOp::Get, self.inner.get(key)).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        self.timed(StoreOp::GetById, self.inner.get_by_id(id)).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        self.timed(StoreOp::List, self.inner.list(group)).await
    }
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        self.timed(StoreOp::ListPage, self.inner.list_page(group, after, limit))
            .await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        self.timed(StoreOp::EvictExpired, self.inner.evict_expired(now))
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::Ping, self.inner.ping()).await
    }
    // Untimed: one cheap read per refresh period, not worth a row of
    // its own beside the operations that carry the load.
    async fn version(&self) -> Result<Option<u64>, StoreError> {
        self.inner.version().await
    }
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        self.timed(StoreOp::Changes, self.inner.changes(after, limit))
            .await
    }
    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        self.timed(StoreOp::CompactChanges, self.inner.compact_changes(through))
            .await
    }
    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        self.timed(
            StoreOp::AnnounceInstance,
            self.inner.announce_instance(id, peer, ttl, now),
        )
        .await
    }
    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.timed(StoreOp::Instances, self.inner.instances()).await
    }
    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        self.timed(StoreOp::RetireInstance, self.inner.retire_instance(id))
            .await
    }
    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        self.timed(StoreOp::ExpireInstances, self.inner.expire_instances(now))
            .await
    }
    fn shared(&self, node: &Node) -> Option<Arc<Node>> {
        self.inner.shared(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_latency_are_counted_per_operation() {
        let stats = StoreStats::default();
        stats.add(StoreOp::Upsert, Duration::from_micros(50), false);
        stats.add(StoreOp::Upsert, Duration::from_millis(3), true);
        stats.add(StoreOp::Upsert, Duration::from_secs(9), false);
        let upsert = stats.snapshot(StoreOp::Upsert);
        assert_eq!((upsert.calls, upsert.errors), (3, 1));
        assert_eq!(upsert.cumulative_buckets[0], 1);
        assert_eq!(upsert.cumulative_buckets[5], 2, "3 ms is within 5 ms");
        assert_eq!(upsert.cumulative_buckets[11], 2, "9 s is past 2 s");
        assert_eq!(upsert.cumulative_buckets[12], 3);
        assert_eq!(
            upsert.latency_sum,
            Duration::from_micros(50) + Duration::from_millis(3) + Duration::from_secs(9)
        );
        assert_eq!(stats.snapshot(StoreOp::Ping).calls, 0);
    }
}
