//! [`Gate`]: the service that lets calls through to a feature while it is on.

use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use palisade_core::stripe::{Stripe, Striped};
use tower_service::Service;

use super::future::GateFuture;
use super::state::Feature;

/// Lets calls through to a feature while it is on, fails them at once with
/// [`FeatureOff`](super::FeatureOff) while it is off, and counts its failures (those that count
/// against health) to turn it off automatically. Usually used through
/// [`FeatureLayer`](super::FeatureLayer).
///
/// # Panics
/// `Gate` reserves nothing of its own in `poll_ready`. While the feature is on (or off by its
/// failures) it forwards `poll_ready` and `call` to the inner service, whose own contract
/// applies to a `call` without a ready `poll_ready`. While the feature is turned off by hand it
/// answers ready at once without asking the inner service, and the `call` that follows is
/// refused with [`FeatureOff`](super::FeatureOff) even if the feature was turned on in between,
/// so the inner service is never called without its own `poll_ready`. Its response future
/// panics if polled after it completed, as tower's futures do.
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    /// `poll_ready` answered ready for a feature turned off by hand, without the inner service:
    /// the next `call` is refused. Taken by `call`; a clone starts without it.
    refuse: bool,
    /// The feature, striped: each gate instance reads its own stripe and its futures hold that
    /// stripe's reference, so instances on different threads never share a reference count.
    stripes: Arc<Striped<Feature>>,
    feature: Arc<Stripe<Feature>>,
}

impl<S> Gate<S> {
    pub(crate) fn new(inner: S, feature: Feature) -> Self {
        let stripes = Arc::new(Striped::new(feature));
        Gate {
            inner,
            refuse: false,
            feature: stripes.pick().clone(),
            stripes,
        }
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
}

impl<S: Clone> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            inner: self.inner.clone(),
            refuse: false,
            feature: self.stripes.pick().clone(),
            stripes: self.stripes.clone(),
        }
    }
}

impl<S, Req> Service<Req> for Gate<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.refuse = self.feature.is_turned_off();
        if self.refuse {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.refuse) {
            return GateFuture::off(self.feature.name().to_owned());
        }
        match self.feature.admit() {
            Some(ticket) => {
                GateFuture::admitted(self.inner.call(req), self.feature.clone(), ticket)
            }
            None => GateFuture::off(self.feature.name().to_owned()),
        }
    }
}
