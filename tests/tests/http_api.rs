//! The mediator's own routes, called on its service in process (the socket
//! adds nothing to them): registration, leases, removal, admin, tokens,
//! probes, and every refusal; the size limit on the wire too.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mediator_core::auth::Claims;
use mediator_core::{Credentials, MemoryRegistry, Timestamp, TokenMinter};
use mediator_tests::harness::*;
use serde_json::json;

#[tokio::test]
async fn register_in_our_dialect_returns_the_row() {
    let hub = Hub::in_process();
    let token = hub.token_for("users/api");
    let body = json!({"group": "users", "name": "api", "url": "http://127.0.0.1:9000", "ttl": 30, "meta": {"zone": "a"}});
    let before = Timestamp::now();
    let answer = hub
        .call_as("POST", "/register", &token, body.to_string())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.header("cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    let reply = answer.json();
    assert_eq!(reply["errors"], json!({}));
    let entity = &reply["entity"];
    assert_eq!(entity["id"], 1);
    assert_eq!(entity["cluster"], "users");
    assert_eq!(entity["group"], "users");
    assert_eq!(entity["node"], "api");
    assert_eq!(entity["name"], "api");
    assert_eq!(entity["domain"], "http://127.0.0.1");
    assert_eq!(entity["port"], 9000);
    assert_eq!(entity["url"], "http://127.0.0.1:9000");
    assert_eq!(entity["ttl"], 30);
    assert_eq!(entity["updated"], serde_json::Value::Null);
    let created = entity["created"].as_str().expect("created");
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    let node = hub
        .mediator
        .registry()
        .get(&"users/api".parse().expect("key"))
        .await
        .expect("store")
        .expect("registered");
    assert_eq!(entity["lease_until"], node.lease_until.to_rfc3339());
    assert!(node.lease_until >= before + Duration::from_secs(30));
    assert_eq!(node.meta.get("zone").map(String::as_str), Some("a"));

    // Again: same id, `updated` set, `created` kept.
    let again = hub
        .call_as("POST", "/register", &token, body.to_string())
        .await;
    let entity2 = &again.json()["entity"];
    assert_eq!(entity2["id"], 1);
    assert_eq!(entity2["created"], entity["created"]);
    assert!(entity2["updated"].is_string());
}

#[tokio::test]
async fn our_dialect_refuses_bad_input_with_400() {
    let hub = Hub::in_process();
    let token = hub.admin_token();
    for (body, field) in [
        (json!({"group": "bad group", "url": "http://h"}), "group"),
        (
            json!({"group": "g", "name": "n/x", "url": "http://h"}),
            "name",
        ),
        (json!({"group": "g", "name": "n", "url": "ftp://h"}), "url"),
        (json!({"group": "g", "url": "http://h", "ttl": -1}), "ttl"),
        (json!({"group": "g", "url": "http://h", "ttl": 0}), "ttl"),
        (
            json!({"group": "g", "url": "http://h", "meta": {"a": 1}}),
            "meta",
        ),
        (json!({"group": 5, "url": "http://h"}), "group"),
    ] {
        let answer = hub
            .call_as("POST", "/register", &token, body.to_string())
            .await;
        let error = assert_error(&answer, 400, "invalid", "caller");
        let message = error["error"].as_str().expect("message");
        assert!(message.contains(field), "{body} → {message}");
    }
    assert!(hub.mediator.nodes(None).await.expect("list").is_empty());
}

#[tokio::test]
async fn original_dialect_refuses_with_200_and_an_errors_map() {
    let hub = Hub::in_process();
    let token = hub.admin_token();
    let cases = [
        (
            json!({"cluster": "bad name!", "node": "ok", "domain": "http://127.0.0.1", "port": 8080}),
            json!({"cluster": "name should match pattern /^[a-z\\d_-]+$/i"}),
        ),
        (
            json!({"cluster": "c", "node": "a.b", "domain": "http://127.0.0.1"}),
            json!({"node": "name should match pattern /^[a-z\\d_-]+$/i"}),
        ),
        (
            json!({"cluster": "c", "node": "n", "domain": "127.0.0.1"}),
            json!({"domain": "Domain should start from http:// or https://"}),
        ),
        (
            json!({"cluster": "c", "node": "n", "domain": "http://h", "port": "80a"}),
            json!({"port": "This value is not valid."}),
        ),
        (
            json!({"node": "n"}),
            json!({"cluster": "This field is missing.", "domain": "This field is missing."}),
        ),
        (
            json!({"cluster": "c".repeat(51), "domain": format!("http://{}", "h".repeat(50))}),
            json!({"cluster": "This value is not valid.", "domain": "This value is not valid."}),
        ),
    ];
    for (body, errors) in cases {
        let answer = hub
            .call_as("POST", "/register", &token, body.to_string())
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), json!({"entity": body, "errors": errors}));
    }
    assert!(hub.mediator.nodes(None).await.expect("list").is_empty());
}

