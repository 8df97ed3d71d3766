//! SIGTERM under load: every request that reached a node gets its whole
//! answer, every answer given is complete and correct, new connections are
//! refused once the signal is in, and the process exits 0.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{parse_answer, recording_node};
use crate::Hub;

const WORKERS: usize = 12;
/// How long the node takes over each request: longer than the check for
/// refused connections after the signal.
const NODE_DELAY: Duration = Duration::from_millis(800);

/// What became of one request.
#[derive(Debug)]
enum Outcome {
    /// A complete, correct 200, and when it arrived.
    Answered(Instant),
    /// The connection was refused: the listener is gone.
    Refused,
    /// Closed without a byte of answer (accepted, not yet read, when the
    /// drain began).
    Dropped,
    /// Anything else: a partial or wrong answer.
    Broken(String),
}

async fn one_request(addr: std::net::SocketAddr, token: &str, body: &str) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::Refused;
    };
    let request = format!(
        "POST /one/app/slow/work HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Outcome::Dropped;
    }
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes)).await;
    match read {
        Err(_) => return Outcome::Broken("no close within 20 s".into()),
        Ok(Err(_)) | Ok(Ok(_)) if bytes.is_empty() => return Outcome::Dropped,
        _ => {}
    }
    match parse_answer(&bytes) {
        Ok(answer)
            if answer.status == 200
                && answer.body == format!("echo:{body}").as_bytes()
                && answer.header("content-length") == Some(answer.body.len().to_string()) =>
        {
            Outcome::Answered(Instant::now())
        }
        Ok(answer) => Outcome::Broken(format!("{} {:?}", answer.head, answer.text())),
        Err(e) => Outcome::Broken(e),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_finishes_what_reached_a_node_and_refuses_the_rest() {
    let mut hub = Hub::start("memory", &["--drain-s", "20"]);
    let (node, seen) = recording_node(NODE_DELAY).await;
    assert_eq!(hub.register("app/slow", node).await.0, 200);
    let token = hub.token("app/load");

    let outcomes: Arc<Mutex<Vec<(String, Outcome)>>> = Arc::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (addr, token, outcomes) = (hub.addr, token.clone(), Arc::clone(&outcomes));
            tokio::spawn(async move {
                for i in 0.. {
                    let body = format!("w{w}-{i}");
                    let outcome = one_request(addr, &token, &body).await;
                    let refused = matches!(outcome, Outcome::Refused);
                    outcomes.lock().unwrap().push((body, outcome));
                    if refused {
                        return;
                    }
                }
            })
        })
        .collect();
    // Load until every worker has a request at the node, then the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < WORKERS * 2 {
        assert!(Instant::now() < deadline, "the load never reached the node");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.process.signal("TERM");
    let signalled = Instant::now();

    // Requests are still at the node, so the process is draining, not gone:
    // it must refuse new connections already.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hub.process.alive(),
        "exited before its requests in flight finished"
    );
    assert!(
        TcpStream::connect(hub.addr).await.is_err(),
        "a new connection was accepted while draining"
    );

    let status = tokio::task::spawn_blocking(move || {
        let status = hub.process.wait_exit(Duration::from_secs(25));
        (status, hub)
    })
    .await
    .unwrap();
    let (status, hub) = status;
    assert!(status.success(), "exit status {status:?}");
    for worker in workers {
        worker.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let broken: Vec<_> = outcomes
        .iter()
        .filter_map(|(body, o)| match o {
            Outcome::Broken(what) => Some(format!("{body}: {what}")),
            _ => None,
        })
        .collect();
    assert!(broken.is_empty(), "incomplete or wrong answers: {broken:?}");
    let answered: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
        .map(|(body, _)| body.as_str())
        .collect();
    let reached: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let lost: Vec<_> = reached
        .iter()
        .filter(|body| !answered.contains(body.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "reached the node but never answered: {lost:?}"
    );
    let after_signal = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(at) if *at > signalled))
        .count();
    let dropped = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Dropped))
        .count();
    println!(
        "{} answered ({after_signal} after SIGTERM), {dropped} closed unanswered before reaching a node",
        answered.len()
    );
    assert!(
        after_signal >= WORKERS / 2,
        "requests in flight at the signal were not finished"
    );
    assert!(
        std::net::TcpStream::connect(hub.addr).is_err(),
        "still accepting after exit"
    );
}
