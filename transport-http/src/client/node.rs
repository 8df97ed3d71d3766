//! The node's side of a sealed exchange: opening what the mediator hands
//! over, sealing the answer, and a hyper service that does both around a
//! [`Handler`].
//!
//! The rules are in the [client module documentation](super).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mediator_core::cipher::aad;
use mediator_core::{Cipher, Error, NodeKey, Target, Timestamp};

use crate::error::HttpError;
use crate::headers::{X_MEDIATOR_DEADLINE, X_MEDIATOR_FROM, X_MEDIATOR_TARGET};

/// The content type of sealed bodies.
pub const SEALED_CONTENT_TYPE: &str = "application/octet-stream";

/// The largest request body a [`NodeService`] reads by default (8 MiB, the
/// mediator's default limit).
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

/// A request as the node's handler sees it: opened, with the sender and
/// target the mediator vouched for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming {
    /// The verified sender, or `None` when the caller has no node identity.
    pub from: Option<NodeKey>,
    /// How the caller addressed this node (`One`, `All` for a broadcast,
    /// `Any` for any-of-group).
    pub target: Target,
    /// The HTTP method the caller used.
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

/// A boxed future, as [`Handler::handle`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a node does with a request: turn the opened payload into the reply
/// payload (which is then sealed for the caller).
///
/// Implemented for every `Fn(Incoming) -> impl Future<Output =
/// Result<Bytes, HttpError>>`. A handler's error becomes the node's answer:
/// [`HttpError::Refused`] with its status, [`HttpError::Core`] with the
/// core error's status (400 for invalid input, ...), anything else 500.
///
/// ```
/// use mediator_transport_http::client::{Handler, Incoming};
/// use mediator_transport_http::HttpError;
///
/// fn echo() -> impl Handler {
///     |request: Incoming| async move { Ok::<_, HttpError>(request.body) }
/// }
/// # drop(echo());
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: Incoming) -> BoxFuture<Result<Bytes, HttpError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, HttpError>> + Send + 'static,
{
    fn handle(&self, request: Incoming) -> BoxFuture<Result<Bytes, HttpError>> {
        Box::pin(self(request))
    }
}

fn refused(status: StatusCode, kind: &'static str, message: impl Into<String>) -> HttpError {
    HttpError::Refused {
        status: status.as_u16(),
        kind,
        message: message.into(),
    }
}

/// Parses a target in its `x-mediator-target` form: `g/n`, `g/` (the
/// unnamed node), `g/*` (all) or `g/?` (any).
///
/// ```
/// use mediator_transport_http::client::parse_target;
/// use mediator_core::{NodeKey, Target};
/// assert_eq!(parse_target("cache/*").unwrap(), Target::all("cache").unwrap());
/// assert_eq!(parse_target("g/").unwrap(), Target::One(NodeKey::unnamed("g").unwrap()));
/// assert!(parse_target("g/a b").is_err());
/// ```
pub fn parse_target(text: &str) -> Result<Target, Error> {
    match text.split_once('/') {
        Some((group, "*")) => Target::all(group),
        Some((group, "?")) => Target::any(group),
        Some(_) => Ok(Target::One(text.parse()?)),
        None => Err(Error::invalid(
            "target",
            "must be group/name, group/, group/* or group/?",
        )),
    }
}

/// Whether `target` addresses the node `own`.
pub fn addresses(target: &Target, own: &NodeKey) -> bool {
    match target {
        Target::One(key) => key == own,
        Target::All(group) | Target::Any(group) => group == own.group(),
    }
}

fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<&'a str>, HttpError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            refused(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{name} is not printable ASCII"),
            )
        }),
    }
}

