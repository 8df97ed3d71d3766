//! The client against an `https://` mediator, and against mediators that
//! misbehave.

use std::time::Duration;

use mediator_tests::harness::{describe, json, key, ring, self_signed, Hub};
use mediator_transport_http::{ClientError, NodeClient, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn nodes_talk_through_an_https_mediator() {
    let (cert, private) = self_signed();
    let hub = Hub::config()
        .tls(TlsConfig::from_pem(cert.as_bytes(), private.as_bytes()).expect("tls"))
        .start()
        .await;
    assert!(hub.base.starts_with("https://localhost:"));
    let me = key("secure/api");
    let api = hub
        .node(&me)
        .tls_root(cert.clone())
        .start(describe("api"))
        .await
        .expect("registers over https");
    let caller_key = key("secure/caller");
    let caller = hub
        .client(&caller_key)
        .tls_root(cert.as_bytes())
        .connect()
        .await
        .expect("client");
    let seen = json(
        &caller
            .call(me.clone(), "/hi", "over tls")
            .await
            .expect("call"),
    );
    assert_eq!(seen["body"], "over tls");

    // Without the mediator's authority the handshake fails.
    let untrusting = hub.client(&caller_key).connect().await.expect("client");
    match untrusting.call(me.clone(), "/hi", "x").await {
        Err(ClientError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    // A root that is not PEM is a configuration error.
    let bad = NodeClient::builder(&hub.base)
        .token("t")
        .keys(ring())
        .tls_root("not a certificate")
        .connect()
        .await;
    assert!(matches!(bad, Err(ClientError::Tls(_))), "{bad:?}");

    api.shutdown().await.expect("deregisters over https");
    assert!(!hub.knows(&me));
    hub.stop().await;
}

/// A "mediator" that accepts connections and answers each request with
/// `answer` (or never, when `None`).
async fn fake_mediator(answer: Option<&'static str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let _ = stream.read(&mut buffer).await;
                match answer {
                    Some(text) => {
                        let _ = stream.write_all(text.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn misbehaving_mediators_are_reported() {
    // Never answers: the client's own timeout.
    let silent = fake_mediator(None).await;
    let client = NodeClient::builder(&silent)
        .token("t")
        .keys(ring())
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("client");
    let started = std::time::Instant::now();
    match client.call(key("a/b"), "/", "x").await {
        Err(ClientError::Timeout { after, .. }) => assert!(after >= Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Answers 200 without saying which node answered.
    let anonymous = fake_mediator(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let client = NodeClient::builder(&anonymous)
        .token("t")
        .keys(ring())
        .connect()
        .await
        .expect("client");
    assert!(matches!(
        client.call(key("a/b"), "/", "x").await,
        Err(ClientError::Protocol(_))
    ));
    // Says another node answered than the one asked.
    let impostor = fake_mediator(Some(
        "HTTP/1.1 200 OK\r\nx-mediator-node: a/c\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let client = NodeClient::builder(&impostor)
        .token("t")
        .keys(ring())
        .connect()
        .await
        .expect("client");
    match client.call(key("a/b"), "/", "x").await {
        Err(ClientError::Protocol(message)) => assert!(message.contains("a/c"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A proxy's HTML error page.
    let proxy = fake_mediator(Some(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 20\r\nconnection: close\r\n\r\n<h1>bad gateway</h1>",
    ))
    .await;
    let client = NodeClient::builder(&proxy)
        .token("t")
        .keys(ring())
        .connect()
        .await
        .expect("client");
    match client.broadcast("g", "/", "x").await {
        Err(ClientError::Mediator {
            status: 502,
            kind,
            message,
            ..
        }) => {
            assert_eq!(kind, "unknown");
            assert_eq!(message, "<h1>bad gateway</h1>");
        }
        other => panic!("expected the proxy's 502, got {other:?}"),
    }
}
