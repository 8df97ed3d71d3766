//! The same lifecycle for a transport that makes the exchange with the
//! node itself: a pass-through, which copies the caller's bytes to a node
//! connection of its own instead of handing the core an [`Envelope`] and
//! a body.
//!
//! [`Mediator::pass`] runs the steps before delivery (ids, caller,
//! authorization, body bounds, admission, the node chosen) on views of
//! the call's head; the transport then sends, and tells the [`Passing`]
//! how the node answered, which applies the reply rules and records the
//! delivery as the default router does; [`Passing::finish`] counts and
//! records the call as [`Mediator::handle`] does. A call the core would
//! not pass through (a router of the user's, a broadcast, a node of
//! another scheme or instance, or any refusal) gets `None` and nothing is
//! counted: the transport hands it to its full path, which runs
//! [`Mediator::handle`] and answers or refuses it there, so every refusal
//! reads the same whichever way the call came in.
//!
//! [`Envelope`]: crate::Envelope

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;
use tracing::Level;

use super::{body_late, body_unreadable, record_path, unrelayable_status, Opened, Seen};
use crate::budget::BodyReservation;
use crate::context::TraceContext;
use crate::error::{DeliverError, Error};
use crate::inflight::Permit;
use crate::mediator::Mediator;
use crate::model::{Node, NodeId, NodeKey, Target};
use crate::policy::{Credentials, EndpointPolicy};
use crate::record::Outcome;
use crate::router::{Deadline, Passable, Slot, SlotInFlight};

/// The head of a call a transport offers to pass through, as views of its
/// wire: nothing is copied before the core takes the call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PassHead<'a> {
    /// The transport's name, the `transport` label of its requests.
    pub transport: &'static str,
    /// The caller's bearer token.
    pub token: &'a str,
    /// The target: `g/n`, `g/` or `g/?` (a broadcast never passes).
    pub target: &'a str,
    /// The method the node is asked with.
    pub method: Method,
    /// The path and query the node is asked for (only the path is
    /// recorded).
    pub path: &'a str,
    /// The caller's request id, as sent.
    pub request_id: Option<&'a str>,
    /// The caller's `traceparent`, as sent.
    pub traceparent: Option<&'a str>,
    /// The caller's budget for the call.
    pub timeout: Option<Duration>,
    /// Where the call came from.
    pub remote: Option<SocketAddr>,
    /// The body's length, announced before it is read.
    pub body_len: u64,
    /// When the call's head arrived.
    pub arrived: Instant,
}

impl<'a> PassHead<'a> {
    /// A `POST` of `body_len` bytes from the holder of `token` to
    /// `target`, arrived now; set the rest with the fields.
    pub fn new(transport: &'static str, token: &'a str, target: &'a str, body_len: u64) -> Self {
        PassHead {
            transport,
            token,
            target,
            method: Method::POST,
            path: "/",
            request_id: None,
            traceparent: None,
            timeout: None,
            remote: None,
            body_len,
            arrived: Instant::now(),
        }
    }
}

/// A call the core passed through, from its node chosen to its record.
///
/// Tell it how the exchange went, once per node tried:
/// [`replied`](Self::replied), [`unreachable`](Self::unreachable),
/// [`failed`](Self::failed) or [`timed_out`](Self::timed_out); then
/// [`finish`](Self::finish) with the status the caller was answered.
/// Dropped unfinished, the call is neither counted nor recorded.
///
/// ```
/// use mediator_core::inbound::PassHead;
/// use mediator_core::*;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let secret = "a secret of at least 32 bytes!!!";
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256(secret))
///     .token_minter(TokenMinter::hs256(secret))
///     .build()?;
/// let echo = NodeKey::named("app", "echo")?;
/// let at = Endpoint::http("http://127.0.0.1:9")?;
/// mediator
///     .register(&Identity::internal(), Registration::new(echo.clone(), at, Duration::from_secs(60)))
///     .await?;
/// let caller = NodeKey::named("app", "caller")?;
/// let claims = Claims::node(&caller, Timestamp::now(), Duration::from_secs(60));
/// let token = mediator.minter().expect("set").mint(&claims).expect("minted");
///
/// let mut call = mediator
///     .pass(PassHead::new("doc", &token, "app/echo", 2), "http")
///     .expect("a node to pass to");
/// assert_eq!(call.node().key, echo);
/// let deadline = call.send();
/// // ... the transport writes the call to the node and reads its head ...
/// assert!(deadline.remaining() > Duration::ZERO);
/// call.replied(http::StatusCode::OK, false)?;
/// call.finish(200);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
pub struct Passing<'m> {
    mediator: &'m Mediator,
    call: Opened,
    target: Target,
    slot: Arc<Slot>,
    tried: Vec<NodeId>,
    turn: Option<usize>,
    scheme: String,
    /// The caller's budget.
    timeout: Option<Duration>,
    deadline: Option<Deadline>,
    /// When the delivery to the current node started.
    sent_at: Option<std::time::Instant>,
    in_flight: Option<SlotInFlight>,
    _permit: Permit<'m>,
    _reservation: BodyReservation,
}

