//! The node's side of a sealed exchange over HTTP: reading what the
//! mediator hands over off the request, and a hyper service that answers it
//! around a [`Handler`].
//!
//! The rules themselves (what is refused, with which status) are the
//! core's: see [`mediator_core::node`].

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mediator_core::node::{self, BoxFuture, Delivered, Handler, Incoming, Responder};
use mediator_core::{Cipher, Clock, Error, ErrorBody, Fault, NodeKey, SystemClock};

use crate::headers::{X_MEDIATOR_DEADLINE, X_MEDIATOR_FROM, X_MEDIATOR_TARGET};

/// The content type of sealed bodies.
pub const SEALED_CONTENT_TYPE: &str = "application/octet-stream";

pub use mediator_core::node::DEFAULT_MAX_BODY;

/// The text of header `name`, refusing (400) one that is not printable
/// ASCII, since no routing fact the mediator writes can be.
fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    field: &'static str,
) -> Result<Option<&'a str>, Error> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| Error::invalid(field, format!("{name} is not printable ASCII"))),
    }
}

/// What the mediator handed over in an HTTP request: the `x-mediator-*`
/// headers, the method, path and query of `head`, and the sealed `body`.
fn delivered<'a>(head: &'a http::request::Parts, body: &'a [u8]) -> Result<Delivered<'a>, Error> {
    let headers = &head.headers;
    // The core refuses this too; here the refusal can name the header the
    // caller should look for.
    let target = header_text(headers, &X_MEDIATOR_TARGET, "target")?.ok_or_else(|| {
        Error::invalid(
            "target",
            format!("{X_MEDIATOR_TARGET} is missing: the request did not come through a mediator"),
        )
    })?;
    Ok(Delivered::new(head.method.clone(), head.uri.path(), body)
        .with_target(target)
        .with_from(header_text(headers, &X_MEDIATOR_FROM, "from")?)
        .with_deadline(header_text(headers, &X_MEDIATOR_DEADLINE, "deadline")?)
        .with_query(head.uri.query()))
}

/// Opens a request handed over by the mediator over HTTP, as node `own`:
/// [`mediator_core::node::open_request`] applied to the request's head
/// (method, URI, `x-mediator-*` headers) and whole body.
///
/// A refusal carries the status to answer with ([`Error::status`]);
/// `require_sender` refuses requests from callers without a verified node
/// identity.
///
/// ```
/// use mediator_core::node::seal_request;
/// use mediator_core::{KeyRing, NodeKey, SealKey, Target};
/// use mediator_transport_http::client::open_request;
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
/// let replayed = open_request(&ring, &me, &head("/delete"), sealed.into(), false).unwrap_err();
/// assert_eq!((replayed.status(), replayed.kind()), (400, "sealed"));
/// # Ok::<(), mediator_core::Error>(())
/// ```
pub fn open_request(
    cipher: &dyn Cipher,
    own: &NodeKey,
    head: &http::request::Parts,
    body: Bytes,
    require_sender: bool,
) -> Result<Incoming, Error> {
    node::open_request(cipher, own, delivered(head, &body)?, require_sender)
}

/// A JSON answer with `status`.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The JSON error body every refusal carries.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    fault: Fault,
    message: &str,
) -> Response<Full<Bytes>> {
    json_response(status, &ErrorBody::new(message, kind, fault).to_value())
}

/// The answer for a refusal or a handler's error: its status, kind and
/// message, and whose fault it was as the caller sees it (whatever is not
/// the caller's is this node's).
pub(crate) fn answer_error(error: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let fault = match error.fault() {
        Fault::Caller => Fault::Caller,
        _ => Fault::Node,
    };
    // A refusal's message is the refuser's own words; the status and kind
    // already travel beside it.
    let message = match error {
        Error::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    };
    error_response(status, error.kind(), fault, &message)
}

/// Reads a whole body, refusing one longer than `max` with 413.
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, Error>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::refused(
            413,
            "too_large",
            format!("the body is larger than {max} bytes"),
        )),
        Err(e) => Err(Error::invalid(
            "body",
            format!("the body could not be read: {e}"),
        )),
    }
}

