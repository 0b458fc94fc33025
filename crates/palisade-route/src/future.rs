//! The router's [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use palisade_classify::{BoxError, HealthImpact, attempt, class_of};
use pin_project_lite::pin_project;

use crate::endpoint::LaneRef;

/// Counts the call in its endpoint's load until the future completes or is dropped.
#[derive(Debug)]
struct InFlight(Arc<LaneRef>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// The future of a [`Route`](crate::Route) call.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        in_flight: Option<InFlight>,
        error: Option<BoxError>,
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
        let state = &guard.0.state;
        let cfg = &state.config;
        match result {
            Ok(res) => {
                state.on_success(guard.0.lane, cfg, || state.now_ms());
                Poll::Ready(Ok(res))
            }
            Err(e) => {
                let e: BoxError = e.into();
                let class = class_of(&e);
                if class.health_impact() != HealthImpact::None {
                    attempt::report_failed_endpoint(state.token);
                }
                state.on_failure(class, cfg, state.now_ms());
                Poll::Ready(Err(e))
            }
        }
    }
}
