//! The bundled `mediator` binary and the demo nodes, and the pieces they
//! share: configuration, opening a store from a URL, and the mediator secret.
//!
//! The binary lives in `src/bin/mediator.rs`; everything it needs that is
//! worth testing on its own lives here.

#![warn(clippy::unwrap_used)]

pub mod acl;
pub mod channel;
pub mod config;
pub mod custom_store;
pub mod demo;
pub mod log_writer;
pub mod logs;
pub mod scaffold;
pub mod secret;
pub mod store;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// Everything that can go wrong in the bundled binaries.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The store could not be opened or used.
    #[error("store: {0}")]
    Store(String),
    /// The mediator refused or failed.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
    /// The HTTP transport failed.
    #[error(transparent)]
    Http(#[from] mediator_transport_http::HttpError),
    /// The QUIC transport failed.
    #[error(transparent)]
    Quic(#[from] mediator_transport_quic::QuicError),
}

impl From<mediator_core::CipherError> for CliError {
    fn from(e: mediator_core::CipherError) -> Self {
        CliError::Core(e.into())
    }
}

impl From<mediator_core::AuthError> for CliError {
    fn from(e: mediator_core::AuthError) -> Self {
        CliError::Core(e.into())
    }
}

/// GETs `url` + `path` with a bearer token and parses the JSON answer; a
/// non-2xx answer is an error carrying the mediator's message.
pub async fn http_get_json(
    url: &str,
    path: &str,
    token: &str,
) -> Result<serde_json::Value, CliError> {
    let target = format!("{}{path}", url.trim_end_matches('/'));
    let fail = |what: String| CliError::Config(format!("GET {target}: {what}"));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| fail(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let request = http::Request::get(&target)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| fail("no answer within 10 s".into()))?
            .map_err(|e| fail(format!("cannot reach the mediator: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("answered {status} with a non-JSON body: {e}")))?;
    if !status.is_success() {
        let message = value
            .get("error")
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(fail(format!("{status}: {message}")));
    }
    Ok(value)
}
