//! The response futures of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::context::{self, attempt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::error::{DeadlineExceeded, Elapsed};
use crate::state;

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout).
    ///
    /// Polls the inner future first; the timer is created only when the inner future first
    /// returns `Pending`, so a response that is ready at once costs no timer and no clock read.
    ///
    /// When the timer fires, the future drops the attempt (the inner future) itself, inside
    /// [`attempt::time_out`](palisade_core::context::attempt::time_out), before it fails with
    /// [`Elapsed`]: a router below counts that drop against the endpoint the attempt went to
    /// (see [Timed-out attempts](crate#timed-out-attempts)).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        timer: Timer,
    }
}

pin_project! {
    /// A timeout future's limit and timer, which are never needed at once, in one space.
    #[project = TimerProj]
    #[derive(Debug)]
    enum Timer {
        // No timer yet: the limit in nanoseconds (bits 0..63, at most about 292 years), and in
        // bit 63 whether this is an escalating timeout whose call ran outside any attempt
        // scope (one word: the flag costs the future no size).
        Idle { limit: u64 },
        // The inner future returned `Pending`: the timer runs.
        Armed {
            #[pin]
            sleep: Sleep,
        },
        // The timer fired (it is dropped then).
        Over,
    }
}

impl<F> ResponseFuture<F> {
    /// `nanos`: the limit, as [`state::nanos`] gives it; `unscoped`: an escalating timeout
    /// whose `call` ran outside any attempt scope.
    #[inline]
    pub(crate) fn new(inner: F, nanos: u64, unscoped: bool) -> Self {
        debug_assert!(nanos <= NANOS);
        ResponseFuture {
            inner: Some(inner),
            timer: Timer::Idle {
                limit: nanos | if unscoped { UNSCOPED } else { 0 },
            },
        }
    }
}

/// Set once the lost-context warning has been given, so it is given once per process.
static WARNED_LOST_CONTEXT: AtomicBool = AtomicBool::new(false);

/// Bit 63 of a timeout future's limit: the call ran outside any attempt scope.
const UNSCOPED: u64 = 1 << 63;
/// The nanoseconds of a timeout future's limit.
const NANOS: u64 = state::MAX_NANOS;

/// Warns once when an escalating timeout's call ran outside the attempt its future is polled
/// in: a task boundary between the retry above and this timeout dropped the count of
/// timed-out attempts.
fn warn_lost_context() {
    if attempt::current().is_none() || WARNED_LOST_CONTEXT.swap(true, Ordering::Relaxed) {
        return;
    }
    tracing::warn!(
        "palisade-timeout: an escalating timeout was called outside the retry attempt it runs \
         in (a tower Buffer or another task boundary sits between them), so it cannot see how \
         many attempts timed out and never escalates; put \
         palisade::context::carry::CarryLayer above the boundary and ResumeLayer below it"
    );
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("`Timeout` response future polled after completion");
        };
        if let Poll::Ready(out) = inner.poll(cx) {
            // The inner future stays until this one is dropped, as tower's: nothing to pay for
            // on the happy path.
            return Poll::Ready(out.map_err(Into::into));
        }
        if let TimerProj::Idle { limit } = this.timer.as_mut().project() {
            let limit = *limit;
            if limit & UNSCOPED != 0 {
                warn_lost_context();
            }
            this.timer.set(Timer::Armed {
                sleep: sleep(Duration::from_nanos(limit & NANOS)),
            });
        }
        if let TimerProj::Armed { sleep } = this.timer.as_mut().project() {
            ready!(sleep.poll(cx));
        }
        // Elapsed: drop the attempt now, marked as timed out, so that a router below records
        // a timeout of its endpoint; any later drop of a future in there is neutral.
        attempt::time_out(|| this.inner.set(None));
        this.timer.set(Timer::Over);
        palisade_core::metrics::timeout_elapsed("attempt");
        Poll::Ready(Err(Elapsed::new().into()))
    }
}

