//! Turning an [`Envelope`] into replies: the [`Router`] and [`Deliver`]
//! traits, the in-memory routing table and the default router.
//!
//! The default router never touches the store on a request: it reads an
//! in-memory [`RoutingTable`] that the [`Mediator`](crate::Mediator) writes
//! through on every registration it sees and refreshes from the store for
//! changes made by other instances. Reads are lock-free (an `ArcSwap` of the
//! table); writes copy one group's entry, which keeps registration cheap
//! while requests never wait for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::{EndpointKind, Envelope, Node, NodeId, NodeKey, Reply, Target};
use crate::time::Timestamp;

/// When a delivery must be done by: a monotonic instant for timers and the
/// wall-clock equivalent to tell the node (`x-mediator-deadline`).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
    wall: Timestamp,
    budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now.
    ///
    /// A budget too large for the clock to represent (such as
    /// `Duration::MAX`, read as "no limit") waits [`Deadline::FAR`] instead
    /// of overflowing.
    pub fn after(budget: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Deadline {
            at: now
                .checked_add(budget)
                .unwrap_or_else(|| now + Deadline::FAR),
            wall: Timestamp::now() + budget,
            budget,
        }
    }

    /// How long a deadline waits at most when its budget overflows the
    /// clock: thirty years, which no delivery outlives.
    pub const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// The deadline as wall-clock time, for the node.
    pub fn wall(&self) -> Timestamp {
        self.wall
    }

    /// The whole budget the deadline was made with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The monotonic instant of the deadline.
    pub fn instant(&self) -> tokio::time::Instant {
        self.at
    }
}

/// Hands one request to one node over one transport.
///
/// Transports register one per [`EndpointKind`]. An implementation returns
/// [`Error::NodeUnreachable`] only when nothing of the request reached the
/// node (so the router may try another), [`Error::NodeFailed`] otherwise; the
/// router enforces the deadline around the call.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// The endpoint kind this deliverer reaches.
    fn kind(&self) -> EndpointKind;

    /// Delivers `envelope` to `node` and returns its reply.
    async fn deliver(&self, node: &Node, envelope: &Envelope, deadline: Deadline) -> Result<Reply>;
}

/// What a routed request produced.
#[derive(Debug, Clone)]
pub enum Routed {
    /// The reply of the one node that was asked.
    One {
        /// The node that answered.
        node: NodeKey,
        /// Its reply.
        reply: Reply,
    },
    /// The replies of every node of a group.
    Many(Broadcast),
}

/// Every node's result of a broadcast, and a summary.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// One entry per node asked, in registration (id) order.
    pub results: Vec<NodeResult>,
    /// The counts over `results`.
    pub summary: Summary,
}

/// One node's part of a broadcast.
#[derive(Debug, Clone)]
pub struct NodeResult {
    /// The node asked.
    pub node: NodeKey,
    /// Its registration id.
    pub id: NodeId,
    /// Its reply, or why there is none.
    pub outcome: Result<Reply>,
}

/// How a broadcast went: `asked = answered + failed + timed_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Summary {
    /// Nodes the request was sent to.
    pub asked: usize,
    /// Nodes that replied (whatever their status).
    pub answered: usize,
    /// Nodes that could not be reached or failed.
    pub failed: usize,
    /// Nodes that did not answer before the deadline.
    pub timed_out: usize,
}

impl Summary {
    /// Counts a broadcast's results.
    pub fn of(results: &[NodeResult]) -> Summary {
        let mut summary = Summary {
            asked: results.len(),
            ..Summary::default()
        };
        for result in results {
            match &result.outcome {
                Ok(_) => summary.answered += 1,
                Err(Error::DeadlinePassed { .. }) => summary.timed_out += 1,
                Err(_) => summary.failed += 1,
            }
        }
        summary
    }
}

/// Turns envelopes into replies. The default is [`DefaultRouter`]; wrap or
/// replace it for policies, ACLs or sharding.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Routes `envelope` to its target, finishing by `deadline`.
    async fn route(&self, envelope: Envelope, deadline: Deadline) -> Result<Routed>;
}

/// A node as the routing table holds it, with its count of requests in flight.
#[derive(Debug)]
struct Slot {
    node: Node,
    /// Shared by every slot that replaces this one for the same key (a
    /// renew, a re-registration, a refresh), so a request that started on
    /// the old slot is uncounted on the new one when it ends.
    outstanding: Arc<AtomicUsize>,
}

