//! The HTTP wire under the core's node client: calls are `POST`s to the
//! mediator's `/one`, `/any` and `/many` routes, a started node serves a
//! callback server and keeps its registration with `/register`, `/renew`
//! and `/remove`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use mediator_core::async_trait;
use mediator_core::node::{
    read_error_body, ClientError, Join, Joined, Member, Renewal, TokenSource, Wire, WireEntry,
    WireReply, WireRequest, GRACE,
};
use mediator_core::{Error, Fault, NodeId, NodeKey, Summary, Target};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::builder::bind;
use super::node::{NodeService, SEALED_CONTENT_TYPE};
use super::serve;
use super::transport::{catch_error, request, Answer, Transport};
use crate::headers::{X_MEDIATOR_NODE, X_MEDIATOR_SUMMARY, X_MEDIATOR_TIMEOUT_MS};

/// The HTTP transport's [`Wire`]: what [`NodeClient`](super::NodeClient)
/// runs over. Built by [`NodeClientBuilder`](super::NodeClientBuilder).
pub struct HttpWire {
    /// The mediators of the formation, in the order given.
    pub(super) bases: Vec<String>,
    /// The one requests go to now: the first, until it does not answer.
    pub(super) current: AtomicUsize,
    pub(super) transport: Transport,
    /// How long a registration, renewal or removal waits for its answer.
    pub(super) timeout: Duration,
    /// What a started node serves at its callback.
    pub(super) serving: Serving,
    /// The callback settings, used at the first join.
    pub(super) callback: Option<String>,
    pub(super) listen: Option<SocketAddr>,
    /// The callback URL registered and the address bound, once bound.
    pub(super) bound: OnceLock<(String, SocketAddr)>,
    /// The callback server, while it runs.
    pub(super) server: Mutex<Option<Server>>,
}

/// What a started node's callback server answers with.
pub(super) enum Serving {
    /// Sealed requests, through the node's responder ([`NodeService`]).
    Native,
    /// The original's body shapes, through a legacy handler.
    #[cfg(feature = "legacy")]
    Legacy(super::legacy::LegacyServing),
}

/// A running callback server; dropping it stops the server.
pub(super) struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting and waits for requests in flight (a few seconds at
    /// most).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for HttpWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpWire")
            .field("mediator", &self.base())
            .field("callback", &self.callback_url())
            .finish_non_exhaustive()
    }
}

/// The lease in whole seconds, as the wire carries it (rounded up so a
/// sub-second remainder never shortens it).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// The lease the mediator granted, from the `ttl` (whole seconds) of its
/// answer; `asked` when it did not say or said something unusable, so a
/// strange answer never makes the node renew in a tight loop.
fn granted(answer: &serde_json::Value, asked: Duration) -> Duration {
    answer
        .get("ttl")
        .and_then(serde_json::Value::as_u64)
        .filter(|secs| *secs > 0)
        .map_or(asked, Duration::from_secs)
}

fn key_json(key: &NodeKey) -> serde_json::Value {
    json!({ "group": key.group(), "name": key.name() })
}

/// The mediator's own refusal of a request.
fn mediator_error(answer: &Answer) -> ClientError {
    ClientError::refused(None, answer.status.as_u16(), read_error_body(&answer.body))
}

impl HttpWire {
    /// The mediator's base URL: the one requests go to now.
    pub fn mediator_url(&self) -> &str {
        self.base()
    }

    fn base(&self) -> &str {
        let at = self.current.load(Ordering::Relaxed) % self.bases.len();
        &self.bases[at]
    }

