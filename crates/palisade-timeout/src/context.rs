//! The deadline and escalation context shared by the layers of a stack.
//!
//! A [`Deadline`](crate::Deadline) future polls its inner future inside [`with_deadline`], so
//! every layer below it (a retry deciding whether a backoff still fits, a nested timeout) can
//! read the effective [`deadline`]. A retry layer calls each attempt's `inner.call(req)` inside
//! [`with_timeouts_so_far`], so a [`Timeout`](crate::Timeout) configured to escalate gives the
//! attempt a longer limit after earlier attempts timed out.
//!
//! Both values live in tokio task-locals set with [`LocalKey::sync_scope`] around a synchronous
//! closure: they follow exactly one poll (or one call) and cost one thread-local read when
//! nobody set them. Outside any scope, [`deadline`] is `None` and [`timeouts_so_far`] is 0.
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::context;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let now = Instant::now();
//! assert_eq!(context::deadline(), None);
//! context::with_deadline(now + Duration::from_secs(5), || {
//!     // Nested deadlines combine to the earliest.
//!     context::with_deadline(now + Duration::from_secs(9), || {
//!         assert_eq!(context::deadline(), Some(now + Duration::from_secs(5)));
//!     });
//! });
//! assert_eq!(context::timeouts_so_far(), 0);
//! assert_eq!(context::with_timeouts_so_far(2, context::timeouts_so_far), 2);
//! # }
//! ```
//!
//! [`LocalKey::sync_scope`]: tokio::task::LocalKey::sync_scope

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
    static TIMEOUTS: u32;
}

/// The effective deadline of the innermost enclosing [`Deadline`](crate::Deadline) future being
/// polled on this task (the earliest of all enclosing ones); `None` outside any.
#[inline]
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `f` with `deadline` as the current deadline, combined with any enclosing one (the
/// earlier wins).
#[inline]
pub fn with_deadline<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    match self::deadline() {
        // An enclosing deadline that is as early already applies: no new scope needed.
        Some(outer) if outer <= deadline => f(),
        _ => DEADLINE.sync_scope(deadline, f),
    }
}

/// How many earlier attempts of the current request timed out, as set by a retry layer with
/// [`with_timeouts_so_far`]; 0 outside any.
#[inline]
pub fn timeouts_so_far() -> u32 {
    TIMEOUTS.try_with(|n| *n).unwrap_or(0)
}

/// Runs `f` (typically an attempt's `inner.call(req)`) with `n` earlier attempts of this
/// request that timed out.
#[inline]
pub fn with_timeouts_so_far<R>(n: u32, f: impl FnOnce() -> R) -> R {
    // 0 is what every layer reads outside a scope: skip the scope when nothing would change.
    if n == timeouts_so_far() {
        return f();
    }
    TIMEOUTS.sync_scope(n, f)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_nest_to_the_minimum_and_restore() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _guard = rt.enter();
        let now = Instant::now();
        let (a, b) = (
            now + Duration::from_millis(10),
            now + Duration::from_millis(20),
        );
        assert_eq!(deadline(), None);
        with_deadline(b, || {
            assert_eq!(deadline(), Some(b));
            with_deadline(a, || assert_eq!(deadline(), Some(a)));
            assert_eq!(deadline(), Some(b));
        });
        with_deadline(a, || with_deadline(b, || assert_eq!(deadline(), Some(a))));
        assert_eq!(deadline(), None);
    }

    #[test]
    fn timeouts_so_far_scopes_and_restores() {
        assert_eq!(timeouts_so_far(), 0);
        with_timeouts_so_far(3, || {
            assert_eq!(timeouts_so_far(), 3);
            with_timeouts_so_far(1, || assert_eq!(timeouts_so_far(), 1));
            with_timeouts_so_far(0, || assert_eq!(timeouts_so_far(), 0));
            with_timeouts_so_far(3, || assert_eq!(timeouts_so_far(), 3));
            assert_eq!(timeouts_so_far(), 3);
        });
        assert_eq!(timeouts_so_far(), 0);
    }
}
