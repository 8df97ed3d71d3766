//! The mediator's HTTP API mounted in an axum app of the user's own: under
//! a prefix that axum strips, and at the root as the fallback, with a node
//! registering and being called through the app.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use mediator_core::NodeKey;
use mediator_tests::harness::{call, minter, ring, Answer, Hub};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::NodeClient;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    call("GET", &format!("http://{addr}{path}"), &[], "").await
}

#[tokio::test]
async fn nested_under_a_prefix_the_api_sees_paths_without_it() {
    let hub = Hub::in_process();
    let app = Router::new()
        .route("/", get(|| async { "my app" }))
        .nest_service("/mediator", hub.service.clone());
    let addr = serve(app).await;

    assert_eq!(get_path(addr, "/").await.text(), "my app");
    let answer = get_path(addr, "/mediator/healthz").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, r#"{"ok":true}"#)
    );
    // The prefix alone is the service's root, where the API shows no
    // console: that is a service of its own, for an origin of its own.
    let answer = get_path(addr, "/mediator").await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.text().contains("--console-listen"),
        "{}",
        answer.text()
    );
    // Refusals name the path the service saw.
    let answer = get_path(addr, "/mediator/nope").await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.text().contains("no route for /nope"),
        "{}",
        answer.text()
    );
    // Outside the prefix the app answers, not the mediator.
    assert_eq!(get_path(addr, "/healthz").await.status, 404);

    // Nodes take the prefixed URL as the mediator's; the path forwarded to
    // a node is the one after its target, whatever the prefix.
    let url = format!("http://{addr}/mediator");
    let _api = NodeClient::builder(&url)
        .identity("users", Some("api"))
        .token_minter(minter())
        .keys(ring())
        .callback("http://127.0.0.1:0")
        .start(|request: Incoming| async move {
            Ok(Bytes::from(format!(
                "{} {}",
                request.path,
                String::from_utf8_lossy(&request.body)
            )))
        })
        .await
        .unwrap();
    let worker = NodeClient::builder(&url)
        .identity("billing", Some("worker-1"))
        .token_minter(minter())
        .keys(ring())
        .connect()
        .await
        .unwrap();
    let reply = worker
        .call(NodeKey::named("users", "api").unwrap(), "/greet", "ada")
        .await
        .unwrap();
    assert_eq!(reply, "/greet ada");
}

#[tokio::test]
async fn as_the_fallback_the_api_sits_at_the_root_beside_the_apps_routes() {
    let hub = Hub::in_process();
    let app = Router::new()
        .route("/app", get(|| async { "my app" }))
        .fallback_service(hub.service.clone());
    let addr = serve(app).await;

    assert_eq!(get_path(addr, "/app").await.text(), "my app");
    let answer = get_path(addr, "/healthz").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, r#"{"ok":true}"#)
    );
    // The console is a service of its own, never mounted beside the API.
    assert_eq!(get_path(addr, "/").await.status, 404);
    let answer = get_path(addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.text().contains(
            "mediator_requests_total{transport=\"http\",route=\"other\",status=\"200\"} 1"
        ),
        "{}",
        answer.text()
    );
}
