//! The mediator's routes: parsing the path, checking the caller, and
//! answering with the original's shapes (plus ours). Each concern has its
//! own file: [`path`] names the route, [`register`] the node's own
//! registration, [`forward`] the calls to other nodes, [`admin`] the
//! operator's routes and the probes.

// Refusals travel as `Err(ready reply)`; one is built at most once per
// request, so the size of the error variant costs nothing worth boxing.
#![allow(clippy::result_large_err)]

mod admin;
mod forward;
pub(crate) mod path;
mod register;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH};
use http::request::Parts;
use http::HeaderValue;
use http::{Request, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use mediator_core::auth::Identity;
use mediator_core::budget::BodyReservation;
use mediator_core::{Error, Fault, Mediator, TraceContext};
use serde_json::{json, Map, Value};
use tracing::Instrument;

#[cfg(feature = "console")]
use super::console::{self, ConsoleCx};
use super::credentials;
use super::metrics::{Metrics, MetricsAccess, RouteLabel};
use super::reply::{self, HttpResponse};
use super::request_log::{sender_name, RequestRecord};
use super::service::{BoxError, Front, RemoteAddr, Surface};
use super::throttle::LoginThrottle;
use crate::headers::{TRACEPARENT, X_REQUEST_ID};
use path::{parse_route, Fan, Route};

/// What the routes learnt about a request, for its log line.
#[derive(Default)]
struct Seen {
    /// The authenticated caller, once known.
    sender: Option<Identity>,
}

/// Answers one request and writes its one log line: request id, trace,
/// caller, target, node, status and duration. Tokens are never logged:
/// the line holds the path without its query, and the sender as its
/// verified name.
///
/// Every response carries the request's `x-request-id`: the caller's when
/// well-formed, else a new one (see [`TraceContext::accept`]), the same
/// the nodes are given.
pub(crate) async fn handle<B>(cx: &ServiceCx<'_>, mut request: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let ServiceCx {
        mediator,
        metrics,
        secure,
        front,
        ..
    } = *cx;
    let started = Instant::now();
    if let Some(RemoteAddr(peer)) = request.extensions().get::<RemoteAddr>().copied() {
        let client = front.client(peer, request.headers());
        if client != peer {
            request.extensions_mut().insert(RemoteAddr(client));
        }
    }
    let path = request.uri().path().to_owned();
    let route = parse_route(&path);
    if let (
        Surface::Api,
        Route::Forward {
            fan,
            group,
            name,
            rest,
        },
    ) = (front.surface, &route)
    {
        // A call: the core runs it, and writes its line and counts it.
        let call = forward::Call {
            fan: *fan,
            group,
            name: *name,
            rest,
        };
        let arrived = tokio::time::Instant::from_std(started);
        let mut response =
            forward::forward(mediator, call, request, arrived, BODY_CREDENTIAL_LIMIT).await;
        add_hsts(secure, &mut response);
        return response;
    }
    if let (Surface::Api, Route::Peer { group, name, rest }) = (front.surface, &route) {
        // A call another instance forwards: framed as any call, from a
        // peer whose credential the head carries.
        let call = forward::Call {
            fan: Fan::One,
            group,
            name: *name,
            rest,
        };
        let arrived = tokio::time::Instant::from_std(started);
        return forward::forward_from_peer(mediator, call, request, arrived).await;
    }
    let label = route.label();
    let target = route.target();
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let trace = TraceContext::accept(text(X_REQUEST_ID), text(TRACEPARENT));
    let method = request.method().clone();
    let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
    let request_id = trace.request_id.as_deref().unwrap_or_default();
    // Events inside the request (retries, refusals) carry its id when
    // debugging; at the default level the span costs nothing.
    let span = tracing::debug_span!("request", request_id);
    let mut seen = Seen::default();
    let mut response = dispatch(cx, route, &path, &mut seen, request)
        .instrument(span)
        .await;
    add_hsts(secure, &mut response);
    let status = response.status().as_u16();
    let took = started.elapsed();
    metrics.request(label, status, took);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    let (level, message) = if status >= 500 {
        (tracing::Level::WARN, "request failed")
    } else if label == RouteLabel::Renew && status < 400 {
        // Every node renews every third of its lease: routine.
        (tracing::Level::DEBUG, "request")
    } else {
        (tracing::Level::INFO, "request")
    };
    let request_log = mediator.request_log();
    if request_log.enabled(level) {
        let ids = trace.ids();
        let mut record =
            RequestRecord::new(level, message, request_id, &method, &path, status, took);
        record.trace_id = ids.map(|(trace_id, _)| trace_id);
        record.span_id = ids.map(|(_, span_id)| span_id);
        record.remote = remote;
        record.sender = seen.sender.as_ref().map(sender_name);
        record.target = target;
        request_log.record(&record);
    }
    response
}

