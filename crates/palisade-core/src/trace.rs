//! [`TraceLayer`]: a `tracing` span per call, or per attempt, with the dependency's name, the
//! attempt number and the outcome's class.
//!
//! Place it like [`MetricsLayer`](crate::metrics::MetricsLayer): above a retry layer it makes
//! one span per call (what the caller waited for), below one a span per attempt, whose
//! `attempt` field is the attempt's number as the retry layer publishes it in the
//! [attempt context](crate::context::attempt). Both together nest: a call span holding one
//! attempt span per attempt.
//!
//! The span is `palisade.call` at level `INFO`, target `palisade`, with fields:
//!
//! | field | value |
//! |---|---|
//! | `dependency` | the name given to the layer |
//! | `attempt` | the attempt number (1 for the first), when inside a retry's attempt |
//! | `outcome` | `ok`, `error`, or `cancelled` when the call's future is dropped before it completes (a deadline or timeout above fired, the caller gave up) |
//! | `class` | the failure's [`Category`](crate::Category) name (`server_error`, `timeout`, ...); `cancelled` for a dropped call |
//!
//! Layers below run inside the span (it is entered around the inner `call` and every poll),
//! so their own events carry it. When no subscriber is interested in the span, creating it is
//! one check of the callsite's cached interest: nothing is allocated, formatted or recorded
//! (`tests/alloc.rs` of the repository counts 0 allocations per call with it in the stack).
//!
//! ```
//! use palisade_core::trace::TraceLayer;
//! use palisade_core::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let llm = TraceLayer::new("llm").layer(service_fn(|q: &'static str| async move {
//!     tracing::info!("asking"); // recorded inside the `palisade.call` span
//!     Ok::<_, BoxError>(q.len())
//! }));
//! assert_eq!(llm.oneshot("hello").await.unwrap(), 5);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

use crate::context::attempt;
use crate::{BoxError, class_of};

/// Wraps a service in a [`Traced`]: a span per call; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceLayer {
    dependency: Arc<str>,
}

impl TraceLayer {
    /// Spans named after `dependency`.
    pub fn new(dependency: impl Into<Arc<str>>) -> Self {
        TraceLayer {
            dependency: dependency.into(),
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            dependency: self.dependency.clone(),
        }
    }
}

/// The service of [`TraceLayer`].
///
/// # Panics
/// `Traced` reserves nothing in `poll_ready`: `poll_ready`, `call` and polls of its response
/// future after completion are forwarded to the inner service and future, whose own contract
/// applies.
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    dependency: Arc<str>,
}

impl<S, Req> Service<Req> for Traced<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TracedFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let span = tracing::info_span!(
            target: "palisade",
            "palisade.call",
            dependency = &*self.dependency,
            attempt = Empty,
            outcome = Empty,
            class = Empty,
        );
        if !span.is_disabled()
            && let Some(current) = attempt::current()
            && current.number > 0
        {
            span.record("attempt", current.number);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TracedFuture {
            inner,
            span,
            done: false,
        }
    }
}

pin_project! {
    /// The response future of [`Traced`].
    ///
    /// Dropped before it completes, it records the outcome `cancelled` before the span closes.
    #[derive(Debug)]
    pub struct TracedFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        // Whether the outcome was recorded: a call cut off above never returns one, and the
        // span would close without it.
        done: bool,
    }

    impl<F> PinnedDrop for TracedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done && !this.span.is_disabled() {
                this.span.record("outcome", "cancelled");
                this.span.record("class", crate::Category::Cancelled.as_str());
            }
        }
    }
}

