//! What a built node does: [`NodeClient`] reaching other nodes through the
//! mediator (one node, any node of a group, every node of a group), the
//! replies of a broadcast, and stopping a started node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method};
use mediator_core::node as core_node;
use mediator_core::{Cipher, Error, NodeId, NodeKey, Summary, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lease::{Keeper, Link};
use super::node::SEALED_CONTENT_TYPE;
use super::transport::{catch_error, mediator_error, node_error, request, Answer};
use crate::error::HttpError;
use crate::headers::{X_MEDIATOR_NODE, X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS};

/// Extra time the client waits beyond its timeout, so the mediator's own
/// 504 (which names the slow node) normally arrives first.
const GRACE: Duration = Duration::from_secs(2);

/// A started node's background work.
pub(super) struct Running {
    pub(super) stop: watch::Sender<bool>,
    pub(super) keeper: JoinHandle<()>,
    pub(super) server: JoinHandle<()>,
    pub(super) lease: Keeper,
}

/// What every clone of a [`NodeClient`] shares; the builder fills it in.
pub(super) struct Inner {
    pub(super) link: Arc<Link>,
    pub(super) key: Option<NodeKey>,
    pub(super) cipher: Arc<dyn Cipher>,
    pub(super) callback: Option<String>,
    pub(super) local_addr: Option<SocketAddr>,
    /// `Some` while a started node runs; dropping it (with the last clone
    /// of the client) stops the server and the lease keeper without
    /// deregistering.
    pub(super) running: Mutex<Option<Running>>,
}

/// A node: reaches other nodes through the mediator and, once
/// [started](super::NodeClientBuilder::start), answers them.
///
/// Cheap to clone; clones share one connection pool and one registration.
/// Dropping the last clone stops the callback server and the lease keeper
/// (the lease then runs out at the mediator); [`shutdown`](Self::shutdown)
/// also deregisters at once.
#[derive(Clone)]
pub struct NodeClient {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("mediator", &self.inner.link.base)
            .field("key", &self.inner.key)
            .field("callback", &self.inner.callback)
            .finish_non_exhaustive()
    }
}

/// One node's part of a [`NodeClient::broadcast`].
pub type NodeReply = mediator_core::node::NodeReply<HttpError>;

/// Every node's result of a [`NodeClient::broadcast`], and the summary
/// (from the mediator's `x-mediator-summary` header, or counted from the
/// entries when the header is missing).
pub type BroadcastReplies = mediator_core::node::BroadcastReplies<HttpError>;

impl NodeClient {
    /// This node's key, if it has an identity.
    pub fn key(&self) -> Option<&NodeKey> {
        self.inner.key.as_ref()
    }

    /// The mediator's base URL.
    pub fn mediator_url(&self) -> &str {
        &self.inner.link.base
    }

    /// The URL registered for the mediator to call this node back at
    /// (`None` for a sender-only client).
    pub fn callback_url(&self) -> Option<&str> {
        self.inner.callback.as_deref()
    }