/// Opens a request handed over by the mediator, as node `own`.
///
/// `head` is the request's head (method, URI, headers), `body` its whole
/// body. Refusals are [`HttpError::Refused`] with the status to answer with;
/// see the [client module documentation](super) for the rules. `require_sender`
/// refuses requests from callers without a verified node identity.
///
/// ```
/// use mediator_core::{KeyRing, NodeKey, SealKey, Target};
/// use mediator_transport_http::client::{open_request, seal_request};
///
/// let ring = KeyRing::new(SealKey::generate());
/// let me = NodeKey::named("users", "api")?;
/// let caller = NodeKey::named("billing", "worker-1")?;
/// let sealed = seal_request(&ring, Some(&caller), &Target::One(me.clone()), "/lookup", b"42")?;
///
/// // What the mediator hands over.
/// let head = |path: &str| {
///     http::Request::post(path)
///         .header("x-mediator-target", "users/api")
///         .header("x-mediator-from", "billing/worker-1")
///         .body(())
///         .expect("a valid request")
///         .into_parts()
///         .0
/// };
/// let incoming = open_request(&ring, &me, &head("/lookup?verbose=1"), sealed.clone().into(), false)?;
/// assert_eq!(incoming.body, "42");
/// assert_eq!(incoming.from, Some(caller));
/// assert_eq!(incoming.query.as_deref(), Some("verbose=1"));
///
/// // Replayed at another path, the payload no longer opens.
/// assert!(open_request(&ring, &me, &head("/delete"), sealed.into(), false).is_err());
/// # Ok::<(), mediator_transport_http::HttpError>(())
/// ```
pub fn open_request(
    cipher: &dyn Cipher,
    own: &NodeKey,
    head: &http::request::Parts,
    body: Bytes,
    require_sender: bool,
) -> Result<Incoming, HttpError> {
    let headers = &head.headers;
    let target_text = header_text(headers, &X_MEDIATOR_TARGET)?.ok_or_else(|| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{X_MEDIATOR_TARGET} is missing: the request did not come through a mediator"),
        )
    })?;
    let target = parse_target(target_text).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{X_MEDIATOR_TARGET}: {e}"),
        )
    })?;
    if !addresses(&target, own) {
        return Err(refused(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!("this is node {own}; the request was for {target}"),
        ));
    }
    let from = match header_text(headers, &X_MEDIATOR_FROM)? {
        None => None,
        Some(text) => Some(text.parse::<NodeKey>().map_err(|e| {
            refused(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{X_MEDIATOR_FROM}: {e}"),
            )
        })?),
    };
    if require_sender && from.is_none() {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "unverified_sender",
            "this node answers only callers whose token names a node",
        ));
    }
    let deadline = match header_text(headers, &X_MEDIATOR_DEADLINE)? {
        None => None,
        Some(text) => Some(Timestamp::from_millis(text.trim().parse().map_err(
            |_| {
                refused(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("{X_MEDIATOR_DEADLINE} must be milliseconds since the epoch"),
                )
            },
        )?)),
    };
    let path = head.uri.path().to_owned();
    let ad = aad(from.as_ref(), &target.to_string(), &path);
    let plain = cipher.open(&body, &ad).map_err(|e| match e {
        Error::Sealed(why) => refused(StatusCode::BAD_REQUEST, "sealed", why),
        other => HttpError::Core(other),
    })?;
    Ok(Incoming {
        from,
        target,
        method: head.method.clone(),
        path,
        query: head.uri.query().map(str::to_owned),
        deadline,
        body: Bytes::from(plain),
    })
}

/// Seals a node's reply to `request` as node `own`: the AAD names this node
/// as the sender and the caller as the target, at the request's path.
pub fn seal_reply(
    cipher: &dyn Cipher,
    own: &NodeKey,
    request: &Incoming,
    reply: &[u8],
) -> Result<Vec<u8>, HttpError> {
    let caller = request
        .from
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok(cipher.seal(reply, &aad(Some(own), &caller, &request.path))?)
}

