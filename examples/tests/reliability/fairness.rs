//! One caller floods a node while another calls it at its own pace: the
//! flood is refused past its per-caller bound, the quiet caller is never
//! refused, and its p99 is reported beside the p99 it had without the flood.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::echo_node;
use crate::{percentile, Hub};

/// Calls the quiet caller makes in each phase, one after the other.
const QUIET_CALLS: usize = 100;
/// Concurrent loops of the flooding caller.
const FLOOD_LOOPS: usize = 48;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, url: &str, token: &str) -> (u16, Bytes) {
    let request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The quiet caller's latencies over `QUIET_CALLS` calls; every one must be a 200.
async fn quiet_phase(client: &HttpClient, url: &str, token: &str) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(QUIET_CALLS);
    for i in 0..QUIET_CALLS {
        let started = Instant::now();
        let (status, body) = call(client, url, token).await;
        samples.push(started.elapsed());
        assert_eq!(
            (status, &body[..]),
            (200, &b"echo:ping"[..]),
            "quiet call {i} was not answered"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_caller_is_refused_while_a_quiet_one_keeps_getting_answers() {
    let hub = Hub::start("memory", &["--max-in-flight-per-caller", "16"]);
    let (node, _) = echo_node(Duration::from_millis(10)).await;
    assert_eq!(hub.register("app/echo", node).await.0, 200);
    let url = hub.url("/one/app/echo/work");
    let quiet_token = hub.token("app/quiet");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut alone = quiet_phase(&client, &url, &quiet_token).await;

    let flooding = Arc::new(AtomicBool::new(true));
    let (ok, refused, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flood_token = hub.token("app/flood");
    let flood: Vec<_> = (0..FLOOD_LOOPS)
        .map(|_| {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            let (url, token) = (url.clone(), flood_token.clone());
            let (flooding, ok, refused, other) = (
                Arc::clone(&flooding),
                Arc::clone(&ok),
                Arc::clone(&refused),
                Arc::clone(&other),
            );
            tokio::spawn(async move {
                while flooding.load(Ordering::Relaxed) {
                    let counter = match call(&client, &url, &token).await.0 {
                        200 => &ok,
                        503 => &refused,
                        _ => &other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // The flood is under way before the quiet caller measures again.
    while refused.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut flooded = quiet_phase(&client, &url, &quiet_token).await;
    flooding.store(false, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }

    let (p99_alone, p99_flooded) = (percentile(&mut alone, 99.0), percentile(&mut flooded, 99.0));
    let ratio = p99_flooded.as_secs_f64() / p99_alone.as_secs_f64();
    println!(
        "quiet caller p99: {p99_alone:?} alone, {p99_flooded:?} beside the flood: ratio {ratio:.2}; \
         flood: {} answered, {} refused, {} other",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed)
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "the flood got answers other than 200 and 503"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "the flood was never admitted"
    );
    // A generous bound: a quiet caller that waited behind the whole flood
    // would take seconds.
    assert!(
        p99_flooded < Duration::from_secs(2),
        "quiet p99 {p99_flooded:?} beside the flood"
    );
}
