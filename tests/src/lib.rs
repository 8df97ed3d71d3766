//! Cross-crate integration tests: formations of real stores, transports
//! and nodes, faults, and the README's examples.
//!
//! The tests live in `tests/`; this library only makes the README's code
//! blocks part of the doc tests, so the front page never drifts from the API.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