/// Pins browsers to HTTPS for the hub's origin, when it is served over TLS.
fn add_hsts(secure: bool, response: &mut HttpResponse) {
    if secure {
        response.headers_mut().insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// What a request is answered with: the service's shared parts.
#[derive(Clone, Copy)]
pub(crate) struct ServiceCx<'a> {
    /// The mediator the service answers for.
    pub(crate) mediator: &'a Mediator,
    /// The service's request counts.
    pub(crate) metrics: &'a Metrics,
    /// The backoff of logins (Basic, and the console's sign-in).
    pub(crate) logins: &'a LoginThrottle,
    /// Whether the service is reached over TLS.
    pub(crate) secure: bool,
    /// The console's sessions, logins and cookie rules.
    #[cfg(feature = "console")]
    pub(crate) console: ConsoleCx<'a>,
    /// Who may read `/metrics`.
    pub(crate) access: MetricsAccess,
    /// Which face the service shows, and the proxies it trusts.
    pub(crate) front: &'a Front,
}

async fn dispatch<B>(
    cx: &ServiceCx<'_>,
    route: Route<'_>,
    path: &str,
    seen: &mut Seen,
    request: Request<B>,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let ServiceCx {
        mediator,
        metrics,
        access,
        front,
        logins,
        ..
    } = *cx;
    let surface = front.surface;
    let (mut parts, body) = request.into_parts();
    // Every route refuses a body announced too large, even one that would
    // never read it, so the limit reads the same whatever the path.
    let max = mediator.limits().max_body;
    if let Some(len) = announced_size(&parts.headers, &body).filter(|len| *len > max as u64) {
        // Read what the caller is sending anyway, when there is not too
        // much of it, so that the 413 is not lost to a reset. A caller that
        // waits for `100 Continue` sends nothing more until asked: polling
        // the body would ask it.
        let waits_to_continue = parts
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits_to_continue && len <= drain_bound(max) {
            discard(body, drain_bound(max), mediator.limits().deadline).await;
        }
        return too_large(max);
    }
    if let Some(refusal) = off_surface(surface, &route, path) {
        return refusal;
    }
    if let Some(response) = throttle_login(mediator, logins, &route, &mut parts).await {
        return response;
    }
    match route {
        Route::Healthz => return reply::json(StatusCode::OK, &json!({ "ok": true })),
        Route::Metrics => return admin::metrics_reply(mediator, metrics, access, &parts),
        Route::Dashboard | Route::Console(_) => {
            return console_route(cx, route, parts, body, seen).await
        }
        Route::Ping | Route::Readyz => return admin::ready(mediator, &parts).await,
        Route::Token => return admin::token(mediator, &parts, &mut seen.sender),
        Route::NotFound => {
            return reply::error_status(
                StatusCode::NOT_FOUND,
                &format!("no route for {path}"),
                "not_found",
                Fault::Caller,
            )
        }
        _ => {}
    }
    // Held until the answer is built: the body's bytes count against the
    // budget for as long as they are in memory.
    let (identity, body, _held) = match authorise(mediator, &parts, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let response = match route {
        Route::Register => register::register(mediator, &identity, &body).await,
        Route::Renew => register::renew(mediator, &identity, &body).await,
        Route::Remove(id) => register::remove(mediator, &identity, id, &body).await,
        Route::AdminClusters(group) => {
            admin::admin_clusters(mediator, &identity, group, parts.uri.query()).await
        }
        Route::AdminCluster(id) => admin::admin_cluster(mediator, &identity, id).await,
        Route::AdminInstances => admin::admin_instances(mediator, &identity).await,
        // Answered above: calls by the core, the rest before any
        // credential was asked for.
        Route::Forward { .. }
        | Route::Peer { .. }
        | Route::Healthz
        | Route::Ping
        | Route::Readyz
        | Route::Token
        | Route::Metrics
        | Route::Dashboard
        | Route::Console(_)
        | Route::NotFound => reply::error_status(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}"),
            "not_found",
            Fault::Caller,
        ),
    };
    seen.sender = Some(identity);
    response
}

/// The console's page (`GET /`) and routes (`/console/*`).
#[cfg(feature = "console")]
async fn console_route<B>(
    cx: &ServiceCx<'_>,
    route: Route<'_>,
    parts: Parts,
    body: B,
    seen: &mut Seen,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mediator, console) = (cx.mediator, cx.console);
    let rest = match route {
        Route::Console(rest) => rest,
        _ => return console::root(mediator, console, &parts, &mut seen.sender).await,
    };
    // Who may send a body is settled from the head: a sign-in only while
    // its address is not made to wait, and then a small one; anything else
    // only with a credential the console accepts.
    let bound = if rest == "sign-in" {
        if let Some(wait) = console::sign_in_wait(console, &parts) {
            return wait;
        }
        SIGN_IN_BODY_LIMIT
    } else if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        // Nothing the console reads takes a body; a stray one is small or
        // refused.
        SIGN_IN_BODY_LIMIT
    } else {
        match console::admitted_by_head(mediator, console, &parts) {
            Ok(()) => mediator.limits().max_body,
            Err(e) => return reply::error(&e),
        }
    };
    if announced_size(&parts.headers, &body).is_some_and(|len| len > bound as u64) {
        // Nothing the console takes is this large: refused unread.
        return too_large(bound);
    }
    let limits = mediator.limits();
    match read_body(mediator, bound, limits.deadline, body).await {
        Ok((body, _held)) => {
            console::handle(mediator, console, &parts, &body, rest, &mut seen.sender).await
        }
        Err(response) => response,
    }
}

