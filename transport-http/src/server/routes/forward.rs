//! Forwarding to nodes: `/one`, `/any` and `/many` build an envelope from
//! the request, route it, and answer with the node's reply or the
//! broadcast's entries and summary.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use mediator_core::auth::Identity;
use mediator_core::context::is_valid_traceparent;
use mediator_core::{
    Broadcast, Envelope, Error, Mediator, NodeKey, Reply, Routed, Target, Timestamp, TraceContext,
};
use serde_json::{json, Value};

use super::path::Fan;
use crate::headers::{
    forwardable, forwardable_body, forwardable_query, is_reserved, strip_hop_by_hop, TRACEPARENT,
    X_MEDIATOR_DEADLINE, X_MEDIATOR_NODE, X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS, X_REQUEST_ID,
};

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

/// A forwarding request: its head and body, and what its path names.
pub(super) struct Call<'a> {
    pub(super) parts: Parts,
    pub(super) body: Bytes,
    pub(super) fan: Fan,
    pub(super) group: &'a str,
    pub(super) name: Option<&'a str>,
    pub(super) rest: &'a str,
}

/// Routes `call` from `identity` with the request's `trace` ids, which
/// replace the caller's own `x-request-id` and `traceparent` on the way
/// to nodes (the caller's `tracestate` goes along only with its trace);
/// `node` is set to the node that answered a unicast.
pub(super) async fn forward(
    mediator: &Mediator,
    identity: &Identity,
    call: Call<'_>,
    trace: &TraceContext,
    node: &mut Option<String>,
) -> HttpResponse {
    let Call {
        parts,
        body,
        fan,
        group,
        name,
        rest,
    } = call;
    let target = match fan {
        Fan::One => NodeKey::new(group, name).map(Target::One),
        Fan::Any => Target::any(group),
        Fan::Many => Target::all(group),
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => return reply::error(&e),
    };
    let budget = match caller_budget(&parts.headers, mediator.clock().now()) {
        Ok(budget) => budget,
        Err(e) => return reply::error(&e),
    };
    if budget == Some(Duration::ZERO) {
        // The caller's deadline has already passed: nothing can answer in
        // time, so no node is bothered.
        return reply::error(&Error::DeadlinePassed {
            node: target.to_string(),
            after: Duration::ZERO,
        });
    }
    let mut path_and_query = format!("/{rest}");
    if let Some(query) = parts.uri.query().and_then(forwardable_query) {
        path_and_query.push('?');
        path_and_query.push_str(&query);
    }
    let mut headers = forwardable(&parts.headers);
    // Deliverers send the trace ids of the request's context.
    headers.remove(X_REQUEST_ID);
    let continued = headers
        .remove(TRACEPARENT)
        .is_some_and(|t| t.to_str().is_ok_and(is_valid_traceparent));
    if !continued {
        headers.remove(TRACESTATE);
    }
    let envelope = Envelope {
        from: None,
        target,
        method: parts.method,
        path_and_query,
        headers,
        body: forwardable_body(body),
    };
    // Delivery outcomes and latencies are recorded by the core's router,
    // once per node asked, whatever the transport.
    match mediator
        .route_with(identity, envelope, budget, trace.clone())
        .await
    {
        Ok(Routed::One { node: key, reply }) => one_reply(&key, reply, node),
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
    }
}

/// A node's reply, relayed with what makes it safe to relay, plus which
/// node gave it.
///
/// A node is untrusted content served from the hub's own origin, so its
/// reply never acts with the hub's authority:
/// - a redirect (`3xx` with a `Location`, or `301`/`302`/`303`/`307`/`308`)
///   is answered `502 node_redirect`: clients that follow redirects would
///   send the caller's token to wherever the node points;
/// - an informational (`1xx`) or out-of-range status is answered
///   `502 node_failed`: it is no answer a caller can use, and `101` would
///   claim the connection switched protocols;
/// - headers that would act on the caller's browser for the hub's origin
///   (cookies, `clear-site-data`, CORS, HSTS, `refresh`, reporting, the
///   node's own content security and referrer policies) are dropped, and
///   the reply is served with `content-security-policy: sandbox`,
///   `x-content-type-options: nosniff` and `referrer-policy: no-referrer`,
///   so a page a node serves runs no script with the hub's origin and
///   never hands the address it was opened at (which may carry a token)
///   to another site.
fn one_reply(node: &NodeKey, reply: Reply, answered: &mut Option<String>) -> HttpResponse {
    let node_name = node.to_string();
    let status = reply.status;
    if let Some(refusal) = unrelayable(&node_name, status, &reply.headers) {
        *answered = Some(node_name);
        return reply::error(&refusal);
    }
    let mut headers = reply.headers;
    strip_hop_by_hop(&mut headers);
    // The `x-mediator-*` headers are the mediator's word, in this direction
    // as in the other: a node may not speak them to the caller.
    let dropped: Vec<_> = headers
        .keys()
        .filter(|name| is_reserved(name) || acts_for_the_origin(name))
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
    *answered = Some(node_name);
    add_common_headers(&mut headers);
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Why a node's reply with `status` cannot be relayed as it is, if it
/// cannot.
fn unrelayable(node: &str, status: StatusCode, headers: &HeaderMap) -> Option<Error> {
    let code = status.as_u16();
    if !(200..600).contains(&code) {
        return Some(Error::refused(
            502,
            "node_failed",
            format!("node {node} answered status {code}, which is not a final answer"),
        ));
    }
    let redirects = matches!(code, 301 | 302 | 303 | 307 | 308)
        || (status.is_redirection() && headers.contains_key(http::header::LOCATION));
    if redirects {
        tracing::warn!(
            node,
            status = code,
            "a node answered a redirect; not relayed"
        );
        return Some(Error::refused(
            502,
            "node_redirect",
            format!(
                "node {node} answered a redirect ({code}); the mediator does not relay \
                 redirects, which would lead a caller's client to send its credentials elsewhere"
            ),
        ));
    }
    None
}

/// Whether a node's reply header would act on the caller's browser with
/// the hub's authority: set or clear its cookies or storage, open the
/// hub's origin to other origins, pin it to HTTPS, send the browser
/// elsewhere, loosen the sandbox the hub puts the reply in, or have the
/// browser report or refer the page's address (which may hold the caller's
/// `x-jwt` query parameter) to another site.
fn acts_for_the_origin(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "set-cookie"
            | "set-cookie2"
            | "clear-site-data"
            | "strict-transport-security"
            | "refresh"
            | "location"
            | "referrer-policy"
            | "content-security-policy"
            | "content-security-policy-report-only"
            | "service-worker-allowed"
            | "timing-allow-origin"
            | "report-to"
            | "reporting-endpoints"
            | "nel"
    ) || name.starts_with("access-control-")
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
