//! What a transport does for the node client: the [`Wire`] trait and the
//! requests and replies that cross it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;

use crate::clock::Clock;
use crate::error::ErrorBody;
use crate::model::{Meta, NodeId, NodeKey, Target};
use crate::router::Summary;
use crate::time::Timestamp;

use super::super::{ClientError, Responder, TokenSource};

/// One transport's part of a node client: how a sealed request reaches
/// the mediator and its reply comes back, and how the node becomes (and
/// stays) reachable for deliveries.
///
/// The rich client ([`NodeClient`](super::NodeClient): its builder, token
/// source, sealing, lease keeping, `call`/`any`/`broadcast` and errors) is
/// written once over this trait; a transport implements only its wire.
///
/// - [`send`](Self::send) carries one request whose body is already
///   sealed, and returns the reply as the mediator framed it.
/// - [`join`](Self::join) makes the node reachable: for a started node it
///   accepts deliveries, answering them with the [`Member`]'s
///   [`Responder`], and registers (or attaches); for a sender it only
///   prepares to call. [`renew`](Self::renew) keeps a lease the wire
///   returned; [`lost`](Self::lost) says when what `join` set up is gone
///   (a connection closed), after which the client joins again with
///   backoff; [`leave`](Self::leave) deregisters and stops accepting.
///
/// A `join` that fails leaves nothing running that it started.
#[async_trait]
pub trait Wire: Send + Sync + 'static {
    /// Sends one sealed request through the mediator and reads its reply.
    ///
    /// A reply the mediator or a node gave, whatever its status, is
    /// `Ok`; `Err` is for a request that got no reply (unreachable, broke
    /// off) or a reply that does not follow the protocol.
    async fn send(&self, request: WireRequest<'_>) -> Result<WireReply, ClientError>;

    /// Makes the node reachable as [`Join::node`] says (or, without one,
    /// ready to call), and registers it.
    async fn join(&self, join: &Join) -> Result<Joined, ClientError>;

    /// Renews the lease of the last successful [`join`](Self::join), which
    /// returned one.
    ///
    /// The default answers [`Renewal::Forgotten`], so the client joins
    /// again each time the lease is due: right for a wire whose join is
    /// also its renewal.
    async fn renew(&self, join: &Join) -> Result<Renewal, ClientError> {
        let _ = join;
        Ok(Renewal::Forgotten)
    }

    /// Returns once what the last successful [`join`](Self::join) set up
    /// is gone (a connection closed). The default never returns: a wire
    /// whose registration lives at the mediator loses nothing but its
    /// lease, which [`renew`](Self::renew) tells.
    async fn lost(&self) -> Lost {
        std::future::pending().await
    }

    /// Deregisters the node (when it joined as one) and stops accepting
    /// deliveries. Called once, when the client shuts down; it stops
    /// accepting even when deregistering fails.
    async fn leave(&self, join: &Join) -> Result<(), ClientError>;
}

/// One request, as the client hands it to its [`Wire`].
#[derive(Debug)]
#[non_exhaustive]
pub struct WireRequest<'a> {
    /// The node or nodes it is for.
    pub target: &'a Target,
    /// The method the receiving node sees.
    pub method: &'a Method,
    /// The path at the node, starting with `/`, with its query if any.
    pub path: &'a str,
    /// The sealed payload.
    pub body: Bytes,
    /// How long the caller waits, from now; the mediator is asked to keep
    /// to it (and to name the node that was slow).
    pub timeout: Duration,
    /// When the caller stops waiting, on the client's clock.
    pub deadline: Timestamp,
    /// The credentials to present with it.
    pub tokens: &'a TokenSource,
}

/// A reply as a [`Wire`] read it.
#[derive(Debug, Clone)]
pub enum WireReply {
    /// A node answered: with a sealed reply when `status` is a success,
    /// else with its error (an [`ErrorBody`], or any text; see
    /// [`read_error_body`]).
    Answered {
        /// The node that answered (`group/name`), as the mediator said.
        node: String,
        /// Its status.
        status: u16,
        /// Its body.
        body: Bytes,
    },
    /// A refusal: the node's own (`node` names it) or the mediator's
    /// (`node` is `None`; no node answered).
    Refused {
        /// The node that refused, when it was one.
        node: Option<String>,
        /// The status.
        status: u16,
        /// Why.
        error: ErrorBody,
    },
    /// The answer to a broadcast: one entry per node asked, in the
    /// mediator's order, and its summary when it sent one (else the
    /// client counts the entries).
    Broadcast {
        /// Each node's reply.
        entries: Vec<WireEntry>,
        /// The mediator's counts.
        summary: Option<Summary>,
    },
}