/// Without the console compiled in, its paths are not found, saying why.
#[cfg(not(feature = "console"))]
async fn console_route<B>(
    _cx: &ServiceCx<'_>,
    _route: Route<'_>,
    parts: Parts,
    _body: B,
    _seen: &mut Seen,
) -> HttpResponse {
    reply::error_status(
        StatusCode::NOT_FOUND,
        &format!(
            "no route for {}: this build has no console (mediator-transport-http's \
             `console` feature)",
            parts.uri.path()
        ),
        "not_found",
        Fault::Caller,
    )
}

/// The login gate for a request carrying a Basic login in its head.
///
/// Only the routes that take a Basic login look at it: the console's page
/// and reads (`/`, `GET /console/api/*`), `/token` and `/admin/*`. There
/// the login is checked once, off the request threads and under the
/// gate's bound ([`LoginThrottle::check_password`]), its outcome counted
/// in the address's backoff and kept in the request
/// ([`CheckedLogin`](credentials::CheckedLogin)) for the route to reuse; an
/// address that must still wait gets `429`, and a full queue of checks
/// `503`, both with `retry-after`. Everywhere else (probes, `/metrics`,
/// the nodes' routes, the console's actions and assets) the login is set
/// aside unread ([`credentials::set_basic_aside`]), so that a browser
/// which attaches it to every request to the hub costs no hash.
async fn throttle_login(
    mediator: &Mediator,
    logins: &LoginThrottle,
    route: &Route<'_>,
    parts: &mut Parts,
) -> Option<HttpResponse> {
    if !credentials::has_basic(&parts.headers) {
        return None;
    }
    let takes_basic = match route {
        Route::Dashboard
        | Route::Token
        | Route::AdminClusters(_)
        | Route::AdminCluster(_)
        | Route::AdminInstances => true,
        #[cfg(feature = "console")]
        Route::Console(rest) => console::takes_basic(&parts.method, rest),
        _ => false,
    };
    if !takes_basic {
        credentials::set_basic_aside(parts);
        return None;
    }
    let Some(credentials::Credential::Basic(user, password)) =
        credentials::in_head(&parts.headers, &parts.uri)
    else {
        return None;
    };
    let peer = parts.extensions.get::<RemoteAddr>().map(|r| r.0.ip());
    match logins
        .check_password(mediator, peer, &user, &password)
        .await
    {
        Ok(checked) => {
            parts.extensions.insert(credentials::CheckedLogin(checked));
            None
        }
        Err(refusal) => Some(refusal.reply()),
    }
}

