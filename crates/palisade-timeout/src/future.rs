//! The response futures of [`Timeout`](crate::Timeout) and [`Deadline`](crate::Deadline).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::context::timer;
use palisade_core::context::{self, attempt};
use palisade_core::metrics::Name;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::{DeadlineExceeded, Elapsed};
use crate::state;
use crate::timer::{AttemptTimer, OwnTimer, TimerKind};

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
    ///
    /// `K` says how it keeps its timer: a tokio `Sleep` of its own ([`OwnTimer`], the default)
    /// or the instant its attempt ends, woken by the [`Deadline`](crate::Deadline) above
    /// ([`SharedTimer`](crate::timer::SharedTimer)).
    pub struct ResponseFuture<F, K: TimerKind = OwnTimer> {
        #[pin]
        inner: Option<F>,
        #[pin]
        timer: Timer<K::Timer>,
        // The dependency's name, read only when the timer fires (for the metrics).
        name: Name,
    }
}

impl<F: fmt::Debug, K: TimerKind> fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .field("timer", &self.timer)
            .field("name", &self.name)
            .finish()
    }
}

pin_project! {
    /// A timeout future's limit and timer, which are never needed at once, in one space.
    #[project = TimerProj]
    #[derive(Debug)]
    enum Timer<T> {
        // No timer yet: the limit in nanoseconds (bits 0..63, at most about 292 years), and in
        // bit 63 whether this is an escalating timeout whose call ran outside any attempt
        // scope (one word: the flag costs the future no size).
        Idle { limit: u64 },
        // The inner future returned `Pending`: the timer runs.
        Armed {
            #[pin]
            sleep: T,
        },
        // The timer fired (it is dropped then).
        Over,
    }
}

impl<F, K: TimerKind> ResponseFuture<F, K> {
    /// `nanos`: the limit, as [`state::nanos`] gives it; `unscoped`: an escalating timeout
    /// whose `call` ran outside any attempt scope; `name`: the dependency's, for the metrics.
    #[inline]
    pub(crate) fn new(inner: F, nanos: u64, unscoped: bool, name: Name) -> Self {
        debug_assert!(nanos <= NANOS);
        ResponseFuture {
            inner: Some(inner),
            timer: Timer::Idle {
                limit: nanos | if unscoped { UNSCOPED } else { 0 },
            },
            name,
        }
    }
}

#[cfg(test)]
impl<F> ResponseFuture<F, crate::timer::SharedTimer> {
    /// `None` before its timer started, then whether it fell back to a timer of its own.
    pub(crate) fn has_own_timer(&self) -> Option<bool> {
        match &self.timer {
            Timer::Armed { sleep } => Some(sleep.has_own_timer()),
            Timer::Idle { .. } | Timer::Over => None,
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

impl<F, T, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    K: TimerKind,
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
                sleep: K::Timer::start(Duration::from_nanos(limit & NANOS)),
            });
        }
        let TimerProj::Armed { mut sleep } = this.timer.as_mut().project() else {
            // `Over` comes with the inner future taken: polled after completion, caught above.
            unreachable!("the timer was armed just above");
        };
        ready!(sleep.as_mut().poll(cx));
        let limit = sleep.limit();
        if context::deadline().is_some_and(|deadline| deadline < sleep.end()) {
            return deadline_first(this.inner, this.timer, this.name.as_str());
        }
        // Elapsed: drop the attempt now, marked as timed out, so that a router below records
        // a timeout of its endpoint; any later drop of a future in there is neutral.
        attempt::time_out(|| this.inner.set(None));
        this.timer.set(Timer::Over);
        palisade_core::metrics::timeout_elapsed(this.name.as_str(), "attempt");
        Poll::Ready(Err(Elapsed::with_limit(limit).into()))
    }
}

/// The caller's deadline ended before this attempt's time was up, and both timers fired at
/// once (tokio's timer rounds each up to its next millisecond): the call fails as the deadline
/// would have failed it, with [`DeadlineExceeded`], and the attempt is dropped unmarked, as a
/// deadline's drop is (the caller's time is spent, which says nothing against the endpoint).
#[cold]
#[inline(never)]
fn deadline_first<F, T, S>(
    mut inner: Pin<&mut Option<F>>,
    mut timer: Pin<&mut Timer<S>>,
    name: &str,
) -> Poll<Result<T, BoxError>> {
    inner.set(None);
    timer.set(Timer::Over);
    palisade_core::metrics::timeout_elapsed(name, "deadline");
    Poll::Ready(Err(DeadlineExceeded::new().into()))
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
    ///
    /// Its timer is shared with the [`SharedTimer`](crate::timer::SharedTimer) timeouts below
    /// it ([`context::timer`](palisade_core::context::timer)): it wakes the task at the
    /// earliest of its deadline and the instants they ask for, and polls the inner future again
    /// when one of theirs passes.
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    /// A deadline future's call and clock while it runs: one enum with "finished", which
    /// costs no space of its own (it takes a spare value of a field inside), where an `Option`
    /// around the call would cost a word or two.
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            clock: Clock,
        },
        // The output was returned, or the deadline expired.
        Finished,
    }
}

