//! The original project's body shapes, so Rust nodes and the original's
//! Node children talk both ways through the mediator (feature `legacy`).
//!
//! **Insecure; for compatibility only.** The original's cipher
//! ([`LegacyCipher`], AES-256-CBC without a MAC) does not authenticate
//! anything: whoever relays a payload can alter, replay or re-route it, and
//! `fromCluster`/`fromNode` are whatever the sender wrote. Between Rust
//! nodes use [`super::NodeClient`] with a
//! [`KeyRing`](mediator_core::KeyRing).
//!
//! The payloads and tokens are the core's
//! ([`mediator_core::node::legacy`]); this module adds how the original's
//! libraries carry them over HTTP:
//!
//! - a request is `POST /one/<cluster>/<node>/<path>` with a fresh HS256
//!   token in `x-jwt` (payload `{}` plus `iat` and `exp`, no identity,
//!   signed with the shared secret) and the JSON body
//!   `{"fromCluster", "fromNode", "payload": encrypt(JSON.stringify(data))}`;
//! - a node answers `200 {"payload": encrypt(JSON.stringify(reply))}`, or
//!   `409 {"error": "..."}` when the payload is missing or does not decrypt.
//!
//! [`LegacyClient`] sends like the original's sending library;
//! [`LegacyService`] answers like the original's child, and
//! [`NodeClientBuilder::start_legacy`](super::NodeClientBuilder::start_legacy)
//! serves it as a registered node. The mediator must accept the original's
//! tokens ([`Authenticator::allow_tokens_without_sub`]) for the original's
//! children and for [`LegacyClient`].
//!
//! [`Authenticator::allow_tokens_without_sub`]: mediator_core::Authenticator::allow_tokens_without_sub

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mediator_core::cipher::legacy::LegacyCipher;
use mediator_core::node::legacy::{open_payload, original_claims, seal_payload};
use mediator_core::node::{read_error_body, BoxFuture, ClientError, Incoming};
use mediator_core::{CipherError, Clock, Error, NodeKey, SystemClock, TokenMinter};
use serde_json::{json, Value};

use super::node::{json_response, read_body, DEFAULT_MAX_BODY};
use super::transport::{self, Transport};
use super::wire::Serving;
use super::{NodeClient, NodeClientBuilder};
use crate::headers::{X_JWT, X_MEDIATOR, X_MEDIATOR_NODE};

/// Sends to nodes the way the original's sending library does.
///
/// ```no_run
/// # async fn demo() -> Result<(), mediator_core::node::ClientError> {
/// use mediator_core::cipher::legacy::LegacyCipher;
/// use mediator_transport_http::client::legacy::LegacyClient;
///
/// let client = LegacyClient::new(
///     "https://mediator.example:8443",
///     "PROTECTED_BASIC_AND_JWT value",
///     LegacyCipher::new("PROTECTED_AES256 value"),
/// )?
/// .from_node("billing", Some("worker-1"));
/// let reply = client
///     .send("users", Some("api"), "/lookup", &serde_json::json!({"id": 42}))
///     .await?;
/// # drop(reply); Ok(()) }
/// ```
#[derive(Clone)]
pub struct LegacyClient {
    base: String,
    transport: Transport,
    minter: TokenMinter,
    cipher: LegacyCipher,
    from_cluster: Option<String>,
    from_node: Option<String>,
    timeout: Duration,
    /// What the original's tokens are minted at.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LegacyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyClient")
            .field("mediator", &self.base)
            .field("from_cluster", &self.from_cluster)
            .field("from_node", &self.from_node)
            .finish_non_exhaustive()
    }
}

