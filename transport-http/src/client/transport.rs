//! The client half of the wire: one pooled HTTP(S) client, token sources,
//! and turning the mediator's answers into results.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mediator_core::{Claims, Error, Fault, NodeKey, Timestamp, TokenMinter};
use serde::Deserialize;
use url::Url;

use crate::error::HttpError;

/// How long a minted token lives. Short, so a leaked one is soon useless;
/// long enough that minting is rare next to requests.
const MINTED_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A minted token is replaced once less than this is left of it, so a
/// token never expires between being read and being checked.
const REMINT_MARGIN: Duration = Duration::from_secs(60);

/// Where a client's bearer tokens come from.
#[derive(Debug)]
pub(crate) enum TokenSource {
    /// One token given by the operator, used as is.
    Fixed(String),
    /// Tokens minted on demand and cached until shortly before expiry.
    Minted {
        minter: TokenMinter,
        /// The `sub` to mint for; `None` mints the original's kind of token
        /// (no identity).
        sub: Option<NodeKey>,
        cache: Mutex<Option<(String, Timestamp)>>,
    },
}

impl TokenSource {
    pub(crate) fn minted(minter: TokenMinter, sub: Option<NodeKey>) -> TokenSource {
        TokenSource::Minted {
            minter,
            sub,
            cache: Mutex::new(None),
        }
    }

    /// A token valid for at least [`REMINT_MARGIN`] from now.
    pub(crate) fn token(&self) -> Result<String, HttpError> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::Minted { minter, sub, cache } => {
                let now = Timestamp::now();
                // A poisoned cache only means a panic elsewhere while it was
                // held; the cached value is still whole.
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((token, expires)) = cache.as_ref() {
                    if now.until(*expires) > REMINT_MARGIN {
                        return Ok(token.clone());
                    }
                }
                let claims = match sub {
                    Some(key) => Claims::node(key, now, MINTED_LIFETIME),
                    None => Claims {
                        sub: None,
                        exp: (now + MINTED_LIFETIME).as_secs(),
                        iat: now.as_secs(),
                        nbf: None,
                        scope: None,
                    },
                };
                let token = minter.mint(&claims).map_err(Error::from)?;
                *cache = Some((token.clone(), now + MINTED_LIFETIME));
                Ok(token)
            }
        }
    }
}

/// A TLS configuration trusting only the certificate authorities in
/// `roots` (PEM), for a mediator whose certificate a private authority issued.
pub(crate) fn tls_config(roots_pem: &[Vec<u8>]) -> Result<rustls::ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        let mut reader = pem.as_slice();
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| HttpError::Tls(format!("bad certificate PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| HttpError::Tls(format!("unusable root certificate: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(HttpError::Tls(
                "the root PEM holds no CERTIFICATE block".into(),
            ));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer with its whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Transport {
    pub(crate) fn new(
        tls: Option<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Transport, HttpError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match tls {
            Some(config) => builder.with_tls_config(config),
            None => builder
                .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
                .map_err(|e| HttpError::Tls(e.to_string()))?,
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Transport { client })
    }

    /// Sends one request and reads the whole answer, giving up after `limit`.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        limit: Duration,
    ) -> Result<Answer, HttpError> {
        let url = request.uri().to_string();
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| HttpError::Unreachable {
                        url: url.clone(),
                        reason: describe(&e),
                    })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| HttpError::Unreachable {
                    url: url.clone(),
                    reason: format!("the answer broke off: {e}"),
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::Timeout { url, after: limit }),
        }
    }
}

/// The error and its causes in one line (hyper's top-level message alone
/// says little, such as "client error (Connect)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Builds a request with a bearer token.
pub(crate) fn request(
    method: Method,
    url: &str,
    token: &str,
    content_type: &'static str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, HttpError> {
    request_with(
        method,
        url,
        (AUTHORIZATION, format!("Bearer {token}")),
        content_type,
        body,
    )
}

