//! HTTP transport for Mediator: the mediator's HTTP API, delivery to nodes
//! that registered an HTTP callback, and the Rust node client.
//!
//! # Serving a mediator
//!
//! [`HttpListener`] serves a [`Mediator`](mediator_core::Mediator) over
//! HTTP/1.1 and HTTP/2 on one port, in clear text or over TLS
//! ([`TlsConfig`], ALPN `h2` and `http/1.1`). It speaks the original
//! project's routes and shapes, so its Node children work unchanged, and
//! ours beside them; the [`server`] module lists every route. Shutting
//! down with [`HttpListener::serve_with_shutdown`] stops accepting, lets
//! requests in flight finish within a drain timeout, and returns.
//!
//! The listener is built on [`MediatorService`], the same API as a tower
//! `Service` that any hyper or axum server can mount (under a prefix of
//! its own, beside its own routes); its docs say how. The API, the
//! operator's console ([`MediatorService::console`], with the `console`
//! feature) and the metrics ([`MediatorService::metrics`]) are services of
//! their own, sharing one state, to mount side by side or serve on
//! listeners of their own; [`HttpListener::serve_service_with_shutdown`]
//! serves any tower service, layers and all.
//!
//! A call (`/one`, `/any`, `/many`) is framed here and run by the core's
//! request lifecycle ([`Mediator::handle`](mediator_core::Mediator::handle)),
//! the one every transport hands its calls to.
//!
//! # Features
//!
//! - `console`: the operator's console, its pages, script and sessions.
//!   Off by default; the `mediator` binary turns it on. Without it the
//!   console's paths answer `404`, saying the build has none.
//! - `legacy`: the original project's cipher and body shapes.
//!
//! The listener only answers requests: the background sweep that expires
//! leases and refreshes the routing table is started by whoever composes
//! the mediator, with [`Mediator::spawn_maintenance`](mediator_core::Mediator::spawn_maintenance).
//!
//! # Delivering to HTTP nodes
//!
//! [`HttpDelivery`] is the [`Deliver`](mediator_core::Deliver) for nodes
//! registered with an `http://` or `https://` URL: a pooled client that
//! keeps the caller's method, path, query, content type and body, adds
//! the `x-mediator-*` headers ([`headers`]) and never passes on the
//! caller's credentials. A node that cannot be connected to is
//! unreachable (another node of the group may be tried); a failure after
//! that is the node's.
//!
//! ```
//! use mediator_core::{Authenticator, Mediator, MemoryRegistry};
//! use mediator_transport_http::{HttpDelivery, HttpListener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .deliver(HttpDelivery::default())
//!     .build()?;
//! // Leases expire, and changes from other instances arrive, only while this runs.
//! let maintenance = mediator.spawn_maintenance();
//!
//! let listener = HttpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(listener.serve_with_shutdown(mediator, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut tcp = tokio::net::TcpStream::connect(addr).await?;
//! tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.ends_with(r#"{"ok":true}"#));
//!
//! let _ = stop.send(());
//! server.await??; // returns once every connection is closed
//! maintenance.abort();
//! # Ok(()) }
//! ```
//!
//! # Being a node
//!
//! [`NodeClient`] is a Rust node over HTTP: it serves a callback server for
//! the mediator to reach it, registers and keeps its lease, and calls other
//! nodes (one, any of a group, or all of a group) with payloads sealed end
//! to end; [`NodeService`] is its server side on its own. It is the core's
//! node client ([`mediator_core::node::NodeClient`]) over this crate's
//! wire ([`HttpWire`]), and its calls fail with the core's
//! [`ClientError`], whatever the
//! transport. The
//! [`client`] module has the rules and a runnable example, and, under the
//! `legacy` feature, the original's body shapes for talking to its Node
//! children.

#![warn(clippy::unwrap_used)]

pub mod client;
mod deliver;
mod error;
pub mod headers;
pub mod server;

pub use client::{
    BroadcastReplies, ClientError, Handler, HttpWire, Incoming, NodeClient, NodeClientBuilder,
    NodeReply, NodeService,
};
pub use deliver::{HttpDelivery, HttpDeliveryConfig, HttpPeerLink};
pub use error::HttpError;
pub use server::request_log::{self, RequestLog, RequestRecord, TracingRequestLog};
pub use server::{HttpListener, MediatorService, MetricsAccess, TlsConfig};
