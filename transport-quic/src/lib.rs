//! QUIC transport for Mediator (reserved).
//!
//! This crate will let nodes without a public address dial out to the
//! mediator over QUIC (ALPN `mediator/1`, TLS 1.3) and stay attached, so
//! the mediator delivers to them by opening a stream on their connection
//! ([`Endpoint::Attached`](mediator_core::Endpoint::Attached)). It has no
//! code yet: today every node is reached over HTTP with
//! `mediator-transport-http`, and a node registered as `Attached` is
//! reported unreachable by the default router, with that reason.
