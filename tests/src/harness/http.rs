//! A plain HTTP client for the tests, and what it answers: requests are
//! built by hand so a test controls every header and byte, and answers are
//! collected whole so assertions can look at all of them.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mediator_transport_http::MediatorService;
use serde_json::Value;
use tokio::net::TcpListener;
use tower_service::Service;

/// A reply as the caller saw it.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Every header of the reply.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; fails the test with the text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One header's value, when present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of one header (`www-authenticate` may come twice).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// A request with these headers and body; `url` may be a bare path (for a
/// service called in process).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a valid method"))
        .uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(body.into()))
        .expect("a valid request")
}

/// Sends one request over plain HTTP (HTTP/1.1) and collects the answer.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    send(request(method, url, headers, body)).await
}

/// [`call`] with a bearer token.
pub async fn call_as(method: &str, url: &str, token: &str, body: impl Into<Bytes>) -> Answer {
    let bearer = format!("Bearer {token}");
    call(method, url, &[("authorization", &bearer)], body).await
}

/// Sends a request built by hand over plain HTTP and collects the answer.
pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    // A client per request: no connection outlives the call, so a test
    // that stops a server never finds a pooled one still open.
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.expect("the server answers");
    collect(response).await
}

/// Calls a service in process, as a server would, and collects the answer.
pub async fn call_service<B>(service: &MediatorService, request: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = service
        .clone()
        .call(request)
        .await
        .unwrap_or_else(|never| match never {});
    collect(response).await
}

/// Reads a reply whole, as the caller sees it.
async fn collect<B>(response: Response<B>) -> Answer
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the whole reply body")
        .to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Asserts the mediator's JSON error shape (status, `kind`, `fault`, an
/// `error` message) and returns the body.
pub fn assert_error(answer: &Answer, status: u16, kind: &str, fault: &str) -> Value {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["kind"], kind, "{body}");
    assert_eq!(body["fault"], fault, "{body}");
    assert!(body["error"].is_string(), "{body}");
    body
}

/// How many JSON replies carry each `label` (as [`EchoNode`](super::EchoNode)s
/// answer).
pub fn count_labels(answers: &[Answer]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        let label = answer.json()["label"].as_str().unwrap_or("?").to_owned();
        *counts.entry(label).or_insert(0) += 1;
    }
    counts
}

/// A URL where nothing listens (bound, then closed).
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}")
}

/// A request body that arrives in chunks and never says how long it is,
/// as a streamed upload does.
pub struct Chunks(VecDeque<Bytes>);

impl Chunks {
    /// These chunks, in order.
    pub fn new(chunks: Vec<Vec<u8>>) -> Chunks {
        Chunks(chunks.into_iter().map(Bytes::from).collect())
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}
