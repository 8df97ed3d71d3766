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
//! 2. **Towards callers**, a listener that authenticates what arrives with
//!    [`Mediator::authenticate`], then calls [`Mediator::register`],
//!    [`Mediator::renew`] or [`Mediator::route_with`], and writes the
//!    [`Routed`] result or the [`Error`] (its [`status`](Error::status),
//!    [`kind`](Error::kind) and [`fault`](Error::fault)) in its own framing.
//!
//! Its node client opens and seals payloads and keeps its lease with the
//! [node] module, so every transport's nodes behave alike. The workspace's
//! `examples/src/channel.rs` builds a whole in-process transport this way
//! in one page.
//!
//! The original project's AES-256-CBC cipher is available under the
//! `legacy` feature.

#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod cipher;
mod clock;
mod context;
mod deliver;
mod error;
pub mod mediator;
mod memory;
pub mod model;
pub mod node;
pub mod policy;
pub mod record;
pub mod registry;
pub mod router;
#[cfg(feature = "testkit")]
pub mod testkit;
mod time;

pub use auth::{Authenticator, Claims, Identity, TokenMinter};
pub use cipher::{Cipher, KeyRing, SealKey};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{RequestContext, TraceContext};
pub use deliver::Deliver;
pub use error::{AuthError, CipherError, DeliverError, Error, Fault, Result, StoreError};
pub use mediator::{Limits, Mediator, MediatorBuilder};
pub use memory::MemoryRegistry;
pub use model::{Endpoint, Envelope, Meta, Node, NodeId, NodeKey, Registration, Reply, Target};
pub use policy::Credentials;
pub use registry::Registry;
pub use router::{Broadcast, Deadline, DefaultRouter, NodeResult, Routed, Router, Routes, Summary};
pub use time::Timestamp;

/// Re-exported so implementors of the traits need not depend on it themselves.
pub use async_trait::async_trait;
