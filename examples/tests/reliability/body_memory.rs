//! Bodies sent by callers who have not shown a credential: the hub settles
//! who the caller is from the head, so a crowd of anonymous uploads, each
//! just under `--max-body`, is refused without being held in memory; the
//! console's sign-in form is bounded to 16 KiB the same way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::{
    as_strs, free_port, healthy, raw, send_until_answered, serve_args, Process, RssPeak,
};
use crate::Hub;

/// The body limit the hub runs with (the default, written out).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How far the hub's memory may rise above idle while the uploads are
/// open: far below the hundreds of MiB that buffering them would take.
const HEADROOM_KIB: u64 = 64 * 1024;
/// How long the whole crowd may take to be answered.
const PATIENCE: Duration = Duration::from_secs(20);

/// Opens `connections` connections to `addr` at once, each sending `head`
/// and then `MAX_BODY - 1` bytes until answered; the statuses (or what
/// went wrong, per connection) and the hub's peak RSS meanwhile.
async fn crowd(
    hub: &Hub,
    addr: SocketAddr,
    connections: usize,
    head: &str,
) -> (Vec<Result<u16, String>>, u64) {
    let peak = RssPeak::watch(hub.process.pid());
    let started = Instant::now();
    let uploads: Vec<_> = (0..connections)
        .map(|_| {
            let head = head.to_owned();
            tokio::spawn(
                async move { send_until_answered(addr, head, MAX_BODY - 1, PATIENCE).await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for upload in uploads {
        answers.push(upload.await.unwrap());
    }
    let peak = peak.stop();
    eprintln!(
        "{connections} uploads of {} bytes answered in {:?}; peak RSS {} MiB",
        MAX_BODY - 1,
        started.elapsed(),
        peak / 1024
    );
    (answers, peak)
}

/// The hub's RSS once it has served a request or two.
async fn idle_rss(hub: &Hub) -> u64 {
    for _ in 0..3 {
        assert!(
            healthy(hub.addr, Duration::from_secs(5)).await,
            "not healthy"
        );
    }
    let idle = hub.process.rss_kib();
    eprintln!("idle RSS {} MiB", idle / 1024);
    idle
}

fn assert_all(answers: &[Result<u16, String>], wanted: u16, what: &str) {
    let wrong: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, answer)| *answer != &Ok(wanted))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} {what} were not answered {wanted}: {wrong:?}",
        wrong.len(),
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_without_credentials_are_refused_from_the_head_and_pin_no_memory() {
    let max_body = MAX_BODY.to_string();
    let hub = Hub::start("memory", &["--max-body", &max_body]);
    let idle = idle_rss(&hub).await;

    let head = format!(
        "POST /one/g/n/x HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n\r\n",
        hub.addr,
        MAX_BODY - 1
    );
    let (answers, peak) = crowd(&hub, hub.addr, 100, &head).await;
    assert!(
        peak < idle + HEADROOM_KIB,
        "100 anonymous uploads took the hub from {} MiB to {} MiB",
        idle / 1024,
        peak / 1024
    );
    assert_all(&answers, 401, "uploads without a credential");
    // And the hub still serves.
    assert!(healthy(hub.addr, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_forms_are_bounded_and_pin_no_memory() {
    let max_body = MAX_BODY.to_string();
    let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let console_flag = console.to_string();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(port, "memory");
    args.extend(
        ["--max-body", &max_body, "--console-listen", &console_flag].map(ToOwned::to_owned),
    );
    let process = Process::start(dir.path(), &as_strs(&args), "mediator console on");
    let hub = Hub {
        process,
        dir,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let idle = idle_rss(&hub).await;

    let head = format!(
        "POST /console/sign-in HTTP/1.1\r\nhost: {console}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        MAX_BODY - 1
    );
    let (answers, peak) = crowd(&hub, console, 30, &head).await;
    assert!(
        peak < idle + HEADROOM_KIB,
        "30 oversized sign-in forms took the hub from {} MiB to {} MiB",
        idle / 1024,
        peak / 1024
    );
    assert_all(&answers, 413, "sign-in forms just under --max-body");
    // And the console still serves its sign-in page.
    let page = raw(
        console,
        format!("GET / HTTP/1.1\r\nhost: {console}\r\nconnection: close\r\n\r\n").into_bytes(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(page.status, 401, "{}", page.head);
    assert!(page.text().contains("console/sign-in"), "{}", page.text());
}
