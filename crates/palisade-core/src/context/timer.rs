//! One timer for a deadline and the per-attempt timeouts below it.
//!
//! A tokio [`Sleep`](tokio::time::Sleep) is about 96 bytes (its instant, the runtime's handle
//! and its timer-wheel entry). A stack with a deadline over the whole call and a timeout per
//! attempt below it runs both timers at once while an attempt waits, so a response future that
//! keeps each inline (to allocate nothing per call) carries two of them. Yet the task only ever
//! needs to wake at the earlier of the two instants.
//!
//! This module lets them share one: the future that owns a timer (palisade-timeout's
//! `Deadline`) polls its inner future inside [`with_owner`]; a future below that would arm a
//! timer of its own (a `Timeout` built to share, [`share`]) instead asks the owner to wake the
//! task at its instant, and keeps only that instant. The owner arms its timer at the earliest
//! instant asked for (never later than its own deadline) and, when that timer fires, polls its
//! inner future again, telling the layers below which instant is known to have passed.
//!
//! Sharing is offered only to a future polled with the owner's own waker: a combinator between
//! them that gives its children wakers of their own (a `FuturesUnordered`, say) would not poll
//! the sharer when the owner's timer wakes the task, so there [`share`] answers
//! [`Share::Unavailable`] and the sharer must keep a timer of its own. Outside any owner (no
//! deadline above, or one across a task boundary), the answer is the same.
//!
//! # Example
//!
//! ```
//! use std::task::Waker;
//! use std::time::Duration;
//! use palisade_core::context::timer::{self, Share};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let waker = Waker::noop();
//! let at = Instant::now() + Duration::from_millis(250);
//! // No owner: a sharer keeps its own timer.
//! assert_eq!(timer::share(waker, at), Share::Unavailable);
//! // Under an owner polled with the same waker, the owner is asked to wake the task at `at`.
//! let (answer, wake) = timer::with_owner(waker, None, || timer::share(waker, at));
//! assert_eq!((answer, wake), (Share::Scheduled, Some(at)));
//! // Once the owner's timer has fired at `at`, the sharer's instant has passed.
//! let (answer, _) = timer::with_owner(waker, Some(at), || timer::share(waker, at));
//! assert_eq!(answer, Share::Elapsed);
//! # }
//! ```

use std::cell::Cell;
use std::task::{RawWakerVTable, Waker};

use tokio::time::Instant;

/// The enclosing owner, during its poll: the waker it polls with (compared as
/// [`Waker::will_wake`] compares them: data and vtable pointers), the instant its timer is
/// known to have reached, and the earliest wake asked for so far.
#[derive(Clone, Copy)]
struct Owner {
    waker: (*const (), *const RawWakerVTable),
    elapsed: Option<Instant>,
    wake: Option<Instant>,
}

thread_local! {
    static OWNER: Cell<Option<Owner>> = const { Cell::new(None) };
}

/// Restores the enclosing owner even if the closure panics.
struct Restore(Option<Owner>);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        OWNER.set(self.0);
    }
}

#[inline]
fn identity(waker: &Waker) -> (*const (), *const RawWakerVTable) {
    (waker.data(), waker.vtable())
}

/// Runs `f` (one poll of the owner's inner future, polled with `waker`) as the owner of a
/// timer that the futures below may share, and returns what it returned with the earliest
/// instant they asked to be woken at (`None`: nobody asked).
///
/// `elapsed` is an instant the owner's timer is known to have reached (it fired at it);
/// sharers whose instant is not later have timed out. Owners nest: the innermost one serves
/// the sharers below it.
#[inline]
pub fn with_owner<R>(
    waker: &Waker,
    elapsed: Option<Instant>,
    f: impl FnOnce() -> R,
) -> (R, Option<Instant>) {
    let restore = Restore(OWNER.get());
    OWNER.set(Some(Owner {
        waker: identity(waker),
        elapsed,
        wake: None,
    }));
    let out = f();
    let wake = OWNER.get().and_then(|owner| owner.wake);
    drop(restore);
    (out, wake)
}

/// What [`share`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// The owner will wake the task no later than the instant asked for (and poll again).
    Scheduled,
    /// The instant asked for has passed: the owner's timer fired at or after it.
    Elapsed,
    /// No owner serves this poll (none above on this thread, or one polled with another
    /// waker): keep a timer of your own.
    Unavailable,
}

/// Asks the enclosing owner to wake the task, whose poll gave `waker`, at `at`: see
/// [`Share`] for the answers. Call it on every poll that returns `Pending` while waiting for
/// `at`: an owner only keeps the wakes asked for during its current poll.
///
/// Wakers are compared as [`Waker::will_wake`] compares them, by their data and vtable
/// pointers. A false "different" (one waker type's vtable can have more than one address) only
/// costs the sharer a timer of its own; a false "same" cannot happen for two live wakers.
#[inline]
pub fn share(waker: &Waker, at: Instant) -> Share {
    let Some(mut owner) = OWNER.get() else {
        return Share::Unavailable;
    };
    if owner.waker != identity(waker) {
        return Share::Unavailable;
    }
    if owner.elapsed.is_some_and(|elapsed| elapsed >= at) {
        return Share::Elapsed;
    }
    owner.wake = Some(owner.wake.map_or(at, |wake| wake.min(at)));
    OWNER.set(Some(owner));
    Share::Scheduled
}

#[cfg(test)]
mod tests {
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct Other;
    impl Wake for Other {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    #[test]
    fn the_earliest_wake_is_kept_and_nested_owners_restore() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let waker = Waker::noop();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let ((), wake) = with_owner(waker, None, || {
            assert_eq!(share(waker, t0 + ms(30)), Share::Scheduled);
            assert_eq!(share(waker, t0 + ms(10)), Share::Scheduled);
            assert_eq!(share(waker, t0 + ms(20)), Share::Scheduled);
            // An inner owner serves its own sharers; the outer one's wake is left alone.
            let ((), inner) = with_owner(waker, None, || {
                assert_eq!(share(waker, t0 + ms(5)), Share::Scheduled);
            });
            assert_eq!(inner, Some(t0 + ms(5)));
        });
        assert_eq!(wake, Some(t0 + ms(10)));
        assert_eq!(share(waker, t0), Share::Unavailable);
        let ((), none) = with_owner(waker, None, || ());
        assert_eq!(none, None);
    }

    #[test]
    fn an_instant_up_to_the_elapsed_one_has_passed() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let waker = Waker::noop();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (answers, wake) = with_owner(waker, Some(t0 + ms(10)), || {
            [
                share(waker, t0 + ms(9)),
                share(waker, t0 + ms(10)),
                share(waker, t0 + ms(11)),
            ]
        });
        assert_eq!(answers, [Share::Elapsed, Share::Elapsed, Share::Scheduled]);
        // Only the instant still ahead is asked for.
        assert_eq!(wake, Some(t0 + ms(11)));
    }

    #[test]
    fn another_waker_is_not_served() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let other = Waker::from(std::sync::Arc::new(Other));
        let at = Instant::now();
        let (answer, wake) = with_owner(Waker::noop(), Some(at), || share(&other, at));
        assert_eq!((answer, wake), (Share::Unavailable, None));
    }

    #[test]
    fn a_panic_inside_restores_the_enclosing_owner() {
        let rt = crate::context::paused_runtime();
        let _guard = rt.enter();
        let waker = Waker::noop();
        let at = Instant::now();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_owner(waker, None, || panic!("inner poll panicked"))
        }));
        assert!(caught.is_err());
        assert_eq!(share(waker, at), Share::Unavailable);
    }
}
