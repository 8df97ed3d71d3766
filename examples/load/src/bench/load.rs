//! The one load client: a fixed number of requests in flight, each slot a
//! task that sends, checks the answer and records its latency in an HDR
//! histogram, for a fixed time after a warm-up.
//!
//! Over HTTP/1.1 every slot has its own keep-alive connection; over the
//! multiplexed protocols (h2c, QUIC, NATS) slots share one connection per
//! 64 in flight, so no connection carries more streams than a QUIC
//! listener allows by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mediator_core::NodeKey;
use mediator_transport_quic::QuicNodeClient;

/// How many in-flight slots share one connection of a multiplexed protocol.
pub(crate) const SLOTS_PER_MUX: usize = 64;

/// What each slot sends and how its answer is judged.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    /// POST `path` with `body`; the answer must be 200 with the same body.
    Echo { path: String, body: Bytes },
    /// POST `path` with `body` to a group of `nodes`; the answer must be
    /// 200 with `x-mediator-summary` saying every node answered.
    Broadcast {
        path: String,
        body: Bytes,
        nodes: usize,
    },
    /// register, renew, remove: one request per step, one node per cycle.
    Churn { group: String, url: String },
}

/// How a slot reaches the far end.
#[derive(Clone)]
pub(crate) enum Link {
    /// HTTP/1.1, a connection of its own.
    H1 {
        addr: SocketAddr,
        /// `Authorization` header, if any.
        auth: Option<HeaderValue>,
    },
    /// h2c with prior knowledge, a shared connection.
    H2 {
        addr: SocketAddr,
        send: http2::SendRequest<Full<Bytes>>,
        auth: Option<HeaderValue>,
    },
    /// A QUIC node client calling `target` through the mediator.
    Quic {
        client: QuicNodeClient,
        target: NodeKey,
    },
    /// NATS request-reply on `subject`.
    Nats {
        client: async_nats::Client,
        subject: String,
    },
}

/// What one window measured.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Requests answered as expected.
    pub(crate) ok: u64,
    /// Requests that failed or were answered wrongly.
    pub(crate) errors: u64,
    /// The first failure, said in words.
    pub(crate) first_error: Option<String>,
    /// Wall time of the window.
    pub(crate) elapsed: Duration,
    /// Latency of every request answered as expected, in microseconds.
    pub(crate) latencies: Histogram<u64>,
}

impl Window {
    fn empty() -> Window {
        Window {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latencies: new_histogram(),
        }
    }

    /// Requests per second.
    pub(crate) fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        self.latencies.value_at_quantile(q) as f64 / 1000.0
    }

    fn absorb(&mut self, other: Window) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms share bounds, so adding cannot fail; a failure
        // would only lose this slot's latencies, which `ok` still counts.
        let _ = self.latencies.add(&other.latencies);
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits; these bounds are valid
    // constants, so construction cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// One slot: its link, its open HTTP/1.1 connection, and its churn state.
struct Slot {
    link: Link,
    h1: Option<http1::SendRequest<Full<Bytes>>>,
    id: usize,
    step: u64,
}

/// A set of slots that measure windows one after the other, keeping
/// their connections between windows.
pub(crate) struct Load {
    slots: Vec<Slot>,
    work: Arc<Work>,
}

impl Load {
    /// `links[i]` is slot `i`'s link (one per request in flight).
    pub(crate) fn new(links: Vec<Link>, work: Work) -> Load {
        Load {
            slots: links
                .into_iter()
                .enumerate()
                .map(|(id, link)| Slot {
                    link,
                    h1: None,
                    id,
                    step: 0,
                })
                .collect(),
            work: Arc::new(work),
        }
    }

    /// Runs every slot for `duration` and merges what they measured.
    pub(crate) async fn window(&mut self, duration: Duration) -> Window {
        let start = Instant::now();
        let end = start + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for (index, mut slot) in self.slots.drain(..).enumerate() {
            let work = Arc::clone(&self.work);
            tasks.spawn(async move {
                let mut window = Window::empty();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    match slot.shoot(&work).await {
                        Ok(()) => {
                            window.ok += 1;
                            let micros = sent.elapsed().as_micros();
                            let _ = window
                                .latencies
                                .record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                        }
                        Err(e) => {
                            window.errors += 1;
                            window.first_error.get_or_insert(e);
                            // A refused or broken connection fails at once:
                            // pause so a dead far end is not spun on.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                (index, slot, window)
            });
        }
        let mut total = Window::empty();
        let mut back = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((index, slot, window)) => {
                    total.absorb(window);
                    back.push((index, slot));
                }
                Err(e) => {
                    total.errors += 1;
                    total
                        .first_error
                        .get_or_insert(format!("a load task failed: {e}"));
                }
            }
        }
        total.elapsed = start.elapsed();
        back.sort_by_key(|(index, _)| *index);
        self.slots = back.into_iter().map(|(_, slot)| slot).collect();
        total
    }
}

