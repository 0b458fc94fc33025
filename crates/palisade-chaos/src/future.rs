//! The [`ResponseFuture`] of a [`Chaos`](crate::Chaos) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::BoxError;
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

// The timers are boxed: a `Sleep` is larger than most response futures, and only an injected
// fault waits, so boxing keeps the future of a call the layer lets through at 16 bytes over
// the inner future's (40 B instead of 128 B around a 24 B one) and allocates only when a fault
// adds latency.
pin_project! {
    #[project = StateProj]
    enum State<F, Res> {
        /// No fault: the inner future.
        Passthrough {
            #[pin]
            inner: F,
        },
        /// Added latency: the inner future, polled once the sleep has elapsed.
        Delayed {
            sleep: Pin<Box<Sleep>>,
            #[pin]
            inner: F,
        },
        /// An injected outcome, after an optional wait.
        Injected {
            sleep: Option<Pin<Box<Sleep>>>,
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

    pub(crate) fn delayed(delay: Duration, inner: F) -> Self {
        ResponseFuture {
            state: State::Delayed {
                sleep: Box::pin(sleep(delay)),
                inner,
            },
        }
    }

    pub(crate) fn injected(wait: Duration, outcome: Result<Res, BoxError>) -> Self {
        ResponseFuture {
            state: State::Injected {
                sleep: (!wait.is_zero()).then(|| Box::pin(sleep(wait))),
                outcome: Some(outcome),
            },
        }
    }

    pub(crate) fn hang() -> Self {
        ResponseFuture { state: State::Hang }
    }
}

impl<F, Res> fmt::Debug for ResponseFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "Passthrough",
            State::Delayed { .. } => "Delayed",
            State::Injected { .. } => "Injected",
            State::Hang => "Hang",
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Delayed { sleep, inner } => {
                // A finished `Sleep` stays ready, so polling it again after it fired is cheap.
                ready!(sleep.as_mut().poll(cx));
                inner.poll(cx).map_err(Into::into)
            }
            StateProj::Injected { sleep, outcome } => {
                if let Some(sleep) = sleep {
                    ready!(sleep.as_mut().poll(cx));
                }
                Poll::Ready(
                    outcome
                        .take()
                        .unwrap_or_else(|| Err("chaos future polled after completion".into())),
                )
            }
            // Deliberately pending forever with no waker registered: nothing will ever wake
            // it, and holding no timer lets a paused test clock advance to the caller's timeout.
            StateProj::Hang => Poll::Pending,
        }
    }
}