    /// Sends what `make` builds for a mediator's base URL, to the current
    /// mediator and, while one cannot be reached, to the next of the
    /// formation, each once; the one that answered stays current.
    async fn to_formation<F>(&self, make: F, timeout: Duration) -> Result<Answer, ClientError>
    where
        F: Fn(&str) -> Result<http::Request<http_body_util::Full<Bytes>>, ClientError>,
    {
        let first = self.current.load(Ordering::Relaxed);
        let mut failed = None;
        for step in 0..self.bases.len() {
            let at = (first + step) % self.bases.len();
            let base = &self.bases[at];
            match self.transport.send(make(base)?, timeout).await {
                Err(e @ ClientError::Unreachable { .. }) => {
                    if self.bases.len() > 1 {
                        tracing::warn!(mediator = %base, error = %e, "mediator unreachable; trying the next of the formation");
                    }
                    failed = Some(e);
                }
                answered => {
                    if step > 0 {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::info!(mediator = %base, "now talking to this mediator");
                    }
                    return answered;
                }
            }
        }
        Err(failed.unwrap_or_else(|| config("no mediator URL")))
    }

    /// The URL registered for the mediator to call this node back at
    /// (`None` before a node started).
    pub fn callback_url(&self) -> Option<&str> {
        self.bound.get().map(|(url, _)| url.as_str())
    }

    /// The address the callback server is bound to (`None` before a node
    /// started).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.bound.get().map(|(_, addr)| *addr)
    }

    /// POSTs `body` as JSON to `route` (which starts with `/`).
    async fn post_json(
        &self,
        tokens: &TokenSource,
        route: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let token = tokens.token()?;
        let body = Bytes::from(body.to_string());
        self.to_formation(
            |base| {
                request(
                    Method::POST,
                    &format!("{base}{route}"),
                    &token,
                    "application/json",
                    body.clone(),
                )
            },
            timeout,
        )
        .await
    }

    /// Registers (or re-registers) `member`; returns the lease granted.
    async fn register(
        &self,
        tokens: &TokenSource,
        member: &Member,
        url: &str,
    ) -> Result<Duration, ClientError> {
        let body = json!({
            "group": member.key.group(),
            "name": member.key.name(),
            "url": url,
            "ttl": ttl_secs(member.ttl),
            "meta": member.meta,
        });
        let answer = self
            .post_json(tokens, "/register", &body, self.timeout)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(mediator_error(&answer));
        }
        // The original's dialect answers validation failures with 200 and
        // a non-empty `errors`; ours with 400, but read both the same way.
        let parsed: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::Protocol(format!("register answered non-JSON: {e}")))?;
        match parsed.get("errors") {
            Some(serde_json::Value::Object(errors)) if !errors.is_empty() => {
                Err(ClientError::Mediator {
                    status: 200,
                    kind: "invalid".into(),
                    fault: Some(Fault::Caller),
                    message: serde_json::Value::Object(errors.clone()).to_string(),
                })
            }
            _ => match parsed.get("entity") {
                None => Err(ClientError::Protocol(
                    "register answered without an entity".into(),
                )),
                Some(entity) => Ok(granted(entity, member.ttl)),
            },
        }
    }

    /// Binds and starts the callback server for `member`, unless it runs.
    /// Returns whether it started it now, and the URL to register.
    async fn serve(&self, member: &Member) -> Result<(bool, String), ClientError> {
        if let Some((url, _)) = self.bound.get() {
            return Ok((false, url.clone()));
        }
        let (listener, url) = bind(self.callback.as_deref(), self.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = match &self.serving {
            Serving::Native => {
                let service = NodeService::from_responder(
                    member.responder.clone(),
                    member.max_body,
                    Arc::clone(&member.clock),
                );
                serve::spawn(listener, service, stopped)
            }
            #[cfg(feature = "legacy")]
            Serving::Legacy(legacy) => {
                serve::spawn(listener, legacy.service(member.max_body), stopped)
            }
        };
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(Server { stop, task });
        let _ = self.bound.set((url.clone(), local_addr));
        Ok((true, url))
    }

    /// Stops the callback server, if it runs.
    async fn stop_serving(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            server.stop().await;
        }
    }

    fn read_broadcast(answer: &Answer) -> Result<WireReply, ClientError> {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::Protocol(format!("/many answered a non-array: {e}")))?;
        let entries = entries
            .iter()
            .map(broadcast_entry)
            .collect::<Result<_, _>>()?;
        let summary = answer
            .headers
            .get(X_MEDIATOR_SUMMARY)
            .map(parse_summary)
            .transpose()?;
        Ok(WireReply::Broadcast { entries, summary })
    }
}

