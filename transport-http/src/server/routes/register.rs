//! A node's own registration: `/register`, `/renew` and `/remove`.

use http::StatusCode;
use mediator_core::auth::Identity;
use mediator_core::{Error, Fault, Mediator, NodeId, NodeKey, Registration};
use serde_json::{json, Map, Value};
use tracing::Span;

use super::json_object;
use crate::server::entity::{self, Dialect};
use crate::server::reply::{self, HttpResponse};

/// The original's message when `/remove` is not told what to remove.
const REMOVE_WHAT: &str = "it's necessary to give id in url or cluster and node in json body";

pub(super) async fn register(
    mediator: &Mediator,
    identity: &Identity,
    body: &[u8],
) -> HttpResponse {
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

pub(super) async fn renew(mediator: &Mediator, identity: &Identity, body: &[u8]) -> HttpResponse {
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

pub(super) async fn remove(
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
