//! Forwarding to nodes: `/one`, `/any` and `/many` build an envelope from
//! the request, route it, and answer with the node's reply or the
//! broadcast's entries and summary.

use std::pin::Pin;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use mediator_core::context::is_valid_traceparent;
use mediator_core::inbound::{read_to_end, Answer, Caller, Inbound, InboundBody};
use mediator_core::{Broadcast, Error, Mediator, NodeKey, Reply, Routed, Target, Timestamp};
use serde_json::{json, Value};

use super::path::Fan;
use crate::headers::{
    acts_for_the_origin, forwardable, forwardable_body, forwardable_query, is_reserved,
    strip_hop_by_hop, TRACEPARENT, X_MEDIATOR_DEADLINE, X_MEDIATOR_NODE, X_MEDIATOR_PEER,
    X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS, X_REQUEST_ID,
};
use crate::server::credentials;
use crate::server::service::{BoxError, RemoteAddr};

/// The transport label of the calls this service frames.
const HTTP: &str = "http";
/// The transport label of the calls other instances forward here.
const PEER: &str = "peer";

/// The vendor half of the W3C trace context, meaningful only with its
/// `traceparent`.
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
use crate::server::reply::{self, add_common_headers, HttpResponse};

/// The budget the caller asks for with `x-mediator-deadline` (ms since the
/// epoch) and/or `x-mediator-timeout-ms`; the smaller wins. `now` is the
/// mediator's clock, the one the deadline sent on to nodes is read from.
fn caller_budget(headers: &HeaderMap, now: Timestamp) -> Result<Option<Duration>, Error> {
    let number = |name: &'static str, value: &HeaderValue| {
        value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::invalid(name, "must be a whole number of milliseconds"))
    };
    let mut budget = None;
    if let Some(value) = headers.get(X_MEDIATOR_DEADLINE) {
        let at = number("x-mediator-deadline", value)?;
        let at = Timestamp::from_millis(i64::try_from(at).unwrap_or(i64::MAX));
        budget = Some(now.until(at));
    }
    if let Some(value) = headers.get(X_MEDIATOR_TIMEOUT_MS) {
        let asked = Duration::from_millis(number("x-mediator-timeout-ms", value)?);
        budget = Some(budget.map_or(asked, |b: Duration| b.min(asked)));
    }
    Ok(budget)
}

/// What a forwarding path names: `/one/:group/:name?/*rest`,
/// `/any/:group/*rest` or `/many/:group/*rest`.
pub(super) struct Call<'a> {
    pub(super) fan: Fan,
    pub(super) group: &'a str,
    pub(super) name: Option<&'a str>,
    pub(super) rest: &'a str,
}

/// A request body as the core reads a call's: chunk by chunk, with what
/// the head announced of it, and without the `x-jwt` field of a JSON body
/// once read (no node receives a caller's credential).
struct HttpBody<B> {
    body: Source<B>,
    announced: Option<u64>,
    waits_to_continue: bool,
}

/// Where a body's bytes come from: the connection, or what was read of
/// it already to look for a credential.
enum Source<B> {
    Wire(Pin<Box<B>>),
    Read(Bytes),
}

impl<B> InboundBody for HttpBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        let body = match &mut self.body {
            Source::Wire(body) => body,
            Source::Read(whole) => {
                return (!whole.is_empty()).then(|| Ok(std::mem::take(whole)));
            }
        };
        loop {
            match body.as_mut().frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                    // Trailers are not relayed.
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    return Some(Err(e.to_string()));
                }
            }
        }
    }

    fn announced(&self) -> Option<u64> {
        self.announced
    }

    fn travelling(&self, whole: Bytes) -> Bytes {
        forwardable_body(whole)
    }

    fn may_drain(&self) -> bool {
        // Polling the body would send `100 Continue` and ask for it.
        !self.waits_to_continue
    }
}