impl LegacyClient {
    /// A client for the mediator at `mediator_url`, minting tokens with the
    /// shared `secret` (the original's `PROTECTED_BASIC_AND_JWT`) and
    /// encrypting with `cipher` (from `PROTECTED_AES256`).
    ///
    /// Unlike the original's library, `http://` mediators are allowed too.
    pub fn new(
        mediator_url: &str,
        secret: impl AsRef<[u8]>,
        cipher: LegacyCipher,
    ) -> Result<LegacyClient, ClientError> {
        Ok(LegacyClient {
            base: transport::base_url(mediator_url)?,
            transport: Transport::new(None, Duration::from_secs(2))?,
            minter: TokenMinter::hs256(secret),
            cipher,
            from_cluster: None,
            from_node: None,
            timeout: super::DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        })
    }

    /// Trusts only the certificate authority in `pem` for an `https://`
    /// mediator.
    pub fn tls_root(mut self, pem: &[u8]) -> Result<LegacyClient, ClientError> {
        let tls = transport::tls_config(&[pem.to_vec()])?;
        self.transport = Transport::new(Some(tls), Duration::from_secs(2))?;
        Ok(self)
    }

    /// What to put in `fromCluster` and `fromNode` (unverified: the
    /// receiver cannot check them).
    pub fn from_node(mut self, cluster: impl Into<String>, node: Option<&str>) -> LegacyClient {
        self.from_cluster = Some(cluster.into());
        self.from_node = node.map(str::to_owned);
        self
    }

    /// How long to wait for an answer (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> LegacyClient {
        self.timeout = timeout;
        self
    }

    /// The clock the original's tokens are minted at (default: the
    /// system clock).
    pub fn clock(mut self, clock: impl Clock) -> LegacyClient {
        self.clock = Arc::new(clock);
        self
    }

    /// The original's token: `{}` plus `iat` and `exp`, signed with the
    /// secret, at the client's clock.
    fn token(&self) -> Result<String, ClientError> {
        Ok(self
            .minter
            .mint(&original_claims(self.clock.now()))
            .map_err(Error::from)?)
    }

    /// Sends `data` to node `node` of `cluster` (`None`: the cluster's
    /// unnamed node) at `path`, and returns the decrypted reply.
    pub async fn send(
        &self,
        cluster: &str,
        node: Option<&str>,
        path: &str,
        data: &Value,
    ) -> Result<Value, ClientError> {
        let key = NodeKey::new(cluster, node)?;
        let path = path.trim_start_matches('/');
        let url = format!(
            "{}/one/{}/{}/{path}",
            self.base,
            key.group(),
            key.name().unwrap_or_default()
        );
        let body = json!({
            "fromCluster": self.from_cluster,
            "fromNode": self.from_node,
            "payload": seal_payload(&self.cipher, data),
        });
        let request = transport::request_with(
            Method::POST,
            &url,
            (X_JWT, self.token()?),
            "application/json",
            Bytes::from(body.to_string()),
        )?;
        let answer = self.transport.send(request, self.timeout).await?;
        if answer.status != StatusCode::OK {
            let node = answer
                .headers
                .get(X_MEDIATOR_NODE)
                .map(|node| String::from_utf8_lossy(node.as_bytes()).into_owned());
            return Err(ClientError::refused(
                node,
                answer.status.as_u16(),
                read_error_body(&answer.body),
            ));
        }
        let reply: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::Protocol(format!("the reply is not JSON: {e}")))?;
        let payload = reply
            .get("payload")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::Protocol("the reply has no string payload".into()))?;
        Ok(open_payload(&self.cipher, payload)?)
    }
}

/// A request as a legacy node's handler sees it: decrypted and parsed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LegacyIncoming {
    /// What the sender wrote in `fromCluster` (unverified).
    pub from_cluster: Option<String>,
    /// What the sender wrote in `fromNode` (unverified).
    pub from_node: Option<String>,
    /// The HTTP method.
    pub method: Method,
    /// The request path at the node, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The decrypted payload, parsed as JSON.
    pub body: Value,
}

