//! The listener's defences for its connections, over real sockets: silent
//! and slow clients are closed after their timeouts, whatever the protocol,
//! and past the connection cap new clients are refused while the probes
//! keep answering once there is room.

use std::time::{Duration, Instant};

use mediator_tests::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The short timeout these tests set.
const SHORT: Duration = Duration::from_millis(300);
/// Longer than any test should wait for the listener to close a socket.
const LONG: Duration = Duration::from_secs(20);

/// Sends `bytes` (maybe none) and reads until the listener closes the
/// connection; returns what came back and how long the close took.
async fn until_closed(stream: &mut TcpStream, bytes: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    stream.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the listener closed the connection in time");
    (
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    )
}

async fn connect(hub: &Hub) -> TcpStream {
    TcpStream::connect(hub.socket()).await.expect("connect")
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let hub = Hub::config()
        .listener(|l| l.idle_timeout(SHORT).client_timeouts(LONG, LONG))
        .start()
        .await;
    let mut silent = connect(&hub).await;
    let (answer, took) = until_closed(&mut silent, b"").await;
    assert!(answer.is_empty(), "{answer}");
    assert!(took >= SHORT - Duration::from_millis(50), "{took:?}");
}

#[tokio::test]
async fn the_header_read_timeout_runs_from_the_first_byte_and_for_silent_clients() {
    let hub = Hub::config()
        .listener(|l| l.idle_timeout(LONG).client_timeouts(LONG, SHORT))
        .start()
        .await;
    // Half a head, then silence.
    let mut slow = connect(&hub).await;
    let (answer, took) = until_closed(&mut slow, b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(took >= SHORT - Duration::from_millis(50), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Nothing at all.
    let mut silent = connect(&hub).await;
    let (_, took) = until_closed(&mut silent, b"").await;
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn idle_keep_alive_and_http2_connections_are_closed() {
    let hub = Hub::config()
        .listener(|l| l.idle_timeout(SHORT).client_timeouts(LONG, LONG))
        .start()
        .await;
    // HTTP/1.1: one request answered, then the connection left open.
    let mut kept = connect(&hub).await;
    let (answer, took) = until_closed(&mut kept, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= SHORT - Duration::from_millis(50), "{took:?}");
    // HTTP/2: the preface and an empty SETTINGS frame, then silence.
    let mut h2 = connect(&hub).await;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let (_, took) = until_closed(&mut h2, &hello).await;
    assert!(took >= SHORT - Duration::from_millis(50), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_are_refused_and_probes_answer_again_later() {
    const CAP: usize = 3;
    let hub = Hub::config()
        .listener(|l| {
            l.idle_timeout(Duration::from_millis(800))
                .client_timeouts(LONG, LONG)
                .max_connections(CAP)
        })
        .start()
        .await;
    // Below the cap, a probe is answered beside silent connections.
    let mut silent = Vec::new();
    for _ in 0..CAP - 1 {
        silent.push(connect(&hub).await);
    }
    let health = hub.call("GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
    // The probe's own connection ends as soon as the listener reads its
    // close; until then it counts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    silent.push(connect(&hub).await);
    // Let the listener count the last one before the next knocks.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut refused = connect(&hub).await;
    let (answer, took) = until_closed(&mut refused, b"").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Once the silent ones are closed, there is room again.
    for mut socket in silent {
        until_closed(&mut socket, b"").await;
    }
    eventually_answered(&hub).await;
}

async fn eventually_answered(hub: &Hub) {
    let started = Instant::now();
    loop {
        let mut probe = connect(hub).await;
        let (answer, _) = until_closed(
            &mut probe,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the probe is answered: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_caller_that_stops_reading_its_answer_does_not_hold_its_connection() {
    let hub = Hub::config()
        .listener(|l| l.idle_timeout(SHORT).client_timeouts(LONG, LONG))
        .start()
        .await;
    let node = EchoNode::start("big").await;
    hub.register("users/big", &node.url).await;
    let token = hub.token_for("billing/caller");
    // An answer far larger than the socket buffers can hold, never read.
    const BIG: usize = 6_000_000;
    let mut stalled = connect(&hub).await;
    let call = format!(
        "GET /one/users/big/big/{BIG} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stalled.write_all(call.as_bytes()).await.expect("write");
    // Past the idle limit the mediator gives up writing and closes.
    tokio::time::sleep(SHORT * 4).await;
    let mut read = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            Ok(_) => break,
            Err(_) => panic!("the connection was still open after {read} bytes"),
        }
    }
    assert!(read < BIG, "the whole answer arrived ({read} bytes)");
    assert!(started.elapsed() < Duration::from_secs(5));
    // And the listener goes on serving.
    let answer = hub.call("GET", "/healthz", &[], "").await;
    assert_eq!(answer.status, 200);
}
