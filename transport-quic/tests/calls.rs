//! What every call over QUIC gets, as a request over HTTP does: checked
//! trace ids, a request line and a count, read deadlines and the body
//! budget.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediator_core::context::{is_valid_request_id, is_valid_traceparent};
use mediator_core::request_log::{RequestLog, RequestRecord};
use mediator_core::{
    Authenticator, Endpoint, Identity, Limits, Mediator, MediatorBuilder, MemoryRegistry,
    Registration,
};
use mediator_transport_http::{HttpDelivery, HttpListener};
use mediator_transport_quic::{QuicLimits, QuicListener, ServerTls};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::{echo, eventually, exchange, frame, key, raw_caller, read_answer, Hub};

/// The request heads an HTTP node received: `(x-request-id, traceparent)`.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// An HTTP node in a few lines of plain TCP, so that it sees the headers
/// exactly as the mediator sent them; it answers `200 ok` to everything.
async fn raw_http_node() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let kept = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, then its Content-Length body.
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let header = |name: &str| {
                        head.lines().find_map(|line| {
                            let (n, v) = line.split_once(':')?;
                            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    kept.lock()
                        .expect("not poisoned")
                        .push((header("x-request-id"), header("traceparent")));
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A mediator that delivers over HTTP too, with a QUIC listener.
fn hub_with_http(compose: impl FnOnce(MediatorBuilder) -> MediatorBuilder) -> Hub {
    let mediator = compose(Mediator::builder())
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(common::SECRET))
        .deliver(HttpDelivery::default())
        .limits(common::limits())
        .build()
        .expect("mediator");
    let tls = ServerTls::self_signed(&["localhost"]).expect("tls");
    let bound = QuicListener::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        &tls,
        QuicLimits::default(),
    )
    .expect("quic");
    Hub::serve_on(
        mediator,
        bound,
        tls,
        mediator_core::KeyRing::new(mediator_core::SealKey::generate()),
    )
}

#[tokio::test]
async fn bad_request_ids_and_traceparents_are_replaced_before_nodes_see_them() {
    let hub = hub_with_http(|builder| builder);
    let (node_addr, seen) = raw_http_node().await;
    hub.mediator
        .register(
            &Identity::internal(),
            Registration::new(
                key("web/raw"),
                Endpoint::http(format!("http://{node_addr}")).expect("endpoint"),
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("register");
    let caller = raw_caller(&hub, &hub.token(&key("billing/w1"))).await;

    let caller_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let huge = "a".repeat(15 * 1024);
    let cases: [(&str, Option<&str>); 5] = [
        ("bad\u{1}id", None),
        ("new\r\nline", Some(caller_trace)),
        (huge.as_str(), None),
        ("order-17", Some("00-not-a-traceparent")),
        ("order-18", Some(caller_trace)),
    ];
    for (i, (id, traceparent)) in cases.into_iter().enumerate() {
        let head = json!({
            "method": "POST",
            "path": "/x",
            "target": "web/raw",
            "request_id": id,
            "traceparent": traceparent,
        });
        let mut bytes = frame(&head);
        bytes.extend_from_slice(b"hi");
        let (answer, body) = exchange(&caller, &bytes, true).await;
        assert_eq!(answer["status"], 200, "case {i}: {answer}");
        assert_eq!(body, b"ok", "case {i}");
        let answered_id = answer["request_id"]
            .as_str()
            .expect("request id")
            .to_owned();
        let (node_id, node_trace) = seen.lock().expect("not poisoned")[i].clone();
        assert_eq!(node_id.as_deref(), Some(answered_id.as_str()), "case {i}");
        assert!(
            is_valid_request_id(&answered_id),
            "case {i}: {answered_id:?}"
        );
        if is_valid_request_id(id) {
            assert_eq!(answered_id, id, "case {i}: a good id is kept");
        } else {
            assert_ne!(answered_id, id, "case {i}: a bad id is replaced");
        }
        let node_trace = node_trace.expect("a traceparent always travels");
        assert!(is_valid_traceparent(&node_trace), "case {i}: {node_trace}");
        let kept = traceparent == Some(caller_trace);
        assert_eq!(
            node_trace.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            kept,
            "case {i}: {node_trace}"
        );
    }
}

/// One request line, owned.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    level: tracing::Level,
    message: &'static str,
    method: String,
    path: String,
    remote: Option<SocketAddr>,
    sender: Option<String>,
    target: Option<String>,
    node: Option<String>,
    status: u16,
    request_id: String,
    trace_id: Option<String>,
}

#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<Line>>>);

impl RequestLog for Kept {
    fn record(&self, record: &RequestRecord<'_>) {
        self.0.lock().expect("not poisoned").push(Line {
            level: record.level,
            message: record.message,
            method: record.method.to_string(),
            path: record.path.to_owned(),
            remote: record.remote,
            sender: record.sender.map(str::to_owned),
            target: record.target.map(|t| t.to_string()),
            node: record.node.map(str::to_owned),
            status: record.status,
            request_id: record.request_id.to_owned(),
            trace_id: record.trace_id.map(str::to_owned),
        });
    }
}

impl Kept {
    fn take(&self) -> Vec<Line> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// `GET /metrics` from the mediator's HTTP listener.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("answer");
    text
}

#[tokio::test]
async fn every_call_writes_a_request_line_and_is_counted() {
    let kept = Kept::default();
    let log = kept.clone();
    let hub = hub_with_http(move |builder| builder.request_log(log));
    let http = HttpListener::bind("127.0.0.1:0").await.expect("http");
    let http_addr = http.local_addr();
    tokio::spawn(http.serve(hub.mediator.clone()));
    let _a = hub.node("users/a", echo("a")).await;
    // A node known to the mediator but attached to another instance:
    // asking it by name fails (502).
    hub.mediator
        .register(
            &Identity::internal(),
            Registration::new(
                key("ghost/g"),
                Endpoint::attached("another-instance").expect("endpoint"),
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("register");
    let worker = hub.caller("billing/w1").await;
    kept.take();

    assert_eq!(
        worker
            .call(key("users/a"), "/greet?token=secret", "ada")
            .await
            .expect("call"),
        "a got ada"
    );
    let lines = kept.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(
        (line.level, line.message, line.status),
        (tracing::Level::INFO, "request", 200)
    );
    assert_eq!(
        (line.method.as_str(), line.path.as_str()),
        ("POST", "/one/users/a/greet")
    );
    assert_eq!(line.sender.as_deref(), Some("billing/w1"));
    assert_eq!(line.target.as_deref(), Some("users/a"));
    assert_eq!(line.node.as_deref(), Some("users/a"));
    assert!(
        line.remote.is_some_and(|r| r.ip().is_loopback()),
        "{line:?}"
    );
    assert!(is_valid_request_id(&line.request_id), "{line:?}");
    assert!(
        line.trace_id.as_ref().is_some_and(|t| t.len() == 32),
        "{line:?}"
    );

    let all = worker.broadcast("users", "/b", "x").await.expect("many");
    assert_eq!(all.summary.answered, 1);
    let _ = worker
        .call(key("users/nobody"), "/", "x")
        .await
        .unwrap_err();
    let e = worker.call(key("ghost/g"), "/", "x").await.unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    let lines = kept.take();
    let brief: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.level,
                l.message,
                l.target.as_deref(),
                l.node.as_deref(),
                l.status,
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (tracing::Level::INFO, "request", Some("users/*"), None, 200),
            (
                tracing::Level::INFO,
                "request",
                Some("users/nobody"),
                None,
                404
            ),
            (
                tracing::Level::WARN,
                "request failed",
                Some("ghost/g"),
                None,
                502
            ),
        ]
    );

    // A call whose header is not even JSON is answered, written and
    // counted too, with what little it said.
    let raw = raw_caller(&hub, &hub.token(&key("billing/w1"))).await;
    let (answer, _) = exchange(&raw, b"\x00\x00\x00\x03{{{", true).await;
    assert_eq!(answer["status"], 400, "{answer}");
    let lines = kept.take();
    let brief: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.method.as_str(),
                l.path.as_str(),
                l.target.as_deref(),
                l.status,
            )
        })
        .collect();
    assert_eq!(brief, [("-", "-", None, 400)]);
    assert_eq!(lines[0].sender.as_deref(), Some("billing/w1"));

    // Counted where the HTTP requests are, told apart by transport.
    let text = scrape(http_addr).await;
    for line in [
        "mediator_requests_total{transport=\"quic\",route=\"one\",status=\"200\"} 1",
        "mediator_requests_total{transport=\"quic\",route=\"many\",status=\"200\"} 1",
        "mediator_requests_total{transport=\"quic\",route=\"one\",status=\"404\"} 1",
        "mediator_requests_total{transport=\"quic\",route=\"one\",status=\"502\"} 1",
        "mediator_requests_total{transport=\"quic\",route=\"other\",status=\"400\"} 1",
        "mediator_request_duration_seconds_count{transport=\"quic\",route=\"one\"} 3",
        "mediator_attached_nodes{transport=\"quic\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

/// A mediator whose calls must arrive within `deadline`, with a body
/// budget of `budget` bytes.
fn tight(deadline: Duration, budget: usize) -> Mediator {
    let mut limits = Limits::default();
    limits.max_body = 64 * 1024;
    limits.deadline = deadline;
    limits.body_budget = budget;
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(common::SECRET))
        .limits(limits)
        .build()
        .expect("mediator")
}

