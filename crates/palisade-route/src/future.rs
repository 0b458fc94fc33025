//! The router's [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use palisade_core::context::attempt;
use palisade_core::{BoxError, Category, Class, HealthImpact, class_of};
use pin_project_lite::pin_project;

use crate::endpoint::PaddedLaneRef;

/// Counts the call in its endpoint's load until the future completes or is dropped.
#[derive(Debug)]
struct InFlight(PaddedLaneRef);

impl InFlight {
    /// Records a failure of `class` for the endpoint: the one path for returned errors and
    /// timed-out attempts alike.
    fn fail(&self, class: Class) {
        let state = &self.0.state;
        if class.health_impact() != HealthImpact::None {
            attempt::report_failed_endpoint(state.token);
        }
        state.on_failure_now(class);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a call is, besides its endpoint's future.
#[derive(Debug)]
enum Call {
    /// Made and counted in its endpoint's load until it completes or is dropped.
    InFlight {
        guard: InFlight,
        /// `call` ran outside any attempt scope: the first poll looks for one (see
        /// [`context_lost`]).
        check_scope: bool,
    },
    /// Failed before reaching an endpoint.
    Failed(BoxError),
    /// Completed (or its error was returned).
    Done,
}

/// Set once the context-lost warning was logged: once per process.
static CONTEXT_LOST_WARNED: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// How often this thread saw the context lost (the warning itself is once per process).
    pub(crate) static CONTEXT_LOST_SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A call was made outside any attempt scope and its future is polled inside one: something
/// between a retry layer and the router (a `Buffer`, a client that calls on its own task) ran
/// `poll_ready` and `call` on another task, so retries cannot avoid the endpoint that just
/// failed. Warns once per process.
#[cold]
pub(crate) fn context_lost() {
    #[cfg(test)]
    CONTEXT_LOST_SEEN.with(|n| n.set(n.get() + 1));
    if !CONTEXT_LOST_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the attempt context was lost between a retry layer and palisade-route's Route: the \
             router's poll_ready and call ran outside the retry's attempt scope (a Buffer, or a \
             client that calls on its own task, sits between them), so a retry cannot avoid the \
             endpoint that failed the previous attempt. Fix: put \
             `palisade::context::CarryLayer` above the boundary and \
             `palisade::context::ResumeLayer` below it (warned once per process)"
        );
    }
}

pin_project! {
    /// The future of a [`Route`](crate::Route) call.
    ///
    /// # Drop
    /// Dropped before it completes, the call leaves its endpoint's load and is otherwise
    /// neutral (the caller gave up, a whole-call deadline fired, a retry cancelled it), unless
    /// it is dropped inside [`attempt::time_out`]: then a per-attempt timeout above has
    /// elapsed, and the call counts as a failure of class
    /// [`Timeout`](palisade_core::Category::Timeout) for its endpoint, exactly as a
    /// returned timeout error (see [Timeouts](crate#timeouts)).
    ///
    /// # Panics
    /// Polled again after it completed (returned `Ready`), as tower's futures do.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        // `InFlight` until the call completes: the drop looks at the attempt context only then.
        call: Call,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // The guard, taken either way, leaves the endpoint's load as it goes.
            if let Call::InFlight { guard, .. } = std::mem::replace(this.call, Call::Done)
                && attempt::timing_out()
            {
                guard.fail(Class::new(Category::Timeout));
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    /// A call of `lane`'s endpoint; `check_scope`: `call` ran outside any attempt scope.
    pub(crate) fn new(inner: F, lane: PaddedLaneRef, check_scope: bool) -> Self {
        lane.state.in_flight.fetch_add(1, Ordering::Relaxed);
        ResponseFuture {
            inner: Some(inner),
            call: Call::InFlight {
                guard: InFlight(lane),
                check_scope,
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            inner: None,
            call: Call::Failed(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return match std::mem::replace(this.call, Call::Done) {
                Call::Failed(error) => Poll::Ready(Err(error)),
                _ => panic!("`Route` response future polled after completion"),
            };
        };
        if let Call::InFlight { check_scope, .. } = this.call
            && *check_scope
        {
            *check_scope = false;
            if attempt::current().is_some() {
                context_lost();
            }
        }
        let result = ready!(inner.poll(cx));
        this.inner.set(None);
        // The guard releases the endpoint's load slot when it goes out of scope below; dropping
        // the future early releases it too.
        let Call::InFlight { guard, .. } = std::mem::replace(this.call, Call::Done) else {
            return Poll::Ready(result.map_err(Into::into));
        };
        match result {
            Ok(res) => {
                let state = &guard.0.state;
                state.on_success(guard.0.lane, || state.now_ms());
                Poll::Ready(Ok(res))
            }
            Err(e) => {
                let e: BoxError = e.into();
                guard.fail(class_of(&e));
                Poll::Ready(Err(e))
            }
        }
    }
}
