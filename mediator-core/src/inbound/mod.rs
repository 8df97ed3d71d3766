//! One request's life in the hub, whatever way it came in.
//!
//! A transport reads a call off its wire (an HTTP request to `/one/…`, a
//! QUIC call stream, a message on an in-process channel) into an
//! [`Inbound`] and hands it to [`Mediator::handle`]. From there the core
//! does, in this order and in one place for every transport:
//!
//! 1. the request id and `traceparent`: the caller's when well-formed, new
//!    ones otherwise ([`TraceContext::accept`]);
//! 2. authentication ([`Caller`]) and authorization of the target;
//! 3. the deadline: the caller's budget, at most the mediator's;
//! 4. the body, read from the transport's [`InboundBody`] under
//!    [`Limits::max_body`](crate::Limits::max_body), the
//!    [`BodyBudget`](crate::budget::BodyBudget) and the deadline;
//! 5. admission under the bounds on deliveries in flight, and routing;
//! 6. what a node's reply may not do: a redirect or a status that is no
//!    final answer is refused with `502`, naming the node;
//! 7. the answer, which the transport frames ([`Answer`]);
//! 8. one [`RequestRecord`] to the mediator's
//!    [`RequestLog`](crate::request_log::RequestLog), and the
//!    request counted in [`TransportStats`](crate::request_log::TransportStats)
//!    under the transport's name.
//!
//! A transport only frames: it turns its wire into an [`Inbound`] and an
//! [`Answer`] into its wire.
//!
//! A transport that makes the exchange with the node itself (the HTTP
//! listener's pass-through, which copies a call's bytes to a node
//! connection) runs the same steps in two halves: [`Mediator::pass`] does
//! steps 1 to 5 on views of the call's head and chooses the node, and the
//! [`Passing`] it returns applies step 6 to the node's answer and does
//! step 8. A call it would refuse is not taken: the transport hands it to
//! [`Mediator::handle`], so every refusal is written by one path.
//!
//! ```
//! use bytes::Bytes;
//! use mediator_core::inbound::{Answer, Caller, Inbound};
//! use mediator_core::*;
//! use std::time::Duration;
//!
//! /// A deliverer that answers every call with the body it got.
//! struct Echo;
//!
//! #[async_trait]
//! impl Deliver for Echo {
//!     fn schemes(&self) -> Vec<String> { vec!["http".into()] }
//!     async fn deliver(&self, _: &Node, envelope: &Envelope, _: &RequestContext)
//!         -> Result<Reply, DeliverError> {
//!         Ok(Reply::new(http::StatusCode::OK, envelope.body.clone()))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256(b"a secret of at least 32 bytes!!!"))
//!     .deliver(Echo)
//!     .build()?;
//! let echo = NodeKey::named("app", "echo")?;
//! let at = Endpoint::http("http://127.0.0.1:9")?;
//! let me = Identity::internal();
//! mediator.register(&me, Registration::new(echo, at, Duration::from_secs(60))).await?;
//!
//! let call = Inbound::new("doc", Caller::Authenticated(me), "app/echo", Bytes::from("hi"))
//!     .path("/greet");
//! // The transport frames the answer, and says the status it answered with.
//! let answered = mediator
//!     .handle(call, |answer: Answer<'_>| match answer.outcome {
//!         Ok(Routed::One { reply, .. }) => (Ok(reply.body), reply.status.as_u16()),
//!         Ok(_) => (Err(500), 500),
//!         Err(e) => (Err(e.status()), e.status()),
//!     })
//!     .await;
//! assert_eq!(answered, Ok(Bytes::from("hi")));
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;
use tracing::{Instrument, Level};

use crate::auth::Identity;
use crate::budget::BodyReservation;
use crate::context::TraceContext;
use crate::error::{Error, Result};
use crate::mediator::{Forwarded, Mediator};
use crate::model::{split_at_slash, Envelope, NodeKey, Target};
use crate::policy::Credentials;
use crate::request_log::{sender_name, RequestRecord, TargetName};
use crate::router::Routed;

mod pass;

use crate::time::Timestamp;
pub use pass::{PassHead, Passing};