#[async_trait]
impl Wire for HttpWire {
    async fn send(&self, request: WireRequest<'_>) -> Result<WireReply, ClientError> {
        let route = match request.target {
            Target::One(key) => format!("/one/{}/{}", key.group(), key.name().unwrap_or_default()),
            Target::Any(group) => format!("/any/{group}"),
            Target::All(group) => format!("/many/{group}"),
        };
        let token = request.tokens.token()?;
        let millis = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX);
        let answer = self
            .to_formation(
                |base| {
                    let mut req = super::transport::request(
                        request.method.clone(),
                        &format!("{base}{route}{}", request.path),
                        &token,
                        SEALED_CONTENT_TYPE,
                        request.body.clone(),
                    )?;
                    req.headers_mut()
                        .insert(X_MEDIATOR_TIMEOUT_MS, HeaderValue::from(millis));
                    Ok(req)
                },
                request.timeout + GRACE,
            )
            .await?;
        if let Target::All(_) = request.target {
            if !answer.status.is_success() {
                return Err(mediator_error(&answer));
            }
            return HttpWire::read_broadcast(&answer);
        }
        match answer.headers.get(X_MEDIATOR_NODE) {
            None if answer.status.is_success() => Err(ClientError::Protocol(format!(
                "the mediator's answer has no {X_MEDIATOR_NODE} header"
            ))),
            None => Ok(WireReply::Refused {
                node: None,
                status: answer.status.as_u16(),
                error: read_error_body(&answer.body),
            }),
            Some(value) => {
                let node = value.to_str().map_err(|_| {
                    ClientError::Protocol(format!("{X_MEDIATOR_NODE} is not a node key: {value:?}"))
                })?;
                Ok(WireReply::Answered {
                    node: node.to_owned(),
                    status: answer.status.as_u16(),
                    body: answer.body,
                })
            }
        }
    }

    async fn join(&self, join: &Join) -> Result<Joined, ClientError> {
        let Some(member) = &join.node else {
            // A sender calls with a token on every request; nothing to set up.
            return Ok(Joined::held());
        };
        let (started, url) = self.serve(member).await?;
        match self.register(&join.tokens, member, &url).await {
            Ok(granted) => {
                if started {
                    tracing::info!(node = %member.key, callback = %url, mediator = %self.base(), "node registered");
                }
                Ok(Joined::leased(granted))
            }
            Err(error) => {
                if started {
                    self.stop_serving().await;
                }
                Err(error)
            }
        }
    }

    async fn renew(&self, join: &Join) -> Result<Renewal, ClientError> {
        let Some(member) = &join.node else {
            // A sender holds no lease; it never comes to this.
            return Ok(Renewal::Forgotten);
        };
        let mut body = key_json(&member.key);
        body["ttl"] = json!(ttl_secs(member.ttl));
        let answer = self
            .post_json(&join.tokens, "/renew", &body, self.timeout)
            .await?;
        match answer.status {
            StatusCode::OK => {
                // The lease is renewed whatever the body says; an unreadable
                // one only means the asked lease is assumed.
                let parsed = serde_json::from_slice(&answer.body).unwrap_or_default();
                Ok(Renewal::Renewed(granted(&parsed, member.ttl)))
            }
            StatusCode::NOT_FOUND => Ok(Renewal::Forgotten),
            _ => Err(mediator_error(&answer)),
        }
    }

    async fn leave(&self, join: &Join) -> Result<(), ClientError> {
        let Some(member) = &join.node else {
            return Ok(());
        };
        let removed = self
            .post_json(
                &join.tokens,
                "/remove",
                &key_json(&member.key),
                self.timeout,
            )
            .await
            .and_then(|answer| {
                if answer.status != StatusCode::OK {
                    return Err(mediator_error(&answer));
                }
                let parsed: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| ClientError::Protocol(format!("remove answered non-JSON: {e}")))?;
                parsed
                    .get("affected")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        ClientError::Protocol("remove answered without `affected`".into())
                    })
            });
        self.stop_serving().await;
        let removed = removed?;
        tracing::info!(node = %member.key, removed, "node deregistered");
        Ok(())
    }
}

