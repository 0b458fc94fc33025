//! The router's error.

use std::fmt;
use std::time::Duration;

use palisade_classify::{Category, Class, HasClass};

/// No endpoint could take the call: all are failed, ejected, cooling down, or there are none.
///
/// Its class is a retryable `ServerError` that counts against health (for a breaker above, the
/// dependency as a whole is down), with `retry_after` the soonest moment an endpoint comes back
/// by itself (an ejection, a [hold](crate#without-active-checks-trials) or a cool-down ending),
/// when one is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoHealthyEndpoint {
    /// When the soonest endpoint comes back by itself, if any will.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for NoHealthyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "no healthy endpoint (one returns in {d:?})"),
            None => f.write_str("no healthy endpoint"),
        }
    }
}

impl std::error::Error for NoHealthyEndpoint {}

impl HasClass for NoHealthyEndpoint {
    fn class(&self) -> Class {
        let class = Class::new(Category::ServerError);
        match self.retry_after {
            Some(d) => class.with_retry_after(d),
            None => class,
        }
    }
}