/// Seals a request payload from `from` for `target` at `path` (the query,
/// if any, is not covered), as a client does before sending it.
pub fn seal_request(
    cipher: &dyn Cipher,
    from: Option<&NodeKey>,
    target: &Target,
    path: &str,
    body: &[u8],
) -> Result<Vec<u8>, HttpError> {
    Ok(cipher.seal(body, &aad(from, &target.to_string(), path))?)
}

/// Opens a reply from node `replier` to `caller` for a request at `path`.
pub fn open_reply(
    cipher: &dyn Cipher,
    replier: &NodeKey,
    caller: Option<&NodeKey>,
    path: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, HttpError> {
    let caller = caller.map(ToString::to_string).unwrap_or_default();
    Ok(cipher.open(sealed, &aad(Some(replier), &caller, path))?)
}

/// The JSON error body every refusal carries.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    fault: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message, "kind": kind, "fault": fault });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The answer for an error out of [`open_request`] or a handler.
pub(crate) fn answer_error(error: &HttpError) -> Response<Full<Bytes>> {
    match error {
        HttpError::Refused {
            status,
            kind,
            message,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let fault = if status.is_client_error() {
                "caller"
            } else {
                "node"
            };
            error_response(status, kind, fault, message)
        }
        HttpError::Core(e) => error_response(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.kind(),
            match e.fault() {
                mediator_core::Fault::Caller => "caller",
                mediator_core::Fault::Hub | mediator_core::Fault::Node => "node",
            },
            &e.to_string(),
        ),
        other => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "node_error",
            "node",
            &other.to_string(),
        ),
    }
}

/// Reads a whole body, refusing one longer than `max` with 413.
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {max} bytes"),
        )),
        Err(e) => Err(refused(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body could not be read: {e}"),
        )),
    }
}

/// How long past the caller's deadline a node keeps going.
///
/// The mediator answers the caller with its own 504 (naming the node) at
/// the deadline; a node that also gave up exactly then would race it and
/// the caller would sometimes see the node's answer instead. The slack
/// also absorbs clock skew between the mediator's and the node's hosts,
/// since the deadline travels as wall-clock time.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Runs `work` until [`DEADLINE_SLACK`] after `deadline` (wall clock), if
/// there is one: the caller has stopped waiting by then, so the work is cut
/// off and answered with 504.
pub(crate) async fn within_deadline<T>(
    deadline: Option<Timestamp>,
    work: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    let Some(deadline) = deadline else {
        return work.await;
    };
    let left: Duration = Timestamp::now().until(deadline + DEADLINE_SLACK);
    if left.is_zero() {
        return Err(refused(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_passed",
            "the caller's deadline passed before the request was handled",
        ));
    }
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => Err(refused(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_passed",
            "the handler did not finish before the caller's deadline",
        )),
    }
}

/// A hyper service that opens each request, runs the [`Handler`] and seals
/// its reply: what [`NodeClient`](super::NodeClient) serves at its callback
/// URL, usable on its own with any hyper server.
///
/// Cheap to clone.
///
/// ```
/// use mediator_core::{KeyRing, NodeKey, SealKey};
/// use mediator_transport_http::client::{Incoming, NodeService};
/// use mediator_transport_http::HttpError;
///
/// let service = NodeService::new(
///     NodeKey::named("users", "api").unwrap(),
///     KeyRing::new(SealKey::generate()),
///     |request: Incoming| async move { Ok::<_, HttpError>(request.body) },
/// )
/// .require_sender(true);
/// // hyper::server::conn::http1::Builder::new().serve_connection(io, service)
/// # drop(service);
/// ```
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    own: NodeKey,
    cipher: Arc<dyn Cipher>,
    handler: Arc<dyn Handler>,
    require_sender: bool,
    max_body: usize,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("node", &self.inner.own)
            .field("require_sender", &self.inner.require_sender)
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

impl NodeService {
    /// A service for node `own`, opening and sealing with `cipher`.
    pub fn new(own: NodeKey, cipher: impl Cipher, handler: impl Handler) -> NodeService {
        NodeService::from_parts(own, Arc::new(cipher), Arc::new(handler))
    }

