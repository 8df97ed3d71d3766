//! What a built node is: [`NodeClient`], the core's node client over the
//! HTTP wire, with what only HTTP knows (the mediator's URL, the callback).

use std::net::SocketAddr;
use std::ops::Deref;

use mediator_core::node::{self as core_node, ClientError};

use super::wire::HttpWire;

/// A node over HTTP: reaches other nodes through the mediator and, once
/// [started](super::NodeClientBuilder::start), answers them.
///
/// It is the core's [`NodeClient`](mediator_core::node::NodeClient) over
/// the HTTP wire, which it dereferences to: `call`, `any`, `broadcast` and
/// `key` are the core's, and fail with its
/// [`ClientError`](mediator_core::node::ClientError).
///
/// Cheap to clone; clones share one connection pool and one registration.
/// Dropping the last clone stops the callback server and the lease keeper
/// (the lease then runs out at the mediator); [`shutdown`](Self::shutdown)
/// also deregisters at once.
#[derive(Clone)]
pub struct NodeClient {
    client: core_node::NodeClient<HttpWire>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("mediator", &self.mediator_url())
            .field("key", &self.key())
            .field("callback", &self.callback_url())
            .finish_non_exhaustive()
    }
}

impl From<core_node::NodeClient<HttpWire>> for NodeClient {
    fn from(client: core_node::NodeClient<HttpWire>) -> Self {
        NodeClient { client }
    }
}

impl From<NodeClient> for core_node::NodeClient<HttpWire> {
    fn from(client: NodeClient) -> Self {
        client.client
    }
}

impl Deref for NodeClient {
    type Target = core_node::NodeClient<HttpWire>;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// One node's part of a [`NodeClient::broadcast`](mediator_core::node::NodeClient::broadcast).
pub type NodeReply = core_node::NodeReply;

/// Every node's result of a [`NodeClient::broadcast`](mediator_core::node::NodeClient::broadcast),
/// and the summary (from the mediator's `x-mediator-summary` header, or
/// counted from the entries when the header is missing).
pub type BroadcastReplies = core_node::BroadcastReplies;

impl NodeClient {
    /// The mediator's base URL.
    pub fn mediator_url(&self) -> &str {
        self.client.wire().mediator_url()
    }

    /// The URL registered for the mediator to call this node back at
    /// (`None` for a sender-only client).
    pub fn callback_url(&self) -> Option<&str> {
        self.client.wire().callback_url()
    }

    /// The address the callback server is bound to (`None` for a
    /// sender-only client).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.client.wire().local_addr()
    }

    /// Stops the lease keeper, deregisters, and stops the callback server
    /// (requests in flight get a few seconds to finish). A sender-only
    /// client has nothing to stop.
    ///
    /// The server stops even when deregistering fails; the error is
    /// returned then (the lease will run out at the mediator anyway).
    pub async fn shutdown(self) -> Result<(), ClientError> {
        self.client.shutdown().await
    }
}
