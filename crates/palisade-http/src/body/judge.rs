//! A circuit breaker that judges a streamed call when its body ends: [`StreamBreakerLayer`],
//! [`StreamBreaker`], [`JudgedBody`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use http::Response;
use http_body::{Body, Frame, SizeHint};
use palisade_breaker::{BreakerHandle, Permit, Refusal, State as BreakerState};
use palisade_core::{BoxError, Class, Classified, FailedResponse, class_of};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc::{GRPC_STATUS, GrpcClassifier};

/// A circuit breaker for streamed responses: see [`StreamBreaker`].
#[derive(Clone, Debug)]
pub struct StreamBreakerLayer {
    handle: BreakerHandle,
    grpc: Option<GrpcClassifier>,
}

impl StreamBreakerLayer {
    /// Judges calls with the breaker behind `handle` (from
    /// [`BreakerLayer::handle`](palisade_breaker::BreakerLayer::handle): its configuration,
    /// state and counts, shared with any other service built from that layer).
    pub fn new(handle: BreakerHandle) -> Self {
        StreamBreakerLayer { handle, grpc: None }
    }

    /// Also reads the `grpc-status` of each body's trailers with `classifier`: a failing status
    /// there is the call's failure (the trailers still reach the caller).
    pub fn grpc_trailers(mut self, classifier: GrpcClassifier) -> Self {
        self.grpc = Some(classifier);
        self
    }
}

impl<S> Layer<S> for StreamBreakerLayer {
    type Service = StreamBreaker<S>;

    fn layer(&self, inner: S) -> StreamBreaker<S> {
        StreamBreaker {
            inner,
            handle: self.handle.clone(),
            grpc: self.grpc.clone(),
            slot: None,
        }
    }
}

