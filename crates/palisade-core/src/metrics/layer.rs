//! [`MetricsLayer`]: calls by outcome and their durations, per dependency.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use metrics::{Counter, Histogram, SharedString};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::names;
use crate::{BoxError, Category, class_of};

/// The handles one dependency's calls record to, registered once when the layer is built.
#[derive(Debug)]
struct Handles {
    success: Counter,
    failures: [Counter; Category::ALL.len()],
    success_duration: Histogram,
    failure_duration: Histogram,
}

impl Handles {
    fn new(dependency: &SharedString) -> Self {
        let calls = |outcome: &'static str| metrics::counter!(names::CALLS, "dependency" => dependency.clone(), "outcome" => outcome);
        let duration = |outcome: &'static str| metrics::histogram!(names::CALL_DURATION, "dependency" => dependency.clone(), "outcome" => outcome);
        Handles {
            success: calls("success"),
            failures: Category::ALL.map(|c| calls(c.as_str())),
            success_duration: duration("success"),
            failure_duration: duration("failure"),
        }
    }
}

/// Counts every call of the service below by outcome and records its duration, labelled with
/// the dependency's name (see the [module docs](super) for the names).
///
/// Put it where the outcome is the one you want to see: above a retry layer it records what
/// callers got, below one it records each attempt. A failure's outcome is its class's
/// [`Category`] as [`class_of`] reads it. A call whose future is dropped before it completes
/// (a deadline or timeout above fired, the caller gave up) is counted as `cancelled`, and its
/// duration until the drop recorded as a failure's.
///
/// The handles are registered with the recorder installed when the layer is built, so install
/// the recorder first; a call then allocates nothing, and reads the clock twice.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    handles: Arc<Handles>,
}

impl MetricsLayer {
    /// Records the calls to the dependency named `dependency`.
    pub fn new(dependency: impl Into<SharedString>) -> Self {
        MetricsLayer {
            handles: Arc::new(Handles::new(&dependency.into())),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
///
/// # Panics
/// `Metrics` reserves nothing in `poll_ready`: `poll_ready`, `call` and polls of its response
/// future after completion are forwarded to the inner service and future, whose own contract
/// applies.
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S, Req> Service<Req> for Metrics<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MetricsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        MetricsFuture {
            inner: self.inner.call(req),
            handles: self.handles.clone(),
            start: Instant::now(),
            done: false,
        }
    }
}

pin_project! {
    /// The response future of [`Metrics`].
    ///
    /// Dropped before it completes (a deadline or timeout above fired, the caller gave up), it
    /// records the call as [`Category::Cancelled`], with the time until the drop.
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<Handles>,
        start: Instant,
        // Whether the outcome was recorded: a call cut off above never returns one, and is
        // recorded when dropped instead.
        done: bool,
    }

    impl<F> PinnedDrop for MetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                // The failure handles the layer would use for a `Cancelled` error: the caller
                // gave up on it, whatever the call below would have returned.
                this.handles.failures[Category::Cancelled.index()].increment(1);
                this.handles.failure_duration.record(this.start.elapsed().as_secs_f64());
            }
        }
    }
}

impl<F, T, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx)).map_err(Into::into);
        *this.done = true;
        let seconds = this.start.elapsed().as_secs_f64();
        match &out {
            Ok(_) => {
                this.handles.success.increment(1);
                this.handles.success_duration.record(seconds);
            }
            Err(error) => {
                this.handles.failures[class_of(error).category.index()].increment(1);
                this.handles.failure_duration.record(seconds);
            }
        }
        Poll::Ready(out)
    }
}