impl std::fmt::Debug for Passing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passing")
            .field("target", &self.target)
            .field("node", &self.slot.node.key)
            .finish_non_exhaustive()
    }
}

impl Mediator {
    /// Takes a call to pass through to a node of `scheme` (see
    /// [`Passing`]): its caller authenticated and authorized, its body
    /// within [`Limits::max_body`](crate::Limits::max_body) and held in the
    /// body budget, admitted under the bounds on deliveries in flight, and
    /// its node chosen. `None` when the call is not for a pass-through or
    /// would be refused: nothing was counted, and the transport's full
    /// path runs it.
    pub fn pass(&self, head: PassHead<'_>, scheme: &str) -> Option<Passing<'_>> {
        let (router, only) = self.default_router();
        let limits = self.limits();
        if !only || head.body_len > limits.max_body as u64 || head.timeout == Some(Duration::ZERO) {
            return None;
        }
        let target: Target = head.target.parse().ok()?;
        if matches!(target, Target::All(_)) {
            return None;
        }
        let identity = self.authenticate(&Credentials::Bearer(head.token)).ok()?;
        self.authorize(&identity, &target).ok()?;
        let mut turn = None;
        let Passable::Node(slot) = router.passable(&target, scheme, &[], &mut turn) else {
            return None;
        };
        let permit = self.admit(&identity, 1).ok()?;
        let mut reservation = self.body_budget().reserve();
        // Within max_body, which is within usize.
        reservation.grow(head.body_len as usize).ok()?;
        let mut seen = Seen {
            route: Some(match target {
                Target::Any(_) => "any",
                _ => "one",
            }),
            ..Seen::default()
        };
        if self.request_log().enabled(Level::WARN) {
            seen.path = Some(record_path(head.target, head.path));
        }
        seen.sender = Some(identity);
        Some(Passing {
            mediator: self,
            call: Opened {
                transport: head.transport,
                arrived: head.arrived,
                remote: head.remote,
                method: head.method,
                target: head.target.to_owned(),
                trace: TraceContext::accept(head.request_id, head.traceparent),
                seen,
            },
            target,
            slot,
            tried: Vec::new(),
            turn,
            scheme: scheme.to_owned(),
            timeout: head.timeout,
            deadline: None,
            sent_at: None,
            in_flight: None,
            _permit: permit,
            _reservation: reservation,
        })
    }
}

impl<'m> Passing<'m> {
    /// The ids the call goes by, which the node and the answer carry.
    pub fn trace(&self) -> &TraceContext {
        &self.call.trace
    }

    /// The node the call goes to now.
    pub fn node(&self) -> &Node {
        &self.slot.node
    }

    /// The target the caller addressed, which the node is told.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The verified sender the node is told, if the caller's token names
    /// one.
    pub fn from(&self) -> Option<&NodeKey> {
        let sender = self.call.seen.sender.as_ref()?;
        sender.key.as_ref().filter(|_| sender.verified)
    }

    /// The endpoint policy a connection to the node is judged by, as a
    /// delivery's [`RequestContext::endpoints`](crate::RequestContext::endpoints) is.
    pub fn endpoints(&self) -> &'m Arc<EndpointPolicy> {
        self.mediator.shared_endpoint_policy()
    }

    /// By when the body must have arrived: the mediator's deadline,
    /// counted from the call's arrival, as for a body the core reads.
    pub fn read_by(&self) -> Instant {
        self.call.arrived + self.mediator.limits().deadline
    }