fn call_head(target: &str) -> Vec<u8> {
    frame(&json!({ "method": "POST", "path": "/", "target": target }))
}

#[tokio::test]
async fn a_call_whose_body_never_ends_gets_408_and_lets_its_memory_go() {
    let deadline = Duration::from_millis(800);
    let hub = Hub::start_with(tight(deadline, 1 << 20), QuicLimits::default()).await;
    let _a = hub.node("users/a", echo("a")).await;
    let caller = raw_caller(&hub, &hub.token(&key("billing/w1"))).await;
    let budget = hub.mediator.body_budget().clone();

    // The header, part of the body, and never the stream's end.
    let opened = Instant::now();
    let (mut send, mut recv) = caller.open_bi().await.expect("stream");
    let mut bytes = call_head("users/a");
    bytes.extend_from_slice(&[7u8; 10_000]);
    send.write_all(&bytes).await.expect("sent");
    assert!(
        eventually(deadline, || budget.held() >= 10_000).await,
        "the part received is counted: {}",
        budget.held()
    );
    let (answer, _) = read_answer(&mut recv).await;
    let took = opened.elapsed();
    assert_eq!(
        (&answer["status"], &answer["kind"], &answer["fault"]),
        (&json!(408), &json!("timeout"), &json!("caller")),
        "{answer}"
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "answered after {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(1), || budget.held() == 0).await,
        "still held: {}",
        budget.held()
    );
    // The stream was stopped: what the caller still sends is refused.
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if send.write_all(&[0u8; 1024]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the stream was not stopped");

    // A header that never completes is timed out the same way.
    let (mut send, mut recv) = caller.open_bi().await.expect("stream");
    send.write_all(&[0, 0]).await.expect("sent");
    let (answer, _) = read_answer(&mut recv).await;
    assert_eq!(answer["status"], 408, "{answer}");

    // The connection still serves: the node is reached (and refuses a
    // body that is not sealed).
    let mut bytes = call_head("users/a");
    bytes.extend_from_slice(b"x");
    let (answer, _) = exchange(&caller, &bytes, true).await;
    assert_eq!(answer["node"], "users/a", "{answer}");
}

#[tokio::test]
async fn bodies_past_the_budget_are_refused_with_503() {
    let hub = Hub::start_with(
        tight(Duration::from_secs(5), 100 * 1024),
        QuicLimits::default(),
    )
    .await;
    let _a = hub.node("users/a", echo("a")).await;
    let caller = raw_caller(&hub, &hub.token(&key("billing/w1"))).await;
    let budget = hub.mediator.body_budget().clone();

    // One call holds 60 KiB of the 100 KiB, its body still arriving.
    let (mut holder, _held) = caller.open_bi().await.expect("stream");
    let mut bytes = call_head("users/a");
    bytes.extend_from_slice(&[1u8; 60 * 1024]);
    holder.write_all(&bytes).await.expect("sent");
    assert!(eventually(Duration::from_secs(2), || budget.held() >= 60 * 1024).await);

    // Another 60 KiB does not fit.
    let worker = hub.caller("billing/w2").await;
    let e = worker
        .call(key("users/a"), "/", vec![2u8; 60 * 1024])
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (Some(503), Some("overloaded")),
        "{e}"
    );
    assert!(budget.held() < 100 * 1024, "{}", budget.held());

    // Once the first gives up, there is room again.
    holder.reset(0u32.into()).expect("reset");
    assert!(eventually(Duration::from_secs(2), || budget.held() == 0).await);
    let reply = worker
        .call(key("users/a"), "/", vec![3u8; 60 * 1024])
        .await
        .expect("fits now");
    assert!(reply.starts_with(b"a got "));
}
