//! [`Breaker`]: the service a [`BreakerLayer`](crate::BreakerLayer) makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use tower_service::Service;

use crate::future::{Guard, ResponseFuture, outcome_of};
use palisade_core::stripe::Stripe;

use crate::handle::{BreakerHandle, Lane, Stripes};
use crate::state::Refused;

/// Guards a service with a circuit breaker; see the [crate docs](crate).
///
/// # Panics
/// `poll_ready` decides whether the next call is admitted and reserves what admitting it takes
/// (a half-open probe slot, held until the call ends; or the refusal the call will return).
/// Calling `call` without a `poll_ready` that returned `Ready(Ok(()))` since the previous
/// `call` panics (`` `Breaker::call` without a successful `poll_ready` ``), as tower's own
/// services that reserve capacity in `poll_ready` do; [`ServiceExt::ready`] and `oneshot` do
/// it right. A reservation that no call uses is given back when the service is dropped. The
/// [`ResponseFuture`] panics if polled after it completed, as tower's futures do.
///
/// [`ServiceExt::ready`]: https://docs.rs/tower/latest/tower/trait.ServiceExt.html#method.ready
pub struct Breaker<S> {
    inner: S,
    stripes: Arc<Stripes>,
    /// This instance's stripe (see [`Stripes`]).
    stripe: Arc<Stripe<Lane>>,
    /// What `poll_ready` decided for the next call. An admission holds a [`Guard`], so a
    /// reserved probe slot that no call uses is given back when it is dropped.
    slot: Option<Result<Guard, Refused>>,
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        // A reservation (a probe slot, perhaps) belongs to the instance that made it.
        Breaker::from_stripes(self.inner.clone(), self.stripes.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.stripes.get().shared.core)
            .finish()
    }
}

impl<S> Breaker<S> {
    pub(crate) fn from_stripes(inner: S, stripes: Arc<Stripes>) -> Self {
        Breaker {
            inner,
            stripe: stripes.pick().clone(),
            stripes,
            slot: None,
        }
    }

    /// The handle for manual control and metrics.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            stripes: self.stripes.clone(),
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

    /// Unwraps the inner service (giving back anything `poll_ready` reserved).
    pub fn into_inner(self) -> S {
        self.inner
    }

    #[inline]
    fn decide(&self) -> Result<Guard, Refused> {
        let shared = &self.stripe.shared;
        let ticket = shared.core.admit(|| shared.now_ms())?;
        Ok(Guard::reserve(self.stripe.clone(), ticket))
    }
}

impl<S, Req> Service<Req> for Breaker<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.slot.is_none() {
            // `get_or_insert`: nothing to drop in a slot known to be empty.
            let decision = self.decide();
            self.slot.get_or_insert(decision);
        }
        if matches!(self.slot, Some(Err(_))) {
            // Open: ready at once, and the call fails fast (the `LoadShed` shape).
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                if let Some(Ok(mut guard)) = self.slot.take() {
                    guard.finish(outcome_of(&e));
                }
                Poll::Ready(Err(e))
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let Some(slot) = self.slot.take() else {
            panic!("`Breaker::call` without a successful `poll_ready`: call `poll_ready` first");
        };
        match slot {
            Ok(guard) => ResponseFuture::admitted(self.inner.call(req), guard),
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
