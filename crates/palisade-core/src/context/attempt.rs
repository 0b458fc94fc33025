//! The attempt context: what a retry layer tells the layers below it about the current attempt.
//!
//! A retry layer runs each poll of an attempt inside [`scope`] with the request's [`Attempt`];
//! a routing layer below reads [`current`] when it picks an endpoint, so a retry avoids the
//! endpoint that just failed, and calls [`report_failed_endpoint`] when an attempt fails. Outside
//! any scope, `current` is `None` and reporting does nothing.
//!
//! The context lives in a thread-local that [`scope`] sets and restores around a synchronous
//! closure, so it follows the attempt exactly for the duration of one poll and costs a
//! thread-local read when nobody uses it. (See [the parent module](super) for task boundaries
//! and how the context crosses them.)
//!
//! This module is also reachable as `palisade_core::attempt`, its path before the context
//! had one module.
//!
//! # Timed-out attempts
//!
//! A per-attempt timeout that elapses drops the attempt's future inside [`time_out`]; while it
//! does, [`timing_out`] is true, so a router below can tell "this attempt was too slow" from
//! any other drop (the caller gave up, a whole-call deadline, a retry cancelling an attempt)
//! and count it against the endpoint as a failure of class `Timeout`, as Envoy's outlier
//! detection counts a local timeout as a locally originated failure of the host. Only the drop
//! of a future that did not complete needs to ask, so the happy path never reads the flag. The
//! flag is independent of [`scope`]: it works under a timeout with no retry layer above.
//! Like the rest of the context it does not cross a task boundary: a future dropped on
//! another task (behind a `Buffer`, say) sees `false`.
//!
//! # Escalation
//!
//! A retry layer makes each attempt's `inner.call(req)` inside [`with_timeouts_so_far`], so a
//! per-attempt timeout configured to escalate (palisade-timeout's `TimeoutBuilder::escalate`)
//! reads [`timeouts_so_far`] in its `call` and gives the attempt a longer limit after earlier
//! attempts timed out. Outside any such scope the count is 0.
//!
//! ```
//! use palisade_core::context::attempt::{self, Attempt};
//!
//! let mut state = Attempt::default();
//! attempt::scope(&mut state, || {
//!     assert_eq!(attempt::current().unwrap().avoid, None);
//!     attempt::report_failed_endpoint(7); // a router saw endpoint 7 fail
//! });
//! assert_eq!(state.avoid, Some(7)); // the retry remembers it for the next attempt
//! assert!(attempt::current().is_none());
//!
//! assert_eq!(attempt::timeouts_so_far(), 0);
//! assert_eq!(attempt::with_timeouts_so_far(2, attempt::timeouts_so_far), 2);
//! ```

use std::cell::Cell;

/// What the layers below a retry know about the current attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt number, counting from 1 for the first call (0 when the retry layer does not
    /// number its attempts).
    pub number: u32,
    /// An endpoint that failed an earlier attempt of this request, as the token the router gave
    /// it (never 0): the router prefers any other eligible endpoint.
    pub avoid: Option<u64>,
}

// Two word-sized cells rather than one `Cell<Option<Attempt>>`: a 24-byte cell costs several
// times more to save and restore on every poll.
thread_local! {
    /// Bit 63: inside a scope; low 32 bits: the attempt number.
    static NUMBER: Cell<u64> = const { Cell::new(0) };
    /// The endpoint to avoid; 0 for none (endpoint tokens are never 0).
    static AVOID: Cell<u64> = const { Cell::new(0) };
    /// True while a per-attempt timeout drops its attempt (see [`time_out`]).
    static TIMING_OUT: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// How many earlier attempts of the current request timed out.
    static TIMEOUTS: Cell<u32> = const { Cell::new(0) };
}

const IN_SCOPE: u64 = 1 << 63;

/// Restores the previous context even if the closure panics.
struct Restore {
    number: u64,
    avoid: u64,
}

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        NUMBER.set(self.number);
        AVOID.set(self.avoid);
    }
}

