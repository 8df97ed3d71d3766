//! A broadcast storm from one caller to a group of 100 nodes: the mediator
//! admits what its per-caller bound allows, refuses the rest with `503` and
//! `retry-after`, loses no admitted delivery, and keeps its descriptors
//! bounded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{echo_node, healthy, post_full};
use crate::Hub;

const NODES: usize = 100;
const BROADCASTS: usize = 30;
/// Deliveries one caller may have in flight: three broadcasts of 100 nodes.
const PER_CALLER: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_storm_is_bounded_and_loses_no_admitted_delivery() {
    let per_caller = PER_CALLER.to_string();
    let hub = Hub::start("memory", &["--max-in-flight-per-caller", &per_caller]);
    let mut counters = Vec::new();
    for i in 0..NODES {
        // Slow enough that admitted broadcasts overlap the later ones.
        let (node, seen) = echo_node(Duration::from_millis(300)).await;
        let (status, body) = hub.register(&format!("storm/n{i}"), node).await;
        assert_eq!(status, 200, "{body}");
        counters.push(seen);
    }
    let base_files = hub.process.open_files();

    // The descriptors the mediator holds, sampled all through the storm.
    let peak = Arc::new(AtomicUsize::new(base_files));
    let sampling = Arc::new(AtomicBool::new(true));
    let pid = hub.process.pid();
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(files) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    peak.fetch_max(files.count(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let token = hub.token("storm/caller");
    let url = hub.url("/many/storm/work");
    let calls: Vec<_> = (0..BROADCASTS)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move { post_full(&url, &token, format!("b{i}")).await })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for call in calls {
        let (status, headers, body) = call.await.unwrap();
        match status.as_u16() {
            200 => {
                admitted += 1;
                let summary = headers
                    .get("x-mediator-summary")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                assert_eq!(
                    summary,
                    format!("asked={NODES}; answered={NODES}; failed=0; timed_out=0"),
                    "an admitted broadcast lost deliveries"
                );
            }
            503 => {
                refused += 1;
                assert!(
                    headers.contains_key("retry-after"),
                    "503 without retry-after"
                );
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("overloaded"), "{text}");
            }
            other => panic!(
                "broadcast answered {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "storm: {admitted} admitted, {refused} refused; descriptors {base_files} before, {peak} at the peak"
    );
    assert!(
        admitted >= 1 && refused >= 1,
        "the bound never acted: {admitted} admitted, {refused} refused"
    );
    // Every node counted exactly the admitted broadcasts: none lost, none doubled.
    for (i, seen) in counters.iter().enumerate() {
        assert_eq!(*seen.lock().unwrap(), admitted, "node n{i}");
    }
    // Connections to nodes for the deliveries in flight, one per caller
    // connection, and a margin for the runtime and the store.
    let bound = base_files + PER_CALLER + BROADCASTS + 64;
    assert!(
        peak <= bound,
        "{peak} descriptors open at the peak, above {bound}"
    );

    // Once the storm is over the same caller is admitted again.
    let (status, _, _) = post_full(&url, &token, "after").await;
    assert_eq!(status, 200);
    let mut hub = hub;
    assert!(hub.process.alive());
    assert!(healthy(hub.addr, Duration::from_secs(5)).await);
}
