//! QUIC transport for Mediator.
