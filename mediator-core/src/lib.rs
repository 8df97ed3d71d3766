//! The core of Mediator: a hub through which services ("nodes") talk to each
//! other by name.
//!
//! This crate holds everything that is not I/O, and the seam every
//! transport plugs into:
//!
//! - the [model] (who a node is, where it is, what is sent) and the
//!   [`Registry`] trait that stores registrations, with an in-memory
//!   implementation and, under the `testkit` feature, the conformance suite
//!   every store passes (`testkit::conformance`);
//! - the [`Mediator`], built from a registry, [policies](policy)
//!   ([`Authenticate`](policy::Authenticate), [`Authorize`](policy::Authorize),
//!   [`Pick`](policy::Pick)), deliverers, limits and a [`Clock`];
//! - the [`Router`] (the default one, or yours wrapped around it) that
//!   turns an [`Envelope`] and a [`RequestContext`] into replies, and the
//!   [`Deliver`] trait a transport implements to reach nodes whose endpoint
//!   has its scheme;
//! - [`record`]: every delivery reported once, whatever the transport;
//!   [`request_log`]: every request's line, and the request counts of
//!   transports without metrics of their own;
//! - the [node] side of the protocol, which each transport's node client
//!   binds to its wire;
//! - the [`Cipher`] nodes seal payloads with, and [token auth](auth).
//!
//! # Adding a transport
//!
//! A transport has two halves, and neither needs a change here:
//!
//! 1. **Towards nodes**, a [`Deliver`] that serves a scheme of its own: the
//!    mediator hands it every request for a node whose [`Endpoint`] has that
//!    scheme, with the [`RequestContext`] (caller, deadline, trace). The
//!    router counts it in flight, enforces the deadline, retries an
//!    any-of-group request elsewhere when the deliverer says nothing was
//!    sent ([`DeliverError::unreachable`]), and records the outcome.
//! 2. **Towards callers**, a listener that frames what arrives: a call is
//!    read into an [`Inbound`](inbound::Inbound) and handed to
//!    [`Mediator::handle`], the one request lifecycle every transport
//!    shares (ids, authentication, authorization, deadline, the body under
//!    its bounds, admission, routing, the request line and the counts);
//!    the listener writes the [`Routed`] result or the [`Error`] (its
//!    [`status`](Error::status), [`kind`](Error::kind) and
//!    [`fault`](Error::fault)) in its own framing. Registrations go to
//!    [`Mediator::register`] and [`Mediator::renew`].
//!
//! Its node client is the [node] module's [`NodeClient`](node::NodeClient)
//! over the transport's own [`Wire`](node::Wire): sealing, opening, tokens
//! and leases are written once, so every transport's nodes behave alike. The workspace's
//! `examples/src/channel.rs` builds a whole in-process transport this way
//! in one page (inboxes, leases, calls and broadcasts). Its heart, with a
//! node answering straight from the deliverer:
//!
//! ```
//! use bytes::Bytes;
//! use http::{Method, StatusCode};
//! use mediator_core::node::{open_reply, seal_request, Delivered, Incoming, Responder};
//! use mediator_core::*;
//! use std::time::Duration;
//!
//! /// Towards nodes: endpoints `loop:NAME` are answered in process.
//! struct Loopback(Responder);
//!
//! #[async_trait]
//! impl Deliver for Loopback {
//!     fn schemes(&self) -> Vec<String> { vec!["loop".into()] }
//!     async fn deliver(&self, _node: &Node, envelope: &Envelope, cx: &RequestContext)
//!         -> Result<Reply, DeliverError> {
//!         // What a wire would carry: the routing facts as text, the sealed body.
//!         let (target, from) = (envelope.target.to_string(), envelope.from.as_ref().map(ToString::to_string));
//!         let deadline = cx.deadline.wall().as_millis().to_string();
//!         let delivered = Delivered::new(Method::POST, envelope.path(), &envelope.body)
//!             .with_target(target.as_str())
//!             .with_from(from.as_deref())
//!             .with_deadline(deadline.as_str());
//!         match self.0.answer(delivered, Timestamp::now()).await {
//!             Ok(sealed) => Ok(Reply::new(StatusCode::OK, sealed)),
//!             Err(e) => Err(DeliverError::failed(e.to_string())),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let keys = KeyRing::new(SealKey::generate());
//! let api = NodeKey::named("users", "api")?;
//! let handler = |request: Incoming| async move {
//!     Ok::<_, Error>(Bytes::from([b"hi ".as_slice(), &request.body].concat()))
//! };
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .deliver(Loopback(Responder::new(api.clone(), keys.clone(), handler)))
//!     .build()?;
//!
//! // Towards callers: register, then route a sealed request and open the reply.
//! let admin = Identity::internal();
//! let endpoint = Endpoint::custom("loop", "api")?;
//! mediator.register(&admin, Registration::new(api.clone(), endpoint, Duration::from_secs(30))).await?;
//! let me = NodeKey::named("billing", "worker")?;
//! let caller = Identity { key: Some(me.clone()), ..Identity::internal() };
//! let target = Target::One(api.clone());
//! let sealed = seal_request(&keys, Some(&me), &target, "/greet", b"ada")?;
//! let Routed::One { node, reply } = mediator.route(&caller, Envelope::new(target, "/greet", sealed), None).await? else {
//!     unreachable!("a unicast has one reply")
//! };
//! assert_eq!(open_reply(&keys, &node, Some(&me), "/greet", &reply.body)?, b"hi ada");
//! # Ok(()) }
//! ```
//!
//! The original project's AES-256-CBC cipher is available under the
//! `legacy` feature.

#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod budget;
pub mod cipher;
mod clock;
pub mod context;
mod deliver;
mod error;
pub mod formation;
pub mod inbound;
mod inflight;
pub mod mediator;
mod memory;
pub mod model;
pub mod node;
pub mod policy;
pub mod record;
pub mod registry;
pub mod request_log;
pub mod router;
pub mod store_stats;
#[cfg(feature = "testkit")]
pub mod testkit;
mod time;

pub use auth::{Authenticator, Claims, Identity, PasswordHash, TokenMinter};
pub use cipher::{Cipher, KeyRing, SealKey};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{RequestContext, TraceContext};
pub use deliver::Deliver;
pub use error::{
    error_chain, AuthError, CipherError, DeliverError, Error, ErrorBody, Fault, Result, StoreError,
};
pub use mediator::{Limits, Mediator, MediatorBuilder};
pub use memory::MemoryRegistry;
pub use model::{Endpoint, Envelope, Meta, Node, NodeId, NodeKey, Registration, Reply, Target};
pub use policy::Credentials;
pub use registry::Registry;
pub use router::{Broadcast, Deadline, DefaultRouter, NodeResult, Routed, Router, Routes, Summary};
pub use time::Timestamp;

/// Re-exported so implementors of the traits need not depend on it themselves.
pub use async_trait::async_trait;
