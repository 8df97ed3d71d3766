//! MySQL registry for Mediator.
