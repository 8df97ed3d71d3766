//! The mediator's HTTP API mounted in an axum app of the user's own: under
//! a prefix that axum strips, and at the root as the fallback, with a node
//! registering and being called through the app.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mediator_core::{Authenticator, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::{HttpDelivery, MediatorService, NodeClient};

const SECRET: &str = "a secret of at least 32 bytes, for tests";

fn mediator() -> Mediator {
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(HttpDelivery::default())
        .build()
        .unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GETs `path`: (status, `www-authenticate` values, body).
async fn get_path(addr: SocketAddr, path: &str) -> (u16, Vec<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        challenges,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn nested_under_a_prefix_the_api_sees_paths_without_it() {
    let app = Router::new()
        .route("/", get(|| async { "my app" }))
        .nest_service("/mediator", MediatorService::new(mediator()));
    let addr = serve(app).await;

    assert_eq!(get_path(addr, "/").await.2, "my app");
    let (status, _, body) = get_path(addr, "/mediator/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    // The prefix alone is the service's root: the dashboard, which asks a
    // browser to log in.
    let (status, challenges, _) = get_path(addr, "/mediator").await;
    assert_eq!(status, 401);
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    // Refusals name the path the service saw.
    let (status, _, body) = get_path(addr, "/mediator/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for /nope"), "{body}");
    // Outside the prefix the app answers, not the mediator.
    assert_eq!(get_path(addr, "/healthz").await.0, 404);

    // Nodes take the prefixed URL as the mediator's; the path forwarded to
    // a node is the one after its target, whatever the prefix.
    let url = format!("http://{addr}/mediator");
    let minter = Authenticator::hs256(SECRET).minter().unwrap();
    let keys = KeyRing::new(SealKey::generate());
    let _api = NodeClient::builder(&url)
        .identity("users", Some("api"))
        .token_minter(minter.clone())
        .keys(keys.clone())
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
        .token_minter(minter)
        .keys(keys)
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
    let app = Router::new()
        .route("/app", get(|| async { "my app" }))
        .fallback_service(MediatorService::new(mediator()));
    let addr = serve(app).await;

    assert_eq!(get_path(addr, "/app").await.2, "my app");
    let (status, _, body) = get_path(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    assert_eq!(get_path(addr, "/").await.0, 401);
    let (status, _, body) = get_path(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("mediator_requests_total{route=\"other\",status=\"200\"} 1"),
        "{body}"
    );
}
