//! The mediator's routes: parsing the path, checking the caller, and
//! answering with the original's shapes (plus ours).

// Refusals travel as `Err(ready reply)`; one is built at most once per
// request, so the size of the error variant costs nothing worth boxing.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use mediator_core::auth::{Claims, Identity};
use mediator_core::model::validate_name;
use mediator_core::{
    Broadcast, Envelope, Error, Fault, Mediator, NodeId, NodeKey, Registration, Reply, Routed,
    Target, Timestamp,
};
use serde_json::{json, Map, Value};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::credentials::{self, Credential};
use super::dashboard;
use super::entity::{self, Dialect};
use super::metrics::{Metrics, Outcome, RouteLabel};
use super::reply::{self, add_common_headers, HttpResponse};
use crate::headers::{
    forwardable, forwardable_body, forwardable_query, strip_hop_by_hop, X_MEDIATOR_DEADLINE,
    X_MEDIATOR_NODE, X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS,
};

/// How long a token minted by `/token` lasts, as in the original.
const TOKEN_LIFETIME: Duration = Duration::from_secs(9 * 60 * 60);

/// The original's message when `/remove` is not told what to remove.
const REMOVE_WHAT: &str = "it's necessary to give id in url or cluster and node in json body";

/// How a forwarding route addresses its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fan {
    /// `/one/:group/:name?/*path`
    One,
    /// `/any/:group/*path`
    Any,
    /// `/many/:group/*path`
    Many,
}

/// A request path, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Register,
    Renew,
    Remove(Option<&'a str>),
    Forward {
        fan: Fan,
        group: &'a str,
        name: Option<&'a str>,
        rest: &'a str,
    },
    AdminClusters(Option<&'a str>),
    AdminCluster(&'a str),
    Token,
    Ping,
    Healthz,
    Readyz,
    Metrics,
    Dashboard,
    NotFound,
}

impl Route<'_> {
    /// The route a request is counted under in the metrics.
    fn label(&self) -> RouteLabel {
        match self {
            Route::Register => RouteLabel::Register,
            Route::Renew => RouteLabel::Renew,
            Route::Remove(_) => RouteLabel::Remove,
            Route::Forward { fan: Fan::One, .. } => RouteLabel::One,
            Route::Forward { fan: Fan::Any, .. } => RouteLabel::Any,
            Route::Forward { fan: Fan::Many, .. } => RouteLabel::Many,
            Route::AdminClusters(_) | Route::AdminCluster(_) | Route::Dashboard => {
                RouteLabel::Admin
            }
            Route::Token => RouteLabel::Token,
            Route::Ping | Route::Healthz | Route::Readyz | Route::Metrics | Route::NotFound => {
                RouteLabel::Other
            }
        }
    }
}

/// Splits off the first segment: `a/b/c` → (`a`, Some(`b/c`)).
fn first_segment(path: &str) -> (&str, Option<&str>) {
    match path.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    }
}

/// Whether a route without parameters matches, with or without a trailing slash.
fn bare(tail: Option<&str>) -> bool {
    matches!(tail, None | Some(""))
}

