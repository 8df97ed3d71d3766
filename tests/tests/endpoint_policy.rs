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

/// Sends one unicast request to `users/api` as another node.
async fn call_api(hub: &Hub) -> Answer {
    hub.call_as(
        "POST",
        "/one/users/api/hello",
        &hub.token_for("users/caller"),
        "hi",
    )
    .await
}

/// The message of a delivery refused before anything was sent.
fn refused(answer: &Answer) -> String {
    let error = assert_error(answer, 502, "node_unreachable", "node");
    error["error"].as_str().expect("a message").to_owned()
}

/// Whether the first connection `listener` accepts is one made now, by this
/// test: a connection the mediator had opened earlier would be ahead of it
/// in the accept queue.
async fn nothing_connected_before(listener: &tokio::net::TcpListener) -> bool {
    let probe = tokio::net::TcpStream::connect(listener.local_addr().expect("an address"))
        .await
        .expect("connect to the listener");
    let (_, from) = listener.accept().await.expect("accept");
    from == probe.local_addr().expect("the probe's address")
}

#[tokio::test]
async fn a_name_resolving_only_to_denied_addresses_is_never_called() {
    let policy = EndpointPolicy::default()
        .deny("127.0.0.0/8".parse().expect("a network"))
        .deny("::1/128".parse().expect("a network"));
    let hub = Hub::config().endpoint_policy(policy).start().await;
    let node = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = node.local_addr().expect("an address").port();
    // A host name passes registration: what it resolves to is judged later.
    hub.register("users/api", &format!("http://localhost:{port}"))
        .await;

    let message = refused(&call_api(&hub).await);
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("127.0.0.0/8"), "{message}");
    assert!(
        nothing_connected_before(&node).await,
        "the mediator connected to a denied address"
    );
}

#[tokio::test]
async fn an_allowed_name_is_called_and_the_mediator_itself_is_not() {
    // Where localhost also resolves to ::1, where the hub does not listen,
    // that address is denied so that the refusal below is the hub's own.
    let policy = EndpointPolicy::default().deny("::1/128".parse().expect("a network"));
    let hub = Hub::config().endpoint_policy(policy).start().await;
    let echo = EchoNode::start("api").await;
    let port = echo.url.rsplit(':').next().expect("a port");
    hub.register("users/api", &format!("http://localhost:{port}"))
        .await;
    let answer = call_api(&hub).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(echo.count(), 1);

    // The mediator's own listener, spelled as a name, is refused too.
    let own = hub.socket().port();
    hub.register("users/api", &format!("http://localhost:{own}"))
        .await;
    let message = refused(&call_api(&hub).await);
    assert!(message.contains("the mediator itself"), "{message}");
}

/// The message of a registration refused as malformed.
fn invalid(answer: &Answer) -> String {
    let error = assert_error(answer, 400, "invalid", "caller");
    error["error"].as_str().expect("a message").to_owned()
}

#[tokio::test]
async fn registration_accepts_only_urls_delivery_can_call() {
    let hub = Hub::start().await;
    let echo = EchoNode::start("api").await;
    let port = echo.url.rsplit(':').next().expect("a port").to_owned();
    // Each of these the URL standard reads as the echo node, yet delivery
    // could not send a request to it as written.
    for (url, why) in [
        (format!("http://127.0.0.1:{port}\\base"), "backslash"),
        (
            format!("http://%31%32%37.0.0.1:{port}"),
            "percent-encoded host",
        ),
        (format!("http://127.0.0.1:{port}/a<b"), "'<'"),
        (format!("http://127.0.0.1\"x:{port}"), "'\"' in its host"),
        (format!("http://0x7f.1:{port}"), "write 127.0.0.1"),
    ] {
        let message = invalid(&register(&hub, &url).await);
        assert!(message.contains(why), "{url}: {message}");
        assert!(!hub.knows("users/api"), "{url} was registered");
    }
    // Unusual spellings both parsers read alike are accepted, and called.
    for url in [
        format!("HTTP://127.0.0.1:{port}/base\"quoted\"/{{x}}"),
        format!("http://127.0.0.1:0{port}/caf\u{e9}"),
    ] {
        let answer = register(&hub, &url).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.text());
        let before = echo.count();
        let answer = call_api(&hub).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.text());
        assert_eq!(echo.count(), before + 1, "{url}");
    }
}