/// Runs `f` with `state` as the current attempt, then writes back what the layers below
/// reported into `state`.
#[inline]
pub fn scope<R>(state: &mut Attempt, f: impl FnOnce() -> R) -> R {
    let restore = Restore {
        number: NUMBER.replace(IN_SCOPE | u64::from(state.number)),
        avoid: AVOID.replace(state.avoid.unwrap_or(0)),
    };
    let out = f();
    let avoid = AVOID.get();
    state.avoid = (avoid != 0).then_some(avoid);
    drop(restore);
    out
}

/// The current attempt, inside a [`scope`].
#[inline]
pub fn current() -> Option<Attempt> {
    let number = NUMBER.get();
    (number & IN_SCOPE != 0).then(|| {
        let avoid = AVOID.get();
        Attempt {
            number: number as u32,
            avoid: (avoid != 0).then_some(avoid),
        }
    })
}

/// Records that the endpoint with `token` failed this attempt (does nothing outside a scope,
/// or for the reserved token 0).
///
/// Report from the attempt's response future, as palisade-route does when its call fails or
/// times out: palisade-retry keeps what is reported there, in a retry's `poll_ready` and in a
/// retry's `call`. A report from the *first* attempt's `call` is not kept (reading it back
/// would cost every call on the happy path, for a router that fails before it has a future):
/// return a future that reports when polled instead.
pub fn report_failed_endpoint(token: u64) {
    if NUMBER.get() & IN_SCOPE != 0 && token != 0 {
        AVOID.set(token);
    }
}

/// Puts the enclosing timing-out flag back even if the closure panics.
struct RestoreTimingOut(bool);

impl Drop for RestoreTimingOut {
    #[inline]
    fn drop(&mut self) {
        TIMING_OUT.set(self.0);
    }
}

/// Runs `f`, typically the drop of an attempt's future, as the work of that attempt's own
/// timeout: [`timing_out`] is true inside `f` and back to what it was afterwards, even if `f`
/// panics.
///
/// A per-attempt timeout calls this when its timer fires, and only then; a drop for any other
/// reason stays outside it.
///
/// ```
/// use palisade_core::context::attempt;
///
/// struct Attempt;
/// impl Drop for Attempt {
///     fn drop(&mut self) {
///         // A router's in-flight call: counts the endpoint as failed only if timed out.
///         assert!(attempt::timing_out());
///     }
/// }
///
/// let call = Attempt;
/// attempt::time_out(|| drop(call));
/// assert!(!attempt::timing_out());
/// ```
#[inline]
pub fn time_out<R>(f: impl FnOnce() -> R) -> R {
    let restore = RestoreTimingOut(TIMING_OUT.replace(true));
    let out = f();
    drop(restore);
    out
}

/// Whether the code running now is run by [`time_out`]: an attempt being dropped because its
/// per-attempt timeout elapsed. One thread-local read; `false` outside.
#[inline]
pub fn timing_out() -> bool {
    TIMING_OUT.get()
}

/// How many earlier attempts of the current request timed out, as set by a retry layer with
/// [`with_timeouts_so_far`]; 0 outside any.
#[inline]
pub fn timeouts_so_far() -> u32 {
    TIMEOUTS.get()
}

/// Puts the enclosing count back even if the closure panics.
struct RestoreTimeouts(u32);

impl Drop for RestoreTimeouts {
    #[inline]
    fn drop(&mut self) {
        TIMEOUTS.set(self.0);
    }
}

/// Runs `f` (typically an attempt's `inner.call(req)`) with `n` earlier attempts of this
/// request that timed out.
#[inline]
pub fn with_timeouts_so_far<R>(n: u32, f: impl FnOnce() -> R) -> R {
    // One call of `f`, so that the compiler inlines it (and builds what it returns in place).
    let restore = RestoreTimeouts(TIMEOUTS.replace(n));
    let out = f();
    drop(restore);
    out
}

