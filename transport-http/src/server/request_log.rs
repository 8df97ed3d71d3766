//! The request line: what the mediator tells of every request it answers,
//! and where that goes ([`MediatorBuilder::request_log`](mediator_core::MediatorBuilder::request_log)).
//!
//! Every transport writes the same line through the mediator's one
//! [`RequestLog`], so its types live in the core
//! ([`mediator_core::request_log`]) and are re-exported here unchanged.
//!
//! By default each request becomes one `tracing` event ([`TracingRequestLog`]),
//! so it is filtered, formatted and written by whatever subscriber the
//! process has. A [`RequestLog`] of your own receives the same record
//! typed, which is for a process that writes its lines itself (the
//! `mediator` binary does, for throughput) or sends them somewhere else.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use mediator_core::{Authenticator, Mediator, MemoryRegistry};
//! use mediator_transport_http::{MediatorService, RequestLog, RequestRecord};
//! use tower_service::Service;
//!
//! /// Keeps the status and path of every request instead of writing lines.
//! #[derive(Clone, Default)]
//! struct Kept(Arc<Mutex<Vec<(u16, String)>>>);
//!
//! impl RequestLog for Kept {
//!     fn record(&self, record: &RequestRecord<'_>) {
//!         let entry = (record.status, record.path.to_owned());
//!         self.0.lock().expect("not poisoned").push(entry);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let kept = Kept::default();
//! let mediator = Mediator::builder()
//!     .registry(MemoryRegistry::new())
//!     .authenticator(Authenticator::hs256("a secret of at least 32 bytes!!!"))
//!     .request_log(kept.clone())
//!     .build()?;
//! let mut service = MediatorService::new(mediator);
//! for path in ["/healthz", "/one/app/echo?x-jwt=secret"] {
//!     let request = http::Request::get(path).body(Empty::<Bytes>::new())?;
//!     service.call(request).await?;
//! }
//! let kept = kept.0.lock().expect("not poisoned").clone();
//! // No token, so 401; the query (and the token in it) is not in the record.
//! assert_eq!(kept, [(200, "/healthz".to_owned()), (401, "/one/app/echo".to_owned())]);
//! # Ok(()) }
//! ```

pub use mediator_core::request_log::*;
