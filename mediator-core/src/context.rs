//! What travels with a request besides its envelope: who is calling, by
//! when it must be done, and how to trace it.

use crate::auth::Identity;
use crate::router::Deadline;

/// Correlation ids a request carries through the mediator to its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceContext {
    /// The request's id (`x-request-id`), given by the caller or started
    /// by the transport.
    pub request_id: Option<String>,
    /// The W3C trace context (`traceparent`), passed on unchanged.
    pub traceparent: Option<String>,
}

impl TraceContext {
    /// A trace context with a request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// A trace context with a W3C `traceparent`.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}

/// One request's context, as the [`Router`](crate::Router) and every
/// [`Deliver`](crate::Deliver) see it.
///
/// The caller is the one the mediator authenticated, so a router wrapper
/// can decide on its scopes (an ACL) and a deliverer can tell the node who
/// is asking.
///
/// ```
/// use mediator_core::{Deadline, Identity, RequestContext, TraceContext};
/// use std::time::Duration;
/// let cx = RequestContext::new(Identity::internal(), Deadline::after(Duration::from_secs(1)))
///     .with_trace(TraceContext::default().with_request_id("r-1"));
/// assert!(cx.caller.admin);
/// assert_eq!(cx.trace.request_id.as_deref(), Some("r-1"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestContext {
    /// Who is calling, as authenticated (see [`Identity::verified`]).
    pub caller: Identity,
    /// When the caller stops waiting.
    pub deadline: Deadline,
    /// Correlation ids.
    pub trace: TraceContext,
}

impl RequestContext {
    /// A context for `caller`, due by `deadline`, with no trace ids.
    pub fn new(caller: Identity, deadline: Deadline) -> Self {
        RequestContext {
            caller,
            deadline,
            trace: TraceContext::default(),
        }
    }

    /// Sets the trace ids.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = trace;
        self
    }
}
