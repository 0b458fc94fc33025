//! [`ClassifyService`]: the service the [`ClassifyLayer`](crate::ClassifyLayer) builds.

use std::task::{Context, Poll};

use tower_service::Service;

use crate::future::ResponseFuture;
use crate::{BoxError, Classify};

/// Classifies every outcome of `S` once, at the source.
///
/// Successful responses pass through untouched. A failing `Ok` response becomes a
/// [`FailedResponse`](crate::FailedResponse) error, and every error becomes a
/// [`Classified`](crate::Classified) error, so the layers above read the class with
/// [`class_of`](crate::class_of) instead of classifying again.
///
/// The service is named `ClassifyService` because [`Classify`] is the strategy trait.
///
/// # Panics
/// `ClassifyService` reserves nothing in `poll_ready`: it forwards `poll_ready` and `call` to
/// the inner service, whose own contract applies to a `call` without a ready `poll_ready`, and
/// its response future forwards polls after completion to the inner future (which panics if
/// it is an `async` block, as most are).
#[derive(Clone, Debug)]
pub struct ClassifyService<S, C> {
    inner: S,
    classifier: C,
}

impl<S, C> ClassifyService<S, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, classifier: C) -> Self {
        ClassifyService { inner, classifier }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }
}

impl<S, C, Req> Service<Req> for ClassifyService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An error from poll_ready is classified too, so the layers above see its class.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(
                crate::future::apply::<S::Response, C>(&self.classifier, Err(e.into())).map(drop),
            ),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.classifier.clone())
    }
}
