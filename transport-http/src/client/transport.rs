//! The client half of the wire: one pooled HTTP(S) client, token sources,
//! and turning the mediator's answers into results.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mediator_core::{Error, ErrorBody, Fault};
use serde::Deserialize;
use url::Url;

use crate::error::HttpError;

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

/// The message of an error body, or the body itself when it is not one.
fn error_message(body: &[u8]) -> String {
    match ErrorBody::parse(body) {
        Some(parsed) if !parsed.error.is_empty() => parsed.error,
        _ => {
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
    }
}

/// The mediator's own refusal (no node answered).
pub(crate) fn mediator_error(status: StatusCode, body: &[u8]) -> HttpError {
    let (kind, fault) = match ErrorBody::parse(body) {
        Some(parsed) => (parsed.kind, parsed.fault),
        None => ("unknown".to_owned(), None),
    };
    HttpError::Mediator {
        status: status.as_u16(),
        kind,
        fault,
        message: error_message(body),
    }
}

/// A node's own error answer, relayed by the mediator.
pub(crate) fn node_error(node: String, status: u16, body: &[u8]) -> HttpError {
    HttpError::Node {
        node,
        status,
        kind: ErrorBody::parse(body).map_or_else(|| "unknown".to_owned(), |parsed| parsed.kind),
        message: error_message(body),
    }
}

/// A `{"error","kind","fault"}` object found inside a `/many` entry.
pub(crate) fn catch_error(value: &serde_json::Value) -> (String, Option<Fault>, String) {
    match ErrorBody::deserialize(value) {
        Ok(parsed) if !parsed.error.is_empty() => (parsed.kind, parsed.fault, parsed.error),
        Ok(parsed) => (parsed.kind, parsed.fault, value.to_string()),
        Err(_) => ("unknown".to_owned(), None, value.to_string()),
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
                kind,
                message,
            } => assert_eq!(
                (node.as_str(), status, kind.as_str(), message.as_str()),
                ("g/n", 418, "unknown", "short and stout")
            ),
            other => panic!("{other:?}"),
        }
        let refused = br#"{"error":"taken","kind":"conflict","fault":"caller"}"#;
        match node_error("g/n".into(), 409, refused) {
            HttpError::Node { kind, message, .. } => {
                assert_eq!((kind.as_str(), message.as_str()), ("conflict", "taken"));
            }
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
}