/// Frames a forwarding request for the core ([`Mediator::handle`]), which
/// checks, routes and records it, and frames the core's answer: the node's
/// reply, or the broadcast's entries and summary.
///
/// The caller's credential is looked for in the head first; a head
/// without one has its body read only while it is small enough to hold a
/// token (the original's `x-jwt` field of a JSON body, at most
/// `body_credential_limit` bytes): past that the call is refused `401`
/// unread. The caller's `x-request-id` and `traceparent` are replaced by
/// the call's own on the way to nodes (its `tracestate` goes along only
/// with its trace).
pub(super) async fn forward<B>(
    mediator: &Mediator,
    call: Call<'_>,
    request: Request<B>,
    arrived: tokio::time::Instant,
    body_credential_limit: usize,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    frame(
        mediator,
        call,
        request,
        arrived,
        Origin::Caller {
            body_credential_limit,
        },
    )
    .await
}

/// Frames a call another instance of the formation forwards
/// (`/peer/one/...`) for the core, as [`forward`] frames a caller's: the
/// head must carry the forwarding instance's credential
/// (`x-mediator-peer`, checked before anything else is read), and the
/// sender it vouches for is in `x-mediator-from`. The core delivers it only
/// to a node attached here. Counted and logged under transport `peer`.
pub(super) async fn forward_from_peer<B>(
    mediator: &Mediator,
    call: Call<'_>,
    request: Request<B>,
    arrived: tokio::time::Instant,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    frame(mediator, call, request, arrived, Origin::Peer).await
}

/// Who a framed call comes from.
enum Origin {
    /// A caller with its own credential, in the head or (at most
    /// `body_credential_limit` bytes in) a JSON body.
    Caller { body_credential_limit: usize },
    /// Another instance of the formation.
    Peer,
}

/// The caller a peer's head names: the forwarding instance, if its
/// credential holds, and the sender it vouches for.
fn peer_caller(mediator: &Mediator, headers: &HeaderMap) -> Caller {
    let Some(credential) = headers.get(X_MEDIATOR_PEER) else {
        return Caller::Refused(Error::unauthorized(
            "no peer credential (x-mediator-peer): /peer/ takes calls from the formation's instances only",
        ));
    };
    let instance = match credential
        .to_str()
        .map_err(|_| Error::unauthorized("peer credential is malformed"))
        .and_then(|credential| mediator.verify_peer(credential))
    {
        Ok(instance) => instance,
        Err(e) => return Caller::Refused(e),
    };
    let sender = match parsed::<NodeKey>(headers, "x-mediator-from", "must be group/name") {
        Ok(sender) => sender,
        Err(e) => return Caller::Refused(e),
    };
    let asked = match parsed::<Target>(headers, "x-mediator-target", "must be a target") {
        Ok(asked) => asked,
        Err(e) => return Caller::Refused(e),
    };
    Caller::Peer {
        instance,
        sender,
        asked,
    }
}

/// The header `name` parsed, if present; `400` naming it when it does not
/// parse.
fn parsed<T: std::str::FromStr<Err = Error>>(
    headers: &HeaderMap,
    name: &'static str,
    shape: &'static str,
) -> Result<Option<T>, Error> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Error::invalid(name, shape))
                .and_then(str::parse)
        })
        .transpose()
}

