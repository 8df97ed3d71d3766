//! A demo node's page over a real mediator: what a person types in the send
//! form is answered with whose fault a failure was, and the node attached
//! over QUIC answers it and calls an HTTP node in turn.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mediator_core::{Authenticator, KeyRing, Mediator, MemoryRegistry, SealKey, TokenMinter};
use mediator_examples::demo::{self, Role};
use mediator_transport_http::{HttpDelivery, HttpListener};
use mediator_transport_quic::{QuicListener, ServerTls};
use serde_json::{json, Value};

const SECRET: &str = "a secret of at least 32 bytes, for the demo page";

async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// A mediator on `store`, served on a free loopback port until `stop`.
async fn serve(
    store: std::sync::Arc<MemoryRegistry>,
) -> (
    Mediator,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), mediator_transport_http::HttpError>>,
) {
    let mediator = Mediator::builder()
        .shared_registry(store)
        .authenticator(Authenticator::hs256(SECRET))
        .deliver(HttpDelivery::default())
        .build()
        .unwrap();
    let listener = HttpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve_with_shutdown(mediator.clone(), async {
        let _ = stopped.await;
    }));
    (mediator, url, stop, server)
}

#[tokio::test]
async fn the_send_form_blames_the_person_for_what_they_mistyped() {
    let (mediator, url, stop, server) = serve(std::sync::Arc::new(MemoryRegistry::new())).await;
    let keys = KeyRing::new(SealKey::generate());
    let minter = TokenMinter::hs256(SECRET);
    let any_port = "127.0.0.1:0".parse().unwrap();
    let passive = demo::start_node(
        Role::Passive,
        &url,
        &[],
        minter.clone(),
        keys.clone(),
        any_port,
    )
    .await
    .unwrap();
    let keys_for_quic = keys.clone();
    let sender = demo::start_node(Role::Sender, &url, &[], minter, keys, any_port)
        .await
        .unwrap();
    let send = format!("http://{}/send", sender.page);

    // The sender's page wears the console's stylesheet and names every
    // target there is, the attached node and its relay among them.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let page = client
        .get(format!("http://{}/", sender.page).parse().unwrap())
        .await
        .unwrap();
    let html = page.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("The console's one stylesheet") && html.contains(r#"class="panel""#),
        "{html}"
    );
    assert!(
        html.contains("<code>demo/quic</code>") && html.contains("<code>/relay</code>"),
        "{html}"
    );

    // The node attached over QUIC answers the HTTP sender, and in turn
    // calls the HTTP passive node.
    let tls = ServerTls::self_signed(&["localhost"]).unwrap();
    let quic = QuicListener::bind("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    mediator.add_deliver(quic.delivery()).unwrap();
    let serving = quic.clone();
    let served = mediator.clone();
    let quic_task = tokio::spawn(async move { serving.serve(served).await });
    let attached = demo::start_quic_node(
        quic.local_addr().unwrap(),
        quic.fingerprint(),
        TokenMinter::hs256(SECRET),
        keys_for_quic,
    )
    .await
    .unwrap();
    let (status, body) = post(&send, &json!({ "to": "demo/quic", "text": "over quic" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replies"][0]["then"]["by"], "demo/quic", "{body}");
    assert_eq!(
        body["replies"][0]["then"]["received"], "over quic",
        "{body}"
    );
    let (status, body) = post(
        &send,
        &json!({ "to": "demo/quic", "path": "/relay", "text": "pass it on" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let then = &body["replies"][0]["then"];
    assert_eq!(then["reply"]["by"], "demo/quic", "{body}");
    assert_eq!(then["then"]["by"], "demo/passive", "{body}");
    assert_eq!(then["then"]["received"], "pass it on", "{body}");
    assert_eq!(attached.inbox.lock().unwrap().len(), 2);

    let (status, body) = post(&send, &json!({ "to": "demo/passive", "text": "hi" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for form in [
        json!({ "to": "nonsense", "text": "x" }),
        json!({ "to": "demo/é", "text": "x" }),
        json!({ "to": "a/b/c", "text": "x" }),
        json!({ "to": "demo/passive", "path": "a b", "text": "x" }),
        json!({ "to": "demo/passive", "path": "/x#y", "text": "x" }),
    ] {
        let (status, body) = post(&send, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid")),
            "{form}: {body}"
        );
    }
    // What lies beyond the page (the mediator, the nodes) is still a gateway's answer.
    let (status, body) = post(&send, &json!({ "to": "nobody/?", "text": "x" })).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");

    attached.shutdown().await;
    quic.shutdown().await;
    quic_task.await.unwrap().unwrap();
    sender.shutdown().await.unwrap();
    passive.shutdown().await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A demo node told of a second mediator of the formation registers there
/// when its own stops answering, and its page keeps working through it.
#[tokio::test]
async fn a_demo_node_registers_again_at_the_next_mediator_of_its_formation() {
    let store = std::sync::Arc::new(MemoryRegistry::new());
    let mut hubs = Vec::new();
    for _ in 0..2 {
        let (mediator, url, stop, server) = serve(store.clone()).await;
        let follow = mediator.spawn_maintenance();
        hubs.push((mediator, url, stop, server, follow));
    }
    let (first, second) = (hubs[0].1.clone(), hubs[1].1.clone());
    let keys = KeyRing::new(SealKey::generate());
    let minter = TokenMinter::hs256(SECRET);
    let any_port = "127.0.0.1:0".parse().unwrap();
    let passive = demo::start_node(
        Role::Passive,
        &first,
        std::slice::from_ref(&second),
        minter.clone(),
        keys.clone(),
        any_port,
    )
    .await
    .unwrap();
    let sender = demo::start_node(
        Role::Sender,
        &first,
        std::slice::from_ref(&second),
        minter,
        keys,
        any_port,
    )
    .await
    .unwrap();
    let send = format!("http://{}/send", sender.page);
    let message = json!({ "to": "demo/passive", "path": "/message", "text": "one" });
    let (status, body) = post(&send, &message).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The first mediator goes; the nodes carry on through the second.
    let (mediator, _, stop, server, follow) = hubs.remove(0);
    follow.abort();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop(mediator);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = post(&send, &message).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo nodes did not carry on through {second}: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    passive.shutdown().await.unwrap();
    sender.shutdown().await.unwrap();
}