/// What a legacy node does with a request: turn the decrypted JSON into
/// the reply JSON (which is then encrypted).
///
/// Implemented for every `Fn(LegacyIncoming) -> impl Future<Output =
/// Result<Value, Error>>`, like the native [`Handler`](super::Handler). An
/// error is answered like the original's generic error, whatever its
/// status: `409 {"error": "<message>"}`.
pub trait LegacyHandler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: LegacyIncoming) -> BoxFuture<Result<Value, Error>>;
}

impl<F, Fut> LegacyHandler for F
where
    F: Fn(LegacyIncoming) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, Error>> + Send + 'static,
{
    fn handle(&self, request: LegacyIncoming) -> BoxFuture<Result<Value, Error>> {
        Box::pin(self(request))
    }
}

/// A hyper service that answers like the original's child: decrypts the
/// `payload` of each request, runs the [`LegacyHandler`], and answers
/// `{"payload": encrypt(JSON)}`.
///
/// Requests without the `x-mediator` header, without a string `payload`,
/// or whose payload does not decrypt to JSON are answered
/// `409 {"error": "..."}`. Cheap to clone.
#[derive(Clone)]
pub struct LegacyService {
    inner: Arc<LegacyInner>,
}

struct LegacyInner {
    cipher: LegacyCipher,
    handler: Arc<dyn LegacyHandler>,
    max_body: usize,
}

impl std::fmt::Debug for LegacyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyService")
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

/// The original's generic error answer.
fn conflict(message: &str) -> Response<Full<Bytes>> {
    json_response(StatusCode::CONFLICT, &json!({ "error": message }))
}

impl LegacyService {
    /// A service decrypting with `cipher` and answering with `handler`.
    pub fn new(cipher: LegacyCipher, handler: impl LegacyHandler) -> LegacyService {
        LegacyService::with_max_body(cipher, Arc::new(handler), DEFAULT_MAX_BODY)
    }

    fn with_max_body(
        cipher: LegacyCipher,
        handler: Arc<dyn LegacyHandler>,
        max_body: usize,
    ) -> LegacyService {
        LegacyService {
            inner: Arc::new(LegacyInner {
                cipher,
                handler,
                max_body,
            }),
        }
    }

    /// Handles one request, whatever its body type.
    pub async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let (head, body) = request.into_parts();
        if !head.headers.contains_key(X_MEDIATOR) {
            return conflict("requests must come through the mediator (no x-mediator header)");
        }
        let body = match read_body(body, inner.max_body).await {
            Ok(body) => body,
            Err(e) => return conflict(&e.to_string()),
        };
        let envelope: Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => return conflict("the body is not JSON"),
        };
        let Some(payload) = envelope.get("payload").and_then(Value::as_str) else {
            return conflict("payload is missing");
        };
        let data = match open_payload(&inner.cipher, payload) {
            Ok(data) => data,
            Err(e) => return conflict(&format!("payload does not decrypt to JSON: {e}")),
        };
        let text = |field: &str| {
            envelope
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let incoming = LegacyIncoming {
            from_cluster: text("fromCluster"),
            from_node: text("fromNode"),
            method: head.method.clone(),
            path: head.uri.path().to_owned(),
            query: head.uri.query().map(str::to_owned),
            body: data,
        };
        match inner.handler.handle(incoming).await {
            Ok(reply) => json_response(
                StatusCode::OK,
                &json!({ "payload": seal_payload(&inner.cipher, &reply) }),
            ),
            Err(e) => conflict(&e.to_string()),
        }
    }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for LegacyService {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.answer(request).await) })
    }
}

/// What a legacy node's callback server is made of, until it is bound.
pub(super) struct LegacyServing {
    cipher: LegacyCipher,
    handler: Arc<dyn LegacyHandler>,
}

impl LegacyServing {
    /// The service, reading bodies up to `max_body`.
    pub(super) fn service(&self, max_body: usize) -> LegacyService {
        LegacyService::with_max_body(self.cipher.clone(), Arc::clone(&self.handler), max_body)
    }
}

