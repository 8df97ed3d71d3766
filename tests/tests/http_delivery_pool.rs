//! The HTTP deliverer's pooled connections to plain `http://` nodes, seen
//! from the node's side of real sockets: how many connections it opens,
//! which it reuses, and what it does when a node closes one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mediator_tests::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a raw node answers each request.
#[derive(Clone, Copy)]
enum Manner {
    /// `200` with the request's body, keeping the connection open.
    KeepAlive,
    /// `200` with the body, then closes the connection without saying so
    /// (no `Connection: close`), as a node with a short keep-alive would.
    CloseSilently,
    /// `200` with the body, then closes the connection once it has been
    /// idle this long, as servers with a keep-alive timeout do.
    CloseWhenIdleFor(Duration),
    /// A reply announcing more bytes than the mediator accepts.
    Huge,
}

/// A node on a raw socket that counts the connections it accepted and
/// those its clients closed.
struct RawNode {
    url: String,
    accepted: Arc<AtomicUsize>,
    closed_by_peer: Arc<AtomicUsize>,
}

impl RawNode {
    async fn start(manner: Manner) -> RawNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed_by_peer));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    if serve(stream, manner).await {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        RawNode {
            url,
            accepted,
            closed_by_peer,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_peer(&self) -> usize {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
}

/// Answers requests on `stream` in `manner`; `true` when the client
/// closed the connection (end of stream between requests).
async fn serve(mut stream: TcpStream, manner: Manner) -> bool {
    let mut buf = Vec::new();
    loop {
        let Some((head_end, body_len)) = read_head(&mut stream, &mut buf).await else {
            return buf.is_empty();
        };
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + body_len].to_vec();
        buf.drain(..head_end + body_len);
        let reply = match manner {
            Manner::KeepAlive | Manner::CloseSilently | Manner::CloseWhenIdleFor(_) => {
                let mut reply =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                        .into_bytes();
                reply.extend_from_slice(&body);
                reply
            }
            Manner::Huge => b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\nxxxx".to_vec(),
        };
        if stream.write_all(&reply).await.is_err() {
            return false;
        }
        match manner {
            Manner::KeepAlive => {}
            Manner::CloseWhenIdleFor(idle) => {
                tokio::time::sleep(idle).await;
                return false;
            }
            Manner::CloseSilently | Manner::Huge => return false,
        }
    }
}

/// Reads until a whole request head is in `buf`: where it ends and its
/// `content-length`; `None` at the end of the stream.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((at + 4, len));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn call(hub: &Hub, body: &str) -> Answer {
    hub.call_as(
        "POST",
        "/one/users/api/echo",
        &hub.token_for("users/caller"),
        body.to_owned(),
    )
    .await
}

#[tokio::test]
async fn sequential_deliveries_share_one_connection() {
    let hub = Hub::start().await;
    let node = RawNode::start(Manner::KeepAlive).await;
    hub.register("users/api", &node.url).await;
    for i in 0..20 {
        let answer = call(&hub, &format!("hello {i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.text(), format!("hello {i}"));
    }
    // The listener serves its calls on one thread per core, each with a
    // pool of its own: at most one connection each.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        node.accepted() <= threads,
        "{} connections",
        node.accepted()
    );
}

#[tokio::test]
async fn concurrent_deliveries_open_no_more_connections_than_requests_in_flight() {
    let hub = Arc::new(Hub::start().await);
    let node = RawNode::start(Manner::KeepAlive).await;
    hub.register("users/api", &node.url).await;
    for round in 0..3 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..8 {
            let hub = Arc::clone(&hub);
            calls.spawn(async move {
                let body = format!("round {round} call {i}");
                let answer = call(&hub, &body).await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                assert_eq!(answer.text(), body);
            });
        }
        while let Some(done) = calls.join_next().await {
            done.expect("a call panicked");
        }
    }
    // Later rounds reuse what the first opened.
    assert!(node.accepted() <= 8, "{} connections", node.accepted());
}

#[tokio::test]
async fn a_connection_the_node_closed_is_not_used_again() {
    let hub = Hub::start().await;
    let node = RawNode::start(Manner::CloseSilently).await;
    hub.register("users/api", &node.url).await;
    for i in 0..10 {
        let answer = call(&hub, &format!("again {i}")).await;
        assert_eq!(answer.status, 200, "call {i}: {}", answer.text());
        assert_eq!(answer.text(), format!("again {i}"));
        // Give the close time to arrive, as between real requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.accepted(), 10);
}

#[tokio::test]
async fn a_reply_too_large_fails_and_its_connection_is_dropped() {
    let hub = Hub::start().await;
    let node = RawNode::start(Manner::Huge).await;
    hub.register("users/api", &node.url).await;
    for _ in 0..3 {
        let answer = call(&hub, "hi").await;
        assert_error(&answer, 502, "node_failed", "node");
        assert!(
            answer.text().contains("reply too large"),
            "{}",
            answer.text()
        );
    }
    // A connection with a reply half read is never reused.
    assert_eq!(node.accepted(), 3);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_pool_timeout() {
    let hub = Hub::config()
        .delivery(|d| d.with_pool_idle_timeout(Duration::from_millis(300)))
        .start()
        .await;
    let node = RawNode::start(Manner::KeepAlive).await;
    hub.register("users/api", &node.url).await;
    let answer = call(&hub, "hi").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let started = std::time::Instant::now();
    while node.closed_by_peer() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the idle connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new request after the close opens a new connection and works.
    let answer = call(&hub, "again").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(node.accepted(), 2);
}

#[tokio::test]
async fn a_node_that_refuses_connections_is_unreachable() {
    let hub = Hub::start().await;
    // A port nobody listens on.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address").port()
    };
    hub.register("users/api", &format!("http://127.0.0.1:{port}"))
        .await;
    let answer = call(&hub, "hi").await;
    assert_error(&answer, 502, "node_unreachable", "node");
}

/// How many of this process's TCP sockets connected to `port` on
/// loopback sit half-closed (CLOSE_WAIT: the peer closed, this side not).
fn half_closed_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"08")
        })
        .count()
}

#[tokio::test]
async fn a_connection_the_node_closed_while_idle_is_let_go_within_seconds() {
    // The idle timeout alone would keep it a minute.
    let hub = Hub::config()
        .delivery(|d| d.with_pool_idle_timeout(Duration::from_secs(60)))
        .start()
        .await;
    let node = RawNode::start(Manner::CloseWhenIdleFor(Duration::from_millis(200))).await;
    let port: u16 = node
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    hub.register("users/api", &node.url).await;
    let answer = call(&hub, "hi").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // The node closes its end; the mediator's end stays half-closed
    // until the pool looks at it.
    let started = std::time::Instant::now();
    while half_closed_to(port) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the node's close never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while half_closed_to(port) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the mediator kept a connection its node had closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next request opens a new connection and is answered.
    let answer = call(&hub, "again").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(node.accepted(), 2);
}
