//! Adaptive attempt limits: more attempts while the dependency is healthy, fewer while it fails.

use palisade_core::ConfigError;
use palisade_core::sync::atomic::{AtomicU32, Ordering};

/// Adaptive attempts: after `grow_after` consecutive successful requests
/// the attempt limit grows by one (up to twice the configured maximum), after `shrink_after`
/// consecutive failed requests it shrinks by one (down to 1, no retries).
///
/// A request counts once, by its final outcome: a success (or an error its classifier marked
/// `Ignored`) is a success, a final error of a retryable class is a failure, anything else
/// (a client fault, a cancellation) is neither. The counters are atomics shared by every clone
/// of the layer; once the limit is at its top, a success only reads them.
///
/// Turned on with [`RetryBuilder::adaptive`](crate::RetryBuilder::adaptive); off (`None`)
/// by default, when the limit is the configured one.
///
/// ```
/// use palisade_retry::AdaptiveAttempts;
///
/// let a = AdaptiveAttempts::default();
/// assert_eq!((a.grow_after(), a.shrink_after()), (10, 5));
/// let a = AdaptiveAttempts::new(20, 3).unwrap();
/// assert_eq!((a.grow_after(), a.shrink_after()), (20, 3));
/// assert_eq!(
///     AdaptiveAttempts::new(0, 5).unwrap_err().field(),
///     "adaptive.grow_after"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveAttempts {
    grow_after: u32,
    shrink_after: u32,
}

impl AdaptiveAttempts {
    /// Grow after `grow_after` consecutive successes, shrink after `shrink_after` consecutive
    /// failures.
    ///
    /// # Errors
    /// A [`ConfigError`] for `adaptive.grow_after` or `adaptive.shrink_after` when it is 0 (a
    /// streak of no requests means nothing; to turn adaptive attempts off, leave them unset).
    pub fn new(grow_after: u32, shrink_after: u32) -> Result<Self, ConfigError> {
        if grow_after == 0 {
            return Err(ConfigError::new(
                "adaptive.grow_after",
                "must be at least 1",
            ));
        }
        if shrink_after == 0 {
            return Err(ConfigError::new(
                "adaptive.shrink_after",
                "must be at least 1",
            ));
        }
        Ok(AdaptiveAttempts {
            grow_after,
            shrink_after,
        })
    }

    /// Consecutive successes before the limit grows.
    pub fn grow_after(&self) -> u32 {
        self.grow_after
    }

    /// Consecutive failures before the limit shrinks.
    pub fn shrink_after(&self) -> u32 {
        self.shrink_after
    }
}

impl Default for AdaptiveAttempts {
    /// Grow after 10 successes, shrink after 5 failures.
    fn default() -> Self {
        AdaptiveAttempts {
            grow_after: 10,
            shrink_after: 5,
        }
    }
}

/// The shared state of an adaptive limit.
#[derive(Debug)]
pub(crate) struct AdaptiveLimit {
    config: AdaptiveAttempts,
    top: u32,
    limit: AtomicU32,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl AdaptiveLimit {
    pub(crate) fn new(config: AdaptiveAttempts, base: u32) -> Self {
        AdaptiveLimit {
            config,
            top: base.saturating_mul(2),
            limit: AtomicU32::new(base),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }

    #[inline]
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.limit() >= self.top {
            return;
        }
        // Every multiple of `grow_after` is returned to exactly one caller.
        let n = self
            .successes
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if n.is_multiple_of(self.config.grow_after) {
            // Another thread may have grown it to the top since the check above.
            let top = self.top;
            let _ = self
                .limit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| grown(l, top));
        }
    }

    pub(crate) fn failure(&self) {
        if self.successes.load(Ordering::Relaxed) != 0 {
            self.successes.store(0, Ordering::Relaxed);
        }
        if self.limit() <= 1 {
            return;
        }
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if n.is_multiple_of(self.config.shrink_after) {
            let _ = self
                .limit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, shrunk);
        }
    }
}

/// The limit after a success streak: one more, never above `top`.
#[inline]
fn grown(limit: u32, top: u32) -> Option<u32> {
    (limit < top).then_some(limit + 1)
}

/// The limit after a failure streak: one less, never below one attempt.
#[inline]
fn shrunk(limit: u32) -> Option<u32> {
    (limit > 1).then(|| limit - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streaks_read_back_as_given() {
        let a = AdaptiveAttempts::new(20, 3).unwrap();
        assert_eq!((a.grow_after(), a.shrink_after()), (20, 3));
        let a = AdaptiveAttempts::default();
        assert_eq!((a.grow_after(), a.shrink_after()), (10, 5));
    }

    #[test]
    fn grows_to_twice_the_base_and_shrinks_to_one() {
        let a = AdaptiveLimit::new(AdaptiveAttempts::new(3, 2).unwrap(), 2);
        assert_eq!(a.limit(), 2);
        for _ in 0..2 {
            a.success();
        }
        assert_eq!(a.limit(), 2);
        a.success();
        assert_eq!(a.limit(), 3);
        for _ in 0..30 {
            a.success();
        }
        assert_eq!(a.limit(), 4, "never more than twice the base");
        a.failure();
        assert_eq!(a.limit(), 4);
        a.failure();
        assert_eq!(a.limit(), 3);
        for _ in 0..20 {
            a.failure();
        }
        assert_eq!(a.limit(), 1, "never less than one attempt");
    }

    /// The steps themselves, as two racing threads reach them: one of the two finds the limit
    /// already at its bound (the loom model `loom_adaptive_streak_grows_once` races them).
    #[test]
    fn a_step_never_crosses_a_bound() {
        assert_eq!(grown(3, 4), Some(4));
        assert_eq!(grown(4, 4), None);
        assert_eq!(grown(5, 4), None);
        assert_eq!(shrunk(2), Some(1));
        assert_eq!(shrunk(1), None);
        assert_eq!(shrunk(0), None);
    }

    #[test]
    fn streaks_must_be_consecutive() {
        let a = AdaptiveLimit::new(AdaptiveAttempts::new(3, 2).unwrap(), 3);
        a.success();
        a.success();
        a.failure(); // breaks the success streak
        a.success();
        a.success();
        assert_eq!(a.limit(), 3);
        a.failure();
        a.success(); // breaks the failure streak
        a.failure();
        assert_eq!(a.limit(), 3);
        a.failure();
        assert_eq!(a.limit(), 2);
    }
}
