//! Cross-crate integration tests: formations, faults, compatibility.
