//! The core's errors: one type per operation, each keeping its cause, and
//! the top-level [`Error`] they all convert into, which knows whose fault
//! it was and which status conveys it.
//!
//! | operation | its error | becomes |
//! |---|---|---|
//! | a [`Registry`](crate::Registry) call | [`StoreError`] (cause, temporary or not) | [`Error::Store`] |
//! | sealing or opening ([`Cipher`](crate::Cipher)) | [`CipherError`] | [`Error::Sealed`] |
//! | checking credentials ([`Authenticate`](crate::policy::Authenticate)) | [`AuthError`] | [`Error::Unauthorized`] |
//! | one delivery ([`Deliver`](crate::Deliver)) | [`DeliverError`] | [`Error::NodeUnreachable`] or [`Error::NodeFailed`] |

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A cause kept behind an error, shareable so errors stay `Clone`.
pub(crate) type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// Who caused an error, so operators and retry logic can act on it.
///
/// A caller fault is not worth retrying unchanged; a hub fault may clear up
/// when the mediator or its store recovers; a node fault belongs to the
/// node that was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The request itself is wrong: bad input, missing or wrong credentials.
    Caller,
    /// The mediator could not do its part: store down, nothing to route to.
    Hub,
    /// The node that was called failed or was too slow.
    Node,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Caller => "caller",
            Fault::Hub => "hub",
            Fault::Node => "node",
        })
    }
}

impl Fault {
    /// The fault a wire body names (`caller`, `hub` or `node`, as
    /// [`Display`](fmt::Display) writes it), or `None` for any other text,
    /// so a peer that names a fault this version does not know is read as
    /// naming none.
    ///
    /// ```
    /// use mediator_core::Fault;
    /// assert_eq!(Fault::parse("hub"), Some(Fault::Hub));
    /// assert_eq!(Fault::parse("weather"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Fault> {
        match text {
            "caller" => Some(Fault::Caller),
            "hub" => Some(Fault::Hub),
            "node" => Some(Fault::Node),
            _ => None,
        }
    }
}

impl serde::Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A store failed: what it was doing, why, and whether trying again may help.
///
/// A temporary error (connection lost, lock timeout, pool exhausted) is
/// worth retrying; a permanent one (corrupt row, schema mismatch) is not.
///
/// ```
/// use mediator_core::{Error, StoreError};
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = StoreError::temporary("connecting to MySQL", io);
/// assert!(e.is_temporary());
/// assert_eq!(e.to_string(), "connecting to MySQL: refused");
/// assert!(std::error::Error::source(&e).is_some());
/// let top: Error = e.into();
/// assert_eq!(top.status(), 503);
/// ```
#[derive(Debug, Clone)]
pub struct StoreError {
    context: String,
    temporary: bool,
    source: Option<Cause>,
}

impl StoreError {
    /// A failure that may clear up if the call is made again.
    pub fn temporary(
        context: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            context: context.into(),
            temporary: true,
            source: Some(Arc::new(source)),
        }
    }

    /// A failure that the same call will meet again.
    pub fn permanent(
        context: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            context: context.into(),
            temporary: false,
            source: Some(Arc::new(source)),
        }
    }

    /// A failure with no underlying error to keep.
    pub fn new(message: impl Into<String>, temporary: bool) -> Self {
        StoreError {
            context: message.into(),
            temporary,
            source: None,
        }
    }

    /// Whether retrying may help.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// What the store was doing, without the cause.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Sealing or opening a payload failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// The payload does not open: altered, sealed under another key, or
    /// with other additional data (sender, target, path).
    #[error("sealed payload refused: {0}")]
    Refused(String),
    /// A key could not be parsed or used.
    #[error("bad key: {0}")]
    Key(String),
}

/// Credentials were missing or could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials were given.
    #[error("no credentials")]
    Missing,
    /// Credentials were given and refused: malformed, expired, wrongly
    /// signed, of a refused algorithm, or a wrong password.
    #[error("{0}")]
    Refused(String),
    /// The mediator's own key cannot check anything (empty secret, bad PEM).
    #[error("bad key: {0}")]
    Key(String),
}