pin_project! {
    /// A deadline future's limit, clock and timer: a started clock is never needed at once
    /// with a timer (the timer knows when to fire, beside the deadline), so they share its
    /// space.
    #[project = ClockProj]
    #[derive(Debug)]
    enum Clock {
        // No timer: `limit` is the time the call is granted, `started` when the clock
        // started, `None` until somebody needed it. A clock started in the call holds them
        // already bounded by an enclosing deadline that ends first (see `DeadlineFuture::new`).
        Idle {
            started: Option<Instant>,
            limit: Duration,
            // The dependency's name, read only when the deadline expires (for the metrics).
            name: Name,
        },
        // The inner future returned `Pending`: the timer runs until the deadline, or until the
        // earliest instant a sharing timeout below asked for, if that comes first. `granted`
        // is the time from the start to the deadline in nanoseconds (the limit, or less under
        // an enclosing deadline that ends first), for `DeadlineExceeded` to report.
        Armed {
            #[pin]
            sleep: Sleep,
            deadline: Instant,
            granted: u64,
            name: Name,
        },
    }
}

impl<F> DeadlineFuture<F> {
    /// `started` is when the clock started if a layer below read the deadline during the
    /// call, `None` otherwise; `limit`, the time granted from then, already cut to an enclosing
    /// deadline that ends first (by `context::with_lazy_deadline`), so that `deadline()`
    /// reports the instant the call fails at before the first poll too, and the time granted
    /// is what `DeadlineExceeded` reports.
    #[inline]
    pub(crate) fn new(inner: F, limit: Duration, started: Option<Instant>, name: Name) -> Self {
        DeadlineFuture {
            state: State::Running {
                inner,
                clock: Clock::Idle {
                    started,
                    limit,
                    name,
                },
            },
        }
    }

    /// The instant this call fails at, once its clock has started (see the type's docs);
    /// `None` before, and once the future has completed.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Running { clock, .. } => clock.deadline(),
            State::Finished => None,
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
        loop {
            let StateProj::Running { inner, mut clock } = this.state.as_mut().project() else {
                deadline_polled_after_completion();
            };
            let waker = cx.waker();
            let (polled, wake) = match clock.as_mut().project() {
                ClockProj::Idle { started, limit, .. } => timer::with_owner(waker, None, || {
                    context::with_lazy_deadline(limit, started, || inner.poll(cx))
                }),
                ClockProj::Armed {
                    sleep, deadline, ..
                } => {
                    // A timer that fired tells the sharers below which instant has passed.
                    let elapsed = sleep.is_elapsed().then(|| sleep.deadline());
                    timer::with_owner(waker, elapsed, || {
                        context::with_deadline(*deadline, || inner.poll(cx))
                    })
                }
            };
            if let Poll::Ready(out) = polled {
                let out = out.map_err(|e| with_granted(e.into(), &clock));
                this.state.set(State::Finished);
                return Poll::Ready(out);
            }
            if let ClockProj::Idle {
                started,
                limit,
                name,
            } = clock.as_mut().project()
            {
                let name = *name;
                let start = *started.get_or_insert_with(Instant::now);
                // An enclosing deadline that ends first bounds this one. On this task the
                // enclosing future's timer would end the call then anyway; across a task
                // boundary (a deadline carried into a spawned task) nothing else would.
                let own = context::deadline_after(start, *limit);
                let (deadline, granted) = match context::deadline() {
                    Some(outer) if outer < own => (outer, outer.saturating_duration_since(start)),
                    _ => (own, *limit),
                };
                clock.set(Clock::Armed {
                    sleep: sleep_until(wake.map_or(deadline, |w| w.min(deadline))),
                    deadline,
                    granted: state::nanos(granted),
                    name,
                });
            }
            let ClockProj::Armed {
                mut sleep,
                deadline,
                granted,
                name,
            } = clock.project()
            else {
                unreachable!("the clock was armed just above");
            };
            let (deadline, at) = (*deadline, wake.map_or(*deadline, |w| w.min(*deadline)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            ready!(sleep.poll(cx));
            if at >= deadline {
                let (granted, name) = (Duration::from_nanos(*granted), *name);
                // Expired: drop the inner future (and whatever it holds) and the timer now.
                this.state.set(State::Finished);
                palisade_core::metrics::timeout_elapsed(name.as_str(), "deadline");
                return Poll::Ready(Err(DeadlineExceeded::with_limit(granted).into()));
            }
            // A sharing timeout's instant passed before the deadline: poll again, so that it
            // fails its attempt (the timer says so through `elapsed`).
        }
    }
}

/// A `DeadlineExceeded` that knows no limit, from a timeout below whose timer saw this
/// deadline pass first (both fired in the same tick), names the time this call was granted.
#[cold]
#[inline(never)]
fn with_granted(err: BoxError, clock: &Clock) -> BoxError {
    if let Clock::Armed {
        deadline, granted, ..
    } = clock
        && err
            .downcast_ref::<DeadlineExceeded>()
            .is_some_and(|e| e.limit().is_none())
        && Instant::now() >= *deadline
    {
        return DeadlineExceeded::with_limit(Duration::from_nanos(*granted)).into();
    }
    err
}

impl Clock {
    /// The deadline, once the clock has started.
    #[inline]
    fn deadline(&self) -> Option<Instant> {
        match self {
            Clock::Idle { started, limit, .. } => {
                started.map(|start| context::deadline_after(start, *limit))
            }
            Clock::Armed { deadline, .. } => Some(*deadline),
        }
    }
}

#[cold]
#[inline(never)]
fn deadline_polled_after_completion() -> ! {
    panic!("`Deadline` response future polled after completion")
}
