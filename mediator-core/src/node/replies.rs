//! What a node's broadcast brings back, whatever the transport it was
//! sent over.

use bytes::Bytes;

use crate::model::{NodeId, NodeKey};
use crate::router::Summary;

use super::ClientError;

/// One node's part of a broadcast, as a node client sees it: the reply
/// opened, or why there is none (a [`ClientError`] unless said otherwise).
#[derive(Debug)]
pub struct NodeReply<E = ClientError> {
    /// The node.
    pub node: NodeKey,
    /// Its registration id, when the mediator said.
    pub id: Option<NodeId>,
    /// Its opened reply, or why there is none.
    pub result: Result<Bytes, E>,
}

/// Every node's result of a broadcast, in the mediator's (registration
/// id) order, and the summary.
///
/// What [`NodeClient::broadcast`](super::NodeClient::broadcast) returns,
/// whatever the transport.
///
/// ```
/// use bytes::Bytes;
/// use mediator_core::node::{BroadcastReplies, NodeReply};
/// use mediator_core::{Error, NodeKey, Summary};
///
/// let key = |s: &str| s.parse::<NodeKey>().unwrap();
/// let broadcast = BroadcastReplies {
///     replies: vec![
///         NodeReply { node: key("cache/a"), id: None, result: Ok(Bytes::from("flushed")) },
///         NodeReply { node: key("cache/b"), id: None, result: Err(Error::refused(503, "busy", "later")) },
///     ],
///     summary: Summary { asked: 2, answered: 1, failed: 1, timed_out: 0 },
/// };
/// let ok: Vec<_> = broadcast.successes().map(|(node, _)| node.to_string()).collect();
/// assert_eq!(ok, ["cache/a"]);
/// ```
#[derive(Debug)]
pub struct BroadcastReplies<E = ClientError> {
    /// One entry per node asked.
    pub replies: Vec<NodeReply<E>>,
    /// How many nodes were asked, answered, failed and timed out, as the
    /// mediator counted them.
    pub summary: Summary,
}

impl<E> BroadcastReplies<E> {
    /// The replies that succeeded, by node.
    pub fn successes(&self) -> impl Iterator<Item = (&NodeKey, &Bytes)> {
        self.replies
            .iter()
            .filter_map(|r| r.result.as_ref().ok().map(|body| (&r.node, body)))
    }
}
