//! The breaker's [`ResponseFuture`], and the guard an admitted call holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::failure::DeadlineExceeded;
use palisade_core::{BoxError, class_of};
use pin_project_lite::pin_project;

use crate::CancelPolicy;
use crate::error::CircuitOpen;
use palisade_core::stripe::Stripe;

use crate::handle::Lane;
use crate::state::{Outcome, Refused, Ticket};

/// `Guard::started` before the call starts: admitted by `poll_ready`, not called yet.
const RESERVED: u64 = u64::MAX;
/// `Guard::started` once the outcome is recorded.
const DONE: u64 = u64::MAX - 1;
/// `Guard::started` for a call started while no rule read durations: the clock was not read.
const UNTIMED: u64 = u64::MAX - 2;

/// An admitted call's claim on its breaker, from `poll_ready` until its outcome is recorded.
///
/// Whatever happens to it, the breaker hears of it exactly once: [`finish`](Guard::finish)
/// records the outcome; dropped before that, a reservation that was never called gives its
/// probe slot back, and a started call is a cancellation, judged by the [`CancelPolicy`].
#[derive(Debug)]
pub(crate) struct Guard {
    stripe: Arc<Stripe<Lane>>,
    ticket: Ticket,
    /// [`RESERVED`], [`DONE`], [`UNTIMED`] (started while no rule read durations, so the
    /// clock was not read), or when the call started in nanoseconds since the breaker's origin
    /// (always below the sentinels).
    started: u64,
}

impl Guard {
    #[inline]
    pub(crate) fn reserve(stripe: Arc<Stripe<Lane>>, ticket: Ticket) -> Guard {
        Guard {
            stripe,
            ticket,
            started: RESERVED,
        }
    }

    /// Whether the breaker is still in the state that admitted this call (see
    /// [`Core::admitted_as`](crate::state::Core::admitted_as)).
    #[inline]
    pub(crate) fn current(&self) -> bool {
        self.stripe.shared.core.admitted_as(self.ticket)
    }

    /// The call starts now.
    #[inline]
    pub(crate) fn start(&mut self) {
        let shared = &self.stripe.shared;
        self.started = if shared.core.timed() || self.ticket.probe() {
            shared.now_ns()
        } else {
            UNTIMED
        };
    }

    /// How long the call has run, when its start was timed (durations were read then, or it
    /// is a probe); `None` otherwise, so a rule added by a reconfiguration while the call ran
    /// does not judge it by a start it never read. Never asked once [`DONE`] (`finish` returns
    /// first).
    fn elapsed(&self) -> Option<Duration> {
        (self.started < UNTIMED)
            .then(|| Duration::from_nanos(self.stripe.shared.now_ns().saturating_sub(self.started)))
    }

    /// A probe that ran for the probe timeout or longer failed, however it ended.
    #[cold]
    #[inline(never)]
    fn probe_outcome(&self, outcome: Outcome) -> Outcome {
        let limit = self.stripe.shared.core.live().cfg.probe_timeout;
        match outcome {
            Outcome::Success | Outcome::Neutral if self.elapsed().is_some_and(|d| d >= limit) => {
                Outcome::Failure(None)
            }
            outcome => outcome,
        }
    }

    /// Whether the outcome is recorded.
    #[inline]
    pub(crate) fn finished(&self) -> bool {
        self.started == DONE
    }

    /// Records how the call ended; later calls and the drop do nothing. Always inlined: it is
    /// every call's last step.
    #[inline(always)]
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.started == DONE {
            return;
        }
        let outcome = if self.ticket.probe() {
            self.probe_outcome(outcome)
        } else {
            outcome
        };
        let shared = &self.stripe.shared;
        let slow = match shared.core.slow_call_duration() {
            Some(limit) => self.elapsed().is_some_and(|d| d >= limit),
            None => false,
        };
        self.started = DONE;
        shared
            .core
            .record(self.ticket, outcome, slow, self.stripe.index, || {
                shared.now_ms()
            });
    }
}