async fn frame<B>(
    mediator: &Mediator,
    call: Call<'_>,
    request: Request<B>,
    arrived: tokio::time::Instant,
    from: Origin,
) -> HttpResponse
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Call {
        fan,
        group,
        name,
        rest,
    } = call;
    let (mut parts, body) = request.into_parts();
    if credentials::has_basic(&parts.headers) {
        // A forwarding route takes no Basic login: never hashed here.
        credentials::set_basic_aside(&mut parts);
    }
    let mut body = HttpBody {
        announced: super::announced_size(&parts.headers, &body),
        waits_to_continue: parts
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        body: Source::Wire(Box::pin(body)),
    };
    let rest_of_target = match fan {
        Fan::One => name.unwrap_or_default(),
        Fan::Any => "?",
        Fan::Many => "*",
    };
    let mut target = String::with_capacity(group.len() + 1 + rest_of_target.len());
    target.push_str(group);
    target.push('/');
    target.push_str(rest_of_target);
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let ids = (text(X_REQUEST_ID), text(TRACEPARENT));
    let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0);
    let mut path = String::with_capacity(1 + rest.len());
    path.push('/');
    path.push_str(rest);
    if let Some(query) = parts.uri.query().and_then(forwardable_query) {
        path.push('?');
        path.push_str(&query);
    }
    let mut headers = forwardable(&parts.headers);
    // Deliverers send the trace ids of the call's context.
    headers.remove(X_REQUEST_ID);
    let continued = headers
        .remove(TRACEPARENT)
        .is_some_and(|t| t.to_str().is_ok_and(is_valid_traceparent));
    if !continued {
        headers.remove(TRACESTATE);
    }
    let budget = caller_budget(&parts.headers, mediator.clock().now());
    let (transport, caller) = match from {
        Origin::Peer => (PEER, peer_caller(mediator, &parts.headers)),
        Origin::Caller {
            body_credential_limit,
        } => {
            let caller = match credentials::in_head(&parts.headers, &parts.uri) {
                Some(credentials::Credential::Token(token)) => Caller::Token(token),
                // Set aside above: a forwarding route never sees a Basic login.
                Some(credentials::Credential::Basic(..)) => Caller::Refused(
                    credentials::check(mediator, &parts, None)
                        .err()
                        .unwrap_or_else(|| Error::unauthorized("no token")),
                ),
                None => {
                    let read_by = arrived + mediator.limits().deadline;
                    credential_in_body(mediator, &parts, &mut body, body_credential_limit, read_by)
                        .await
                }
            };
            (HTTP, caller)
        }
    };
    let mut inbound = Inbound::new(transport, caller, target, body)
        .method(parts.method)
        .path(path)
        .headers(headers)
        .ids(ids.0, ids.1)
        .remote(remote)
        .arrived(arrived);
    match budget {
        Ok(timeout) => inbound = inbound.timeout(timeout),
        Err(e) => inbound = inbound.malformed(e),
    }
    mediator
        .handle(inbound, |answer: Answer<'_>| {
            let mut response = match answer.outcome {
                Ok(Routed::One { node, reply }) => one_reply(&node, reply),
                Ok(Routed::Many(broadcast)) => many_reply(&broadcast),
                Ok(_) => reply::error(&Error::Config(
                    "the router answered in a shape this transport does not know".into(),
                )),
                Err(e @ Error::UnknownTarget(_)) => {
                    // The original's words, which its children may match on.
                    let message = if fan == Fan::One {
                        "clusters not found"
                    } else {
                        "cluster not found"
                    };
                    reply::error_message(&e, message)
                }
                Err(e) => reply::error(&e),
            };
            if let Some(id) = answer
                .trace
                .request_id
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                response.headers_mut().insert(X_REQUEST_ID, id);
            }
            let status = response.status().as_u16();
            (response, status)
        })
        .await
}

/// The credential in a body small enough to hold one (the original's
/// `x-jwt` field of a JSON body), for a request whose head carries none.
/// The body read stays in `body` for the node.
async fn credential_in_body<B>(
    mediator: &Mediator,
    parts: &Parts,
    body: &mut HttpBody<B>,
    limit: usize,
    read_by: tokio::time::Instant,
) -> Caller
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let no_credential = || {
        Caller::Refused(Error::unauthorized(format!(
            "no credentials in the request head (Authorization: Bearer, the x-jwt header or \
             query parameter); a token in the body is looked for only in bodies of at most \
             {} KiB",
            limit / 1024
        )))
    };
    if body.announced.is_some_and(|len| len > limit as u64) {
        return no_credential();
    }
    let read = read_to_end(mediator, body, limit, read_by).await;
    let whole = match read {
        // Counted again, as any body, when the core reads it.
        Ok((whole, _held)) => whole,
        Err(Error::TooLarge { .. }) => return no_credential(),
        Err(e) => return Caller::Refused(e),
    };
    let found = credentials::in_body(&whole);
    body.announced = Some(whole.len() as u64);
    body.body = Source::Read(whole);
    match found {
        Some(credentials::Credential::Token(token)) => Caller::Token(token),
        _ => Caller::Refused(
            credentials::check(mediator, parts, None)
                .err()
                .unwrap_or_else(|| Error::unauthorized("no token")),
        ),
    }
}