/// Who is calling, as the transport found it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Caller {
    /// A bearer token, checked by the mediator's
    /// [`Authenticate`](crate::policy::Authenticate) policy.
    Token(String),
    /// An identity the transport established for its whole connection (a
    /// QUIC connection's hello, checked with [`Mediator::authenticate`]),
    /// or the process itself ([`Identity::internal`]).
    Authenticated(Identity),
    /// The transport could not tell who is calling: no credential where it
    /// looks for one (an [`Error::unauthorized`] saying where), or the
    /// credential could not be read (a body that did not arrive in time).
    /// The call is refused with this error.
    Refused(Error),
    /// Another instance of the formation, `instance` (its credential
    /// checked with [`Mediator::verify_peer`]), forwarding a call it has
    /// authenticated and authorized: it vouches for `sender`, the caller
    /// at its end (`None`: one whose identity is unproven). The call goes
    /// only to a node attached here, never on to a third instance, and only
    /// to one node: the forwarding instance expands groups itself.
    Peer {
        /// The forwarding instance.
        instance: String,
        /// The verified sender at the forwarding instance.
        sender: Option<NodeKey>,
        /// The target the caller addressed there (`g/*`, `g/?` or the node
        /// itself), which the node checks its sealed payload against;
        /// `None`: the node itself.
        asked: Option<Target>,
    },
}

/// The body of an inbound call, as the transport reads it off its wire:
/// chunk by chunk, so that nothing is held before the caller is known and
/// the body is read only up to its bound. A body that arrived whole is a
/// [`Bytes`].
pub trait InboundBody: Send {
    /// The next chunk of the body, `None` at its end, or why it could not
    /// be read.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, String>>> + Send;

    /// The size the caller announced, when it did (`Content-Length`).
    fn announced(&self) -> Option<u64> {
        None
    }

    /// What travels of the whole body once read: the body itself by
    /// default. A transport whose callers may put a credential in the body
    /// takes it out here (HTTP removes the `x-jwt` field of a JSON body),
    /// so that no node ever receives a caller's credential.
    fn travelling(&self, whole: Bytes) -> Bytes {
        whole
    }

    /// Whether the rest of a refused body may be read and dropped, so that
    /// the refusal reaches a caller that writes its whole body before
    /// reading. `false` for a caller that sends nothing until asked to (an
    /// HTTP client waiting for `100 Continue`): reading would ask it.
    fn may_drain(&self) -> bool {
        true
    }
}

impl InboundBody for Bytes {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, String>>> + Send {
        let chunk = (!self.is_empty()).then(|| Ok(std::mem::take(self)));
        std::future::ready(chunk)
    }

