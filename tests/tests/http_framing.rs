//! HTTP/1.1 framing on the API's listener, from raw bytes: one corpus of
//! valid requests, malformed ones and request-smuggling attempts, each with
//! the verdict RFC 9112 asks for, checked on the wire (the statuses
//! answered, in order, and whether the connection was closed) and at the
//! node (which requests reached it, with which bodies).
//!
//! The corpus is what any framing of the API must agree on: a second
//! HTTP/1.1 path in front of the same lifecycle runs it too.

use std::time::Duration;

use mediator_tests::harness::{EchoNode, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the mediator must answer to one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// These statuses, in order, each answered.
    Answers(&'static [u16]),
    /// Refused as malformed: one 400 (or a close with no answer, for
    /// bytes that are no HTTP at all), and nothing more.
    Refused,
    /// Both `Content-Length` and `Transfer-Encoding`: framed by the
    /// latter, as RFC 9112 (6.3) says, answered with this status, and the
    /// connection closed after it (the case sends no `connection: close`),
    /// so nothing after the chunked body is read as a request.
    ByTransferEncodingThenClosed(u16),
}

/// One case: raw bytes (with `{T}` for a caller's token), what the
/// mediator answers, and the bodies the node receives, in order.
struct Case {
    name: &'static str,
    bytes: &'static str,
    verdict: Verdict,
    node_gets: &'static [&'static str],
}

const HEAD: &str = "POST /one/users/api/x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\n";

fn corpus() -> Vec<Case> {
    use Verdict::*;
    vec![
        Case {
            name: "content-length body",
            bytes: "{HEAD}content-length: 5\r\nconnection: close\r\n\r\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "chunked body",
            bytes: "{HEAD}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "chunk extensions are ignored",
            bytes: "{HEAD}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5;a=b\r\nhello\r\n0;c\r\n\r\n",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "pipelined requests are answered in order",
            bytes: "{HEAD}content-length: 3\r\n\r\none{HEAD}content-length: 3\r\nconnection: close\r\n\r\ntwo",
            verdict: Answers(&[200, 200]),
            node_gets: &["one", "two"],
        },
        Case {
            name: "content-length and transfer-encoding together",
            bytes: "{HEAD}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: ByTransferEncodingThenClosed(200),
            node_gets: &["hello"],
        },
        Case {
            name: "smuggling a request behind content-length and transfer-encoding",
            bytes: "{HEAD}content-length: 48\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nPOST /one/users/api/smuggled HTTP/1.1\r\nhost: h\r\n\r\n",
            verdict: ByTransferEncodingThenClosed(200),
            node_gets: &[""],
        },
        Case {
            name: "smuggling a request behind a content-length the mediator reads past",
            bytes: "{HEAD}content-length: 0\r\n\r\nPOST /one/users/api/second HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            verdict: Answers(&[200, 401]),
            node_gets: &[""],
        },
        Case {
            name: "two content-lengths that differ",
            bytes: "{HEAD}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a content-length that is no number",
            bytes: "{HEAD}content-length: 5x\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a negative content-length",
            bytes: "{HEAD}content-length: -1\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a transfer-encoding other than chunked last",
            bytes: "{HEAD}transfer-encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "an obs-fold continuation line",
            bytes: "{HEAD}x-folded: a\r\n b\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "whitespace between a header's name and its colon",
            bytes: "{HEAD}content-length : 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a header line without a colon",
            bytes: "{HEAD}no colon here\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a chunk size past 64 bits",
            bytes: "{HEAD}transfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a chunk size that is no hex number",
            bytes: "{HEAD}transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a NUL in a header value",
            bytes: "{HEAD}x-bad: a\0b\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "a space inside the request target",
            bytes: "POST /one/users/api/x y HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Refused,
            node_gets: &[],
        },
        Case {
            name: "bare LF line endings",
            bytes: "POST /one/users/api/x HTTP/1.1\nhost: h\nauthorization: Bearer {T}\ncontent-length: 5\nconnection: close\n\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "HTTP/1.0 with a content-length, closed after the answer",
            bytes: "POST /one/users/api/x HTTP/1.0\r\nhost: h\r\nauthorization: Bearer {T}\r\ncontent-length: 5\r\n\r\nhello",
            verdict: Answers(&[200]),
            node_gets: &["hello"],
        },
        Case {
            name: "no HTTP at all",
            bytes: "\x16\x03\x01\x00\x05hello\r\n\r\n",
            verdict: Refused,
            node_gets: &[],
        },
    ]
}

/// Sends `bytes` on a fresh connection and reads what comes back until the
/// mediator closes it (every case ends in `connection: close` or an error
/// that closes): the statuses answered.
async fn exchange(hub: &Hub, bytes: &[u8]) -> Vec<u16> {
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("the mediator answers and closes in time")
        .ok();
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
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let token = hub.token_for("billing/caller");
    let mut failures = Vec::new();
    for case in corpus() {
        let before = node.count();
        let bytes = case.bytes.replace("{HEAD}", HEAD).replace("{T}", &token);
        let got = exchange(&hub, bytes.as_bytes()).await;
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
    let got = exchange(&hub, huge.as_bytes()).await;
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