/// One delivery to one node failed.
///
/// [`unreachable`](DeliverError::unreachable) means nothing of the request
/// reached the node, so the router may try another node of the group;
/// [`failed`](DeliverError::failed) means it may have, so it never retries.
///
/// ```
/// use mediator_core::DeliverError;
/// let e = DeliverError::unreachable("connection refused");
/// assert!(e.is_unreachable());
/// assert!(!DeliverError::failed("reset mid-reply").is_unreachable());
/// ```
#[derive(Debug, Clone)]
pub struct DeliverError {
    message: String,
    unreachable: bool,
    absent: bool,
    source: Option<Cause>,
}

impl DeliverError {
    /// Nothing of the request reached the node.
    pub fn unreachable(message: impl Into<String>) -> Self {
        DeliverError {
            message: message.into(),
            unreachable: true,
            absent: false,
            source: None,
        }
    }

    /// The node is not where its registration says: the instance holding
    /// its connection is gone or does not answer. Nothing was sent, and
    /// the caller is told no node is available (503), as for a node whose
    /// lease ran out.
    pub fn absent(message: impl Into<String>) -> Self {
        DeliverError {
            message: message.into(),
            unreachable: true,
            absent: true,
            source: None,
        }
    }

    /// The node failed after the request, or part of it, reached it.
    pub fn failed(message: impl Into<String>) -> Self {
        DeliverError {
            message: message.into(),
            unreachable: false,
            absent: false,
            source: None,
        }
    }

    /// Keeps the underlying error.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Whether nothing of the request reached the node.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable
    }

    /// Whether the node is not where its registration says
    /// ([`absent`](Self::absent)).
    pub fn is_absent(&self) -> bool {
        self.absent
    }

    /// What went wrong, in words, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{} ({source})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl StdError for DeliverError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Everything that can go wrong in the mediator, from validation to
