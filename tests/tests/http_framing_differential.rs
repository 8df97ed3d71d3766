//! The listener's two HTTP/1.1 paths against each other: the pass-through
//! (heads read on the raw bytes, calls copied to node connections) and
//! hyper's server alone. For every case of the framing corpus, fed whole,
//! one byte per write and cut at random points, and for every shape of a
//! node's reply, both must give the same outcome: the statuses answered
//! in order, what the node receives (method, target, the headers that
//! travel, body), and what the caller is answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mediator_tests::harness::framing::{corpus, render};
use mediator_tests::harness::{EchoNode, Hub};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a case's bytes are written.
#[derive(Debug, Clone)]
enum Feed {
    Whole,
    /// One byte per write.
    Bytewise,
    /// Cut at these offsets, a short pause between the pieces.
    Cut(Vec<usize>),
}

/// What a node received of one call, without what differs between any two
/// calls (the ids the mediator starts, the deadline's instant).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reached {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Headers whose values differ from call to call whatever the path.
const VOLATILE: &[&str] = &["x-request-id", "traceparent", "x-mediator-deadline"];

async fn send(hub: &Hub, bytes: &[u8], eof: bool, feed: &Feed) -> Vec<u16> {
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let wrote = match feed {
        Feed::Whole => tcp.write_all(bytes).await,
        Feed::Bytewise => {
            let mut result = Ok(());
            for byte in bytes {
                result = tcp.write_all(std::slice::from_ref(byte)).await;
                if result.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            result
        }
        Feed::Cut(at) => {
            let mut result = Ok(());
            let mut from = 0;
            for &to in at.iter().chain(std::iter::once(&bytes.len())) {
                result = tcp.write_all(&bytes[from..to]).await;
                if result.is_err() {
                    break;
                }
                from = to;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            result
        }
    };
    // A refusal may close the connection before every byte is written.
    drop(wrote);
    if eof {
        let _ = tcp.shutdown().await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(400), tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

fn reached_since(node: &EchoNode, before: usize) -> Vec<Reached> {
    node.seen()[before..]
        .iter()
        .map(|seen| {
            let mut headers: Vec<(String, String)> = seen
                .headers
                .iter()
                .filter(|(name, _)| !VOLATILE.contains(&name.as_str()))
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            headers.sort();
            Reached {
                method: seen.method.to_string(),
                uri: seen.uri.clone(),
                headers,
                body: String::from_utf8_lossy(&seen.body).into_owned(),
            }
        })
        .collect()
}

async fn hubs(node: &EchoNode) -> (Hub, Hub) {
    // One thread, one pool of node connections: each call finds the
    // connection the last one left.
    let fast = Hub::config()
        .listener(|l| l.pass_through_threads(1))
        .start()
        .await;
    let full = Hub::config()
        .listener(|l| l.pass_through(false))
        .start()
        .await;
    for hub in [&fast, &full] {
        hub.register("users/api", &node.url).await;
    }
    (fast, full)
}

#[tokio::test]
async fn the_pass_through_and_hypers_server_agree_on_every_case_of_the_corpus() {
    let node = EchoNode::start("api").await;
    let (fast, full) = hubs(&node).await;
    // The same caller on both: the same token, so `x-mediator-from` agrees.
    let token = fast.token_for("billing/caller");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9112);
    let mut failures = Vec::new();
    let mut feeds_run = 0;
    for case in corpus() {
        let (bytes, eof) = render(case.bytes, &token);
        let len = bytes.len();
        let mut feeds = vec![Feed::Whole, Feed::Bytewise];
        for _ in 0..2 {
            let mut at: Vec<usize> = (0..3).map(|_| rng.gen_range(1..len.max(2))).collect();
            at.sort_unstable();
            at.dedup();
            at.retain(|&a| a < len);
            feeds.push(Feed::Cut(at));
        }
        for feed in feeds {
            feeds_run += 1;
            let before = node.count();
            let on_fast = send(&fast, bytes.as_bytes(), eof, &feed).await;
            let fast_reached = reached_since(&node, before);
            let before = node.count();
            let on_full = send(&full, bytes.as_bytes(), eof, &feed).await;
            let full_reached = reached_since(&node, before);
            if on_fast != on_full {
                failures.push(format!(
                    "{} ({feed:?}): pass-through answered {on_fast:?}, hyper {on_full:?}",
                    case.name
                ));
            }
            if fast_reached != full_reached {
                failures.push(format!(
                    "{} ({feed:?}): the node received\n    {fast_reached:?}\n  from the pass-through, and\n    {full_reached:?}\n  from hyper",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the paths differ:\n  {}",
        failures.join("\n  ")
    );
    assert!(feeds_run > 150, "{feeds_run} runs");
    // And the pass-through did take calls (it hands every refusal over).
    let (answered, handed_over) = fast.mediator.transport_stats().pass_through();
    assert!(
        answered >= 60,
        "{answered} calls answered by the pass-through"
    );
    assert!(handed_over > 50, "{handed_over} connections handed over");
    assert_eq!(full.mediator.transport_stats().pass_through(), (0, 0));
}

/// A node answering each call with the raw reply its path names, counting
/// the connections it accepted.
struct RawReplies {
    url: String,
    accepted: Arc<AtomicUsize>,
}

/// The node replies: path, raw bytes (the node closes after them when
/// they end with `{CLOSE}`), and whether the pass-through may use the
/// connection for the next call.
const REPLIES: &[(&str, &str, bool)] = &[
    ("length", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello", true),
    ("chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-t: 1\r\n\r\n", true),
    ("both", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false),
    ("lengths-differ", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", false),
    ("bad-chunk", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false),
    ("continue-first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", true),
    ("no-content", "HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", true),
    ("redirect", "HTTP/1.1 302 Found\r\nlocation: http://elsewhere/\r\ncontent-length: 0\r\n\r\n", true),
    ("switching", "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n", false),
    ("cut-mid-body", "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel{CLOSE}", false),
    ("until-close", "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello{CLOSE}", false),
    ("close-after", "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok{CLOSE}", false),
    ("authority", "HTTP/1.1 200 OK\r\nset-cookie: s=1\r\nx-mediator-node: other/node\r\naccess-control-allow-origin: https://evil\r\ncontent-security-policy: script-src *\r\nx-content-type-options: none\r\nstrict-transport-security: max-age=1\r\nx-request-id: forged\r\nx-kept: yes\r\nconnection: x-kept2\r\nx-kept2: dropped\r\ncache-control: max-age=5\r\ncontent-length: 2\r\n\r\nok", true),
    ("status-999", "HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok", true),
    ("http10", "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    ("garbage", "NOT HTTP\r\n\r\n", false),
];

impl RawReplies {
    async fn start() -> RawReplies {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(stream));
            }
        });
        RawReplies { url, accepted }
    }
}

/// Reads requests (heads and `Content-Length` bodies) and answers each
/// with the reply its path names.
async fn serve_raw(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        buf.drain(..end + 4 + len);
        let Some((_, reply, _)) = REPLIES.iter().find(|(name, _, _)| *name == path) else {
            return;
        };
        let (reply, close) = match reply.strip_suffix("{CLOSE}") {
            Some(reply) => (reply, true),
            None => (*reply, false),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// What a caller sees of an answer, without what differs between calls.
fn seen(answer: &mediator_tests::harness::Answer) -> (u16, BTreeMap<String, String>, String) {
    let headers = answer
        .headers
        .iter()
        // An error's length follows its message, worded by each client.
        .filter(|(name, _)| {
            let error_length = answer.status >= 400 && name.as_str() == "content-length";
            !(error_length || matches!(name.as_str(), "date" | "x-request-id"))
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if answer.status >= 400 {
        // An error's message names the node's failure in the words of
        // each client; its kind is what callers act on.
        answer.json()["kind"].to_string()
    } else {
        answer.text()
    };
    (answer.status, headers, body)
}

#[tokio::test]
async fn the_pass_through_relays_every_shape_of_a_nodes_reply_as_hyper_does() {
    let node = EchoNode::start("api").await;
    let (fast, full) = hubs(&node).await;
    let token = fast.token_for("billing/caller");
    let mut failures = Vec::new();
    for (name, _, reusable) in REPLIES {
        let raw = RawReplies::start().await;
        for hub in [&fast, &full] {
            hub.register("users/raw", &raw.url).await;
        }
        let path = format!("/one/users/raw/{name}");
        let before = fast.mediator.transport_stats().pass_through().0;
        let on_fast = fast.call_as("POST", &path, &token, "hi").await;
        let again = fast.call_as("POST", &path, &token, "hi").await;
        let connections = raw.accepted.load(Ordering::SeqCst);
        let answered = fast.mediator.transport_stats().pass_through().0 - before;
        let on_full = full.call_as("POST", &path, &token, "hi").await;
        if seen(&on_fast) != seen(&on_full) {
            failures.push(format!(
                "{name}: the pass-through answered {:?}, hyper {:?}",
                seen(&on_fast),
                seen(&on_full)
            ));
        }
        if seen(&again) != seen(&on_fast) {
            failures.push(format!(
                "{name}: the second call answered {:?}",
                seen(&again)
            ));
        }
        if answered != 2 {
            failures.push(format!("{name}: {answered} of 2 calls on the pass-through"));
        }
        let expected = if *reusable { 1 } else { 2 };
        if connections != expected {
            failures.push(format!(
                "{name}: {connections} node connections for two calls (expected {expected})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the paths differ:\n  {}",
        failures.join("\n  ")
    );
}
