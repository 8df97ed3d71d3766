//! HTTP transport for Mediator.
