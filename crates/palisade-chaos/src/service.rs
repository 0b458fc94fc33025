//! [`Chaos`]: the service that injects the faults.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tokio::time::Instant;
use tower_service::Service;

use crate::ChaosLayer;
use crate::error::Injected;
use crate::future::ResponseFuture;
use crate::handle::{ChaosHandle, Shared};
use crate::layer::{Config, Decision};

/// Injects the faults of a [`ChaosLayer`] into the calls of `S`.
///
/// See the [crate docs](crate) for what happens to a call.
pub struct Chaos<S, Res> {
    inner: S,
    config: Arc<Config<Res>>,
    shared: Arc<Shared>,
}

impl<S, Res> Chaos<S, Res> {
    /// Wraps `inner` with the faults of `layer`, sharing its state.
    pub fn new(inner: S, layer: ChaosLayer<Res>) -> Self {
        Chaos {
            inner,
            config: layer.config,
            shared: layer.shared,
        }
    }

    /// The handle that switches injection and reads the counters.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
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

impl<S: Clone, Res> Clone for Chaos<S, Res> {
    fn clone(&self) -> Self {
        Chaos {
            inner: self.inner.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, Res> fmt::Debug for Chaos<S, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("enabled", &self.shared.is_enabled())
            .finish()
    }
}

impl<S, Req, Res> Service<Req> for Chaos<S, Res>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Res>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // Disabled: one relaxed load and the inner call, small enough to inline into the
        // caller; the decision is kept out of line so it does not stand in the way.
        if !self.shared.is_enabled() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        self.call_enabled(req)
    }
}

impl<S, Res> Chaos<S, Res> {
    /// A call while injection is on: decide its fate, then call the inner service or not.
    #[inline(never)]
    fn call_enabled<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, Res>
    where
        S: Service<Req, Response = Res>,
    {
        let since = Instant::now().saturating_duration_since(self.config.epoch);
        match self.config.decide(&self.shared, since) {
            Decision::Pass => ResponseFuture::passthrough(self.inner.call(req)),
            // The inner service is called now, as the tower contract asks after `poll_ready`;
            // its future is polled only once the delay has elapsed.
            Decision::Delay(delay) => ResponseFuture::delayed(delay, self.inner.call(req)),
            Decision::Fail(class, wait) => {
                ResponseFuture::injected(wait, Err(Box::new(Injected::new(class))))
            }
            Decision::Respond(response, wait) => ResponseFuture::injected(wait, Ok(response)),
            Decision::Hang => ResponseFuture::hang(),
        }
    }
}
