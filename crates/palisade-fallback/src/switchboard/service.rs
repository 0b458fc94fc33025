//! [`Gate`]: the service that lets calls through to a feature while it is on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use palisade_core::stripe::{Stripe, Striped};
use tokio::time::Sleep;
use tower_service::Service;

use super::future::GateFuture;
use super::state::{Feature, ProbeSlot, Readiness, Waiter};

/// Lets calls through to a feature while it is on, fails them at once with
/// [`FeatureOff`](super::FeatureOff) while it is off, and counts its failures (those that count
/// against health) to turn it off automatically. Made by a
/// [`FeatureLayer`](super::FeatureLayer), which puts it below the feature's fallback
/// ([`Fallback<Gate<S>, St>`](crate::Fallback)); it has no constructor of its own.
///
/// # Readiness
/// While the feature is on, `poll_ready` is the inner service's. While it is off (turned off
/// by hand, or off by its failures and cooling down, or with its probe already out), a gate
/// answers ready at once without asking the inner service, and the `call` that follows is
/// refused with [`FeatureOff`](super::FeatureOff) even if the feature was turned on in between,
/// so the inner service is never called without its own `poll_ready`. Like an open breaker,
/// an off feature thus never parks its caller on a dependency that cannot get ready (a full
/// buffer, a pool whose connections are all stuck): the fallback answers at once, and a
/// caller already waiting for the inner service's readiness when the feature goes off (by
/// hand or by its failures) is woken and answered by the fallback too. Once the
/// cool-down of an automatic off is over, the first gate to be polled takes the probe slot
/// and then waits for the inner service's readiness; it keeps the slot for its next `call`
/// (even when that readiness fails: see below), and gives it back if the gate is dropped first
/// (a clone starts without it). The slot is held for at most
/// [`probe_timeout`](super::FeatureConfig::probe_timeout) from then, waiting for readiness
/// and the call together: a probe still out after that is counted as failed and loses the
/// slot, so a probe that never answers, or never gets ready, cannot keep the feature off.
/// Nor does it keep its caller: a gate still waiting for readiness when its slot's hold ends
/// is woken then, lets the slot go, and answers as the feature's state says (ready at once,
/// its call refused, while the failed probe's cool-down runs). A gate polled again after the
/// feature was turned on or off by hand lets its slot go at once and does the same.
///
/// A gate that made the inner service ready while the feature was on, and whose call was then
/// refused because the feature went off in between, keeps that readiness (a concurrency
/// permit, a buffer place) for its next call, as tower's `Filter` does with a call its
/// predicate rejects, or until it is dropped.
///
/// A readiness that fails is a failure of the feature like a call's: the gate answers ready
/// and keeps the error (and the probe slot, if it holds one), and the `call` that follows does
/// not reach the inner service but fails with that error, counted as if the call had failed
/// with it: a failure that counts against health counts towards turning the feature off (a
/// probe failing so starts the cool-down over), and the fallback above answers it. Polled
/// again before that `call`, the gate stays ready with the error kept; the `poll_ready` after
/// the call asks the inner service again. Dropped before the call, the gate gives the probe
/// slot back without a verdict.
///
/// # Panics
/// A `call` without a ready `poll_ready` follows the inner service's own contract while the
/// feature is on. The response future panics if polled after it completed, as tower's
/// futures do.
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    /// `poll_ready` answered ready for a feature that is off, without the inner service: the
    /// next `call` is refused. Taken by `call`; a clone starts without it.
    refuse: bool,
    /// The error the inner service's `poll_ready` failed with: the next `call` fails with it,
    /// counted as the call's failure, without calling the inner service. Taken by `call`; a
    /// clone starts without it.
    not_ready: Option<BoxError>,
    /// The probe slot `poll_ready` took for the next `call`. Taken by `call`, given back when
    /// dropped; a clone starts without it.
    probe: Option<ProbeSlot>,
    /// Wakes a gate that waits for the inner service's readiness with the probe slot when the
    /// slot's hold ends. Made once per probe that has to wait (never while the feature is
    /// on); a clone starts without it.
    probe_ends: Option<Pin<Box<Sleep>>>,
    /// Where a switch off finds this gate's waker while it waits for the inner service's
    /// readiness (with the feature on, or as its probe). Made on its first such wait; a clone
    /// starts without it.
    waiter: Option<Arc<Waiter>>,
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
            not_ready: None,
            probe: None,
            probe_ends: None,
            waiter: None,
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
            not_ready: None,
            probe: None,
            probe_ends: None,
            waiter: None,
            feature: self.stripes.pick().clone(),
            stripes: self.stripes.clone(),
        }
    }
}

