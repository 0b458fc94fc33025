//! [`Fallback`]: the service a [`FallbackLayer`](crate::FallbackLayer) makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower_service::Service;

use crate::future::ResponseFuture;
use palisade_core::stripe::{Stripe, Striped};

use crate::layer::Config;
use crate::{Answer, FallbackLayer, Strategy};

/// Answers the inner service's failures with a [`Strategy`].
///
/// # Panics
/// `Fallback` reserves nothing in `poll_ready`: it forwards `poll_ready` and `call` to the inner
/// service, whose own contract applies to a `call` without a ready `poll_ready`. Its response
/// future panics if polled after it completed, as tower's futures do.
pub struct Fallback<S, St> {
    inner: S,
    /// Read by `call` (the key and whether to keep the request).
    strategy: Arc<St>,
    /// What the response futures hold: their thread's stripe.
    config: Arc<Striped<Arc<Config<St>>>>,
    stripe: Arc<Stripe<Arc<Config<St>>>>,
}

impl<S: Clone, St> Clone for Fallback<S, St> {
    fn clone(&self) -> Self {
        Fallback {
            inner: self.inner.clone(),
            strategy: self.strategy.clone(),
            stripe: self.config.pick().clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for Fallback<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<S, St> Fallback<S, St> {
    pub(crate) fn from_layer(inner: S, layer: &FallbackLayer<St>) -> Self {
        let config = Arc::new(Striped::new(Arc::new(layer.config.clone())));
        Fallback {
            inner,
            strategy: layer.config.strategy.clone(),
            stripe: config.pick().clone(),
            config,
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

impl<S, St, Req> Service<Req> for Fallback<S, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    St: Strategy<Req, S::Response>,
{
    type Response = Answer<S::Response>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, St, Req, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A service that cannot get ready is a failure no fallback answers here: the caller
        // may compose a load shedder below to turn it into a call failure.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.strategy.key(&req);
        // The request is cloned only when the strategy will need it.
        let kept = self.strategy.keep_request(&req);
        ResponseFuture::new(self.inner.call(req), self.stripe.clone(), kept, key)
    }
}
