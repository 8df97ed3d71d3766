//! Services a team composes: the API and the console mounted side by side
//! in one router, under a layer of the team's own, served by the
//! mediator's listener over a real socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::response::Response;
use axum::Router;
use mediator_core::{Authenticator, Mediator, MemoryRegistry};
use mediator_transport_http::{HttpListener, MediatorService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 GET over a fresh connection: the status line and headers,
/// lower-cased, and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_api_and_the_console_mount_side_by_side_and_layers_run() {
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
        .build()
        .expect("mediator");
    let api = MediatorService::new(mediator.clone());
    let console = api.console();
    let layered = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&layered);
    let app = Router::new()
        .route_service("/", console.clone())
        .route_service("/console/{*rest}", console)
        .fallback_service(api)
        .layer(axum::middleware::map_response(
            move |mut response: Response| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    response
                        .headers_mut()
                        .insert("x-team-layer", http::HeaderValue::from_static("ran"));
                    response
                }
            },
        ));
    let listener = HttpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = mediator.clone();
    let server = tokio::spawn(async move {
        listener
            .serve_service_with_shutdown(&served, app, async {
                let _ = stopped.await;
            })
            .await
    });

    let (head, body) = get(addr, "/healthz").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-team-layer: ran"), "{head}");
    assert_eq!(body, r#"{"ok":true}"#);

    // The console answers its own paths, the API everything else.
    let (head, body) = get(addr, "/console/sign-in").await;
    assert!(head.contains("x-team-layer: ran"), "{head}");
    assert!(!head.starts_with("http/1.1 404"), "{head}\n{body}");
    let (head, _) = get(addr, "/metrics").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // A call without credentials reaches the core through the layer.
    let (head, body) = get(addr, "/one/app/echo/x").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(body.contains("no token"), "{body}");
    assert_eq!(layered.load(Ordering::SeqCst), 4);

    // The listener's own address is refused as a node's, as with `serve`.
    assert!(mediator
        .endpoint_policy()
        .refusal(addr)
        .is_some_and(|rule| !rule.is_empty()));
    let _ = stop.send(());
    server.await.expect("joined").expect("served");
}
