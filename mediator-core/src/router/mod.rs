//! Turning an [`Envelope`] into replies: the [`Router`] trait, what it
//! produces, the [`Deadline`] it works under, and the [`DefaultRouter`].
//!
//! The default router never touches the store on a request: it reads an
//! in-memory routing table ([`Routes`] is its read-only view) that the
//! [`Mediator`](crate::Mediator) writes through on every registration it
//! sees and refreshes from the store for changes made by other instances.

mod deadline;
mod default;
mod table;

use async_trait::async_trait;

use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::model::{Envelope, NodeId, NodeKey, Reply};

pub use deadline::Deadline;
pub use default::DefaultRouter;
pub(crate) use default::Passable;
pub use table::Routes;
pub(crate) use table::{InFlight as SlotInFlight, RoutingTable, Slot};

/// What a routed request produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
/// replace it for policies, ACLs or sharding, with
/// [`MediatorBuilder::wrap_router`](crate::MediatorBuilder::wrap_router).
///
/// The context says who is calling (as authenticated), by when the answer
/// is due, and the trace ids; the router must finish by the deadline.
///
/// ```
/// use mediator_core::*;
/// use std::sync::Arc;
///
/// /// Refuses callers whose token does not list the target group
/// /// explicitly, whatever the default rules allow.
/// struct ExplicitScopes(Arc<dyn Router>);
///
/// #[async_trait]
/// impl Router for ExplicitScopes {
///     async fn route(&self, envelope: Envelope, cx: &RequestContext) -> Result<Routed> {
///         let group = envelope.target.group();
///         let listed = cx.caller.scope.as_ref().is_some_and(|s| s.iter().any(|g| g == group));
///         if !listed {
///             return Err(Error::Forbidden(format!("{group} is not in this token's scope")));
///         }
///         self.0.route(envelope, cx).await
///     }
/// }
///
/// # fn compose() -> Result<Mediator> {
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
///     .wrap_router(|default| Arc::new(ExplicitScopes(Arc::new(default))))
///     .build()?;
/// # Ok(mediator) }
/// # compose().unwrap();
/// ```
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Routes `envelope` to its target, finishing by `cx.deadline`.
    async fn route(&self, envelope: Envelope, cx: &RequestContext) -> Result<Routed>;
}

#[async_trait]
impl<R: Router + ?Sized> Router for std::sync::Arc<R> {
    async fn route(&self, envelope: Envelope, cx: &RequestContext) -> Result<Routed> {
        (**self).route(envelope, cx).await
    }
}