fn parse_route(path: &str) -> Route<'_> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (head, tail) = first_segment(path);
    match head {
        "" if tail.is_none() => Route::Dashboard,
        "register" if bare(tail) => Route::Register,
        "renew" if bare(tail) => Route::Renew,
        "remove" => match tail.map(|t| t.trim_end_matches('/')) {
            None | Some("") => Route::Remove(None),
            Some(id) => Route::Remove(Some(id)),
        },
        "one" | "any" | "many" => {
            let Some(tail) = tail else {
                return Route::NotFound;
            };
            let (group, after) = first_segment(tail);
            let (fan, name, rest) = match head {
                "one" => {
                    // `/one/g//p`: an empty name segment is the unnamed node.
                    let (name, rest) = after.map_or(("", None), first_segment);
                    (Fan::One, Some(name).filter(|n| !n.is_empty()), rest)
                }
                "any" => (Fan::Any, None, after),
                _ => (Fan::Many, None, after),
            };
            Route::Forward {
                fan,
                group,
                name,
                rest: rest.unwrap_or(""),
            }
        }
        "admin" => {
            let (what, param) = tail.map_or(("", None), first_segment);
            let param = param
                .map(|p| p.trim_end_matches('/'))
                .filter(|p| !p.is_empty());
            match (what, param) {
                ("clusters", group) => Route::AdminClusters(group),
                ("cluster", Some(id)) => Route::AdminCluster(id),
                _ => Route::NotFound,
            }
        }
        "token" if bare(tail) => Route::Token,
        "ping" if bare(tail) => Route::Ping,
        "healthz" if bare(tail) => Route::Healthz,
        "readyz" if bare(tail) => Route::Readyz,
        "metrics" if bare(tail) => Route::Metrics,
        _ => Route::NotFound,
    }
}

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
        Route::Metrics => return metrics_reply(mediator, metrics),
        Route::Dashboard => return dashboard(mediator, &request).await,
        Route::Ping | Route::Readyz => return ready(mediator).await,
        Route::Token => return token(mediator, request.headers()),
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
        Route::Register => register(mediator, &identity, &body).await,
        Route::Renew => renew(mediator, &identity, &body).await,
        Route::Remove(id) => remove(mediator, &identity, id, &body).await,
        Route::Forward {
            fan,
            group,
            name,
            rest,
        } => {
            forward(
                mediator, metrics, &identity, parts, body, fan, group, name, rest,
            )
            .await
        }
        Route::AdminClusters(group) => admin_clusters(mediator, &identity, group).await,
        Route::AdminCluster(id) => admin_cluster(mediator, &identity, id).await,
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

async fn register(mediator: &Mediator, identity: &Identity, body: &[u8]) -> HttpResponse {
    let object = match json_object(body) {
        Ok(object) => object,
        Err(response) => return response,
    };
    let default_ttl = mediator.limits().default_ttl;
    let registration = match Dialect::of(&object) {
        Dialect::Original => match entity::parse_original(&object) {
            Ok((key, endpoint)) => Registration::new(key, endpoint, default_ttl),
            Err(errors) => {
                // The original answers 200 with the body as sent and one
                // message per field; its children read `errors`.
                let mut echoed = object;
                echoed.remove(crate::headers::X_JWT_PARAM);
                return reply::json(
                    StatusCode::OK,
                    &json!({ "entity": echoed, "errors": errors }),
                );
            }
        },
        Dialect::Ours => match entity::parse_ours(&object) {
            Ok(ours) => Registration::new(ours.key, ours.endpoint, ours.ttl.unwrap_or(default_ttl))
                .with_meta(ours.meta),
            Err(e) => return reply::error(&e),
        },
    };
    Span::current().record("target", registration.key.to_string().as_str());
    let ttl = registration.ttl;
    match mediator.register(identity, registration).await {
        Ok(node) => reply::json(
            StatusCode::OK,
            &json!({ "entity": entity::row(&node, Some(ttl)), "errors": {} }),
        ),
        Err(e) => reply::error(&e),
    }
}

/// The key a body names, as `cluster`/`node` (the original's names) or
/// `group`/`name`; `None` when it names neither.
fn body_key(object: &Map<String, Value>) -> Option<Result<NodeKey, Error>> {
    if object.contains_key("cluster") {
        Some(entity::key_of(object, "cluster", "node"))
    } else if object.contains_key("group") {
        Some(entity::key_of(object, "group", "name"))
    } else {
        None
    }
}