/// A node's reply, relayed with what makes it safe to relay, and which
/// node gave it.
///
/// A node is untrusted content served from the hub's own origin, so its
/// reply never acts with the hub's authority. The core has refused its
/// redirects and statuses that are no final answer
/// ([`unrelayable`](mediator_core::inbound::unrelayable)); here the
/// headers that would act on the caller's browser for the hub's origin
///   (cookies, `clear-site-data`, CORS, HSTS, `refresh`, reporting, the
///   node's own content security and referrer policies) are dropped, and
///   the reply is served with `content-security-policy: sandbox`,
///   `x-content-type-options: nosniff` and `referrer-policy: no-referrer`,
///   so a page a node serves runs no script with the hub's origin and
///   never hands the address it was opened at (which may carry a token)
///   to another site.
fn one_reply(node: &NodeKey, reply: Reply) -> HttpResponse {
    let node_name = node.to_string();
    let status = reply.status;
    let mut headers = reply.headers;
    strip_hop_by_hop(&mut headers);
    // The `x-mediator-*` headers are the mediator's word, in this direction
    // as in the other: a node may not speak them to the caller.
    let dropped: Vec<_> = headers
        .keys()
        .filter(|name| is_reserved(name) || acts_for_the_origin(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(value) = HeaderValue::from_str(&node_name) {
        headers.insert(X_MEDIATOR_NODE, value);
    }
    add_common_headers(&mut headers);
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The original's `/many` array (one entry per node, in id order) and our
/// summary header.
fn many_reply(broadcast: &Broadcast) -> HttpResponse {
    let entries: Vec<Value> = broadcast
        .results
        .iter()
        .map(|result| {
            let node = result.node.to_string();
            match &result.outcome {
                Ok(reply) => {
                    let mut entry =
                        json!({ "node": node, "id": result.id.0, "status": reply.status.as_u16() });
                    match serde_json::from_slice::<Value>(&reply.body) {
                        Ok(parsed) => entry["then"] = parsed,
                        Err(_) => entry["then_base64"] = Value::from(STANDARD.encode(&reply.body)),
                    }
                    entry
                }
                Err(e) => json!({
                    "catch": reply::error_body(&e.to_string(), e.kind(), e.fault()),
                    "node": node,
                    "id": result.id.0,
                }),
            }
        })
        .collect();
    let summary = broadcast.summary;
    let mut response = reply::json(StatusCode::OK, &Value::Array(entries));
    let text = format!(
        "asked={}; answered={}; failed={}; timed_out={}",
        summary.asked, summary.answered, summary.failed, summary.timed_out
    );
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(X_MEDIATOR_SUMMARY, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_take_the_smaller() {
        let mut h = HeaderMap::new();
        assert_eq!(caller_budget(&h, Timestamp::now()).unwrap(), None);
        h.insert(X_MEDIATOR_TIMEOUT_MS, HeaderValue::from_static("250"));
        assert_eq!(
            caller_budget(&h, Timestamp::now()).unwrap(),
            Some(Duration::from_millis(250))
        );
        h.insert(X_MEDIATOR_DEADLINE, HeaderValue::from_static("1"));
        assert_eq!(
            caller_budget(&h, Timestamp::now()).unwrap(),
            Some(Duration::ZERO)
        );
        h.insert(X_MEDIATOR_DEADLINE, HeaderValue::from_static("soon"));
        assert!(caller_budget(&h, Timestamp::now()).is_err());
    }
}
