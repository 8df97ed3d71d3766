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
    /// A node refused a request it was handed: not addressed to it, from an
    /// unproven sender, or with a payload that does not open. Also what a
    /// node's handler returns to answer with a chosen status.
    #[error("refused with {status} ({kind}): {message}")]
    Refused {
        /// The HTTP status to answer with (4xx or 5xx).
        status: u16,
        /// A short stable name for the refusal (`misdirected`, `sealed`, ...).
        kind: &'static str,
        /// Why, in words.
        message: String,
    },
    /// The core refused or failed an operation.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
}