    pub(crate) fn from_parts(
        own: NodeKey,
        cipher: Arc<dyn Cipher>,
        handler: Arc<dyn Handler>,
    ) -> NodeService {
        NodeService {
            inner: Arc::new(ServiceInner {
                own,
                cipher,
                handler,
                require_sender: false,
                max_body: DEFAULT_MAX_BODY,
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut ServiceInner)) -> NodeService {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => {
                let old = &self.inner;
                let mut fresh = ServiceInner {
                    own: old.own.clone(),
                    cipher: Arc::clone(&old.cipher),
                    handler: Arc::clone(&old.handler),
                    require_sender: old.require_sender,
                    max_body: old.max_body,
                };
                change(&mut fresh);
                self.inner = Arc::new(fresh);
            }
        }
        self
    }

    /// Refuses (403) callers whose token names no node (default: accepted,
    /// with `from: None`).
    pub fn require_sender(self, require: bool) -> NodeService {
        self.edit(|inner| inner.require_sender = require)
    }

    /// The largest request body read (default [`DEFAULT_MAX_BODY`]); longer
    /// ones are refused with 413.
    pub fn max_body(self, bytes: usize) -> NodeService {
        self.edit(|inner| inner.max_body = bytes)
    }

    /// The node this service answers as.
    pub fn node(&self) -> &NodeKey {
        &self.inner.own
    }

    /// Handles one request, whatever its body type.
    pub async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.try_answer(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(node = %self.inner.own, %error, "request refused");
                answer_error(&error)
            }
        }
    }

    async fn try_answer<B>(&self, request: Request<B>) -> Result<Response<Full<Bytes>>, HttpError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let (head, body) = request.into_parts();
        let body = read_body(body, inner.max_body).await?;
        let incoming = open_request(
            inner.cipher.as_ref(),
            &inner.own,
            &head,
            body,
            inner.require_sender,
        )?;
        let deadline = incoming.deadline;
        let handled = within_deadline(deadline, inner.handler.handle(incoming.clone())).await?;
        let sealed = seal_reply(inner.cipher.as_ref(), &inner.own, &incoming, &handled)?;
        let mut response = Response::new(Full::new(Bytes::from(sealed)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(SEALED_CONTENT_TYPE));
        Ok(response)
    }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for NodeService {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.answer(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mediator_core::{KeyRing, SealKey};

    fn key(s: &str) -> NodeKey {
        s.parse().expect("key")
    }

    fn head(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::post(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn status_of(result: Result<Incoming, HttpError>) -> (u16, &'static str) {
        match result {
            Err(HttpError::Refused { status, kind, .. }) => (status, kind),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn targets_parse_and_address() {
        let me = key("users/api");
        for (text, ok) in [
            ("users/api", true),
            ("users/*", true),
            ("users/?", true),
            ("users/other", false),
            ("users/", false),
            ("other/*", false),
            ("other/api", false),
        ] {
            let target = parse_target(text).expect(text);
            assert_eq!(target.to_string(), text);
            assert_eq!(addresses(&target, &me), ok, "{text}");
        }
        assert!(parse_target("users").is_err());
        assert!(parse_target("/x").is_err());
        assert!(addresses(&parse_target("g/").expect("unnamed"), &key("g/")));
    }

    #[test]
    fn open_request_enforces_every_rule() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let caller = key("billing/w1");
        let one = Target::One(me.clone());
        let sealed: Bytes = seal_request(&ring, Some(&caller), &one, "/lookup", b"hi")
            .expect("seal")
            .into();
        let good = [
            ("x-mediator-target", "users/api"),
            ("x-mediator-from", "billing/w1"),
        ];

        let ok =
            open_request(&ring, &me, &head("/lookup", &good), sealed.clone(), true).expect("opens");
        assert_eq!(ok.body, "hi");
        assert_eq!(ok.target, one);

        const T: &str = "x-mediator-target";
        const F: &str = "x-mediator-from";
        // (why, path, headers, sender required, expected status and kind)
        type Refusal<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            bool,
            (u16, &'a str),
        );
        let refusals: [Refusal<'_>; 8] = [
            (
                "no target header",
                "/lookup",
                &[(F, "billing/w1")],
                false,
                (400, "invalid"),
            ),
            (
                "another node",
                "/lookup",
                &[(T, "users/db"), (F, "billing/w1")],
                false,
                (421, "misdirected"),
            ),
            (
                "another sender",
                "/lookup",
                &[(T, "users/api"), (F, "billing/w2")],
                false,
                (400, "sealed"),
            ),
            (
                "sender dropped",
                "/lookup",
                &[(T, "users/api")],
                false,
                (400, "sealed"),
            ),
            (
                "sender required",
                "/lookup",
                &[(T, "users/api")],
                true,
                (403, "unverified_sender"),
            ),
            ("another path", "/other", &good, false, (400, "sealed")),
            (
                "re-targeted as a broadcast",
                "/lookup",
                &[(T, "users/*"), (F, "billing/w1")],
                false,
                (400, "sealed"),
            ),
            (
                "malformed sender",
                "/lookup",
                &[(T, "users/api"), (F, "a b/c")],
                false,
                (400, "invalid"),
            ),
        ];
        for (why, path, headers, require, expected) in refusals {
            let r = open_request(&ring, &me, &head(path, headers), sealed.clone(), require);
            assert_eq!(status_of(r), expected, "{why}");
        }
    }

    #[test]
    fn replies_open_only_for_the_caller() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let caller = key("billing/w1");
        let sealed = seal_request(
            &ring,
            Some(&caller),
            &Target::any("users").expect("any"),
            "/p",
            b"q",
        )
        .expect("seal");
        let incoming = open_request(
            &ring,
            &me,
            &head(
                "/p",
                &[
                    ("x-mediator-target", "users/?"),
                    ("x-mediator-from", "billing/w1"),
                ],
            ),
            sealed.into(),
            false,
        )
        .expect("opens");
        let reply = seal_reply(&ring, &me, &incoming, b"answer").expect("seal");
        assert_eq!(
            open_reply(&ring, &me, Some(&caller), "/p", &reply).expect("opens"),
            b"answer"
        );
        assert!(open_reply(&ring, &key("users/db"), Some(&caller), "/p", &reply).is_err());
        assert!(open_reply(&ring, &me, Some(&key("billing/w2")), "/p", &reply).is_err());
        assert!(open_reply(&ring, &me, Some(&caller), "/q", &reply).is_err());
    }

    #[tokio::test]
    async fn deadlines_cut_handlers_off() {
        let past = Some(Timestamp::from_millis(
            Timestamp::now().as_millis() - 1 - DEADLINE_SLACK.as_millis() as i64,
        ));
        let r = within_deadline(past, async { Ok::<_, HttpError>(()) }).await;
        assert!(
            matches!(r, Err(HttpError::Refused { status: 504, .. })),
            "{r:?}"
        );
        // Already past, but within the slack: the handler still runs, and
        // is cut off once the slack is spent too.
        let soon = Some(Timestamp::from_millis(
            Timestamp::now().as_millis() + 50 - DEADLINE_SLACK.as_millis() as i64,
        ));
        assert!(within_deadline(soon, async { Ok::<_, HttpError>(()) })
            .await
            .is_ok());
        let r = within_deadline(soon, std::future::pending::<Result<(), HttpError>>()).await;
        assert!(
            matches!(r, Err(HttpError::Refused { status: 504, .. })),
            "{r:?}"
        );
        assert!(within_deadline(None, async { Ok::<_, HttpError>(1) })
            .await
            .is_ok());
    }
}