    /// The address the callback server is bound to (`None` for a
    /// sender-only client).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Sends `body` to node `target` at `path` and returns its opened reply.
    pub async fn call(
        &self,
        target: NodeKey,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, HttpError> {
        let route = format!(
            "/one/{}/{}",
            target.group(),
            target.name().unwrap_or_default()
        );
        let target = Target::One(target);
        let (_, reply) = self.unicast(&route, &target, path, body.into()).await?;
        Ok(reply)
    }

    /// Sends `body` to any one node of `group` (the mediator picks the least
    /// busy healthy one) and returns which node answered and its reply.
    pub async fn any(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(NodeKey, Bytes), HttpError> {
        let target = Target::any(group)?;
        let route = format!("/any/{group}");
        self.unicast(&route, &target, path, body.into()).await
    }

    /// Sends `body` to every node of `group` and returns each node's
    /// result with the mediator's summary.
    ///
    /// Fails as a whole only when the mediator refuses the broadcast (no
    /// such group, bad token, ...); a node that fails is an `Err` entry.
    pub async fn broadcast(
        &self,
        group: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<BroadcastReplies, HttpError> {
        let target = Target::all(group)?;
        let route = format!("/many/{group}");
        let (path, bare) = checked_path(path)?;
        let answer = self
            .send(&route, &target, &path, &bare, body.into())
            .await?;
        if !answer.status.is_success() {
            return Err(mediator_error(answer.status, &answer.body));
        }
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
            .map_err(|e| HttpError::Protocol(format!("/many answered a non-array: {e}")))?;
        let replies: Vec<NodeReply> = entries
            .iter()
            .map(|entry| self.broadcast_entry(entry, &bare))
            .collect::<Result<_, _>>()?;
        let summary = match answer.headers.get(X_MEDIATOR_SUMMARY) {
            Some(value) => parse_summary(value)?,
            None => count(&replies),
        };
        Ok(BroadcastReplies { replies, summary })
    }

    fn broadcast_entry(
        &self,
        entry: &serde_json::Value,
        path: &str,
    ) -> Result<NodeReply, HttpError> {
        let node: NodeKey = entry
            .get("node")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| HttpError::Protocol(format!("/many entry names no node: {entry}")))?
            .parse()
            .map_err(|e| HttpError::Protocol(format!("/many entry's node: {e}")))?;
        let id = entry
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .map(NodeId);
        let status = entry
            .get("status")
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let body = if let Some(catch) = entry.get("catch") {
            let (kind, fault, message) = catch_error(catch);
            // The mediator's account of why this node has no reply.
            let error = HttpError::Mediator {
                status: status.unwrap_or(match kind.as_str() {
                    "deadline_passed" => 504,
                    "no_node_available" | "store" => 503,
                    _ => 502,
                }),
                kind,
                fault,
                message,
            };
            return Ok(NodeReply {
                node,
                id,
                result: Err(error),
            });
        } else if let Some(encoded) = entry.get("then_base64") {
            use base64::Engine;
            let text = encoded.as_str().ok_or_else(|| {
                HttpError::Protocol("/many entry's then_base64 is not a string".into())
            })?;
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| HttpError::Protocol(format!("/many entry's then_base64: {e}")))?,
            )
        } else if let Some(value) = entry.get("then") {
            Bytes::from(value.to_string())
        } else {
            return Err(HttpError::Protocol(format!(
                "/many entry has neither then nor catch: {entry}"
            )));
        };
        let status = status.unwrap_or(200);
        let result = if (200..300).contains(&status) {
            core_node::open_reply(
                self.inner.cipher.as_ref(),
                &node,
                self.inner.key.as_ref(),
                path,
                &body,
            )
            .map(Bytes::from)
            .map_err(HttpError::from)
        } else {
            Err(node_error(node.to_string(), status, &body))
        };
        Ok(NodeReply { node, id, result })
    }

    /// Sends to one node (`/one` or `/any`) and opens the reply.
    async fn unicast(
        &self,
        route: &str,
        target: &Target,
        path: &str,
        body: Bytes,
    ) -> Result<(NodeKey, Bytes), HttpError> {
        let (path, bare) = checked_path(path)?;
        let answer = self.send(route, target, &path, &bare, body).await?;
        let replier = match answer.headers.get(X_MEDIATOR_NODE) {
            None if answer.status.is_success() => {
                return Err(HttpError::Protocol(format!(
                    "the mediator's answer has no {X_MEDIATOR_NODE} header"
                )))
            }
            None => return Err(mediator_error(answer.status, &answer.body)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<NodeKey>().ok())
                .ok_or_else(|| {
                    HttpError::Protocol(format!("{X_MEDIATOR_NODE} is not a node key: {value:?}"))
                })?,
        };
        // The seal would catch a reply from another node too; saying so
        // plainly makes a misrouting mediator easier to diagnose.
        if !target.addresses(&replier) {
            return Err(HttpError::Protocol(format!(
                "asked {target}, but the mediator says {replier} answered"
            )));
        }
        if !answer.status.is_success() {
            return Err(node_error(
                replier.to_string(),
                answer.status.as_u16(),
                &answer.body,
            ));
        }
        let reply = core_node::open_reply(
            self.inner.cipher.as_ref(),
            &replier,
            self.inner.key.as_ref(),
            &bare,
            &answer.body,
        )?;
        Ok((replier, Bytes::from(reply)))
    }

