//! Watching response bodies as they stream: [`GuardLayer`], [`Guard`], [`GuardedBody`].

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, Category, Class, Classified, HasClass};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc::{Code, GRPC_STATUS, GrpcClassifier, GrpcStatus};

/// No frame of a response body arrived within the idle timeout.
///
/// Its class is `Timeout`, retryable: another call may stream faster.
/// [`class_of`](palisade_core::class_of) reads it under any classifier, inside the body's
/// [`Classified`] or on its own ([`Classified::into_inner`], the error of an
/// [`on_failure`](GuardLayer::on_failure) report): the guard
/// [registers](palisade_core::register) the type when it fails a body with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout {
    /// The idle timeout that elapsed.
    pub after: Duration,
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response body idle for {:?}", self.after)
    }
}

impl Error for IdleTimeout {}

impl HasClass for IdleTimeout {
    fn class(&self) -> Class {
        Class::new(Category::Timeout)
    }
}

/// A response body did not finish within its whole-body limit.
///
/// Its class is `Timeout`, retryable, read by [`class_of`](palisade_core::class_of) on its own
/// too, as [`IdleTimeout`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyTimeout {
    /// The whole-body limit that elapsed.
    pub after: Duration,
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response body not finished within {:?}", self.after)
    }
}

impl Error for BodyTimeout {}

impl HasClass for BodyTimeout {
    fn class(&self) -> Class {
        Class::new(Category::Timeout)
    }
}

