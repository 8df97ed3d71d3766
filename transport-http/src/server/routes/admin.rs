//! The operator's routes and the probes: `/admin/clusters`,
//! `/admin/cluster`, `/admin/instances`, `/token`, `/metrics`, `/ping`,
//! `/readyz`.

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use mediator_core::auth::{Claims, Identity};
use mediator_core::model::validate_name;
use mediator_core::{Error, Fault, Mediator, NodeId};
use serde_json::{json, Value};

use crate::server::credentials::{self, Credential};
use crate::server::entity;
use crate::server::metrics::{Metrics, MetricsAccess};
use crate::server::reply::{self, add_common_headers, HttpResponse};
use crate::server::service::RemoteAddr;

/// How long a token minted by `/token` lasts, as in the original.
const TOKEN_LIFETIME: Duration = Duration::from_secs(9 * 60 * 60);

fn require_admin(identity: &Identity) -> Result<(), HttpResponse> {
    if identity.admin {
        Ok(())
    } else {
        Err(reply::error(&Error::Forbidden(
            "the admin routes need an admin token".into(),
        )))
    }
}

/// How many rows `/admin/clusters` answers when not asked for fewer: every
/// registration of a registry this size or smaller comes in one answer, as
/// the original's dialect expects.
pub(crate) const DEFAULT_PAGE: usize = 500;
/// The most rows `/admin/clusters` answers at once, whatever `limit` says.
pub(crate) const MAX_PAGE: usize = 1000;

/// `/admin/clusters[/:group][?limit=N&after=ID]`: registrations ordered by
/// id, one page at a time. `{"list": [...]}` as in the original, plus
/// `"next"` (the id to pass as `after`) when more rows follow.
pub(super) async fn admin_clusters(
    mediator: &Mediator,
    identity: &Identity,
    group: Option<&str>,
    query: Option<&str>,
) -> HttpResponse {
    if let Err(response) = require_admin(identity) {
        return response;
    }
    if let Some(group) = group {
        if let Err(e) = validate_name("group", group) {
            return reply::error(&e);
        }
    }
    let (limit, after) = match page_params(query.unwrap_or("")) {
        Ok(params) => params,
        Err(e) => return reply::error(&e),
    };
    // One row more than the page tells whether another page follows.
    match mediator
        .nodes_page(group, after, limit.saturating_add(1))
        .await
    {
        Ok(mut nodes) => {
            let more = nodes.len() > limit;
            nodes.truncate(limit);
            let list: Vec<Value> = nodes.iter().map(|n| entity::row(n, None)).collect();
            let mut body = json!({ "list": list });
            if more {
                if let Some(last) = nodes.last() {
                    body["next"] = Value::from(last.id.0);
                }
            }
            reply::json(StatusCode::OK, &body)
        }
        Err(e) => reply::error(&e),
    }
}

/// `limit` (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]) and `after`
/// from a query string; other parameters are ignored, as before paging.
fn page_params(query: &str) -> Result<(usize, Option<NodeId>), Error> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::invalid("limit", "must be a whole number above 0"))?
                    .min(MAX_PAGE);
            }
            "after" => {
                after =
                    Some(NodeId(value.parse::<u64>().map_err(|_| {
                        Error::invalid("after", "must be a registration id")
                    })?));
            }
            _ => {}
        }
    }
    Ok((limit, after))
}

/// `/admin/instances`: every mediator instance of the formation sharing
/// this store (`{"instances": [...]}`, ordered by id), each with its peer
/// address, start, last heartbeat, lease, how many nodes are attached to
/// it, and whether it is the instance answering.
pub(super) async fn admin_instances(mediator: &Mediator, identity: &Identity) -> HttpResponse {
    if let Err(response) = require_admin(identity) {
        return response;
    }
    let instances = match mediator.instances().await {
        Ok(instances) => instances,
        Err(e) => return reply::error(&e),
    };
    let attached = mediator.routes().attached_per_instance();
    let now = mediator.clock().now();
    let list: Vec<Value> = instances
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "peer": i.peer,
                "started": i.started.to_rfc3339(),
                "heartbeat": i.heartbeat.to_rfc3339(),
                "lease_until": i.lease_until.to_rfc3339(),
                "live": !i.is_expired(now),
                "attached": attached.get(&i.id).copied().unwrap_or(0),
                "this": i.id == mediator.instance_id(),
            })
        })
        .collect();
    reply::json(
        StatusCode::OK,
        &json!({ "instances": list, "this": mediator.instance_id() }),
    )
}

