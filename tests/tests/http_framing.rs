//! HTTP/1.1 framing on the API's listener, from raw bytes: one corpus of
//! valid requests, malformed ones and request-smuggling attempts, each with
//! the verdict RFC 9112 asks for, checked on the wire (the statuses
//! answered, in order, and whether the connection was closed) and at the
//! node (which requests reached it, with which bodies).
//!
//! The corpus is what any framing of the API must agree on: a second
//! HTTP/1.1 path in front of the same lifecycle runs it too.

use std::time::Duration;

use mediator_tests::harness::framing::{corpus, render, Verdict, HEAD};
use mediator_tests::harness::{EchoNode, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a fresh connection (closing its sending half after
/// them when `eof`) and reads what comes back until the mediator closes
/// it or stays silent for half a second: the statuses answered.
async fn exchange(hub: &Hub, bytes: &[u8], eof: bool) -> Vec<u16> {
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    if eof {
        let _ = tcp.shutdown().await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    statuses(&buf)
}

/// The status of every response in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn the_api_frames_every_case_of_the_corpus_as_rfc_9112_asks() {
    // The default listener: calls on the pass-through, the rest on hyper.
    frames_the_corpus(true).await;
}

#[tokio::test]
async fn hypers_server_alone_frames_every_case_of_the_corpus_as_rfc_9112_asks() {
    frames_the_corpus(false).await;
}

async fn frames_the_corpus(pass_through: bool) {
    let hub = Hub::config()
        .listener(move |l| l.pass_through(pass_through))
        .start()
        .await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let token = hub.token_for("billing/caller");
    let mut failures = Vec::new();
    for case in corpus() {
        let before = node.count();
        let (bytes, eof) = render(case.bytes, &token);
        let got = exchange(&hub, bytes.as_bytes(), eof).await;
        let bodies: Vec<String> = node.seen()[before..]
            .iter()
            .map(|s| String::from_utf8_lossy(&s.body).into_owned())
            .collect();
        let verdict_holds = match case.verdict {
            Verdict::Answers(expected) => got == expected,
            Verdict::Refused => got == [400] || got.is_empty(),
            Verdict::ByTransferEncodingThenClosed(status) => got == [status],
        };
        if !verdict_holds || bodies != case.node_gets {
            failures.push(format!(
                "{}: answered {got:?} (expected {:?}), node got {bodies:?} (expected {:?})",
                case.name, case.verdict, case.node_gets
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "framing differs:\n  {}",
        failures.join("\n  ")
    );

    // A head far past any reasonable size is refused, not buffered.
    let huge = format!(
        "{HEAD}x-huge: {}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        "a".repeat(1 << 20)
    )
    .replace("{T}", &token);
    let before = node.count();
    let got = exchange(&hub, huge.as_bytes(), false).await;
    assert!(
        got == [431] || got == [400] || got.is_empty(),
        "a 1 MiB head: {got:?}"
    );
    assert_eq!(node.count(), before, "a 1 MiB head reached the node");

    // A body cut short by the caller's close never reaches the node.
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    let short = format!("{HEAD}content-length: 10\r\n\r\nhel").replace("{T}", &token);
    tcp.write_all(short.as_bytes()).await.expect("write");
    tcp.shutdown().await.expect("half-close");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("the mediator closes in time")
        .ok();
    assert!(!statuses(&buf).contains(&200), "{:?}", statuses(&buf));
    assert_eq!(node.count(), before, "a body cut short reached the node");
    // And the listener still serves.
    let answer = hub.call("GET", "/healthz", &[], "").await;
    assert_eq!(answer.status, 200);
}