#[tokio::test]
async fn a_denied_network_is_denied_in_every_ipv6_spelling() {
    let hub = Hub::start().await;
    for url in [
        "http://[::ffff:169.254.169.254]",
        "http://[::169.254.169.254]:80",
        "http://[64:ff9b::a9fe:a9fe]",
        "http://[2002:a9fe:a9fe::]:8080",
    ] {
        let message = invalid(&register(&hub, url).await);
        assert!(message.contains("169.254.0.0/16"), "{url}: {message}");
    }
    assert!(!hub.knows("users/api"));
}

/// One of this host's addresses beside loopback: the source address the
/// system picks for a route out (a UDP connect sends nothing).
fn this_hosts_address() -> Option<std::net::IpAddr> {
    for (bind, out) in [
        ("0.0.0.0:0", "198.51.100.1:9"),
        ("[::]:0", "[2001:db8::1]:9"),
    ] {
        let Ok(socket) = std::net::UdpSocket::bind(bind) else {
            continue;
        };
        if socket.connect(out).is_err() {
            continue;
        }
        if let Ok(addr) = socket.local_addr() {
            if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
                return Some(addr.ip());
            }
        }
    }
    None
}

#[tokio::test]
async fn a_hub_on_every_address_refuses_each_of_its_hosts_addresses_at_its_port() {
    let Some(ip) = this_hosts_address() else {
        eprintln!("skipped: this host has no address beside loopback");
        return;
    };
    let hub = Hub::config()
        .addr(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
        .start()
        .await;
    let own = hub.socket().port();
    let at = |port: u16| format!("http://{}/", std::net::SocketAddr::new(ip, port));
    let message = invalid(&register(&hub, &at(own)).await);
    assert!(
        message.contains("the mediator itself"),
        "{}: {message}",
        at(own)
    );
    if let std::net::IpAddr::V4(v4) = ip {
        let mapped = format!("http://[::ffff:{v4}]:{own}");
        let message = invalid(&register(&hub, &mapped).await);
        assert!(
            message.contains("the mediator itself"),
            "{mapped}: {message}"
        );
    }
    assert!(!hub.knows("users/api"));
    // The same address at another port is some other service's.
    let other = own.wrapping_add(1).max(1);
    let answer = register(&hub, &at(other)).await;
    assert_eq!(answer.status, 200, "{}: {}", at(other), answer.text());
}

/// A deliverer a team wraps around the HTTP one, to count its deliveries:
/// it passes each delivery on and knows nothing of endpoint policies.
struct Counting {
    inner: mediator_transport_http::HttpDelivery,
    count: std::sync::atomic::AtomicUsize,
}

#[mediator_core::async_trait]
impl mediator_core::Deliver for Counting {
    fn schemes(&self) -> Vec<String> {
        self.inner.schemes()
    }

    async fn deliver(
        &self,
        node: &mediator_core::Node,
        envelope: &mediator_core::Envelope,
        cx: &mediator_core::RequestContext,
    ) -> Result<mediator_core::Reply, mediator_core::DeliverError> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.deliver(node, envelope, cx).await
    }
}

#[tokio::test]
async fn a_wrapped_deliverer_is_held_to_the_policy_without_being_told() {
    use mediator_core::{
        Authenticator, Endpoint, Envelope, Identity, Mediator, MemoryRegistry, NodeKey,
        Registration, Target,
    };
    let counting = std::sync::Arc::new(Counting {
        inner: mediator_transport_http::HttpDelivery::default(),
        count: std::sync::atomic::AtomicUsize::new(0),
    });
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
        .endpoint_policy(
            EndpointPolicy::default()
                .deny("127.0.0.0/8".parse().expect("a network"))
                .deny("::1/128".parse().expect("a network")),
        )
        .deliver(std::sync::Arc::clone(&counting))
        .build()
        .expect("mediator");
    let node = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = node.local_addr().expect("an address").port();
    let api = NodeKey::named("users", "api").expect("a key");
    let at = Endpoint::http(format!("http://localhost:{port}")).expect("an endpoint");
    mediator
        .register(
            &Identity::internal(),
            Registration::new(api.clone(), at, std::time::Duration::from_secs(60)),
        )
        .await
        .expect("a host name passes registration");

    let e = mediator
        .route(
            &Identity::internal(),
            Envelope::new(Target::One(api), "/x", "hi"),
            None,
        )
        .await
        .expect_err("a denied address");
    assert_eq!(e.status(), 502, "{e}");
    assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
    assert_eq!(
        counting.count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the delivery went through the wrapper"
    );
    assert!(
        nothing_connected_before(&node).await,
        "the mediator connected to a denied address"
    );
}
