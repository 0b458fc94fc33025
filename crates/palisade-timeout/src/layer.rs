//! The layers: [`TimeoutLayer`] and [`DeadlineLayer`].

use std::time::Duration;

use palisade_classify::ConfigError;
use tower_layer::Layer;

use crate::state::Limit;
use crate::{Deadline, Timeout};

/// Applies a per-attempt [`Timeout`] to the wrapped service, optionally escalating after
/// attempts that timed out (see [`TimeoutLayer::escalate`]).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    limit: Limit,
}

impl TimeoutLayer {
    /// Fails each call that does not finish within `timeout` with
    /// [`Elapsed`](crate::error::Elapsed).
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer {
            limit: Limit::new(timeout),
        }
    }

    /// Lengthens the limit of an attempt after earlier attempts of the same request timed out:
    /// `timeout × factor^n`, at most `cap`, where `n` is
    /// [`context::timeouts_so_far`](crate::context::timeouts_so_far) at call time (set by a
    /// retry layer above).
    ///
    /// # Errors
    /// [`ConfigError`] naming `factor` if it is below 1, NaN or infinite, or `cap` if it is
    /// shorter than the base timeout.
    pub fn escalate(self, factor: f64, cap: Duration) -> Result<Self, ConfigError> {
        Ok(TimeoutLayer {
            limit: self.limit.escalate(factor, cap)?,
        })
    }

    /// The base (first attempt's) timeout.
    pub fn timeout(&self) -> Duration {
        self.limit.base()
    }

    /// The escalation `(factor, cap)`, if configured.
    pub fn escalation(&self) -> Option<(f64, Duration)> {
        self.limit.escalation()
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::with_limit(inner, self.limit)
    }
}

/// Applies one [`Deadline`] over the whole call of the wrapped service (retries and backoff
/// included when the wrapped service retries).
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// Fails each call that does not finish within `limit` of the call with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded).
    pub fn new(limit: Duration) -> Self {
        DeadlineLayer { limit }
    }

    /// The time each call is granted.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::new(inner, self.limit)
    }
}