    /// Seals `body` for `target` and POSTs it to `route` + `path`.
    async fn send(
        &self,
        route: &str,
        target: &Target,
        path: &str,
        bare: &str,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let inner = &self.inner;
        let sealed = core_node::seal_request(
            inner.cipher.as_ref(),
            inner.key.as_ref(),
            target,
            bare,
            &body,
        )?;
        let url = format!("{}{route}{path}", inner.link.base);
        let token = inner.link.tokens.token()?;
        let mut req = request(
            Method::POST,
            &url,
            &token,
            SEALED_CONTENT_TYPE,
            Bytes::from(sealed),
        )?;
        let millis = u64::try_from(inner.link.timeout.as_millis()).unwrap_or(u64::MAX);
        req.headers_mut()
            .insert(X_MEDIATOR_TIMEOUT_MS, HeaderValue::from(millis));
        inner
            .link
            .transport
            .send(req, inner.link.timeout + GRACE)
            .await
    }

    /// Stops the lease keeper, deregisters, and stops the callback server
    /// (requests in flight get a few seconds to finish). A sender-only
    /// client has nothing to stop.
    ///
    /// The server stops even when deregistering fails; the error is
    /// returned then (the lease will run out at the mediator anyway).
    pub async fn shutdown(self) -> Result<(), HttpError> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        let _ = running.stop.send(true);
        // Wait for the keeper so no registration of its lands after the
        // removal below.
        let _ = running.keeper.await;
        let removed = running.lease.remove().await;
        let _ = running.server.await;
        match removed {
            Ok(n) => {
                tracing::info!(node = %running.lease.key, removed = n, "node deregistered");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// The path as sent (leading `/`, query kept) and its bare form (no query),
/// which the seal binds.
fn checked_path(path: &str) -> Result<(String, String), HttpError> {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.contains('#') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            Error::invalid("path", "must not contain '#', spaces or control characters").into(),
        );
    }
    let bare = path.split('?').next().unwrap_or(&path).to_owned();
    Ok((path, bare))
}

/// Parses `asked=4; answered=2; failed=1; timed_out=1`.
fn parse_summary(value: &HeaderValue) -> Result<Summary, HttpError> {
    let text = value
        .to_str()
        .map_err(|_| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY} is not ASCII")))?;
    let mut summary = Summary::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, number) = part
            .split_once('=')
            .ok_or_else(|| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY}: {part:?}")))?;
        let number: usize = number
            .trim()
            .parse()
            .map_err(|_| HttpError::Protocol(format!("{X_MEDIATOR_SUMMARY}: {part:?}")))?;
        match name.trim() {
            "asked" => summary.asked = number,
            "answered" => summary.answered = number,
            "failed" => summary.failed = number,
            "timed_out" => summary.timed_out = number,
            // Later versions may add counts; they do not change these.
            _ => {}
        }
    }
    Ok(summary)
}

/// A summary counted from the entries, for mediators that send none.
fn count(replies: &[NodeReply]) -> Summary {
    let mut summary = Summary {
        asked: replies.len(),
        ..Summary::default()
    };
    for reply in replies {
        match &reply.result {
            Err(HttpError::Mediator { kind, .. }) if kind == "deadline_passed" => {
                summary.timed_out += 1;
            }
            Err(HttpError::Mediator { .. }) => summary.failed += 1,
            // A node that answered, even with an error status or a payload
            // that does not open, did answer.
            _ => summary.answered += 1,
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_parse() {
        let v = HeaderValue::from_static("asked=4; answered=2; failed=1; timed_out=1");
        assert_eq!(
            parse_summary(&v).expect("parses"),
            Summary {
                asked: 4,
                answered: 2,
                failed: 1,
                timed_out: 1
            }
        );
        assert!(parse_summary(&HeaderValue::from_static("asked=x")).is_err());
        assert!(parse_summary(&HeaderValue::from_static("asked")).is_err());
        let extra = HeaderValue::from_static("asked=1;answered=1;failed=0;timed_out=0;later=3");
        assert_eq!(parse_summary(&extra).expect("parses").answered, 1);
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            checked_path("echo?x=1").expect("ok"),
            ("/echo?x=1".to_owned(), "/echo".to_owned())
        );
        assert_eq!(
            checked_path("/").expect("ok"),
            ("/".to_owned(), "/".to_owned())
        );
        assert!(checked_path("/a b").is_err());
        assert!(checked_path("/a#b").is_err());
    }
}