impl<S> Gate<S> {
    /// Lets the probe slot go (given back, or counted as a failed probe if its hold is over)
    /// with the timer for its end.
    #[cold]
    #[inline(never)]
    fn let_probe_go(&mut self) {
        self.probe = None;
        self.probe_ends = None;
    }

    /// Waits for the end of the probe slot's hold, arming the timer the first time.
    #[cold]
    #[inline(never)]
    fn poll_probe_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.probe_ends.is_none() {
            let Some(end) = self.probe.as_ref().and_then(ProbeSlot::ends_at) else {
                return Poll::Pending;
            };
            self.probe_ends = Some(Box::pin(tokio::time::sleep_until(end)));
        }
        match &mut self.probe_ends {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The inner service's readiness failed with `error`: ready, and the next call fails with
    /// it.
    #[cold]
    #[inline(never)]
    fn keep_not_ready(&mut self, error: BoxError) -> Poll<Result<(), BoxError>> {
        tracing::debug!(target: "palisade_fallback", feature = %self.feature.name(), %error, "the feature's service did not get ready: its call fails with the error");
        self.not_ready = Some(error);
        Poll::Ready(Ok(()))
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
        if self.not_ready.is_some() {
            // Polled again before the call that fails with the error kept: still ready.
            return Poll::Ready(Ok(()));
        }
        loop {
            // A probe slot taken by an earlier poll that found the inner service not ready is
            // kept until the call, while it is still the probe's: once its hold is over, or
            // the feature was turned on or off by hand, it is let go (a hold that is over
            // counted as a failed probe) and the feature's state is read again.
            if self.probe.as_ref().is_some_and(|slot| !slot.is_current()) {
                self.let_probe_go();
            }
            if self.probe.is_none() {
                match self.feature.readiness() {
                    Readiness::Forward => self.refuse = false,
                    Readiness::Refuse => {
                        self.refuse = true;
                        return Poll::Ready(Ok(()));
                    }
                    Readiness::Probe(slot) => {
                        self.refuse = false;
                        self.probe = Some(slot);
                    }
                }
            }
            return match self.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                // The probe slot, if held, is kept for the call, whose failure is the probe's.
                Poll::Ready(Err(e)) => self.keep_not_ready(e.into()),
                Poll::Pending if self.probe.is_some() => {
                    if self.poll_probe_end(cx).is_ready() {
                        // The hold is over: the slot is let go (a failed probe), and the
                        // state read again.
                        self.let_probe_go();
                        continue;
                    }
                    // A switch off by hand wakes this caller too, whose next poll lets the
                    // slot go and is refused.
                    self.feature.waiting(&mut self.waiter, cx.waker());
                    if self.probe.as_ref().is_some_and(|slot| !slot.is_current()) {
                        // Turned on or off meanwhile (before the waker was left): read the
                        // state again.
                        continue;
                    }
                    Poll::Pending
                }
                Poll::Pending => {
                    // On, and waiting for the inner service: a switch off wakes this caller,
                    // whose next poll is refused and answered by the fallback.
                    self.feature.waiting(&mut self.waiter, cx.waker());
                    if !self.feature.is_on() {
                        // Off meanwhile (before the waker was left): read the state again.
                        continue;
                    }
                    Poll::Pending
                }
            };
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.probe_ends = None;
        if std::mem::take(&mut self.refuse) {
            return GateFuture::off(self.feature.name().to_owned());
        }
        let ticket = match self.probe.take() {
            Some(slot) => self.feature.admit_claimed(slot),
            None => self.feature.admit(),
        };
        match (ticket, self.not_ready.take()) {
            (Some(ticket), None) => {
                GateFuture::admitted(self.inner.call(req), self.feature.clone(), ticket)
            }
            // Admitted, but the inner service did not get ready: the call fails with its
            // error, unsent, and the failure is counted as the call's.
            (Some(ticket), Some(error)) => {
                GateFuture::not_ready(error, self.feature.clone(), ticket)
            }
            (None, _) => GateFuture::off(self.feature.name().to_owned()),
        }
    }
}
