//! The nodes that answer the load, each run in a process of its own (the
//! harness starts itself with a hidden subcommand): a hyper echo server,
//! an echo node attached to the mediator over QUIC, and a NATS replier.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as HyperIncoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mediator_core::{Cipher, CipherError, NodeKey, TokenMinter};
use mediator_transport_quic::QuicNodeClient;

/// What `echo-node` prints once per port, before its address.
pub(crate) const ECHO_LISTENING: &str = "echo listening on ";
/// What `echo-node` prints when every port listens.
pub(crate) const ECHO_READY: &str = "echo ready";
/// What `quic-echo` prints once attached.
pub(crate) const QUIC_READY: &str = "quic echo attached";
/// What `nats-echo` prints once subscribed.
pub(crate) const NATS_READY: &str = "nats echo subscribed";

/// The identity cipher: the QUIC path carries the same plain bytes as
/// every other path, so no path pays for cryptography the others skip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clear;

impl Cipher for Clear {
    fn seal(&self, plaintext: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        Ok(plaintext.to_vec())
    }

    fn open(&self, sealed: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        Ok(sealed.to_vec())
    }
}

async fn echo(request: Request<HyperIncoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    Ok(Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// `echo-node`: `ports` hyper servers on loopback (HTTP/1.1 and h2c on
/// each), answering every request with its own body, until killed.
pub(crate) async fn serve_http(ports: usize) -> Result<(), String> {
    let mut listeners = Vec::with_capacity(ports);
    for _ in 0..ports.max(1) {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| format!("binding the echo server: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{ECHO_LISTENING}http://{addr}");
        listeners.push(listener);
    }
    println!("{ECHO_READY}");
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors or similar: try again shortly
                    // rather than end the port for the rest of the run.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(echo))
                        .await;
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// `quic-echo`: attaches `node` to the mediator's QUIC listener at `addr`
/// (certificate pinned by `pin`) and echoes every request, until killed.
pub(crate) async fn serve_quic(
    addr: SocketAddr,
    pin: &str,
    node: NodeKey,
    secret: &str,
) -> Result<(), String> {
    let client = QuicNodeClient::builder(addr)
        .pin(pin)
        .node_key(node)
        .token_minter(TokenMinter::hs256(secret))
        .cipher(Clear)
        .max_streams(1024)
        .start(|request: mediator_core::node::Incoming| async move { Ok(request.body) })
        .await
        .map_err(|e| format!("attaching over QUIC: {e}"))?;
    println!("{QUIC_READY}");
    std::future::pending::<()>().await;
    drop(client);
    Ok(())
}

/// `nats-echo`: answers every request on `subject` with its own payload,
/// until killed.
pub(crate) async fn serve_nats(url: &str, subject: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connecting to NATS at {url}: {e}"))?;
    let mut requests = client
        .subscribe(subject.to_owned())
        .await
        .map_err(|e| format!("subscribing to {subject}: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("flushing the subscription: {e}"))?;
    println!("{NATS_READY}");
    while let Some(message) = requests.next().await {
        if let Some(reply) = message.reply {
            if let Err(e) = client.publish(reply, message.payload).await {
                eprintln!("nats echo: publishing a reply: {e}");
            }
        }
    }
    Ok(())
}