impl NodeClientBuilder {
    /// Starts a node that answers like the original's child (see
    /// [`LegacyService`]): serves `handler` at the callback URL, registers
    /// and keeps its lease, exactly as [`start`](Self::start) does.
    ///
    /// The returned client still sends sealed native requests with
    /// [`call`](mediator_core::node::NodeClient::call); to send to the
    /// original's children use a [`LegacyClient`].
    pub async fn start_legacy(
        self,
        cipher: LegacyCipher,
        handler: impl LegacyHandler,
    ) -> Result<NodeClient, ClientError> {
        let serving = Serving::Legacy(LegacyServing {
            cipher,
            handler: Arc::new(handler),
        });
        self.start_serving(serving, never_asked, NoSealing).await
    }
}

/// The native handler of a legacy node, whose callback server answers
/// with the legacy handler instead: never asked.
async fn never_asked(_request: Incoming) -> Result<Bytes, Error> {
    Err(Error::refused(
        501,
        "not_implemented",
        "this node answers the original's requests only",
    ))
}

/// Stands in for the node key of a legacy node started without one: it
/// seals nothing, so native calls from it fail clearly.
struct NoSealing;

impl mediator_core::Cipher for NoSealing {
    fn seal(&self, _plaintext: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        Err(CipherError::Key(
            "this legacy node was started without .keys(..): it cannot seal native requests".into(),
        ))
    }

    fn open(&self, _sealed: &[u8], _aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        Err(CipherError::Key(
            "this legacy node was started without .keys(..): it cannot open native replies".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::post("/echo?x=1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request")
    }

    async fn answer(service: &LegacyService, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        let response = service.answer(req).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn answers_like_the_original_child() {
        let cipher = LegacyCipher::new("secret");
        let service = LegacyService::new(cipher.clone(), |req: LegacyIncoming| async move {
            Ok::<_, Error>(json!({
                "got": req.body,
                "from": [req.from_cluster, req.from_node],
                "path": req.path,
            }))
        });
        let payload = cipher.encrypt(br#"{"n":1}"#);
        let body = json!({"fromCluster": "a", "fromNode": "b", "payload": payload}).to_string();
        let (status, reply) = answer(&service, request(&[("x-mediator", "true")], &body)).await;
        assert_eq!(status, StatusCode::OK);
        let plain = cipher
            .decrypt(reply["payload"].as_str().expect("payload"))
            .expect("decrypts");
        let plain: Value = serde_json::from_slice(&plain).expect("json");
        assert_eq!(
            plain,
            json!({"got": {"n": 1}, "from": ["a", "b"], "path": "/echo"})
        );

        for (headers, body) in [
            (
                &[("x-mediator", "true")][..],
                r#"{"fromCluster":"a"}"#.to_owned(),
            ),
            (
                &[("x-mediator", "true")][..],
                r#"{"payload":"00:00"}"#.to_owned(),
            ),
            (&[("x-mediator", "true")][..], "not json".to_owned()),
            (
                &[("x-mediator", "true")][..],
                json!({"payload": cipher.encrypt(b"not json")}).to_string(),
            ),
            (&[][..], body.clone()),
        ] {
            let (status, reply) = answer(&service, request(headers, &body)).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(reply["error"].is_string(), "{reply}");
        }
    }

    #[test]
    fn original_tokens_carry_no_identity() {
        let client = LegacyClient::new(
            "http://127.0.0.1:1",
            "shared secret",
            LegacyCipher::new("k"),
        )
        .expect("client");
        // Far from the system time: the token is minted on the given clock.
        let clock = mediator_core::ManualClock::new(mediator_core::Timestamp::from_millis(
            2_000_000_000_000,
        ));
        let client = client.clock(clock.clone());
        let token = client.token().expect("token");
        let auth = mediator_core::Authenticator::hs256("shared secret");
        assert!(auth.authenticate(&token, clock.now()).is_err());
        let who = auth
            .allow_tokens_without_sub(true)
            .authenticate(&token, clock.now())
            .expect("accepted when allowed");
        assert!(!who.verified);
        assert_eq!(who.key, None);
    }
}
