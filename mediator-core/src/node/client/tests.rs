//! The generic client over an in-process wire: real sealing, tokens and
//! leases on a manual clock, every reply shape and error.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::node::{Backoff, Delivered, Incoming, Responder, TOKEN_LIFETIME};
use crate::{Authenticator, ErrorBody, Fault, KeyRing, ManualClock, SealKey, Timestamp};

/// What the wire was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Join,
    Renew,
    Leave,
}

/// A mediator in memory: delivers every request to `node` (when given),
/// answers registrations as told, and loses the join when told.
#[derive(Debug)]
struct Fake {
    caller: Option<NodeKey>,
    node: Option<Responder>,
    events: Mutex<Vec<Event>>,
    /// Tokens and bodies of the requests sent.
    sent: Mutex<Vec<(String, Bytes)>>,
    /// What `send` answers instead of delivering, first in first out.
    replies: Mutex<VecDeque<WireReply>>,
    renewals: Mutex<VecDeque<Result<Renewal, ClientError>>>,
    joins: Mutex<VecDeque<Result<Joined, ClientError>>>,
    lose: tokio::sync::Mutex<mpsc::UnboundedReceiver<Lost>>,
    /// A `send` that never answers.
    hang: bool,
}

struct Handle {
    lose: mpsc::UnboundedSender<Lost>,
}

fn fake(caller: Option<NodeKey>, node: Option<Responder>) -> (Fake, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Fake {
            caller,
            node,
            events: Mutex::default(),
            sent: Mutex::default(),
            replies: Mutex::default(),
            renewals: Mutex::default(),
            joins: Mutex::default(),
            lose: tokio::sync::Mutex::new(rx),
            hang: false,
        },
        Handle { lose: tx },
    )
}

impl Fake {
    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    fn count(&self, event: &Event) -> usize {
        self.events().iter().filter(|e| *e == event).count()
    }
}

#[async_trait]
impl Wire for Fake {
    async fn send(&self, request: WireRequest<'_>) -> Result<WireReply, ClientError> {
        self.sent
            .lock()
            .expect("sent")
            .push((request.tokens.token()?, request.body.clone()));
        if self.hang {
            std::future::pending::<()>().await;
        }
        if let Some(reply) = self.replies.lock().expect("replies").pop_front() {
            return Ok(reply);
        }
        let node = self.node.as_ref().expect("a node to deliver to");
        let target = request.target.to_string();
        let from = self.caller.as_ref().map(ToString::to_string);
        let (path, query) = match request.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (request.path, None),
        };
        let delivered = Delivered::new(request.method.clone(), path, &request.body)
            .with_target(target.as_str())
            .with_from(from.as_deref())
            .with_query(query);
        let name = node.node().to_string();
        let reply = match node.answer(delivered, Timestamp::now()).await {
            Ok(sealed) => WireReply::Answered {
                node: name.clone(),
                status: 200,
                body: Bytes::from(sealed),
            },
            Err(e) => WireReply::Refused {
                node: Some(name.clone()),
                status: e.status(),
                error: ErrorBody::from(&e),
            },
        };
        Ok(match request.target {
            Target::All(_) => WireReply::Broadcast {
                entries: vec![WireEntry {
                    node: name,
                    id: None,
                    reply,
                }],
                summary: None,
            },
            _ => reply,
        })
    }

    async fn join(&self, _join: &Join) -> Result<Joined, ClientError> {
        self.events.lock().expect("events").push(Event::Join);
        self.joins
            .lock()
            .expect("joins")
            .pop_front()
            .unwrap_or(Ok(Joined::leased(TTL)))
    }

    async fn renew(&self, _join: &Join) -> Result<Renewal, ClientError> {
        self.events.lock().expect("events").push(Event::Renew);
        self.renewals
            .lock()
            .expect("renewals")
            .pop_front()
            .unwrap_or(Ok(Renewal::Renewed(TTL)))
    }

    async fn lost(&self) -> Lost {
        match self.lose.lock().await.recv().await {
            Some(lost) => lost,
            None => std::future::pending().await,
        }
    }

    async fn leave(&self, _join: &Join) -> Result<(), ClientError> {
        self.events.lock().expect("events").push(Event::Leave);
        Ok(())
    }
}

const TTL: Duration = Duration::from_secs(30);
const QUICK: Backoff = Backoff {
    initial: Duration::from_millis(10),
    max: Duration::from_millis(40),
};

fn key(s: &str) -> NodeKey {
    s.parse().expect("key")
}

fn ring() -> KeyRing {
    KeyRing::new(SealKey::generate())
}

