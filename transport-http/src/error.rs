//! The crate's one error type.

use std::path::PathBuf;

use mediator_core::node::ClientError;

/// What can go wrong setting up the HTTP transport's server side:
/// binding, TLS. The server answers a refused request with a JSON error
/// body, never with this type; the node client's calls fail with the
/// core's [`ClientError`], which this converts into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding, accepting or another socket operation failed.
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
    /// The TLS certificate or key is missing, malformed or unusable.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The core refused or failed an operation.
    #[error(transparent)]
    Core(#[from] mediator_core::Error),
}

impl HttpError {
    /// The status this error carries, when it names one: the core error's.
    ///
    /// ```
    /// use mediator_transport_http::HttpError;
    /// let e = HttpError::Core(mediator_core::Error::invalid("url", "no host"));
    /// assert_eq!((e.status(), e.kind()), (Some(400), Some("invalid")));
    /// assert_eq!(HttpError::Tls("x".into()).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Core(e) => Some(e.status()),
            _ => None,
        }
    }

    /// The error's kind, when it names one (`invalid`, `config`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            HttpError::Core(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<HttpError> for ClientError {
    /// The same failure in the words every transport's client shares;
    /// nothing is lost.
    ///
    /// ```
    /// use mediator_core::node::ClientError;
    /// use mediator_transport_http::HttpError;
    /// let e = ClientError::from(HttpError::Tls("no roots".into()));
    /// assert!(matches!(e, ClientError::Tls(_)));
    /// ```
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Io(e) => ClientError::Io(e),
            HttpError::ReadFile { path, source } => ClientError::ReadFile { path, source },
            HttpError::Tls(reason) => ClientError::Tls(reason),
            HttpError::Core(e) => ClientError::Core(e),
        }
    }
}

impl From<HttpError> for mediator_core::Error {
    /// A core error as it was; anything else as a `500` with kind
    /// `node_error`, as [`ClientError`] converts.
    ///
    /// ```
    /// use mediator_transport_http::HttpError;
    /// let e = mediator_core::Error::from(HttpError::Tls("garbled".into()));
    /// assert_eq!((e.status(), e.kind()), (500, "node_error"));
    /// ```
    fn from(error: HttpError) -> Self {
        ClientError::from(error).into()
    }
}