/// One node's part of a broadcast, as a [`Wire`] read it.
#[derive(Debug, Clone)]
pub struct WireEntry {
    /// The node (`group/name`).
    pub node: String,
    /// Its registration id, when the mediator said.
    pub id: Option<NodeId>,
    /// Its reply: [`WireReply::Answered`], or [`WireReply::Refused`] by
    /// the node or, when it has no reply, by the mediator.
    pub reply: WireReply,
}

/// What a [`Wire::join`] is asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Join {
    /// The client's credentials.
    pub tokens: Arc<TokenSource>,
    /// The node to make reachable; `None` for a client that only calls.
    pub node: Option<Member>,
}

/// A node that answers: what it registers as and how it answers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Member {
    /// Its key.
    pub key: NodeKey,
    /// The lease to ask for.
    pub ttl: Duration,
    /// The metadata to register.
    pub meta: Meta,
    /// Opens each delivery, runs the node's handler and seals its reply.
    pub responder: Responder,
    /// The largest delivered body to read; longer ones are refused (413).
    pub max_body: usize,
    /// The clock a delivery's deadline is read against (the client's).
    pub clock: Arc<dyn Clock>,
}

/// How a [`Wire::join`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Joined {
    /// The lease the mediator granted, which the client renews at a third
    /// of it; `None` when the wire keeps the registration alive itself
    /// (while a connection lives) and tells [`lost`](Wire::lost) when it
    /// no longer does.
    pub lease: Option<Duration>,
}

impl Joined {
    /// A registration holding a lease of `lease`, to renew.
    pub fn leased(lease: Duration) -> Joined {
        Joined { lease: Some(lease) }
    }

    /// A registration (or a caller's connection) the wire holds by itself.
    pub fn held() -> Joined {
        Joined { lease: None }
    }
}

/// How a [`Wire::renew`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed, with this lease granted.
    Renewed(Duration),
    /// The mediator does not know the node (it restarted, or evicted
    /// it): join again at once.
    Forgotten,
}

/// Why what a [`Wire::join`] set up is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Lost (connection closed, network): join again with backoff.
    Dropped(String),
    /// Replaced by a newer registration of the same node: joining again
    /// would only take it back, so the client stops keeping it.
    Superseded(String),
}

/// The most of a body that is not an error body that an error repeats.
const QUOTED: usize = 300;

/// Reads an error answer's body leniently: an [`ErrorBody`] when it is
/// one with a message, else the body's text (shortened, `(no body)` when
/// empty) with kind `unknown` and no fault, so a proxy's page still says
/// something.
///
/// ```
/// use mediator_core::node::read_error_body;
/// use mediator_core::Fault;
///
/// let e = read_error_body(br#"{"error":"no node available","kind":"no_node_available","fault":"hub"}"#);
/// assert_eq!((e.error.as_str(), e.kind.as_str(), e.fault), ("no node available", "no_node_available", Some(Fault::Hub)));
/// let e = read_error_body(b"<html>login</html>");
/// assert_eq!((e.error.as_str(), e.kind.as_str(), e.fault), ("<html>login</html>", "unknown", None));
/// assert_eq!(read_error_body(b"").error, "(no body)");
/// ```
pub fn read_error_body(body: &[u8]) -> ErrorBody {
    let parsed = ErrorBody::parse(body);
    let (kind, fault) = match &parsed {
        Some(parsed) => (parsed.kind.clone(), parsed.fault),
        None => ("unknown".to_owned(), None),
    };
    let message = match parsed {
        Some(parsed) if !parsed.error.is_empty() => parsed.error,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(no body)".to_owned()
            } else if text.len() > QUOTED {
                let mut end = QUOTED;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &text[..end])
            } else {
                text.to_owned()
            }
        }
    };
    ErrorBody {
        error: message,
        kind,
        fault,
    }
}
