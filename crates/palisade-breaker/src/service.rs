//! [`Breaker`]: the service a [`BreakerLayer`](crate::BreakerLayer) makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_classify::{BoxError, class_of};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::{BreakerHandle, Stripes};
use crate::state::{Outcome, Refused, Ticket};

/// A decision `poll_ready` made for the next call. A reserved probe slot that no call uses is
/// given back when this is dropped.
struct Reserved {
    decision: Result<Ticket, Refused>,
    /// Only a probe's reservation needs to give something back: the closed happy path clones
    /// nothing.
    stripes: Option<Arc<Stripes>>,
}

impl Reserved {
    #[inline]
    fn take(mut self) -> Result<Ticket, Refused> {
        let decision = self.decision;
        // Disarm: the call now owns the ticket.
        self.decision = Err(Refused {
            state: crate::State::Closed,
            retry_after_ms: None,
        });
        decision
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let (Ok(ticket), Some(stripes)) = (self.decision, &self.stripes)
            && ticket.probe
        {
            let shared = stripes.shared();
            shared
                .core
                .record(ticket, Outcome::Neutral, false, 0, || shared.now_ms());
        }
    }
}

/// Guards a service with a circuit breaker; see the [crate docs](crate).
pub struct Breaker<S> {
    inner: S,
    stripes: Arc<Stripes>,
    reserved: Option<Reserved>,
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        // A reservation (a probe slot, perhaps) belongs to the instance that made it.
        Breaker {
            inner: self.inner.clone(),
            stripes: self.stripes.clone(),
            reserved: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.stripes.shared().core)
            .finish()
    }
}

impl<S> Breaker<S> {
    pub(crate) fn from_stripes(inner: S, stripes: Arc<Stripes>) -> Self {
        Breaker {
            inner,
            stripes,
            reserved: None,
        }
    }

    /// The handle for manual control and metrics.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.stripes.shared().clone(),
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
    fn decide(&self) -> Reserved {
        let shared = self.stripes.shared();
        let decision = shared.core.admit(|| shared.now_ms());
        let probe = matches!(decision, Ok(Ticket { probe: true, .. }));
        Reserved {
            decision,
            stripes: probe.then(|| self.stripes.clone()),
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.reserved.is_none() {
            self.reserved = Some(self.decide());
        }
        let admitted = matches!(
            self.reserved,
            Some(Reserved {
                decision: Ok(_),
                ..
            })
        );
        if !admitted {
            // Open: ready at once, and the call fails fast (the `LoadShed` shape).
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                if let Some(Ok(ticket)) = self.reserved.take().map(Reserved::take) {
                    let class = class_of(&e);
                    let outcome = if class.counts_against_health() {
                        Outcome::Failure(class.retry_after)
                    } else {
                        Outcome::Neutral
                    };
                    let stripe = self.stripes.local();
                    let shared = &stripe.shared;
                    shared
                        .core
                        .record(ticket, outcome, false, stripe.index, || shared.now_ms());
                }
                Poll::Ready(Err(e))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let decision = match self.reserved.take() {
            Some(reserved) => reserved.take(),
            // Called without poll_ready: decide now.
            None => self.decide().take(),
        };
        match decision {
            Ok(ticket) => {
                let stripe = self.stripes.local().clone();
                ResponseFuture::new(self.inner.call(req), stripe, ticket)
            }
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}