async fn renew(mediator: &Mediator, identity: &Identity, body: &[u8]) -> HttpResponse {
    let object = match json_object(body) {
        Ok(object) => object,
        Err(response) => return response,
    };
    let key = match body_key(&object).unwrap_or_else(|| Err(Error::invalid("group", "is required")))
    {
        Ok(key) => key,
        Err(e) => return reply::error(&e),
    };
    Span::current().record("target", key.to_string().as_str());
    let limits = mediator.limits();
    let ttl = match entity::ttl_of(&object) {
        Ok(ttl) => ttl.unwrap_or(limits.default_ttl),
        Err(e) => return reply::error(&e),
    };
    match mediator.renew(identity, &key, ttl).await {
        Ok(Some(lease_until)) => reply::json(
            StatusCode::OK,
            &json!({
                "lease_until": lease_until.to_rfc3339(),
                "ttl": ttl.clamp(limits.min_ttl, limits.max_ttl).as_secs(),
            }),
        ),
        Ok(None) => reply::error_message(&Error::UnknownTarget(key.to_string()), "not registered"),
        Err(e) => reply::error(&e),
    }
}

async fn remove(
    mediator: &Mediator,
    identity: &Identity,
    id: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let removed = match id {
        Some(id) => match id.parse::<u64>() {
            Ok(id) => mediator.remove(identity, NodeId(id)).await,
            Err(_) => Err(Error::invalid("id", "must be a whole number")),
        },
        None => {
            let object = match json_object(body) {
                Ok(object) => object,
                Err(response) => return response,
            };
            match body_key(&object) {
                None => {
                    return reply::error_status(
                        StatusCode::CONFLICT,
                        REMOVE_WHAT,
                        "invalid",
                        Fault::Caller,
                    )
                }
                Some(Err(e)) => Err(e),
                Some(Ok(key)) => {
                    Span::current().record("target", key.to_string().as_str());
                    mediator.remove_key(identity, &key).await
                }
            }
        }
    };
    match removed {
        Ok(affected) => reply::json(StatusCode::OK, &json!({ "affected": affected })),
        Err(e) => reply::error(&e),
    }
}

fn require_admin(identity: &Identity) -> Result<(), HttpResponse> {
    if identity.admin {
        Ok(())
    } else {
        Err(reply::error(&Error::Forbidden(
            "the admin routes need an admin token".into(),
        )))
    }
}

async fn admin_clusters(
    mediator: &Mediator,
    identity: &Identity,
    group: Option<&str>,
) -> HttpResponse {
    if let Err(response) = require_admin(identity) {
        return response;
    }
    if let Some(group) = group {
        if let Err(e) = validate_name("group", group) {
            return reply::error(&e);
        }
    }
    match mediator.nodes(group).await {
        Ok(nodes) => {
            let list: Vec<Value> = nodes.iter().map(|n| entity::row(n, None)).collect();
            reply::json(StatusCode::OK, &json!({ "list": list }))
        }
        Err(e) => reply::error(&e),
    }
}

async fn admin_cluster(mediator: &Mediator, identity: &Identity, id: &str) -> HttpResponse {
    if let Err(response) = require_admin(identity) {
        return response;
    }
    let found = match id.parse::<u64>() {
        Ok(n) => mediator.registry().get_by_id(NodeId(n)).await,
        Err(_) => Ok(None),
    };
    match found {
        Ok(Some(node)) => reply::json(
            StatusCode::OK,
            &json!({ "entity": entity::row(&node, None) }),
        ),
        Ok(None) => reply::error_status(
            StatusCode::BAD_REQUEST,
            &format!("Cluster not found by id: '{id}'"),
            "unknown_target",
            Fault::Caller,
        ),
        Err(e) => reply::error(&e),
    }
}

/// `/token`: a Basic login as `admin` with the secret mints an admin token.
fn token(mediator: &Mediator, headers: &HeaderMap) -> HttpResponse {
    let basic = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| credentials::basic(rest))
                .flatten()
        });
    let Some(Credential::Basic(user, password)) = basic else {
        return reply::unauthorized_with_basic(&Error::Unauthorized(
            "log in with Basic auth as admin".into(),
        ));
    };
    if !mediator.authenticator().check_basic(&user, &password) {
        return reply::unauthorized_with_basic(&Error::Unauthorized(
            "wrong user or password".into(),
        ));
    }
    Span::current().record("sender", "admin");
    let Some(minter) = mediator.authenticator().minter() else {
        return reply::error(&Error::Forbidden(
            "this mediator holds a verify-only key and cannot mint tokens".into(),
        ));
    };
    let claims = Claims::admin(Timestamp::now(), TOKEN_LIFETIME);
    match minter.mint(&claims) {
        Ok(token) => reply::json(
            StatusCode::OK,
            &json!({ "token": token, "verified": true, "exp": claims.exp }),
        ),
        Err(e) => reply::error(&e),
    }
}

