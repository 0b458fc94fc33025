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
}

const IN_SCOPE: u64 = 1 << 63;

/// Restores the previous context even if the closure panics.
struct Restore {
    number: u64,
    avoid: u64,
}

impl Drop for Restore {
    fn drop(&mut self) {
        NUMBER.set(self.number);
        AVOID.set(self.avoid);
    }
}

/// Runs `f` with `state` as the current attempt, then writes back what the layers below
/// reported into `state`.
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
pub fn report_failed_endpoint(token: u64) {
    if NUMBER.get() & IN_SCOPE != 0 && token != 0 {
        AVOID.set(token);
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
