//! The crate's one error type.

use std::path::PathBuf;

use mediator_core::node::ClientError;

/// Everything that can go wrong in the HTTP transport: serving (binding,
/// TLS) and the client's calls. The server answers a refused request with a
/// JSON error body, never with this type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding, accepting or another socket operation failed.
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
    /// The TLS certificate or key is missing, malformed or unusable.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The mediator refused or failed a client's request; its JSON error
    /// body says why (`status` tells 503 "no node available" from 504
    /// "deadline passed" and so on).
    #[error("mediator answered {status} ({kind}): {message}")]
    Mediator {
        /// The HTTP status of the answer.
        status: u16,
        /// The error's `kind` (`unknown_target`, `no_node_available`,
        /// `deadline_passed`, ...); `unknown` when the body named none.
        kind: String,
        /// Whose fault the mediator says it was, when it said.
        fault: Option<mediator_core::Fault>,
        /// The error's message.
        message: String,
    },
    /// A node answered a client's request with an error status.
    #[error("node {node} answered {status}: {message}")]
    Node {
        /// The node that answered (`group/name`).
        node: String,
        /// Its HTTP status.
        status: u16,
        /// The `kind` its error body named; `unknown` when it named none.
        kind: String,
        /// The error message in its body, or the body itself.
        message: String,
    },
    /// The mediator or a node could not be reached, or the exchange broke
    /// off before an answer came.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// No answer came within the client's own time limit.
    #[error("no answer from {url} within {after:?}")]
    Timeout {
        /// What was called.
        url: String,
        /// How long the client waited.
        after: std::time::Duration,
    },
    /// An answer did not follow the protocol (missing header, bad JSON,
    /// unknown shape).
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The core refused or failed an operation.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
}

impl HttpError {
    /// The status this error carries, when it names one: the mediator's or
    /// the node's, or the core error's.
    ///
    /// ```
    /// use mediator_transport_http::HttpError;
    /// let e = HttpError::Mediator { status: 503, kind: "no_node_available".into(), fault: None, message: "none".into() };
    /// assert_eq!((e.status(), e.kind()), (Some(503), Some("no_node_available")));
    /// assert_eq!(HttpError::Protocol("x".into()).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Mediator { status, .. } | HttpError::Node { status, .. } => Some(*status),
            HttpError::Core(e) => Some(e.status()),
            _ => None,
        }
    }

    /// The error's kind, when it names one (`too_large`, `forbidden`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            HttpError::Mediator { kind, .. } | HttpError::Node { kind, .. } => Some(kind),
            HttpError::Core(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<HttpError> for ClientError {
    /// The same failure in the words every transport's client shares;
    /// nothing is lost.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// use mediator_transport_http::HttpError;
    /// let e = ClientError::from(HttpError::Node {
    ///     node: "users/api".into(),
    ///     status: 409,
    ///     kind: "conflict".into(),
    ///     message: "taken".into(),
    /// });
    /// assert_eq!((e.status(), e.kind()), (Some(409), Some("conflict")));
    /// ```
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Io(e) => ClientError::Io(e),
            HttpError::ReadFile { path, source } => ClientError::ReadFile { path, source },
            HttpError::Tls(reason) => ClientError::Tls(reason),
            HttpError::Mediator {
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
            HttpError::Node {
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
            HttpError::Unreachable { url, reason } => {
                ClientError::Unreachable { peer: url, reason }
            }
            HttpError::Timeout { url, after } => ClientError::Timeout {
                peer: Some(url),
                after,
            },
            HttpError::Protocol(reason) => ClientError::Protocol(reason),
            HttpError::Core(e) => ClientError::Core(e),
        }
    }
}

impl From<HttpError> for mediator_core::Error {
    /// What a node's [`Handler`](mediator_core::node::Handler) answers with
    /// when a call it made failed: a core error as it was; anything else
    /// (another node's or the mediator's refusal, no answer) as this node's
    /// own failure, `500` with kind `node_error`, since passing on the other
    /// party's status would tell the caller something false about this
    /// node.
    ///
    /// ```
    /// use mediator_transport_http::HttpError;
    /// let e = mediator_core::Error::from(HttpError::Protocol("garbled".into()));
    /// assert_eq!((e.status(), e.kind()), (500, "node_error"));
    /// ```
    fn from(error: HttpError) -> Self {
        ClientError::from(error).into()
    }
}