/// Builds a request whose credentials travel in `header` (the original's
/// dialect has its own header for them).
pub(crate) fn request_with(
    method: Method,
    url: &str,
    (header, credentials): (HeaderName, String),
    content_type: &'static str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, HttpError> {
    let credentials = HeaderValue::try_from(credentials)
        .map_err(|_| Error::invalid("token", "must be printable ASCII"))?;
    Request::builder()
        .method(method)
        .uri(url)
        .header(header, credentials)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .map_err(|e| HttpError::Core(Error::invalid("url", format!("{url:?} ({e})"))))
}

/// The error body the mediator and nodes answer with:
/// `{"error", "kind", "fault"}`; the original's `error` may be an object.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: serde_json::Value,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    fault: Option<String>,
}

/// The message of an error body, or the body itself when it is not one.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error: serde_json::Value::String(message),
            ..
        }) => message,
        Ok(ErrorBody {
            error: serde_json::Value::Null,
            ..
        })
        | Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(no body)".to_owned()
            } else if text.len() > 300 {
                // Keep errors readable when a proxy answers with a page.
                let mut end = 300;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &text[..end])
            } else {
                text.to_owned()
            }
        }
        Ok(ErrorBody { error, .. }) => error.to_string(),
    }
}

/// The mediator's own refusal (no node answered).
pub(crate) fn mediator_error(status: StatusCode, body: &[u8]) -> HttpError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (kind, fault) = match parsed {
        Some(ErrorBody { kind, fault, .. }) => (kind, fault.as_deref().and_then(parse_fault)),
        None => (None, None),
    };
    HttpError::Mediator {
        status: status.as_u16(),
        kind: kind.unwrap_or_else(|| "unknown".to_owned()),
        fault,
        message: error_message(body),
    }
}

/// A node's own error answer, relayed by the mediator.
pub(crate) fn node_error(node: String, status: u16, body: &[u8]) -> HttpError {
    HttpError::Node {
        node,
        status,
        message: error_message(body),
    }
}

/// A `{"error","kind","fault"}` object found inside a `/many` entry.
pub(crate) fn catch_error(value: &serde_json::Value) -> (String, Option<Fault>, String) {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let fault = value
        .get("fault")
        .and_then(|f| f.as_str())
        .and_then(parse_fault);
    let message = match value.get("error") {
        Some(serde_json::Value::String(m)) => m.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    };
    (kind, fault, message)
}

pub(crate) fn parse_fault(text: &str) -> Option<Fault> {
    match text {
        "caller" => Some(Fault::Caller),
        "hub" => Some(Fault::Hub),
        "node" => Some(Fault::Node),
        _ => None,
    }
}

/// Parses `text` as an `http://` or `https://` URL that names a host;
/// `field` names the setting in the errors.
pub(crate) fn http_url(field: &'static str, text: &str) -> Result<Url, HttpError> {
    let url = Url::parse(text.trim()).map_err(|e| match e {
        // For http and https the parser itself insists on a host.
        url::ParseError::EmptyHost => Error::invalid(field, "must name a host"),
        e => Error::invalid(field, format!("{text:?} is not a URL ({e})")),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(field, "must start with http:// or https://").into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(field, "must name a host").into());
    }
    Ok(url)
}

