//! [`GateFuture`]: a gate call, which reports its outcome to the feature.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::stripe::Stripe;
use palisade_core::{BoxError, Category, Class, class_of};
use pin_project_lite::pin_project;

use super::FeatureOff;
use super::state::{Feature, Ticket};

pin_project! {
    /// The future of a [`Gate`](super::Gate) call.
    pub struct GateFuture<F> {
        #[pin]
        inner: Option<F>,
        // The feature the call was let through to, and how; taken when the outcome is counted.
        admitted: Option<(Arc<Stripe<Feature>>, Ticket)>,
        // A call that ends without the inner service: how. Taken when it ends.
        early: Option<Early>,
    }

    impl<F> PinnedDrop for GateFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A dropped probe frees the probe slot without a verdict (or, past its hold, as
            // failed).
            if let Some((feature, ticket)) = this.admitted.take()
                && ticket.is_probe()
            {
                feature.no_verdict(ticket);
            }
        }
    }
}

/// How a gate call ends without the inner service's future.
enum Early {
    /// Refused: the feature of this name is off.
    Off(String),
    /// Let through, but the inner service did not get ready: failed with this error, counted
    /// as the call's failure.
    NotReady(BoxError),
}

impl<F> GateFuture<F> {
    /// A call let through to the feature (as its probe, if the ticket says so).
    pub(crate) fn admitted(inner: F, feature: Arc<Stripe<Feature>>, ticket: Ticket) -> Self {
        GateFuture {
            inner: Some(inner),
            admitted: Some((feature, ticket)),
            early: None,
        }
    }

    /// A call let through to the feature (as its probe, if the ticket says so) whose service
    /// did not get ready: it fails with `error`, counted as the call's outcome.
    pub(crate) fn not_ready(
        error: BoxError,
        feature: Arc<Stripe<Feature>>,
        ticket: Ticket,
    ) -> Self {
        GateFuture {
            inner: None,
            admitted: Some((feature, ticket)),
            early: Some(Early::NotReady(error)),
        }
    }

    /// A call refused: the feature named `feature` is off.
    pub(crate) fn off(feature: String) -> Self {
        GateFuture {
            inner: None,
            admitted: None,
            early: Some(Early::Off(feature)),
        }
    }
}

impl<F> fmt::Debug for GateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for GateFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = match this.inner.as_mut().as_pin_mut() {
            Some(inner) => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                this.inner.set(None);
                result
            }
            None => match this.early.take() {
                Some(Early::Off(feature)) => {
                    return Poll::Ready(Err(Box::new(FeatureOff { feature })));
                }
                Some(Early::NotReady(error)) => Err(error),
                None => panic!("`Gate` response future polled after completion"),
            },
        };
        if let Some((feature, ticket)) = this.admitted.take() {
            match &result {
                Ok(_) => feature.outcome(None, ticket),
                Err(e) => match class_of(e) {
                    class if class.counts_against_health() => feature.outcome(Some(class), ticket),
                    // An error the classifier accepted as a normal outcome is a success.
                    class if class.category == Category::Ignored => feature.outcome(None, ticket),
                    // A rate limit with a hint: no verdict, but a probe so answered holds
                    // the next probe back for the hint (at most a cool-down).
                    Class {
                        category: Category::RateLimited,
                        retry_after: Some(hint),
                        ..
                    } => feature.paced(ticket, hint),
                    // A rate limit without a hint, a client fault or a cancellation says
                    // neither that the feature works nor that it fails: no verdict, as for a
                    // dropped call (a probe frees its slot, and the next call probes).
                    _ => feature.no_verdict(ticket),
                },
            }
        }
        Poll::Ready(result)
    }
}