/// delivery, with a [kind](Error::kind), a [fault](Error::fault) and a
/// [status](Error::status).
///
/// Each operation's own error converts into it with `?`, keeping its cause
/// reachable through [`std::error::Error::source`].
#[derive(Debug, Clone, thiserror::Error)]
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
    /// A body was larger than the mediator accepts.
    #[error("body too large: the limit is {limit} bytes")]
    TooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The store failed or could not be reached.
    #[error("store error: {0}")]
    Store(#[source] StoreError),
    /// Too many deliveries are in flight, for the mediator or for this
    /// caller; the request was not started.
    #[error(
        "overloaded: too many deliveries in flight for the {scope}; retry after {retry_after:?}"
    )]
    Overloaded {
        /// Whose bound was reached: `mediator`, or `caller group/name`.
        scope: String,
        /// How long the caller should wait before trying again.
        retry_after: Duration,
    },
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
    #[error("node {node} unreachable: {source}")]
    NodeUnreachable {
        /// The node that was asked (`group/name`).
        node: String,
        /// What the deliverer saw.
        source: DeliverError,
    },
    /// The node failed after the request (or part of it) reached it.
    #[error("node {node} failed: {source}")]
    NodeFailed {
        /// The node that was asked (`group/name`).
        node: String,
        /// What the deliverer saw.
        source: DeliverError,
    },
    /// No valid credentials: missing, malformed, expired or wrongly signed.
    #[error("unauthorized: {0}")]
    Unauthorized(#[source] AuthError),
    /// Valid credentials that do not allow this request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A payload could not be sealed or opened, or a key was unusable.
    #[error("{0}")]
    Sealed(#[source] CipherError),
    /// A node's handler (or a policy) refused the request with this status.
    #[error("{message}")]
    Refused {
        /// The HTTP status to answer with.
        status: u16,
        /// A short stable name for the refusal.
        kind: String,
        /// Why, in words.
        message: String,
    },
    /// The mediator was composed wrongly.
    #[error("configuration error: {0}")]
    Config(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<CipherError> for Error {
    fn from(e: CipherError) -> Self {
        Error::Sealed(e)
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            // The mediator's own key is broken: not the caller's doing.
            AuthError::Key(why) => Error::Config(format!("authentication key: {why}")),
            other => Error::Unauthorized(other),
        }
    }
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            rule: rule.into(),
        }
    }

    /// Builds an [`Error::Refused`], the answer of a handler that turns a
    /// request down with a status of its own choosing.
    ///
    /// ```
    /// use mediator_core::{Error, Fault};
    /// let e = Error::refused(409, "conflict", "already booked");
    /// assert_eq!((e.status(), e.kind(), e.fault()), (409, "conflict", Fault::Caller));
    /// ```
    pub fn refused(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Refused {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Unauthorized`] with a reason.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Error::Unauthorized(AuthError::Refused(reason.into()))
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
            | Error::TooLarge { .. }
            | Error::UnknownTarget(_)
            | Error::Unauthorized(_)
            | Error::Forbidden(_)
            | Error::Sealed(_) => Fault::Caller,
            Error::Store(_)
            | Error::NoNodeAvailable(_)
            | Error::Overloaded { .. }
            | Error::Config(_) => Fault::Hub,
            Error::Refused { status, .. } if *status < 500 => Fault::Caller,
            Error::Refused { .. }
            | Error::DeadlinePassed { .. }
            | Error::NodeFailed { .. }
            | Error::NodeUnreachable { .. } => Fault::Node,
        }
    }

    /// The HTTP status that conveys this error.
    ///
    /// 400 malformed, 401/403 auth, 404 unknown target, 413 too large,
    /// 502 node failed, 503 no node available or store down, 504 deadline.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } | Error::Sealed(_) => 400,
            Error::TooLarge { .. } => 413,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::UnknownTarget(_) => 404,
            Error::NodeFailed { .. } | Error::NodeUnreachable { .. } => 502,
            Error::Store(_) | Error::NoNodeAvailable(_) | Error::Overloaded { .. } => 503,
            Error::DeadlinePassed { .. } => 504,
            Error::Refused { status, .. } => *status,
            Error::Config(_) => 500,
        }
    }

    /// The message a caller is told: the error's own, but for a store's,
    /// which says only that the store is unavailable (its driver's message
    /// may name the database's host, port or user, which is the operator's
    /// business, not a caller's: the log keeps it whole).
    ///
    /// ```
    /// use mediator_core::{Error, StoreError};
    ///
    /// let lost = Error::Store(StoreError::new("can't connect to db.internal:3306", true));
    /// assert!(!lost.public_message().contains("db.internal"));
    /// let unknown = Error::UnknownTarget("users/api".into());
    /// assert_eq!(unknown.public_message(), unknown.to_string());
    /// ```
    pub fn public_message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Error::Store(e) if e.is_temporary() => {
                "the store is unavailable; try again shortly".into()
            }
            Error::Store(_) => "the store could not do this; the operator's log says why".into(),
            other => other.to_string().into(),
        }
    }

    /// A short stable name for the error kind, for JSON bodies and metrics.
    pub fn kind(&self) -> &str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::TooLarge { .. } => "too_large",
            Error::Store(_) => "store",
            Error::UnknownTarget(_) => "unknown_target",
            Error::NoNodeAvailable(_) => "no_node_available",
            Error::Overloaded { .. } => "overloaded",
            Error::DeadlinePassed { .. } => "deadline_passed",
            Error::NodeFailed { .. } => "node_failed",
            Error::NodeUnreachable { .. } => "node_unreachable",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Sealed(CipherError::Key(_)) => "key",
            Error::Sealed(_) => "sealed",
            Error::Refused { kind, .. } => kind,
            Error::Config(_) => "config",
        }
    }

    /// Whether the same request may succeed if made again unchanged: a
    /// temporary store failure, no node available, a node unreachable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_temporary(),
            Error::NoNodeAvailable(_)
            | Error::NodeUnreachable { .. }
            | Error::Overloaded { .. } => true,
            _ => false,
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line, `outer: inner: innermost`, each
/// message once: many errors repeat their source's message in their own,
/// and some (hyper's "client error (Connect)") hide the cause without it.
///
/// ```
/// use mediator_core::error_chain;
/// let io = std::io::Error::new(std::io::ErrorKind::Other, "refused");
/// let outer = std::io::Error::new(std::io::ErrorKind::Other, io);
/// assert_eq!(error_chain(&outer), "refused");
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let message = error.to_string();
        if !said.iter().any(|earlier| earlier.contains(&message)) {
            said.push(message);
        }
        next = error.source();
    }
    said.join(": ")
}