#[tokio::test]
async fn malformed_json_is_400_everywhere() {
    let hub = Hub::in_process();
    let token = hub.admin_token();
    for path in ["/register", "/renew", "/remove"] {
        let answer = hub.call_as("POST", path, &token, "{\"cluster\": ").await;
        let error = assert_error(&answer, 400, "invalid", "caller");
        assert!(
            error["error"].as_str().expect("message").contains("JSON"),
            "{error}"
        );
        let answer = hub.call_as("POST", path, &token, "[1, 2]").await;
        assert_error(&answer, 400, "invalid", "caller");
    }
    // Binary garbage too.
    let answer = hub
        .call_as("POST", "/register", &token, vec![0xff, 0x00, 0xfe])
        .await;
    assert_error(&answer, 400, "invalid", "caller");
}

#[tokio::test]
async fn auth_refusals() {
    let hub = Hub::in_process();
    let body = json!({"group": "users", "name": "api", "url": "http://127.0.0.1:9000"}).to_string();

    let missing = hub.call("POST", "/register", &[], body.clone()).await;
    assert_error(&missing, 401, "unauthorized", "caller");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"mediator\"")
    );

    let key = "users/api".parse().expect("key");
    let expired = mint(&Claims::node(
        &key,
        Timestamp::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    ));
    let answer = hub
        .call_as("POST", "/register", &expired, body.clone())
        .await;
    assert_error(&answer, 401, "unauthorized", "caller");

    let wrong = TokenMinter::hs256("another secret that is long enough!!")
        .mint(&Claims::node(
            &key,
            Timestamp::now(),
            Duration::from_secs(60),
        ))
        .expect("mint");
    let answer = hub.call_as("POST", "/register", &wrong, body.clone()).await;
    assert_error(&answer, 401, "unauthorized", "caller");

    let garbage = hub
        .call_as("POST", "/register", "not.a.token", body.clone())
        .await;
    assert_error(&garbage, 401, "unauthorized", "caller");

    // A token without sub is refused unless the operator allows it.
    let original = original_token();
    let answer = hub
        .call("POST", "/register", &[("x-jwt", &original)], body.clone())
        .await;
    assert_error(&answer, 401, "unauthorized", "caller");

    // Another node's identity may not register as users/api.
    let other = hub.token_for("users/other");
    let answer = hub.call_as("POST", "/register", &other, body.clone()).await;
    assert_error(&answer, 403, "forbidden", "caller");
    assert!(hub.mediator.nodes(None).await.expect("list").is_empty());

    // The same token in each place a token may be is accepted.
    let own = hub.token_for("users/api");
    let by_header = hub
        .call("POST", "/register", &[("x-jwt", &own)], body.clone())
        .await;
    assert_eq!(by_header.status, 200);
    let by_query = hub
        .call("POST", &format!("/register?x-jwt={own}"), &[], body.clone())
        .await;
    assert_eq!(by_query.status, 200);
    let in_body =
        json!({"group": "users", "name": "api", "url": "http://127.0.0.1:9000", "x-jwt": own});
    let by_body = hub
        .call("POST", "/register", &[], in_body.to_string())
        .await;
    assert_eq!(by_body.status, 200, "{}", by_body.text());
}

