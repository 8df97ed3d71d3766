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
use mediator_core::node::ClientError;
use mediator_core::{Error, ErrorBody};
use serde::Deserialize;
use url::Url;

/// A TLS configuration trusting only the certificate authorities in
/// `roots` (PEM), for a mediator whose certificate a private authority issued.
pub(crate) fn tls_config(roots_pem: &[Vec<u8>]) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(crate::deliver::ring_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        let mut reader = pem.as_slice();
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("bad certificate PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("unusable root certificate: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(ClientError::Tls(
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
    ) -> Result<Transport, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match tls {
            Some(config) => builder.with_tls_config(config),
            None => builder
                .with_provider_and_webpki_roots(Arc::new(crate::deliver::ring_provider()))
                .map_err(|e| ClientError::Tls(e.to_string()))?,
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
    ) -> Result<Answer, ClientError> {
        let url = request.uri().to_string();
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| ClientError::Unreachable {
                        peer: url.clone(),
                        reason: describe(&e),
                    })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    peer: url.clone(),
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
            Err(_) => Err(ClientError::Timeout {
                peer: Some(url),
                after: limit,
            }),
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
) -> Result<Request<Full<Bytes>>, ClientError> {
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
) -> Result<Request<Full<Bytes>>, ClientError> {
    let credentials = HeaderValue::try_from(credentials)
        .map_err(|_| Error::invalid("token", "must be printable ASCII"))?;
    Request::builder()
        .method(method)
        .uri(url)
        .header(header, credentials)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .map_err(|e| ClientError::Core(Error::invalid("url", format!("{url:?} ({e})"))))
}

/// A `{"error","kind","fault"}` object found inside a `/many` entry; its
/// JSON text as the message when it has none.
pub(crate) fn catch_error(value: &serde_json::Value) -> ErrorBody {
    match ErrorBody::deserialize(value) {
        Ok(parsed) if !parsed.error.is_empty() => parsed,
        Ok(parsed) => ErrorBody {
            error: value.to_string(),
            ..parsed
        },
        Err(_) => ErrorBody {
            error: value.to_string(),
            kind: "unknown".to_owned(),
            fault: None,
        },
    }
}

/// Parses `text` as an `http://` or `https://` URL that names a host;
/// `field` names the setting in the errors.
pub(crate) fn http_url(field: &'static str, text: &str) -> Result<Url, ClientError> {
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
pub(crate) fn base_url(text: &str) -> Result<String, ClientError> {
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
    fn catch_bodies_are_read() {
        let e = catch_error(
            &serde_json::json!({"error": "late", "kind": "deadline_passed", "fault": "node"}),
        );
        assert_eq!(
            (e.error.as_str(), e.kind.as_str()),
            ("late", "deadline_passed")
        );
        assert_eq!(e.fault, Some(mediator_core::Fault::Node));
        let e = catch_error(&serde_json::json!({"kind": "node_failed"}));
        assert_eq!(
            (e.error.as_str(), e.kind.as_str()),
            (r#"{"kind":"node_failed"}"#, "node_failed")
        );
        let e = catch_error(&serde_json::json!("gone"));
        assert_eq!(
            (e.error.as_str(), e.kind.as_str(), e.fault),
            (r#""gone""#, "unknown", None)
        );
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
