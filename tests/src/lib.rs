//! Cross-crate integration tests: formations of real stores, transports
//! and nodes, faults, compatibility with the original's children, and the
//! examples of the README and of `docs/`.
//!
//! The tests live in `tests/`, all on the one [`harness`] this library
//! exports; the library also makes the code blocks of the README and of
//! `docs/extending.md` part of the doc tests, so the pages never drift from the API.

pub mod harness;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

#[cfg(doctest)]
#[doc = include_str!("../../docs/extending.md")]
pub struct ExtendingExamples;
