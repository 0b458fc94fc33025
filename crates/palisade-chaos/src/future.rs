//! The [`ResponseFuture`] of a [`Chaos`](crate::Chaos) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};

pin_project! {
    /// The future of a [`Chaos`](crate::Chaos) call: the inner service's future, possibly after
    /// a delay, an injected outcome, or a hang.
    pub struct ResponseFuture<F, Res> {
        #[pin]
        state: State<F, Res>,
    }
}

// Everything but the passthrough is boxed: a `Sleep` is larger than most response futures,
// and the passthrough is what a disabled layer, or a call no fault hits, pays for. Boxed, the
// other states keep the future of a call the layer lets through at 8 bytes over the inner
// future's, and its drop to "drop the inner future or the box": small enough for the caller
// to inline. A call injected upon allocates once.
pin_project! {
    #[project = StateProj]
    enum State<F, Res> {
        /// No fault: the inner future.
        Passthrough {
            #[pin]
            inner: F,
        },
        /// A fault: added latency, an injected outcome or a hang.
        Faulted {
            fault: Pin<Box<Faulted<F, Res>>>,
        },
    }
}

pin_project! {
    #[project = FaultedProj]
    enum Faulted<F, Res> {
        /// Added latency: the inner future, polled once the sleep has elapsed.
        Delayed {
            #[pin]
            sleep: Sleep,
            #[pin]
            inner: F,
        },
        /// An injected outcome after a wait.
        InjectedAfter {
            #[pin]
            sleep: Sleep,
            outcome: Option<Result<Res, BoxError>>,
        },
        /// An injected outcome at once.
        Injected {
            outcome: Option<Result<Res, BoxError>>,
        },
        /// Never ready.
        Hang,
    }
}

impl<F, Res> ResponseFuture<F, Res> {
    #[inline]
    pub(crate) fn passthrough(inner: F) -> Self {
        ResponseFuture {
            state: State::Passthrough { inner },
        }
    }

    fn faulted(fault: Faulted<F, Res>) -> Self {
        ResponseFuture {
            state: State::Faulted {
                fault: Box::pin(fault),
            },
        }
    }

    pub(crate) fn delayed(delay: Duration, inner: F) -> Self {
        Self::faulted(Faulted::Delayed {
            sleep: sleep(delay),
            inner,
        })
    }

    pub(crate) fn injected(wait: Duration, outcome: Result<Res, BoxError>) -> Self {
        let outcome = Some(outcome);
        Self::faulted(if wait.is_zero() {
            Faulted::Injected { outcome }
        } else {
            Faulted::InjectedAfter {
                sleep: sleep(wait),
                outcome,
            }
        })
    }

    pub(crate) fn hang() -> Self {
        Self::faulted(Faulted::Hang)
    }
}

impl<F, Res> fmt::Debug for ResponseFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "Passthrough",
            State::Faulted { fault } => match fault.as_ref().get_ref() {
                Faulted::Delayed { .. } => "Delayed",
                Faulted::InjectedAfter { .. } | Faulted::Injected { .. } => "Injected",
                Faulted::Hang => "Hang",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Faulted { fault } => poll_faulted(fault.as_mut(), cx),
        }
    }
}

/// Polls a call the layer injected upon; out of line, to stay out of the passthrough's way.
#[inline(never)]
fn poll_faulted<F, Res, E>(
    fault: Pin<&mut Faulted<F, Res>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Res, BoxError>>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    let outcome = match fault.project() {
        FaultedProj::Delayed { sleep, inner } => {
            // A finished `Sleep` stays ready, so polling it again after it fired is cheap.
            ready!(sleep.poll(cx));
            return inner.poll(cx).map_err(Into::into);
        }
        FaultedProj::InjectedAfter { sleep, outcome } => {
            ready!(sleep.poll(cx));
            outcome
        }
        FaultedProj::Injected { outcome } => outcome,
        // Deliberately pending forever with no waker registered: nothing will ever wake
        // it, and holding no timer lets a paused test clock advance to the caller's timeout.
        FaultedProj::Hang => return Poll::Pending,
    };
    Poll::Ready(
        outcome
            .take()
            .unwrap_or_else(|| Err("chaos future polled after completion".into())),
    )
}
