//! The errors of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).

use std::fmt;

use palisade_classify::{Category, Class, HasClass};

/// An attempt did not finish within its per-attempt timeout.
///
/// Classified as [`Category::Timeout`], retryable: another attempt may be faster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elapsed(());

impl Elapsed {
    /// A new `Elapsed` error.
    pub const fn new() -> Self {
        Elapsed(())
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request timed out")
    }
}

impl std::error::Error for Elapsed {}

impl HasClass for Elapsed {
    fn class(&self) -> Class {
        Class::new(Category::Timeout)
    }
}

/// The whole call, retries and backoff included, did not finish before its deadline.
///
/// Classified as [`Category::Timeout`] but **not** retryable: the time the caller granted is
/// spent, so no layer above should try again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineExceeded(());

impl DeadlineExceeded {
    /// A new `DeadlineExceeded` error.
    pub const fn new() -> Self {
        DeadlineExceeded(())
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl HasClass for DeadlineExceeded {
    fn class(&self) -> Class {
        Class::new(Category::Timeout).with_retryable(false)
    }
}

/// Registers both error types with [`palisade_classify::register`].
pub(crate) fn register() {
    palisade_classify::register::<Elapsed>();
    palisade_classify::register::<DeadlineExceeded>();
}
