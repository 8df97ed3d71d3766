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
    pub fn after(budget: Duration) -> Self {
        Deadline {
            at: tokio::time::Instant::now() + budget,
            wall: Timestamp::now() + budget,
            budget,
        }
    }

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
    outstanding: AtomicUsize,
}

/// Counts a request in flight on a slot for as long as it lives.
struct InFlight(Arc<Slot>);

impl InFlight {
    fn new(slot: Arc<Slot>) -> Self {
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
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
    write: Mutex<()>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `change` to the slots of `group` as one copy-on-write step.
    fn edit_group(&self, group: &str, change: impl FnOnce(&mut Vec<Arc<Slot>>)) {
        // A poisoned writer lock only means another writer panicked; the table
        // itself is swapped atomically and always whole, so carry on.
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
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
        let group = node.key.group().to_owned();
        self.edit_group(&group, |slots| {
            let fresh = |outstanding: usize| {
                Arc::new(Slot {
                    node: node.clone(),
                    outstanding: AtomicUsize::new(outstanding),
                })
            };
            match slots.iter().position(|s| s.node.key == node.key) {
                Some(i) => {
                    let busy = slots[i].outstanding.load(Ordering::Relaxed);
                    slots[i] = fresh(busy);
                }
                None => {
                    let at = slots.partition_point(|s| s.node.id < node.id);
                    slots.insert(at, fresh(0));
                }
            }
        });
    }

    /// Sets a node's lease end, if the table has it.
    pub fn renew(&self, key: &NodeKey, lease_until: Timestamp) {
        if let Some(mut node) = self.get(key) {
            node.lease_until = lease_until;
            self.insert(node);
        }
    }

    /// Removes a node; returns whether it was there.
    pub fn remove(&self, key: &NodeKey) -> bool {
        let mut removed = false;
        self.edit_group(key.group(), |slots| {
            let before = slots.len();
            slots.retain(|s| &s.node.key != key);
            removed = slots.len() != before;
        });
        removed
    }

    /// Replaces the whole table with `nodes` (a refresh from the store),
    /// keeping the in-flight counts of nodes that stay.
    pub fn replace_all(&self, nodes: Vec<Node>) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.groups.load();
        let mut next: HashMap<String, Vec<Arc<Slot>>> = HashMap::new();
        for node in nodes {
            let busy = current
                .get(node.key.group())
                .and_then(|g| g.slots.iter().find(|s| s.node.key == node.key))
                .map_or(0, |s| s.outstanding.load(Ordering::Relaxed));
            next.entry(node.key.group().to_owned())
                .or_default()
                .push(Arc::new(Slot {
                    node,
                    outstanding: AtomicUsize::new(busy),
                }));
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
