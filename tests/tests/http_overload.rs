//! Bounds on deliveries in flight: a caller's storm of broadcasts is
//! refused past its bound with 503 and `retry-after`, while other callers
//! still get through; past the mediator's bound everyone waits.

use std::time::Duration;

use mediator_tests::harness::*;
use tokio::task::JoinHandle;

/// Two slow nodes in group `slow` and a quick one at `fast/api`.
async fn formation(hub: &Hub) -> Vec<EchoNode> {
    let nodes = vec![
        EchoNode::start("s1").await,
        EchoNode::start("s2").await,
        EchoNode::start("fast").await,
    ];
    hub.register("slow/s1", &nodes[0].url).await;
    hub.register("slow/s2", &nodes[1].url).await;
    hub.register("fast/api", &nodes[2].url).await;
    nodes
}

/// Starts a broadcast to the slow group that takes `ms` at each node.
fn storm(hub: &Hub, token: &str, ms: u64) -> JoinHandle<Answer> {
    let url = hub.url(&format!("/many/slow/slow/{ms}"));
    let token = token.to_owned();
    tokio::spawn(async move { call_as("POST", &url, &token, "").await })
}

async fn both_nodes_busy_with(hub: &Hub, requests: usize) {
    eventually("the broadcasts reach both nodes", || {
        ["slow/s1", "slow/s2"]
            .iter()
            .all(|k| hub.mediator.routes().in_flight(&key(k)) == Some(requests))
    })
    .await;
}

#[tokio::test]
async fn a_callers_broadcast_storm_is_refused_while_others_get_through() {
    let hub = Hub::config()
        .limits(|l| {
            l.max_in_flight = 100;
            l.max_in_flight_per_caller = 4;
        })
        .start()
        .await;
    let _nodes = formation(&hub).await;
    let stormer = hub.token_for("users/stormer");
    // Two broadcasts to two nodes: four deliveries, the caller's bound.
    let running = [storm(&hub, &stormer, 1500), storm(&hub, &stormer, 1500)];
    both_nodes_busy_with(&hub, 2).await;

    let refused = hub.call_as("POST", "/many/slow/x", &stormer, "").await;
    assert_error(&refused, 503, "overloaded", "hub");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let refused = hub.call_as("POST", "/one/fast/api/x", &stormer, "").await;
    assert_error(&refused, 503, "overloaded", "hub");

    let other = hub.token_for("users/calm");
    let answer = hub.call_as("POST", "/one/fast/api/x", &other, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = hub.call_as("POST", "/many/slow/x", &other, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    for broadcast in running {
        let answer = tokio::time::timeout(Duration::from_secs(10), broadcast)
            .await
            .expect("the storm ends")
            .expect("the task ends");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // Its deliveries done, the caller is served again.
    let answer = hub.call_as("POST", "/one/fast/api/x", &stormer, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn past_the_mediators_bound_every_caller_waits() {
    let hub = Hub::config()
        .limits(|l| {
            l.max_in_flight = 4;
            l.max_in_flight_per_caller = 100;
        })
        .start()
        .await;
    let _nodes = formation(&hub).await;
    let stormer = hub.token_for("users/stormer");
    let running = [storm(&hub, &stormer, 1000), storm(&hub, &stormer, 1000)];
    both_nodes_busy_with(&hub, 2).await;
    let other = hub.token_for("users/calm");
    let refused = hub.call_as("POST", "/one/fast/api/x", &other, "").await;
    let body = assert_error(&refused, 503, "overloaded", "hub");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("mediator")));
    assert_eq!(refused.header("retry-after"), Some("1"));
    for broadcast in running {
        let _ = broadcast.await;
    }
    let answer = hub.call_as("POST", "/one/fast/api/x", &other, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}