/// One `/many` entry: `{"node", "id", "status", "then" | "then_base64" |
/// "catch"}`.
fn broadcast_entry(entry: &serde_json::Value) -> Result<WireEntry, ClientError> {
    let node = entry
        .get("node")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ClientError::Protocol(format!("/many entry names no node: {entry}")))?
        .to_owned();
    let id = entry
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .map(NodeId);
    let status = entry
        .get("status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let reply = if let Some(catch) = entry.get("catch") {
        // The mediator's account of why this node has no reply.
        let error = catch_error(catch);
        WireReply::Refused {
            node: None,
            status: status.unwrap_or(match error.kind.as_str() {
                "deadline_passed" => 504,
                "no_node_available" | "store" => 503,
                _ => 502,
            }),
            error,
        }
    } else if let Some(encoded) = entry.get("then_base64") {
        use base64::Engine;
        let text = encoded.as_str().ok_or_else(|| {
            ClientError::Protocol("/many entry's then_base64 is not a string".into())
        })?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ClientError::Protocol(format!("/many entry's then_base64: {e}")))?;
        WireReply::Answered {
            node: node.clone(),
            status: status.unwrap_or(200),
            body: Bytes::from(body),
        }
    } else if let Some(value) = entry.get("then") {
        WireReply::Answered {
            node: node.clone(),
            status: status.unwrap_or(200),
            body: Bytes::from(value.to_string()),
        }
    } else {
        return Err(ClientError::Protocol(format!(
            "/many entry has neither then nor catch: {entry}"
        )));
    };
    Ok(WireEntry { node, id, reply })
}

/// Parses `asked=4; answered=2; failed=1; timed_out=1`.
fn parse_summary(value: &HeaderValue) -> Result<Summary, ClientError> {
    let text = value
        .to_str()
        .map_err(|_| ClientError::Protocol(format!("{X_MEDIATOR_SUMMARY} is not ASCII")))?;
    let mut summary = Summary::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let malformed = || ClientError::Protocol(format!("{X_MEDIATOR_SUMMARY}: {part:?}"));
        let (name, number) = part.split_once('=').ok_or_else(malformed)?;
        let number: usize = number.trim().parse().map_err(|_| malformed())?;
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

/// A setting that cannot work, reported before anything starts.
pub(super) fn config(message: &str) -> ClientError {
    ClientError::Core(Error::Config(message.to_owned()))
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
    fn granted_leases_are_read_or_assumed() {
        let asked = Duration::from_secs(30);
        for (answer, expected) in [
            (json!({"ttl": 9}), 9),
            (json!({"ttl": 0}), 30),
            (json!({"ttl": "9"}), 30),
            (json!({"lease_until": "2030-01-01T00:00:00.000Z"}), 30),
            (json!(null), 30),
        ] {
            assert_eq!(
                granted(&answer, asked),
                Duration::from_secs(expected),
                "{answer}"
            );
        }
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn broadcast_entries_are_read() {
        let entry = |v: serde_json::Value| broadcast_entry(&v).expect("reads");
        match entry(json!({"node": "g/a", "id": 3, "then_base64": "aGk="})).reply {
            WireReply::Answered { status, body, .. } => {
                assert_eq!((status, &body[..]), (200, &b"hi"[..]));
            }
            other => panic!("{other:?}"),
        }
        match entry(json!({"node": "g/a", "catch": {"error": "late", "kind": "deadline_passed"}}))
            .reply
        {
            WireReply::Refused {
                node: None,
                status,
                error,
            } => {
                assert_eq!(
                    (status, error.kind.as_str(), error.error.as_str()),
                    (504, "deadline_passed", "late")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            entry(json!({"node": "g/a", "id": 3, "then": 1})).id,
            Some(NodeId(3))
        );
        assert!(broadcast_entry(&json!({"node": "g/a"})).is_err());
        assert!(broadcast_entry(&json!({"then": 1})).is_err());
    }
}
