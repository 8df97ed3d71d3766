//! What a node's handler receives and how it answers.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::Method;

use crate::error::Error;
use crate::model::{NodeKey, Target};
use crate::time::Timestamp;

/// A request as the node's handler sees it: opened, with the sender and
/// target the mediator vouched for (and the seal confirmed).
///
/// Built by [`open_request`](super::open_request); handlers' own tests build
/// one with [`Incoming::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming {
    /// The verified sender, or `None` when the caller has no node identity.
    pub from: Option<NodeKey>,
    /// How the caller addressed this node (`One`, `All` for a broadcast,
    /// `Any` for any-of-group).
    pub target: Target,
    /// The method the caller used.
    pub method: Method,
    /// The request path at the node, without the query.
    pub path: String,
    /// The query string, if any (not covered by the seal).
    pub query: Option<String>,
    /// When the caller stops waiting, if the mediator said.
    pub deadline: Option<Timestamp>,
    /// The opened payload.
    pub body: Bytes,
}

impl Incoming {
    /// A `POST` of `body` at `path` for `target`, from no verified sender,
    /// without a query or deadline: a starting point for testing a handler
    /// without a mediator.
    ///
    /// ```
    /// use mediator_core::node::Incoming;
    /// use mediator_core::{NodeKey, Target};
    ///
    /// let me = NodeKey::named("users", "api").unwrap();
    /// let request = Incoming::new(Target::One(me), "/lookup", "42")
    ///     .with_from(NodeKey::named("billing", "worker-1").unwrap())
    ///     .with_query("verbose=1");
    /// assert_eq!(request.body, "42");
    /// assert_eq!(request.query.as_deref(), Some("verbose=1"));
    /// ```
    pub fn new(target: Target, path: impl Into<String>, body: impl Into<Bytes>) -> Incoming {
        Incoming {
            from: None,
            target,
            method: Method::POST,
            path: path.into(),
            query: None,
            deadline: None,
            body: body.into(),
        }
    }

    /// Sets the verified sender.
    pub fn with_from(mut self, from: NodeKey) -> Incoming {
        self.from = Some(from);
        self
    }

    /// Sets the method.
    pub fn with_method(mut self, method: Method) -> Incoming {
        self.method = method;
        self
    }

    /// Sets the query string (without the `?`).
    pub fn with_query(mut self, query: impl Into<String>) -> Incoming {
        self.query = Some(query.into());
        self
    }

    /// Sets the caller's deadline.
    pub fn with_deadline(mut self, deadline: Timestamp) -> Incoming {
        self.deadline = Some(deadline);
        self
    }
}

/// A boxed future, as [`Handler::handle`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a node does with a request: turn the opened payload into the reply
/// payload (which is then sealed for the caller).
///
/// Implemented for every `Fn(Incoming) -> impl Future<Output =
/// Result<Bytes, Error>>`, so a closure or an `async fn` is a handler. An
/// error becomes the node's answer with [`Error::status`] and
/// [`Error::kind`]: [`Error::refused`] picks both, other errors keep their
/// own (an [`Error::Invalid`] answers 400).
///
/// ```
/// use bytes::Bytes;
/// use mediator_core::node::{Handler, Incoming};
/// use mediator_core::Error;
///
/// async fn lookup(request: Incoming) -> Result<Bytes, Error> {
///     match request.body.as_ref() {
///         b"42" => Ok(Bytes::from_static(b"ada")),
///         _ => Err(Error::refused(404, "no_such_user", "unknown user")),
///     }
/// }
///
/// fn echo() -> impl Handler {
///     |request: Incoming| async move { Ok::<_, Error>(request.body) }
/// }
/// # fn is_handler(_: impl Handler) {}
/// # is_handler(lookup);
/// # drop(echo());
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: Incoming) -> BoxFuture<Result<Bytes, Error>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
{
    fn handle(&self, request: Incoming) -> BoxFuture<Result<Bytes, Error>> {
        Box::pin(self(request))
    }
}
