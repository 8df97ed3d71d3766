//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

use mediator_core::node::ClientError;
use mediator_core::Fault;

/// Everything that can go wrong in the QUIC transport: serving (binding,
/// TLS) and the node client's calls. The listener answers a refused
/// request with a reply frame (status, kind, fault, message), never with
/// this type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// Binding the UDP socket or another socket operation failed.
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
    /// The TLS certificate, key, pin or root is missing, malformed or
    /// unusable.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The mediator refused or failed a request (or the attachment); its
    /// reply frame says why (`status` tells 503 "no node available" from
    /// 504 "deadline passed" and so on).
    #[error("mediator answered {status} ({kind}): {message}")]
    Mediator {
        /// The status of the answer, as HTTP would carry it.
        status: u16,
        /// The error's `kind` (`unknown_target`, `no_node_available`, ...).
        kind: String,
        /// Whose fault the mediator says it was, when it said.
        fault: Option<Fault>,
        /// The error's message.
        message: String,
    },
    /// A node answered a request with a refusal or failure of its own.
    #[error("node {node} answered {status} ({kind}): {message}")]
    Node {
        /// The node that answered (`group/name`).
        node: String,
        /// Its status.
        status: u16,
        /// The refusal's kind, `unknown` when it named none.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The mediator could not be reached, the handshake failed (a wrong
    /// certificate fingerprint among other things), or the connection or
    /// stream broke before an answer came.
    #[error("cannot reach the mediator at {addr}: {reason}")]
    Unreachable {
        /// The mediator's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No answer came within the client's own time limit.
    #[error("no answer within {after:?}")]
    Timeout {
        /// How long the client waited.
        after: Duration,
    },
    /// A peer did not follow the protocol (bad frame, unknown shape).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The core refused or failed an operation.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
}

impl QuicError {
    /// The status this error would carry over HTTP, when it names one: the
    /// mediator's or the node's status, or the core error's.
    ///
    /// ```
    /// use mediator_transport_quic::QuicError;
    /// let e = QuicError::Mediator { status: 503, kind: "no_node_available".into(), fault: None, message: "none".into() };
    /// assert_eq!(e.status(), Some(503));
    /// assert_eq!(QuicError::Protocol("x".into()).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            QuicError::Mediator { status, .. } | QuicError::Node { status, .. } => Some(*status),
            QuicError::Core(e) => Some(e.status()),
            _ => None,
        }
    }

    /// The error's kind, when it names one (`too_large`, `forbidden`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            QuicError::Mediator { kind, .. } | QuicError::Node { kind, .. } => Some(kind),
            QuicError::Core(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<QuicError> for ClientError {
    /// The same failure in the words every transport's client shares;
    /// nothing is lost.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// use mediator_transport_quic::QuicError;
    /// let e = ClientError::from(QuicError::Node {
    ///     node: "users/api".into(),
    ///     status: 409,
    ///     kind: "conflict".into(),
    ///     message: "taken".into(),
    /// });
    /// assert_eq!((e.status(), e.kind()), (Some(409), Some("conflict")));
    /// ```
    fn from(error: QuicError) -> Self {
        match error {
            QuicError::Io(e) => ClientError::Io(e),
            QuicError::ReadFile { path, source } => ClientError::ReadFile { path, source },
            QuicError::Tls(reason) => ClientError::Tls(reason),
            QuicError::Mediator {
                status,
                kind,
                fault,
                message,
            } => ClientError::Mediator {
                status,
                kind,
                fault,
                message,
            },
            QuicError::Node {
                node,
                status,
                kind,
                message,
            } => ClientError::Node {
                node,
                status,
                kind,
                message,
            },
            QuicError::Unreachable { addr, reason } => {
                ClientError::Unreachable { peer: addr, reason }
            }
            QuicError::Timeout { after } => ClientError::Timeout { peer: None, after },
            QuicError::Protocol(reason) => ClientError::Protocol(reason),
            QuicError::Core(e) => ClientError::Core(e),
        }
    }
}

impl From<QuicError> for mediator_core::Error {
    /// What a node's [`Handler`](mediator_core::node::Handler) answers with
    /// when a call it made failed: a core error as it was; anything else as
    /// this node's own failure, `500` with kind `node_error`, since passing
    /// on the other party's status would tell the caller something false
    /// about this node.
    ///
    /// ```
    /// use mediator_transport_quic::QuicError;
    /// let e = mediator_core::Error::from(QuicError::Protocol("garbled".into()));
    /// assert_eq!((e.status(), e.kind()), (500, "node_error"));
    /// ```
    fn from(error: QuicError) -> Self {
        ClientError::from(error).into()
    }
}
