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
mod path;
mod register;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH};
use http::request::Parts;
use http::HeaderValue;
use http::{Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use mediator_core::auth::Identity;
use mediator_core::{Error, Fault, Mediator, TraceContext};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::console::{self, ConsoleCx};
use super::credentials;
use super::metrics::{Metrics, MetricsAccess, RouteLabel};
use super::reply::{self, HttpResponse};
use super::request_log::{RequestLog, RequestRecord};
use super::service::{BoxError, RemoteAddr};
use super::throttle::LoginThrottle;
use crate::headers::{TRACEPARENT, X_REQUEST_ID};
use path::{parse_route, Route};

/// What the routes learnt about a request, for its log line.
#[derive(Default)]
struct Seen {
    /// The authenticated caller, once known.
    sender: Option<Identity>,
    /// The node that answered a unicast or any-of-group request.
    node: Option<String>,
}

/// Answers one request and writes its one log line: request id, trace,
/// caller, target, node, status and duration. Tokens are never logged:
/// the line holds the path without its query, and the sender as its
/// verified name.
///
/// Every response carries the request's `x-request-id`: the caller's when
/// well-formed, else a new one (see [`TraceContext::accept`]), the same
/// the nodes are given.
pub(crate) async fn handle<B>(
    mediator: &Mediator,
    metrics: &Metrics,
    console: ConsoleCx<'_>,
    access: MetricsAccess,
    request_log: &dyn RequestLog,
    request: Request<B>,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let route = parse_route(&path);
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
    let mut response = dispatch(
        mediator, metrics, console, access, route, &path, &trace, &mut seen, request,
    )
    .instrument(span)
    .await;
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
    if request_log.enabled(level) {
        let ids = trace.ids();
        request_log.record(&RequestRecord {
            level,
            message,
            request_id,
            trace_id: ids.map(|(trace_id, _)| trace_id),
            span_id: ids.map(|(_, span_id)| span_id),
            method: &method,
            path: &path,
            remote,
            sender: seen.sender.as_ref().map(sender_name),
            target,
            node: seen.node.as_deref(),
            status,
            duration: took,
        });
    }
    response
}

// The service's shared parts and this request's own, passed as they are
// rather than bundled for one call.
#[allow(clippy::too_many_arguments)]
async fn dispatch<B>(
    mediator: &Mediator,
    metrics: &Metrics,
    console: ConsoleCx<'_>,
    access: MetricsAccess,
    route: Route<'_>,
    path: &str,
    trace: &TraceContext,
    seen: &mut Seen,
    request: Request<B>,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
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
    if let Some(response) = throttle_login(mediator, console.logins, &mut parts) {
        return response;
    }
    match route {
        Route::Healthz => return reply::json(StatusCode::OK, &json!({ "ok": true })),
        Route::Metrics => return admin::metrics_reply(mediator, metrics, access, &parts),
        Route::Dashboard => {
            return console::root(mediator, console, &parts, &mut seen.sender).await
        }
        Route::Console(rest) => {
            let limits = mediator.limits();
            return match read_body(limits.max_body, limits.deadline, body).await {
                Ok(body) => {
                    console::handle(mediator, console, &parts, &body, rest, &mut seen.sender).await
                }
                Err(response) => response,
            };
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
    let (identity, body) = match authorise(mediator, &parts, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let response = match route {
        Route::Register => register::register(mediator, &identity, &body).await,
        Route::Renew => register::renew(mediator, &identity, &body).await,
        Route::Remove(id) => register::remove(mediator, &identity, id, &body).await,
        Route::Forward {
            fan,
            group,
            name,
            rest,
        } => {
            let call = forward::Call {
                parts,
                body,
                fan,
                group,
                name,
                rest,
            };
            forward::forward(mediator, &identity, call, trace, &mut seen.node).await
        }
        Route::AdminClusters(group) => {
            admin::admin_clusters(mediator, &identity, group, parts.uri.query()).await
        }
        Route::AdminCluster(id) => admin::admin_cluster(mediator, &identity, id).await,
        // Answered above, before any credential was asked for.
        Route::Healthz
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

/// Applies the login backoff to a request carrying a Basic login in its
/// head, on any route (some answer more to an admin, so each is a place to
/// guess the password): a client that must still wait gets `429` with
/// `retry-after`; otherwise the login is checked once here, its outcome
/// counted and kept in the request ([`CheckedLogin`](credentials::CheckedLogin))
/// for the route to reuse. Without the peer's address (a service mounted where the server
/// adds no [`RemoteAddr`]) nothing is counted: one shared count would let
/// anyone lock the operator out.
fn throttle_login(
    mediator: &Mediator,
    logins: &LoginThrottle,
    parts: &mut Parts,
) -> Option<HttpResponse> {
    let RemoteAddr(peer) = *parts.extensions.get::<RemoteAddr>()?;
    // Most requests carry a bearer token: they skip parsing the head's
    // credentials a second time.
    let basic = parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| {
            let v = v.as_bytes().trim_ascii_start();
            v.get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
        });
    if !basic {
        return None;
    }
    let Some(login @ credentials::Credential::Basic(..)) =
        credentials::in_head(&parts.headers, &parts.uri)
    else {
        return None;
    };
    if let Some(wait) = logins.wait(peer.ip()) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = reply::error_status(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address; wait before trying again",
            "throttled",
            Fault::Caller,
        );
        if let Ok(value) = http::HeaderValue::from_str(&secs.max(1).to_string()) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        return Some(response);
    }
    let checked = mediator.authenticate(&login.as_core());
    match &checked {
        Ok(_) => logins.succeeded(peer.ip()),
        Err(_) => logins.failed(peer.ip()),
    }
    parts.extensions.insert(credentials::CheckedLogin(checked));
    None
}

/// Reads the body and checks the caller's credentials, looking in the head
/// first and, only when none is there, in the body.
async fn authorise<B>(
    mediator: &Mediator,
    parts: &Parts,
    body: B,
) -> Result<(Identity, Bytes), HttpResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let in_head = credentials::in_head(&parts.headers, &parts.uri);
    // A bad token in the head is refused before the body is read.
    let early = match in_head {
        Some(credential) => Some(
            credentials::check(mediator, parts, Some(credential)).map_err(|e| reply::error(&e))?,
        ),
        None => None,
    };
    let limits = mediator.limits();
    let body = read_body(limits.max_body, limits.deadline, body).await?;
    let identity = match early {
        Some(identity) => identity,
        None => credentials::check(mediator, parts, credentials::in_body(&body))
            .map_err(|e| reply::error(&e))?,
    };
    Ok((identity, body))
}

/// A caller as the request log names it: its node, `admin`, `operator`
/// or `unverified`.
fn sender_name(identity: &Identity) -> &str {
    match (&identity.key, identity.verified, identity.admin) {
        (Some(key), true, _) => key.as_str(),
        (None, true, true) => "admin",
        (None, true, false) => "operator",
        (_, false, _) => "unverified",
    }
}

/// The size a request announces for its body: its `Content-Length`, or
/// what the body itself knows it holds at least (a body built in process
/// may carry no header).
fn announced_size<B: Body>(headers: &HeaderMap, body: &B) -> Option<u64> {
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
/// arrives within `deadline` (408 after it): the header read timeout ends
/// with the head, so without this a caller trickling a body, token or not,
/// would hold its connection for ever. Past the limit the rest is read and
/// dropped (see [`drain_bound`]) before the 413.
async fn read_body<B>(max: usize, deadline: Duration, body: B) -> Result<Bytes, HttpResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = tokio::time::Instant::now();
    let mut body = std::pin::pin!(body);
    let Ok(collected) =
        tokio::time::timeout(deadline, Limited::new(body.as_mut(), max).collect()).await
    else {
        return Err(reply::error_status(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request body not received within {} ms",
                deadline.as_millis()
            ),
            "timeout",
            Fault::Caller,
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let left = deadline.saturating_sub(started.elapsed());
            discard(body, drain_bound(max), left).await;
            Err(too_large(max))
        }
        Err(e) => Err(reply::error(&Error::invalid(
            "body",
            format!("could not be read: {e}"),
        ))),
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