impl<F, T, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = {
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx)).map_err(Into::into)
        };
        *this.done = true;
        if !this.span.is_disabled() {
            match &out {
                Ok(_) => {
                    this.span.record("outcome", "ok");
                }
                Err(err) => {
                    this.span.record("outcome", "error");
                    this.span.record("class", class_of(err).category.as_str());
                }
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tower::{ServiceExt, service_fn};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;
    use crate::{Category, Class, Classified};

    /// Records every span's fields as `name=value` lines, and the span each event was in.
    #[derive(Default)]
    struct Spans {
        next: AtomicU64,
        fields: Mutex<Vec<(u64, String)>>,
        current: Mutex<Vec<u64>>,
        events_in: Mutex<Vec<Option<u64>>>,
    }

    struct Lines<'a>(u64, &'a Mutex<Vec<(u64, String)>>);

    impl Visit for Lines<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.1
                .lock()
                .unwrap()
                .push((self.0, format!("{}={value:?}", field.name())));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.1
                .lock()
                .unwrap()
                .push((self.0, format!("{}={value}", field.name())));
        }
    }

    impl Subscriber for &'static Spans {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            span.record(&mut Lines(id, &self.fields));
            Id::from_u64(id)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            values.record(&mut Lines(span.into_u64(), &self.fields));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {
            let current = self.current.lock().unwrap().last().copied();
            self.events_in.lock().unwrap().push(current);
        }
        fn enter(&self, span: &Id) {
            self.current.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &Id) {
            self.current.lock().unwrap().pop();
        }
    }

    /// Never ready.
    struct Busy;

    impl Service<u8> for Busy {
        type Response = u8;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u8, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }

        fn call(&mut self, x: u8) -> Self::Future {
            std::future::ready(Ok(x))
        }
    }

    #[test]
    fn readiness_is_the_inner_services() {
        let mut svc = TraceLayer::new("x").layer(Busy);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_pending());
    }

    fn lines(spans: &Spans, id: u64) -> Vec<String> {
        let fields = spans.fields.lock().unwrap();
        fields
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// One test, so that no other test thread touches the span's callsite while this one
    /// switches subscribers (tracing caches a callsite's interest process-wide).
    #[tokio::test]
    async fn each_call_is_a_span_with_its_attempt_and_class() {
        // No subscriber: the span is disabled and calls pass through.
        let quiet = TraceLayer::new("quiet").layer(service_fn(|x: u8| async move {
            assert!(Span::current().is_disabled());
            Ok::<_, BoxError>(x)
        }));
        assert_eq!(quiet.oneshot(3).await.unwrap(), 3);

        let spans: &'static Spans = Box::leak(Box::default());
        let _guard = tracing::subscriber::set_default(spans);
        tracing::callsite::rebuild_interest_cache();

        let failing = service_fn(|fail: bool| async move {
            tracing::info!("inside");
            if fail {
                Err::<(), BoxError>(Box::new(Classified::new(
                    Class::new(Category::ServerError),
                    "503",
                )))
            } else {
                Ok(())
            }
        });
        let mut svc = TraceLayer::new("llm").layer(failing);
        svc.ready().await.unwrap();
        let mut state = attempt::Attempt {
            number: 2,
            avoid: None,
        };
        let fut = attempt::scope(&mut state, || svc.call(true));
        assert!(fut.await.is_err());
        assert_eq!(
            lines(spans, 1),
            [
                "dependency=llm",
                "attempt=2",
                "outcome=error",
                "class=server_error"
            ]
        );
        // The inner service's event happened inside the span.
        assert_eq!(*spans.events_in.lock().unwrap(), [Some(1)]);

        // Outside an attempt, or in one the retry layer does not number: no attempt field; a
        // success records its outcome only.
        svc.ready().await.unwrap();
        svc.call(false).await.unwrap();
        svc.ready().await.unwrap();
        let mut unnumbered = attempt::Attempt::default();
        attempt::scope(&mut unnumbered, || svc.call(false))
            .await
            .unwrap();
        assert_eq!(lines(spans, 3), ["dependency=llm", "outcome=ok"]);
        let all = spans.fields.lock().unwrap().clone();
        assert_eq!(lines(spans, 2), ["dependency=llm", "outcome=ok"], "{all:?}");

        // A call whose future is dropped before it completes (a deadline above fired, the
        // caller gave up) still ends its span with an outcome.
        let mut hanging = TraceLayer::new("llm").layer(service_fn(|_: ()| {
            std::future::pending::<Result<(), BoxError>>()
        }));
        let mut fut = Box::pin(hanging.call(()));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(fut);
        assert_eq!(
            lines(spans, 4),
            ["dependency=llm", "outcome=cancelled", "class=cancelled"]
        );
    }
}
