//! SQLite registry for Mediator.
