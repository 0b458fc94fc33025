//! Cross-crate integration tests of whole palisade stacks; the tests are the `[[test]]` targets.