    fn announced(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

/// One call as a transport read it: who sends it, to whom, what the node
/// is asked, and the ids and budget the caller gave.
#[derive(Debug)]
#[non_exhaustive]
pub struct Inbound<B = Bytes> {
    /// The transport's name, the `transport` label of its requests
    /// (`http`, `quic`).
    pub transport: &'static str,
    /// Who is calling.
    pub caller: Caller,
    /// The target as [`Target`] writes it (`g/n`, `g/`, `g/*`, `g/?`),
    /// parsed by the core so that a bad name is refused the same way on
    /// every transport.
    pub target: String,
    /// The method the node is asked with.
    pub method: Method,
    /// The path (and query) the node is asked for; empty is `/`.
    pub path: String,
    /// The headers that travel to the node.
    pub headers: HeaderMap,
    /// The body.
    pub body: B,
    /// The caller's request id, as sent.
    pub request_id: Option<String>,
    /// The caller's W3C `traceparent`, as sent.
    pub traceparent: Option<String>,
    /// The caller's budget for the whole call; `Some(ZERO)` is a deadline
    /// already past.
    pub timeout: Option<Duration>,
    /// Where the call came from.
    pub remote: Option<SocketAddr>,
    /// A refusal the transport found while framing the call (a malformed
    /// header), given once the caller is authenticated, so that a caller
    /// without credentials learns nothing from it.
    pub malformed: Option<Error>,
    /// When the call arrived (`None`: when it was handed to the core): its
    /// duration and the deadline to read its body are counted from here.
    pub arrived: Option<Instant>,
}

impl<B: InboundBody> Inbound<B> {
    /// A `POST /` call on `transport` from `caller` to `target`, arrived
    /// now; set the rest with the other methods.
    pub fn new(
        transport: &'static str,
        caller: Caller,
        target: impl Into<String>,
        body: B,
    ) -> Inbound<B> {
        Inbound {
            transport,
            caller,
            target: target.into(),
            method: Method::POST,
            path: String::new(),
            headers: HeaderMap::new(),
            body,
            request_id: None,
            traceparent: None,
            timeout: None,
            remote: None,
            malformed: None,
            arrived: None,
        }
    }

    /// With the method the node is asked with.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// With the path (and query) the node is asked for.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// With the headers that travel to the node.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// With the caller's request id and `traceparent`, as sent.
    pub fn ids(mut self, request_id: Option<String>, traceparent: Option<String>) -> Self {
        self.request_id = request_id;
        self.traceparent = traceparent;
        self
    }

    /// With the caller's budget.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// With the caller's address.
    pub fn remote(mut self, remote: Option<SocketAddr>) -> Self {
        self.remote = remote;
        self
    }

    /// Refused with `e` once the caller is authenticated (see
    /// [`malformed`](Self::malformed)).
    pub fn malformed(mut self, e: Error) -> Self {
        self.malformed = Some(e);
        self
    }

    /// Arrived at `at` rather than when handed to the core.
    pub fn arrived(mut self, at: Instant) -> Self {
        self.arrived = Some(at);
        self
    }
}

/// What the core hands a transport to frame: the call's ids, and its
/// outcome.
#[derive(Debug)]
#[non_exhaustive]
pub struct Answer<'a> {
    /// The ids the call goes by (the caller's when well-formed), which the
    /// answer carries back.
    pub trace: &'a TraceContext,
    /// The node's reply or the broadcast's, or why there is none.
    pub outcome: Result<Routed>,
}

/// A call under way: what it is counted and recorded by.
struct Opened {
    transport: &'static str,
    arrived: Instant,
    remote: Option<SocketAddr>,
    method: Method,
    /// The target as the caller wrote it, valid or not.
    target: String,
    trace: TraceContext,
    seen: Seen,
}

/// What the lifecycle learnt of a call, for its record.
#[derive(Default)]
struct Seen {
    sender: Option<Identity>,
    /// The route the call is counted under, once its target is known.
    route: Option<&'static str>,
    node: Option<NodeKey>,
    /// The record's path, made while the call's path is at hand, when
    /// records are written at all.
    path: Option<String>,
}

impl Mediator {
    /// Runs one inbound call through the hub (see the [module](self)):
    /// checks it, reads its body, routes it, hands the outcome to `frame`,
    /// which answers on the transport's wire and returns what it answered
    /// with and the status it answered, and records the call.
    pub async fn handle<B, T, F>(&self, mut inbound: Inbound<B>, frame: F) -> T
    where
        B: InboundBody,
        F: FnOnce(Answer<'_>) -> (T, u16),
    {
        let trace = TraceContext::accept(
            inbound.request_id.as_deref(),
            inbound.traceparent.as_deref(),
        );
        let arrived = *inbound.arrived.get_or_insert_with(Instant::now);
        let mut call = Opened {
            transport: inbound.transport,
            arrived,
            remote: inbound.remote,
            method: inbound.method.clone(),
            target: std::mem::take(&mut inbound.target),
            trace,
            seen: Seen::default(),
        };
        // Events inside the call (retries, refusals) carry its id when
        // debugging; otherwise the call's future is not wrapped at all.
        let span = tracing::debug_span!(
            "request",
            request_id = call.trace.request_id.as_deref().unwrap_or_default()
        );
        let run = self.run(inbound, &call.target, &call.trace, &mut call.seen);
        let outcome = if span.is_disabled() {
            run.await
        } else {
            run.instrument(span).await
        };
        let (framed, status) = frame(Answer {
            trace: &call.trace,
            outcome,
        });
        self.conclude(call, status);
        framed
    }

    /// Step 8 of the lifecycle, the same for every way in: the call counted
    /// under its transport and route, and its record written.
    fn conclude(&self, call: Opened, status: u16) {
        let Opened {
            transport,
            arrived,
            remote,
            method,
            target,
            trace,
            mut seen,
        } = call;
        let took = arrived.elapsed();
        let route = seen.route.unwrap_or_else(|| {
            // A call whose header could not be read named no target.
            if target.is_empty() {
                "other"
            } else {
                route_of(&target)
            }
        });
        self.transport_stats()
            .request(transport, route, status, took);
        let (level, message) = if status >= 500 {
            (Level::WARN, "request failed")
        } else {
            (Level::INFO, "request")
        };
        let log = self.request_log();
        if log.enabled(level) {
            let request_id = trace.request_id.as_deref().unwrap_or_default();
            let node = seen.node.as_ref().map(NodeKey::to_string);
            let path = seen
                .path
                .take()
                .unwrap_or_else(|| record_path(&target, "/"));
            let mut record =
                RequestRecord::new(level, message, request_id, &method, &path, status, took)
                    .with_transport(transport);
            if !target.is_empty() {
                record = record.with_target(target_name(&target));
            }
            if let Some((trace_id, span_id)) = trace.ids() {
                record = record.with_trace(trace_id, span_id);
            }
            if let Some(remote) = remote {
                record = record.with_remote(remote);
            }
            if let Some(sender) = &seen.sender {
                record = record.with_sender(sender_name(sender));
            }
            if let Some(node) = &node {
                record = record.with_node(node);
            }
            log.record(&record);
        }
    }

    /// Steps 2 to 6 of the lifecycle.
    async fn run<B: InboundBody>(
        &self,
        inbound: Inbound<B>,
        target: &str,
        trace: &TraceContext,
        seen: &mut Seen,
    ) -> Result<Routed> {
        let Inbound {
            caller,
            method,
            path,
            headers,
            mut body,
            timeout,
            arrived,
            malformed,
            ..
        } = inbound;
        let arrived = arrived.unwrap_or_else(Instant::now);
        // Written to the record only if records are wanted at all: a
        // level that takes INFO lines takes WARN ones.
        if self.request_log().enabled(Level::WARN) {
            seen.path = Some(record_path(target, &path));
        }
        // A peer's call: the forwarding instance and what the caller
        // addressed there (which the sealed payload is bound to).
        let mut peer = None;
        let identity: &Identity = match caller {
            Caller::Token(token) => seen
                .sender
                .insert(self.authenticate(&Credentials::Bearer(&token))?),
            Caller::Authenticated(identity) => seen.sender.insert(identity),
            Caller::Refused(e) => return Err(e),
            Caller::Peer {
                instance,
                sender,
                asked,
            } => {
                peer = Some((instance, asked));
                seen.sender.insert(Identity {
                    verified: sender.is_some(),
                    key: sender,
                    admin: false,
                    scope: None,
                    expires: Timestamp::from_millis(i64::MAX),
                })
            }
        };
        if let Some(e) = malformed {
            return Err(e);
        }
        let target: Target = target.parse()?;
        seen.route = Some(match &target {
            Target::One(_) => "one",
            Target::Any(_) => "any",
            Target::All(_) => "many",
        });
        // A forwarded call names its node in the target, and what the caller
        // addressed beside it.
        let mut forwarded = None;
        let target = match (peer, target) {
            // Authorized where the caller called.
            (Some((instance, asked)), Target::One(node)) => {
                let addressed = asked.unwrap_or_else(|| Target::One(node.clone()));
                let covers = match &addressed {
                    Target::One(key) => *key == node,
                    Target::All(group) | Target::Any(group) => group == node.group(),
                };
                if !covers {
                    return Err(Error::invalid(
                        "x-mediator-target",
                        format!("{addressed} does not cover node {node}"),
                    ));
                }
                forwarded = Some(Forwarded { instance, node });
                addressed
            }
            (Some(_), _) => {
                return Err(Error::invalid(
                    "target",
                    "an instance forwards calls for one node; groups are expanded where the caller called",
                ))
            }
            (None, target) => {
                self.authorize(identity, &target)?;
                target
            }
        };
        if timeout == Some(Duration::ZERO) {
            // The caller's deadline has already passed: nothing can answer
            // in time, so no node is bothered.
            return Err(Error::DeadlinePassed {
                node: target.to_string(),
                after: Duration::ZERO,
            });
        }
        let limits = self.limits();
        let max = limits.max_body;
        let read_by = arrived + limits.deadline;
        if body.announced().is_some_and(|len| len > max as u64) {
            if body.may_drain() {
                drain(&mut body, drain_bound(max), read_by).await;
            }
            return Err(Error::TooLarge { limit: max });
        }
        let (bytes, reservation) = read_to_end(self, &mut body, max, read_by).await?;
        let envelope = Envelope {
            from: None,
            target,
            method,
            path_and_query: if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            headers,
            body: body.travelling(bytes),
        };
        let routed = self
            .route_authorized(identity, envelope, timeout, trace.clone(), forwarded)
            .await;
        // The body counted against the budget until its delivery ended.
        drop(reservation);
        match routed? {
            Routed::One { node, reply } => {
                if let Some(refusal) = unrelayable(&node, reply.status, &reply.headers) {
                    seen.node = Some(node);
                    return Err(refusal);
                }
                seen.node = Some(node.clone());
                Ok(Routed::One { node, reply })
            }
            other => Ok(other),
        }
    }
}

/// Reads `body` to its end by `by`, holding its bytes in the mediator's
/// [`BodyBudget`](crate::budget::BodyBudget) until the reservation returned
/// is dropped: `413 too_large` past `max` (after reading and dropping the
/// rest, up to [`drain_bound`], when the body [may be
/// drained](InboundBody::may_drain)), `503 overloaded` past the budget,
/// `408 timeout` after `by`, `400` when it cannot be read.
///
/// [`Mediator::handle`] reads a call's body with it; a transport reads
/// with it what it must see before the call is handed over (a credential
/// inside a small body).
pub async fn read_to_end<B: InboundBody>(
    mediator: &Mediator,
    body: &mut B,
    max: usize,
    by: Instant,
) -> Result<(Bytes, BodyReservation)> {
    let started = Instant::now();
    let mut reservation = mediator.body_budget().reserve();
    let read = tokio::time::timeout_at(by, read_body(body, max, &mut reservation, mediator)).await;
    match read {
        Ok(Ok(bytes)) => Ok((bytes, reservation)),
        Ok(Err(e)) => {
            drop(reservation);
            if matches!(e, Error::TooLarge { .. }) && body.may_drain() {
                drain(body, drain_bound(max), by).await;
            }
            Err(e)
        }
        Err(_) => Err(body_late(by.saturating_duration_since(started))),
    }
}

/// `400`: the body could not be read (`why`).
fn body_unreadable(why: impl std::fmt::Display) -> Error {
    Error::invalid("body", format!("could not be read: {why}"))
}

/// `408 timeout`: the body did not arrive within `waited`.
fn body_late(waited: Duration) -> Error {
    Error::refused(
        408,
        "timeout",
        format!("request body not received within {} ms", waited.as_millis()),
    )
}

/// Reads `body` to its end: `413` past `max`, `503 overloaded` past the
/// mediator's body budget, `400` when it cannot be read.
async fn read_body<B: InboundBody>(
    body: &mut B,
    max: usize,
    reservation: &mut BodyReservation,
    mediator: &Mediator,
) -> Result<Bytes> {
    // Chunks are kept as they come and joined once, into exactly the room
    // they need: a body that arrives in one piece is passed on uncopied,
    // one in many (a QUIC stream's) is copied once.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk.map_err(body_unreadable)?;
        if chunk.is_empty() {
            continue;
        }
        if len.saturating_add(chunk.len()) > max {
            return Err(Error::TooLarge { limit: max });
        }
        reservation.grow(chunk.len()).inspect_err(|_| {
            tracing::warn!(
                held = mediator.body_budget().held(),
                budget = mediator.body_budget().limit(),
                "request body refused: the budget for bodies in memory is spent"
            );
        })?;
        len += chunk.len();
        chunks.push(chunk);
    }
    if chunks.len() <= 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut joined = BytesMut::with_capacity(len);
    for chunk in chunks {
        joined.extend_from_slice(&chunk);
    }
    Ok(joined.freeze())
}

/// How much of a body past the limit `max` is read and thrown away before
/// the refusal goes out: twice the limit, and at least 4 MiB.
///
/// HTTP/1.1 clients such as Python's `http.client` and Node's `fetch` send
/// the whole body before reading the answer; if the server closes its end
/// with their bytes unread, the kernel resets the connection and the client
/// sees `EPIPE`/`ECONNRESET` instead of the `413`. Reading the rest first
/// lets the answer arrive; the bound keeps a huge upload from being read in
/// full for nothing.
pub fn drain_bound(max: usize) -> u64 {
    (max as u64).saturating_mul(2).max(4 << 20)
}

/// Reads and drops `body` until its end, `bound` bytes, an error, or
/// `by`, whichever comes first.
async fn drain<B: InboundBody>(body: &mut B, bound: u64, by: Instant) {
    let mut read = 0u64;
    let drained = tokio::time::timeout_at(by, async {
        while let Some(Ok(chunk)) = body.next_chunk().await {
            read = read.saturating_add(chunk.len() as u64);
            if read > bound {
                return;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(read, "gave up reading an oversized body");
    }
}

/// Why a node's reply with `status` cannot be relayed as it is, if it
/// cannot: a node is untrusted, and its reply never acts with the hub's
/// authority.
///
/// - A redirect (`301`/`302`/`303`/`307`/`308`, or any `3xx` with a
///   `Location`) is `502 node_redirect`: clients that follow redirects
///   would send the caller's credentials wherever the node points.
/// - An informational (`1xx`) or out-of-range status is `502
///   node_failed`: no answer a caller can use (`101` would claim the
///   connection switched protocols).
pub fn unrelayable(node: &NodeKey, status: StatusCode, headers: &HeaderMap) -> Option<Error> {
    unrelayable_status(node, status, headers.contains_key(http::header::LOCATION))
}

/// [`unrelayable`], told only whether the reply has a `Location`.
fn unrelayable_status(node: &NodeKey, status: StatusCode, located: bool) -> Option<Error> {
    let code = status.as_u16();
    if !(200..600).contains(&code) {
        return Some(Error::refused(
            502,
            "node_failed",
            format!("node {node} answered status {code}, which is not a final answer"),
        ));
    }
    let redirects =
        matches!(code, 301 | 302 | 303 | 307 | 308) || (status.is_redirection() && located);
    if redirects {
        tracing::warn!(
            node = %node,
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

/// A target as the request line writes it, straight from its text, valid
/// or not.
fn target_name(target: &str) -> TargetName<'_> {
    let (group, rest) = split_at_slash(target).unwrap_or((target, ""));
    TargetName { group, rest }
}

/// The route a call is counted under, from its target's text.
fn route_of(target: &str) -> &'static str {
    match target.as_bytes() {
        [.., b'/', b'*'] => "many",
        [.., b'/', b'?'] => "any",
        _ => "one",
    }
}

/// The path the request line gives a call, the same whatever the
/// transport: the one an HTTP caller names (`/one/g/n/path`,
/// `/any/g/path`, `/many/g/path`), without the query, which may carry a
/// token.
fn record_path(target: &str, path: &str) -> String {
    if target.is_empty() {
        // A call whose header could not be read named nothing.
        return "-".to_owned();
    }
    let path = path
        .bytes()
        .position(|b| b == b'?')
        .map_or(path, |at| &path[..at]);
    let name = target_name(target);
    let mut out = String::with_capacity(8 + target.len() + path.len());
    match route_of(target) {
        "many" => {
            out.push_str("/many/");
            out.push_str(name.group);
        }
        "any" => {
            out.push_str("/any/");
            out.push_str(name.group);
        }
        _ => {
            out.push_str("/one/");
            out.push_str(target);
        }
    }
    if path != "/" || out.ends_with('/') {
        if !path.starts_with('/') {
            out.push('/');
        }
        out.push_str(path);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_recorded_under_the_path_an_http_caller_names() {
        assert_eq!(record_path("app/echo", "/x/y?x-jwt=t"), "/one/app/echo/x/y");
        assert_eq!(record_path("app/echo", "/"), "/one/app/echo");
        assert_eq!(record_path("bench/", "/some/path"), "/one/bench//some/path");
        assert_eq!(record_path("app/*", "/x"), "/many/app/x");
        assert_eq!(record_path("app/?", "/"), "/any/app");
        assert_eq!(route_of("a/?"), "any");
        assert_eq!(route_of("bad"), "one");
        assert_eq!(record_path("", ""), "-");
    }

    #[test]
    fn redirects_and_non_final_statuses_are_not_relayed() {
        let node = NodeKey::named("g", "n").expect("valid");
        let none = HeaderMap::new();
        for code in [301, 302, 303, 307, 308] {
            let status = StatusCode::from_u16(code).expect("valid");
            let e = unrelayable(&node, status, &none).expect("refused");
            assert_eq!((e.status(), e.kind()), (502, "node_redirect"));
        }
        let mut located = HeaderMap::new();
        located.insert(http::header::LOCATION, "http://x".parse().expect("valid"));
        assert!(unrelayable(&node, StatusCode::MULTIPLE_CHOICES, &located).is_some());
        assert!(unrelayable(&node, StatusCode::NOT_MODIFIED, &none).is_none());
        let e = unrelayable(&node, StatusCode::SWITCHING_PROTOCOLS, &none).expect("refused");
        assert_eq!(e.kind(), "node_failed");
        assert!(unrelayable(&node, StatusCode::OK, &none).is_none());
    }
}