/// The refusal of a route the service does not show: the console on the
/// API's service (it lives on an origin of its own), the API on the
/// console's.
fn off_surface(surface: Surface, route: &Route<'_>, path: &str) -> Option<HttpResponse> {
    let message = match (surface, route) {
        (Surface::Api, Route::Dashboard | Route::Console(_)) if cfg!(feature = "console") => {
            format!(
                "no route for {path}: the console is served on a listener of its own \
                 (`mediator serve --console-listen`)"
            )
        }
        (Surface::Console, Route::Dashboard | Route::Console(_) | Route::Healthz)
        | (Surface::Metrics, Route::Metrics | Route::Healthz)
        | (Surface::Api, _) => return None,
        (Surface::Console, _) => format!("no route for {path} on the console's listener"),
        (Surface::Metrics, _) => format!("no route for {path} on the metrics' listener"),
    };
    Some(reply::error_status(
        StatusCode::NOT_FOUND,
        &message,
        "not_found",
        Fault::Caller,
    ))
}

/// The largest body in which a token is looked for when the head carries
/// none (the original's `x-jwt` field of a JSON body): large enough for any
/// JSON body of the original's children, small enough that clients without
/// credentials cannot make the hub hold much.
const BODY_CREDENTIAL_LIMIT: usize = 64 * 1024;

/// The largest sign-in form: a password or a token, with room to spare.
#[cfg(feature = "console")]
const SIGN_IN_BODY_LIMIT: usize = 16 * 1024;

/// Checks the caller's credentials and reads the body, looking for the
/// credential in the head first: a request whose head carries a bad one is
/// refused before a byte of its body is read, and one whose head carries
/// none has its body read only while it is small enough to hold a token
/// (past [`BODY_CREDENTIAL_LIMIT`] it is `401` without being buffered).
async fn authorise<B>(
    mediator: &Mediator,
    parts: &Parts,
    body: B,
) -> Result<(Identity, Bytes, BodyReservation), HttpResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limits = mediator.limits();
    if let Some(credential) = credentials::in_head(&parts.headers, &parts.uri) {
        let identity =
            credentials::check(mediator, parts, Some(credential)).map_err(|e| reply::error(&e))?;
        let (body, held) = read_body(mediator, limits.max_body, limits.deadline, body).await?;
        return Ok((identity, body, held));
    }
    let no_credential = || {
        reply::error(&Error::unauthorized(format!(
            "no credentials in the request head (Authorization: Bearer, the x-jwt header or \
             query parameter); a token in the body is looked for only in bodies of at most \
             {} KiB",
            BODY_CREDENTIAL_LIMIT / 1024
        )))
    };
    if announced_size(&parts.headers, &body).is_some_and(|len| len > BODY_CREDENTIAL_LIMIT as u64) {
        return Err(no_credential());
    }
    let (body, held) = match read_body(mediator, BODY_CREDENTIAL_LIMIT, limits.deadline, body).await
    {
        Ok(read) => read,
        Err(response) if response.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(no_credential())
        }
        Err(response) => return Err(response),
    };
    let identity = credentials::check(mediator, parts, credentials::in_body(&body))
        .map_err(|e| reply::error(&e))?;
    Ok((identity, body, held))
}

/// The size a request announces for its body: its `Content-Length`, or
/// what the body itself knows it holds at least (a body built in process
/// may carry no header).
pub(super) fn announced_size<B: Body>(headers: &HeaderMap, body: &B) -> Option<u64> {
    let header = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let hint = body.size_hint().lower();
    match header {
        Some(len) => Some(len.max(hint)),
        None => (hint > 0).then_some(hint),
    }
}

/// The refusal of a body past the limit.
fn too_large(max: usize) -> HttpResponse {
    reply::error(&Error::TooLarge { limit: max })
}

/// How much of a body past the limit `max` is read and thrown away before
/// the 413 goes out: twice the limit, and at least 4 MiB.
///
/// HTTP/1.1 clients such as Python's `http.client` and Node's `fetch` send
/// the whole body before reading the answer; if the server closes its end
/// with their bytes unread, the kernel resets the connection and the client
/// sees `EPIPE`/`ECONNRESET` instead of the 413. Reading the rest first lets
/// the answer arrive; the bound keeps a huge upload from being read in full
/// for nothing (past it the connection is closed as before).
fn drain_bound(max: usize) -> u64 {
    (max as u64).saturating_mul(2).max(4 << 20)
}

