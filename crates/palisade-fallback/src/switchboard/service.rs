//! [`Gate`]: the service that lets calls through to a feature while it is on.

use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_classify::BoxError;
use palisade_classify::stripe::{Stripe, Striped};
use tower_service::Service;

use super::future::GateFuture;
use super::state::{Admit, Feature};

/// Lets calls through to a feature while it is on, fails them at once with
/// [`FeatureOff`](super::FeatureOff) while it is off, and counts its failures (those that count
/// against health) to turn it off automatically. Usually used through
/// [`FeatureLayer`](super::FeatureLayer).
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
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
            feature: stripes.pick().clone(),
            stripes,
        }
    }
}

impl<S: Clone> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            inner: self.inner.clone(),
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
        if self.feature.is_turned_off() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.feature.admit() {
            Admit::No => GateFuture::off(self.feature.name().to_owned()),
            admit => GateFuture::admitted(
                self.inner.call(req),
                self.feature.clone(),
                admit == Admit::Probe,
            ),
        }
    }
}
