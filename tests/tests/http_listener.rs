//! The listener itself: TLS with ALPN, HTTP/2 in clear text, raw HTTP/1.1
//! edge cases, HTTPS delivery to nodes, and graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mediator_tests::harness::*;
use mediator_transport_http::TlsConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client_tls(cert_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn get_over<S>(io: S, h2: bool, uri: &str) -> (u16, http::Version, Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(uri)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("h2 response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("h1 response")
    };
    let status = response.status().as_u16();
    let version = response.version();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, version, body)
}

#[tokio::test]
async fn https_with_alpn_h2_and_http11() {
    let (cert, key) = self_signed();
    let hub = Hub::config()
        .tls(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).expect("tls"))
        .start()
        .await;
    assert!(hub.base.starts_with("https://"));
    for (alpn, h2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let tcp = TcpStream::connect(hub.socket()).await.expect("connect");
        let tls = client_tls(&cert, &[alpn])
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let (status, version, body) = get_over(tls, h2, "/healthz").await;
        assert_eq!(status, 200);
        assert_eq!(
            version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(body, r#"{"ok":true}"#);
    }
    // A client that does not trust the certificate is refused in the handshake.
    let (other, _) = self_signed();
    let tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    let refused = client_tls(&other, &[b"h2"])
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await;
    assert!(refused.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn tls_from_pem_files() {
    let (cert, key) = self_signed();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert).expect("write cert");
    std::fs::write(&key_path, &key).expect("write key");
    assert!(TlsConfig::from_pem_files(&cert_path, &key_path).is_ok());
    assert!(TlsConfig::from_pem_files(&cert_path, dir.path().join("missing.pem")).is_err());
    assert!(TlsConfig::from_pem_files(&key_path, &key_path).is_err());
    let (_, other_key) = self_signed();
    assert!(TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes()).is_err());
}

#[tokio::test]
async fn h2_prior_knowledge_in_clear_text() {
    let hub = Hub::start().await;
    let tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    let (status, version, body) = get_over(tcp, true, &hub.url("/healthz")).await;
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    assert_eq!(body, r#"{"ok":true}"#);
}

#[tokio::test]
async fn delivery_to_an_https_node_trusting_a_private_root() {
    let (cert, key) = self_signed();
    let node_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs"),
        rustls_pemfile::private_key(&mut key.as_bytes())
            .expect("key")
            .expect("a key"),
    )
    .expect("node tls");
    let mut node_tls = node_tls;
    node_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let node = EchoNode::start_tls("secure", node_tls).await;

    let trusting = Hub::config()
        .delivery(|delivery| delivery.trust_pem(cert.as_bytes()).expect("root"))
        .start()
        .await;
    trusting.register("vault/secure", &node.url).await;
    let caller = trusting.token_for("users/api");
    let answer = call_as("POST", &trusting.url("/one/vault/secure/x"), &caller, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["label"], "secure");
    assert_eq!(node.last().version, http::Version::HTTP_2);
    assert_eq!(node.last().header("x-mediator-from"), Some("users/api"));

    // With the default (public) roots the self-signed node is refused before
    // anything is sent: unreachable.
    let default = Hub::start().await;
    default.register("vault/secure", &node.url).await;
    let before = node.count();
    let answer = call_as("POST", &default.url("/one/vault/secure/x"), &caller, "{}").await;
    assert_error(&answer, 502, "node_unreachable", "node");
    assert_eq!(node.count(), before);
}

/// Sends raw bytes and reads the whole answer (the server closes after it).
async fn raw(hub: &Hub, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn raw_http11_edge_cases() {
    let hub = Hub::config().max_body(64).start().await;
    let token = hub.admin_token();

    // A chunked body past the limit, with no content-length to refuse early.
    let chunk = "a".repeat(40);
    let request = format!(
        "POST /register HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         28\r\n{chunk}\r\n28\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(&hub, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""kind":"too_large""#), "{answer}");

    // Garbage instead of HTTP gets a 400 from the protocol layer, not a crash.
    let answer = raw(&hub, b"\x16\x03\x01 hello there\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // A path that is not valid UTF-8 once decoded is still just a 404 or 400.
    let answer = raw(
        &hub,
        b"GET /one/%ff%fe/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let request = format!(
        "GET /one/%ff%fe/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    let answer = raw(&hub, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // The server still serves afterwards.
    let health = call("GET", &hub.url("/healthz"), &[], "").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let mut hub = Hub::start().await;
    let node = EchoNode::start("slow").await;
    hub.register("users/slow", &node.url).await;
    let caller = hub.token_for("billing/x");
    let url = hub.url("/one/users/slow/slow/400");
    let in_flight = tokio::spawn(async move { call_as("POST", &url, &caller, "{}").await });
    // Wait until the request reached the node, then ask the listener to stop.
    while node.count() == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    hub.shutdown().await.expect("clean shutdown");
    let answer = in_flight.await.expect("request task");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    // No longer accepting.
    assert!(TcpStream::connect(hub.socket()).await.is_err());
}

#[tokio::test]
async fn the_drain_deadline_closes_what_is_left() {
    let mut hub = Hub::config()
        .drain(Duration::from_millis(200))
        .start()
        .await;
    let node = EchoNode::start("stuck").await;
    hub.register("users/stuck", &node.url).await;
    let caller = hub.token_for("billing/x");
    let url = hub.url("/one/users/stuck/slow/4000");
    let in_flight = tokio::spawn(async move {
        let request = Request::post(url)
            .header("authorization", format!("Bearer {caller}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>()
            .request(request)
            .await
    });
    while node.count() == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    hub.shutdown().await.expect("shutdown");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        in_flight.await.expect("task").is_err(),
        "the stuck request was cut off"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let mut hub = Hub::start().await;
    // An idle HTTP/1.1 keep-alive connection and an idle HTTP/2 connection.
    let tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    let (mut h1, conn1) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .expect("h1");
    let conn1 = tokio::spawn(conn1);
    let request = Request::get("/healthz")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(
        h1.send_request(request).await.expect("answer").status(),
        200
    );
    let tcp = TcpStream::connect(hub.socket()).await.expect("connect");
    let (_h2, conn2) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    let conn2 = tokio::spawn(conn2);
    let started = Instant::now();
    hub.shutdown().await.expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Both connections were closed by the server.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn1)
        .await
        .expect("h1 closed");
    let _ = tokio::time::timeout(Duration::from_secs(2), conn2)
        .await
        .expect("h2 closed");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_cut_off_at_the_deadline() {
    let hub = Hub::config()
        .deadline(Duration::from_millis(300))
        .start()
        .await;
    let token = hub.admin_token();
    // With a token in the head, and without one (the body might carry it):
    // either way the caller announces 100 bytes and sends 10.
    for auth in [format!("authorization: Bearer {token}\r\n"), String::new()] {
        let request = format!(
            "POST /one/users/api/x HTTP/1.1\r\nhost: x\r\n{auth}content-length: 100\r\n\
             connection: close\r\n\r\n0123456789"
        );
        let started = Instant::now();
        let answer = raw(&hub, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""kind":"timeout""#), "{answer}");
        assert!(answer.contains(r#""fault":"caller""#), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

/// The names of this process's threads that serve the listener's
/// pass-through.
fn pass_through_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("mediator-http-"))
        .count()
}

#[tokio::test]
async fn calls_are_served_on_threads_of_their_own_which_end_with_the_listener() {
    let before = pass_through_threads();
    let hub = Hub::config()
        .listener(|l| l.pass_through_threads(3))
        .start()
        .await;
    let node = EchoNode::start("api").await;
    hub.register("users/api", &node.url).await;
    assert_eq!(pass_through_threads(), before + 3);
    // Connections go to the threads in turn; each answers.
    let token = hub.token_for("billing/caller");
    for i in 0..6 {
        let answer = hub
            .call_as("POST", "/one/users/api/x", &token, format!("call {i}"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["body"], format!("call {i}"));
    }
    assert_eq!(hub.mediator.transport_stats().pass_through().0, 6);
    hub.stop().await;
    eventually("the listener's threads end", || {
        pass_through_threads() == before
    })
    .await;
}
