//! The durable truth about who is registered: the [`Registry`] trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Result, StoreError};
use crate::formation::{ChangePage, Instance, RetiredInstance};
use crate::model::{Node, NodeId, NodeKey, Registration};
use crate::time::Timestamp;

/// Stores registrations. Implemented by [`MemoryRegistry`](crate::MemoryRegistry),
/// the SQLite and MySQL stores, and by users.
///
/// The contract, checked by `testkit::conformance` (feature `testkit`):
/// - `(group, name)` is unique, the unnamed node included; concurrent upserts
///   of one key never make two rows.
/// - An upsert of an existing key updates it in place: same id, same
///   `created`, `updated = Some(now)`.
/// - Lists are ordered by id.
/// - A node is expired when `lease_until <= now`.
/// - Time is always an argument, never read from the clock.
/// - A [`version`](Registry::version), if the store gives one, moves with
///   every change and with nothing else.
/// - A store with a feed ([`changes`](Registry::changes)) records every
///   change in it, in the order the changes happened, and its version is
///   the position of its newest change.
/// - A store that keeps instances ([`announce_instance`](Registry::announce_instance))
///   removes, with an instance whose lease ran out, every node attached to
///   it (`attached:ID`), and records those removals in its feed.
///
/// A store that loses its backend returns a [`StoreError`] quickly rather
/// than hanging, saying whether the failure is temporary (worth retrying)
/// and keeping its cause.
///
/// ```
/// use mediator_core::{Endpoint, MemoryRegistry, NodeKey, Registration, Registry, Timestamp};
/// use std::time::Duration;
/// # tokio_test_block(async {
/// let registry = MemoryRegistry::new();
/// let now = Timestamp::from_millis(1_000);
/// let key = NodeKey::named("users", "api").unwrap();
/// let node = registry
///     .upsert(Registration::new(key.clone(), Endpoint::http("http://127.0.0.1:9000").unwrap(), Duration::from_secs(30)), now)
///     .await
///     .unwrap();
/// assert_eq!(registry.get(&key).await.unwrap(), Some(node));
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Inserts or updates the registration of `registration.key`; the lease
    /// runs until `now + registration.ttl`. Returns the stored node.
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError>;

    /// Extends the lease of `key` to `now + ttl` and records `now` as when
    /// the node was last heard from ([`Node::updated`](crate::Node::updated)).
    /// Returns the new end of the lease, or `None` when the key is not
    /// registered (the node should register again).
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// Removes a registration by id; returns how many went (0 or 1).
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError>;

    /// Removes a registration by key; returns how many went (0 or 1).
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError>;

    /// The registration of `key`, if any.
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError>;

    /// The registration with `id`, if any.
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError>;

    /// Every registration, or those of one group, ordered by id.
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError>;

    /// At most `limit` registrations (of one group, or all) whose id is
    /// above `after`, ordered by id: one page of [`list`](Self::list).
    ///
    /// The default reads the whole list and cuts the page from it; a store
    /// that can seek by id should override it so a page costs a page. The
    /// mediator's refresh reads the store in pages of 1,000, so with the
    /// default a store of n nodes is listed n / 1,000 times per refresh.
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        let nodes = self.list(group).await?;
        Ok(nodes
            .into_iter()
            .filter(|n| after.is_none_or(|after| n.id > after))
            .take(limit)
            .collect())
    }

    /// Removes every registration whose lease ended at or before `now`, and
    /// returns their keys.
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError>;

    /// Checks that the store answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A number that changes whenever the registrations change, whoever
    /// changes them (an upsert, a renewal, a removal, an eviction that
    /// removed something), and stays the same while nothing does; `None`
    /// when the store cannot tell, which is the default.
    ///
    /// A mediator reads it before each refresh of its routing table and
    /// skips the refresh when it is what the last refresh read: an idle
    /// store then costs nothing however many nodes it holds. So a store
    /// shared by several processes must count the changes of all of them,
    /// or answer `None`; a change made after a read of the version must
    /// give a different number on the next read.
    async fn version(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// The changes after position `after` (0: from the start), oldest
    /// first, at most `limit`; `None` when the store keeps no feed, which
    /// is the default (the mediators sharing it then reload it whole every
    /// [`sweep_every`](crate::Limits::sweep_every)).
    ///
    /// Every upsert, every renewal (a peer judges a node live by its
    /// lease), every removal and every eviction is one change. Positions
    /// only grow, and a change is never readable after one with a higher
    /// position was read: a follower that reads from its last position
    /// misses nothing. When changes after `after` were compacted away the
    /// page says so ([`ChangePage::gap`]) and the follower reloads.
    ///
    /// A store shared by several processes orders its changes across all
    /// of them (a counter taken under a lock in the same transaction).
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        let _ = (after, limit);
        Ok(None)
    }

    /// Forgets the changes at or before position `through`; returns how
    /// many went. A follower that still had to read one of them is told of
    /// the gap by [`changes`](Self::changes). The default keeps no feed,
    /// so forgets nothing.
    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        let _ = through;
        Ok(0)
    }

    /// Announces mediator instance `id`, reachable by its peers at `peer`,
    /// with a lease of `ttl` from `now`: inserts it (started now) or
    /// renews it (its start kept). Returns the instance as stored.
    ///
    /// The default refuses: a store that keeps no instances serves one
    /// mediator at a time.
    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        let _ = (id, peer, ttl, now);
        Err(StoreError::new(
            "this store keeps no mediator instances: one mediator at a time",
            false,
        ))
    }

    /// Every instance announced and not yet retired, ordered by id; the
    /// default keeps none.
    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(Vec::new())
    }

    /// Removes instance `id` (it is leaving) and the nodes attached to it;
    /// returns their keys.
    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        let _ = id;
        Ok(Vec::new())
    }

    /// Removes every instance whose lease ended at or before `now`, with
    /// the nodes attached to it; returns them.
    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        let _ = now;
        Ok(Vec::new())
    }

    /// The store's own copy of `node`, if it keeps its nodes in memory
    /// behind an [`Arc`] and holds one equal to `node` right now; `None`
    /// otherwise, which is the default.
    ///
    /// A mediator's routing table then holds that very copy rather than a
    /// second one: over [`MemoryRegistry`](crate::MemoryRegistry), each
    /// node is held once. Called with the table's writer lock held, so it
    /// must answer at once (no I/O).
    fn shared(&self, node: &Node) -> Option<Arc<Node>> {
        let _ = node;
        None
    }
}

