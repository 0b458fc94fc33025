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
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::state;

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
/// Sealed: an [`OwnSleep`] or a [`SharedSleep`].
pub trait AttemptTimer: sealed::Sealed + Future<Output = ()> + fmt::Debug {
    /// A timer that completes `limit` from now.
    fn start(limit: Duration) -> Self;

    /// The limit it was started with (at most about 292 years: a longer one is kept as that),
    /// which the attempt's [`Elapsed`](crate::error::Elapsed) reports.
    fn limit(&self) -> Duration;

    /// The instant the attempt's time is up.
    fn end(&self) -> Instant;
}

/// A timeout with a tokio [`Sleep`] of its own, kept inline in its response future (96 bytes,
/// and the limit beside it): it works anywhere, with or without a deadline above. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnTimer;

/// A timeout that shares the timer of the [`Deadline`](crate::Deadline) above it: its response
/// future keeps only the instant its attempt ends and its limit (24 bytes instead of 104) and
/// asks the
/// deadline's future to wake the task then. Where no deadline serves it (none above on the same
/// task, or a combinator between them that polls its children with wakers of its own), it
/// falls back to a boxed timer of its own: still correct, at one allocation per waiting
/// attempt. Made by [`TimeoutLayer::share_deadline_timer`](crate::TimeoutLayer::share_deadline_timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedTimer;

impl sealed::Sealed for OwnTimer {}
impl sealed::Sealed for SharedTimer {}
impl sealed::Sealed for OwnSleep {}
impl sealed::Sealed for SharedSleep {}

impl TimerKind for OwnTimer {
    type Timer = OwnSleep;
}

impl TimerKind for SharedTimer {
    type Timer = SharedSleep;
}

pin_project! {
    /// The timer of an [`OwnTimer`] timeout: a tokio [`Sleep`], and the limit it was started
    /// with in nanoseconds (8 bytes), for the attempt's [`Elapsed`](crate::error::Elapsed).
    #[derive(Debug)]
    pub struct OwnSleep {
        #[pin]
        sleep: Sleep,
        limit: u64,
    }
}

impl AttemptTimer for OwnSleep {
    #[inline]
    fn start(limit: Duration) -> Self {
        OwnSleep {
            sleep: sleep(limit),
            limit: state::nanos(limit),
        }
    }

    fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit)
    }

    fn end(&self) -> Instant {
        self.sleep.deadline()
    }
}

impl Future for OwnSleep {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

/// The timer of a [`SharedTimer`] timeout: the instant its attempt ends, and a timer of its own
/// only where no deadline above serves it; beside either, the limit it was started with in
/// nanoseconds. 24 bytes: the instant and the box share their space.
pub struct SharedSleep {
    limit: u64,
    end: End,
}

/// Where a [`SharedSleep`]'s end is kept.
enum End {
    /// The instant, for the deadline above to wake the task at.
    Shared(Instant),
    /// A timer of its own (armed for the same instant), where no deadline serves it.
    Own(Pin<Box<Sleep>>),
}

impl SharedSleep {
    /// Whether it fell back to a timer of its own.
    #[cfg(test)]
    pub(crate) fn has_own_timer(&self) -> bool {
        matches!(self.end, End::Own(_))
    }

    /// The instant its attempt ends.
    fn end(&self) -> Instant {
        match &self.end {
            End::Shared(end) => *end,
            End::Own(sleep) => sleep.deadline(),
        }
    }
}

impl fmt::Debug for SharedSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSleep")
            .field("end", &self.end())
            .field("own_timer", &matches!(self.end, End::Own(_)))
            .finish()
    }
}

impl AttemptTimer for SharedSleep {
    #[inline]
    fn start(limit: Duration) -> Self {
        // As tokio's `sleep` computes its deadline: far in the future when `limit` overflows.
        let end = context::deadline_after(Instant::now(), limit);
        SharedSleep {
            limit: state::nanos(limit),
            end: End::Shared(end),
        }
    }

    fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit)
    }

    fn end(&self) -> Instant {
        SharedSleep::end(self)
    }
}

impl Future for SharedSleep {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &mut this.end {
            End::Own(own) => own.as_mut().poll(cx),
            End::Shared(end) => match timer::share(cx.waker(), *end) {
                Share::Scheduled => Poll::Pending,
                Share::Elapsed => Poll::Ready(()),
                Share::Unavailable => own_timer(this, cx),
            },
        }
    }
}

/// No deadline serves this poll: arm a timer of our own, for good.
#[cold]
#[inline(never)]
fn own_timer(this: &mut SharedSleep, cx: &mut Context<'_>) -> Poll<()> {
    let mut own = Box::pin(sleep_until(this.end()));
    let polled = own.as_mut().poll(cx);
    this.end = End::Own(own);
    polled
}
