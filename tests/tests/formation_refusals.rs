//! A started node refuses what was not meant for it: hand-crafted requests
//! sent straight at its callback server, past the mediator.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use mediator_core::{NodeKey, Target};
use mediator_tests::harness::{call, describe, json, key, ring, Hub};
use mediator_transport_http::client::{open_reply, seal_request};
use serde_json::Value;

/// A node's callback server, called straight, past the mediator.
struct Direct {
    addr: SocketAddr,
}

impl Direct {
    fn new(addr: SocketAddr) -> Direct {
        Direct { addr }
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Bytes) {
        let url = format!("http://{}{path}", self.addr);
        let answer = call("POST", &url, headers, body).await;
        let status = StatusCode::from_u16(answer.status).expect("a valid status");
        (status, answer.body)
    }
}

fn refusal(status: StatusCode, body: &[u8]) -> (u16, String, String) {
    let parsed: Value = serde_json::from_slice(body).expect("a JSON error");
    assert_eq!(parsed["fault"], "caller", "{parsed}");
    (
        status.as_u16(),
        parsed["kind"].as_str().expect("kind").to_owned(),
        parsed["error"].as_str().expect("message").to_owned(),
    )
}

#[tokio::test]
async fn the_node_refuses_wrong_targets_senders_and_paths() {
    let hub = Hub::start().await;
    let me = key("vault/keeper");
    let keeper = hub
        .node("vault/keeper")
        .require_sender(true)
        .start(describe("keeper"))
        .await
        .expect("starts");
    let direct = Direct::new(keeper.local_addr().expect("bound"));
    let ring = ring();
    let alice = key("people/alice");
    let one = Target::One(me.clone());
    let sealed = seal_request(&ring, Some(&alice), &one, "/open", b"please").expect("seal");

    // The well-formed request opens and is answered, sealed for alice.
    let good = [
        ("x-mediator-target", "vault/keeper"),
        ("x-mediator-from", "people/alice"),
    ];
    let (status, body) = direct.post("/open", &good, sealed.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let reply = open_reply(&ring, &me, Some(&alice), "/open", &body).expect("opens for alice");
    assert_eq!(json(&reply)["from"], "people/alice");
    assert!(open_reply(&ring, &me, Some(&key("people/mallory")), "/open", &body).is_err());

    // Addressed to another node of the group, or to another group.
    for target in ["vault/other", "vault/", "bank/keeper", "bank/*", "bank/?"] {
        let (status, body) = direct
            .post(
                "/open",
                &[
                    ("x-mediator-target", target),
                    ("x-mediator-from", "people/alice"),
                ],
                sealed.clone(),
            )
            .await;
        let (code, kind, message) = refusal(status, &body);
        assert_eq!((code, kind.as_str()), (421, "misdirected"), "{target}");
        assert!(message.contains(target), "{message}");
    }
    // Sealed by alice but presented as from mallory.
    let (status, body) = direct
        .post(
            "/open",
            &[
                ("x-mediator-target", "vault/keeper"),
                ("x-mediator-from", "people/mallory"),
            ],
            sealed.clone(),
        )
        .await;
    assert_eq!(refusal(status, &body).1, "sealed");
    // No verified sender, which this node requires.
    let (status, body) = direct
        .post(
            "/open",
            &[("x-mediator-target", "vault/keeper")],
            sealed.clone(),
        )
        .await;
    assert_eq!(refusal(status, &body).0, 403);
    // Replayed at another path.
    let (status, body) = direct.post("/drain", &good, sealed.clone()).await;
    let (code, kind, _) = refusal(status, &body);
    assert_eq!((code, kind.as_str()), (400, "sealed"));
    // Re-targeted as a broadcast to the same group: addresses the node,
    // but the seal binds the original target.
    let (status, body) = direct
        .post(
            "/open",
            &[
                ("x-mediator-target", "vault/*"),
                ("x-mediator-from", "people/alice"),
            ],
            sealed.clone(),
        )
        .await;
    assert_eq!(refusal(status, &body).1, "sealed");
    // One flipped bit.
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let (status, body) = direct.post("/open", &good, flipped).await;
    assert_eq!(refusal(status, &body).1, "sealed");
    // Not through a mediator at all.
    let (status, body) = direct.post("/open", &[], sealed.clone()).await;
    let (code, kind, message) = refusal(status, &body);
    assert_eq!((code, kind.as_str()), (400, "invalid"));
    assert!(message.contains("x-mediator-target"), "{message}");
    // Garbage headers.
    let (status, body) = direct
        .post(
            "/open",
            &[
                ("x-mediator-target", "vault"),
                ("x-mediator-from", "people/alice"),
            ],
            sealed.clone(),
        )
        .await;
    assert_eq!(refusal(status, &body).0, 400);
    let (status, body) = direct
        .post(
            "/open",
            &[
                ("x-mediator-target", "vault/keeper"),
                ("x-mediator-from", "people/al ice"),
            ],
            sealed.clone(),
        )
        .await;
    assert_eq!(refusal(status, &body).0, 400);
    // A deadline already passed: refused before the handler runs.
    let (status, body) = direct
        .post(
            "/open",
            &[
                ("x-mediator-target", "vault/keeper"),
                ("x-mediator-from", "people/alice"),
                ("x-mediator-deadline", "1000"),
            ],
            sealed,
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&body)["kind"], "deadline_passed");

    keeper.shutdown().await.expect("shutdown");
    hub.stop().await;
}

#[tokio::test]
async fn a_node_that_accepts_anonymous_callers_says_so() {
    let hub = Hub::start().await;
    let me = NodeKey::named("open", "door").expect("key");
    let door = hub
        .node("open/door")
        .start(describe("door"))
        .await
        .expect("starts");
    let direct = Direct::new(door.local_addr().expect("bound"));
    let ring = ring();
    let sealed = seal_request(
        &ring,
        None,
        &Target::any("open").expect("any"),
        "/in",
        b"knock",
    )
    .expect("seal");
    let (status, body) = direct
        .post("/in", &[("x-mediator-target", "open/?")], sealed)
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&open_reply(&ring, &me, None, "/in", &body).expect("opens"));
    assert_eq!(seen["from"], Value::Null);
    assert_eq!(seen["target"], "open/?");
    assert_eq!(seen["body"], "knock");

    // Larger than the node reads: 413.
    drop(door);
    let small = hub
        .node("open/small")
        .max_body(1024)
        .start(describe("small"))
        .await
        .expect("starts");
    let direct = Direct::new(small.local_addr().expect("bound"));
    let (status, _) = direct
        .post("/in", &[("x-mediator-target", "open/small")], vec![0; 4096])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    small.shutdown().await.expect("shutdown");
    hub.stop().await;
}