/// Runs `f` outside every enclosing attempt scope, with no earlier timeouts and not timing out
/// ([`current`] is `None`, [`timeouts_so_far`] 0 and [`timing_out`] `false` inside, unless `f`
/// sets them), and puts the enclosing values back afterwards, even if `f` panics.
#[inline]
pub(super) fn without_attempt<R>(f: impl FnOnce() -> R) -> R {
    let restore = Restore {
        number: NUMBER.replace(0),
        avoid: AVOID.replace(0),
    };
    let timeouts = RestoreTimeouts(TIMEOUTS.replace(0));
    let timing_out = RestoreTimingOut(TIMING_OUT.replace(false));
    let out = f();
    drop((timing_out, timeouts, restore));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        let mut outer = Attempt {
            number: 1,
            avoid: None,
        };
        scope(&mut outer, || {
            let mut inner = Attempt {
                number: 5,
                avoid: Some(1),
            };
            scope(&mut inner, || {
                assert_eq!(current().unwrap().number, 5);
                report_failed_endpoint(2);
            });
            assert_eq!(inner.avoid, Some(2));
            assert_eq!(current().unwrap().number, 1);
            assert_eq!(current().unwrap().avoid, None);
        });
        assert_eq!(current(), None);
        report_failed_endpoint(3); // outside: no effect, no panic
        assert_eq!(current(), None);
    }

    #[test]
    fn restores_after_a_panic() {
        let mut a = Attempt::default();
        let r = std::panic::catch_unwind(move || scope(&mut a, || panic!("boom")));
        assert!(r.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn time_out_flags_only_its_closure_and_nests() {
        assert!(!timing_out());
        let seen = time_out(|| {
            let inner = time_out(timing_out);
            (timing_out(), inner)
        });
        assert_eq!(seen, (true, true));
        assert!(!timing_out());
        // Independent of the attempt scope, both ways.
        let mut a = Attempt::default();
        time_out(|| scope(&mut a, || assert!(timing_out())));
        scope(&mut a, || {
            assert!(!timing_out());
            time_out(|| assert!(timing_out()));
            assert!(!timing_out());
        });
    }

    #[test]
    fn time_out_restores_after_a_panic() {
        struct Panics;
        impl Drop for Panics {
            fn drop(&mut self) {
                assert!(timing_out());
                panic!("drop panicked");
            }
        }
        let r = std::panic::catch_unwind(|| time_out(|| drop(Panics)));
        assert!(r.is_err());
        assert!(!timing_out());
        // A panic inside a nested one restores the outer flag, not `false`.
        time_out(|| {
            let r = std::panic::catch_unwind(|| time_out(|| panic!("boom")));
            assert!(r.is_err());
            assert!(timing_out());
        });
        assert!(!timing_out());
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

    /// Inside: no attempt, no timeouts, not timing out, and a report goes nowhere; outside
    /// again: the enclosing values, even after a panic inside.
    #[test]
    fn without_attempt_sets_the_attempt_aside() {
        let mut state = Attempt {
            number: 3,
            avoid: Some(5),
        };
        scope(&mut state, || {
            with_timeouts_so_far(2, || {
                time_out(|| {
                    without_attempt(|| {
                        assert_eq!(current(), None);
                        assert_eq!((timeouts_so_far(), timing_out()), (0, false));
                        report_failed_endpoint(9);
                    });
                    assert!(timing_out());
                    let caught = std::panic::catch_unwind(|| without_attempt(|| panic!("inside")));
                    assert!(caught.is_err());
                    assert!(timing_out());
                });
                assert_eq!(timeouts_so_far(), 2);
            });
            assert_eq!(
                current(),
                Some(Attempt {
                    number: 3,
                    avoid: Some(5)
                })
            );
        });
        assert_eq!(state.avoid, Some(5), "the report inside went nowhere");
        assert_eq!(current(), None);
    }
}
