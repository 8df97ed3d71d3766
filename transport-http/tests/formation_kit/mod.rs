//! Shared parts of the formation tests: a mediator served on loopback and
//! nodes built with `NodeClient`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use mediator_core::{
    Authenticator, Claims, KeyRing, Mediator, MemoryRegistry, NodeKey, SealKey, Timestamp,
    TokenMinter,
};
use mediator_transport_http::client::{Incoming, NodeClientBuilder};
use mediator_transport_http::{
    HttpDelivery, HttpDeliveryConfig, HttpError, HttpListener, NodeClient, TlsConfig,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "formation secret, long enough to be real";

/// How long any wait in these tests may last before it counts as a failure.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A mediator (HttpListener + HttpDelivery + MemoryRegistry + HS256) on
/// loopback.
pub struct Hub {
    pub addr: SocketAddr,
    pub url: String,
    pub mediator: Mediator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), HttpError>>>,
}

#[derive(Default)]
pub struct HubOptions {
    pub addr: Option<SocketAddr>,
    pub allow_tokens_without_sub: bool,
    pub tls: Option<TlsConfig>,
    pub deadline: Option<Duration>,
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(HubOptions::default()).await
    }

    pub async fn start_with(options: HubOptions) -> Hub {
        let mediator = Mediator::builder()
            .registry(MemoryRegistry::new())
            .authenticator(
                Authenticator::hs256(SECRET)
                    .allow_tokens_without_sub(options.allow_tokens_without_sub),
            )
            .deliver(HttpDelivery::with_config(
                HttpDeliveryConfig::default().with_connect_timeout(Duration::from_millis(500)),
            ))
            .deadline(options.deadline.unwrap_or(Duration::from_secs(5)))
            .build()
            .expect("mediator");
        let addr = options
            .addr
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
        let mut listener = HttpListener::bind(addr).await.expect("bind the mediator");
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(tls) = options.tls {
            listener = listener.tls(tls);
        }
        let addr = listener.local_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(listener.serve_with_shutdown(mediator.clone(), async move {
            let _ = stopped.await;
        }));
        let url = if scheme == "https" {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        Hub {
            addr,
            url,
            mediator,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the port is free again.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve");
        }
    }

    /// A token naming `key`.
    pub fn token(&self, key: &NodeKey) -> String {
        minter()
            .mint(&Claims::node(
                key,
                Timestamp::now(),
                Duration::from_secs(3600),
            ))
            .expect("mint")
    }

    /// Whether the routing table holds `key`.
    pub fn knows(&self, key: &NodeKey) -> bool {
        self.mediator.routes().get(key).is_some()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn minter() -> TokenMinter {
    TokenMinter::hs256(SECRET)
}

pub fn key(text: &str) -> NodeKey {
    text.parse().expect("node key")
}

/// One node key shared by the whole formation.
pub fn ring() -> KeyRing {
    use std::sync::OnceLock;
    static RING: OnceLock<SealKey> = OnceLock::new();
    KeyRing::new(RING.get_or_init(SealKey::generate).clone())
}

/// A builder for node `text` (`g/n` or `g/`) of `hub`, with a token for
/// it, the formation's keys and a callback on a free loopback port.
pub fn node(hub: &Hub, text: &str) -> NodeClientBuilder {
    let key = key(text);
    NodeClient::builder(&hub.url)
        .node_key(key.clone())
        .token(hub.token(&key))
        .keys(ring())
        .callback("http://127.0.0.1:0")
}

/// A handler answering with what reached it, as JSON.
pub fn describe(
    name: &'static str,
) -> impl Fn(Incoming) -> std::future::Ready<Result<Bytes, mediator_core::Error>> + Send + Sync + 'static
{
    move |request: Incoming| {
        std::future::ready(Ok(Bytes::from(
            json!({
                "node": name,
                "from": request.from.as_ref().map(ToString::to_string),
                "target": request.target.to_string(),
                "method": request.method.as_str(),
                "path": request.path,
                "query": request.query,
                "deadline": request.deadline.map(|d| d.as_millis()),
                "body": String::from_utf8_lossy(&request.body),
            })
            .to_string(),
        )))
    }
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Polls `check` every 50 ms until it holds, failing after [`PATIENCE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