#[tokio::test]
async fn renew_extends_or_says_not_registered() {
    let hub = Hub::in_process();
    let token = hub.token_for("users/api");
    let renew = json!({"group": "users", "name": "api", "ttl": 120}).to_string();
    let answer = hub.call_as("POST", "/renew", &token, renew.clone()).await;
    let error = assert_error(&answer, 404, "unknown_target", "caller");
    assert_eq!(error["error"], "not registered");

    hub.register("users/api", "http://127.0.0.1:9000").await;
    let answer = hub.call_as("POST", "/renew", &token, renew).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let reply = answer.json();
    assert_eq!(reply["ttl"], 120);
    let node = hub
        .mediator
        .registry()
        .get(&"users/api".parse().expect("key"))
        .await
        .expect("store")
        .expect("registered");
    assert_eq!(reply["lease_until"], node.lease_until.to_rfc3339());
    // A renewal is the node heard from: the store, the routing table and the
    // admin list all say when.
    let heard = node.updated.expect("a renewal records when it came");
    let key = "users/api".parse().expect("key");
    assert_eq!(
        hub.mediator.routes().get(&key).expect("routed").updated,
        Some(heard)
    );
    let listed = hub
        .call_as("GET", "/admin/clusters/users", &hub.admin_token(), "")
        .await;
    assert_eq!(listed.json()["list"][0]["updated"], heard.to_rfc3339());

    let other = hub.token_for("users/other");
    let answer = hub
        .call_as(
            "POST",
            "/renew",
            &other,
            json!({"group": "users", "name": "api"}).to_string(),
        )
        .await;
    assert_error(&answer, 403, "forbidden", "caller");
}

#[tokio::test]
async fn remove_by_id_and_by_key() {
    let hub = Hub::in_process();
    let id = hub.register("users/api", "http://127.0.0.1:9000").await;
    hub.register("users/b", "http://127.0.0.1:9001").await;
    let token = hub.token_for("users/api");

    let answer = hub.call_as("POST", "/remove", &token, "").await;
    assert_eq!(answer.status, 409);
    assert_eq!(
        answer.json()["error"],
        "it's necessary to give id in url or cluster and node in json body"
    );

    // Not yours: the same answer as an id that is not there, so no caller
    // learns which ids exist; and the node stays.
    let b_id = hub.mediator.nodes(Some("users")).await.expect("list")[1]
        .id
        .0;
    let not_yours = hub
        .call_as("DELETE", &format!("/remove/{b_id}"), &token, "")
        .await;
    let not_there = hub.call_as("DELETE", "/remove/987654", &token, "").await;
    for answer in [&not_yours, &not_there] {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), json!({"affected": 0}));
        assert_eq!(
            answer.header("content-type"),
            not_there.header("content-type")
        );
    }
    assert_eq!(
        hub.mediator.nodes(Some("users")).await.expect("list").len(),
        2
    );

    let answer = hub
        .call_as("GET", &format!("/remove/{id}"), &token, "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"affected": 1}));
    let answer = hub
        .call_as("GET", &format!("/remove/{id}"), &token, "")
        .await;
    assert_eq!(answer.json(), json!({"affected": 0}));

    let b = hub.token_for("users/b");
    let answer = hub
        .call_as(
            "POST",
            "/remove",
            &b,
            json!({"cluster": "users", "node": "b"}).to_string(),
        )
        .await;
    assert_eq!(answer.json(), json!({"affected": 1}));
    assert!(hub.mediator.nodes(None).await.expect("list").is_empty());
    // Gone from routing too.
    let answer = hub.call_as("POST", "/one/users/b/x", &b, "").await;
    assert_eq!(answer.status, 404);

    let answer = hub.call_as("POST", "/remove/abc", &b, "").await;
    assert_error(&answer, 400, "invalid", "caller");
}

