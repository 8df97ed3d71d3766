//! A node is untrusted: its reply's status and headers never act with the
//! hub's authority, and the console is never served where a node's reply
//! is. Clients without credentials cannot make the hub hold their bodies.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use mediator_core::{
    async_trait, Deliver, DeliverError, Endpoint, Envelope, MemoryRegistry, Node, NodeId, NodeKey,
    Registration, Registry, Reply, RequestContext, StoreError, Timestamp,
};
use mediator_tests::harness::{assert_error, call_service, request, Hub};
use mediator_transport_http::MediatorService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A node that answers every request with `head` (status line and
/// headers, without the blank line) and `body`.
async fn scripted_node(head: String, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let head = head.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_nodes_redirect_is_answered_502_and_its_location_never_relayed() {
    let hub = Hub::start().await;
    let caller = hub.token_for("callers/one");
    for status in [301, 302, 303, 307, 308, 300] {
        let node = scripted_node(
            format!(
                "HTTP/1.1 {status} Moved\r\nlocation: http://127.0.0.1:9/steal\r\nset-cookie: a=b"
            ),
            "",
        )
        .await;
        hub.register("evil/n", &format!("http://{node}")).await;
        let answer = hub.call_as("GET", "/one/evil/n/page", &caller, "").await;
        let error = assert_error(&answer, 502, "node_redirect", "node");
        assert!(
            error["error"].as_str().unwrap().contains("evil/n"),
            "{error}"
        );
        assert_eq!(answer.header("location"), None, "{status}");
        assert_eq!(answer.header("set-cookie"), None, "{status}");
    }
    // A 304 sends nobody anywhere: it is relayed.
    let node = scripted_node("HTTP/1.1 304 Not Modified\r\netag: \"x\"".into(), "").await;
    hub.register("evil/n", &format!("http://{node}")).await;
    let answer = hub.call_as("GET", "/one/evil/n/page", &caller, "").await;
    assert_eq!(answer.status, 304);
}

#[tokio::test]
async fn a_nodes_page_is_sandboxed_and_cannot_set_the_hubs_cookies_or_policies() {
    let hub = Hub::start().await;
    let node = scripted_node(
        [
            "HTTP/1.1 200 OK",
            "content-type: text/html",
            "set-cookie: mediator_session=planted; Path=/",
            "clear-site-data: \"cookies\"",
            "content-security-policy: script-src *; report-uri http://127.0.0.1:9/r",
            "access-control-allow-origin: http://evil.example",
            "access-control-allow-credentials: true",
            "strict-transport-security: max-age=63072000; includeSubDomains",
            "referrer-policy: unsafe-url",
            "refresh: 0; url=http://127.0.0.1:9/",
            "x-node-own: kept",
        ]
        .join("\r\n"),
        "<script>fetch('/console/api/session')</script>",
    )
    .await;
    hub.register("evil/n", &format!("http://{node}")).await;
    let answer = hub
        .call_as("GET", "/one/evil/n/page", &hub.token_for("a/b"), "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-node-own"), Some("kept"));
    assert_eq!(answer.header("content-type"), Some("text/html"));
    assert_eq!(answer.header_all("content-security-policy"), ["sandbox"]);
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    for gone in [
        "set-cookie",
        "clear-site-data",
        "access-control-allow-credentials",
        "strict-transport-security",
        "refresh",
    ] {
        assert_eq!(answer.header(gone), None, "{gone}");
    }
}

/// A deliverer for `scripted:` endpoints that answers with the status the
/// endpoint names, as an attached node may (its status is a number in a
/// frame, not an HTTP status line).
struct StatusDeliver;

#[async_trait]
impl Deliver for StatusDeliver {
    fn schemes(&self) -> Vec<String> {
        vec!["scripted".into()]
    }

    async fn deliver(
        &self,
        node: &Node,
        _envelope: &Envelope,
        _cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let code: u16 = node
            .endpoint
            .rest()
            .trim_start_matches('/')
            .parse()
            .unwrap();
        Ok(Reply::new(StatusCode::from_u16(code).unwrap(), "switch"))
    }
}

#[tokio::test]
async fn informational_and_out_of_range_statuses_from_nodes_become_502() {
    let hub = Hub::in_process();
    hub.mediator.add_deliver(StatusDeliver).unwrap();
    let caller = hub.token_for("callers/one");
    for code in [101, 103, 600, 999] {
        let key = NodeKey::named("odd", format!("s{code}")).unwrap();
        let endpoint = Endpoint::custom("scripted", format!("//{code}")).unwrap();
        hub.mediator
            .register(
                &mediator_core::auth::Identity::internal(),
                Registration::new(key.clone(), endpoint, Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let answer = hub
            .call_as("GET", &format!("/one/odd/s{code}/x"), &caller, "")
            .await;
        let error = assert_error(&answer, 502, "node_failed", "node");
        assert!(
            error["error"].as_str().unwrap().contains(&code.to_string()),
            "{error}"
        );
    }
}

#[tokio::test]
async fn the_console_is_served_only_by_its_own_service() {
    let hub = Hub::in_process();
    for path in ["/", "/console/console.js", "/console/sign-in"] {
        let answer = call_service(&hub.service, request("GET", path, &[], "")).await;
        let error = assert_error(&answer, 404, "not_found", "caller");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("--console-listen"),
            "{error}"
        );
    }
    let console = hub.service.console();
    let answer = call_service(&console, request("GET", "/", &[], "")).await;
    assert_eq!(answer.status, 401, "the sign-in page");
    let answer = call_service(&console, request("GET", "/console/console.js", &[], "")).await;
    assert_eq!(answer.status, 200);
    for path in ["/one/a/b/x", "/register", "/metrics", "/token"] {
        let answer = call_service(&console, request("GET", path, &[], "")).await;
        assert_error(&answer, 404, "not_found", "caller");
    }
    let answer = call_service(&console, request("GET", "/healthz", &[], "")).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn over_tls_every_answer_pins_the_browser_to_https() {
    let hub = Hub::in_process();
    let secure = MediatorService::new(hub.mediator.clone()).secure_cookies(true);
    for service in [secure.clone(), secure.console()] {
        let answer = call_service(&service, request("GET", "/healthz", &[], "")).await;
        assert_eq!(
            answer.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    let plain = call_service(&hub.service, request("GET", "/healthz", &[], "")).await;
    assert_eq!(plain.header("strict-transport-security"), None);
}

/// Sends `head` and then `sent` bytes of a body announced far larger, and
/// reads the answer without sending the rest.
async fn answer_before_the_body(addr: SocketAddr, head: &str, sent: usize) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![b'x'; sent]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer while the body was still owed");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_without_credentials_is_refused_from_its_head_and_its_body_never_held() {
    let hub = Hub::start().await;
    let addr = hub.socket();
    let big = 8 * 1024 * 1024 - 1;
    for head in [
        // No credentials at all: a token is looked for in small bodies only.
        format!("POST /one/g/n/x HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\ncontent-length: {big}\r\n\r\n"),
        format!("POST /register HTTP/1.1\r\nhost: h\r\ncontent-length: {big}\r\n\r\n"),
        // A bad token in the head.
        format!("POST /one/g/n/x HTTP/1.1\r\nhost: h\r\nx-jwt: not.a.token\r\ncontent-length: {big}\r\n\r\n"),
    ] {
        let answer = answer_before_the_body(addr, &head, 64 * 1024).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{head}: {answer}");
        assert_eq!(hub.mediator.body_budget().held(), 0);
    }
    // The original's habit, a token in a small JSON body, still works.
    let body = serde_json::json!({
        "x-jwt": hub.token_for("g/n"),
        "group": "g", "name": "n", "url": "http://127.0.0.1:9", "ttl": 60,
    });
    let answer = hub.call("POST", "/register", &[], body.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Past 64 KiB, a body's token is not looked for.
    let mut padded = body.clone();
    padded["meta"] = serde_json::json!({ "pad": "p".repeat(70 * 1024) });
    let answer = hub.call("POST", "/register", &[], padded.to_string()).await;
    let error = assert_error(&answer, 401, "unauthorized", "caller");
    assert!(
        error["error"].as_str().unwrap().contains("64 KiB"),
        "{error}"
    );
}

#[tokio::test]
async fn bodies_in_memory_are_bounded_by_one_budget() {
    let hub = Hub::config()
        .limits(|limits| {
            limits.max_body = 1024 * 1024;
            limits.body_budget = 1024 * 1024;
        })
        .start()
        .await;
    let token = hub.token_for("callers/one");
    // One caller holds 900 KiB of a body it has not finished sending.
    let mut holder = TcpStream::connect(hub.socket()).await.unwrap();
    let head = format!(
        "POST /one/g/n/x HTTP/1.1\r\nhost: h\r\nx-jwt: {token}\r\ncontent-length: {}\r\n\r\n",
        1000 * 1024
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&vec![b'x'; 900 * 1024]).await.unwrap();
    let budget = hub.mediator.body_budget().clone();
    mediator_tests::harness::eventually("the first body is held", || budget.held() >= 800 * 1024)
        .await;
    // Another body of 200 KiB does not fit beside it.
    let answer = hub
        .call_as("POST", "/one/g/n/x", &token, vec![b'y'; 200 * 1024])
        .await;
    let error = assert_error(&answer, 503, "overloaded", "hub");
    assert!(
        error["error"].as_str().unwrap().contains("request bodies"),
        "{error}"
    );
    assert!(answer.header("retry-after").is_some());
    // Once the first is gone, its bytes are given back.
    drop(holder);
    mediator_tests::harness::eventually("the budget is given back", || budget.held() == 0).await;
    let answer = hub
        .call_as("POST", "/one/g/n/x", &token, vec![b'y'; 200 * 1024])
        .await;
    assert_error(&answer, 404, "unknown_target", "caller");
}

/// A registry whose every write fails the way a database driver says so,
/// naming its host and port.
struct LostStore(MemoryRegistry);

#[async_trait]
impl Registry for LostStore {
    async fn upsert(&self, _r: Registration, _now: Timestamp) -> Result<Node, StoreError> {
        Err(StoreError::new(
            "Can't connect to MySQL server on 'db.internal:3306' as user 'mediator'",
            true,
        ))
    }
    async fn renew(
        &self,
        key: &NodeKey,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.0.renew(key, ttl, now).await
    }
    async fn remove(&self, id: NodeId) -> Result<u64, StoreError> {
        self.0.remove(id).await
    }
    async fn remove_key(&self, key: &NodeKey) -> Result<u64, StoreError> {
        self.0.remove_key(key).await
    }
    async fn get(&self, key: &NodeKey) -> Result<Option<Node>, StoreError> {
        self.0.get(key).await
    }
    async fn get_by_id(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        self.0.get_by_id(id).await
    }
    async fn list(&self, group: Option<&str>) -> Result<Vec<Node>, StoreError> {
        self.0.list(group).await
    }
    async fn evict_expired(&self, now: Timestamp) -> Result<Vec<NodeKey>, StoreError> {
        self.0.evict_expired(now).await
    }
}

#[tokio::test]
async fn a_store_error_tells_a_node_the_store_is_unavailable_without_naming_it() {
    let hub = Hub::config()
        .registry(LostStore(MemoryRegistry::new()))
        .in_process();
    let body = serde_json::json!({"group": "g", "name": "n", "url": "http://127.0.0.1:9"});
    let answer = hub
        .call_as("POST", "/register", &hub.token_for("g/n"), body.to_string())
        .await;
    let error = assert_error(&answer, 503, "store", "hub");
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("store is unavailable"), "{message}");
    for secret in ["db.internal", "3306", "mediator", "MySQL"] {
        assert!(!message.contains(secret), "{secret} in {message}");
    }
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_client_is_the_one_throttled() {
    use mediator_transport_http::server::RemoteAddr;
    let hub = Hub::in_process();
    let proxy: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    let behind = |service: &MediatorService, client: &'static str| {
        let service = service.clone();
        async move {
            let mut request = request(
                "GET",
                "/token",
                &[
                    ("authorization", "Basic YWRtaW46d3Jvbmc="),
                    ("x-forwarded-for", client),
                ],
                "",
            );
            request.extensions_mut().insert(RemoteAddr(proxy));
            call_service(&service, request).await.status
        }
    };
    let trusting = hub
        .service
        .clone()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    for _ in 0..6 {
        behind(&trusting, "198.51.100.7").await;
    }
    assert_eq!(behind(&trusting, "198.51.100.7").await, 429);
    // Another client behind the same proxy is not locked out with it; a
    // forged hop before the proxy's own is not believed either.
    assert_eq!(behind(&trusting, "198.51.100.8").await, 401);
    assert_eq!(behind(&trusting, "198.51.100.7, 198.51.100.9").await, 401);
    // Without trusting the proxy, every client behind it is one.
    let fresh = Hub::in_process();
    for _ in 0..6 {
        behind(&fresh.service, "198.51.100.7").await;
    }
    assert_eq!(behind(&fresh.service, "198.51.100.8").await, 429);
}
