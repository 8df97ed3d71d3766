//! What a node may register as its callback: well-formed URLs only, and
//! only into networks the operator lets the mediator call.

use mediator_core::policy::EndpointPolicy;
use mediator_tests::harness::*;
use serde_json::json;

async fn register(hub: &Hub, url: &str) -> Answer {
    let body = json!({"group": "users", "name": "api", "url": url, "ttl": 60});
    hub.call_as(
        "POST",
        "/register",
        &hub.token_for("users/api"),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn malformed_urls_are_refused_at_register() {
    let hub = Hub::start().await;
    for url in [
        "http://127.0.0.1:99999",
        "http://%%%",
        "http://",
        "ftp://127.0.0.1:21",
        "http://user:pw@127.0.0.1:9000",
    ] {
        let answer = register(&hub, url).await;
        assert_error(&answer, 400, "invalid", "caller");
    }
    assert!(!hub.knows("users/api"));
}

#[tokio::test]
async fn link_local_and_the_mediator_itself_are_refused_by_default() {
    let hub = Hub::start().await;
    let own = hub.url("");
    for url in [
        "http://169.254.169.254",
        "http://169.254.169.254:80/latest",
        "http://[fe80::1]:9000",
        "http://[::ffff:169.254.169.254]:80",
        own.as_str(),
    ] {
        let answer = register(&hub, url).await;
        assert_error(&answer, 400, "invalid", "caller");
    }
    assert!(!hub.knows("users/api"));
    // Loopback and private networks are allowed by default.
    for url in ["http://127.0.0.1:9000", "http://10.0.0.7:9000"] {
        let answer = register(&hub, url).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.text());
    }
}

#[tokio::test]
async fn an_operator_denies_loopback_and_allows_only_some_networks() {
    let policy = EndpointPolicy::default()
        .deny("127.0.0.0/8".parse().expect("a network"))
        .allow("10.0.0.0/8".parse().expect("a network"));
    let hub = Hub::config().endpoint_policy(policy).start().await;
    for url in ["http://127.0.0.1:9000", "http://192.168.1.1:9000"] {
        let answer = register(&hub, url).await;
        assert_error(&answer, 400, "invalid", "caller");
    }
    let answer = register(&hub, "http://10.1.2.3:9000").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}