/// `/metrics`: the listener's counters in the Prometheus text format.
fn metrics_reply(mediator: &Mediator, metrics: &Metrics) -> HttpResponse {
    let text = metrics.render(mediator.table().len());
    let mut response = Response::new(Full::new(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    add_common_headers(headers);
    response
}

/// `/`: the dashboard, for an admin; a browser without a login is invited
/// to log in with Basic auth.
async fn dashboard(mediator: &Mediator, request: &Request<Incoming>) -> HttpResponse {
    let credential = credentials::in_head(request.headers(), request.uri());
    let identity = match credentials::check(mediator, credential) {
        Ok(identity) => identity,
        Err(e @ Error::Unauthorized(_)) => return reply::unauthorized_with_basic(&e),
        Err(e) => return reply::error(&e),
    };
    Span::current().record("sender", sender_name(&identity).as_str());
    if !identity.admin {
        return reply::error(&Error::Forbidden(
            "the dashboard needs an admin login".into(),
        ));
    }
    match mediator.nodes(None).await {
        Ok(nodes) => dashboard::page(&nodes, mediator.instance_id(), Timestamp::now()),
        Err(e) => reply::error(&e),
    }
}

async fn ready(mediator: &Mediator) -> HttpResponse {
    match mediator.ready().await {
        Ok(()) => reply::json(StatusCode::OK, &json!({ "ok": true, "store": "up" })),
        Err(e) => {
            let mut body = reply::error_body(&e.to_string(), e.kind(), e.fault());
            body["ok"] = Value::Bool(false);
            body["store"] = Value::from("down");
            reply::json(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

/// The budget the caller asks for with `x-mediator-deadline` (ms since the
/// epoch) and/or `x-mediator-timeout-ms`; the smaller wins.
fn caller_budget(headers: &HeaderMap) -> Result<Option<Duration>, Error> {
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
        budget = Some(Timestamp::now().until(at));
    }
    if let Some(value) = headers.get(X_MEDIATOR_TIMEOUT_MS) {
        let asked = Duration::from_millis(number("x-mediator-timeout-ms", value)?);
        budget = Some(budget.map_or(asked, |b: Duration| b.min(asked)));
    }
    Ok(budget)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    mediator: &Mediator,
    metrics: &Metrics,
    identity: &Identity,
    parts: Parts,
    body: Bytes,
    fan: Fan,
    group: &str,
    name: Option<&str>,
    rest: &str,
) -> HttpResponse {
    let target = match fan {
        Fan::One => NodeKey::new(group, name).map(Target::One),
        Fan::Any => Target::any(group),
        Fan::Many => Target::all(group),
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => return reply::error(&e),
    };
    Span::current().record("target", target.to_string().as_str());
    let budget = match caller_budget(&parts.headers) {
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
    let envelope = Envelope {
        from: None,
        target,
        method: parts.method,
        path_and_query,
        headers: forwardable(&parts.headers),
        body: forwardable_body(body),
    };
    let routed = mediator.route(identity, envelope, budget).await;
    count_deliveries(metrics, group, &routed);
    match routed {
        Ok(Routed::One { node, reply }) => one_reply(&node, reply),
        Ok(Routed::Many(broadcast)) => many_reply(&broadcast),
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

/// Counts how a forwarded request went for its group: one outcome for
/// `/one` and `/any`, one per node for `/many`. A target that is unknown,
/// or refused before any node was chosen, counts under the route's status
/// only, so callers cannot fill the metrics with made-up group names.
fn count_deliveries(metrics: &Metrics, group: &str, routed: &Result<Routed, Error>) {
    match routed {
        Ok(Routed::One { .. }) => metrics.delivery(group, Outcome::Ok),
        Ok(Routed::Many(broadcast)) => {
            for result in &broadcast.results {
                let outcome = match &result.outcome {
                    Ok(_) => Some(Outcome::Ok),
                    Err(e) => outcome_of(e),
                };
                if let Some(outcome) = outcome {
                    metrics.delivery(group, outcome);
                }
            }
        }
        Err(e) => {
            if let Some(outcome) = outcome_of(e) {
                metrics.delivery(group, outcome);
            }
        }
    }
}

/// The delivery outcome an error stands for; `None` when no delivery was
/// attempted. A known group with no live node (or none reachable, for
/// `/any`) counts as unreachable.
fn outcome_of(e: &Error) -> Option<Outcome> {
    match e {
        Error::NodeFailed { .. } => Some(Outcome::Failed),
        Error::NodeUnreachable { .. } | Error::NoNodeAvailable(_) => Some(Outcome::Unreachable),
        Error::DeadlinePassed { .. } => Some(Outcome::TimedOut),
        _ => None,
    }
}

/// A node's reply as it is, plus which node gave it.
fn one_reply(node: &NodeKey, reply: Reply) -> HttpResponse {
    let node_name = node.to_string();
    Span::current().record("node", node_name.as_str());
    let mut headers = reply.headers;
    strip_hop_by_hop(&mut headers);
    // The `x-mediator-*` headers are the mediator's word, in this direction
    // as in the other: a node may not speak them to the caller.
    let reserved: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-mediator"))
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&node_name) {
        headers.insert(X_MEDIATOR_NODE, value);
    }
    add_common_headers(&mut headers);
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
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
    fn routes_parse() {
        let one = |group, name, rest| Route::Forward {
            fan: Fan::One,
            group,
            name,
            rest,
        };
        assert_eq!(parse_route("/one/g/n/a/b"), one("g", Some("n"), "a/b"));
        assert_eq!(parse_route("/one/g//p"), one("g", None, "p"));
        assert_eq!(parse_route("/one/g"), one("g", None, ""));
        assert_eq!(parse_route("/one/g/n"), one("g", Some("n"), ""));
        assert_eq!(parse_route("/one/g/n/"), one("g", Some("n"), ""));
        assert_eq!(parse_route("/one"), Route::NotFound);
        assert_eq!(
            parse_route("/many/g/x/"),
            Route::Forward {
                fan: Fan::Many,
                group: "g",
                name: None,
                rest: "x/"
            }
        );
        assert_eq!(parse_route("/remove/12"), Route::Remove(Some("12")));
        assert_eq!(parse_route("/remove/"), Route::Remove(None));
        assert_eq!(parse_route("/admin/clusters"), Route::AdminClusters(None));
        assert_eq!(
            parse_route("/admin/clusters/g"),
            Route::AdminClusters(Some("g"))
        );
        assert_eq!(parse_route("/admin/cluster/7"), Route::AdminCluster("7"));
        assert_eq!(parse_route("/admin/cluster"), Route::NotFound);
        assert_eq!(parse_route("/register/"), Route::Register);
        assert_eq!(parse_route("/register/x"), Route::NotFound);
        assert_eq!(parse_route("/"), Route::Dashboard);
        assert_eq!(parse_route("/metrics"), Route::Metrics);
        assert_eq!(parse_route("/metrics/"), Route::Metrics);
        assert_eq!(parse_route("//"), Route::NotFound);
    }

    #[test]
    fn budgets_take_the_smaller() {
        let mut h = HeaderMap::new();
        assert_eq!(caller_budget(&h).unwrap(), None);
        h.insert(X_MEDIATOR_TIMEOUT_MS, HeaderValue::from_static("250"));
        assert_eq!(caller_budget(&h).unwrap(), Some(Duration::from_millis(250)));
        h.insert(X_MEDIATOR_DEADLINE, HeaderValue::from_static("1"));
        assert_eq!(caller_budget(&h).unwrap(), Some(Duration::ZERO));
        h.insert(X_MEDIATOR_DEADLINE, HeaderValue::from_static("soon"));
        assert!(caller_budget(&h).is_err());
    }
}
