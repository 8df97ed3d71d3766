//! One request lifecycle for every way in: the same table of calls made
//! over HTTP, over QUIC and over the in-process channel transport gets the
//! same outcome, the same request record and the same counts from each,
//! told apart only by the transport's label.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::Incoming;
use mediator_core::request_log::{RequestLog, RequestRecord};
use mediator_core::{
    Authenticator, Claims, Endpoint, Error, Identity, KeyRing, Limits, Mediator, MemoryRegistry,
    NodeKey, Registration, SealKey, Target, Timestamp, TokenMinter,
};
use mediator_examples::channel::{ChannelHub, ChannelNode};
use mediator_transport_http::{HttpDelivery, HttpListener, MediatorService, NodeClient};
use mediator_transport_quic::{QuicListener, QuicNodeClient, ServerTls};

const SECRET: &str = "a secret of at least 32 bytes, for the lifecycle table";
const MAX_BODY: usize = 64 * 1024;

/// A request record as kept: every field the line writes but the ids and
/// the duration, which differ from call to call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    transport: String,
    level: tracing::Level,
    message: String,
    method: String,
    path: String,
    sender: Option<String>,
    target: Option<String>,
    node: Option<String>,
    status: u16,
    has_ids: bool,
}

#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<Kept>>>);

impl Records {
    fn take(&self) -> Vec<Kept> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl RequestLog for Records {
    fn record(&self, record: &RequestRecord<'_>) {
        let kept = Kept {
            transport: record.transport.unwrap_or("-").to_owned(),
            level: record.level,
            message: record.message.to_owned(),
            method: record.method.to_string(),
            path: record.path.to_owned(),
            sender: record.sender.map(str::to_owned),
            target: record.target.map(|t| t.to_string()),
            node: record.node.map(str::to_owned),
            status: record.status,
            has_ids: !record.request_id.is_empty() && record.trace_id.is_some(),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(kept);
    }
}

fn key(text: &str) -> NodeKey {
    text.parse().expect("a valid key")
}

/// A caller on one transport: sends `body` to `target` at `path` and
/// returns the status it got (200 with the opened reply's text on
/// success).
enum Caller {
    Http(NodeClient),
    Quic(QuicNodeClient),
    Channel(ChannelNode),
}

impl Caller {
    fn transport(&self) -> &'static str {
        match self {
            Caller::Http(_) => "http",
            Caller::Quic(_) => "quic",
            Caller::Channel(_) => "channel",
        }
    }

    async fn call(&self, target: &str, path: &str, body: Bytes) -> (u16, String) {
        let outcome = match self {
            Caller::Http(client) => client
                .call(key(target), path, body)
                .await
                .map_err(|e| (e.status(), e.to_string())),
            Caller::Quic(client) => client
                .call(key(target), path, body)
                .await
                .map_err(|e| (e.status(), e.to_string())),
            Caller::Channel(node) => node
                .call(Target::One(key(target)), path, &body)
                .await
                .map_err(|e: Error| (Some(e.status()), e.to_string())),
        };
        match outcome {
            Ok(reply) => (200, String::from_utf8_lossy(&reply).into_owned()),
            Err((status, message)) => (status.unwrap_or(0), message),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_runs_a_call_through_the_same_lifecycle() {
    let records = Records::default();
    let channels = ChannelHub::default();
    let mut limits = Limits::default();
    limits.max_body = MAX_BODY;
    limits.deadline = Duration::from_millis(600);
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(channels.clone())
        .deliver(HttpDelivery::default())
        .limits(limits)
        .request_log(records.clone())
        .build()
        .expect("mediator");
    let keys = KeyRing::new(SealKey::generate());
    let minter = TokenMinter::hs256(SECRET);
    let token = |who: &str, scope: Option<&str>| {
        let mut claims = Claims::node(&key(who), Timestamp::now(), Duration::from_secs(600));
        if let Some(scope) = scope {
            claims = claims.with_scope(vec![scope.to_owned()]);
        }
        minter.mint(&claims).expect("token")
    };

    // The nodes called: in-process, so that only the callers' transports differ.
    let _api = ChannelNode::builder(&channels, &mediator, key("users/api"), keys.clone())
        .start(&token("users/api", None), |request: Incoming| async move {
            Ok::<_, Error>(Bytes::from(format!(
                "api got {}",
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .expect("api");
    let _slow = ChannelNode::builder(&channels, &mediator, key("users/slow"), keys.clone())
        .start(&token("users/slow", None), |_: Incoming| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, Error>(Bytes::from_static(b"too late"))
        })
        .await
        .expect("slow");
    // A node whose process is gone: nothing listens at its address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_at = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    mediator
        .register(
            &Identity::internal(),
            Registration::new(
                key("users/dead"),
                Endpoint::http(&dead_at).expect("endpoint"),
                Duration::from_secs(600),
            ),
        )
        .await
        .expect("register");

    // The ways in.
    let http = HttpListener::bind("127.0.0.1:0").await.expect("http");
    let http_url = format!("http://{}", http.local_addr());
    tokio::spawn(http.serve(MediatorService::new(mediator.clone())));
    let tls = ServerTls::self_signed(&["localhost"]).expect("tls");
    let quic = QuicListener::bind("127.0.0.1:0".parse().expect("addr"), &tls).expect("quic");
    let quic_addr = quic.local_addr().expect("quic addr");
    mediator
        .add_deliver(quic.delivery())
        .expect("quic delivery");
    let serving = quic.clone();
    let served = mediator.clone();
    tokio::spawn(async move { serving.serve(served).await });

    // Two callers per transport: one that may call the users group, one
    // whose token is limited to another group.
    let mut callers = Vec::new();
    for (who, scope) in [("billing/w1", None), ("billing/w2", Some("billing"))] {
        let tok = token(who, scope);
        let over_http = NodeClient::builder(http_url.clone())
            .node_key(key(who))
            .token(tok.clone())
            .keys(keys.clone())
            .connect()
            .await
            .expect("http caller");
        let over_quic = QuicNodeClient::builder(quic_addr)
            .node_key(key(who))
            .token(tok.clone())
            .keys(keys.clone())
            .pin(tls.fingerprint().as_str())
            .connect()
            .await
            .expect("quic caller");
        let over_channel = ChannelNode::builder(&channels, &mediator, key(who), keys.clone())
            .connect(&tok)
            .expect("channel caller");
        callers.push((
            who,
            [
                Caller::Http(over_http),
                Caller::Quic(over_quic),
                Caller::Channel(over_channel),
            ],
        ));
    }
    records.take();

    let small = Bytes::from_static(b"ada");
    let oversize = Bytes::from(vec![b'x'; MAX_BODY + 1]);
    // (case, caller, target, body, expected status)
    let table: [(&str, &str, &str, &Bytes, u16); 6] = [
        ("a good call", "billing/w1", "users/api", &small, 200),
        (
            "a target outside the token's scope",
            "billing/w2",
            "users/api",
            &small,
            403,
        ),
        ("no such node", "billing/w1", "users/nobody", &small, 404),
        (
            "a body past the limit",
            "billing/w1",
            "users/api",
            &oversize,
            413,
        ),
        (
            "a node slower than the deadline",
            "billing/w1",
            "users/slow",
            &small,
            504,
        ),
        (
            "a node that is gone",
            "billing/w1",
            "users/dead",
            &small,
            502,
        ),
    ];
    let mut lines_by_transport: BTreeMap<&str, Vec<Kept>> = BTreeMap::new();
    for (case, who, target, body, expected) in table {
        let (_, per_transport) = callers
            .iter()
            .find(|(caller, _)| *caller == who)
            .expect("a caller");
        for caller in per_transport {
            let transport = caller.transport();
            let (status, text) = caller.call(target, "/greet", body.clone()).await;
            assert_eq!(status, expected, "{case} over {transport}: {text}");
            if expected == 200 {
                assert_eq!(text, "api got ada", "{case} over {transport}");
            }
            let mut lines = records.take();
            assert_eq!(lines.len(), 1, "{case} over {transport}: {lines:?}");
            let line = lines.remove(0);
            assert_eq!(line.transport, transport, "{case}");
            assert_eq!(line.status, expected, "{case} over {transport}");
            assert!(line.has_ids, "{case} over {transport}: {line:?}");
            lines_by_transport.entry(transport).or_default().push(line);
        }
    }

    // The same line from each transport, but for the transport's name.
    let same = |transport: &str| -> Vec<Kept> {
        lines_by_transport[transport]
            .iter()
            .map(|line| Kept {
                transport: String::new(),
                ..line.clone()
            })
            .collect()
    };
    assert_eq!(same("http"), same("quic"));
    assert_eq!(same("http"), same("channel"));
    let http_lines = &lines_by_transport["http"];
    assert_eq!(http_lines[0].path, "/one/users/api/greet");
    assert_eq!(http_lines[0].node.as_deref(), Some("users/api"));
    assert_eq!(http_lines[0].sender.as_deref(), Some("billing/w1"));
    assert_eq!(http_lines[1].sender.as_deref(), Some("billing/w2"));
    assert_eq!(
        (http_lines[4].level, http_lines[4].message.as_str()),
        (tracing::Level::WARN, "request failed")
    );

    // The same counts from each, under the transport's label.
    let counts = mediator.transport_stats().requests();
    let statuses = |transport: &str| -> Vec<(u16, u64)> {
        counts
            .iter()
            .filter(|c| c.transport == transport && c.route == "one")
            .flat_map(|c| c.statuses.clone())
            .collect()
    };
    let expected: Vec<(u16, u64)> =
        vec![(200, 1), (403, 1), (404, 1), (413, 1), (502, 1), (504, 1)];
    for transport in ["http", "quic", "channel"] {
        assert_eq!(statuses(transport), expected, "{transport}: {counts:?}");
    }
}