/// A circuit breaker whose calls end when their response body ends, not when the response
/// head arrives.
///
/// palisade-breaker's [`Breaker`](palisade_breaker::Breaker) counts a call when its future
/// completes: for an HTTP call, when the head arrives. A streamed body (an LLM's tokens, a
/// gRPC server stream) can still fail after that: a connection reset, a stall caught by
/// [`GuardLayer`](super::GuardLayer)'s idle or whole-body timeout, a failing `grpc-status` in
/// the trailers. `StreamBreaker` admits calls through the same breaker
/// ([`BreakerHandle::try_reserve`]) and records each call's outcome once, when it is known:
///
/// | the call | counts as |
/// |---|---|
/// | fails before its head (an error, or a response the classify layer below turned into one) | that error's class, as `Breaker` counts it |
/// | its body ends (`None`, or a frame after which the body says it has ended), or has already ended when the head arrives (a 204, a `HEAD`, an empty body) | a success |
/// | its body yields an error | that error's class ([`class_of`]: the guard's timeouts are `Timeout`, a reset is `Network`) |
/// | its trailers carry a failing `grpc-status` (with [`StreamBreakerLayer::grpc_trailers`]) | that code's class |
/// | with [`StreamBreakerLayer::grpc_trailers`], its body ends without a `grpc-status`, after a `200` head without one (a stream a proxy cut short; tonic and grpc-go read it so) | `UNKNOWN`'s class |
/// | its body is dropped before any of these (the caller stopped reading) | a cancellation, judged by the breaker's [`CancelPolicy`](palisade_breaker::CancelPolicy) (ignored by default) |
/// | the inner service panics in its future or its body (the panic drops them) | a cancellation, as above |
/// | the inner service panics in `call`, before it made a future | nothing: the call never started (a probe gives its slot back) |
///
/// So the breaker opens after enough streams fail half-way, with every rule it has (failures
/// in a row, a failure ratio, slow calls), just as it would for calls that failed outright:
/// one call, one outcome. A slow-call rule measures the whole stream, head to end.
///
/// Use it in place of the breaker's own layer (a call must not go through both, or it would
/// be counted twice), where that layer would go: below the retry, above the attempt timeout
/// and the classify layer, so their errors count. Put [`GuardLayer`](super::GuardLayer)
/// below the classify layer to turn stalls into errors.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::Response;
/// use http_body_util::{BodyExt, StreamBody};
/// use palisade_breaker::{BreakerLayer, State};
/// use palisade_core::BoxError;
/// use palisade_http::body::{GuardLayer, StreamBreakerLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// # use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Every stream sends a token, then stalls.
/// let stalls = service_fn(|_: ()| async {
///     let frames = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(Bytes::from("hi")))])
///         .chain(futures_util::stream::pending());
///     Ok::<_, BoxError>(Response::new(StreamBody::new(frames)))
/// });
/// let breaker = BreakerLayer::builder("llm").consecutive_failures(3).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(StreamBreakerLayer::new(breaker.handle()))
///     .layer(GuardLayer::new().idle_timeout(Duration::from_secs(5)))
///     .service(stalls);
/// for _ in 0..3 {
///     let response = svc.ready().await.unwrap().call(()).await.unwrap();
///     // The head arrived: the breaker has not judged the call yet.
///     let err = response.into_body().collect().await.unwrap_err();
///     assert_eq!(err.to_string(), "response body idle for 5s");
/// }
/// assert_eq!(breaker.handle().state(), State::Open);
/// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(err.to_string().starts_with("circuit 'llm' open"));
/// # }
/// ```
///
/// # Errors
/// The inner service's errors, boxed; [`CircuitOpen`](palisade_breaker::CircuitOpen) when the
/// breaker refuses the call.
///
/// A response the classify layer below judged a failure (a
/// [`FailedResponse`]`<Response<B>>`, or a [`Classified`] around one) leaves as a
/// `FailedResponse<Response<JudgedBody<B>>>`, the response type this service answers, with
/// the same class and summary: `FailedResponse::<Response<JudgedBody<B>>>::restore` above
/// gives it back (for tonic to read its `grpc-status`: an `INVALID_ARGUMENT` reaches the
/// generated client as `INVALID_ARGUMENT`, not `UNKNOWN`). Its body judges nothing: the
/// breaker counted the failure when the error left. (Hence `B: Send + 'static`, which any
/// response body in a [`BoxError`] is.)
///
/// # Readiness
/// As `Breaker`: the breaker admits or refuses a call in `poll_ready`; a refused call makes
/// the service ready at once and `call` fails fast, so a retry or fallback above can act.
///
/// What `poll_ready` decided holds only while the breaker stays as it was. If it has moved
/// since (an operator isolated, tripped, closed or reset it, another clone's probe closed it,
/// it tripped, its open period ended), the call is decided again as the breaker stands at
/// `call`: an admission made while closed is refused once the breaker is isolated or open, and
/// a refusal made while open no longer stands once it closes. A `poll_ready` repeated before
/// the call decides again a refusal that went stale, and an admission that went stale while
/// the service is not ready: a caller waiting for the service is ready at once, to fail fast,
/// when polled after the breaker was isolated. A refusal counts as a rejection when a call is
/// failed with it, not when `poll_ready` decided it.
///
/// A call admitted at `call` after a refusal was never polled for by `poll_ready`: the inner
/// service is asked once, without waiting, whether it is ready; if not, the call fails with a
/// `CircuitOpen` whose `retry_after` is zero (retry now), and if its readiness fails, that
/// error is the call's (and its outcome).
///
/// # Panics
/// `call` without a successful `poll_ready` before it panics (the admission it reserves is
/// taken by `call`); a response future polled after it completed panics. A clone starts
/// without the original's reservation.
pub struct StreamBreaker<S> {
    inner: S,
    handle: BreakerHandle,
    grpc: Option<GrpcClassifier>,
    /// What `poll_ready` decided for the next call: a permit (holding a probe slot, if
    /// half-open, until the call ends or the service is dropped), or a refusal not counted
    /// yet.
    slot: Option<Result<Permit, Refusal>>,
}