/// Reads and drops `body` until its end, `bound` bytes, an error, or
/// `deadline`, whichever comes first.
async fn discard<B>(body: B, bound: u64, deadline: Duration)
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    let drained = tokio::time::timeout(deadline, async {
        while let Some(Ok(frame)) = body.as_mut().frame().await {
            if let Ok(data) = frame.into_data() {
                read = read.saturating_add(data.len() as u64);
                if read > bound {
                    return;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(read, "gave up reading an oversized body");
    }
}

/// Collects a request body of at most `max` bytes (413 past it) that
/// arrives within `deadline` (408 after it), counting it against the
/// mediator's [`BodyBudget`](mediator_core::budget::BodyBudget) (503 when
/// the budget is spent): the header read timeout ends with the head, so
/// without this a caller trickling a body, token or not, would hold its
/// connection for ever. Past the limit the rest is read and dropped (see
/// [`drain_bound`]) before the 413. The reservation returned holds the
/// body's bytes in the budget until it is dropped.
async fn read_body<B>(
    mediator: &Mediator,
    max: usize,
    deadline: Duration,
    body: B,
) -> Result<(Bytes, BodyReservation), HttpResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = tokio::time::Instant::now();
    let mut reservation = mediator.body_budget().reserve();
    let mut body = std::pin::pin!(body);
    let mut collected = Collected::default();
    let read = tokio::time::timeout(deadline, async {
        while let Some(frame) = body.as_mut().frame().await {
            let frame = frame.map_err(|e| {
                let e: BoxError = e.into();
                reply::error(&Error::invalid("body", format!("could not be read: {e}")))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if collected.len() + data.len() > max {
                return Err(too_large(max));
            }
            reservation.grow(data.len()).map_err(|e| {
                tracing::warn!(
                    held = mediator.body_budget().held(),
                    budget = mediator.body_budget().limit(),
                    "request body refused: the budget for bodies in memory is spent"
                );
                reply::error(&e)
            })?;
            collected.push(data);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => Ok((collected.into_bytes(), reservation)),
        Ok(Err(refusal)) => {
            drop(collected);
            drop(reservation);
            if refusal.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let left = deadline.saturating_sub(started.elapsed());
                discard(body, drain_bound(max), left).await;
            }
            Err(refusal)
        }
        Err(_) => Err(reply::error_status(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request body not received within {} ms",
                deadline.as_millis()
            ),
            "timeout",
            Fault::Caller,
        )),
    }
}

/// A body's chunks as they arrive: the first kept as it is, so a body that
/// arrives in one piece is never copied.
#[derive(Default)]
struct Collected {
    first: Bytes,
    rest: Option<bytes::BytesMut>,
}

impl Collected {
    fn len(&self) -> usize {
        self.rest
            .as_ref()
            .map_or(self.first.len(), bytes::BytesMut::len)
    }

    fn push(&mut self, data: Bytes) {
        match &mut self.rest {
            Some(rest) => rest.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let mut rest = bytes::BytesMut::with_capacity(self.first.len() + data.len());
                rest.extend_from_slice(&self.first);
                rest.extend_from_slice(&data);
                self.first = Bytes::new();
                self.rest = Some(rest);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.rest.map_or(self.first, bytes::BytesMut::freeze)
    }
}

/// The body as a JSON object; an empty body is an empty object.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(reply::error(&Error::invalid(
            "body",
            "must be a JSON object",
        ))),
        Err(e) => Err(reply::error(&Error::invalid(
            "body",
            format!("must be JSON: {e}"),
        ))),
    }
}

#[cfg(all(test, not(feature = "console")))]
mod without_the_console {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use mediator_core::{Authenticator, Mediator, MemoryRegistry};
    use tower_service::Service;

    use crate::MediatorService;

    #[tokio::test]
    async fn its_paths_are_not_found_and_say_why() {
        let mediator = Mediator::builder()
            .registry(MemoryRegistry::new())
            .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
            .build()
            .expect("mediator");
        let mut api = MediatorService::new(mediator);
        for path in ["/", "/console/api/state", "/console/sign-in"] {
            let request = http::Request::get(path)
                .body(Empty::<Bytes>::new())
                .expect("request");
            let response = api.call(request).await.expect("answered");
            assert_eq!(response.status(), 404, "{path}");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("no console"), "{path}: {text}");
        }
    }
}
