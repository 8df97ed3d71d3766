//! The node's side of the protocol, whatever the transport.
//!
//! A node client (over HTTP, over QUIC, or a team's own) is a thin binding
//! over this module: it reads what the mediator hands over into a
//! [`Delivered`] and lets a [`Responder`] open it, run the node's
//! [`Handler`] on the [`Incoming`] request and seal the reply; it seals
//! its own calls with [`seal_request`] and opens the answers with
//! [`open_reply`]; and it keeps its registration alive by driving a
//! [`Lease`], which decides when to register, renew or back off.
//!
//! # Receiving requests
//!
//! The mediator tells a node who sent a request (verified from the
//! caller's token) and how the caller addressed it. [`open_request`]
//! checks every request against these rules before a handler sees it:
//!
//! - The target must be present and reach this node ([`Target::addresses`]):
//!   `g/n` must be its own key, `g/*` and `g/?` its own group. Anything else
//!   is refused with `421` (kind `misdirected`): the mediator, or whoever
//!   sent it, delivered it to the wrong node.
//! - The sender, when present, must be a node key (`400`, kind `invalid`);
//!   when the node demands a verified sender
//!   ([`Responder::require_sender`]) its absence is refused with `403` (kind
//!   `unverified_sender`).
//! - The body must open under the AAD of (sender, target, path)
//!   ([`aad`](crate::cipher::aad)): a payload sealed for another sender,
//!   target or path, under another key, or altered on the way, is refused
//!   with `400` (kind `sealed`).
//! - A request whose deadline has passed is answered `504` (kind
//!   `deadline_passed`) without running the handler; otherwise the handler
//!   is cut off at the deadline, both with [`DEADLINE_SLACK`] to spare so
//!   the mediator's own 504 reaches the caller first ([`within_deadline`]).
//!
//! Refusals and handler errors are [`Error`](crate::Error)s; a transport
//! answers with their [`status`](crate::Error::status),
//! [`kind`](crate::Error::kind) and [`fault`](crate::Error::fault). A
//! handler picks its own with [`Error::refused`](crate::Error::refused).
//!
//! # Leases
//!
//! A node registers with a lease and renews it every third of it,
//! shortened at random by up to a fifth; when the mediator answers a
//! renewal "not registered" (it restarted with an empty registry, or
//! evicted the node) the node registers again at once; when the mediator
//! cannot be reached it retries with exponential backoff and full jitter
//! ([`Backoff`]), so a restarted mediator is not hit by every node in the
//! same millisecond. [`Lease`] holds these rules and takes the time as an
//! argument, so they are tested without sleeping.
//!
//! # Calling
//!
//! The node client is written once, here: [`NodeClient`], built by a
//! [`NodeClientBuilder`], over any transport's [`Wire`] (a small trait:
//! send one sealed request and read its reply; join, renew and leave). It
//! presents the tokens of a [`TokenSource`] (fixed, or minted on the
//! client's clock and cached), seals every payload and opens every reply,
//! keeps a started node joined as its [`Lease`] says, reads the
//! mediator's and nodes' refusals as [`ErrorBody`](crate::ErrorBody), and
//! fails with one [`ClientError`], so a failed `call`, `any` or
//! `broadcast` reads the same whichever way it went. The HTTP and QUIC
//! transports' clients are this client over their wires.
//!
//! [`Target::addresses`]: crate::Target::addresses

mod client;
mod client_error;
mod incoming;
mod lease;
#[cfg(feature = "legacy")]
pub mod legacy;
mod replies;
mod respond;
mod seal;
mod tokens;

pub use client::{
    read_error_body, Join, Joined, Lost, Member, NodeClient, NodeClientBuilder, Renewal, Wire,
    WireEntry, WireReply, WireRequest, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, DEFAULT_TTL, GRACE,
};
pub use client_error::ClientError;
pub use incoming::{BoxFuture, Handler, Incoming};
pub use lease::{Action, Backoff, Jitter, Lease, RandomJitter, Step};
pub use replies::{BroadcastReplies, NodeReply};
pub use respond::{within_deadline, Responder, DEADLINE_SLACK};
pub use seal::{open_reply, open_request, seal_reply, seal_request, Delivered};
pub use tokens::{TokenSource, REMINT_MARGIN, TOKEN_LIFETIME};