impl Slot {
    async fn shoot(&mut self, work: &Work) -> Result<(), String> {
        match (&self.link, work) {
            (Link::Quic { client, target }, Work::Echo { path, body }) => {
                let reply = client
                    .call(target.clone(), path, body.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                same(body, &reply)
            }
            (Link::Nats { client, subject }, Work::Echo { body, .. }) => {
                let reply = client
                    .request(subject.clone(), body.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                same(body, &reply.payload)
            }
            (Link::Quic { .. } | Link::Nats { .. }, _) => {
                Err("this path only carries the echo workload".into())
            }
            (Link::H1 { .. } | Link::H2 { .. }, _) => self.shoot_http(work).await,
        }
    }

    async fn shoot_http(&mut self, work: &Work) -> Result<(), String> {
        let (path, body) = match work {
            Work::Echo { path, body } | Work::Broadcast { path, body, .. } => {
                (path.clone(), body.clone())
            }
            Work::Churn { group, url } => {
                let name = format!("s{}-{}", self.id, self.step / 3);
                let (path, body) = match self.step % 3 {
                    0 => (
                        "/register",
                        format!(r#"{{"group":"{group}","name":"{name}","url":"{url}","ttl":60}}"#),
                    ),
                    1 => (
                        "/renew",
                        format!(r#"{{"group":"{group}","name":"{name}","ttl":60}}"#),
                    ),
                    _ => (
                        "/remove",
                        format!(r#"{{"group":"{group}","name":"{name}"}}"#),
                    ),
                };
                (path.to_owned(), Bytes::from(body))
            }
        };
        let (status, headers, reply) = self.exchange(&path, body.clone()).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "{path}: {status}: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            ));
        }
        match work {
            Work::Echo { .. } => same(&body, &reply),
            Work::Broadcast { nodes, .. } => {
                let summary = headers
                    .get("x-mediator-summary")
                    .and_then(|v| v.to_str().ok())
                    .ok_or("no x-mediator-summary on a broadcast reply")?;
                let answered = summary
                    .split(';')
                    .filter_map(|part| part.trim().strip_prefix("answered="))
                    .find_map(|n| n.parse::<usize>().ok());
                if answered == Some(*nodes) {
                    Ok(())
                } else {
                    Err(format!("broadcast to {nodes} nodes: {summary}"))
                }
            }
            Work::Churn { .. } => {
                self.step += 1;
                Ok(())
            }
        }
    }

    async fn exchange(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
        let response = match &self.link {
            Link::H1 { addr, auth } => {
                let addr = *addr;
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(path)
                    .header(http::header::HOST, addr.to_string())
                    .header(http::header::CONTENT_TYPE, "application/octet-stream");
                if let Some(auth) = auth {
                    request = request.header(http::header::AUTHORIZATION, auth.clone());
                }
                let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
                let ready = match self.h1.as_mut() {
                    Some(send) => send.ready().await.is_ok(),
                    None => false,
                };
                if !ready {
                    self.h1 = Some(connect_h1(addr).await?);
                }
                let Some(send) = self.h1.as_mut() else {
                    return Err("no connection".into());
                };
                match send.send_request(request).await {
                    Ok(response) => response,
                    Err(e) => {
                        self.h1 = None;
                        return Err(format!("HTTP/1.1 to {addr}: {e}"));
                    }
                }
            }
            Link::H2 { addr, send, auth } => {
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://{addr}{path}"))
                    .header(http::header::CONTENT_TYPE, "application/octet-stream");
                if let Some(auth) = auth {
                    request = request.header(http::header::AUTHORIZATION, auth.clone());
                }
                let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
                let mut send = send.clone();
                send.ready()
                    .await
                    .map_err(|e| format!("h2c to {addr}: {e}"))?;
                send.send_request(request)
                    .await
                    .map_err(|e| format!("h2c to {addr}: {e}"))?
            }
            Link::Quic { .. } | Link::Nats { .. } => {
                return Err("not an HTTP link".into());
            }
        };
        let (parts, incoming) = response.into_parts();
        let reply = incoming
            .collect()
            .await
            .map_err(|e| format!("reading the reply: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, reply))
    }
}

fn same(sent: &Bytes, reply: &[u8]) -> Result<(), String> {
    if sent.as_ref() == reply {
        Ok(())
    } else {
        Err(format!(
            "the echo differs: {} bytes sent, {} back",
            sent.len(),
            reply.len()
        ))
    }
}

/// A TCP connection to `addr`, without Nagle's delay, as hyper wants it.
async fn dial(addr: SocketAddr) -> Result<TokioIo<tokio::net::TcpStream>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

/// A fresh HTTP/1.1 connection to `addr`.
pub(crate) async fn connect_h1(
    addr: SocketAddr,
) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let (send, connection) = http1::handshake(dial(addr).await?)
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(connection);
    Ok(send)
}

/// A fresh h2c connection (prior knowledge) to `addr`.
pub(crate) async fn connect_h2(
    addr: SocketAddr,
) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let (send, connection) = http2::handshake(TokioExecutor::new(), dial(addr).await?)
        .await
        .map_err(|e| format!("h2c handshake with {addr}: {e}"))?;
    tokio::spawn(connection);
    Ok(send)
}

/// How many shared connections `in_flight` slots of a multiplexed
/// protocol use.
pub(crate) fn mux_connections(in_flight: usize) -> usize {
    in_flight.div_ceil(SLOTS_PER_MUX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_counts_and_latencies() {
        let mut a = Window::empty();
        a.ok = 2;
        a.latencies.record(1000).expect("in range");
        a.latencies.record(3000).expect("in range");
        let mut b = Window::empty();
        b.errors = 1;
        b.first_error = Some("refused".into());
        b.latencies.record(2000).expect("in range");
        a.absorb(b);
        a.elapsed = Duration::from_secs(1);
        assert_eq!((a.ok, a.errors), (2, 1));
        assert_eq!(a.first_error.as_deref(), Some("refused"));
        assert_eq!(a.latencies.len(), 3);
        assert!((a.quantile_ms(0.5) - 2.0).abs() < 0.01);
        assert!((a.rate() - 2.0).abs() < 1e-9);
        assert_eq!(mux_connections(1), 1);
        assert_eq!(mux_connections(64), 1);
        assert_eq!(mux_connections(256), 4);
    }
}