/// The JSON body of every refusal, written by the mediator and by nodes
/// and read back by node clients: `{"error", "kind", "fault"}`.
///
/// Reading is lenient, since the other side may be an older or foreign
/// peer: a missing `kind` reads as `unknown`, a `fault` that is missing or
/// unknown as `None`, and an `error` that is not a string (the original's
/// dialect may send an object) as its JSON text.
///
/// ```
/// use mediator_core::{Error, ErrorBody, Fault};
///
/// let body = ErrorBody::from(&Error::NoNodeAvailable("users".into()));
/// let json = serde_json::to_string(&body).unwrap();
/// assert_eq!(json, r#"{"error":"no node available in group users","kind":"no_node_available","fault":"hub"}"#);
/// let back: ErrorBody = serde_json::from_str(&json).unwrap();
/// assert_eq!((back.kind.as_str(), back.fault), ("no_node_available", Some(Fault::Hub)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in words; empty when the body carried none.
    #[serde(default, deserialize_with = "message_text")]
    pub error: String,
    /// The error's stable kind (`unknown_target`, `no_node_available`, ...).
    #[serde(default = "unknown_kind")]
    pub kind: String,
    /// Whose fault it was, when the body said.
    #[serde(
        default,
        deserialize_with = "fault_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub fault: Option<Fault>,
}

impl ErrorBody {
    /// A body with this message, kind and fault.
    pub fn new(message: impl Into<String>, kind: impl Into<String>, fault: Fault) -> Self {
        ErrorBody {
            error: message.into(),
            kind: kind.into(),
            fault: Some(fault),
        }
    }

    /// The body as a JSON value, for replies that embed it in another
    /// object (a broadcast entry's `catch`).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.error, "kind": self.kind, "fault": self.fault })
    }

    /// Reads a body, or `None` when `bytes` is not a JSON object (a
    /// proxy's HTML page, a plain-text answer).
    pub fn parse(bytes: &[u8]) -> Option<ErrorBody> {
        serde_json::from_slice(bytes).ok()
    }
}

impl From<&Error> for ErrorBody {
    /// The error's [public message](Error::public_message), kind and fault.
    fn from(error: &Error) -> Self {
        ErrorBody::new(error.public_message(), error.kind(), error.fault())
    }
}

fn unknown_kind() -> String {
    "unknown".to_owned()
}

fn message_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(
        match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        },
    )
}

fn fault_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Fault>, D::Error> {
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    Ok(text.as_deref().and_then(Fault::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_survive_conversion() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "lock wait timeout");
        let e: Error = StoreError::temporary("renewing a lease", io).into();
        assert!(e.is_retryable());
        let store = StdError::source(&e).expect("the store error");
        let io = store.source().expect("the I/O error");
        assert_eq!(io.to_string(), "lock wait timeout");
    }

    #[test]
    fn refusals_take_their_fault_from_the_status() {
        assert_eq!(Error::refused(418, "teapot", "no").fault(), Fault::Caller);
        assert_eq!(Error::refused(500, "boom", "no").fault(), Fault::Node);
        assert_eq!(Error::TooLarge { limit: 1 }.status(), 413);
        let key: Error = CipherError::Key("short".into()).into();
        assert_eq!((key.kind(), key.status()), ("key", 400));
        let broken: Error = AuthError::Key("empty secret".into()).into();
        assert_eq!(broken.fault(), Fault::Hub);
    }

    #[test]
    fn error_bodies_round_trip_and_read_leniently() {
        let body = ErrorBody::new("no", "forbidden", Fault::Caller);
        let text = serde_json::to_string(&body).expect("serialises");
        assert_eq!(
            text,
            r#"{"error":"no","kind":"forbidden","fault":"caller"}"#
        );
        assert_eq!(ErrorBody::parse(text.as_bytes()), Some(body.clone()));
        assert_eq!(
            body.to_value(),
            serde_json::from_str::<serde_json::Value>(&text).expect("json")
        );

        let foreign =
            ErrorBody::parse(br#"{"error":{"code":7},"fault":"weather"}"#).expect("an object");
        assert_eq!(
            (foreign.error.as_str(), foreign.kind.as_str(), foreign.fault),
            (r#"{"code":7}"#, "unknown", None)
        );
        assert_eq!(ErrorBody::parse(b"<html>bad gateway</html>"), None);
    }
}
