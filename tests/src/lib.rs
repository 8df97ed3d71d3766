//! Cross-crate integration tests: formations of real stores, transports
//! and nodes, faults, compatibility with the original's children, and the
//! README's examples.
//!
//! The tests live in `tests/`, all on the one [`harness`] this library
//! exports; the library also makes the README's code blocks part of the doc
//! tests, so the front page never drifts from the API.

pub mod harness;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
