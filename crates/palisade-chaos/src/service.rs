//! [`Chaos`]: the service that injects the faults.

use std::fmt;
use std::mem;
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
/// It is a [`Service`] when `S` is one and is `Clone`: a call a fault holds (a hang, or a
/// failure or response with a wait) keeps the ready inner service and the request, so that
/// [`ChaosHandle::disable`] can still pass it on, and leaves a clone in its place. See the
/// [crate docs](crate) for what happens to a call.
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
    S: Service<Req, Response = Res> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Req, Res>;

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
    fn call_enabled<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, S, Req, Res>
    where
        S: Service<Req, Response = Res> + Clone,
    {
        let (decision, over) = self.config.decide(&self.shared, Instant::now());
        if decision.waits() {
            return self.call_held(decision, over, req);
        }
        decision.record(&self.shared, over);
        match decision {
            Decision::Fail(class, _) => {
                ResponseFuture::injected(Err(Box::new(Injected::new(class))))
            }
            Decision::Respond(response, _) => ResponseFuture::injected(Ok(response)),
            _ => ResponseFuture::passthrough(self.inner.call(req)),
        }
    }

    /// A call that waits before its outcome: a delay, a hang, or an outcome after a wait. Its
    /// future also waits for the switch, so that a disable ends the wait.
    fn call_held<Req>(
        &mut self,
        decision: Decision<Res>,
        over: bool,
        req: Req,
    ) -> ResponseFuture<S::Future, S, Req, Res>
    where
        S: Service<Req, Response = Res> + Clone,
    {
        // Registered before the switch is read again: a disable from now on wakes the call,
        // and one since the decision was made sends it straight through.
        let switched_off = self.shared.switched_off.clone().notified_owned();
        if !self.shared.is_enabled() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        decision.record(&self.shared, over);
        let (wait, outcome) = match decision {
            Decision::Pass => return ResponseFuture::passthrough(self.inner.call(req)),
            // The inner service is called now, as the tower contract asks after `poll_ready`;
            // its future is polled only once the delay is over.
            Decision::Delay(delay) => {
                return ResponseFuture::delayed(delay, switched_off, self.inner.call(req));
            }
            Decision::Fail(class, wait) => (Some(wait), Some(Err(Injected::new(class).into()))),
            Decision::Respond(response, wait) => (Some(wait), Some(Ok(response))),
            Decision::Hang => (None, None),
        };
        // The inner service is not called unless a disable ends the wait: the future takes
        // the ready service (and the readiness `poll_ready` gave it) and leaves a clone.
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        ResponseFuture::held(
            wait,
            switched_off,
            outcome,
            (ready, req),
            self.shared.clone(),
        )
    }
}
