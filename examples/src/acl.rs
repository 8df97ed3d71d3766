//! An access list as a router wrapper, built from the public API only.
//!
//! The mediator's default [`Authorize`](mediator_core::policy::Authorize)
//! policy lets a caller call the groups its token's scope lists. Teams that
//! keep their rules in one place instead (which group may call which) wrap
//! the router: [`GroupAcl`] sees each request's
//! [`RequestContext`], with the caller the
//! mediator authenticated, before the default router delivers anything.
//!
//! ```
//! use mediator_core::*;
//! use mediator_examples::acl::GroupAcl;
//! use std::sync::Arc;
//!
//! # fn compose() -> Result<Mediator, Error> {
//! let acl = GroupAcl::new()
//!     .allow("billing", "users")
//!     .allow("billing", "ledger")
//!     .allow("users", "ledger");
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .wrap_router(move |default| Arc::new(acl.wrapping(default)))
//!     .build()?;
//! # Ok(mediator) }
//! # compose().unwrap();
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mediator_core::{async_trait, Envelope, Error, RequestContext, Routed, Router};

/// Which group's nodes may call which groups; everything else is refused
/// with 403, except for admins.
#[derive(Debug, Clone, Default)]
pub struct GroupAcl {
    allowed: HashMap<String, BTreeSet<String>>,
}

impl GroupAcl {
    /// An access list that allows nothing yet.
    pub fn new() -> Self {
        GroupAcl::default()
    }

    /// Lets nodes of group `from` call nodes of group `to`.
    pub fn allow(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.allowed
            .entry(from.into())
            .or_default()
            .insert(to.into());
        self
    }

    /// Whether a node of group `from` may call group `to`.
    pub fn allows(&self, from: &str, to: &str) -> bool {
        self.allowed
            .get(from)
            .is_some_and(|to_groups| to_groups.contains(to))
    }

    /// This list in front of `inner`.
    pub fn wrapping(self, inner: impl Router) -> AclRouter {
        AclRouter {
            acl: self,
            inner: Arc::new(inner),
        }
    }
}

/// A router that checks a [`GroupAcl`] before handing the request on.
pub struct AclRouter {
    acl: GroupAcl,
    inner: Arc<dyn Router>,
}

impl std::fmt::Debug for AclRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclRouter")
            .field("acl", &self.acl)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Router for AclRouter {
    async fn route(&self, envelope: Envelope, cx: &RequestContext) -> Result<Routed, Error> {
        let to = envelope.target.group();
        if cx.caller.admin {
            return self.inner.route(envelope, cx).await;
        }
        // Only a verified node identity has a group to look up: a token
        // that names no node, or the original's unverified kind, may not
        // call anything through an access list.
        let from = match (&cx.caller.key, cx.caller.verified) {
            (Some(key), true) => key.group(),
            _ => {
                return Err(Error::Forbidden(format!(
                    "calls to {to} need a token naming the calling node"
                )))
            }
        };
        if !self.acl.allows(from, to) {
            tracing::info!(%from, %to, "refused by the access list");
            return Err(Error::Forbidden(format!(
                "nodes of {from} may not call {to}"
            )));
        }
        self.inner.route(envelope, cx).await
    }
}
