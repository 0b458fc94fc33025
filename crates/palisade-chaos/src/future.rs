//! The [`ResponseFuture`] of a [`Chaos`](crate::Chaos) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Sleep, sleep};
use tower_service::Service;

use crate::handle::Shared;

pin_project! {
    /// The future of a [`Chaos`](crate::Chaos) call: the inner service's future, possibly after
    /// a delay, an injected outcome, or a hang.
    ///
    /// A delay, a hang or an outcome with a wait ends as soon as the layer is disabled with
    /// [`ChaosHandle::disable`](crate::ChaosHandle::disable): the call then goes on as a plain
    /// passthrough.
    ///
    /// `F` is the inner service's future and `Res` its response, parameters of their own
    /// rather than `S::Future` and `S::Response`, so that the compiler can tell this future is
    /// `Send` inside an `async` block (rust-lang/rust#64552).
    pub struct ResponseFuture<F, S, Req, Res> {
        #[pin]
        state: State<F, S, Req, Res>,
    }
}

// Everything but the passthrough is boxed: a `Sleep` is larger than most response futures,
// and the passthrough is what a disabled layer, or a call no fault hits, pays for. Boxed, the
// other states keep the future of a call the layer lets through at 8 bytes over the inner
// future's, and its drop to "drop the inner future or the box": small enough for the caller
// to inline. A call injected upon allocates once.
pin_project! {
    #[project = StateProj]
    enum State<F, S, Req, Res> {
        /// No fault: the inner future.
        Passthrough {
            #[pin]
            inner: F,
        },
        /// A fault: added latency, an injected outcome or a hang.
        Faulted {
            fault: Pin<Box<Faulted<F, S, Req, Res>>>,
        },
    }
}

pin_project! {
    #[project = FaultedProj]
    enum Faulted<F, S, Req, Res> {
        /// Added latency: the inner future, polled once the wait is over.
        Delayed {
            // `None` once the wait is over.
            #[pin]
            wait: Option<Wait>,
            #[pin]
            inner: F,
        },
        /// An injected outcome after a wait, or a hang (no outcome, no end to the wait). The
        /// ready inner service and the request are kept, so that a disable during the wait can
        /// still pass the call on; they are dropped when the wait elapses.
        Held {
            #[pin]
            wait: Option<Wait>,
            outcome: Option<Result<Res, BoxError>>,
            call: Option<(S, Req)>,
            // The inner call, once a disable has passed the call on.
            #[pin]
            inner: Option<F>,
            shared: Arc<Shared>,
        },
        /// An injected outcome at once.
        Injected {
            outcome: Option<Result<Res, BoxError>>,
        },
    }
}

pin_project! {
    /// The wait of a faulted call: until its sleep elapses (never, for a hang) or the layer is
    /// disabled, whichever comes first.
    struct Wait {
        #[pin]
        sleep: Option<Sleep>,
        #[pin]
        switched_off: OwnedNotified,
    }
}

/// How a [`Wait`] ended.
enum WaitEnd {
    Elapsed,
    SwitchedOff,
}

impl Wait {
    fn new(duration: Option<Duration>, switched_off: OwnedNotified) -> Self {
        Wait {
            sleep: duration.map(sleep),
            switched_off,
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitEnd> {
        let this = self.project();
        // The switch first: a disable at the very instant the wait elapses still wins.
        if this.switched_off.poll(cx).is_ready() {
            return Poll::Ready(WaitEnd::SwitchedOff);
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| WaitEnd::Elapsed),
            // A hang: deliberately no timer, so a paused test clock can advance to the
            // caller's timeout; only the switch wakes it.
            None => Poll::Pending,
        }
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S::Future, S, Req, S::Response> {
    #[inline]
    pub(crate) fn passthrough(inner: S::Future) -> Self {
        ResponseFuture {
            state: State::Passthrough { inner },
        }
    }

    fn faulted(fault: Faulted<S::Future, S, Req, S::Response>) -> Self {
        ResponseFuture {
            state: State::Faulted {
                fault: Box::pin(fault),
            },
        }
    }

    /// `inner` once `delay` has elapsed, or at once when `switched_off` fires.
    pub(crate) fn delayed(delay: Duration, switched_off: OwnedNotified, inner: S::Future) -> Self {
        Self::faulted(Faulted::Delayed {
            wait: Some(Wait::new(Some(delay), switched_off)),
            inner,
        })
    }

    /// `outcome` at once.
    pub(crate) fn injected(outcome: Result<S::Response, BoxError>) -> Self {
        Self::faulted(Faulted::Injected {
            outcome: Some(outcome),
        })
    }

    /// `outcome` once `wait` has elapsed (a hang: no wait, no outcome), or, when
    /// `switched_off` fires first, the answer of the ready service `svc` to `req`.
    pub(crate) fn held(
        wait: Option<Duration>,
        switched_off: OwnedNotified,
        outcome: Option<Result<S::Response, BoxError>>,
        (svc, req): (S, Req),
        shared: Arc<Shared>,
    ) -> Self {
        Self::faulted(Faulted::Held {
            wait: Some(Wait::new(wait, switched_off)),
            outcome,
            call: Some((svc, req)),
            inner: None,
            shared,
        })
    }
}

impl<F, S, Req, Res> fmt::Debug for ResponseFuture<F, S, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "Passthrough",
            State::Faulted { fault } => match fault.as_ref().get_ref() {
                Faulted::Delayed { .. } => "Delayed",
                Faulted::Held { inner: Some(_), .. } => "Passthrough",
                Faulted::Held {
                    wait: Some(Wait { sleep: None, .. }),
                    ..
                } => "Hang",
                Faulted::Held { .. } | Faulted::Injected { .. } => "Injected",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req> Future for ResponseFuture<S::Future, S, Req, S::Response>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Faulted { fault } => poll_faulted(fault.as_mut(), cx),
        }
    }
}

/// Polls a call the layer injected upon; out of line, to stay out of the passthrough's way.
#[inline(never)]
fn poll_faulted<S, Req>(
    fault: Pin<&mut Faulted<S::Future, S, Req, S::Response>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    let outcome = match fault.project() {
        FaultedProj::Delayed { mut wait, inner } => {
            if let Some(w) = wait.as_mut().as_pin_mut() {
                // Elapsed or switched off, the call goes on to the inner future.
                ready!(w.poll(cx));
                wait.set(None);
            }
            return inner.poll(cx).map_err(Into::into);
        }
        FaultedProj::Held {
            mut wait,
            outcome,
            call,
            mut inner,
            shared,
        } => {
            if let Some(w) = wait.as_mut().as_pin_mut() {
                let end = ready!(w.poll(cx));
                wait.set(None);
                // Either way the kept service and request go. Elapsed, they are dropped,
                // giving the readiness back, and the injected outcome is returned; switched
                // off, the service, given its readiness in `Chaos::call`, takes the call.
                if let (WaitEnd::SwitchedOff, Some((mut svc, req))) = (end, call.take()) {
                    inner.set(Some(svc.call(req)));
                    shared.fault_ended_by_disable(outcome.take().as_ref());
                }
            }
            match inner.as_pin_mut() {
                Some(inner) => return inner.poll(cx).map_err(Into::into),
                None => outcome,
            }
        }
        FaultedProj::Injected { outcome } => outcome,
    };
    Poll::Ready(
        outcome
            .take()
            .unwrap_or_else(|| Err("chaos future polled after completion".into())),
    )
}