/// Checks and normalises a mediator base URL (`http(s)://host[:port][/prefix]`)
/// into the text that routes are appended to.
pub(crate) fn base_url(text: &str) -> Result<String, HttpError> {
    let url = http_url("url", text)?;
    // Either would end up in the middle of every request URL, before the
    // route.
    if url.query().is_some() {
        return Err(Error::invalid("url", "must not carry a query").into());
    }
    if url.fragment().is_some() {
        return Err(Error::invalid("url", "must not carry a fragment").into());
    }
    // With neither, the serialization ends with the path, so this drops
    // only the path's trailing slashes: every route starts with its own.
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read() {
        let e = mediator_error(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"no node available in group g","kind":"no_node_available","fault":"hub"}"#,
        );
        match e {
            HttpError::Mediator {
                status,
                kind,
                fault,
                message,
            } => {
                assert_eq!(status, 503);
                assert_eq!(kind, "no_node_available");
                assert_eq!(fault, Some(Fault::Hub));
                assert_eq!(message, "no node available in group g");
            }
            other => panic!("{other:?}"),
        }
        // The original's shapes.
        assert_eq!(error_message(br#"{"error":{}}"#), "{}");
        assert_eq!(error_message(b"<html>login</html>"), "<html>login</html>");
        assert_eq!(error_message(b""), "(no body)");
        let long = "x".repeat(1000);
        assert!(error_message(long.as_bytes()).chars().count() <= 301);
        match node_error("g/n".into(), 418, br#"{"error":"short and stout"}"#) {
            HttpError::Node {
                node,
                status,
                message,
            } => assert_eq!(
                (node.as_str(), status, message.as_str()),
                ("g/n", 418, "short and stout")
            ),
            other => panic!("{other:?}"),
        }
        match mediator_error(StatusCode::BAD_GATEWAY, b"gateway") {
            HttpError::Mediator { kind, fault, .. } => {
                assert_eq!(kind, "unknown");
                assert_eq!(fault, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base_urls_are_checked() {
        for (given, base) in [
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("  http://h.example:9000  ", "http://h.example:9000"),
            // Default ports and the scheme's and host's case are normalised.
            ("HTTP://H.Example:80/", "http://h.example"),
            ("https://h.example:443", "https://h.example"),
            ("https://h.example:8443", "https://h.example:8443"),
            // IPv6 literals keep their brackets.
            ("http://[::1]:8080/", "http://[::1]:8080"),
            ("https://[2001:db8::1]/api/", "https://[2001:db8::1]/api"),
            // A base path is kept, without trailing slashes.
            ("https://h.example/prefix", "https://h.example/prefix"),
            ("https://h.example/prefix/", "https://h.example/prefix"),
            ("https://h.example/a/b//", "https://h.example/a/b"),
            ("http://h.example//", "http://h.example"),
        ] {
            assert_eq!(base_url(given).expect(given), base, "{given}");
        }
        for (given, says) in [
            ("ftp://h", "must start with http:// or https://"),
            ("localhost:8080", "must start with http:// or https://"),
            ("127.0.0.1:80", "is not a URL"),
            ("", "is not a URL"),
            ("http://", "must name a host"),
            ("http://:80/", "must name a host"),
            ("http://h:65536", "is not a URL"),
            ("http://[::1/", "is not a URL"),
            ("http://h/?a=1", "must not carry a query"),
            ("http://h/p?", "must not carry a query"),
            ("http://h/p#top", "must not carry a fragment"),
        ] {
            let error = base_url(given).expect_err(given).to_string();
            assert!(error.contains(says), "{given}: {error}");
        }
    }

    #[test]
    fn minted_tokens_are_cached() {
        let auth = mediator_core::Authenticator::hs256("a test secret that is long enough");
        let minter = auth.minter().expect("hs256 mints");
        let key = NodeKey::named("g", "n").expect("key");
        let source = TokenSource::minted(minter.clone(), Some(key.clone()));
        let a = source.token().expect("mint");
        assert_eq!(a, source.token().expect("cached"));
        let who = auth.authenticate(&a, Timestamp::now()).expect("valid");
        assert!(who.is_node(&key));

        let anonymous = TokenSource::minted(minter, None);
        let t = anonymous.token().expect("mint");
        assert!(auth.authenticate(&t, Timestamp::now()).is_err());
        let who = auth
            .allow_tokens_without_sub(true)
            .authenticate(&t, Timestamp::now())
            .expect("the original's kind");
        assert!(!who.verified);
    }
}