/// Node `users/api`: greets, refuses an empty name.
fn api(ring: &KeyRing) -> Responder {
    Responder::new(
        key("users/api"),
        ring.clone(),
        |request: Incoming| async move {
            if request.body.is_empty() {
                return Err(Error::refused(400, "no_name", "whom?"));
            }
            let mut reply =
                format!("{} {}: ", request.target, request.query.unwrap_or_default()).into_bytes();
            reply.extend_from_slice(&request.body);
            Ok(Bytes::from(reply))
        },
    )
}

fn builder(ring: &KeyRing) -> NodeClientBuilder {
    NodeClientBuilder::new()
        .node_key(key("billing/w1"))
        .token("t")
        .keys(ring.clone())
        .backoff(QUICK)
}

/// Lets the keeper run until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn calls_are_sealed_for_their_target_and_replies_opened() {
    let ring = ring();
    let (wire, _h) = fake(Some(key("billing/w1")), Some(api(&ring)));
    let client = builder(&ring).connect(wire).await.expect("connects");

    let reply = client
        .call(key("users/api"), "greet?x=1", "ada")
        .await
        .expect("call");
    assert_eq!(reply, "users/api x=1: ada");
    let (who, reply) = client.any("users", "/greet", "bob").await.expect("any");
    assert_eq!(
        (who, reply),
        (key("users/api"), Bytes::from("users/? : bob"))
    );
    let all = client
        .broadcast("users", "/greet", "all")
        .await
        .expect("broadcast");
    assert_eq!(all.replies.len(), 1);
    assert_eq!(
        all.successes().next().map(|(_, b)| b.clone()),
        Some(Bytes::from("users/* : all"))
    );
    // Counted from the entries: the fake sends no summary.
    assert_eq!((all.summary.asked, all.summary.answered), (1, 1));

    // What travelled was sealed, never the plain payload.
    for (_, body) in client.wire().sent.lock().expect("sent").iter() {
        assert!(!body
            .windows(3)
            .any(|w| w == b"ada" || w == b"bob" || w == b"all"));
    }
    // Sealed as another sender, the request does not open at the node.
    let (wire, _h) = fake(Some(key("billing/w2")), Some(api(&ring)));
    let client = builder(&ring).connect(wire).await.expect("connects");
    let e = client
        .call(key("users/api"), "/greet", "x")
        .await
        .expect_err("sealed");
    assert!(
        matches!(&e, ClientError::Node { status: 400, kind, .. } if kind == "sealed"),
        "{e:?}"
    );

    // Refused by the node: its status and kind, as the node's fault.
    let (wire, _h) = fake(Some(key("billing/w1")), Some(api(&ring)));
    let client = builder(&ring).connect(wire).await.expect("connects");
    let e = client
        .call(key("users/api"), "/greet", "")
        .await
        .expect_err("refused");
    assert_eq!(
        (e.status(), e.kind(), e.fault()),
        (Some(400), Some("no_name"), Some(Fault::Node))
    );
    let bad = client
        .call(key("users/api"), "/a b", "x")
        .await
        .expect_err("path");
    assert_eq!(bad.kind(), Some("invalid"));
}

