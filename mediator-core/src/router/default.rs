//! The default [`Router`]: targets resolved from the in-memory table, a
//! node picked for any-of-group, each delivery under the deadline and
//! recorded once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::table::{InFlight, Picked, RoutingTable, Slot};
use super::{Broadcast, NodeResult, Routed, Router, Summary};
use crate::clock::Clock;
use crate::context::RequestContext;
use crate::deliver::{Deliver, Deliverers};
use crate::error::{DeliverError, Error, Result};
use crate::formation::Forward;
use crate::model::{Envelope, Node, NodeId, NodeKey, Reply, Target};
use crate::policy::Pick;
use crate::record::{Delivery, Outcome, Recorder};

/// The default [`Router`]: resolves targets from the routing table, picks a
/// node for `Any` with the mediator's [`Pick`] policy, and hands each
/// request to the [`Deliver`] that serves the scheme of the node's
/// endpoint, under the deadline. Every delivery is counted in flight while
/// it lasts and reported to the recorders when it ends.
///
/// A mediator builds one; wrap it with
/// [`MediatorBuilder::wrap_router`](crate::MediatorBuilder::wrap_router).
///
/// Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct DefaultRouter {
    table: Arc<RoutingTable>,
    delivers: Arc<ArcSwap<Deliverers>>,
    pick: Arc<dyn Pick>,
    clock: Arc<dyn Clock>,
    recorders: Arc<[Arc<dyn Recorder>]>,
    /// Calls for nodes attached to other instances of the formation.
    forward: Option<Arc<Forward>>,
}

impl std::fmt::Debug for DefaultRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultRouter")
            .field("nodes", &self.table.len())
            .field("delivers", &self.delivers.load().schemes())
            .finish_non_exhaustive()
    }
}

impl DefaultRouter {
    pub(crate) fn new(
        table: Arc<RoutingTable>,
        delivers: Deliverers,
        pick: Arc<dyn Pick>,
        clock: Arc<dyn Clock>,
        recorders: Vec<Arc<dyn Recorder>>,
        forward: Option<Arc<Forward>>,
    ) -> Self {
        DefaultRouter {
            table,
            delivers: Arc::new(ArcSwap::from_pointee(delivers)),
            pick,
            clock,
            recorders: recorders.into(),
            forward,
        }
    }

    /// Adds a deliverer; refuses one that claims a scheme already served.
    pub(crate) fn add_deliver(&self, deliver: Arc<dyn Deliver>) -> Result<()> {
        let mut refused = None;
        self.delivers.rcu(|current| {
            let mut next = Deliverers::clone(current);
            refused = next.add(Arc::clone(&deliver)).err();
            next
        });
        refused.map_or(Ok(()), Err)
    }

    /// The deliverer serving endpoints of `scheme`.
    pub fn deliverer_for(&self, scheme: &str) -> Option<Arc<dyn Deliver>> {
        self.delivers.load().get(scheme).cloned()
    }

    /// The schemes of the endpoints this router can deliver to.
    pub fn schemes(&self) -> Vec<String> {
        self.delivers.load().schemes()
    }

    fn deliverer(&self, slot: &Slot) -> Result<Arc<dyn Deliver>, DeliverError> {
        if let Some(forward) = self.forward.as_ref().filter(|f| f.takes(&slot.node)) {
            return Ok(Arc::clone(forward) as Arc<dyn Deliver>);
        }
        let scheme = slot.node.endpoint.scheme();
        self.delivers.load().get(scheme).cloned().ok_or_else(|| {
            DeliverError::unreachable(format!(
                "this mediator has no transport for {scheme}: endpoints"
            ))
        })
    }

