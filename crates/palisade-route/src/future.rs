//! The router's [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use palisade_classify::context::attempt;
use palisade_classify::{BoxError, Category, Class, HealthImpact, class_of};
use pin_project_lite::pin_project;

use crate::endpoint::LaneRef;

/// Counts the call in its endpoint's load until the future completes or is dropped.
#[derive(Debug)]
struct InFlight(Arc<LaneRef>);

impl InFlight {
    /// Records a failure of `class` for the endpoint: the one path for returned errors and
    /// timed-out attempts alike.
    fn fail(&self, class: Class) {
        let state = &self.0.state;
        if class.health_impact() != HealthImpact::None {
            attempt::report_failed_endpoint(state.token);
        }
        state.on_failure(class, &state.config, state.now_ms());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
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
    /// [`Timeout`](palisade_classify::Category::Timeout) for its endpoint, exactly as a
    /// returned timeout error (see [Timeouts](crate#timeouts)).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        // `Some` until the call completes: the drop looks at the attempt context only then.
        in_flight: Option<InFlight>,
        error: Option<BoxError>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // The guard, taken either way, leaves the endpoint's load as it goes.
            if let Some(guard) = this.in_flight.take()
                && attempt::timing_out()
            {
                guard.fail(Class::new(Category::Timeout));
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, lane: Arc<LaneRef>) -> Self {
        lane.state.in_flight.fetch_add(1, Ordering::Relaxed);
        ResponseFuture {
            inner: Some(inner),
            in_flight: Some(InFlight(lane)),
            error: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            inner: None,
            in_flight: None,
            error: Some(error),
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
            let error = this
                .error
                .take()
                .unwrap_or_else(|| "route future polled after completion".into());
            return Poll::Ready(Err(error));
        };
        let result = ready!(inner.poll(cx));
        this.inner.set(None);
        // The guard releases the endpoint's load slot when it goes out of scope below; dropping
        // the future early releases it too.
        let Some(guard) = this.in_flight.take() else {
            return Poll::Ready(result.map_err(Into::into));
        };
        match result {
            Ok(res) => {
                let state = &guard.0.state;
                state.on_success(guard.0.lane, &state.config, || state.now_ms());
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