/// A hyper service that opens each request, runs the [`Handler`] and seals
/// its reply (a [`Responder`] over HTTP): what
/// [`NodeClient`](super::NodeClient) serves at its callback URL, usable on
/// its own with any hyper server.
///
/// Every refusal and handler error is answered with its status and a JSON
/// body `{"error", "kind", "fault"}`, the shape the mediator uses, so the
/// caller sees why. Cheap to clone.
///
/// ```
/// use mediator_core::{Error, KeyRing, NodeKey, SealKey};
/// use mediator_transport_http::client::{Incoming, NodeService};
///
/// let service = NodeService::new(
///     NodeKey::named("users", "api").unwrap(),
///     KeyRing::new(SealKey::generate()),
///     |request: Incoming| async move { Ok::<_, Error>(request.body) },
/// )
/// .require_sender(true);
/// // hyper::server::conn::http1::Builder::new().serve_connection(io, service)
/// # drop(service);
/// ```
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<ServiceInner>,
}

#[derive(Clone)]
struct ServiceInner {
    responder: Responder,
    max_body: usize,
    /// What deadlines are read against.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("node", self.inner.responder.node())
            .field("require_sender", &self.inner.responder.requires_sender())
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

impl NodeService {
    /// A service for node `own`, opening and sealing with `cipher`.
    pub fn new(own: NodeKey, cipher: impl Cipher, handler: impl Handler) -> NodeService {
        NodeService::from_responder(
            Responder::new(own, cipher, handler),
            DEFAULT_MAX_BODY,
            Arc::new(SystemClock),
        )
    }

    /// A service answering with `responder`, reading bodies up to
    /// `max_body` and deadlines against `clock`.
    pub(crate) fn from_responder(
        responder: Responder,
        max_body: usize,
        clock: Arc<dyn Clock>,
    ) -> NodeService {
        NodeService {
            inner: Arc::new(ServiceInner {
                responder,
                max_body,
                clock,
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut ServiceInner)) -> NodeService {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Refuses (403) callers whose token names no node (default: accepted,
    /// with `from: None`).
    pub fn require_sender(self, require: bool) -> NodeService {
        self.edit(|inner| inner.responder = inner.responder.clone().require_sender(require))
    }

    /// The largest request body read (default [`DEFAULT_MAX_BODY`]); longer
    /// ones are refused with 413.
    pub fn max_body(self, bytes: usize) -> NodeService {
        self.edit(|inner| inner.max_body = bytes)
    }

    /// The clock a request's deadline is read against (default: the
    /// system clock); a started [`NodeClient`](super::NodeClient) passes
    /// its own.
    pub fn clock(self, clock: impl Clock) -> NodeService {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.edit(|inner| inner.clock = clock)
    }

    /// The node this service answers as.
    pub fn node(&self) -> &NodeKey {
        self.inner.responder.node()
    }

    /// Handles one request, whatever its body type.
    pub async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.try_answer(request).await {
            Ok(sealed) => {
                let mut response = Response::new(Full::new(Bytes::from(sealed)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(SEALED_CONTENT_TYPE));
                response
            }
            Err(error) => {
                tracing::debug!(node = %self.node(), %error, "request refused");
                answer_error(&error)
            }
        }
    }

    async fn try_answer<B>(&self, request: Request<B>) -> Result<Vec<u8>, Error>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (head, body) = request.into_parts();
        let body = read_body(body, self.inner.max_body).await?;
        let delivered = delivered(&head, &body)?;
        self.inner
            .responder
            .answer(delivered, self.inner.clock.now())
            .await
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
    use std::time::Duration;

    use mediator_core::node::{open_reply, seal_request, DEADLINE_SLACK};
    use mediator_core::{KeyRing, ManualClock, SealKey, Target, Timestamp};

    use super::*;

    fn key(s: &str) -> NodeKey {
        s.parse().expect("key")
    }

    fn request(path: &str, headers: &[(&str, &[u8])], body: Vec<u8>) -> Request<Full<Bytes>> {
        let mut builder = Request::post(path);
        for (name, value) in headers {
            builder = builder.header(*name, HeaderValue::from_bytes(value).expect("value"));
        }
        builder.body(Full::new(Bytes::from(body))).expect("request")
    }

    async fn bytes_of(response: Response<Full<Bytes>>) -> Bytes {
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
    }

    async fn json_of(response: Response<Full<Bytes>>) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        let body = bytes_of(response).await;
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[test]
    fn the_head_says_what_the_mediator_said() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let sealed = seal_request(&ring, None, &Target::One(me.clone()), "/p", b"x").expect("seal");
        let (head, _) = request(
            "/p?q=1",
            &[
                ("x-mediator-target", b"users/api"),
                ("x-mediator-deadline", b"1700000000000"),
            ],
            Vec::new(),
        )
        .into_parts();
        let incoming = open_request(&ring, &me, &head, sealed.into(), false).expect("opens");
        assert_eq!(incoming.query.as_deref(), Some("q=1"));
        assert_eq!(
            incoming.deadline,
            Some(Timestamp::from_millis(1_700_000_000_000))
        );
        assert_eq!(incoming.body, "x");

        // A header that is not text is refused before anything else.
        for name in [
            "x-mediator-target",
            "x-mediator-from",
            "x-mediator-deadline",
        ] {
            let mut headers: Vec<(&str, &[u8])> = vec![(name, b"caf\xc3\xa9")];
            if name != "x-mediator-target" {
                headers.push(("x-mediator-target", b"users/api"));
            }
            let (head, _) = request("/p", &headers, Vec::new()).into_parts();
            let e = open_request(&ring, &me, &head, Bytes::new(), false).expect_err(name);
            assert_eq!((e.status(), e.kind()), (400, "invalid"), "{name}");
            assert!(e.to_string().contains("printable ASCII"), "{e}");
        }
    }

    #[tokio::test]
    async fn the_service_answers_sealed_or_with_a_json_error() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        let caller = key("billing/w1");
        let service = NodeService::new(me.clone(), ring.clone(), |request: Incoming| async move {
            match request.path.as_str() {
                "/teapot" => Err(Error::refused(418, "teapot", "short and stout")),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Bytes::new())
                }
                _ => Ok(request.body),
            }
        })
        .max_body(1024);
        let seal = |path: &str, body: &[u8]| {
            seal_request(&ring, Some(&caller), &Target::One(me.clone()), path, body).expect("seal")
        };
        let facts: &[(&str, &[u8])] = &[
            ("x-mediator-target", b"users/api"),
            ("x-mediator-from", b"billing/w1"),
        ];

        let response = service
            .answer(request("/echo", facts, seal("/echo", b"hi")))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], SEALED_CONTENT_TYPE);
        let body = bytes_of(response).await;
        assert_eq!(
            open_reply(&ring, &me, Some(&caller), "/echo", &body).expect("opens"),
            b"hi"
        );