    /// The refusal of a body that could not be read (`400`).
    pub fn body_unreadable(&self, why: impl std::fmt::Display) -> Error {
        body_unreadable(why)
    }

    /// The refusal of a body that did not arrive by [`read_by`](Self::read_by) (`408`).
    pub fn body_late(&self) -> Error {
        body_late(self.read_by().saturating_duration_since(self.call.arrived))
    }

    /// Starts the delivery to the current node, its body in hand: the
    /// call's deadline (the caller's budget, at most the mediator's) runs
    /// from the first delivery, and the node counts the call in flight.
    pub fn send(&mut self) -> Deadline {
        let deadline = *self.deadline.get_or_insert_with(|| {
            let most = self.mediator.limits().deadline;
            let budget = self.timeout.map_or(most, |t| t.min(most));
            Deadline::starting(self.mediator.clock().now(), budget)
        });
        self.sent_at = Some(std::time::Instant::now());
        self.in_flight = Some(SlotInFlight::new(Arc::clone(&self.slot)));
        deadline
    }

    fn ended(&mut self, outcome: Outcome) {
        let latency = self.sent_at.take().map(|t| t.elapsed()).unwrap_or_default();
        self.in_flight = None;
        let (router, _) = self.mediator.default_router();
        router.record(&self.slot.node, &self.target, outcome, latency);
        self.call.seen.node = Some(self.slot.node.key.clone());
    }

    /// The node answered with `status` (`located`: with a `Location`):
    /// the refusal when that reply may not reach the caller (a redirect,
    /// a status that is no final answer).
    pub fn replied(&mut self, status: StatusCode, located: bool) -> Result<(), Error> {
        self.ended(Outcome::Replied(status));
        match unrelayable_status(&self.slot.node.key, status, located) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Nothing of the call reached the node (`why`): for an any-of-group
    /// call, another node of the group is chosen (`Ok`, send again);
    /// otherwise the refusal to answer with.
    pub fn unreachable(&mut self, why: impl Into<String>) -> Result<(), Error> {
        let why = why.into();
        self.ended(Outcome::Unreachable);
        let node = self.slot.node.key.to_string();
        let Target::Any(group) = &self.target else {
            return Err(Error::NodeUnreachable {
                node,
                source: DeliverError::unreachable(why),
            });
        };
        tracing::debug!(node, error = %why, "trying another node of the group");
        self.tried.push(self.slot.node.id);
        let (router, _) = self.mediator.default_router();
        let last = || Error::NodeUnreachable {
            node: node.clone(),
            source: DeliverError::unreachable(why.clone()),
        };
        match router.passable(&self.target, &self.scheme, &self.tried, &mut self.turn) {
            Passable::Node(slot) => {
                self.slot = slot;
                Ok(())
            }
            Passable::NoneLeft => Err(Error::NoNodeAvailable(format!(
                "{group} (every live node unreachable; last: {})",
                last()
            ))),
            // The group's next node is one this transport cannot reach
            // itself (another scheme or instance): the call already left
            // the full path, so it ends here.
            Passable::No => Err(Error::NoNodeAvailable(format!(
                "{group} (no other node reachable this way; last: {})",
                last()
            ))),
        }
    }

    /// The node was reached but the exchange failed (`why`).
    pub fn failed(&mut self, why: impl Into<String>) -> Error {
        self.ended(Outcome::Failed);
        Error::NodeFailed {
            node: self.slot.node.key.to_string(),
            source: DeliverError::failed(why),
        }
    }

    /// The deadline passed before the node answered.
    pub fn timed_out(&mut self) -> Error {
        self.ended(Outcome::TimedOut);
        Error::DeadlinePassed {
            node: self.slot.node.key.to_string(),
            after: self.deadline.map(|d| d.budget()).unwrap_or_default(),
        }
    }

    /// The call answered with `status`: counted under its transport and
    /// route and recorded, as every call is.
    pub fn finish(self, status: u16) {
        let Passing {
            mediator,
            call,
            in_flight,
            _permit,
            _reservation,
            ..
        } = self;
        drop(in_flight);
        drop(_reservation);
        drop(_permit);
        mediator.transport_stats().passed();
        mediator.conclude(call, status);
    }
}
