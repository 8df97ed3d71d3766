//! The link between instances of a formation, over HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mediator_core::formation::{Instance, PeerLink};
use mediator_core::{
    async_trait, error_chain, DeliverError, Envelope, ErrorBody, Node, Reply, RequestContext,
};

use super::{header_value, read_reply, ring_provider};
use crate::headers::{
    forwardable_with_room, TRACEPARENT, X_MEDIATOR_DEADLINE, X_MEDIATOR_FROM, X_MEDIATOR_NODE,
    X_MEDIATOR_PEER, X_MEDIATOR_TARGET, X_REQUEST_ID,
};

/// How long a peer may take to accept a connection before it counts as
/// gone: on a network where instances answer in microseconds, a second is
/// a dead peer, and its callers get a 503 rather than wait out their
/// deadline.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most a peer's own refusal (not a node's reply) is read of.
const PEER_ERROR_BODY: usize = 64 * 1024;

/// Forwards calls to the instance of the formation holding a node's
/// connection, at its announced peer address (`http://` for h2c, or
/// `https://`), over one multiplexed HTTP/2 connection per peer.
///
/// The call travels to `/peer/one/GROUP/NAME/PATH` with its method,
/// headers and sealed body as they are, the verified sender in
/// `x-mediator-from`, what the caller addressed in `x-mediator-target`
/// (a broadcast's `g/*` for each of its nodes), the deadline, the request id and trace, and this
/// instance's credential in `x-mediator-peer`; never the caller's own
/// credential. A peer that cannot be reached, or that refuses the call
/// itself (no such node attached there, a credential it does not take),
/// makes the call fail as [absent](DeliverError::absent): the caller gets
/// a 503.
///
/// ```
/// use mediator_core::formation::PeerKey;
/// use mediator_core::{Authenticator, Mediator, MemoryRegistry};
/// use mediator_transport_http::HttpPeerLink;
///
/// let secret = "a secret of at least 32 bytes!!!";
/// let mediator = Mediator::builder()
///     .registry(MemoryRegistry::new())
///     .authenticator(Authenticator::hs256(secret))
///     .instance_id("hub-1")
///     .formation(PeerKey::from_secret(secret.as_bytes()), "http://10.0.0.1:8080", HttpPeerLink::new())
///     .build()?;
/// assert_eq!(mediator.peer_url(), "http://10.0.0.1:8080");
/// # Ok::<(), mediator_core::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpPeerLink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    max_reply_body: usize,
}

impl std::fmt::Debug for HttpPeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPeerLink")
            .field("max_reply_body", &self.max_reply_body)
            .finish_non_exhaustive()
    }
}

impl Default for HttpPeerLink {
    fn default() -> Self {
        HttpPeerLink::new()
    }
}

impl HttpPeerLink {
    /// A link that trusts the webpki roots for `https://` peers.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(PEER_CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(ring_provider())
            // Infallible: the ring provider supports TLS 1.2 and 1.3, the
            // safe default versions, on every platform.
            .expect("the ring provider supports the default TLS versions")
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // Prior knowledge on `http://` too: every call to a peer
            // shares one connection.
            .http2_only(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(10)))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        HttpPeerLink {
            client,
            max_reply_body: super::HttpDeliveryConfig::default().max_reply_body,
        }
    }

    fn request(
        &self,
        peer: &Instance,
        credential: &str,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Request<Full<Bytes>>, String> {
        let base = peer.peer.trim_end_matches('/');
        let path = &envelope.path_and_query;
        let slash = if path.starts_with('/') { "" } else { "/" };
        let uri = format!(
            "{base}/peer/one/{}/{}{slash}{path}",
            node.key.group(),
            node.key.name().unwrap_or_default()
        );
        let mut headers = forwardable_with_room(&envelope.headers, 6);
        headers.insert(X_MEDIATOR_PEER, header_value(credential)?);
        if let Some(from) = &envelope.from {
            headers.insert(X_MEDIATOR_FROM, header_value(&from.to_string())?);
        }
        // What the caller addressed (`g/*`, `g/?`): the node checks its
        // sealed payload against it, whichever node the path names.
        headers.insert(
            X_MEDIATOR_TARGET,
            header_value(&envelope.target.to_string())?,
        );
        headers.insert(
            X_MEDIATOR_DEADLINE,
            HeaderValue::from(cx.deadline.wall().as_millis()),
        );
        for (name, value) in [
            (X_REQUEST_ID, &cx.trace.request_id),
            (TRACEPARENT, &cx.trace.traceparent),
        ] {
            if let Some(value) = value {
                headers.insert(name, header_value(value)?);
            }
        }
        let mut request = Request::builder()
            .method(envelope.method.clone())
            .uri(&uri)
            .body(Full::new(envelope.body.clone()))
            .map_err(|e| format!("bad peer url {uri:?}: {e}"))?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

#[async_trait]
impl PeerLink for HttpPeerLink {
    async fn forward(
        &self,
        peer: &Instance,
        credential: &str,
        node: &Node,
        envelope: &Envelope,
        cx: &RequestContext,
    ) -> Result<Reply, DeliverError> {
        let id = &peer.id;
        let request = self
            .request(peer, credential, node, envelope, cx)
            .map_err(DeliverError::unreachable)?;
        let response = self.client.request(request).await.map_err(|e| {
            let why = error_chain(&e);
            if e.is_connect() {
                DeliverError::absent(format!(
                    "attached to instance {id}, which does not answer at {}: {why}",
                    peer.peer
                ))
            } else {
                DeliverError::failed(format!("the link to instance {id} broke: {why}"))
            }
        })?;
        // A node's reply, relayed by the peer, names the node; the peer's
        // own refusal does not (a node may not send `x-mediator-*`).
        if response.headers().contains_key(X_MEDIATOR_NODE) {
            return read_reply(response, self.max_reply_body)
                .await
                .map_err(DeliverError::failed);
        }
        let status = response.status();
        let body = Limited::new(response.into_body(), PEER_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let said = ErrorBody::parse(&body).map_or_else(
            || format!("status {status}"),
            |e| format!("{} ({})", e.error, e.kind),
        );
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DeliverError::absent(format!(
                "instance {id} refused this instance's credential ({said}): do the instances \
                 share one secret?"
            )),
            StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => {
                DeliverError::absent(format!("instance {id} could not deliver: {said}"))
            }
            _ => DeliverError::failed(format!("instance {id} answered: {said}")),
        })
    }
}