        let (status, body) = json_of(
            service
                .answer(request("/teapot", facts, seal("/teapot", b"")))
                .await,
        )
        .await;
        assert_eq!(status, 418);
        assert_eq!(
            (body["kind"].as_str(), body["fault"].as_str()),
            (Some("teapot"), Some("caller"))
        );

        let (status, body) = json_of(
            service
                .answer(request("/echo", facts, seal("/echo", &[0; 2048])))
                .await,
        )
        .await;
        assert_eq!((status, body["kind"].as_str()), (413, Some("too_large")));

        let misdirected: &[(&str, &[u8])] = &[("x-mediator-target", b"users/db")];
        let (status, body) = json_of(
            service
                .answer(request("/echo", misdirected, seal("/echo", b"")))
                .await,
        )
        .await;
        assert_eq!((status, body["kind"].as_str()), (421, Some("misdirected")));

        let soon = Timestamp::now() + Duration::from_millis(50) - DEADLINE_SLACK;
        let soon = soon.as_millis().to_string();
        let with_deadline: &[(&str, &[u8])] = &[
            ("x-mediator-target", b"users/api"),
            ("x-mediator-from", b"billing/w1"),
            ("x-mediator-deadline", soon.as_bytes()),
        ];
        let (status, body) = json_of(
            service
                .answer(request("/slow", with_deadline, seal("/slow", b"")))
                .await,
        )
        .await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (504, Some("deadline_passed"))
        );
    }

    #[tokio::test]
    async fn deadlines_are_read_on_the_services_clock() {
        let ring = KeyRing::new(SealKey::generate());
        let me = key("users/api");
        // An hour ahead of the system time: a deadline a minute away on the
        // system clock has long passed on this one.
        let clock = ManualClock::new(Timestamp::now() + Duration::from_secs(3600));
        let service = NodeService::new(me.clone(), ring.clone(), |request: Incoming| async move {
            Ok::<_, Error>(request.body)
        })
        .clock(clock);
        let deadline = (Timestamp::now() + Duration::from_secs(60))
            .as_millis()
            .to_string();
        let headers: &[(&str, &[u8])] = &[
            ("x-mediator-target", b"users/api"),
            ("x-mediator-deadline", deadline.as_bytes()),
        ];
        let sealed = seal_request(&ring, None, &Target::One(me), "/p", b"x").expect("seal");
        let response = service.answer(request("/p", headers, sealed)).await;
        let (status, body) = json_of(response).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (504, Some("deadline_passed"))
        );
    }
}
