//! Handing one request to one node over one transport.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::RequestContext;
use crate::error::{DeliverError, Error, Result};
use crate::model::{Envelope, Node, Reply};

/// Hands one request to one node over one transport.
///
/// A deliverer says which endpoint schemes it serves ([`Endpoint::scheme`]:
/// `http`, `https`, `attached`, a team's own); the mediator picks it by the
/// scheme of the node's endpoint, and refuses two deliverers claiming the
/// same scheme. A deliverer may wrap another (to count, to forward to the
/// instance that holds an attached node, to add headers) by delegating
/// every method. Each delivery's [`RequestContext`] carries what the
/// mediator holds it to (the deadline, the caller, the endpoint policy), so
/// a wrapper passes it on and nothing else.
///
/// Return [`DeliverError::unreachable`] only when nothing of the request
/// reached the node (so the router may try another node of the group),
/// [`DeliverError::failed`] otherwise. The router enforces the deadline
/// around the call and records the outcome.
///
/// [`Endpoint::scheme`]: crate::Endpoint::scheme
///
/// ```
/// use mediator_core::*;
///
/// /// Answers every request for `echo:` endpoints with its own body.
/// struct Echo;
///
/// #[async_trait]
/// impl Deliver for Echo {
///     fn schemes(&self) -> Vec<String> { vec!["echo".into()] }
///     async fn deliver(&self, _node: &Node, envelope: &Envelope, _cx: &RequestContext)
///         -> Result<Reply, DeliverError> {
///         Ok(Reply::new(http::StatusCode::OK, envelope.body.clone()))
///     }
/// }
///
/// /// Wraps any deliverer and refuses bodies over 1 KiB before they leave.
/// struct Small<D>(D);
///
/// #[async_trait]
/// impl<D: Deliver> Deliver for Small<D> {
///     fn schemes(&self) -> Vec<String> { self.0.schemes() }
///     async fn deliver(&self, node: &Node, envelope: &Envelope, cx: &RequestContext)
///         -> Result<Reply, DeliverError> {
///         if envelope.body.len() > 1024 {
///             return Err(DeliverError::unreachable("body over 1 KiB not sent"));
///         }
///         self.0.deliver(node, envelope, cx).await
///     }
/// }
/// # let _ = Small(Echo);
/// ```
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// The endpoint schemes this deliverer serves.
    fn schemes(&self) -> Vec<String>;

    /// Delivers `envelope` to `node` and returns its reply.
    ///
    /// The mediator's [`EndpointPolicy`](crate::policy::EndpointPolicy)
    /// judges an endpoint at registration only when its host is an IP
    /// literal; a deliverer that resolves host names or opens connections
    /// itself refuses, at connect time, the addresses
    /// [`cx.endpoints`](RequestContext::endpoints) denies.
    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError>;

    /// The deliverer itself, for a transport that knows its type and can
    /// make some of its deliveries itself with the same settings (the HTTP
    /// transport's pass-through finds its `HttpDelivery` so). `None`, the
    /// default, keeps every delivery in [`deliver`](Self::deliver); a
    /// wrapper that changes what is delivered must leave it so.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

#[async_trait]
impl<D: Deliver + ?Sized> Deliver for Arc<D> {
    fn schemes(&self) -> Vec<String> {
        (**self).schemes()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }

    async fn deliver(
        &self,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        (**self).deliver(node, envelope, cx).await
    }
}

/// The deliverers of one mediator, by the scheme each serves.
#[derive(Clone, Default)]
pub(crate) struct Deliverers {
    by_scheme: HashMap<String, Arc<dyn Deliver>>,
}

impl std::fmt::Debug for Deliverers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut schemes: Vec<&String> = self.by_scheme.keys().collect();
        schemes.sort();
        f.debug_struct("Deliverers")
            .field("schemes", &schemes)
            .finish()
    }
}

impl Deliverers {
    /// Adds `deliver` for every scheme it claims; refuses, adding nothing,
    /// if it claims none or one that another deliverer serves.
    pub(crate) fn add(&mut self, deliver: Arc<dyn Deliver>) -> Result<()> {
        let schemes = deliver.schemes();
        if schemes.is_empty() {
            return Err(Error::Config(
                "a deliverer must serve at least one scheme".into(),
            ));
        }
        for scheme in &schemes {
            if self.by_scheme.contains_key(scheme) {
                return Err(Error::Config(format!(
                    "two deliverers claim endpoints of scheme {scheme:?}; wrap one in the other instead"
                )));
            }
        }
        for scheme in schemes {
            self.by_scheme.insert(scheme, Arc::clone(&deliver));
        }
        Ok(())
    }

    /// The deliverer for endpoints of `scheme`.
    pub(crate) fn get(&self, scheme: &str) -> Option<&Arc<dyn Deliver>> {
        self.by_scheme.get(scheme)
    }

    /// Every scheme served, sorted.
    pub(crate) fn schemes(&self) -> Vec<String> {
        let mut schemes: Vec<String> = self.by_scheme.keys().cloned().collect();
        schemes.sort();
        schemes
    }
}
