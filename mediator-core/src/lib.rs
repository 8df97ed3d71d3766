//! The core of Mediator: a hub through which services ("nodes") talk to each
//! other by name.
//!
//! This crate holds everything that is not I/O: the [model]
//! (who a node is, where it is, what is sent), the [`Registry`] trait that
//! stores registrations and an in-memory implementation, the [`Router`] and
//! [`Deliver`] traits with the default router, the [`Cipher`] that nodes use
//! to seal payloads end to end, [token auth](crate::auth), and the
//! [`Mediator`] that composes them. Transports and stores live in their own
//! crates and plug in through these traits; the [node side](node) of the
//! protocol (opening and sealing, handlers, leases) is here too, so every
//! transport's node client is a thin binding over it.
//!
//! The conformance suite every registry must pass is exported under the
//! `testkit` feature as `testkit::conformance`; the original project's
//! AES-256-CBC cipher is available under the `legacy` feature.

#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod cipher;
mod error;
pub mod mediator;
mod memory;
pub mod model;
pub mod node;
pub mod registry;
pub mod router;
#[cfg(feature = "testkit")]
pub mod testkit;
mod time;

pub use auth::{Authenticator, Claims, Identity, TokenMinter};
pub use cipher::{Cipher, KeyRing, SealKey};
pub use error::{Error, Fault, Result};
pub use mediator::{Limits, Mediator, MediatorBuilder};
pub use memory::MemoryRegistry;
pub use model::{
    Endpoint, EndpointKind, Envelope, Meta, Node, NodeId, NodeKey, Registration, Reply, Target,
};
pub use registry::Registry;
pub use router::{
    Broadcast, Deadline, DefaultRouter, Deliver, NodeResult, Routed, Router, Summary,
};
pub use time::Timestamp;

/// Re-exported so implementors of the traits need not depend on it themselves.
pub use async_trait::async_trait;