impl Slot {
    /// A slot for `node` that counts on `outstanding`.
    fn new(node: Node, outstanding: Arc<AtomicUsize>) -> Arc<Slot> {
        Arc::new(Slot { node, outstanding })
    }
}

/// Counts a request in flight on a slot for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(slot: Arc<Slot>) -> Self {
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&slot.outstanding))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct GroupRoutes {
    /// In id order, so broadcasts answer in a stable order.
    slots: Vec<Arc<Slot>>,
    /// Round-robin position among equally busy nodes.
    cursor: AtomicUsize,
}

/// The in-memory map from targets to nodes, read on every request.
#[derive(Debug, Default)]
pub struct RoutingTable {
    groups: ArcSwap<HashMap<String, Arc<GroupRoutes>>>,
    /// Serialises writers; readers never take it.
    write: Mutex<Writes>,
}

/// What writers share besides the table: enough to tell, when a refresh
/// from the store lands, which keys were written after it read the store.
#[derive(Debug, Default)]
struct Writes {
    /// Bumped by every write and every refresh mark.
    seq: u64,
    /// Refreshes marked and not yet finished.
    refreshing: usize,
    /// Keys written while a refresh was under way, with the `seq` of their
    /// last write. Empty whenever no refresh is.
    touched: HashMap<NodeKey, u64>,
    /// The mark of the last refresh applied.
    applied: u64,
}

/// A refresh under way: taken by [`RoutingTable::begin_refresh`] before
/// reading the store, and [applied](RefreshMark::apply) with what was read.
///
/// Writes to the table made in between (registrations, renewals,
/// removals, evictions this instance saw) win over the older store read.
#[derive(Debug)]
pub struct RefreshMark<'a> {
    table: &'a RoutingTable,
    seq: u64,
}

impl RefreshMark<'_> {
    /// Replaces the table with `nodes`, read from the store after this mark
    /// was taken, except for the keys written since, which keep what the
    /// writes left. Returns `false`, changing nothing, when a refresh
    /// marked later has already been applied (this read is older).
    pub fn apply(self, nodes: Vec<Node>) -> bool {
        let mut writes = self.table.writes();
        if self.seq < writes.applied {
            return false;
        }
        writes.applied = self.seq;
        let seq = self.seq;
        let written_since = |key: &NodeKey| writes.touched.get(key).is_some_and(|&at| at > seq);
        let current = self.table.groups.load();
        let mut kept: Vec<Arc<Slot>> = current
            .values()
            .flat_map(|g| g.slots.iter())
            .filter(|s| written_since(&s.node.key))
            .cloned()
            .collect();
        let nodes: Vec<Node> = nodes
            .into_iter()
            .filter(|n| !written_since(&n.key))
            .collect();
        kept.extend(RoutingTable::slots_for(&current, nodes));
        self.table.store_slots(&current, kept);
        // Only refreshes marked later may still land, and they compare
        // against their own, later, marks.
        writes.touched.retain(|_, at| *at > seq);
        // Released before `self` is dropped, which takes the lock again.
        drop(writes);
        true
    }
}

impl Drop for RefreshMark<'_> {
    fn drop(&mut self) {
        let mut writes = self.table.writes();
        writes.refreshing = writes.refreshing.saturating_sub(1);
        if writes.refreshing == 0 {
            writes.touched.clear();
        }
    }
}

impl RoutingTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, Writes> {
        // A poisoned writer lock only means another writer panicked; the table
        // itself is swapped atomically and always whole, so carry on.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to the slots of `key`'s group as one copy-on-write
    /// step, recording that `key` was written.
    fn edit_group(&self, key: &NodeKey, change: impl FnOnce(&mut Vec<Arc<Slot>>)) {
        let group = key.group();
        let mut writes = self.writes();
        writes.seq += 1;
        if writes.refreshing > 0 {
            let seq = writes.seq;
            writes.touched.insert(key.clone(), seq);
        }
        let current = self.groups.load();
        let old = current.get(group);
        let mut slots = old.map(|g| g.slots.clone()).unwrap_or_default();
        change(&mut slots);
        let mut next = HashMap::clone(&current);
        if slots.is_empty() {
            next.remove(group);
        } else {
            let cursor = old.map_or(0, |g| g.cursor.load(Ordering::Relaxed));
            next.insert(
                group.to_owned(),
                Arc::new(GroupRoutes {
                    slots,
                    cursor: AtomicUsize::new(cursor),
                }),
            );
        }
        self.groups.store(Arc::new(next));
    }

