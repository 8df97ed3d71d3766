//! TLS 1.3 for both ends: the listener's certificate (PEM or self-signed)
//! and its fingerprint, and how a client checks it (pin or root).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::QuicError;
use crate::frame::ALPN;

/// The listener's certificate chain and private key.
///
/// Either read from PEM ([`from_pem_files`](Self::from_pem_files),
/// [`from_pem`](Self::from_pem)) or generated at start
/// ([`self_signed`](Self::self_signed)); either way its
/// [`fingerprint`](Self::fingerprint) (SHA-256 of the leaf certificate) is
/// what clients pin. Cloning keeps the same certificate, so a listener
/// restarted with a clone keeps the pins of its clients valid.
///
/// ```
/// use mediator_transport_quic::ServerTls;
/// let tls = ServerTls::self_signed(&["localhost"])?;
/// assert_eq!(tls.fingerprint().len(), 64);
/// let again = ServerTls::from_pem(tls.certificate_pem().as_bytes(), tls.key_pem().as_bytes())?;
/// assert_eq!(again.fingerprint(), tls.fingerprint());
/// # Ok::<(), mediator_transport_quic::QuicError>(())
/// ```
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ServerTls {
    fn clone(&self) -> Self {
        ServerTls {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A self-signed certificate for `names` (DNS names or IP addresses),
    /// generated now.
    pub fn self_signed(names: &[&str]) -> Result<ServerTls, QuicError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| QuicError::Tls(format!("generating a certificate: {e}")))?;
        Ok(ServerTls {
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
        })
    }

    /// A chain and key from PEM text (the key in PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, QuicError> {
        let chain = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QuicError::Tls(format!("certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(QuicError::Tls("no certificate in the PEM".into()));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| QuicError::Tls(format!("key PEM: {e}")))?
            .ok_or_else(|| QuicError::Tls("no private key in the PEM".into()))?;
        Ok(ServerTls { chain, key })
    }

    /// A chain and key from PEM files.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, QuicError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| QuicError::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        ServerTls::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?)
    }

    /// The SHA-256 of the leaf certificate (DER), lowercase hex: what
    /// clients pin with
    /// [`QuicNodeClientBuilder::pin`](crate::QuicNodeClientBuilder::pin).
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }

    /// The leaf certificate in PEM, for clients that trust it as a root.
    pub fn certificate_pem(&self) -> String {
        self.chain
            .first()
            .map(|c| pem("CERTIFICATE", c))
            .unwrap_or_default()
    }

    /// The private key in PEM (PKCS#8 when generated here), to keep a
    /// generated certificate across restarts.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem(label, self.key.secret_der())
    }

    pub(crate) fn quic_config(&self) -> Result<QuicServerConfig, QuicError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicServerConfig::try_from(config).map_err(|e| QuicError::Tls(e.to_string()))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The SHA-256 of a certificate's DER, lowercase hex.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// *ring*'s provider, the one backend the workspace compiles. rustls 0.23.48
/// deprecates `ring::default_provider` for its lack of post-quantum key
/// exchange; *ring* stays the chosen backend, so the deprecation is
/// acknowledged here once.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a client checks the mediator's certificate.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// The SHA-256 of the leaf certificate, 32 bytes: one, or one per
    /// mediator of a formation whose certificates differ.
    Pin(Vec<[u8; 32]>),
    /// Certificates (PEM) trusted as roots; the name must match.
    Roots(Vec<u8>),
}

impl Trust {
    /// Parses a pin: 64 hex digits, colons and case ignored; several,
    /// comma-separated, trust any of them.
    pub(crate) fn pin(text: &str) -> Result<Trust, QuicError> {
        let pins = text
            .split(',')
            .map(|one| Trust::one_pin(text, one.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust::Pin(pins))
    }

    /// One pin of `text`.
    fn one_pin(text: &str, one: &str) -> Result<[u8; 32], QuicError> {
        let clean: String = one.chars().filter(|c| *c != ':').collect();
        let shape = "a pin is the certificate's SHA-256 fingerprint: 64 hex digits, colons \
                     allowed (several comma-separated)";
        if let Some(bad) = clean.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(QuicError::Tls(format!(
                "certificate pin {text:?}: {bad:?} is not a hex digit; {shape}"
            )));
        }
        let bytes = hex::decode(clean.to_ascii_lowercase()).map_err(|_| {
            QuicError::Tls(format!(
                "certificate pin {text:?}: {} hex digits; {shape}",
                clean.len()
            ))
        })?;
        bytes.try_into().map_err(|_| {
            QuicError::Tls(format!(
                "certificate pin {text:?}: {} hex digits; {shape}",
                clean.len()
            ))
        })
    }

    pub(crate) fn quic_config(&self) -> Result<QuicClientConfig, QuicError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut config = match self {
            Trust::Pin(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pins: pins.clone(),
                    provider: provider(),
                }))
                .with_no_client_auth(),
            Trust::Roots(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut &pem[..]) {
                    let cert = cert.map_err(|e| QuicError::Tls(format!("root PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| QuicError::Tls(format!("root certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(QuicError::Tls("no certificate in the root PEM".into()));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(config).map_err(|e| QuicError::Tls(e.to_string()))
    }
}

/// Accepts exactly the certificates whose SHA-256 is pinned, whatever
/// their issuer, names or dates; the handshake signature is still checked,
/// so only the holder of a pinned certificate's key passes.
#[derive(Debug)]
struct Pinned {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if self.pins.iter().any(|pin| seen.as_ref() == pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            let pinned: Vec<String> = self.pins.iter().map(hex::encode).collect();
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned {}",
                hex::encode(seen),
                pinned.join(",")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A quinn client configuration (TLS 1.3, ALPN `mediator/1`) that
/// accepts exactly the certificate with this SHA-256 `fingerprint` (or
/// any of several, comma-separated): for clients of one's own that speak
/// the [protocol](crate) directly.
///
/// ```
/// use mediator_transport_quic::{pinned_client_config, ServerTls};
/// let tls = ServerTls::self_signed(&["localhost"])?;
/// let _config = pinned_client_config(&tls.fingerprint())?;
/// let other = ServerTls::self_signed(&["localhost"])?;
/// let _either = pinned_client_config(&format!("{}, {}", tls.fingerprint(), other.fingerprint()))?;
/// assert!(pinned_client_config("not hex").is_err());
/// assert!(pinned_client_config(&format!("{},abc", tls.fingerprint())).is_err());
/// # Ok::<(), mediator_transport_quic::QuicError>(())
/// ```
pub fn pinned_client_config(fingerprint: &str) -> Result<quinn::ClientConfig, QuicError> {
    Ok(quinn::ClientConfig::new(Arc::new(
        Trust::pin(fingerprint)?.quic_config()?,
    )))
}

/// The transport of a connection, both ends: its timeouts, its streams,
/// and path MTU discovery up to [`MAX_UDP_PAYLOAD`](crate::socket::MAX_UDP_PAYLOAD)
/// (see the [socket module](crate::socket) for why).
pub(crate) fn transport(
    idle: Duration,
    keep_alive: Duration,
    max_bidi: u32,
) -> Result<quinn::TransportConfig, QuicError> {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(crate::socket::MAX_UDP_PAYLOAD);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle)
                .map_err(|_| QuicError::Tls("idle timeout out of range".into()))?,
        ))
        .keep_alive_interval(Some(keep_alive))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(max_bidi))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .mtu_discovery_config(Some(mtu));
    Ok(transport)
}