pin_project! {
    /// The response future of [`Deadline`](crate::Deadline).
    ///
    /// Polls the inner future inside a deadline scope
    /// ([`context::with_lazy_deadline`](palisade_core::context::with_lazy_deadline)). The
    /// limit is counted from the first poll (tower callers poll right after `call`), and the
    /// clock is read only when a layer below asks for the deadline or the inner future first
    /// returns `Pending`; only then is a timer created. On expiry the inner future is dropped
    /// and the call fails with [`DeadlineExceeded`]. That drop is not marked as a timed-out attempt
    /// (unlike [`ResponseFuture`]'s): the caller's time is spent, which says nothing against
    /// the endpoint of the attempt in flight, so a router below stays neutral.
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        // `None` once the output was returned.
        #[pin]
        inner: Option<F>,
        #[pin]
        clock: Clock,
    }
}

pin_project! {
    /// A deadline future's limit, clock and timer: the limit and a started clock are never
    /// needed at once with a timer (the timer knows its deadline), so they share its space.
    #[project = ClockProj]
    #[derive(Debug)]
    enum Clock {
        // No timer: `limit` is the time the call is granted, `started` when the clock
        // started, `None` until somebody needed it.
        Idle { started: Option<Instant>, limit: Duration },
        // The inner future returned `Pending`: the timer runs until the deadline.
        Armed {
            #[pin]
            sleep: Sleep,
        },
        // The deadline expired (the timer is dropped then); `deadline` is when.
        Over { deadline: Option<Instant> },
    }
}

impl<F> DeadlineFuture<F> {
    /// `started` is when the clock started if a layer below read the deadline during the
    /// call, `None` otherwise.
    #[inline]
    pub(crate) fn new(inner: F, limit: Duration, started: Option<Instant>) -> Self {
        DeadlineFuture {
            inner: Some(inner),
            clock: Clock::Idle { started, limit },
        }
    }

    /// The instant this call fails at, once its clock has started (see the type's docs);
    /// `None` before.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.clock {
            Clock::Idle { started, limit } => {
                started.map(|start| context::deadline_after(start, *limit))
            }
            Clock::Armed { sleep } => Some(sleep.deadline()),
            Clock::Over { deadline } => *deadline,
        }
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            deadline_polled_after_completion();
        };
        let polled = match this.clock.as_mut().project() {
            ClockProj::Idle { started, limit } => {
                context::with_lazy_deadline(*limit, started, || inner.poll(cx))
            }
            ClockProj::Armed { sleep } => {
                context::with_deadline(sleep.deadline(), || inner.poll(cx))
            }
            ClockProj::Over { .. } => deadline_polled_after_completion(),
        };
        if let Poll::Ready(out) = polled {
            this.inner.set(None);
            return Poll::Ready(out.map_err(Into::into));
        }
        if let ClockProj::Idle { started, limit } = this.clock.as_mut().project() {
            let start = *started.get_or_insert_with(Instant::now);
            let deadline = context::deadline_after(start, *limit);
            this.clock.set(Clock::Armed {
                sleep: sleep_until(deadline),
            });
        }
        if let ClockProj::Armed { sleep } = this.clock.as_mut().project() {
            ready!(sleep.poll(cx));
        }
        // Expired: drop the inner future (and whatever it holds) and the timer now.
        this.inner.set(None);
        let deadline = this.clock.as_mut().deadline();
        this.clock.set(Clock::Over { deadline });
        palisade_core::metrics::timeout_elapsed("deadline");
        Poll::Ready(Err(DeadlineExceeded::new().into()))
    }
}

impl Clock {
    /// The deadline, once the clock has started.
    #[inline]
    fn deadline(self: Pin<&mut Self>) -> Option<Instant> {
        match self.project() {
            ClockProj::Idle { started, limit } => {
                started.map(|start| context::deadline_after(start, *limit))
            }
            ClockProj::Armed { sleep } => Some(sleep.deadline()),
            ClockProj::Over { deadline } => *deadline,
        }
    }
}

#[cold]
#[inline(never)]
fn deadline_polled_after_completion() -> ! {
    panic!("`Deadline` response future polled after completion")
}