    /// Adds or replaces a node (write-through on registration).
    pub fn insert(&self, node: Node) {
        let key = node.key.clone();
        self.edit_group(&key, |slots| {
            let outstanding = match slots.iter().position(|s| s.node.key == node.key) {
                Some(i) => Arc::clone(&slots.remove(i).outstanding),
                None => Arc::default(),
            };
            // Re-placed by id: a key registered again may have a new id.
            let at = slots.partition_point(|s| s.node.id < node.id);
            slots.insert(at, Slot::new(node, outstanding));
        });
    }

    /// Sets a node's lease end, if the table has it (never adds it back).
    pub fn renew(&self, key: &NodeKey, lease_until: Timestamp) {
        self.edit_group(key, |slots| {
            if let Some(slot) = slots.iter_mut().find(|s| &s.node.key == key) {
                let mut node = slot.node.clone();
                node.lease_until = lease_until;
                *slot = Slot::new(node, Arc::clone(&slot.outstanding));
            }
        });
    }

    /// Removes a node; returns whether it was there.
    pub fn remove(&self, key: &NodeKey) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key);
            removed = slots.len() != before;
        });
        removed
    }

    /// Removes the registration `id` of `key`; returns whether it went. A
    /// registration of the same key under another id (the node registered
    /// again after `id` was removed from the store) stays.
    pub fn remove_id(&self, key: &NodeKey, id: NodeId) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key || s.node.id != id);
            removed = slots.len() != before;
        });
        removed
    }

    /// Removes a node whose lease has run out by `now` (an eviction);
    /// returns whether it went. A node the table holds with a later lease
    /// registered or renewed after the store evicted it, and stays.
    pub fn remove_expired(&self, key: &NodeKey, now: Timestamp) -> bool {
        let mut removed = false;
        self.edit_group(key, |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key || !s.node.is_expired(now));
            removed = slots.len() != before;
        });
        removed
    }

    /// Starts a refresh from the store: take the mark, read the store, then
    /// [apply](RefreshMark::apply) what was read.
    ///
    /// ```
    /// use mediator_core::router::RoutingTable;
    /// let table = RoutingTable::new();
    /// let mark = table.begin_refresh();
    /// let read = Vec::new(); // registry.list(None).await?
    /// assert!(mark.apply(read));
    /// assert!(table.is_empty());
    /// ```
    pub fn begin_refresh(&self) -> RefreshMark<'_> {
        let mut writes = self.writes();
        writes.seq += 1;
        writes.refreshing += 1;
        RefreshMark {
            table: self,
            seq: writes.seq,
        }
    }

    /// Slots for `nodes`, sharing the in-flight counters of the slots
    /// `current` holds for the same keys.
    fn slots_for(current: &HashMap<String, Arc<GroupRoutes>>, nodes: Vec<Node>) -> Vec<Arc<Slot>> {
        nodes
            .into_iter()
            .map(|node| {
                let outstanding = current
                    .get(node.key.group())
                    .and_then(|g| g.slots.iter().find(|s| s.node.key == node.key))
                    .map_or_else(Arc::default, |s| Arc::clone(&s.outstanding));
                Slot::new(node, outstanding)
            })
            .collect()
    }

    /// Swaps in a table of `slots`, grouped and in id order, keeping each
    /// surviving group's round-robin position. Called with the writer lock held.
    fn store_slots(&self, current: &HashMap<String, Arc<GroupRoutes>>, slots: Vec<Arc<Slot>>) {
        let mut next: HashMap<String, Vec<Arc<Slot>>> = HashMap::new();
        for slot in slots {
            next.entry(slot.node.key.group().to_owned())
                .or_default()
                .push(slot);
        }
        let table = next
            .into_iter()
            .map(|(group, mut slots)| {
                slots.sort_by_key(|s| s.node.id);
                let cursor = current
                    .get(&group)
                    .map_or(0, |g| g.cursor.load(Ordering::Relaxed));
                let routes = GroupRoutes {
                    slots,
                    cursor: AtomicUsize::new(cursor),
                };
                (group, Arc::new(routes))
            })
            .collect();
        self.groups.store(Arc::new(table));
    }

    /// The node registered as `key`, live or not.
    pub fn get(&self, key: &NodeKey) -> Option<Node> {
        self.slot(key).map(|s| s.node.clone())
    }

    /// Every node of `group` in id order, live or not.
    pub fn group(&self, group: &str) -> Vec<Node> {
        self.groups
            .load()
            .get(group)
            .map(|g| g.slots.iter().map(|s| s.node.clone()).collect())
            .unwrap_or_default()
    }

    /// How many nodes the table holds.
    pub fn len(&self) -> usize {
        self.groups.load().values().map(|g| g.slots.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.groups.load().is_empty()
    }

    fn slot(&self, key: &NodeKey) -> Option<Arc<Slot>> {
        self.groups
            .load()
            .get(key.group())
            .and_then(|g| g.slots.iter().find(|s| &s.node.key == key).cloned())
    }

    /// Picks a live node of `group` for an any-of-group request: the fewest
    /// requests in flight, round-robin among ties, skipping `exclude`.
    ///
    /// A request takes one round-robin turn and keeps it across retries, so a
    /// dead node's turns spread evenly over the others instead of always
    /// falling to its neighbour.
    fn pick_any(
        &self,
        group: &str,
        now: Timestamp,
        exclude: &[NodeId],
        turn: &mut Option<usize>,
    ) -> Pick {
        let groups = self.groups.load();
        let Some(routes) = groups.get(group) else {
            return Pick::UnknownGroup;
        };
        let live: Vec<&Arc<Slot>> = routes
            .slots
            .iter()
            .filter(|s| !s.node.is_expired(now) && !exclude.contains(&s.node.id))
            .collect();
        let Some(least) = live
            .iter()
            .map(|s| s.outstanding.load(Ordering::Relaxed))
            .min()
        else {
            return Pick::NoneLive;
        };
        let ties: Vec<&&Arc<Slot>> = live
            .iter()
            .filter(|s| s.outstanding.load(Ordering::Relaxed) == least)
            .collect();
        let turn = *turn.get_or_insert_with(|| routes.cursor.fetch_add(1, Ordering::Relaxed));
        Pick::Node(Arc::clone(ties[turn % ties.len()]))
    }
}