#[tokio::test]
async fn replies_are_checked_and_errors_read() {
    let ring = ring();
    let (wire, _h) = fake(Some(key("billing/w1")), None);
    let client = builder(&ring).connect(wire).await.expect("connects");
    let push = |reply: WireReply| {
        client
            .wire()
            .replies
            .lock()
            .expect("replies")
            .push_back(reply);
    };

    push(WireReply::Refused {
        node: None,
        status: 503,
        error: ErrorBody::new("none left", "no_node_available", Fault::Hub),
    });
    let e = client.any("users", "/", "x").await.expect_err("mediator");
    assert!(
        matches!(&e, ClientError::Mediator { status: 503, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // Another node than the one asked.
    push(WireReply::Answered {
        node: "users/db".into(),
        status: 200,
        body: Bytes::new(),
    });
    let e = client
        .call(key("users/api"), "/", "x")
        .await
        .expect_err("misrouted");
    assert!(
        matches!(&e, ClientError::Protocol(m) if m.contains("users/db")),
        "{e:?}"
    );

    // A node's error answer in any shape: its body says why.
    push(WireReply::Answered {
        node: "users/api".into(),
        status: 409,
        body: Bytes::from(r#"{"error":"taken","kind":"conflict","fault":"caller"}"#),
    });
    let e = client
        .call(key("users/api"), "/", "x")
        .await
        .expect_err("node");
    assert!(
        matches!(&e, ClientError::Node { status: 409, kind, message, .. } if kind == "conflict" && message == "taken"),
        "{e:?}"
    );

    // A reply that is not sealed for this caller does not open.
    push(WireReply::Answered {
        node: "users/api".into(),
        status: 200,
        body: Bytes::from("plain"),
    });
    let e = client
        .call(key("users/api"), "/", "x")
        .await
        .expect_err("unsealed");
    assert_eq!(e.kind(), Some("sealed"));

    // A broadcast: per-node results and the mediator's own summary.
    push(WireReply::Broadcast {
        entries: vec![
            WireEntry {
                node: "cache/a".into(),
                id: Some(crate::NodeId(1)),
                reply: WireReply::Refused {
                    node: None,
                    status: 504,
                    error: ErrorBody::new("late", "deadline_passed", Fault::Node),
                },
            },
            WireEntry {
                node: "cache/b".into(),
                id: None,
                reply: WireReply::Refused {
                    node: Some("cache/b".into()),
                    status: 418,
                    error: ErrorBody::new("tea", "teapot", Fault::Caller),
                },
            },
        ],
        summary: None,
    });
    let all = client
        .broadcast("cache", "/", "x")
        .await
        .expect("broadcast");
    assert_eq!(
        (
            all.summary.asked,
            all.summary.answered,
            all.summary.failed,
            all.summary.timed_out
        ),
        (2, 1, 0, 1)
    );
    assert!(matches!(
        &all.replies[0].result,
        Err(ClientError::Mediator { status: 504, .. })
    ));
    assert!(matches!(
        &all.replies[1].result,
        Err(ClientError::Node { status: 418, .. })
    ));
    assert_eq!(all.replies[0].id, Some(crate::NodeId(1)));

    // The whole broadcast refused.
    push(WireReply::Refused {
        node: None,
        status: 404,
        error: ErrorBody::new("no group", "unknown_target", Fault::Caller),
    });
    let e = client
        .broadcast("cache", "/", "x")
        .await
        .expect_err("refused");
    assert_eq!(e.status(), Some(404));
}

#[tokio::test(start_paused = true)]
async fn a_call_without_an_answer_times_out() {
    let ring = ring();
    let (mut wire, _h) = fake(Some(key("billing/w1")), None);
    wire.hang = true;
    let client = builder(&ring)
        .timeout(Duration::from_millis(100))
        .connect(wire)
        .await
        .expect("connects");
    let e = client
        .call(key("users/api"), "/", "x")
        .await
        .expect_err("timeout");
    assert!(
        matches!(e, ClientError::Timeout { after, .. } if after == Duration::from_millis(100) + GRACE),
        "{e:?}"
    );
}

#[tokio::test]
async fn minted_tokens_follow_the_builders_clock() {
    let ring = ring();
    let auth = Authenticator::hs256("a test secret that is long enough");
    // Far from the system time: a token minted on the system clock would
    // be refused at this clock's time.
    let clock = ManualClock::new(Timestamp::from_millis(2_000_000_000_000));
    let (wire, _h) = fake(Some(key("billing/w1")), Some(api(&ring)));
    let client = NodeClientBuilder::new()
        .node_key(key("billing/w1"))
        .token_minter(auth.minter().expect("mints"))
        .keys(ring.clone())
        .clock(clock.clone())
        .connect(wire)
        .await
        .expect("connects");
    client.call(key("users/api"), "/", "a").await.expect("call");
    clock.advance(Duration::from_secs(60));
    client.call(key("users/api"), "/", "b").await.expect("call");
    clock.advance(TOKEN_LIFETIME);
    client.call(key("users/api"), "/", "c").await.expect("call");
    let tokens: Vec<String> = client
        .wire()
        .sent
        .lock()
        .expect("sent")
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(tokens[0], tokens[1], "cached while valid");
    assert_ne!(tokens[1], tokens[2], "minted again once expired");
    let who = auth
        .authenticate(&tokens[2], clock.now())
        .expect("valid on the client's clock");
    assert!(who.is_node(&key("billing/w1")));
    assert!(auth.authenticate(&tokens[0], clock.now()).is_err());
}

#[tokio::test]
async fn a_started_node_renews_rejoins_and_backs_off_on_its_clock() {
    let ring = ring();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let (wire, _h) = fake(None, None);
    wire.renewals.lock().expect("renewals").extend([
        Ok(Renewal::Renewed(TTL)),
        Ok(Renewal::Forgotten),
        Err(ClientError::Unreachable {
            peer: "fake".into(),
            reason: "down".into(),
        }),
    ]);
    wire.joins.lock().expect("joins").extend([
        Ok(Joined::leased(TTL)),
        Ok(Joined::leased(TTL)),
        Err(ClientError::Unreachable {
            peer: "fake".into(),
            reason: "down".into(),
        }),
    ]);
    let node = builder(&ring)
        .identity("users", Some("api"))
        .ttl(TTL)
        .clock(clock.clone())
        .start(wire, |r: Incoming| async move { Ok::<_, Error>(r.body) })
        .await
        .expect("starts");
    let wire = node.wire();
    assert_eq!(wire.events(), [Event::Join]);
    // Nothing happens until the clock says so.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(wire.count(&Event::Renew), 0);

    // A third of the lease on: renewed.
    clock.advance(TTL / 3);
    until("a renewal", || wire.count(&Event::Renew) == 1).await;
    // Next: forgotten, so it registers again at once.
    clock.advance(TTL / 3);
    until("forgotten, joined again", || wire.count(&Event::Join) == 2).await;
    // Next renewal fails: it joins again after a backoff, which fails
    // too, then succeeds.
    clock.advance(TTL / 3);
    until("a failed renewal", || wire.count(&Event::Renew) == 3).await;
    until("joins after backoff", || {
        clock.advance(QUICK.max);
        wire.count(&Event::Join) >= 4
    })
    .await;
    assert_eq!(
        wire.events(),
        [
            Event::Join,
            Event::Renew,
            Event::Renew,
            Event::Join,
            Event::Renew,
            Event::Join,
            Event::Join
        ]
    );

    node.shutdown().await.expect("leaves");
    assert_eq!(node.wire().events().last(), Some(&Event::Leave));
    // Once only.
    node.shutdown().await.expect("nothing to do");
    assert_eq!(node.wire().count(&Event::Leave), 1);
}

#[tokio::test]
async fn a_held_join_waits_for_its_loss_and_stops_when_superseded() {
    let ring = ring();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let (wire, handle) = fake(None, None);
    wire.joins
        .lock()
        .expect("joins")
        .extend([Ok(Joined::held()), Ok(Joined::held())]);
    let node = builder(&ring)
        .identity("users", Some("api"))
        .clock(clock.clone())
        .start(wire, |r: Incoming| async move { Ok::<_, Error>(r.body) })
        .await
        .expect("starts");
    // Held by the wire: no renewals however much time passes.
    clock.advance(TTL * 10);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(node.wire().events(), [Event::Join]);

    // Lost: joins again after a backoff on the clock.
    handle
        .lose
        .send(Lost::Dropped("closed".into()))
        .expect("send");
    until("joined again", || {
        clock.advance(QUICK.max);
        node.wire().count(&Event::Join) == 2
    })
    .await;

    // Superseded: never joins again.
    handle
        .lose
        .send(Lost::Superseded("newer".into()))
        .expect("send");
    for _ in 0..20 {
        clock.advance(TTL);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(node.wire().count(&Event::Join), 2);
}

#[tokio::test]
async fn settings_are_checked_before_anything_starts() {
    let ring = ring();
    let check = |builder: NodeClientBuilder, says: &'static str| async move {
        let (wire, _h) = fake(None, None);
        let e = builder
            .start(wire, |r: Incoming| async move { Ok::<_, Error>(r.body) })
            .await
            .expect_err(says);
        assert!(
            matches!(&e, ClientError::Core(Error::Config(m)) if m.contains(says)),
            "{e:?}"
        );
    };
    check(
        NodeClientBuilder::new().token("t").keys(ring.clone()),
        ".identity",
    )
    .await;
    check(
        NodeClientBuilder::new().identity("g", Some("n")).token("t"),
        ".keys",
    )
    .await;
    check(
        NodeClientBuilder::new()
            .identity("g", Some("n"))
            .keys(ring.clone()),
        ".token",
    )
    .await;
    check(
        builder(&ring)
            .identity("g", Some("n"))
            .ttl(Duration::from_millis(10)),
        "ttl",
    )
    .await;
    check(
        builder(&ring)
            .identity("g", Some("n"))
            .timeout(Duration::ZERO),
        "timeouts",
    )
    .await;
    check(
        builder(&ring).identity("g", Some("n")).backoff(Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }),
        "backoff",
    )
    .await;
    let (wire, _h) = fake(None, None);
    let e = NodeClientBuilder::new()
        .identity("a b", None)
        .token("t")
        .keys(ring)
        .connect(wire)
        .await
        .expect_err("bad key");
    assert_eq!(e.kind(), Some("invalid"));
}