#[tokio::test]
async fn admin_routes_need_admin() {
    let hub = Hub::config().secret_as_password().in_process();
    let id = hub.register("users/api", "http://127.0.0.1:9000").await;
    hub.register("billing/", "https://billing.example").await;
    let node = hub.token_for("users/api");
    let by_id = format!("/admin/cluster/{id}");
    for path in ["/admin/clusters", "/admin/clusters/users", by_id.as_str()] {
        let answer = hub.call_as("GET", path, &node, "").await;
        assert_error(&answer, 403, "forbidden", "caller");
        let answer = hub.call("GET", path, &[], "").await;
        assert_error(&answer, 401, "unauthorized", "caller");
    }
    let admin = hub.admin_token();
    let all = hub.call_as("GET", "/admin/clusters", &admin, "").await;
    assert_eq!(all.status, 200);
    let list = all.json()["list"].as_array().expect("list").clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["cluster"], "billing");
    assert_eq!(list[1]["node"], serde_json::Value::Null);
    assert_eq!(list[1]["domain"], "https://billing.example");
    assert_eq!(list[1]["port"], 443);
    assert_eq!(list[1]["ttl"], 60);

    let users = hub
        .call_as("POST", "/admin/clusters/users", &admin, "")
        .await;
    assert_eq!(users.json()["list"].as_array().expect("list").len(), 1);

    let one = hub
        .call_as("GET", &format!("/admin/cluster/{id}"), &admin, "")
        .await;
    assert_eq!(one.json()["entity"]["name"], "api");
    assert_eq!(one.json()["entity"]["id"], id);

    let none = hub.call_as("GET", "/admin/cluster/999", &admin, "").await;
    assert_eq!(none.status, 400);
    assert_eq!(none.json()["error"], "Cluster not found by id: '999'");

    // Basic login as admin works on admin routes too.
    let basic = format!("Basic {}", STANDARD.encode(format!("admin:{SECRET}")));
    let answer = hub
        .call("GET", "/admin/clusters", &[("authorization", &basic)], "")
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn token_route_mints_an_admin_token_for_a_basic_login() {
    // The original's `/token` with `admin:<secret>`.
    let hub = Hub::config().secret_as_password().in_process();
    let answer = hub.call("GET", "/token", &[], "").await;
    assert_error(&answer, 401, "unauthorized", "caller");
    let challenges: Vec<&str> = answer
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        challenges.contains(&"Basic realm=\"mediator\""),
        "{challenges:?}"
    );
    assert!(
        challenges.contains(&"Bearer realm=\"mediator\""),
        "{challenges:?}"
    );

    let wrong = format!("Basic {}", STANDARD.encode("admin:wrong"));
    let answer = hub
        .call("GET", "/token", &[("authorization", &wrong)], "")
        .await;
    assert_eq!(answer.status, 401);

    let right = format!("Basic {}", STANDARD.encode(format!("admin:{SECRET}")));
    let before = Timestamp::now().as_secs();
    let answer = hub
        .call("POST", "/token", &[("authorization", &right)], "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let reply = answer.json();
    assert_eq!(reply["verified"], true);
    let exp = reply["exp"].as_i64().expect("exp");
    assert!(
        (before + 9 * 3600..=before + 9 * 3600 + 5).contains(&exp),
        "{exp}"
    );
    let token = reply["token"].as_str().expect("token");
    let identity = hub
        .mediator
        .authenticate(&Credentials::Bearer(token))
        .expect("valid token");
    assert!(identity.admin);
    let list = hub.call_as("GET", "/admin/clusters", token, "").await;
    assert_eq!(list.status, 200);
}

