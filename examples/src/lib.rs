//! The bundled `mediator` binary and the demo nodes, and the pieces they
//! share: configuration, opening a store from a URL, and the mediator secret.
//!
//! The binary lives in `src/bin/mediator.rs`; everything it needs that is
//! worth testing on its own lives here.

#![warn(clippy::unwrap_used)]

pub mod acl;
pub mod channel;
pub mod check;
pub mod config;
pub mod custom_store;
pub mod demo;
pub mod descriptors;
pub mod exit;
pub mod listing;
pub mod log_line;
pub mod log_writer;
pub mod logs;
pub mod scaffold;
pub mod secret;
pub mod store;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// Everything that can go wrong in the bundled binaries. Each kind maps to
/// one of the documented [exit codes](exit).
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
    /// A listener could not be opened on its address.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// Which listener (`HTTP`, `QUIC`, a demo page).
        what: String,
        /// The address it was to listen on.
        addr: std::net::SocketAddr,
        /// Why, with what to do about it.
        reason: String,
    },
    /// The store could not be opened or used.
    #[error("store: {0}")]
    Store(String),
    /// The mediator could not be reached at all.
    #[error("cannot reach the mediator at {url}: {reason}")]
    Unreachable {
        /// The mediator's URL (or QUIC address).
        url: String,
        /// Why, with what to do about it.
        reason: String,
    },
    /// The mediator answered, and refused the request.
    #[error("the mediator at {url} refused: {message}")]
    Refused {
        /// The mediator's URL (or QUIC address).
        url: String,
        /// Its status and reason, with what to do about it.
        message: String,
    },
    /// Some or every delivery failed: a node failed, did not answer in
    /// time, or its reply could not be opened.
    #[error("{0}")]
    Delivery(String),
    /// The mediator refused or failed.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
    /// The HTTP transport failed.
    #[error(transparent)]
    Http(#[from] mediator_transport_http::HttpError),
    /// The QUIC transport failed.
    #[error(transparent)]
    Quic(#[from] mediator_transport_quic::QuicError),
    /// A node client's call failed, over either transport.
    #[error(transparent)]
    Client(#[from] mediator_core::node::ClientError),
}

impl CliError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        use mediator_core::node::ClientError;
        use mediator_transport_http::HttpError;
        use mediator_transport_quic::QuicError;
        let core = |e: &mediator_core::Error| match (e.kind(), e.fault()) {
            // A reply that does not open was delivered, but is no answer.
            ("sealed", _) | (_, mediator_core::Fault::Node) => exit::DELIVERY,
            (_, mediator_core::Fault::Caller) => exit::USAGE,
            _ => exit::MEDIATOR,
        };
        let answered = |status: u16, fault: Option<mediator_core::Fault>| {
            if fault == Some(mediator_core::Fault::Node) || matches!(status, 502 | 504) {
                exit::DELIVERY
            } else {
                exit::MEDIATOR
            }
        };
        match self {
            CliError::Config(_) | CliError::Io { .. } | CliError::Bind { .. } => exit::USAGE,
            CliError::Store(_) => exit::USAGE,
            CliError::Unreachable { .. } | CliError::Refused { .. } => exit::MEDIATOR,
            CliError::Delivery(_) => exit::DELIVERY,
            CliError::Core(e) => core(e),
            CliError::Http(e) => match e {
                HttpError::Core(e) => core(e),
                _ => exit::USAGE,
            },
            CliError::Client(e) => match e {
                ClientError::Mediator { status, fault, .. } => answered(*status, *fault),
                ClientError::Node { .. } => exit::DELIVERY,
                ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Protocol(_) => exit::MEDIATOR,
                ClientError::Core(e) => core(e),
                _ => exit::USAGE,
            },
            CliError::Quic(e) => match e {
                QuicError::Core(e) => core(e),
                _ => exit::USAGE,
            },
        }
    }
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
/// non-2xx answer is [`CliError::Refused`] carrying the mediator's message,
/// no connection [`CliError::Unreachable`] saying why and what to do.
///
/// `what` names the request in the person's terms (`listing the nodes`):
/// errors say it rather than the route.
pub async fn http_get_json(
    url: &str,
    path: &str,
    what: &str,
    token: &str,
) -> Result<serde_json::Value, CliError> {
    let target = format!("{}{path}", url.trim_end_matches('/'));
    let unreachable = |reason: String| CliError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    // *ring*, the workspace's one TLS backend; rustls 0.23.48 deprecates its
    // provider for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| CliError::Config(format!("TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let request = http::Request::get(&target)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| CliError::Config(format!("--url {url}: not a usable URL ({e})")))?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| {
                unreachable(exit::explain_unreachable(
                    url,
                    &mediator_core::error_chain(&e),
                ))
            })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        unreachable(format!(
            "the answer to {what} ({status}) is not JSON ({e}); is this a mediator?"
        ))
    })?;
    if !status.is_success() {
        let message = value
            .get("error")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no reason given");
        let hint = match status.as_u16() {
            401 => format!("; {}", exit::token_hint(true)),
            403 => "; it takes an admin token (`mediator token --admin`, or none: one is minted \
                    from the secret)"
                .to_owned(),
            _ => String::new(),
        };
        return Err(CliError::Refused {
            url: url.to_owned(),
            message: format!("{what} ({}: {message}){hint}", status.as_u16()),
        });
    }
    Ok(value)
}