enum Pick {
    UnknownGroup,
    NoneLive,
    Node(Arc<Slot>),
}

/// The default [`Router`]: resolves targets from the [`RoutingTable`], picks
/// a node for `Any`, and hands each request to the [`Deliver`] registered for
/// the node's endpoint kind, under the deadline.
pub struct DefaultRouter {
    table: Arc<RoutingTable>,
    delivers: ArcSwap<HashMap<EndpointKind, Arc<dyn Deliver>>>,
}

impl std::fmt::Debug for DefaultRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultRouter")
            .field("nodes", &self.table.len())
            .field("delivers", &self.delivers.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DefaultRouter {
    /// A router over `table` with no deliverers yet.
    pub fn new(table: Arc<RoutingTable>) -> Self {
        DefaultRouter {
            table,
            delivers: ArcSwap::default(),
        }
    }

    /// Registers (or replaces) the deliverer for its endpoint kind.
    pub fn add_deliver(&self, deliver: Arc<dyn Deliver>) {
        self.delivers.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(deliver.kind(), Arc::clone(&deliver));
            next
        });
    }

    /// The routing table this router reads.
    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.table
    }

    fn deliverer(&self, node: &Node) -> Result<Arc<dyn Deliver>> {
        let kind = node.endpoint.kind();
        self.delivers
            .load()
            .get(&kind)
            .cloned()
            .ok_or_else(|| Error::NodeUnreachable {
                node: node.key.to_string(),
                reason: format!("this mediator has no transport for {kind:?} endpoints"),
            })
    }

    async fn deliver_to(
        &self,
        slot: Arc<Slot>,
        envelope: &Envelope,
        deadline: Deadline,
    ) -> Result<Reply> {
        let deliver = self.deliverer(&slot.node)?;
        deliver_under_deadline(deliver, slot, envelope, deadline).await
    }

    async fn one(&self, key: &NodeKey, envelope: &Envelope, deadline: Deadline) -> Result<Routed> {
        let slot = self
            .table
            .slot(key)
            .ok_or_else(|| Error::UnknownTarget(key.to_string()))?;
        if slot.node.is_expired(Timestamp::now()) {
            return Err(Error::NoNodeAvailable(format!("{key} (lease expired)")));
        }
        let reply = self.deliver_to(slot, envelope, deadline).await?;
        Ok(Routed::One {
            node: key.clone(),
            reply,
        })
    }

    async fn any(&self, group: &str, envelope: &Envelope, deadline: Deadline) -> Result<Routed> {
        let mut tried = Vec::new();
        let mut last_unreachable = None;
        let mut turn = None;
        loop {
            let slot = match self
                .table
                .pick_any(group, Timestamp::now(), &tried, &mut turn)
            {
                Pick::Node(slot) => slot,
                Pick::UnknownGroup => return Err(Error::UnknownTarget(format!("{group}/?"))),
                Pick::NoneLive => {
                    let why = match last_unreachable {
                        Some(e) => format!("{group} (every live node unreachable; last: {e})"),
                        None => group.to_owned(),
                    };
                    return Err(Error::NoNodeAvailable(why));
                }
            };
            tried.push(slot.node.id);
            let key = slot.node.key.clone();
            match self.deliver_to(slot, envelope, deadline).await {
                Ok(reply) => return Ok(Routed::One { node: key, reply }),
                // Nothing reached that node, so another may safely be tried.
                Err(e @ Error::NodeUnreachable { .. }) => {
                    tracing::debug!(node = %key, error = %e, "trying another node of the group");
                    last_unreachable = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn all(&self, group: &str, envelope: &Envelope, deadline: Deadline) -> Result<Routed> {
        let now = Timestamp::now();
        let slots: Vec<Arc<Slot>> = {
            let groups = self.table.groups.load();
            let Some(routes) = groups.get(group) else {
                return Err(Error::UnknownTarget(format!("{group}/*")));
            };
            routes
                .slots
                .iter()
                .filter(|s| !s.node.is_expired(now))
                .cloned()
                .collect()
        };
        if slots.is_empty() {
            return Err(Error::NoNodeAvailable(group.to_owned()));
        }
        let group_keys: Vec<(NodeKey, NodeId)> = slots
            .iter()
            .map(|s| (s.node.key.clone(), s.node.id))
            .collect();
        let envelope = Arc::new(envelope.clone());
        let mut tasks = tokio::task::JoinSet::new();
        let mut results: Vec<Option<NodeResult>> = Vec::with_capacity(slots.len());
        for (index, slot) in slots.into_iter().enumerate() {
            let (node, id) = (slot.node.key.clone(), slot.node.id);
            results.push(None);
            let deliver = match self.deliverer(&slot.node) {
                Ok(deliver) => deliver,
                Err(e) => {
                    results[index] = Some(NodeResult {
                        node,
                        id,
                        outcome: Err(e),
                    });
                    continue;
                }
            };
            let envelope = Arc::clone(&envelope);
            tasks.spawn(async move {
                let outcome = deliver_under_deadline(deliver, slot, &envelope, deadline).await;
                (index, NodeResult { node, id, outcome })
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, result)) => results[index] = Some(result),
                // A panicking deliverer must not take the broadcast down; its
                // entry is filled in as a failure below.
                Err(e) => tracing::error!(error = %e, "a broadcast delivery task failed"),
            }
        }
        let results: Vec<NodeResult> = results
            .into_iter()
            .zip(group_keys)
            .map(|(result, (node, id))| {
                result.unwrap_or_else(|| NodeResult {
                    outcome: Err(Error::NodeFailed {
                        node: node.to_string(),
                        reason: "delivery task failed".to_owned(),
                    }),
                    node,
                    id,
                })
            })
            .collect();
        let summary = Summary::of(&results);
        Ok(Routed::Many(Broadcast { results, summary }))
    }
}

/// Delivers to one node, counting it in flight and enforcing the deadline.
async fn deliver_under_deadline(
    deliver: Arc<dyn Deliver>,
    slot: Arc<Slot>,
    envelope: &Envelope,
    deadline: Deadline,
) -> Result<Reply> {
    let passed = || Error::DeadlinePassed {
        node: slot.node.key.to_string(),
        after: deadline.budget(),
    };
    // A timer that is already due may still lose the race against a fast
    // node, so a passed deadline is refused before anything is sent.
    if deadline.remaining().is_zero() {
        return Err(passed());
    }
    let _in_flight = InFlight::new(Arc::clone(&slot));
    match tokio::time::timeout_at(
        deadline.instant(),
        deliver.deliver(&slot.node, envelope, deadline),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(passed()),
    }
}

#[async_trait]
impl Router for DefaultRouter {
    async fn route(&self, envelope: Envelope, deadline: Deadline) -> Result<Routed> {
        match &envelope.target {
            Target::One(key) => self.one(key, &envelope, deadline).await,
            Target::Any(group) => self.any(group, &envelope, deadline).await,
            Target::All(group) => self.all(group, &envelope, deadline).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    fn node(k: &str, id: u64, lease_until: Timestamp) -> Node {
        Node {
            id: NodeId(id),
            key: k.parse().unwrap(),
            endpoint: Endpoint::http("http://127.0.0.1:9").unwrap(),
            meta: Default::default(),
            created: Timestamp::from_millis(0),
            updated: None,
            lease_until,
        }
    }

    fn outstanding(table: &RoutingTable, k: &NodeKey) -> usize {
        table
            .slot(k)
            .expect("in the table")
            .outstanding
            .load(Ordering::Relaxed)
    }

    /// A request in flight while its node's slot is replaced (a renew, a
    /// re-registration, a refresh) must still be uncounted when it ends,
    /// or the node looks busy forever and any-of-group avoids it.
    #[test]
    fn in_flight_counts_survive_slot_replacement() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let n = node("g/a", 1, lease);
        let k = n.key.clone();
        table.insert(n.clone());

        let request = InFlight::new(table.slot(&k).unwrap());
        table.renew(&k, lease + Duration::from_secs(1));
        table.insert(n.clone());
        assert!(table.begin_refresh().apply(vec![n]));
        assert_eq!(outstanding(&table, &k), 1, "the request is still in flight");
        drop(request);
        assert_eq!(
            outstanding(&table, &k),
            0,
            "the finished request still counts"
        );
    }

    /// `renew` only updates a node the table holds; racing a `remove`, it
    /// must never bring the removed node back.
    #[test]
    fn renew_never_resurrects_a_removed_node() {
        use std::sync::atomic::AtomicBool;
        let table = Arc::new(RoutingTable::new());
        let lease = Timestamp::from_millis(1_000_000);
        let n = node("g/a", 1, lease);
        let k = n.key.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let renewals = Arc::new(AtomicUsize::new(0));
        let renewer = std::thread::spawn({
            let (table, k, stop, renewals) = (
                Arc::clone(&table),
                k.clone(),
                Arc::clone(&stop),
                Arc::clone(&renewals),
            );
            move || {
                while !stop.load(Ordering::Relaxed) {
                    table.renew(&k, lease);
                    renewals.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let mut resurrected = 0;
        for _ in 0..5_000 {
            table.insert(n.clone());
            table.remove(&k);
            // Wait for a renewal that began after the removal to finish:
            // the one in progress may have read the node before it went.
            let seen = renewals.load(Ordering::SeqCst);
            while renewals.load(Ordering::SeqCst) < seen + 2 {
                std::thread::yield_now();
            }
            if table.get(&k).is_some() {
                resurrected += 1;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        renewer.join().unwrap();
        assert_eq!(resurrected, 0, "a renew brought a removed node back");
    }

    /// Broadcasts answer in id order; a key registered again under a new
    /// id moves to its new place.
    #[test]
    fn a_key_with_a_new_id_takes_its_place_in_id_order() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        table.insert(node("g/a", 1, lease));
        table.insert(node("g/b", 2, lease));
        table.insert(node("g/a", 3, lease));
        let ids: Vec<u64> = table.group("g").iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    /// Of two refreshes under way, the one that read the store later wins,
    /// whichever lands first.
    #[test]
    fn an_older_refresh_landing_late_changes_nothing() {
        let table = RoutingTable::new();
        let lease = Timestamp::from_millis(1_000_000);
        let older = table.begin_refresh();
        let newer = table.begin_refresh();
        assert!(newer.apply(vec![node("g/new", 2, lease)]));
        assert!(!older.apply(vec![node("g/old", 1, lease)]));
        let ids: Vec<u64> = table.group("g").iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![2]);
    }

    /// A deadline is total: an enormous budget means "no practical limit",
    /// not a panic on every request.
    #[test]
    fn a_huge_budget_does_not_panic() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() > Duration::from_secs(365 * 24 * 3600));
        assert_eq!(deadline.budget(), Duration::MAX);
        assert!(deadline.wall() > Timestamp::now());
    }
}
