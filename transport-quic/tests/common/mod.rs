//! A mediator with a QUIC listener on a free loopback port, and nodes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::{Backoff, Handler, Incoming};
use mediator_core::{
    Authenticator, Claims, Error, KeyRing, Limits, Mediator, MemoryRegistry, NodeKey, SealKey,
    Timestamp, TokenMinter,
};
use mediator_transport_quic::{QuicLimits, QuicListener, QuicNodeClient, ServerTls};

pub const SECRET: &str = "a secret of at least 32 bytes!!!";

pub struct Hub {
    pub mediator: Mediator,
    pub listener: QuicListener,
    pub addr: SocketAddr,
    pub tls: ServerTls,
    pub minter: TokenMinter,
    pub keys: KeyRing,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_body = 64 * 1024;
    limits.deadline = Duration::from_secs(5);
    limits
}

pub fn mediator() -> Mediator {
    Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(SECRET))
        .limits(limits())
        .build()
        .expect("mediator")
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(mediator(), QuicLimits::default()).await
    }

    pub async fn start_with(mediator: Mediator, limits: QuicLimits) -> Hub {
        let tls = ServerTls::self_signed(&["localhost"]).expect("tls");
        Hub::serve(
            mediator,
            tls,
            "127.0.0.1:0".parse().expect("addr"),
            limits,
            KeyRing::new(SealKey::generate()),
        )
    }

    pub fn serve(
        mediator: Mediator,
        tls: ServerTls,
        addr: SocketAddr,
        limits: QuicLimits,
        keys: KeyRing,
    ) -> Hub {
        let listener = QuicListener::bind_with(addr, &tls, limits).expect("bind");
        Hub::serve_on(mediator, listener, tls, keys)
    }

    pub fn serve_on(
        mediator: Mediator,
        listener: QuicListener,
        tls: ServerTls,
        keys: KeyRing,
    ) -> Hub {
        mediator.add_deliver(listener.delivery()).expect("deliver");
        let addr = listener.local_addr().expect("addr");
        let serving = listener.clone();
        let served = mediator.clone();
        let task = tokio::spawn(async move {
            serving.serve(served).await.expect("serve");
        });
        let minter = TokenMinter::hs256(SECRET);
        Hub {
            mediator,
            listener,
            addr,
            tls,
            minter,
            keys,
            task,
        }
    }

    pub fn token(&self, key: &NodeKey) -> String {
        self.minter
            .mint(&Claims::node(
                key,
                Timestamp::now(),
                Duration::from_secs(3600),
            ))
            .expect("token")
    }

    pub fn client(&self, key: &str) -> mediator_transport_quic::QuicNodeClientBuilder {
        let key: NodeKey = key.parse().expect("key");
        QuicNodeClient::builder(self.addr)
            .pin(self.listener.fingerprint())
            .node_key(key)
            .token_minter(self.minter.clone())
            .keys(self.keys.clone())
            .timeout(Duration::from_secs(3))
            .backoff(Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(400),
            })
    }

    pub async fn node(&self, key: &str, handler: impl Handler) -> QuicNodeClient {
        self.client(key).start(handler).await.expect("attach")
    }

    pub async fn caller(&self, key: &str) -> QuicNodeClient {
        self.client(key).connect().await.expect("connect")
    }
}

/// Answers `<name> got <body>`.
pub fn echo(name: &'static str) -> impl Handler {
    move |request: Incoming| async move {
        Ok::<_, Error>(Bytes::from(format!(
            "{name} got {}",
            String::from_utf8_lossy(&request.body)
        )))
    }
}

pub fn key(text: &str) -> NodeKey {
    text.parse().expect("key")
}

/// Polls `check` every 20 ms until it holds, at most `within`.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A raw connection to the listener, for frames the client never sends.
pub async fn raw(hub: &Hub) -> quinn::Connection {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(
        mediator_transport_quic::pinned_client_config(hub.listener.fingerprint()).expect("config"),
    );
    endpoint
        .connect(hub.addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

/// A header frame: the 4-byte big-endian length, then the JSON.
pub fn frame(json: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(json).expect("json");
    let mut out = u32::try_from(json.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&json);
    out
}

/// A raw connection that said hello with `token` (caller only).
pub async fn raw_caller(hub: &Hub, token: &str) -> quinn::Connection {
    let connection = raw(hub).await;
    let (head, _) = exchange(
        &connection,
        &frame(&serde_json::json!({ "token": token })),
        true,
    )
    .await;
    assert_eq!(head["status"], 200, "hello refused: {head}");
    connection
}

/// Sends `bytes` on a new stream (and its end when `finish`), then reads
/// the whole answer: its header frame as JSON, and the body after it.
pub async fn exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> (serde_json::Value, Vec<u8>) {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(bytes).await.expect("sent");
    if finish {
        send.finish().expect("finish");
    }
    read_answer(&mut recv).await
}

/// Reads one whole answer from `recv`.
pub async fn read_answer(recv: &mut quinn::RecvStream) -> (serde_json::Value, Vec<u8>) {
    let all = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 24))
        .await
        .expect("answered in time")
        .expect("answer read");
    let len = u32::from_be_bytes(all[..4].try_into().expect("prefix")) as usize;
    let head = serde_json::from_slice(&all[4..4 + len]).expect("answer head");
    (head, all[4 + len..].to_vec())
}
