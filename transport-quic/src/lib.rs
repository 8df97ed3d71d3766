//! QUIC transport for Mediator (reserved).
//!
//! This crate will let nodes without a public address dial out to the
//! mediator over QUIC (ALPN `mediator/1`, TLS 1.3) and stay attached, so
//! the mediator delivers to them by opening a stream on their connection
//! ([`Endpoint::attached`](mediator_core::Endpoint::attached)). It has no
//! code yet: today every node is reached over HTTP with
//! `mediator-transport-http`, and a node registered with an `attached:`
//! endpoint is reported unreachable by the default router, with that reason.