    /// Delivers to the node of `key`, whatever the envelope's target: a
    /// unicast, or one node of a group call another instance expanded.
    pub(crate) async fn one(
        &self,
        key: &NodeKey,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Routed> {
        let slot = self
            .table
            .slot(key)
            .ok_or_else(|| Error::UnknownTarget(key.to_string()))?;
        if slot.node.is_expired(self.clock.now()) {
            return Err(Error::NoNodeAvailable(format!("{key} (lease expired)")));
        }
        let reply = self.deliver(slot, envelope, cx).await?;
        Ok(Routed::One {
            node: key.clone(),
            reply,
        })
    }

    async fn any(&self, group: &str, envelope: &Envelope, cx: &RequestContext) -> Result<Routed> {
        let mut tried = Vec::new();
        let mut last_unreachable = None;
        let mut turn = None;
        loop {
            let picked =
                self.table
                    .pick_any(&*self.pick, group, self.clock.now(), &tried, &mut turn);
            let slot = match picked {
                Picked::Node(slot) => slot,
                Picked::UnknownGroup => return Err(Error::UnknownTarget(format!("{group}/?"))),
                Picked::NoneLive => {
                    let why = match last_unreachable {
                        Some(e) => format!("{group} (every live node unreachable; last: {e})"),
                        None => group.to_owned(),
                    };
                    return Err(Error::NoNodeAvailable(why));
                }
            };
            tried.push(slot.node.id);
            let key = slot.node.key.clone();
            match self.deliver(slot, envelope, cx).await {
                Ok(reply) => return Ok(Routed::One { node: key, reply }),
                // Nothing reached that node, so another may safely be tried.
                Err(e @ (Error::NodeUnreachable { .. } | Error::NoNodeAvailable(_))) => {
                    tracing::debug!(node = %key, error = %e, "trying another node of the group");
                    last_unreachable = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn all(&self, group: &str, envelope: &Envelope, cx: &RequestContext) -> Result<Routed> {
        let now = self.clock.now();
        let Some(slots) = self.table.live_slots(group, now) else {
            return Err(Error::UnknownTarget(format!("{group}/*")));
        };
        if slots.is_empty() {
            return Err(Error::NoNodeAvailable(group.to_owned()));
        }
        let asked: Vec<(NodeKey, NodeId)> = slots
            .iter()
            .map(|s| (s.node.key.clone(), s.node.id))
            .collect();
        let envelope = Arc::new(envelope.clone());
        // The deliveries share what does not depend on the node.
        let cx = Arc::new(cx.clone().sharing());
        let mut tasks = tokio::task::JoinSet::new();
        let mut results: Vec<Option<NodeResult>> = Vec::with_capacity(slots.len());
        for (index, slot) in slots.into_iter().enumerate() {
            results.push(None);
            let (router, envelope, cx) = (self.clone(), Arc::clone(&envelope), Arc::clone(&cx));
            tasks.spawn(async move {
                let (node, id) = (slot.node.key.clone(), slot.node.id);
                let outcome = router.deliver(slot, &envelope, &cx).await;
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
            .zip(asked)
            .map(|(result, (node, id))| {
                result.unwrap_or_else(|| NodeResult {
                    outcome: Err(Error::NodeFailed {
                        node: node.to_string(),
                        source: DeliverError::failed("delivery task failed"),
                    }),
                    node,
                    id,
                })
            })
            .collect();
        let summary = Summary::of(&results);
        Ok(Routed::Many(Broadcast { results, summary }))
    }

    /// Delivers to one node: counted in flight, under the deadline, and
    /// recorded when it ends.
    async fn deliver(
        &self,
        slot: Arc<Slot>,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply> {
        let started = Instant::now();
        let result = self.deliver_unrecorded(&slot, envelope, cx).await;
        self.record(
            &slot.node,
            &envelope.target,
            Outcome::of(&result, |reply| reply.status),
            started.elapsed(),
        );
        result
    }

    /// Tells the recorders how one delivery to `node` ended.
    pub(crate) fn record(&self, node: &Node, target: &Target, outcome: Outcome, latency: Duration) {
        if self.recorders.is_empty() {
            return;
        }
        let delivery = Delivery {
            node,
            target,
            outcome,
            latency,
        };
        for recorder in self.recorders.iter() {
            recorder.record(&delivery);
        }
    }

    /// The node a unicast or any-of-group call would be delivered to by
    /// this router, when that node is served by a deliverer of `scheme`
    /// in this instance (not forwarded to another): what a transport that
    /// makes the exchange itself may take ([`Mediator::pass`]). `tried`
    /// are the nodes an any-of-group call has already tried.
    ///
    /// [`Mediator::pass`]: crate::Mediator::pass
    pub(crate) fn passable(
        &self,
        target: &Target,
        scheme: &str,
        tried: &[NodeId],
        turn: &mut Option<usize>,
    ) -> Passable {
        let now = self.clock.now();
        let slot = match target {
            Target::One(key) => match self.table.slot(key) {
                Some(slot) if !slot.node.is_expired(now) => slot,
                _ => return Passable::No,
            },
            Target::Any(group) => match self.table.pick_any(&*self.pick, group, now, tried, turn) {
                Picked::Node(slot) => slot,
                Picked::UnknownGroup | Picked::NoneLive => return Passable::NoneLeft,
            },
            Target::All(_) => return Passable::No,
        };
        let local = self.forward.as_ref().is_none_or(|f| !f.takes(&slot.node));
        if local && slot.node.endpoint.scheme() == scheme {
            Passable::Node(slot)
        } else {
            Passable::No
        }
    }

    async fn deliver_unrecorded(
        &self,
        slot: &Arc<Slot>,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply> {
        let node = || slot.node.key.to_string();
        let deliver = self
            .deliverer(slot)
            .map_err(|source| Error::NodeUnreachable {
                node: node(),
                source,
            })?;
        let deadline = cx.deadline;
        let passed = || Error::DeadlinePassed {
            node: node(),
            after: deadline.budget(),
        };
        // A timer that is already due may still lose the race against a fast
        // node, so a passed deadline is refused before anything is sent.
        if deadline.remaining().is_zero() {
            return Err(passed());
        }
        let _in_flight = InFlight::new(Arc::clone(slot));
        match tokio::time::timeout_at(
            deadline.instant(),
            deliver.deliver(&slot.node, envelope, cx),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) if source.is_absent() => {
                Err(Error::NoNodeAvailable(format!("{} ({source})", node())))
            }
            Ok(Err(source)) if source.is_unreachable() => Err(Error::NodeUnreachable {
                node: node(),
                source,
            }),
            Ok(Err(source)) => Err(Error::NodeFailed {
                node: node(),
                source,
            }),
            Err(_) => Err(passed()),
        }
    }
}

/// What [`DefaultRouter::passable`] found.
pub(crate) enum Passable {
    /// The node, local and of the scheme asked for.
    Node(Arc<Slot>),
    /// No live node of the group is left to try.
    NoneLeft,
    /// The call is not for a pass-through: unknown or expired node,
    /// another scheme, another instance's node, or a broadcast.
    No,
}

#[async_trait]
impl Router for DefaultRouter {
    async fn route(&self, envelope: Envelope, cx: &RequestContext) -> Result<Routed> {
        match &envelope.target {
            Target::One(key) => self.one(key, &envelope, cx).await,
            Target::Any(group) => self.any(group, &envelope, cx).await,
            Target::All(group) => self.all(group, &envelope, cx).await,
        }
    }
}
