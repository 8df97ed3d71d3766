//! Forwarding through the mediator to real HTTP nodes on loopback:
//! unicast, any-of-group, broadcast, and every way delivery can fail.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mediator_core::auth::Claims;
use mediator_core::{ManualClock, Timestamp};
use mediator_tests::harness::*;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn unicast_keeps_method_path_query_type_and_body() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let caller = hub.token_for("billing/worker-1");

    let before = Timestamp::now();
    let answer = call(
        "PUT",
        &hub.url("/one/users/api/status/201/a%20b?c=d&e=f%26g"),
        &[
            ("authorization", &format!("Bearer {caller}")),
            ("content-type", "text/plain; charset=latin1"),
            ("x-custom", "kept"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
        "hello",
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.header("x-mediator-node"), Some("users/api"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-node-label"), Some("api"));
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    // The node's hop-by-hop headers stay on its own connection.
    assert_eq!(answer.header("keep-alive"), None);
    let reply = answer.json();
    assert_eq!(reply["label"], "api");

    let seen = node.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.uri, "/status/201/a%20b?c=d&e=f%26g");
    assert_eq!(seen.body, "hello");
    assert_eq!(
        seen.header("content-type"),
        Some("text/plain; charset=latin1")
    );
    assert_eq!(seen.header("x-custom"), Some("kept"));
    // The caller's trace goes on, with the mediator's hop as the parent.
    let traceparent = seen.header("traceparent").expect("a traceparent");
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    assert_ne!(&traceparent[36..52], "b7ad6b7169203331");
    assert_eq!(answer.header("x-request-id"), seen.header("x-request-id"));
    assert_eq!(seen.header("x-mediator"), Some("true"));
    assert_eq!(seen.header("x-mediator-from"), Some("billing/worker-1"));
    assert_eq!(seen.header("x-mediator-target"), Some("users/api"));
    let deadline: i64 = seen
        .header("x-mediator-deadline")
        .expect("deadline header")
        .parse()
        .expect("ms since the epoch");
    // The hub's deadline is 5 s.
    let after = Timestamp::now();
    assert!(deadline >= (before + Duration::from_secs(5)).as_millis());
    assert!(deadline <= (after + Duration::from_secs(5)).as_millis());
    assert_eq!(seen.header("content-length"), Some("5"));
    assert!(seen
        .header("host")
        .is_some_and(|h| h.starts_with("127.0.0.1:")));

    // Any method goes through, and an empty path is `/`.
    let answer = call_as("DELETE", &hub.url("/one/users/api"), &caller, "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(node.last().method, "DELETE");
    assert_eq!(node.last().uri, "/");
}

#[tokio::test]
async fn the_callers_credentials_never_reach_the_node() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let token = hub.token_for("billing/worker-1");

    let body = json!({"x-jwt": token, "payload": "p", "nested": {"keep": true}}).to_string();
    let answer = call(
        "POST",
        &hub.url(&format!(
            "/one/users/api/path?x-jwt={token}&keep=1&x%2Djwt={token}"
        )),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt", &token),
            ("cookie", "session=s3cr3t"),
            ("proxy-authorization", "Basic eDp5"),
            ("content-type", "application/json"),
            // A caller may not speak for another node.
            ("x-mediator-from", "users/admin"),
            ("x-mediator-target", "users/other"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = node.last();
    assert_eq!(seen.uri, "/path?keep=1");
    let forwarded: Value = serde_json::from_slice(&seen.body).expect("JSON body");
    assert_eq!(forwarded, json!({"payload": "p", "nested": {"keep": true}}));
    for name in ["authorization", "x-jwt", "cookie", "proxy-authorization"] {
        assert!(seen.header(name).is_none(), "{name} reached the node");
    }
    assert_eq!(seen.header("x-mediator-from"), Some("billing/worker-1"));
    assert_eq!(seen.header("x-mediator-target"), Some("users/api"));
    let everything = format!(
        "{:?} {} {}",
        seen.headers,
        seen.uri,
        String::from_utf8_lossy(&seen.body)
    );
    assert!(
        !everything.contains(&token),
        "the token leaked: {everything}"
    );
    assert!(!everything.contains("s3cr3t"));

    // A non-JSON body is passed byte for byte, even if it mentions x-jwt.
    let raw = b"\x00\x01 x-jwt raw".to_vec();
    let answer = call(
        "POST",
        &hub.url("/one/users/api/raw"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/octet-stream"),
        ],
        raw.clone(),
    )
    .await;
    assert_eq!(answer.body, raw);
    assert_eq!(node.last().body, raw);
}

#[tokio::test]
async fn underscored_spellings_of_reserved_headers_never_reach_the_node() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let token = hub.token_for("billing/worker-1");

    // A CGI or WSGI node reads `x_mediator_from` as HTTP_X_MEDIATOR_FROM,
    // the header the mediator vouches for.
    let answer = call(
        "POST",
        &hub.url("/one/users/api/path"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x_mediator_from", "users/admin"),
            ("X_Mediator-Target", "users/other"),
            ("x-mediator_deadline", "1"),
            ("x_jwt", &token),
            ("proxy_authorization", "Basic eDp5"),
            ("x_custom", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = node.last();
    for (name, _) in &seen.headers {
        let folded = name.as_str().replace('_', "-");
        assert!(
            !folded.starts_with("x-mediator") || !name.as_str().contains('_'),
            "{name} reached the node"
        );
        assert!(
            folded != "x-jwt" && folded != "proxy-authorization",
            "{name} reached the node"
        );
    }
    assert_eq!(seen.header("x-mediator-from"), Some("billing/worker-1"));
    assert_eq!(seen.header("x_custom"), Some("kept"));
    assert!(!format!("{:?}", seen.headers).contains(&token));
}

#[tokio::test]
async fn an_unverified_caller_is_not_named_to_the_node() {
    let hub = Hub::config().tokens_without_sub().start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let original = original_token();
    let answer = call(
        "POST",
        &hub.url("/one/users/api/x"),
        &[("x-jwt", &original), ("x-mediator-from", "users/admin")],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(node.last().header("x-mediator-from"), None);
}

#[tokio::test]
async fn the_unnamed_node_is_reached_with_an_empty_name_segment() {
    let hub = Hub::start().await;
    let unnamed = EchoNode::start("unnamed").await;
    let named = EchoNode::start("named").await;
    hub.register("billing/", &unnamed.url).await;
    hub.register("billing/x", &named.url).await;
    let caller = hub.token_for("users/api");
    let answer = call_as("POST", &hub.url("/one/billing//invoice/7"), &caller, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["label"], "unnamed");
    assert_eq!(answer.header("x-mediator-node"), Some("billing/"));
    let seen = unnamed.last();
    assert_eq!(seen.uri, "/invoice/7");
    assert_eq!(seen.header("x-mediator-target"), Some("billing/"));
    // `/one/billing` alone is the unnamed node too.
    let answer = call_as("POST", &hub.url("/one/billing"), &caller, "{}").await;
    assert_eq!(answer.json()["label"], "unnamed");
    assert_eq!(named.count(), 0);
}

#[tokio::test]
async fn broadcast_answers_per_node_with_a_summary() {
    let hub = Hub::start().await;
    let a = EchoNode::start("a").await;
    let b = EchoNode::start("b").await;
    let slow = EchoNode::start("slow").await;
    let id_a = hub.register("cache/a", &a.url).await;
    let id_dead = hub.register("cache/dead", &dead_url().await).await;
    let id_b = hub.register("cache/b", &format!("{}/slow/0", b.url)).await;
    let id_slow = hub
        .register("cache/slow", &format!("{}/slow/3000", slow.url))
        .await;
    let caller = hub.token_for("users/api");

    let answer = call(
        "POST",
        &hub.url("/many/cache/flush?all=1"),
        &[
            ("authorization", &format!("Bearer {caller}")),
            ("x-mediator-timeout-ms", "500"),
            ("content-type", "application/json"),
        ],
        r#"{"why":"test"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.header("x-mediator-summary"),
        Some("asked=4; answered=2; failed=1; timed_out=1")
    );
    let entries = answer.json();
    let entries = entries.as_array().expect("array");
    assert_eq!(entries.len(), 4);
    let ids: Vec<u64> = entries
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [id_a, id_dead, id_b, id_slow]);

    assert_eq!(entries[0]["node"], "cache/a");
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["then"]["label"], "a");
    assert_eq!(entries[0]["then"]["path"], "/flush?all=1");
    assert_eq!(entries[0]["then"]["body"], r#"{"why":"test"}"#);

    assert_eq!(entries[1]["node"], "cache/dead");
    assert_eq!(entries[1]["catch"]["kind"], "node_unreachable");
    assert_eq!(entries[1]["catch"]["fault"], "node");
    assert!(entries[1]["catch"]["error"]
        .as_str()
        .expect("message")
        .contains("cache/dead"));
    assert!(entries[1].get("then").is_none());

    assert_eq!(entries[2]["then"]["label"], "b");
    assert_eq!(entries[2]["then"]["path"], "/slow/0/flush?all=1");

    assert_eq!(entries[3]["catch"]["kind"], "deadline_passed");
    assert_eq!(entries[3]["catch"]["fault"], "node");

    for node in [&a, &b, &slow] {
        assert_eq!(node.last().header("x-mediator-target"), Some("cache/*"));
        assert_eq!(node.last().header("x-mediator-from"), Some("users/api"));
    }
}

#[tokio::test]
async fn broadcast_replies_that_are_not_json_come_base64() {
    let hub = Hub::start().await;
    let a = EchoNode::start("a").await;
    hub.register("blobs/a", &a.url).await;
    let caller = hub.token_for("users/api");
    let answer = call_as(
        "POST",
        &hub.url("/many/blobs/raw"),
        &caller,
        vec![0u8, 159, 146, 150],
    )
    .await;
    assert_eq!(
        answer.header("x-mediator-summary"),
        Some("asked=1; answered=1; failed=0; timed_out=0")
    );
    let entries = answer.json();
    assert_eq!(
        entries[0]["then_base64"],
        STANDARD.encode([0u8, 159, 146, 150])
    );
    assert!(entries[0].get("then").is_none());
    assert_eq!(entries[0]["status"], 200);
}

#[tokio::test]
async fn any_spreads_load_and_skips_a_dead_node() {
    let hub = Hub::start().await;
    let nodes = [
        EchoNode::start("w1").await,
        EchoNode::start("w2").await,
        EchoNode::start("w3").await,
    ];
    for (i, node) in nodes.iter().enumerate() {
        hub.register(&format!("workers/w{}", i + 1), &node.url)
            .await;
    }
    let caller = hub.token_for("users/api");
    let mut answers = Vec::new();
    for _ in 0..30 {
        let answer = call_as("POST", &hub.url("/any/workers/job"), &caller, "{}").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let label = answer.json()["label"].as_str().expect("label").to_owned();
        assert_eq!(
            answer.header("x-mediator-node"),
            Some(format!("workers/{label}").as_str())
        );
        answers.push(answer);
    }
    // One request at a time: every node is equally idle, so each takes its turn.
    let counts = count_labels(&answers);
    for node in &nodes {
        assert_eq!(
            counts.get(&node.label),
            Some(&10),
            "uneven spread: {counts:?}"
        );
        assert_eq!(node.last().header("x-mediator-target"), Some("workers/?"));
        assert_eq!(node.last().uri, "/job");
    }

    // A dead node in the group: it is skipped and every request still succeeds.
    hub.register("workers/dead", &dead_url().await).await;
    let mut answers = Vec::new();
    for _ in 0..40 {
        let answer = call_as("POST", &hub.url("/any/workers/job"), &caller, "{}").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answers.push(answer);
    }
    let counts = count_labels(&answers);
    assert_eq!(counts.values().sum::<usize>(), 40);
    for node in &nodes {
        assert!(
            counts.get(&node.label).is_some_and(|n| *n >= 3),
            "{counts:?}"
        );
    }

    // Concurrent requests spread too: all answered, all three nodes used.
    let node_slow = |i: usize| hub.url(&format!("/any/workers/slow/{}/job", 20 + i));
    let calls = (0..12).map(|i| {
        let url = node_slow(i);
        let caller = caller.clone();
        async move { call_as("POST", &url, &caller, "{}").await }
    });
    let answers = futures_join_all(calls).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(count_labels(&answers).len(), 3);
}

async fn futures_join_all<F: std::future::Future<Output = Answer> + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<Answer> {
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.expect("call task"));
    }
    answers
}

#[tokio::test]
async fn unknown_targets_are_404_with_the_originals_words() {
    let hub = Hub::start().await;
    let caller = hub.token_for("users/api");
    let one = call_as("POST", &hub.url("/one/nowhere/none/x"), &caller, "{}").await;
    let body = assert_error(&one, 404, "unknown_target", "caller");
    assert_eq!(body["error"], "clusters not found");
    for path in ["/many/nowhere/x", "/any/nowhere/x"] {
        let answer = call_as("POST", &hub.url(path), &caller, "{}").await;
        let body = assert_error(&answer, 404, "unknown_target", "caller");
        assert_eq!(body["error"], "cluster not found");
    }
    // Bad names are refused before anything is looked up.
    let answer = call_as("POST", &hub.url("/one/bad%20group/n/x"), &caller, "{}").await;
    assert_error(&answer, 400, "invalid", "caller");
}

#[tokio::test]
async fn expired_leases_make_no_node_available() {
    let hub = Hub::config()
        .clock(ManualClock::starting_now())
        .start()
        .await;
    let node = EchoNode::start("api").await;
    hub.register_expired("users/api", &node.url).await;
    let caller = hub.token_for("billing/x");
    for path in ["/one/users/api/x", "/any/users/x", "/many/users/x"] {
        let answer = call_as("POST", &hub.url(path), &caller, "{}").await;
        assert_error(&answer, 503, "no_node_available", "hub");
    }
    assert_eq!(node.count(), 0);
}

#[tokio::test]
async fn a_slow_node_past_its_deadline_is_504() {
    let hub = Hub::start().await;
    let node = EchoNode::start("slow").await;
    hub.register("users/slow", &node.url).await;
    let caller = hub.token_for("billing/x");
    let started = std::time::Instant::now();
    let answer = call(
        "POST",
        &hub.url("/one/users/slow/slow/5000"),
        &[
            ("authorization", &format!("Bearer {caller}")),
            ("x-mediator-timeout-ms", "300"),
        ],
        "{}",
    )
    .await;
    let body = assert_error(&answer, 504, "deadline_passed", "node");
    assert!(body["error"]
        .as_str()
        .expect("message")
        .contains("users/slow"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The node was told the shorter deadline.
    let told: i64 = node
        .last()
        .header("x-mediator-deadline")
        .expect("deadline")
        .parse()
        .expect("ms");
    assert!(told <= (Timestamp::now()).as_millis());

    // A deadline already past fails at once.
    let past = (Timestamp::now() - Duration::from_secs(1))
        .as_millis()
        .to_string();
    let answer = call(
        "POST",
        &hub.url("/one/users/slow/x"),
        &[
            ("authorization", &format!("Bearer {caller}")),
            ("x-mediator-deadline", &past),
        ],
        "{}",
    )
    .await;
    assert_error(&answer, 504, "deadline_passed", "node");

    let answer = call(
        "POST",
        &hub.url("/one/users/slow/x"),
        &[
            ("authorization", &format!("Bearer {caller}")),
            ("x-mediator-timeout-ms", "soon"),
        ],
        "{}",
    )
    .await;
    assert_error(&answer, 400, "invalid", "caller");
}

#[tokio::test]
async fn unreachable_and_failing_nodes_are_502() {
    let hub = Hub::config()
        .delivery(|delivery| delivery.with_max_reply_body(1000))
        .start()
        .await;
    let caller = hub.token_for("billing/x");
    hub.register("users/dead", &dead_url().await).await;
    let answer = call_as("POST", &hub.url("/one/users/dead/x"), &caller, "{}").await;
    let body = assert_error(&answer, 502, "node_unreachable", "node");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("users/dead"),
        "{body}"
    );

    // A node that accepts, reads the request and hangs up without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    hub.register("users/rude", &format!("http://{addr}")).await;
    let answer = call_as("POST", &hub.url("/one/users/rude/x"), &caller, "{}").await;
    assert_error(&answer, 502, "node_failed", "node");

    let big = EchoNode::start("big").await;
    hub.register("users/big", &big.url).await;
    let answer = call_as("POST", &hub.url("/one/users/big/big/1000"), &caller, "{}").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 1000);
    let answer = call_as("POST", &hub.url("/one/users/big/big/1001"), &caller, "{}").await;
    let body = assert_error(&answer, 502, "node_failed", "node");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("reply too large"),
        "{body}"
    );
}

#[tokio::test]
async fn a_scoped_token_may_call_only_its_groups() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let key = "billing/x".parse().expect("key");
    let scoped = mint(
        &Claims::node(&key, Timestamp::now(), Duration::from_secs(60))
            .with_scope(vec!["cache".into()]),
    );
    let answer = call_as("POST", &hub.url("/one/users/api/x"), &scoped, "{}").await;
    assert_error(&answer, 403, "forbidden", "caller");
    assert_eq!(node.count(), 0);
}

#[tokio::test]
async fn an_escaped_x_jwt_field_is_a_token_and_never_reaches_the_node() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let token = hub.token_for("billing/worker-1");

    // `x\u002djwt` is the key `x-jwt` to any JSON parser, the node's included.
    let body = format!(r#"{{"x\u002djwt":"{token}","payload":"p"}}"#);
    let answer = call_as("POST", &hub.url("/one/users/api/path"), &token, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = node.last();
    let forwarded: Value = serde_json::from_slice(&seen.body).expect("JSON body");
    assert_eq!(forwarded, json!({"payload": "p"}));
    assert!(!String::from_utf8_lossy(&seen.body).contains(&token));

    // And it is read as the caller's token, as the field is the same one.
    let body = format!(r#"{{"\u0078-jwt":"{token}","payload":"q"}}"#);
    let answer = call("POST", &hub.url("/one/users/api/path"), &[], body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        node.last().header("x-mediator-from"),
        Some("billing/worker-1")
    );
    assert!(!String::from_utf8_lossy(&node.last().body).contains(&token));

    // A byte order mark in front, which common JSON body parsers skip.
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(format!(r#"{{"x-jwt":"{token}","payload":"r"}}"#).as_bytes());
    let answer = call_as("POST", &hub.url("/one/users/api/path"), &token, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let forwarded: Value = serde_json::from_slice(&node.last().body).expect("JSON body");
    assert_eq!(forwarded, json!({"payload": "r"}));
}

#[tokio::test]
async fn the_forwarded_path_cannot_change_the_nodes_origin() {
    let hub = Hub::start().await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    let caller = hub.token_for("billing/worker-1");
    let host = node.addr.to_string();
    for (path, expected) in [
        ("/one/users/api//evil.example/x", "//evil.example/x"),
        ("/one/users/api/@evil.example/x", "/@evil.example/x"),
        ("/one/users/api/..%2f..%2fx", "/..%2f..%2fx"),
        ("/one/users/api/../../x?y=1", "/../../x?y=1"),
    ] {
        let answer = call_as("POST", &hub.url(path), &caller, "{}").await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let seen = node.last();
        assert_eq!(seen.uri, expected, "{path}");
        assert_eq!(seen.header("host"), Some(host.as_str()), "{path}");
    }
}

#[tokio::test]
async fn a_node_cannot_put_words_in_the_mediators_mouth() {
    use tokio::io::AsyncWriteExt;

    // A node that answers with headers only the mediator may set.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let node = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                  x-mediator-node: users/other\r\nx-mediator-from: ops/root\r\n\
                  x-mediator-summary: asked=9; answered=9; failed=0; timed_out=0\r\n\
                  x-mediator-deadline: 1\r\nx-kept: yes\r\n\
                  content-length: 2\r\nconnection: close\r\n\r\n{}",
            )
            .await
            .expect("write");
    });
    let hub = Hub::start().await;
    hub.register("users/api", &url).await;
    let caller = hub.token_for("billing/worker-1");
    let answer = call_as("POST", &hub.url("/one/users/api/x"), &caller, "{}").await;
    node.await.expect("node task");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-kept"), Some("yes"));
    assert_eq!(answer.header("x-mediator-node"), Some("users/api"));
    for name in [
        "x-mediator-from",
        "x-mediator-summary",
        "x-mediator-deadline",
    ] {
        assert_eq!(answer.header(name), None, "the node set {name}");
    }
}

/// A broadcast builds the node request's head once: every node gets the
/// same sender, target, deadline, request id and travelling headers, and
/// each its own address in `host`.
#[tokio::test]
async fn every_node_of_a_broadcast_gets_the_same_head_and_its_own_host() {
    let hub = Hub::start().await;
    let nodes = [
        EchoNode::start("a").await,
        EchoNode::start("b").await,
        EchoNode::start("c").await,
    ];
    for (node, name) in nodes.iter().zip(["cache/a", "cache/b", "cache/c"]) {
        hub.register(name, &node.url).await;
    }
    let token = hub.token_for("ops/cron");
    let answer = hub
        .call(
            "POST",
            "/many/cache/flush?all=1",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-request-id", "flush-1"),
                ("content-type", "application/json"),
                ("x-custom", "kept"),
            ],
            "{}",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen: Vec<Seen> = nodes.iter().map(EchoNode::last).collect();
    let same = [
        "x-mediator-from",
        "x-mediator-target",
        "x-mediator-deadline",
        "x-request-id",
        "content-type",
        "x-custom",
    ];
    for name in same {
        let values: Vec<Option<&str>> = seen.iter().map(|s| s.header(name)).collect();
        assert!(values[0].is_some(), "{name} missing");
        assert!(values.iter().all(|v| *v == values[0]), "{name}: {values:?}");
    }
    assert_eq!(seen[0].header("x-mediator-target"), Some("cache/*"));
    assert_eq!(seen[0].header("x-request-id"), Some("flush-1"));
    for (seen, node) in seen.iter().zip(&nodes) {
        assert_eq!(seen.header("host"), Some(node.addr.to_string().as_str()));
        assert_eq!(seen.uri, "/flush?all=1");
        assert!(seen.header("authorization").is_none());
    }
}