#[async_trait]
impl<R: Registry + ?Sized> Registry for Arc<R> {
    async fn upsert(&self, registration: Registration, now: Timestamp) -> Result<Node, StoreError> {
        (**self).upsert(registration, now).await
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        (**self).renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        (**self).remove(id).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        (**self).remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        (**self).get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        (**self).get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        (**self).list(group).await
    }
    async fn list_page(
        &self,
        group: Option<&str>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Node>, StoreError> {
        (**self).list_page(group, after, limit).await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        (**self).evict_expired(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }
    async fn version(&self) -> Result<Option<u64>, StoreError> {
        (**self).version().await
    }
    async fn changes(&self, after: u64, limit: usize) -> Result<Option<ChangePage>, StoreError> {
        (**self).changes(after, limit).await
    }
    async fn compact_changes(&self, through: u64) -> Result<u64, StoreError> {
        (**self).compact_changes(through).await
    }
    async fn announce_instance(
        &self,
        id: &str,
        peer: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Instance, StoreError> {
        (**self).announce_instance(id, peer, ttl, now).await
    }
    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        (**self).instances().await
    }
    async fn retire_instance(&self, id: &str) -> Result<Vec<NodeKey>, StoreError> {
        (**self).retire_instance(id).await
    }
    async fn expire_instances(&self, now: Timestamp) -> Result<Vec<RetiredInstance>, StoreError> {
        (**self).expire_instances(now).await
    }
    fn shared(&self, node: &Node) -> Option<Arc<Node>> {
        (**self).shared(node)
    }
}
