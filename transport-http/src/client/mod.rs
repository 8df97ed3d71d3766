//! The Rust node client over HTTP.
//!
//! The node client is the core's ([`mediator_core::node::NodeClient`]),
//! written once for every transport over a
//! [`Wire`](mediator_core::node::Wire); this module is its HTTP wire
//! ([`HttpWire`]) and the HTTP settings around it.
//!
//! A node is a [`NodeClient`]: built with [`NodeClient::builder`], it either
//! [`start`](NodeClientBuilder::start)s (serves a callback HTTP server where
//! the mediator reaches it, registers, keeps its lease and deregisters on
//! [`shutdown`](NodeClient::shutdown)) or only
//! [`connect`](NodeClientBuilder::connect)s (a sender that is never called).
//! Either way it reaches other nodes through the mediator:
//!
//! - [`call`](mediator_core::node::NodeClient::call): one node by key (`POST /one/g/n/path`);
//! - [`any`](mediator_core::node::NodeClient::any): whichever node of a group the mediator picks
//!   (`POST /any/g/path`), and which one answered;
//! - [`broadcast`](mediator_core::node::NodeClient::broadcast): every node of a group
//!   (`POST /many/g/path`), each node's result and a [`Summary`].
//!
//! Every payload is sealed end to end with the node key ([`KeyRing`]): the
//! mediator sees only opaque bytes, and the additional authenticated data
//! binds sender, target and path (see [`mediator_core::cipher`]). The
//! node's side of that exchange is the core's ([`mediator_core::node`]),
//! whatever the transport; over HTTP it is usable without a `NodeClient` as
//! [`NodeService`] (a hyper service) and [`open_request`].
//!
//! # Example
//!
//! A mediator on a free loopback port, a node that answers and a node that
//! only calls:
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use mediator_core::{
//!     Authenticator, Claims, Error, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey, Timestamp,
//! };
//! use mediator_transport_http::client::Incoming;
//! use mediator_transport_http::{HttpDelivery, HttpListener, NodeClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Authenticator::hs256("a secret of at least 32 bytes!!!");
//! let minter = auth.minter().expect("an HS256 authenticator can mint");
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(auth)
//!     .deliver(HttpDelivery::default())
//!     .build()?;
//! let listener = HttpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr());
//! tokio::spawn(listener.serve(mediator));
//!
//! // Every node holds the node key; the mediator never does.
//! let keys = KeyRing::new(SealKey::generate());
//!
//! // A node that answers: serves its callback, registers, renews its lease.
//! let api = NodeClient::builder(&url)
//!     .identity("users", Some("api"))
//!     .token_minter(minter.clone())
//!     .keys(keys.clone())
//!     .callback("http://127.0.0.1:0") // port 0: any free port
//!     .start(|request: Incoming| async move {
//!         let caller = request.from.map(|key| key.to_string()).unwrap_or_default();
//!         let name = String::from_utf8_lossy(&request.body).into_owned();
//!         if name.is_empty() {
//!             // The caller gets 400 with this kind and message.
//!             return Err(Error::refused(400, "no_name", "whom should I greet?"));
//!         }
//!         Ok(Bytes::from(format!("hello {name}, from {caller}")))
//!     })
//!     .await?;
//!
//! // A node that only calls, with a token minted for it.
//! let me = NodeKey::named("billing", "worker-1")?;
//! let token = minter.mint(&Claims::node(&me, Timestamp::now(), Duration::from_secs(3600)))?;
//! let worker = NodeClient::builder(&url)
//!     .node_key(me)
//!     .token(token)
//!     .keys(keys)
//!     .connect()
//!     .await?;
//!
//! let reply = worker.call(NodeKey::named("users", "api")?, "/greet", "ada").await?;
//! assert_eq!(reply, "hello ada, from billing/worker-1");
//!
//! let (who, _) = worker.any("users", "/greet", "bob").await?;
//! assert_eq!(who.to_string(), "users/api");
//!
//! let replies = worker.broadcast("users", "/greet", "all").await?;
//! assert_eq!((replies.summary.asked, replies.summary.answered), (1, 1));
//!
//! api.shutdown().await?; // deregisters and stops the callback server
//! # Ok(()) }
//! ```
//!
//! # Receiving requests
//!
//! A started node answers through [`NodeService`], which applies the
//! core's rules ([`mediator_core::node`]) to every request: the
//! `x-mediator-target` header must reach this node (else `421`, kind
//! `misdirected`), `x-mediator-from` must be a node key and, when the node
//! demands one ([`NodeClientBuilder::require_sender`]), be there (`403`,
//! kind `unverified_sender`), the body must open under the AAD of (sender,
//! target, path) (`400`, kind `sealed`), and the handler is cut off at the
//! caller's `x-mediator-deadline` (`504`), with [`DEADLINE_SLACK`] to spare.
//!
//! A [`Handler`] returns the reply payload or a
//! [`mediator_core::Error`]; [`Error::refused`] answers with a status and
//! kind of its choosing. Every refusal and error is a JSON body
//! `{"error", "kind", "fault"}` ([`ErrorBody`]), the same type the mediator
//! writes and this client reads back, so the caller sees why. A
//! [`ClientError`] (from calling other nodes inside a handler) converts
//! with `?` and answers 500.
//!
//! # Leases
//!
//! A started node registers with a lease of `ttl` (default 30 s) and keeps
//! it as the core's [`Lease`](mediator_core::node::Lease) says: it renews
//! every third of the lease the mediator granted, shortened at random by
//! up to a fifth; when the mediator answers a renewal with 404 (it
//! restarted with an empty registry, or evicted the node) it registers
//! again at once; when the mediator cannot be reached it retries with
//! exponential backoff and full jitter ([`Backoff`]), so a restarted
//! mediator is not hit by every node in the same millisecond.
//!
//! # Errors
//!
//! Everything returns the core's [`ClientError`], the one error of every
//! transport's client. The mediator's own refusals are
//! [`ClientError::Mediator`] with its status and `kind` (`503`
//! `no_node_available` is not `504` `deadline_passed`); a node's error
//! answer is [`ClientError::Node`] with its status and `kind`; a mediator
//! that cannot be reached is [`ClientError::Unreachable`].
//!
//! # Time
//!
//! The builder's [`clock`](NodeClientBuilder::clock) is the one every part
//! reads: the lease keeper, minted tokens (a
//! [`TokenSource`](mediator_core::node::TokenSource)), the deadlines of
//! calls and of delivered requests.
//!
//! [`ErrorBody`]: mediator_core::ErrorBody
//! [`ClientError`]: mediator_core::node::ClientError
//! [`ClientError::Mediator`]: mediator_core::node::ClientError::Mediator
//! [`ClientError::Node`]: mediator_core::node::ClientError::Node
//! [`ClientError::Unreachable`]: mediator_core::node::ClientError::Unreachable
//! [`Summary`]: mediator_core::Summary
//! [`KeyRing`]: mediator_core::KeyRing
//! [`Error::refused`]: mediator_core::Error::refused

mod builder;
mod calls;
#[cfg(feature = "legacy")]
pub mod legacy;
mod node;
mod serve;
mod transport;
mod wire;

pub use builder::{NodeClientBuilder, DEFAULT_TIMEOUT, DEFAULT_TTL};
pub use calls::{BroadcastReplies, NodeClient, NodeReply};
pub use mediator_core::node::{
    open_reply, seal_reply, seal_request, Backoff, BoxFuture, ClientError, Handler, Incoming,
    DEADLINE_SLACK,
};
pub use node::{open_request, NodeService, DEFAULT_MAX_BODY, SEALED_CONTENT_TYPE};
pub use wire::HttpWire;
