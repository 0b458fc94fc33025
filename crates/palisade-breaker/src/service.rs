//! [`Breaker`]: the service a [`BreakerLayer`](crate::BreakerLayer) makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use palisade_core::BoxError;
use tower_service::Service;

use crate::future::{Guard, ResponseFuture, outcome_of};
use palisade_core::stripe::Stripe;

use crate::handle::{BreakerHandle, Lane, Stripes};
use crate::state::{Refusal, Refused};

/// Guards a service with a circuit breaker; see the [crate docs](crate).
///
/// # Panics
/// `poll_ready` decides whether the next call is admitted and reserves what admitting it takes
/// (a half-open probe slot, held until the call ends; or the refusal the call will return,
/// unless the breaker moves before the call: see the crate docs' *Readiness*). Calling `call`
/// without a `poll_ready` that returned `Ready(Ok(()))` since the previous `call` panics
/// (`` `Breaker::call` without a successful `poll_ready` ``), as tower's own
/// services that reserve capacity in `poll_ready` do; [`ServiceExt::ready`] and `oneshot` do
/// it right. One case is checked with debug assertions only, so that the happy path pays
/// nothing for it: after a `poll_ready` that returned `Pending`, a release build passes the
/// call to the inner service, whose own contract then applies (as tower's
/// `ConcurrencyLimit` does with the permit it reserved). A reservation that no call uses is given back when the service is dropped. The
/// [`ResponseFuture`] panics if polled after it completed, as tower's futures do.
///
/// [`ServiceExt::ready`]: https://docs.rs/tower/latest/tower/trait.ServiceExt.html#method.ready
pub struct Breaker<S> {
    inner: S,
    stripes: Arc<Stripes>,
    /// This instance's stripe (see [`Stripes`]).
    stripe: Arc<Stripe<Lane>>,
    /// What `poll_ready` decided for the next call. An admission holds a [`Guard`], so a
    /// reserved probe slot that no call uses is given back when it is dropped; a refusal is
    /// counted as a rejection only when a call is failed with it.
    slot: Option<Result<Guard, Refused>>,
    /// For a refusal in `slot`: the state word it was decided on (kept apart so that the slot,
    /// moved on every call, stays as small as it was).
    refused_on: u64,
    /// Whether the last `poll_ready` returned `Ready(Ok(()))`: an admission reserved by one that
    /// returned `Pending` (the inner service not ready) is held, but is no permission to call.
    /// Checked with debug assertions only, to keep the happy path as it was (the check cost
    /// the preset 11 instructions a call: 699 to 710).
    #[cfg(debug_assertions)]
    ready: bool,
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
            refused_on: 0,
            #[cfg(debug_assertions)]
            ready: false,
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
    fn decide(&self) -> Result<Guard, Refusal> {
        let shared = &self.stripe.shared;
        let ticket = shared.core.decide(|| shared.now_ms())?;
        Ok(Guard::reserve(self.stripe.clone(), ticket))
    }

    /// Reserves a decision for the next call, in a slot known to be empty.
    #[inline]
    fn reserve(&mut self) -> bool {
        match self.decide() {
            Ok(guard) => {
                // `get_or_insert`: nothing to drop in a slot known to be empty.
                self.slot.get_or_insert(Ok(guard));
                true
            }
            Err(refusal) => {
                self.reserve_refusal(refusal);
                false
            }
        }
    }

    #[cold]
    fn reserve_refusal(&mut self, refusal: Refusal) {
        let (refused, word) = refusal.into_parts();
        self.refused_on = word;
        self.slot = Some(Err(refused));
    }

    /// A refusal reserved by an earlier `poll_ready`, polled again: decided again if the
    /// breaker moved since.
    #[cold]
    #[inline(never)]
    fn recheck(&mut self) {
        let shared = &self.stripe.shared;
        if let Some(Err(refused)) = self.slot.take() {
            let mut refusal = Refusal::from_parts(refused, self.refused_on);
            if shared.core.still_refuses(&mut refusal, || shared.now_ms()) {
                self.reserve_refusal(refusal);
            } else {
                self.reserve();
            }
        }
    }
}

impl<S> Breaker<S> {
    /// Records whether `poll_ready` returned `Ready(Ok(()))` (with debug assertions; nothing
    /// otherwise).
    #[inline(always)]
    fn mark_ready(&mut self, ready: bool) {
        #[cfg(debug_assertions)]
        {
            self.ready = ready;
        }
        #[cfg(not(debug_assertions))]
        let _ = ready;
    }

