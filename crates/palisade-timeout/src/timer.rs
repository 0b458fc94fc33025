//! How a [`Timeout`](crate::Timeout) keeps its timer: [`OwnTimer`] (the default) or
//! [`SharedTimer`]. See [One timer for a deadline and its timeouts](crate#one-timer-for-a-deadline-and-its-timeouts).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::context::{
    self,
    timer::{self, Share},
};
use tokio::time::{Instant, Sleep, sleep, sleep_until};

mod sealed {
    pub trait Sealed {}
}

/// How a [`Timeout`](crate::Timeout)'s response future keeps its timer while an attempt waits.
/// Sealed: [`OwnTimer`] or [`SharedTimer`].
pub trait TimerKind: sealed::Sealed + Copy + fmt::Debug + Send + Sync + 'static {
    /// The timer a response future keeps while its attempt waits.
    type Timer: AttemptTimer;
}

/// The timer of a waiting attempt: a future that completes when the attempt's time is up.
/// Sealed: a tokio [`Sleep`] or a [`SharedSleep`].
pub trait AttemptTimer: sealed::Sealed + Future<Output = ()> + fmt::Debug {
    /// A timer that completes `limit` from now.
    fn start(limit: Duration) -> Self;
}

/// A timeout with a tokio [`Sleep`] of its own, kept inline in its response future (96 bytes):
/// it works anywhere, with or without a deadline above. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnTimer;

/// A timeout that shares the timer of the [`Deadline`](crate::Deadline) above it: its response
/// future keeps only the instant its attempt ends (24 bytes instead of 96) and asks the
/// deadline's future to wake the task then. Where no deadline serves it (none above on the same
/// task, or a combinator between them that polls its children with wakers of its own), it
/// falls back to a boxed timer of its own: still correct, at one allocation per waiting
/// attempt. Made by [`TimeoutLayer::share_deadline_timer`](crate::TimeoutLayer::share_deadline_timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedTimer;

impl sealed::Sealed for OwnTimer {}
impl sealed::Sealed for SharedTimer {}
impl sealed::Sealed for Sleep {}
impl sealed::Sealed for SharedSleep {}

impl TimerKind for OwnTimer {
    type Timer = Sleep;
}

impl TimerKind for SharedTimer {
    type Timer = SharedSleep;
}

impl AttemptTimer for Sleep {
    #[inline]
    fn start(limit: Duration) -> Self {
        sleep(limit)
    }
}

/// The timer of a [`SharedTimer`] timeout: the instant its attempt ends, and a timer of its own
/// only where no deadline above serves it.
pub struct SharedSleep {
    end: Instant,
    own: Option<Pin<Box<Sleep>>>,
}

impl SharedSleep {
    /// Whether it fell back to a timer of its own.
    #[cfg(test)]
    pub(crate) fn has_own_timer(&self) -> bool {
        self.own.is_some()
    }
}

impl fmt::Debug for SharedSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSleep")
            .field("end", &self.end)
            .field("own_timer", &self.own.is_some())
            .finish()
    }
}

impl AttemptTimer for SharedSleep {
    #[inline]
    fn start(limit: Duration) -> Self {
        // As tokio's `sleep` computes its deadline: far in the future when `limit` overflows.
        let end = context::deadline_after(Instant::now(), limit);
        SharedSleep { end, own: None }
    }
}

impl Future for SharedSleep {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(own) = &mut this.own {
            return own.as_mut().poll(cx);
        }
        match timer::share(cx.waker(), this.end) {
            Share::Scheduled => Poll::Pending,
            Share::Elapsed => Poll::Ready(()),
            Share::Unavailable => own_timer(this, cx),
        }
    }
}

/// No deadline serves this poll: arm a timer of our own, for good.
#[cold]
#[inline(never)]
fn own_timer(this: &mut SharedSleep, cx: &mut Context<'_>) -> Poll<()> {
    this.own
        .insert(Box::pin(sleep_until(this.end)))
        .as_mut()
        .poll(cx)
}
