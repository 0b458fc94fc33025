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
/// # Readiness
/// `poll_ready` is the inner service's, but a readiness that fails is a failure of the
/// dependency like a call's (tower's `Reconnect` with the connection refused, a `Buffer` whose
/// worker is gone): `Fallback` answers ready and keeps the error, and the `call` that follows
/// does not reach the inner service but fails with that error, handled exactly as if the call
/// had failed with it: its class decides whether the strategy answers (a refused connection,
/// a network fault, is answered by default), and an error not answered comes out of the
/// response future. Polled again before that `call`, `Fallback` stays ready with the error
/// kept; the `poll_ready` after the call asks the inner service again. A clone starts without
/// the error, and a `Fallback` dropped before its call drops it.
///
/// # Panics
/// Apart from a failed readiness, `Fallback` reserves nothing in `poll_ready`: it forwards
/// `poll_ready` and `call` to the inner service, whose own contract applies to a `call` without
/// a ready `poll_ready`. Its response future panics if polled after it completed, as tower's
/// futures do.
pub struct Fallback<S, St> {
    inner: S,
    /// The error the inner service's `poll_ready` failed with, kept for the next `call`,
    /// which fails with it without calling the inner service. A clone starts without it.
    not_ready: Option<BoxError>,
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
            not_ready: None,
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
            not_ready: None,
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

impl<S, St> Fallback<S, St> {
    /// The inner service's readiness failed with `error`: ready, and the next call fails with
    /// it.
    #[cold]
    #[inline(never)]
    fn keep_not_ready(&mut self, error: BoxError) -> Poll<Result<(), BoxError>> {
        tracing::debug!(target: "palisade_fallback", %error, "the service did not get ready: its call fails with the error");
        self.not_ready = Some(error);
        Poll::Ready(Ok(()))
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

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.not_ready.is_some() {
            // Polled again before the call that fails with the error kept: still ready.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => self.keep_not_ready(e.into()),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.strategy.key(&req);
        // The request is cloned only when the strategy will need it.
        let kept = self.strategy.keep_request(&req);
        if let Some(error) = self.not_ready.take() {
            // The inner service did not get ready: the call fails with its error, unsent.
            return ResponseFuture::not_ready(error, self.stripe.clone(), kept, key);
        }
        ResponseFuture::new(self.inner.call(req), self.stripe.clone(), kept, key)
    }
}