impl Drop for Guard {
    /// Inlined: a finished call's guard (every completed call's) has nothing left to do.
    #[inline]
    fn drop(&mut self) {
        if self.started != DONE {
            self.unfinished();
        }
    }
}

impl Guard {
    /// Dropped before [`finish`](Guard::finish): a reservation never called, or a cancellation;
    /// or a call that ended with the caller's deadline from a layer below (`DeadlineExceeded`),
    /// judged as the cancellation it stands for.
    #[cold]
    #[inline(never)]
    fn unfinished(&mut self) {
        let outcome = match self.started {
            // Never called: a probe gives its slot back; nothing else was taken.
            RESERVED if !self.ticket.probe() => return,
            RESERVED => Outcome::Neutral,
            _ => match self.stripe.shared.core.live().cfg.cancel {
                CancelPolicy::Ignore => Outcome::Neutral,
                CancelPolicy::Failure => Outcome::Failure(None),
                CancelPolicy::FailureAfter(d) => {
                    if self.elapsed().is_some_and(|e| e >= d) {
                        Outcome::Failure(None)
                    } else {
                        Outcome::Neutral
                    }
                }
            },
        };
        self.finish(outcome);
    }
}

#[cold]
#[inline(never)]
fn polled_after_completion() -> ! {
    panic!("`Breaker` response future polled after completion")
}

/// What a failed call means to the breaker: only what counts against health is a failure.
pub(crate) fn outcome_of(error: &BoxError) -> Outcome {
    let class = class_of(error);
    if class.counts_against_health() {
        Outcome::Failure(class.retry_after)
    } else {
        Outcome::Neutral
    }
}

pin_project! {
    /// The future of a [`Breaker`](crate::Breaker) or
    /// [`KeyedBreaker`](crate::KeyedBreaker) call.
    ///
    /// # Panics
    /// When polled after it completed, as tower's futures do.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Admitted {
            #[pin]
            inner: F,
            // Dropped with the future if the call never ends: a cancellation.
            guard: Guard,
        },
        Rejected {
            // Taken when the future completes, so the error gets the breaker's name by move.
            // (Or the inner service's readiness error, for a call decided again at `call`: in
            // this variant rather than one of its own, so that the happy path's matches keep
            // the arms they had.)
            refused: Option<Result<Refused, BoxError>>,
        },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn admitted(inner: F, mut guard: Guard) -> Self {
        guard.start();
        ResponseFuture {
            kind: Kind::Admitted { inner, guard },
        }
    }

    pub(crate) fn rejected(refused: Refused) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                refused: Some(Ok(refused)),
            },
        }
    }
}

impl<F> ResponseFuture<F> {
    /// Fails with the inner service's error (its `poll_ready` failed for a call admitted at
    /// `call`; see `Breaker::call`).
    #[cold]
    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                refused: Some(Err(error)),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let result = match kind.as_mut().project() {
            KindProj::Admitted { inner, guard } => {
                if guard.finished() {
                    polled_after_completion();
                }
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                match &result {
                    Ok(_) => guard.finish(Outcome::Success),
                    // The caller's deadline ran out below: a timeout that saw it end first
                    // fails the call as the deadline above would have dropped it. The caller's
                    // time is spent, which says nothing of the dependency: a cancellation,
                    // judged by the cancel policy as the deadline's drop would have been.
                    Err(e) if e.is::<DeadlineExceeded>() => guard.unfinished(),
                    Err(e) => guard.finish(outcome_of(e)),
                }
                // The inner future stays until this one is dropped (as tower's futures keep
                // theirs): dropping it here would cost a second pass over it. The finished
                // guard marks the output returned.
                return Poll::Ready(result);
            }
            KindProj::Rejected { refused } => {
                match refused
                    .take()
                    .expect("a rejection is taken once, then Done")
                {
                    Ok(refused) => Err(Box::new(CircuitOpen::new(
                        refused.breaker,
                        refused.state,
                        refused.retry_after_ms.map(Duration::from_millis),
                    )) as BoxError),
                    Err(error) => Err(error),
                }
            }
            KindProj::Done => polled_after_completion(),
        };
        kind.set(Kind::Done);
        Poll::Ready(result)
    }
}
