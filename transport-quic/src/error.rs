//! The crate's one error type.

use std::path::PathBuf;

use mediator_core::node::ClientError;

/// What can go wrong setting up the QUIC transport: binding, TLS. The
/// listener answers a refused request with a reply frame (status, kind,
/// fault, message), never with this type; the node client fails with the
/// core's [`ClientError`], which this converts into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// Binding the UDP socket or another socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate, key, pin or root is missing, malformed or
    /// unusable.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The core refused or failed an operation.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
}

impl QuicError {
    /// The status this error would carry over HTTP, when it names one:
    /// the core error's.
    ///
    /// ```
    /// use mediator_transport_quic::QuicError;
    /// let e = QuicError::Core(mediator_core::Error::invalid("addr", "no port"));
    /// assert_eq!(e.status(), Some(400));
    /// assert_eq!(QuicError::Tls("x".into()).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            QuicError::Core(e) => Some(e.status()),
            _ => None,
        }
    }

    /// The error's kind, when it names one (`invalid`, `config`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            QuicError::Core(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<QuicError> for ClientError {
    /// The same failure in the words every transport's client shares;
    /// nothing is lost.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// use mediator_transport_quic::QuicError;
    /// let e = ClientError::from(QuicError::Tls("bad pin".into()));
    /// assert!(matches!(e, ClientError::Tls(_)));
    /// ```
    fn from(error: QuicError) -> Self {
        match error {
            QuicError::Io(e) => ClientError::Io(e),
            QuicError::ReadFile { path, source } => ClientError::ReadFile { path, source },
            QuicError::Tls(reason) => ClientError::Tls(reason),
            QuicError::Core(e) => ClientError::Core(e),
        }
    }
}

impl From<QuicError> for mediator_core::Error {
    /// A core error as it was; anything else as a `500` with kind
    /// `node_error`, as [`ClientError`] converts.
    ///
    /// ```
    /// use mediator_transport_quic::QuicError;
    /// let e = mediator_core::Error::from(QuicError::Tls("garbled".into()));
    /// assert_eq!((e.status(), e.kind()), (500, "node_error"));
    /// ```
    fn from(error: QuicError) -> Self {
        ClientError::from(error).into()
    }
}