#[tokio::test]
async fn probes() {
    let hub = Hub::in_process();
    let health = hub.call("GET", "/healthz", &[], "").await;
    assert_eq!((health.status, health.json()), (200, json!({"ok": true})));
    let ready = hub.call("GET", "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"ok": true, "store": "up"}))
    );
    let ping = hub.call("POST", "/ping", &[], "").await;
    assert_eq!(
        (ping.status, ping.json()),
        (200, json!({"ok": true, "store": "up"}))
    );

    let down = Hub::config()
        .registry(DownRegistry(MemoryRegistry::new()))
        .in_process();
    let health = down.call("GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
    let admin = down.admin_token();
    for path in ["/readyz", "/ping"] {
        // Down, and nothing more, to whoever asks...
        let answer = down.call("GET", path, &[], "").await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.json(), json!({"ok": false}));
        assert!(!answer.text().contains("3306"), "{}", answer.text());
        let node = down
            .call_as("GET", path, &down.token_for("users/api"), "")
            .await;
        assert_eq!(node.json(), json!({"ok": false}));
        // ...and why, to an admin.
        let answer = down.call_as("GET", path, &admin, "").await;
        let body = assert_error(&answer, 503, "store", "hub");
        assert_eq!(body["ok"], false);
        assert_eq!(body["store"], "down");
        assert!(
            answer.text().contains("db.internal:3306"),
            "{}",
            answer.text()
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let hub = Hub::in_process();
    for path in [
        "//",
        "/nope",
        "/register/x",
        "/admin",
        "/admin/cluster",
        "/one",
    ] {
        let answer = hub.call("GET", path, &[], "").await;
        let body = assert_error(&answer, 404, "not_found", "caller");
        assert!(
            body["error"]
                .as_str()
                .expect("message")
                .contains("no route"),
            "{path}"
        );
    }
}

/// Every route, whether it reads a body or not.
const EVERY_ROUTE: [&str; 16] = [
    "/register",
    "/renew",
    "/remove",
    "/remove/1",
    "/one/g/n/x",
    "/any/g/x",
    "/many/g/x",
    "/admin/clusters",
    "/admin/cluster/1",
    "/token",
    "/ping",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/nope",
];

#[tokio::test]
async fn oversize_bodies_are_413_on_every_route_in_process_and_on_the_wire() {
    let config = || Hub::config().max_body(1024);
    // The client announces the size with content-length; in process, the
    // body itself reports it.
    for hub in [config().in_process(), config().start().await] {
        let token = hub.admin_token();
        for path in EVERY_ROUTE {
            let answer = hub.call_as("POST", path, &token, vec![b'a'; 1025]).await;
            assert_error(&answer, 413, "too_large", "caller");
        }
        // Exactly the limit passes the size check: blank, so an empty
        // object, which the original's rules then refuse field by field.
        let answer = hub
            .call_as("POST", "/register", &token, vec![b' '; 1024])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["errors"]["cluster"], "This field is missing.");
    }
}

#[tokio::test]
async fn a_streamed_body_past_the_limit_is_413_once_it_gets_there() {
    let hub = Hub::config().max_body(1024).in_process();
    let token = hub.admin_token();
    for path in [
        "/register",
        "/renew",
        "/remove",
        "/one/g/n/x",
        "/many/g/x",
        "/admin/clusters",
    ] {
        // Two chunks of 600 bytes, neither size announced.
        let request = http::Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Chunks::new(vec![vec![b'a'; 600]; 2]))
            .expect("request");
        let answer = call_service(&hub.service, request).await;
        assert_error(&answer, 413, "too_large", "caller");
    }
    // Under the limit in chunks, the body is whole again.
    let body = json!({"group": "users", "name": "api", "url": "http://127.0.0.1:9000"}).to_string();
    let (first, second) = body.as_bytes().split_at(10);
    let request = http::Request::post("/register")
        .header(
            "authorization",
            format!("Bearer {}", hub.token_for("users/api")),
        )
        .body(Chunks::new(vec![first.to_vec(), second.to_vec()]))
        .expect("request");
    let answer = call_service(&hub.service, request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn admin_lists_come_in_pages() {
    let hub = Hub::in_process();
    let me = mediator_core::Identity::internal();
    for i in 0..501 {
        let registration = mediator_core::Registration::new(
            key(&format!("bulk/n{i}")),
            mediator_core::Endpoint::http("http://127.0.0.1:9000").expect("url"),
            std::time::Duration::from_secs(60),
        );
        hub.mediator
            .register(&me, registration)
            .await
            .expect("register");
    }
    let admin = hub.admin_token();
    // Without paging parameters: the original's shape, the first 500 rows.
    let first = hub.call_as("GET", "/admin/clusters", &admin, "").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["list"].as_array().map(Vec::len), Some(500));
    let next = body["next"].as_u64().expect("more follow");
    let rest = hub
        .call_as(
            "GET",
            &format!("/admin/clusters/bulk?after={next}"),
            &admin,
            "",
        )
        .await
        .json();
    assert_eq!(rest["list"].as_array().map(Vec::len), Some(1));
    assert!(rest.get("next").is_none(), "{rest}");

    // Pages of 200 walk the whole registry once, in id order.
    let mut seen = Vec::new();
    let mut path = "/admin/clusters?limit=200".to_owned();
    loop {
        let page = hub.call_as("GET", &path, &admin, "").await.json();
        for row in page["list"].as_array().expect("a list") {
            seen.push(row["id"].as_u64().expect("an id"));
        }
        match page["next"].as_u64() {
            Some(next) => path = format!("/admin/clusters?limit=200&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 501);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // The cap holds, and nonsense is refused.
    let capped = hub
        .call_as("GET", "/admin/clusters?limit=100000", &admin, "")
        .await
        .json();
    assert_eq!(capped["list"].as_array().map(Vec::len), Some(501));
    for bad in ["limit=0", "limit=x", "after=y"] {
        let answer = hub
            .call_as("GET", &format!("/admin/clusters?{bad}"), &admin, "")
            .await;
        assert_error(&answer, 400, "invalid", "caller");
    }
}

#[tokio::test]
async fn failed_admin_logins_from_one_address_must_wait_longer_and_longer() {
    let hub = Hub::config().secret_as_password().start().await;
    let wrong = format!("Basic {}", STANDARD.encode("admin:guess"));
    let right = format!("Basic {}", STANDARD.encode(format!("admin:{SECRET}")));
    for _ in 0..5 {
        let answer = hub
            .call("GET", "/token", &[("authorization", &wrong)], "")
            .await;
        assert_eq!(answer.status, 401, "{}", answer.text());
    }
    // Now even the right password waits, on every route that takes it
    // (probes never look at it)...
    for path in ["/token", "/admin/clusters", "/admin/cluster/1"] {
        let answer = hub
            .call("GET", path, &[("authorization", &right)], "")
            .await;
        assert_error(&answer, 429, "throttled", "caller");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    let answer = hub
        .call("GET", "/readyz", &[("authorization", &right)], "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // ...while callers with tokens are served.
    let admin = hub.admin_token();
    let answer = hub.call_as("GET", "/admin/clusters", &admin, "").await;
    assert_eq!(answer.status, 200);
    // After the wait, one more failure doubles it; a good login clears it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = hub
        .call("GET", "/token", &[("authorization", &wrong)], "")
        .await;
    assert_eq!(answer.status, 401);
    let answer = hub
        .call("GET", "/token", &[("authorization", &right)], "")
        .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("2"));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let answer = hub
        .call("GET", "/token", &[("authorization", &right)], "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = hub
        .call("GET", "/token", &[("authorization", &wrong)], "")
        .await;
    assert_eq!(answer.status, 401, "the count starts again");
}

#[tokio::test]
async fn an_operator_password_replaces_the_secret_at_the_basic_login() {
    let hash = mediator_core::PasswordHash::generate("operator pw").expect("a hash");
    let hub = Hub::config().operator_password(hash).in_process();
    let secret = format!("Basic {}", STANDARD.encode(format!("admin:{SECRET}")));
    let answer = hub
        .call("GET", "/token", &[("authorization", &secret)], "")
        .await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    let password = format!("Basic {}", STANDARD.encode("admin:operator pw"));
    let answer = hub
        .call("GET", "/token", &[("authorization", &password)], "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // Without a hash and without the secret allowed, no Basic login works,
    // and the refusal says what the operator should set; tokens still do.
    let hub = Hub::in_process();
    let answer = hub
        .call("GET", "/token", &[("authorization", &secret)], "")
        .await;
    assert_error(&answer, 401, "unauthorized", "caller");
    assert!(
        answer.text().contains("no operator password"),
        "{}",
        answer.text()
    );
    let answer = hub
        .call_as("GET", "/admin/clusters", &hub.admin_token(), "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}
