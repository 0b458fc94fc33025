//! [`FallbackFailed`]: the original failure and every fallback's failure, in order.

use std::error::Error;
use std::fmt;

use palisade_classify::{BoxError, Class, HasClass, class_of};

/// The call failed and so did every fallback strategy tried. `errors[0]` is the original
/// failure; the rest are the strategies' failures in the order they were tried.
///
/// Its class is the original failure's class, made not retryable: retrying the whole chain is
/// for the caller to decide, not a layer above.
#[derive(Debug)]
pub struct FallbackFailed {
    errors: Vec<BoxError>,
}

impl FallbackFailed {
    pub(crate) fn new(errors: Vec<BoxError>) -> Self {
        FallbackFailed { errors }
    }

    /// Every error, the original first.
    pub fn errors(&self) -> &[BoxError] {
        &self.errors
    }

    /// Unwraps the errors.
    pub fn into_errors(self) -> Vec<BoxError> {
        self.errors
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the call and {} fallback(s) failed",
            self.errors.len().saturating_sub(1)
        )?;
        for (i, e) in self.errors.iter().enumerate() {
            write!(f, "{} {e}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.errors.first().map(|e| &**e as &(dyn Error + 'static))
    }
}

impl HasClass for FallbackFailed {
    fn class(&self) -> Class {
        match self.errors.first() {
            Some(e) => class_of(e).with_retryable(false),
            None => Class::new(palisade_classify::Category::Unknown).with_retryable(false),
        }
    }
}
