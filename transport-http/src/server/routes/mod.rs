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
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use mediator_core::auth::Identity;
use mediator_core::{Error, Fault, Mediator};
use serde_json::{json, Map, Value};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::credentials;
use super::metrics::Metrics;
use super::reply::{self, HttpResponse};
use path::{parse_route, Route};

/// Answers one request, in a span that records who asked for what and how
/// it went. Tokens are never recorded: the span holds the path without its
/// query, and the sender as its verified name.
pub(crate) async fn handle(
    mediator: Mediator,
    metrics: &Metrics,
    request: Request<Incoming>,
    remote: std::net::SocketAddr,
) -> HttpResponse {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let route = parse_route(&path);
    let label = route.label();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        %remote,
        sender = Empty,
        target = Empty,
        node = Empty,
        status = Empty,
        duration_ms = Empty,
    );
    let response = dispatch(&mediator, metrics, route, &path, request)
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    metrics.request(label, status, took);
    let elapsed = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    span.record("status", status);
    span.record("duration_ms", elapsed);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, duration_ms = elapsed, "request failed");
        } else {
            tracing::info!(status, duration_ms = elapsed, "request");
        }
    });
    response
}

async fn dispatch(
    mediator: &Mediator,
    metrics: &Metrics,
    route: Route<'_>,
    path: &str,
    request: Request<Incoming>,
) -> HttpResponse {
    match route {
        Route::Healthz => return reply::json(StatusCode::OK, &json!({ "ok": true })),
        Route::Metrics => return admin::metrics_reply(mediator, metrics),
        Route::Dashboard => return admin::dashboard(mediator, &request).await,
        Route::Ping | Route::Readyz => return admin::ready(mediator).await,
        Route::Token => return admin::token(mediator, request.headers()),
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
    let (parts, body) = request.into_parts();
    let (identity, body) = match authorise(mediator, &parts, body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match route {
        Route::Register => register::register(mediator, &identity, &body).await,
        Route::Renew => register::renew(mediator, &identity, &body).await,
        Route::Remove(id) => register::remove(mediator, &identity, id, &body).await,
        Route::Forward {
            fan,
            group,
            name,
            rest,
        } => {
            forward::forward(
                mediator, metrics, &identity, parts, body, fan, group, name, rest,
            )
            .await
        }
        Route::AdminClusters(group) => admin::admin_clusters(mediator, &identity, group).await,
        Route::AdminCluster(id) => admin::admin_cluster(mediator, &identity, id).await,
        // Answered above, before any credential was asked for.
        Route::Healthz
        | Route::Ping
        | Route::Readyz
        | Route::Token
        | Route::Metrics
        | Route::Dashboard
        | Route::NotFound => reply::error_status(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}"),
            "not_found",
            Fault::Caller,
        ),
    }
}

/// Reads the body and checks the caller's credentials, looking in the head
/// first and, only when none is there, in the body.
async fn authorise(
    mediator: &Mediator,
    parts: &Parts,
    body: Incoming,
) -> Result<(Identity, Bytes), HttpResponse> {
    let in_head = credentials::in_head(&parts.headers, &parts.uri);
    // A bad token in the head is refused before the body is read.
    let early = match in_head {
        Some(credential) => {
            Some(credentials::check(mediator, Some(credential)).map_err(|e| reply::error(&e))?)
        }
        None => None,
    };
    let limits = mediator.limits();
    let body = read_body(limits.max_body, limits.deadline, &parts.headers, body).await?;
    let identity = match early {
        Some(identity) => identity,
        None => credentials::check(mediator, credentials::in_body(&body))
            .map_err(|e| reply::error(&e))?,
    };
    Span::current().record("sender", sender_name(&identity).as_str());
    Ok((identity, body))
}

fn sender_name(identity: &Identity) -> String {
    match (&identity.key, identity.verified, identity.admin) {
        (Some(key), true, _) => key.to_string(),
        (None, true, true) => "admin".to_owned(),
        (None, true, false) => "operator".to_owned(),
        (_, false, _) => "unverified".to_owned(),
    }
}

/// Collects a request body of at most `max` bytes (413 past it) that
/// arrives within `deadline` (408 after it): the header read timeout ends
/// with the head, so without this a caller trickling a body, token or not,
/// would hold its connection for ever.
async fn read_body(
    max: usize,
    deadline: Duration,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        reply::error_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {max} bytes"),
            "too_large",
            Fault::Caller,
        )
    };
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let Ok(collected) = tokio::time::timeout(deadline, Limited::new(body, max).collect()).await
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
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
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
