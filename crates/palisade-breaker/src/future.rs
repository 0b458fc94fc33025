//! The breaker's [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::{BoxError, class_of};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::CancelPolicy;
use crate::error::CircuitOpen;
use crate::handle::Stripe;
use crate::state::{Outcome, Refused, Ticket};

pin_project! {
    /// The future of a [`Breaker`](crate::Breaker) call.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        // Present until the outcome is recorded; on drop before that, the cancel policy
        // decides what the call meant.
        guard: Option<Guard>,
        rejected: Option<CircuitOpen>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(guard) = this.project().guard.take() {
                guard.cancelled();
            }
        }
    }
}

#[derive(Debug)]
struct Guard {
    stripe: Arc<Stripe>,
    ticket: Ticket,
    /// When the call started, read only when a rule needs durations.
    started: Option<Instant>,
}

impl Guard {
    #[inline]
    fn finish(self, outcome: Outcome) {
        let shared = &self.stripe.shared;
        let slow = match (shared.core.cfg.slow_call_duration, self.started) {
            (Some(limit), Some(started)) => started.elapsed() >= limit,
            _ => false,
        };
        shared
            .core
            .record(self.ticket, outcome, slow, self.stripe.index, || {
                shared.now_ms()
            });
    }

    fn cancelled(self) {
        let outcome = match self.stripe.shared.core.cfg.cancel {
            CancelPolicy::Ignore => Outcome::Neutral,
            CancelPolicy::Failure => Outcome::Failure(None),
            CancelPolicy::FailureAfter(d) => {
                if self.started.is_some_and(|s| s.elapsed() >= d) {
                    Outcome::Failure(None)
                } else {
                    Outcome::Neutral
                }
            }
        };
        self.finish(outcome);
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, stripe: Arc<Stripe>, ticket: Ticket) -> Self {
        let cfg = &stripe.shared.core.cfg;
        let timed =
            cfg.slow_call_duration.is_some() || matches!(cfg.cancel, CancelPolicy::FailureAfter(_));
        ResponseFuture {
            inner: Some(inner),
            guard: Some(Guard {
                started: timed.then(Instant::now),
                stripe,
                ticket,
            }),
            rejected: None,
        }
    }

    pub(crate) fn rejected(refused: Refused) -> Self {
        ResponseFuture {
            inner: None,
            guard: None,
            rejected: Some(CircuitOpen {
                retry_after: refused.retry_after_ms.map(Duration::from_millis),
                state: refused.state,
            }),
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
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(match this.rejected.take() {
                Some(open) => Box::new(open),
                None => "breaker future polled after completion".into(),
            }));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        this.inner.set(None);
        if let Some(guard) = this.guard.take() {
            let outcome = match &result {
                Ok(_) => Outcome::Success,
                Err(e) => {
                    let class = class_of(e);
                    if class.counts_against_health() {
                        Outcome::Failure(class.retry_after)
                    } else {
                        Outcome::Neutral
                    }
                }
            };
            guard.finish(outcome);
        }
        Poll::Ready(result)
    }
}
