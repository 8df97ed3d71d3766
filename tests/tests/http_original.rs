//! The exact requests the original's Node child libraries send, and the
//! exact replies they expect: so its children work against this mediator
//! unchanged. Registration and where the token may be are routing, checked
//! on the service in process; sending and broadcasting go over a socket to
//! real nodes, end to end, as the children do.

use mediator_tests::harness::*;
use serde_json::{json, Value};

fn original_config() -> HubConfig {
    Hub::config().tokens_without_sub()
}

/// POST with the headers the original's libraries send.
async fn post(hub: &Hub, path: &str, body: &Value) -> Answer {
    hub.call(
        "POST",
        path,
        &[
            ("x-jwt", &original_token()),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

fn is_rfc3339_millis(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
    })
}

#[tokio::test]
async fn registration_as_the_originals_children_send_it() {
    let hub = original_config().in_process();
    let echo = EchoNode::start("echo").await;
    let port = echo.addr.port();

    let body =
        json!({"cluster": "bench", "node": "echo", "domain": "http://127.0.0.1", "port": port});
    let first = post(&hub, "/register", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));
    assert!(first
        .header("cache-control")
        .is_some_and(|c| c.contains("no-cache")));
    let reply = first.json();
    assert_eq!(reply["errors"], json!({}));
    let entity = &reply["entity"];
    assert_eq!(entity["id"], 1);
    assert_eq!(entity["cluster"], "bench");
    assert_eq!(entity["node"], "echo");
    assert_eq!(entity["domain"], "http://127.0.0.1");
    assert_eq!(entity["port"], port);
    assert!(entity["port"].is_u64(), "port comes back as a number");
    assert!(
        is_rfc3339_millis(&entity["created"]),
        "{}",
        entity["created"]
    );
    assert_eq!(entity["updated"], Value::Null);
    // Without a ttl the original's children get the default lease (65 min).
    assert_eq!(entity["ttl"], 65 * 60);

    // Registering again, as the children do every 15 minutes: same id,
    // `updated` set, `created` kept.
    let again = post(&hub, "/register", &body).await.json();
    assert_eq!(again["entity"]["id"], 1);
    assert_eq!(again["entity"]["created"], entity["created"]);
    assert!(is_rfc3339_millis(&again["entity"]["updated"]));
    assert_eq!(again["errors"], json!({}));

    // The port as a string of digits, an `id` field, and a null node.
    let unnamed = json!({"cluster": "bench", "node": null, "domain": "http://127.0.0.1", "port": port.to_string(), "id": 7});
    let reply = post(&hub, "/register", &unnamed).await.json();
    assert_eq!(reply["errors"], json!({}));
    assert_eq!(reply["entity"]["id"], 2);
    assert_eq!(reply["entity"]["node"], Value::Null);
    assert_eq!(reply["entity"]["port"], port);

    // The default port 80 is left out of the URL the mediator calls.
    let default_port =
        json!({"cluster": "web", "node": "front", "domain": "https://front.example"});
    let reply = post(&hub, "/register", &default_port).await.json();
    assert_eq!(reply["entity"]["url"], "https://front.example");

    // A validation failure: 200, the body as sent, one message per field.
    let bad = json!({"cluster": "bench", "node": "no spaces", "domain": "http://127.0.0.1", "port": port});
    let answer = post(&hub, "/register", &bad).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"entity": bad, "errors": {"node": "name should match pattern /^[a-z\\d_-]+$/i"}})
    );
}

#[tokio::test]
async fn sending_and_broadcasting_as_the_originals_children_do() {
    let hub = original_config().start().await;
    let echo = EchoNode::start("echo").await;
    let other = EchoNode::start("other").await;
    let unnamed = EchoNode::start("unnamed").await;
    for (node, child) in [
        (json!("echo"), &echo),
        (json!("other"), &other),
        (Value::Null, &unnamed),
    ] {
        let body = json!({"cluster": "bench", "node": node, "domain": "http://127.0.0.1", "port": child.addr.port()});
        assert_eq!(
            post(&hub, "/register", &body).await.json()["errors"],
            json!({})
        );
    }

    // mediator(cluster, node, path, data)
    let message = json!({"fromCluster": "client", "fromNode": "sender", "payload": "00112233445566778899aabbccddeeff:cafebabe"});
    let answer = post(&hub, "/one/bench/echo/some/path", &message).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    // The child's JSON reply, as it is.
    let reply = answer.json();
    assert_eq!(reply["label"], "echo");
    let seen = echo.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/some/path");
    assert_eq!(seen.header("x-mediator"), Some("true"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-jwt"), None);
    // The original's tokens name nobody, so no sender is claimed.
    assert_eq!(seen.header("x-mediator-from"), None);
    let received: Value = serde_json::from_slice(&seen.body).expect("JSON");
    assert_eq!(received, message);

    // mediator(cluster, null, path, data): the unnamed child.
    let answer = post(&hub, "/one/bench//some/path", &message).await;
    assert_eq!(answer.json()["label"], "unnamed");

    // The broadcast: one {"then"} per child, in registration order.
    let answer = post(&hub, "/many/bench/some/path", &message).await;
    assert_eq!(answer.status, 200);
    let entries = answer.json();
    let labels: Vec<&str> = entries
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["then"]["label"].as_str().expect("then"))
        .collect();
    assert_eq!(labels, ["echo", "other", "unnamed"]);
    assert_eq!(
        answer.header("x-mediator-summary"),
        Some("asked=3; answered=3; failed=0; timed_out=0")
    );

    // Unknown targets, in the original's words.
    let answer = post(&hub, "/one/nowhere/echo/p", &message).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"], "clusters not found");
    let answer = post(&hub, "/many/nowhere/p", &message).await;
    assert_eq!(answer.json()["error"], "cluster not found");

    // Removal by pair, then by id; then the original's 409.
    let answer = post(
        &hub,
        "/remove",
        &json!({"cluster": "bench", "node": "other"}),
    )
    .await;
    assert_eq!(answer.json(), json!({"affected": 1}));
    let answer = post(&hub, "/remove/1", &json!({})).await;
    assert_eq!(answer.json(), json!({"affected": 1}));
    let answer = post(&hub, "/remove", &json!({})).await;
    assert_eq!(answer.status, 409);
    assert_eq!(
        answer.json()["error"],
        "it's necessary to give id in url or cluster and node in json body"
    );

    // The original's tokens carry every power, the admin list included.
    let answer = post(&hub, "/admin/clusters/bench", &json!({})).await;
    let list = answer.json()["list"].as_array().expect("list").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["node"], Value::Null);
    let answer = post(&hub, "/admin/cluster/999", &json!({})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"], "Cluster not found by id: '999'");
}

#[tokio::test]
async fn the_token_may_come_in_the_query_or_the_body() {
    let hub = original_config().in_process();
    let echo = EchoNode::start("echo").await;
    let token = original_token();
    let register = json!({"cluster": "bench", "node": "echo", "domain": "http://127.0.0.1", "port": echo.addr.port(), "x-jwt": token});
    let answer = hub
        .call(
            "POST",
            "/register",
            &[("content-type", "application/json")],
            register.to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["errors"], json!({}));

    let answer = hub
        .call(
            "POST",
            &format!("/one/bench/echo/p?x-jwt={token}"),
            &[("content-type", "application/json")],
            json!({"payload": "x"}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(echo.last().uri, "/p");

    // Without any token: a JSON 401, not the original's HTML login page.
    let answer = hub
        .call(
            "POST",
            "/one/bench/echo/p",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("content-type"), Some("application/json"));
}
