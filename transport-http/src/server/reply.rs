//! Building the mediator's own replies: JSON with the headers the original
//! sent on every reply, and the one error body shape.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use mediator_core::{Error, ErrorBody, Fault};
use serde_json::Value;

/// The response type of every route.
pub(crate) type HttpResponse = Response<Full<Bytes>>;

const NO_CACHE: &str = "no-cache, no-store, must-revalidate";

/// Adds the headers the original put on every reply, unless already set:
/// no caching, and any origin may read it.
pub(crate) fn add_common_headers(headers: &mut HeaderMap) {
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(NO_CACHE));
    headers
        .entry(header::PRAGMA)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers
        .entry(header::EXPIRES)
        .or_insert(HeaderValue::from_static("0"));
    headers
        .entry(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .or_insert(HeaderValue::from_static("*"));
}

/// A JSON reply.
pub(crate) fn json(status: StatusCode, body: &Value) -> HttpResponse {
    let (status, headers, bytes) = json_parts(status, body);
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A JSON reply as its status, headers and body, for a transport that
/// writes its own heads.
pub(crate) fn json_parts(status: StatusCode, body: &Value) -> (StatusCode, HeaderMap, Bytes) {
    // Serialising a `Value` cannot fail: its map keys are always strings.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_common_headers(&mut headers);
    (status, headers, Bytes::from(bytes))
}

/// The error body: `{"error", "kind", "fault"}`, the core's [`ErrorBody`]
/// that node clients read back.
pub(crate) fn error_body(message: &str, kind: &str, fault: Fault) -> Value {
    ErrorBody::new(message, kind, fault).to_value()
}

/// A core error as a reply, with its own status and message.
///
/// A store's error is told as "unavailable" only: its driver's message may
/// name the database's host, port or user, which is no caller's business
/// (the log keeps it whole, and `/readyz` shows it to an admin).
pub(crate) fn error(err: &Error) -> HttpResponse {
    if let Error::Store(_) = err {
        tracing::warn!(error = %mediator_core::error_chain(err), "a store call failed");
    }
    error_message(err, &err.public_message())
}

/// A core error's status, kind and fault with another message (the
/// original's wording where its dialect demands it).
pub(crate) fn error_message(err: &Error, message: &str) -> HttpResponse {
    let (status, headers, bytes) = error_parts(err, message);
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// [`error_message`] as its status, headers and body, for a transport
/// that writes its own heads.
pub(crate) fn error_parts(err: &Error, message: &str) -> (StatusCode, HeaderMap, Bytes) {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (status, mut headers, bytes) =
        json_parts(status, &error_body(message, err.kind(), err.fault()));
    if let Error::Overloaded { retry_after, .. } = err {
        // Whole seconds, rounded up: `Retry-After: 0` would invite a storm.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
            headers.insert(header::RETRY_AFTER, value);
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mediator\""),
        );
    }
    (status, headers, bytes)
}

/// An error reply that the core's enum has no variant for.
pub(crate) fn error_status(
    status: StatusCode,
    message: &str,
    kind: &str,
    fault: Fault,
) -> HttpResponse {
    json(status, &error_body(message, kind, fault))
}

/// A 401 that also invites a browser to log in with Basic auth.
pub(crate) fn unauthorized_with_basic(err: &Error) -> HttpResponse {
    let mut response = error(err);
    response.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"mediator\""),
    );
    response
}
