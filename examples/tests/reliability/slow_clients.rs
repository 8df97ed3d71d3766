//! Slow and silent clients against a mediator started with a low descriptor
//! limit and short client timeouts: past its connection cap new clients get
//! `503`, at the descriptor limit the accept loop waits instead of spinning,
//! and `/healthz` answers again once the timeouts have closed the squatters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{healthy, raw};
use crate::Hub;

/// The descriptor limit the mediator runs under.
const MAX_FILES: u32 = 256;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// Holds a connection open without sending a byte; resolves with how long
/// after `start` the server closed it (or `None` if it never did within `patience`).
async fn silent(addr: SocketAddr, start: Instant, patience: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Sends a request head one byte every 200 ms, never finishing it; resolves
/// with how long after `start` the server closed the connection.
async fn slowloris(addr: SocketAddr, start: Instant, patience: Duration) -> Option<Duration> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
        {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok();
    dribble.abort();
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_clients_get_503_and_probes_answer_once_squatters_time_out() {
    let hub = Hub::start_limited(
        "memory",
        &[
            "--max-connections",
            "100",
            "--header-read-timeout-ms",
            "1500",
            "--idle-timeout-ms",
            "1500",
        ],
        Some(MAX_FILES),
    );
    let start = Instant::now();
    let patience = Duration::from_secs(10);
    let mut squatters = Vec::new();
    for i in 0..100 {
        let addr = hub.addr;
        squatters.push(if i % 2 == 0 {
            tokio::spawn(silent(addr, start, patience))
        } else {
            tokio::spawn(slowloris(addr, start, patience))
        });
    }
    // Every squatter is connected and counted before the next clients come.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.process.open_files() < 100 {
        assert!(
            Instant::now() < deadline,
            "the squatters never got connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Past the cap: a clear 503 with retry-after, at once.
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        let answer = raw(hub.addr, request.clone(), Duration::from_secs(3))
            .await
            .expect("a refusal, not a hang");
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert_eq!(answer.header("retry-after").as_deref(), Some("1"));
    }

    // The timeouts close every squatter, then probes answer again.
    let mut answered = None;
    while start.elapsed() < Duration::from_secs(8) {
        if healthy(hub.addr, Duration::from_secs(2)).await {
            answered = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = answered.expect("/healthz never answered 200 again");
    assert!(
        answered < Duration::from_millis(1500 + 2500),
        "/healthz answered only after {answered:?}"
    );
    for squatter in squatters {
        let closed = squatter
            .await
            .unwrap()
            .expect("a squatter was never closed");
        assert!(
            closed < Duration::from_millis(1500 + 2500),
            "a squatter was closed only after {closed:?}"
        );
    }
    let mut hub = hub;
    assert!(hub.process.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_descriptor_limit_the_accept_loop_waits_instead_of_spinning() {
    let hub = Hub::start_limited(
        "memory",
        &[
            // A cap of one's own is kept whatever the descriptor limit, so
            // the mediator does reach that limit here.
            "--max-connections",
            "10000",
            "--header-read-timeout-ms",
            "2500",
            "--idle-timeout-ms",
            "2500",
        ],
        Some(MAX_FILES),
    );
    let start = Instant::now();
    // Generous: a client whose handshake finished while the accept queue was
    // full believes it is connected, but reaches the queue only when the
    // kernel's SYN-ACK retransmits (1, 2, 4, 8 s apart) find room, so on a
    // loaded machine it may be accepted 15 s or more after it connected.
    let patience = Duration::from_secs(30);
    // More silent clients than the mediator has descriptors: those past the
    // limit wait in the listen backlog.
    let squatters: Vec<_> = (0..400)
        .map(|_| tokio::spawn(silent(hub.addr, start, patience)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    while hub.process.open_files() < MAX_FILES as usize - 8 {
        assert!(
            Instant::now() < deadline,
            "the mediator never reached its descriptor limit: {} open",
            hub.process.open_files()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // At the limit every accept fails with EMFILE: a loop retrying at once
    // would burn a core; one that waits between tries uses next to nothing.
    let before = hub.process.cpu_ticks();
    let window = Duration::from_secs(1);
    tokio::time::sleep(window).await;
    let used = hub.process.cpu_ticks() - before;
    let at_limit = hub.process.open_files();
    println!("cpu at the descriptor limit: {used} ticks in {window:?}, {at_limit} files open");
    assert!(
        at_limit >= MAX_FILES as usize - 8,
        "left the limit during the measurement ({at_limit} open): the window proves nothing"
    );
    assert!(
        used * 100 / TICKS_PER_SECOND < 25,
        "the mediator used {used} ticks (1/{TICKS_PER_SECOND} s) in {window:?} at the descriptor limit"
    );

    // The header-read timeout frees the descriptors, the backlog drains, and
    // a probe queued behind it is answered.
    let answered = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            if healthy(hub.addr, Duration::from_secs(3)).await {
                return start.elapsed();
            }
        }
    })
    .await
    .expect("/healthz never answered again");
    println!("/healthz answered {answered:?} after the flood began");
    let mut never_closed = 0;
    for squatter in squatters {
        if squatter.await.unwrap().is_none() {
            never_closed += 1;
        }
    }
    assert_eq!(
        never_closed, 0,
        "silent clients never closed (or never connected) within {patience:?}"
    );
    let mut hub = hub;
    assert!(hub.process.alive());
}
