//! The attempt context: what a retry layer tells the layers below it about the current attempt.
//!
//! A retry layer runs each poll of an attempt inside [`scope`] with the request's [`Attempt`];
//! a routing layer below reads [`current`] when it picks an endpoint, so a retry avoids the
//! endpoint that just failed, and calls [`report_failed_endpoint`] when an attempt fails. Outside
//! any scope, `current` is `None` and reporting does nothing.
//!
//! The context lives in a thread-local that [`scope`] sets and restores around a synchronous
//! closure, so it follows the attempt exactly for the duration of one poll and costs a
//! thread-local read when nobody uses it.
//!
//! ```
//! use palisade_classify::attempt::{self, Attempt};
//!
//! let mut state = Attempt::default();
//! attempt::scope(&mut state, || {
//!     assert_eq!(attempt::current().unwrap().avoid, None);
//!     attempt::report_failed_endpoint(7); // a router saw endpoint 7 fail
//! });
//! assert_eq!(state.avoid, Some(7)); // the retry remembers it for the next attempt
//! assert!(attempt::current().is_none());
//! ```

use std::cell::Cell;

/// What the layers below a retry know about the current attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt number, counting from 1 for the first call (0 when the retry layer does not
    /// number its attempts).
    pub number: u32,
    /// An endpoint that failed an earlier attempt of this request, as the token the router gave
    /// it: the router prefers any other eligible endpoint.
    pub avoid: Option<u64>,
}

thread_local! {
    static CURRENT: Cell<Option<Attempt>> = const { Cell::new(None) };
}

/// Restores the previous context even if the closure panics.
struct Restore {
    previous: Option<Attempt>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}

/// Runs `f` with `state` as the current attempt, then writes back what the layers below
/// reported into `state`.
pub fn scope<R>(state: &mut Attempt, f: impl FnOnce() -> R) -> R {
    let restore = Restore {
        previous: CURRENT.replace(Some(*state)),
    };
    let out = f();
    if let Some(now) = CURRENT.get() {
        *state = now;
    }
    drop(restore);
    out
}

/// The current attempt, inside a [`scope`].
pub fn current() -> Option<Attempt> {
    CURRENT.get()
}

/// Records that the endpoint with `token` failed this attempt (does nothing outside a scope).
pub fn report_failed_endpoint(token: u64) {
    if let Some(mut a) = CURRENT.get() {
        a.avoid = Some(token);
        CURRENT.set(Some(a));
    }
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
}
