//! The core's one error type, and whose fault each error is.

use std::time::Duration;

/// Who caused an error, so operators and retry logic can act on it.
///
/// A caller fault is not worth retrying unchanged; a hub fault may clear up
/// when the mediator or its store recovers; a node fault belongs to the
/// node that was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request itself is wrong: bad input, missing or wrong credentials.
    Caller,
    /// The mediator could not do its part: store down, nothing to route to.
    Hub,
    /// The node that was called failed or was too slow.
    Node,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::Caller => "caller",
            Fault::Hub => "hub",
            Fault::Node => "node",
        })
    }
}

/// Everything that can go wrong in the core, from validation to delivery.
///
/// Stores and transports keep their own error enums and convert into this
/// one at the trait boundary (see [`Error::store`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A field broke a validation rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// The field that was refused, such as `group` or `ttl`.
        field: &'static str,
        /// The rule it broke, in words.
        rule: String,
    },
    /// The store failed or could not be reached.
    #[error("store error: {0}")]
    Store(String),
    /// No registration matches the target.
    #[error("unknown target {0}")]
    UnknownTarget(String),
    /// The group is known but none of its nodes can take a request now.
    #[error("no node available in group {0}")]
    NoNodeAvailable(String),
    /// The node did not answer before the deadline.
    #[error("node {node} did not answer within {after:?}")]
    DeadlinePassed {
        /// The node that was asked (`group/name`).
        node: String,
        /// How long the caller was willing to wait.
        after: Duration,
    },
    /// The node could not be reached: nothing of the request was sent, so
    /// another node may be tried.
    #[error("node {node} unreachable: {reason}")]
    NodeUnreachable {
        /// The node that was asked (`group/name`).
        node: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// The node failed after the request (or part of it) reached it.
    #[error("node {node} failed: {reason}")]
    NodeFailed {
        /// The node that was asked (`group/name`).
        node: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// No valid credentials: missing, malformed, expired or wrongly signed.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A sealed payload could not be opened (tampered, wrong key or AAD).
    #[error("sealed payload refused: {0}")]
    Sealed(String),
    /// A key could not be parsed or used.
    #[error("bad key: {0}")]
    Key(String),
    /// A node's handler (or a policy) refused the request with this status.
    #[error("refused with {status} ({kind}): {message}")]
    Refused {
        /// The status to answer with: a 4xx when the caller is at fault, a
        /// 5xx when the node is.
        status: u16,
        /// A short stable name for the refusal, such as `misdirected`.
        kind: String,
        /// Why, in words.
        message: String,
    },
    /// The mediator was composed wrongly.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            rule: rule.into(),
        }
    }

    /// Builds an [`Error::Refused`]: how a node's handler answers with a
    /// status of its choosing.
    ///
    /// ```
    /// use mediator_core::{Error, Fault};
    /// let e = Error::refused(404, "no_such_user", "user 42 does not exist");
    /// assert_eq!((e.status(), e.kind(), e.fault()), (404, "no_such_user", Fault::Caller));
    /// assert_eq!(Error::refused(503, "busy", "try later").fault(), Fault::Node);
    /// ```
    pub fn refused(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Refused {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// Wraps any store failure, keeping its message.
    pub fn store(source: impl std::fmt::Display) -> Self {
        Error::Store(source.to_string())
    }

    /// Whose fault this error is.
    ///
    /// ```
    /// use mediator_core::{Error, Fault};
    /// assert_eq!(Error::UnknownTarget("a/b".into()).fault(), Fault::Caller);
    /// assert_eq!(Error::NoNodeAvailable("a".into()).fault(), Fault::Hub);
    /// ```
    pub fn fault(&self) -> Fault {
        match self {
            Error::Invalid { .. }
            | Error::UnknownTarget(_)
            | Error::Unauthorized(_)
            | Error::Forbidden(_)
            | Error::Sealed(_)
            | Error::Key(_) => Fault::Caller,
            Error::Store(_) | Error::NoNodeAvailable(_) | Error::Config(_) => Fault::Hub,
            Error::DeadlinePassed { .. }
            | Error::NodeFailed { .. }
            | Error::NodeUnreachable { .. } => Fault::Node,
            Error::Refused { status, .. } if (400..500).contains(status) => Fault::Caller,
            Error::Refused { .. } => Fault::Node,
        }
    }

    /// The HTTP status that conveys this error.
    ///
    /// 400 malformed, 401/403 auth, 404 unknown target, 502 node failed,
    /// 503 no node available or store down, 504 deadline.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } | Error::Sealed(_) | Error::Key(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::UnknownTarget(_) => 404,
            Error::NodeFailed { .. } | Error::NodeUnreachable { .. } => 502,
            Error::Store(_) | Error::NoNodeAvailable(_) => 503,
            Error::DeadlinePassed { .. } => 504,
            Error::Config(_) => 500,
            Error::Refused { status, .. } => *status,
        }
    }

    /// A short stable name for the error kind, for JSON bodies and metrics.
    pub fn kind(&self) -> &str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::Store(_) => "store",
            Error::UnknownTarget(_) => "unknown_target",
            Error::NoNodeAvailable(_) => "no_node_available",
            Error::DeadlinePassed { .. } => "deadline_passed",
            Error::NodeFailed { .. } => "node_failed",
            Error::NodeUnreachable { .. } => "node_unreachable",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Sealed(_) => "sealed",
            Error::Key(_) => "key",
            Error::Config(_) => "config",
            Error::Refused { kind, .. } => kind,
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