impl<S: Clone> Clone for StreamBreaker<S> {
    fn clone(&self) -> Self {
        StreamBreaker {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            grpc: self.grpc.clone(),
            slot: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for StreamBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.handle.name())
            .field("grpc_trailers", &self.grpc.is_some())
            .finish()
    }
}

impl<S> StreamBreaker<S> {
    /// The handle of its breaker.
    pub fn handle(&self) -> &BreakerHandle {
        &self.handle
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

    /// A refusal reserved by an earlier `poll_ready`, polled again: decided again if the
    /// breaker moved since.
    #[cold]
    #[inline(never)]
    fn recheck(&mut self) {
        if let Some(Err(refusal)) = &mut self.slot
            && !refusal.stands()
        {
            self.slot = Some(self.handle.try_reserve());
        }
    }

    /// The inner service is not ready for an admitted call. If the breaker moved since the
    /// admission (an operator isolated it, say), the call is decided again: refused, it is
    /// ready at once, to fail fast instead of waiting for a service it will not call.
    #[cold]
    #[inline(never)]
    fn pending(&mut self) -> Poll<Result<(), BoxError>> {
        if let Some(Ok(permit)) = &self.slot
            && !permit.is_current()
        {
            // The stale permit goes first: a probe slot it holds is from a period now over.
            self.slot = None;
            let decision = self.handle.try_reserve();
            if self.slot.get_or_insert(decision).is_err() {
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    }
}

impl<S> StreamBreaker<S> {
    /// Calls the inner service (polled ready) with an admitted call.
    #[inline]
    fn admitted<Req, B>(&mut self, req: Req, mut permit: Permit) -> State<S::Future>
    where
        S: Service<Req, Response = Response<B>>,
    {
        let inner = self.inner.call(req);
        // Started once the inner service has made its future, as `Breaker` starts its calls: a
        // panic inside the inner `call` is a call that never started (a probe's slot comes
        // back, nothing is counted).
        permit.start();
        State::Called {
            inner,
            permit: Some(permit),
            grpc: self.grpc.clone(),
        }
    }

    /// `call` with a permit reserved in a state the breaker has left since (an operator
    /// isolated it, a probe closed it, it tripped): the call is decided again, as it stands
    /// now. The inner service was polled ready, so a new admission calls it.
    #[cold]
    #[inline(never)]
    fn call_moved<Req, B>(&mut self, req: Req, stale: Permit) -> State<S::Future>
    where
        S: Service<Req, Response = Response<B>>,
    {
        // Given back first: a probe slot it holds belongs to a half-open period that is over.
        drop(stale);
        match self.handle.try_reserve() {
            Ok(permit) => self.admitted(req, permit),
            Err(refusal) => State::failed(refusal.reject()),
        }
    }

    /// `call` with a refusal reserved: it stands unless the breaker moved since, in which case
    /// the call is decided again. The inner service was not polled for a refused call, so a
    /// new admission asks it once whether it is ready (without waiting: the caller was told
    /// the call would not wait).
    #[cold]
    #[inline(never)]
    fn call_refused<Req, B>(&mut self, req: Req, mut refusal: Refusal) -> State<S::Future>
    where
        S: Service<Req, Response = Response<B>>,
        S::Error: Into<BoxError>,
    {
        if refusal.stands() {
            return State::failed(refusal.reject());
        }
        let permit = match self.handle.try_reserve() {
            Ok(permit) => permit,
            Err(refusal) => return State::failed(refusal.reject()),
        };
        match self
            .inner
            .poll_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => self.admitted(req, permit),
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                permit.failure(class_of(&e));
                State::Failed { error: Some(e) }
            }
            Poll::Pending => {
                // The breaker would admit the call now, but the service is not ready for it:
                // it fails with the refusal reserved, to be retried at once (a refusal by an
                // operator who has since closed the breaker no longer stands: it says open).
                drop(permit);
                let mut open = refusal.reject();
                if open.state == BreakerState::Isolated {
                    open.state = BreakerState::Open;
                }
                open.retry_after = Some(Duration::ZERO);
                State::failed(open)
            }
        }
    }
}

impl<S, Req, B> Service<Req> for StreamBreaker<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
{
    type Response = Response<JudgedBody<B>>;
    type Error = BoxError;
    type Future = StreamBreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.slot {
            None => {
                // `get_or_insert`: nothing to drop in a slot known to be empty.
                let decision = self.handle.try_reserve();
                self.slot.get_or_insert(decision);
            }
            Some(Ok(_)) => {}
            // Polled again: a refusal stands only while the breaker has not moved.
            Some(Err(_)) => self.recheck(),
        }
        if matches!(self.slot, Some(Err(_))) {
            // Refused: ready at once, and the call fails fast.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => self.pending(),
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                if let Some(Ok(permit)) = self.slot.take() {
                    permit.failure(class_of(&e));
                }
                Poll::Ready(Err(e))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let slot = self
            .slot
            .take()
            .expect("`StreamBreaker::call` without a successful `poll_ready` first");
        let state = match slot {
            // Admitted, and the breaker has not moved since: the happy path.
            Ok(permit) if permit.is_current() => self.admitted(req, permit),
            Ok(stale) => self.call_moved(req, stale),
            Err(refusal) => self.call_refused(req, refusal),
        };
        StreamBreakerFuture { state }
    }
}

pin_project! {
    /// The response future of [`StreamBreaker`].
    pub struct StreamBreakerFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            inner: F,
            // Dropped with the future if the head never comes: a cancellation.
            permit: Option<Permit>,
            grpc: Option<GrpcClassifier>,
        },
        Failed {
            // The refusal, or the inner service's readiness error for a call decided again
            // at `call`.
            error: Option<BoxError>,
        },
    }
}

