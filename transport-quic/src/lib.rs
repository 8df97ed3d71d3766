//! QUIC transport for Mediator: nodes that dial out and stay attached,
//! delivery over their connections, and the Rust node client over QUIC.
//!
//! A node without a public address dials the mediator's [`QuicListener`]
//! (ALPN `mediator/1`, TLS 1.3 only), says hello with its token and stays
//! attached: it is registered with an [`attached`](mediator_core::Endpoint::attached)
//! endpoint naming this mediator instance, and the mediator reaches it by
//! opening a stream on its connection ([`AttachedDelivery`]). On the same
//! connection the node calls other nodes, whatever transport they use.
//! [`QuicNodeClient`] is the node's side.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use mediator_core::node::Incoming;
//! use mediator_core::{Authenticator, Error, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey};
//! use mediator_transport_quic::{QuicListener, QuicNodeClient, ServerTls};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = Authenticator::hs256("a secret of at least 32 bytes!!!");
//! let minter = auth.minter().expect("an HS256 authenticator can mint");
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(auth)
//!     .build()?;
//!
//! // A certificate generated now; clients pin its fingerprint.
//! let tls = ServerTls::self_signed(&["localhost"])?;
//! let listener = QuicListener::bind("127.0.0.1:0".parse()?, &tls)?;
//! mediator.add_deliver(listener.delivery())?;
//! let (addr, pin) = (listener.local_addr()?, listener.fingerprint().to_owned());
//! let serving = listener.clone();
//! tokio::spawn(async move { serving.serve(mediator).await });
//!
//! let keys = KeyRing::new(SealKey::generate());
//! let api = QuicNodeClient::builder(addr)
//!     .pin(&pin)
//!     .identity("users", Some("api"))
//!     .token_minter(minter.clone())
//!     .keys(keys.clone())
//!     .start(|request: Incoming| async move {
//!         Ok::<_, Error>(Bytes::from(format!("hello {}", String::from_utf8_lossy(&request.body))))
//!     })
//!     .await?;
//!
//! let worker = QuicNodeClient::builder(addr)
//!     .pin(&pin)
//!     .identity("billing", Some("worker-1"))
//!     .token_minter(minter)
//!     .keys(keys)
//!     .connect()
//!     .await?;
//! let reply = worker.call(NodeKey::named("users", "api")?, "/greet", "ada").await?;
//! assert_eq!(reply, "hello ada");
//! let (who, _) = worker.any("users", "/greet", "bob").await?;
//! assert_eq!(who.to_string(), "users/api");
//! let all = worker.broadcast("users", "/greet", "all").await?;
//! assert_eq!((all.summary.asked, all.summary.answered), (1, 1));
//!
//! api.shutdown().await; // the connection closes: the node is detached at once
//! listener.close();
//! # Ok(()) }
//! ```
//!
//! # Protocol
//!
//! **Connection.** QUIC with TLS 1.3 only and ALPN `mediator/1`. The
//! listener's certificate comes from PEM files or is generated at start
//! ([`ServerTls`]); clients either pin its SHA-256 fingerprint (logged at
//! bind, [`QuicListener::fingerprint`]) or trust a root PEM.
//! Both ends accept UDP payloads of up to 65,000 bytes and search the
//! path MTU up to that size, so that where the path carries more than
//! Ethernet (loopback, jumbo frames) a large body takes a few datagrams
//! instead of dozens; elsewhere discovery stops at what the path carries.
//!
//! **Frames.** Every stream carries one request and its answer. Each
//! direction is a *header frame* — a 4-byte big-endian length, then that
//! many bytes of UTF-8 JSON — followed by the body, raw, until the stream's
//! end. Header frames are limited ([`QuicLimits::max_header`], 16 KiB by
//! default; `431 header_too_large` past it), bodies by the mediator's
//! [`Limits::max_body`](mediator_core::Limits::max_body) (`413 too_large`).
//!
//! **Hello.** The node opens the connection's first bidirectional stream
//! and sends `{"token", "attach": {"group", "name", "meta", "ttl_ms"}}`
//! (without `attach` for a caller-only client). The mediator authenticates
//! the token, registers the node (same policies as HTTP) with the endpoint
//! `attached:<instance>`, and answers `{"status": 200, "node",
//! "lease_until_ms", "instance"}`, or `{"status", "kind", "fault",
//! "message"}` and closes the connection. The handshake and the hello
//! together must finish within [`QuicLimits::handshake_timeout`] (5 s).
//! The token must prove who holds it: one without `sub` (the original's
//! kind, which an authenticator may accept with
//! [`allow_tokens_without_sub`](mediator_core::Authenticator::allow_tokens_without_sub)
//! for its HTTP children) is refused with `403 forbidden`, attaching or
//! not, so it can never attach as a node and supersede it. An identity
//! (the node key attached, else the token's `sub`) holding
//! [`QuicLimits::max_connections_per_identity`] connections already (16)
//! is refused with `429 too_many_connections`.
//!
//! **Delivery** (mediator to node): the mediator opens a bidirectional
//! stream on the node's connection and sends `{"method", "path"
//! (with the query), "target" (`g/n`, `g/*`, `g/?`), "from", "deadline_ms"
//! (ms since the Unix epoch), "request_id", "traceparent"}` and the sealed
//! body. The node answers `{"status": 200}` and the sealed reply, or
//! `{"status", "kind", "fault", "message"}` for a refusal (the
//! [`Responder`](mediator_core::node::Responder)'s rules). A node attached
//! to another mediator instance, or whose connection is gone, is
//! unreachable (nothing was sent); a connection lost mid-request fails the
//! delivery at once (502 `node_failed`).
//!
//! **Calls** (node to mediator): the node opens a bidirectional stream and
//! sends `{"method", "path", "target", "timeout_ms", "request_id",
//! "traceparent"}` and the sealed body; the mediator routes it as
//! `/one`, `/any` or `/many` would be routed over HTTP (same caller, same
//! policies, the deadline being `timeout_ms`, capped by the mediator's).
//! The answer is `{"status", "node"}` and the node's sealed reply (a
//! node's refusal keeps its status, kind and message), or the mediator's
//! error `{"status", "kind", "fault", "message"}` without `node` (404
//! unknown target, 403 forbidden, 408 timeout, 413 too large, 502 node
//! failed, 503 no node available or overloaded, 504 deadline). For a
//! broadcast (`g/*`) the answer is
//! `{"status": 200, "summary": {"asked", "answered", "failed",
//! "timed_out"}, "results": [{"node", "id", "status", "answered", "len",
//! "kind", "fault", "message"}]}` followed by the bodies of the results,
//! concatenated, each `len` bytes.
//!
//! A call is held to what an HTTP request is held to:
//!
//! - `request_id` and `traceparent` are checked by
//!   [`TraceContext::accept`](mediator_core::TraceContext::accept), as the
//!   HTTP transport checks `x-request-id` and `traceparent`: a malformed or
//!   overlong id is replaced by a new one, an invalid traceparent starts a
//!   new trace. Nodes and the answer's `request_id` carry the checked id.
//!   The path must be a URI path (`400 invalid` otherwise).
//! - The header frame and the whole body must arrive within the mediator's
//!   [`Limits::deadline`](mediator_core::Limits::deadline) from the
//!   stream's opening, or the call is answered `408 timeout` (fault
//!   `caller`) and the stream stopped.
//! - The body is counted against the mediator's
//!   [body budget](mediator_core::Mediator::body_budget) chunk by chunk as
//!   it arrives, and held until its delivery ends: past the budget the
//!   call is answered `503 overloaded` and reading stops.
//! - A call stream only frames: the listener reads its header frame and
//!   hands the call to the core's request lifecycle
//!   ([`Mediator::handle`](mediator_core::Mediator::handle)), the one every
//!   transport uses, which checks it, reads its body from the stream,
//!   routes it, writes its one request line (the one HTTP's calls get, with
//!   `transport=quic`) to the mediator's
//!   [`RequestLog`](mediator_core::request_log::RequestLog), and counts it
//!   in the mediator's
//!   [`TransportStats`](mediator_core::request_log::TransportStats) under
//!   `transport="quic"`, which the HTTP transport's `/metrics` renders
//!   beside its own requests, with the number of attached nodes.
//!
//! # Attachments and timeouts
//!
//! - A connection's loss (close, idle timeout, reset) detaches its node at
//!   once: it is removed from the mediator if its registration is still
//!   this connection's. The listener's idle timeout is 30 s and keep-alive
//!   10 s ([`QuicLimits::idle_timeout`], [`QuicLimits::keep_alive`]), a
//!   node's 10 s and 3 s ([`QuicNodeClientBuilder::idle`]); a connection
//!   takes the shorter idle timeout, so an idle attachment stays up, a
//!   vanished node is detached within 10 s, and a node whose mediator went
//!   silent attaches at the next one it knows within 10 s.
//! - An attachment's lease lives as long as its connection: while the
//!   connection lives the listener renews the lease every third of the
//!   ttl, on the mediator's [clock](mediator_core::Mediator::clock) (so a
//!   `ManualClock` drives it), and registers the node again if the
//!   registration was lost; the lease only matters if the listener itself
//!   dies without closing the connection.
//! - The token presented in the hello is the connection's credential for
//!   its whole life. When its `exp` passes on the mediator's clock the
//!   listener closes the connection (code 5, "token expired") and detaches
//!   its node; the client reconnects as after any loss, and one built with
//!   a [`token_minter`](QuicNodeClientBuilder::token_minter) says hello
//!   with a fresh token (its own tokens live an hour). A client given one
//!   fixed [`token`](QuicNodeClientBuilder::token) keeps being refused
//!   until it is rebuilt with a new one.
//! - A second attachment under the same name wins: the older connection
//!   is closed with application code 1 and the reason "superseded by a
//!   newer attachment of g/n", and its client does not reconnect
//!   ([`QuicNodeClient::is_superseded`]).
//! - A client whose connection is lost otherwise (mediator restart,
//!   network) reconnects and attaches again with exponential backoff and
//!   full jitter ([`Backoff`](mediator_core::node::Backoff)).
//! - Connection close codes: 0 done, 1 superseded, 2 mediator shutting
//!   down, 3 protocol error (bad hello), 4 hello refused, 5 the hello's
//!   token expired.
//!
//! # Limits
//!
//! [`QuicLimits`]: the number of connections (more handshakes are
//! refused), the connections one identity may hold at once, request
//! streams open at once per connection (QUIC's own
//! stream limit, so a node flooding the mediator waits for its own
//! streams and nobody else's), the header frame size and the handshake
//! timeout. A client limits the deliveries open to it at once
//! ([`QuicNodeClientBuilder::max_streams`]) and the bodies it accepts
//! ([`QuicNodeClientBuilder::max_body`]).

#![warn(clippy::unwrap_used)]

mod client;
mod error;
mod frame;
mod listener;
mod socket;
mod tls;

pub use client::{
    BroadcastReplies, NodeReply, QuicNodeClient, QuicNodeClientBuilder, QuicWire, DEFAULT_MAX_BODY,
    DEFAULT_TIMEOUT, DEFAULT_TTL,
};
pub use error::QuicError;
pub use frame::{ALPN, DEFAULT_MAX_HEADER};
pub use listener::{AttachedDelivery, QuicLimits, QuicListener};
pub use mediator_core::node::ClientError;
pub use tls::{pinned_client_config, ServerTls};