type Report = Arc<dyn Fn(Class, &(dyn Error + 'static)) + Send + Sync>;

/// Watches the bodies of the inner service's responses: see [`Guard`].
#[derive(Clone, Default)]
pub struct GuardLayer {
    config: Config,
}

#[derive(Clone, Default)]
struct Config {
    idle: Option<Duration>,
    whole: Option<Duration>,
    grpc: Option<GrpcClassifier>,
    trailers_fail: bool,
    report: Option<Report>,
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("idle_timeout", &self.config.idle)
            .field("body_timeout", &self.config.whole)
            .field("grpc_trailers", &self.config.grpc.is_some())
            .field("trailers_fail", &self.config.trailers_fail)
            .field("on_failure", &self.config.report.is_some())
            .finish()
    }
}

impl GuardLayer {
    /// A layer that watches nothing yet: add an idle timeout, a whole-body limit, gRPC trailers
    /// or a report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails a body with [`IdleTimeout`] when no frame arrives for `limit` (counted from the
    /// response's arrival, then from each frame).
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.config.idle = Some(limit);
        self
    }

    /// Fails a body with [`BodyTimeout`] when it has not ended `limit` after the response
    /// arrived.
    pub fn body_timeout(mut self, limit: Duration) -> Self {
        self.config.whole = Some(limit);
        self
    }

    /// Reads the `grpc-status` of each body's trailers with `classifier`: a failing status is
    /// reported (see [`on_failure`](Self::on_failure)) and, with
    /// [`trailers_as_errors`](Self::trailers_as_errors), turned into an error. A body of a
    /// `200` response whose head carried no `grpc-status` and that ends without one in its
    /// trailers failed too, with `UNKNOWN`, as tonic and grpc-go read it: gRPC over HTTP/2
    /// requires the final status, and a stream a proxy cut short ends so.
    pub fn grpc_trailers(mut self, classifier: GrpcClassifier) -> Self {
        self.config.grpc = Some(classifier);
        self
    }

    /// Whether a failing `grpc-status` in the trailers becomes the body's error instead of
    /// passing as trailers (default `false`: a gRPC client reads its status from them).
    pub fn trailers_as_errors(mut self, enabled: bool) -> Self {
        self.config.trailers_fail = enabled;
        self
    }

    /// Calls `report` with the class and the error of each body that fails mid-stream (its own
    /// error, a timeout) or ends with a failing gRPC status. The error is the failure itself,
    /// not wrapped: the guard's own ([`IdleTimeout`], [`BodyTimeout`],
    /// [`GrpcStatus`](crate::grpc::GrpcStatus)) keep their class to
    /// [`class_of_dyn`](palisade_core::class_of_dyn). Feed it to metrics, or to whatever
    /// judges the dependency's health (palisade-route's `RouteHandle::report_failure`, say). Each
    /// body reports at most once. Every failure is also a `DEBUG` event (target
    /// `palisade_http::body`).
    pub fn on_failure<F>(mut self, report: F) -> Self
    where
        F: Fn(Class, &(dyn Error + 'static)) + Send + Sync + 'static,
    {
        self.config.report = Some(Arc::new(report));
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Wraps each response body of `S` in a [`GuardedBody`]: an idle timeout between frames, a
/// whole-body limit, and the gRPC status of the trailers; a body that fails yields an error that
/// carries its class ([`Classified`]), so [`class_of`](palisade_core::class_of) reads it
/// like any other failure. Unwrapped ([`Classified::into_inner`]), the guard's own errors
/// ([`IdleTimeout`], [`BodyTimeout`], [`GrpcStatus`](crate::grpc::GrpcStatus)) still read as
/// their class under palisade's default rules.
///
/// The classify, retry and breaker layers judge a call when its response head arrives; a body
/// that fails later is the caller's to see, and this is how it sees it with a class. The
/// timers start when the response arrives. For the breaker to count such a failure as the
/// call's, put [`StreamBreaker`](super::StreamBreaker) above in place of the breaker's layer;
/// for a router, report it with [`on_failure`](GuardLayer::on_failure) (see
/// [the crate docs](crate#streamed-responses-failures-after-the-head)).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::Response;
/// use http_body_util::{BodyExt, StreamBody};
/// use palisade_core::{BoxError, Category, class_of};
/// use palisade_http::body::GuardLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // A body that sends one frame, then stalls.
/// let stalls = service_fn(|_: ()| async {
///     let frames = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(Bytes::from("hi")))])
///         .chain(futures_util::stream::pending());
///     Ok::<_, BoxError>(Response::new(StreamBody::new(frames)))
/// });
/// # use futures_util::StreamExt;
/// let svc = ServiceBuilder::new()
///     .layer(GuardLayer::new().idle_timeout(Duration::from_secs(5)))
///     .service(stalls);
/// // Like tower-http's timeout bodies, a guarded body holds its timers in place: pin it.
/// let mut body = std::pin::pin!(svc.oneshot(()).await.unwrap().into_body());
/// assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "hi");
/// let err = body.frame().await.unwrap().unwrap_err();
/// assert_eq!(class_of(&err).category, Category::Timeout);
/// assert_eq!(err.to_string(), "response body idle for 5s");
/// # }
/// ```
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    config: Config,
}

impl<S: fmt::Debug> fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("inner", &self.inner)
            .field("idle_timeout", &self.config.idle)
            .field("body_timeout", &self.config.whole)
            .finish()
    }
}

impl<S> Guard<S> {
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

impl<S, Req, B> Service<Req> for Guard<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<GuardedBody<B>>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        GuardFuture {
            inner: self.inner.call(req),
            config: Some(self.config.clone()),
        }
    }
}

pin_project! {
    /// The response future of [`Guard`].
    pub struct GuardFuture<F> {
        #[pin]
        inner: F,
        config: Option<Config>,
    }
}

impl<F> fmt::Debug for GuardFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GuardedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let config = this.config.take().unwrap_or_default();
        // A gRPC call's final status: in the head (trailers-only), or not to be read from the
        // body (a failing HTTP status, classified by its head); else it must come in the
        // trailers.
        let status_seen = crate::grpc::status_in_head(&response);
        Poll::Ready(Ok(
            response.map(|body| GuardedBody::new(body, config, status_seen))
        ))
    }
}

pin_project! {
    /// A response body watched by [`Guard`]: see there. Its errors are [`Classified`].
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Option<Sleep>,
        #[pin]
        whole: Option<Sleep>,
        config: Config,
        done: bool,
        // Whether `on_failure` has been told of this body's failure: at most once.
        reported: bool,
        // Whether the call's `grpc-status` was read (in the head or the trailers), or is not to
        // be looked for: with `grpc_trailers`, a body that ends without one failed.
        status_seen: bool,
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("idle_timeout", &self.config.idle)
            .field("body_timeout", &self.config.whole)
            .field("done", &self.done)
            .finish()
    }
}