pub(super) async fn admin_cluster(
    mediator: &Mediator,
    identity: &Identity,
    id: &str,
) -> HttpResponse {
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
        Err(e) => reply::error(&Error::from(e)),
    }
}

/// `/token`: a Basic login as `admin` with the operator password mints an
/// admin token for 9 hours, cut short to the login's own expiry when the
/// `Authenticate` policy gives it one (the answer's `exp` is the capped
/// one). Only a verified admin mints; every token minted writes an audit
/// line ([`credentials::audit_mint`]).
pub(super) fn token(
    mediator: &Mediator,
    parts: &Parts,
    sender: &mut Option<Identity>,
) -> HttpResponse {
    let basic = parts
        .headers
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
    let Some(login @ Credential::Basic(..)) = basic else {
        return reply::unauthorized_with_basic(&Error::unauthorized(
            "log in with Basic auth as admin",
        ));
    };
    // The `Authenticate` policy decides whether this login is good and
    // what it is worth; only an admin gets an admin token.
    let identity = match credentials::check(mediator, parts, Some(login)) {
        Ok(identity) => identity,
        Err(e @ Error::Unauthorized(_)) => return reply::unauthorized_with_basic(&e),
        Err(e) => return reply::error(&e),
    };
    *sender = Some(identity.clone());
    if let Err(e) = credentials::may_mint(&identity) {
        return reply::error(&e);
    }
    let Some(minter) = mediator.minter() else {
        return reply::error(&Error::Forbidden(
            "this mediator holds a verify-only key and cannot mint tokens".into(),
        ));
    };
    let mut claims = Claims::admin(mediator.clock().now(), TOKEN_LIFETIME);
    let capped = match credentials::cap_expiry(&mut claims, identity.expires) {
        Ok(capped) => capped,
        Err(e) => return reply::error(&e),
    };
    match minter.mint(&claims) {
        Ok(token) => {
            let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0);
            credentials::audit_mint("/token", "Basic admin login", remote, &claims, capped);
            reply::json(
                StatusCode::OK,
                &json!({ "token": token, "verified": true, "exp": claims.exp }),
            )
        }
        Err(e) => reply::error(&Error::from(e)),
    }
}

/// Whether the request's head carries an admin's credentials.
fn is_admin(mediator: &Mediator, parts: &Parts) -> bool {
    let credential = credentials::in_head(&parts.headers, &parts.uri);
    credentials::check(mediator, parts, credential).is_ok_and(|identity| identity.admin)
}

/// `/metrics`: the service's request counters and the mediator's delivery
/// counters in the Prometheus text format, to whom `access` lets see them.
pub(super) fn metrics_reply(
    mediator: &Mediator,
    metrics: &Metrics,
    access: MetricsAccess,
    parts: &Parts,
) -> HttpResponse {
    let groups = match access {
        MetricsAccess::Open => true,
        MetricsAccess::OpenWithoutGroups => is_admin(mediator, parts),
        MetricsAccess::Admin => {
            let credential = credentials::in_head(&parts.headers, &parts.uri);
            match credentials::check(mediator, parts, credential) {
                Ok(identity) if identity.admin => true,
                Ok(_) => {
                    return reply::error(&Error::Forbidden(
                        "the metrics need an admin token".into(),
                    ))
                }
                Err(e) => return reply::error(&e),
            }
        }
    };
    let text = metrics.render(mediator, groups);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(crate::server::metrics::CONTENT_TYPE),
    );
    add_common_headers(headers);
    response
}

/// `/readyz` and `/ping`: up or down for anyone; why it is down (the
/// store's error, which may name its host and port) only for an admin, so a
/// probe open to the world does not map the network behind the mediator.
pub(super) async fn ready(mediator: &Mediator, parts: &Parts) -> HttpResponse {
    match mediator.ready().await {
        Ok(()) => reply::json(StatusCode::OK, &json!({ "ok": true, "store": "up" })),
        Err(e) if !is_admin(mediator, parts) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            reply::json(StatusCode::SERVICE_UNAVAILABLE, &json!({ "ok": false }))
        }
        Err(e) => {
            let mut body = reply::error_body(&e.to_string(), e.kind(), e.fault());
            body["ok"] = Value::Bool(false);
            body["store"] = Value::from("down");
            reply::json(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}
