//! Per-request attempt limits.

use std::fmt;

/// Reads a per-request attempt limit from the request itself, overriding the layer's.
///
/// `None` keeps the layer's limit (fixed or adaptive); `Some(n)` allows `n` attempts in all,
/// the first included. `Some(1)` still lets an attempt that an open breaker below refused be
/// sent again once the breaker lets calls through (under a deadline, with
/// [`wait_for_breaker`](crate::RetryBuilder::wait_for_breaker)): the refused attempt reached
/// nothing. `Some(0)` says a copy of the request cannot be sent at all (its body goes with
/// the attempt): one attempt, no copy kept, and a refused attempt ends the request with the
/// breaker's refusal.
///
/// The limit is read before the first attempt, and again after each failed attempt from the
/// copy of the request kept for the next one; a later read can only lower it. So a request
/// that learns while it runs that it must not be sent again (palisade-http's
/// `ReplayAttempts`: a request body streamed past what could be kept for another attempt)
/// ends with its attempt's own error, as a request whose attempts are spent. Closures over `&Req` implement it through
/// [`max_attempts_fn`]; the request type never has to carry `http::Extensions`, although a
/// closure can read them:
///
/// ```
/// use palisade_retry::{max_attempts_fn, MaxAttempts};
///
/// struct Job { name: &'static str, idempotent: bool }
/// // Non-idempotent jobs are never retried.
/// let per_job = max_attempts_fn(|job: &Job| (!job.idempotent).then_some(1));
/// assert_eq!(per_job.max_attempts(&Job { name: "charge", idempotent: false }), Some(1));
/// assert_eq!(per_job.max_attempts(&Job { name: "fetch", idempotent: true }), None);
/// ```
pub trait MaxAttempts<Req> {
    /// The attempt limit for `req`, or `None` for the layer's.
    fn max_attempts(&self, req: &Req) -> Option<u32>;
}

/// No per-request override: every request gets the layer's limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerLimit;

impl<Req> MaxAttempts<Req> for LayerLimit {
    #[inline]
    fn max_attempts(&self, _req: &Req) -> Option<u32> {
        None
    }
}

/// A [`MaxAttempts`] made from a closure; see [`max_attempts_fn`].
#[derive(Clone, Copy)]
pub struct MaxAttemptsFn<F>(F);

/// Makes a [`MaxAttempts`] from a closure `Fn(&Req) -> Option<u32>`.
pub fn max_attempts_fn<F>(f: F) -> MaxAttemptsFn<F> {
    MaxAttemptsFn(f)
}

impl<Req, F: Fn(&Req) -> Option<u32>> MaxAttempts<Req> for MaxAttemptsFn<F> {
    #[inline]
    fn max_attempts(&self, req: &Req) -> Option<u32> {
        (self.0)(req)
    }
}

impl<F> fmt::Debug for MaxAttemptsFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MaxAttemptsFn")
            .field(&std::any::type_name::<F>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_request_and_their_debug() {
        let by_size = max_attempts_fn(|req: &usize| (*req > 10).then_some(1));
        assert_eq!(by_size.max_attempts(&11), Some(1));
        assert_eq!(by_size.max_attempts(&10), None);
        assert_eq!(MaxAttempts::<usize>::max_attempts(&LayerLimit, &11), None);
        let debug = format!("{by_size:?}");
        assert!(debug.starts_with("MaxAttemptsFn(\""), "{debug}");
        assert!(debug.contains("attempts::tests"), "{debug}");
    }
}
