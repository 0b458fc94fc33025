//! [`FallbackFailed`]: the original failure and each fallback strategy's failure, by name.

use std::error::Error;
use std::fmt;

use palisade_classify::{BoxError, Class, HasClass, class_of};

/// The call failed and so did every fallback strategy tried: the call's own error, and each
/// strategy tried beside its failure, in the order tried (a [`Chain`](crate::Chain)'s members
/// one by one).
///
/// Displayed as `the call and 2 fallback(s) failed: 503 overloaded; service: backup down;
/// static_page: no page`. Its source is the call's own error.
///
/// Its class is the original failure's class, made not retryable: retrying the whole chain is
/// for the caller to decide, not a layer above.
#[derive(Debug)]
pub struct FallbackFailed {
    original: BoxError,
    failures: Vec<(&'static str, BoxError)>,
}

impl FallbackFailed {
    pub(crate) fn new(original: BoxError, failures: Vec<(&'static str, BoxError)>) -> Self {
        FallbackFailed { original, failures }
    }

    /// The call's own error, which the strategies answered for.
    pub fn original(&self) -> &BoxError {
        &self.original
    }

    /// Each strategy tried, by [name](crate::Strategy::name), beside its failure, in the order
    /// tried.
    pub fn failures(&self) -> &[(&'static str, BoxError)] {
        &self.failures
    }

    /// Unwraps the call's own error and the strategies' failures.
    pub fn into_parts(self) -> (BoxError, Vec<(&'static str, BoxError)>) {
        (self.original, self.failures)
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the call and {} fallback(s) failed: {}",
            self.failures.len(),
            self.original
        )?;
        for (name, e) in &self.failures {
            write!(f, "; {name}: {e}")?;
        }
        Ok(())
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.original)
    }
}

impl HasClass for FallbackFailed {
    fn class(&self) -> Class {
        class_of(&self.original).with_retryable(false)
    }
}
