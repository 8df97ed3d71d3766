//! TLS for the mediator's HTTP API (rustls with the ring provider).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::HttpError;

/// The certificate and key the listener serves HTTPS with.
///
/// ALPN offers `h2` and `http/1.1`, so HTTP/2 clients get HTTP/2 and others
/// HTTP/1.1 on the same port. The original's sending library only talks to
/// an `https://` mediator, so serving its children needs this.
///
/// ```
/// use mediator_transport_http::TlsConfig;
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let tls = TlsConfig::from_pem(cert.cert.pem().as_bytes(), cert.key_pair.serialize_pem().as_bytes());
/// assert!(tls.is_ok());
/// assert!(TlsConfig::from_pem(b"not pem", b"").is_err());
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.server.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, HttpError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| HttpError::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        let cert = read(cert_path.as_ref())?;
        let key = read(key_path.as_ref())?;
        Self::from_pem(&cert, &key)
    }

    /// A certificate chain (leaf first) and its private key, as PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, HttpError> {
        let mut reader = cert_pem;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut reader)
            .collect::<Result<_, _>>()
            .map_err(|e| HttpError::Tls(format!("bad certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(HttpError::Tls("no CERTIFICATE found in the PEM".into()));
        }
        let mut reader = key_pem;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut reader)
            .map_err(|e| HttpError::Tls(format!("bad private key PEM: {e}")))?
            .ok_or_else(|| HttpError::Tls("no PRIVATE KEY found in the PEM".into()))?;
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(crate::deliver::ring_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| HttpError::Tls(format!("certificate and key do not fit: {e}")))?;
        Ok(Self::from_rustls(config))
    }

    /// A rustls configuration built elsewhere (client certificates, several
    /// certificates by SNI...). When it sets no ALPN protocols, `h2` and
    /// `http/1.1` are offered.
    pub fn from_rustls(mut config: rustls::ServerConfig) -> Self {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        TlsConfig {
            server: Arc::new(config),
        }
    }
}