impl<F> State<F> {
    /// Fails the call with a refusal.
    #[cold]
    fn failed(open: palisade_breaker::CircuitOpen) -> Self {
        State::Failed {
            error: Some(Box::new(open)),
        }
    }
}

impl<F> fmt::Debug for StreamBreakerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBreakerFuture")
            .finish_non_exhaustive()
    }
}

const POLLED_AFTER_COMPLETION: &str = "`StreamBreaker` response future polled after completion";

impl<F, B, E> Future for StreamBreakerFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body + Send + 'static,
{
    type Output = Result<Response<JudgedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                inner,
                permit,
                grpc,
            } => {
                // The permit goes with the response: without it, the future has completed.
                assert!(permit.is_some(), "{POLLED_AFTER_COMPLETION}");
                let result = ready!(inner.poll(cx));
                let permit = permit.take().expect(POLLED_AFTER_COMPLETION);
                Poll::Ready(match result {
                    Ok(response) => {
                        let grpc = grpc.take();
                        // A gRPC call's final status: in the head (trailers-only), or not to
                        // be read from the body (a failing HTTP status); else it must come in
                        // the trailers.
                        let status_seen = crate::grpc::status_in_head(&response);
                        // A body that has already ended (a 204, a HEAD, `content-length: 0`)
                        // leaves nothing to wait for, and a caller that reads the status only
                        // drops it unpolled: the call is judged now.
                        let permit = if response.body().is_end_stream() {
                            judge(&mut Some(permit), ended(grpc.as_ref(), status_seen));
                            None
                        } else {
                            Some(permit)
                        };
                        Ok(response.map(|inner| JudgedBody {
                            inner,
                            permit,
                            grpc,
                            status_seen,
                        }))
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        permit.failure(class_of(&e));
                        Err(judged_failure::<B>(e))
                    }
                })
            }
            StateProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect(POLLED_AFTER_COMPLETION)))
            }
        }
    }
}