impl<B> GuardedBody<B> {
    fn new(inner: B, config: Config, status_seen: bool) -> Self {
        GuardedBody {
            inner,
            idle: config.idle.map(sleep),
            whole: config.whole.map(sleep),
            config,
            done: false,
            reported: false,
            status_seen,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

/// A gRPC body that ended without a `grpc-status` in its trailers (nor in its head): the call
/// failed with `UNKNOWN`, as tonic and grpc-go read it (gRPC over HTTP/2 requires the status;
/// a stream cut short by a proxy ends so), reported, and the body's error with
/// `trailers_as_errors`.
#[cold]
fn ended_without_status<D>(
    config: &Config,
    reported: &mut bool,
    grpc: &GrpcClassifier,
) -> Poll<Option<Result<Frame<D>, BoxError>>> {
    let status = GrpcStatus {
        code: Code::Unknown,
        message: "the stream ended without a grpc-status (cut short by a proxy?)".to_owned(),
    };
    let err = fail(config, reported, grpc.missing_status(), Box::new(status));
    if config.trailers_fail {
        Poll::Ready(Some(Err(err)))
    } else {
        Poll::Ready(None)
    }
}

fn fail(config: &Config, reported: &mut bool, class: Class, err: BoxError) -> BoxError {
    tracing::debug!(
        target: "palisade_http::body",
        category = class.category.as_str(),
        error = %err,
        "response body failed"
    );
    if let Some(report) = &config.report
        && !std::mem::replace(reported, true)
    {
        report(class, &*err);
    }
    Box::new(Classified::new(class, err))
}

impl<B> Body for GuardedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // The whole-body limit first: a body whose frames are always ready (a fast server
        // read by a slow consumer) never returns `Pending`, and must still end at the limit.
        if let Some(whole) = this.whole.as_mut().as_pin_mut()
            && whole.poll(cx).is_ready()
        {
            *this.done = true;
            // So that `class_of` reads its class on its own too (unwrapped from the
            // `Classified`, in the report): the default rules do not know this crate's
            // types. On this error path only.
            palisade_core::register::<BodyTimeout>();
            let err = BodyTimeout {
                after: this.config.whole.unwrap_or_default(),
            };
            return Poll::Ready(Some(Err(fail(
                this.config,
                this.reported,
                err.class(),
                Box::new(err),
            ))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(limit), Some(idle)) =
                    (this.config.idle, this.idle.as_mut().as_pin_mut())
                {
                    // `Duration::MAX` ("never") must not overflow, as `sleep` accepts it.
                    idle.reset(palisade_core::context::deadline_after(
                        Instant::now(),
                        limit,
                    ));
                }
                if let (Some(grpc), Some(trailers)) = (&this.config.grpc, frame.trailers_ref()) {
                    *this.status_seen |= trailers.contains_key(GRPC_STATUS);
                    if let Some((class, status)) = grpc.classify_trailers(trailers) {
                        let err = fail(this.config, this.reported, class, Box::new(status));
                        if this.config.trailers_fail {
                            *this.done = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                let e: BoxError = e.into();
                let class = crate::transport::classify_error(&*e);
                Poll::Ready(Some(Err(fail(this.config, this.reported, class, e))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                if let Some(grpc) = &this.config.grpc
                    && !*this.status_seen
                {
                    return ended_without_status(this.config, this.reported, grpc);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(idle) = this.idle.as_mut().as_pin_mut()
                    && idle.poll(cx).is_ready()
                {
                    *this.done = true;
                    palisade_core::register::<IdleTimeout>();
                    let err = IdleTimeout {
                        after: this.config.idle.unwrap_or_default(),
                    };
                    return Poll::Ready(Some(Err(fail(
                        this.config,
                        this.reported,
                        err.class(),
                        Box::new(err),
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A gRPC body whose inner body ended without a status still has its failure to give
        // (on the next poll): not ended until then, so that a reader trusting this (hyper, the
        // stream breaker above) reads it.
        self.done
            || (self.inner.is_end_stream() && (self.config.grpc.is_none() || self.status_seen))
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
