//! The crate's one error type.

use std::path::PathBuf;

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
        match error {
            HttpError::Core(e) => e,
            other => mediator_core::Error::refused(500, "node_error", other.to_string()),
        }
    }
}