/// A response the classify layer below failed (`FailedResponse<Response<B>>`, or a
/// [`Classified`] around one), as one of the response type this service answers, so that
/// `FailedResponse::<Response<JudgedBody<B>>>::restore` above finds it: the same class and
/// summary, its body judging nothing (the breaker counted the failure already). Any other
/// error is returned as it is.
#[cold]
#[inline(never)]
fn judged_failure<B: Send + 'static>(err: BoxError) -> BoxError {
    let err = match err.downcast::<FailedResponse<Response<B>>>() {
        Ok(failed) => return Box::new(unjudged(*failed)),
        Err(err) => err,
    };
    match err.downcast::<Classified>() {
        Ok(classified) if classified.inner().is::<FailedResponse<Response<B>>>() => {
            let class = classified.class();
            Box::new(Classified::new(
                class,
                judged_failure::<B>(classified.into_inner()),
            ))
        }
        Ok(classified) => classified,
        Err(err) => err,
    }
}

/// `failed`, its body in a [`JudgedBody`] that judges nothing.
fn unjudged<B>(failed: FailedResponse<Response<B>>) -> FailedResponse<Response<JudgedBody<B>>> {
    let class = failed.class();
    let summary = failed.summary().map(str::to_owned);
    let response = failed.into_response().map(|inner| JudgedBody {
        inner,
        permit: None,
        grpc: None,
        status_seen: true,
    });
    let rebuilt = FailedResponse::new(response, class);
    match summary {
        Some(summary) => rebuilt.with_summary(summary),
        None => rebuilt,
    }
}

pin_project! {
    /// A response body of [`StreamBreaker`]: records its call's outcome with the breaker when
    /// it ends, fails or is dropped (see there). Frames and errors pass through unchanged.
    ///
    /// The body of a failed response restored from [`StreamBreaker`]'s error (see its
    /// "Errors") judges nothing: that call's outcome was recorded when the error left.
    pub struct JudgedBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        grpc: Option<GrpcClassifier>,
        // Whether the call's `grpc-status` was read or is not to be looked for (see `ended`).
        status_seen: bool,
    }
}

impl<B> fmt::Debug for JudgedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JudgedBody")
            .field("judged", &self.permit.is_none())
            .finish_non_exhaustive()
    }
}

impl<B> JudgedBody<B> {
    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

/// The outcome of a body that ended: a success, but for a gRPC call (`grpc`) whose final
/// status was never read, which failed with `UNKNOWN`, as tonic and grpc-go read it (gRPC over
/// HTTP/2 requires the status; a stream a proxy cut short ends so).
fn ended(grpc: Option<&GrpcClassifier>, status_seen: bool) -> Option<Class> {
    match grpc {
        Some(grpc) if !status_seen => Some(grpc.missing_status()),
        _ => None,
    }
}

/// Records `outcome` once: `None` a success, `Some(class)` a failure of that class.
fn judge(permit: &mut Option<Permit>, outcome: Option<Class>) {
    if let Some(permit) = permit.take() {
        match outcome {
            None => permit.success(),
            Some(class) => permit.failure(class),
        }
    }
}

impl<B> Body for JudgedBody<B>
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
        Poll::Ready(match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(grpc), Some(trailers)) = (&*this.grpc, frame.trailers_ref()) {
                    *this.status_seen |= trailers.contains_key(GRPC_STATUS);
                    if let Some((class, _)) = grpc.classify_trailers(trailers) {
                        judge(this.permit, Some(class));
                    }
                }
                // A body that knows it has ended may never be polled again.
                if this.inner.is_end_stream() {
                    judge(this.permit, ended(this.grpc.as_ref(), *this.status_seen));
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                judge(this.permit, Some(class_of(&e)));
                Some(Err(e))
            }
            None => {
                judge(this.permit, ended(this.grpc.as_ref(), *this.status_seen));
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
