//! What a node client's calls fail with, whatever the transport.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, ErrorBody, Fault};

/// Everything a node client can fail with, over any transport: the one
/// error of [`NodeClient`](super::NodeClient), so `call`, `any` and
/// `broadcast` failures read the same over HTTP and over QUIC (each
/// transport's setup errors convert into it too).
///
/// ```
/// use mediator_core::node::ClientError;
/// use mediator_core::Fault;
///
/// let e = ClientError::Mediator {
///     status: 503,
///     kind: "no_node_available".into(),
///     fault: Some(Fault::Hub),
///     message: "no node available in group users".into(),
/// };
/// assert_eq!((e.status(), e.kind(), e.fault()), (Some(503), Some("no_node_available"), Some(Fault::Hub)));
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed while setting the client up.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration is missing, malformed or unusable.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The mediator refused or failed a request; its error body says why
    /// (`status` tells 503 "no node available" from 504 "deadline passed"
    /// and so on).
    #[error("mediator answered {status} ({kind}): {message}")]
    Mediator {
        /// The status of the answer, as HTTP carries it.
        status: u16,
        /// The error's kind (`unknown_target`, `no_node_available`, ...);
        /// `unknown` when the answer named none.
        kind: String,
        /// Whose fault the mediator says it was, when it said.
        fault: Option<Fault>,
        /// The error's message.
        message: String,
    },
    /// A node answered with a refusal or failure of its own.
    #[error("node {node} answered {status} ({kind}): {message}")]
    Node {
        /// The node that answered (`group/name`).
        node: String,
        /// Its status.
        status: u16,
        /// The refusal's kind; `unknown` when the answer named none.
        kind: String,
        /// Its message, or its body when it sent no error body.
        message: String,
    },
    /// The mediator (or a node) could not be reached, or the exchange
    /// broke off before an answer came.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// What was called: a URL or an address.
        peer: String,
        /// Why.
        reason: String,
    },
    /// No answer came within the client's own time limit.
    #[error("no answer within {after:?}")]
    Timeout {
        /// What was called, when the transport names it.
        peer: Option<String>,
        /// How long the client waited.
        after: Duration,
    },
    /// An answer did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The core refused or failed an operation (a setting, a token, a
    /// seal).
    #[error(transparent)]
    Core(#[from] Error),
}

impl ClientError {
    /// A refusal read off the wire: the node's own when `node` names it,
    /// else the mediator's.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// use mediator_core::{ErrorBody, Fault};
    ///
    /// let body = ErrorBody::new("taken", "conflict", Fault::Caller);
    /// let e = ClientError::refused(Some("users/api".into()), 409, body.clone());
    /// assert!(matches!(&e, ClientError::Node { node, .. } if node == "users/api"));
    /// let e = ClientError::refused(None, 503, body);
    /// assert_eq!((e.status(), e.fault()), (Some(503), Some(Fault::Caller)));
    /// ```
    pub fn refused(node: Option<String>, status: u16, error: ErrorBody) -> ClientError {
        match node {
            Some(node) => ClientError::Node {
                node,
                status,
                kind: error.kind,
                message: error.error,
            },
            None => ClientError::Mediator {
                status,
                kind: error.kind,
                fault: error.fault,
                message: error.error,
            },
        }
    }

    /// The status this error carries, when it names one: the mediator's
    /// or the node's, or the core error's.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Mediator { status, .. } | ClientError::Node { status, .. } => {
                Some(*status)
            }
            ClientError::Core(e) => Some(e.status()),
            _ => None,
        }
    }

    /// The error's kind, when it names one (`too_large`, `forbidden`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Mediator { kind, .. } | ClientError::Node { kind, .. } => Some(kind),
            ClientError::Core(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// Whose fault it was, when that is known: what the mediator said, the
    /// node's for a node's own answer, the core error's own.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            ClientError::Mediator { fault, .. } => *fault,
            ClientError::Node { .. } => Some(Fault::Node),
            ClientError::Core(e) => Some(e.fault()),
            _ => None,
        }
    }

    /// Whether the same call may succeed if made again unchanged: the
    /// mediator had no node or was overloaded, the peer could not be
    /// reached, or the answer came too late.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Mediator { status, kind, .. } => {
                matches!(
                    kind.as_str(),
                    "no_node_available" | "overloaded" | "node_unreachable"
                ) || *status == 503
            }
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Core(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<ClientError> for Error {
    /// What a node's [`Handler`](super::Handler) answers with when a call
    /// it made failed: a core error as it was; anything else as this
    /// node's own failure, `500` with kind `node_error`, since passing on
    /// the other party's status would tell the caller something false
    /// about this node.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// let e = mediator_core::Error::from(ClientError::Protocol("garbled".into()));
    /// assert_eq!((e.status(), e.kind()), (500, "node_error"));
    /// ```
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Core(e) => e,
            other => Error::refused(500, "node_error", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_error_is_the_nodes_fault_and_a_core_one_keeps_its_own() {
        let node = ClientError::Node {
            node: "users/api".into(),
            status: 409,
            kind: "conflict".into(),
            message: "taken".into(),
        };
        assert_eq!(
            (node.status(), node.kind(), node.fault()),
            (Some(409), Some("conflict"), Some(Fault::Node))
        );
        assert!(!node.is_retryable());
        assert_eq!(
            node.to_string(),
            "node users/api answered 409 (conflict): taken"
        );

        let core = ClientError::from(Error::invalid("ttl", "must be above zero"));
        assert_eq!(
            (core.status(), core.fault()),
            (Some(400), Some(Fault::Caller))
        );
        let back = Error::from(core);
        assert_eq!(back.kind(), "invalid");

        let late = ClientError::Timeout {
            peer: None,
            after: Duration::from_secs(1),
        };
        assert!(late.is_retryable());
        assert_eq!(late.status(), None);
    }
}