    /// The inner service is not ready for an admitted call. If the breaker moved since the
    /// admission (an operator isolated it, say), the call is decided again: refused, it is
    /// ready at once, to fail fast instead of waiting for a service it will not call.
    #[cold]
    #[inline(never)]
    fn pending(&mut self) -> Poll<Result<(), BoxError>> {
        if let Some(Ok(guard)) = &self.slot
            && !guard.current()
        {
            // The stale admission goes first: a probe slot it holds is from a period now over.
            self.slot = None;
            if !self.reserve() {
                self.mark_ready(true);
                return Poll::Ready(Ok(()));
            }
        }
        self.mark_ready(false);
        Poll::Pending
    }

    /// Fails a call with a refusal, counted now as a rejection.
    fn reject<F>(&self, refused: Refused) -> ResponseFuture<F> {
        ResponseFuture::rejected(self.stripe.shared.core.reject(refused))
    }

    /// `call` with an admission reserved in a state the breaker has left since (an operator
    /// isolated it, a probe closed it, it tripped): the call is decided again, as it stands
    /// now. The inner service was polled ready, so a new admission calls it.
    #[cold]
    #[inline(never)]
    fn call_moved<Req>(&mut self, req: Req, stale: Guard) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
    {
        // Given back first: a probe slot it holds belongs to a half-open period that is over.
        drop(stale);
        match self.decide() {
            Ok(guard) => ResponseFuture::admitted(self.inner.call(req), guard),
            Err(refusal) => self.reject(refusal.refused),
        }
    }

    /// `call` with a refusal reserved: it stands unless the breaker moved since, in which case
    /// the call is decided again. The inner service was not polled for a refused call, so a
    /// new admission asks it once whether it is ready (without waiting: the caller was told
    /// the call would not wait).
    #[cold]
    #[inline(never)]
    fn call_refused<Req>(&mut self, req: Req, mut refusal: Refusal) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let shared = &self.stripe.shared;
        if shared.core.still_refuses(&mut refusal, || shared.now_ms()) {
            return self.reject(refusal.refused);
        }
        let mut guard = match self.decide() {
            Ok(guard) => guard,
            Err(refusal) => return self.reject(refusal.refused),
        };
        match self
            .inner
            .poll_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => ResponseFuture::admitted(self.inner.call(req), guard),
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                guard.finish(outcome_of(&e));
                ResponseFuture::failed(e)
            }
            Poll::Pending => {
                // The breaker would admit the call now, but the service is not ready for it:
                // it fails with the refusal reserved, to be retried at once (a refusal by an
                // operator who has since closed the breaker no longer stands: it says open).
                drop(guard);
                let mut refused = refusal.refused;
                if refused.state == crate::State::Isolated {
                    refused.state = crate::State::Open;
                }
                refused.retry_after_ms = Some(0);
                self.reject(refused)
            }
        }
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
        match self.slot {
            None => {
                self.reserve();
            }
            Some(Ok(_)) => {}
            // Polled again: a refusal stands only while the breaker has not moved.
            Some(Err(_)) => self.recheck(),
        }
        if matches!(self.slot, Some(Err(_))) {
            // Open: ready at once, and the call fails fast (the `LoadShed` shape).
            self.mark_ready(true);
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.mark_ready(true);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => self.pending(),
            Poll::Ready(Err(e)) => {
                self.mark_ready(false);
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
        // With debug assertions, only after a `poll_ready` that returned `Ready(Ok(()))`: one
        // that returned `Pending` leaves its admission reserved (given back here, as the call
        // panics) but the service not ready.
        #[cfg(debug_assertions)]
        if !std::mem::replace(&mut self.ready, false) {
            self.slot = None;
        }
        let Some(slot) = self.slot.take() else {
            panic!("`Breaker::call` without a successful `poll_ready`: call `poll_ready` first");
        };
        match slot {
            // Admitted, and the breaker has not moved since: the happy path.
            Ok(guard) if guard.current() => ResponseFuture::admitted(self.inner.call(req), guard),
            Ok(guard) => self.call_moved(req, guard),
            Err(refused) => {
                let refusal = Refusal::from_parts(refused, self.refused_on);
                self.call_refused(req, refusal)
            }
        }
    }
}
