//! Deadline propagation: the time left for a call, sent to the server in a header, and a
//! server's deadline taken from the headers of the requests it receives.
//!
//! A caller that will give up in 250 ms tells the server, so that the server gives up too
//! instead of finishing work nobody waits for. gRPC sends it as `grpc-timeout`
//! ([gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md): up to
//! eight digits and a unit, `250m`); for plain HTTP a millisecond header such as
//! `x-request-timeout-ms` is common (Envoy's `x-envoy-expected-rq-timeout-ms` is one).
//!
//! - Client side, [`PropagateDeadlineLayer`] writes the time left until palisade's deadline
//!   ([`context::deadline`], as palisade-timeout's
//!   `Deadline` layer above publishes it) on each outgoing request. Place it below the deadline
//!   and retry layers, so that each attempt sends what is left at the moment it is sent.
//! - Server side, [`ServerDeadlineLayer`] reads them from each incoming request and runs the
//!   call under that deadline: the layers below read it through `context::deadline` (a retry
//!   stops backing off past it), and the call fails with
//!   [`DeadlineExceeded`] when it passes, which
//!   [`ErrorResponseLayer`](crate::respond::ErrorResponseLayer) answers with 504.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use palisade_core::BoxError;
use palisade_core::context;
use palisade_core::failure::DeadlineExceeded;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc::{GRPC_TIMEOUT, parse_timeout, timeout_header};

/// `x-request-timeout-ms`: a conventional millisecond header for plain HTTP.
pub const X_REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// Writes the time left until the current deadline on outgoing requests: see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct PropagateDeadlineLayer {
    grpc: bool,
    millis: Option<HeaderName>,
    margin: Duration,
}

impl Default for PropagateDeadlineLayer {
    fn default() -> Self {
        PropagateDeadlineLayer {
            grpc: true,
            millis: None,
            margin: Duration::ZERO,
        }
    }
}

impl PropagateDeadlineLayer {
    /// Writes `grpc-timeout` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the time left in milliseconds in `header` (such as [`X_REQUEST_TIMEOUT_MS`]),
    /// too.
    pub fn millis_header(mut self, header: HeaderName) -> Self {
        self.millis = Some(header);
        self
    }

    /// Whether to write `grpc-timeout` (default `true`).
    pub fn grpc_timeout(mut self, enabled: bool) -> Self {
        self.grpc = enabled;
        self
    }

    /// Sends `margin` less than the time left (default zero), for the time the request and
    /// its answer spend on the way, so the server gives up before the caller does.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// Writes the time left until the current deadline on each request; see
/// [`PropagateDeadlineLayer`].
///
/// With no deadline in force, the request goes as it is (headers the caller set are kept). A
/// header the request already carries with a shorter limit than the time left (tonic's
/// `Request::set_timeout` writes `grpc-timeout`) is kept too: the call ends at the earlier of
/// the two, so that is what the server hears; a longer or malformed one is replaced. A
/// deadline already past is written as the smallest value, `0n`/`0`: the server should not
/// start the work.
///
/// ```
/// use http::Request;
/// use palisade::timeout::DeadlineLayer;
/// use palisade_core::BoxError;
/// use palisade_http::deadline::{PropagateDeadlineLayer, X_REQUEST_TIMEOUT_MS};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let echo = service_fn(|req: Request<()>| async move { Ok::<_, BoxError>(req.headers().clone()) });
/// let svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_millis(250)))
///     .layer(PropagateDeadlineLayer::new().millis_header(X_REQUEST_TIMEOUT_MS))
///     .service(echo);
/// let sent = svc.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(sent["grpc-timeout"], "250m");
/// assert_eq!(sent["x-request-timeout-ms"], "250");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
    layer: PropagateDeadlineLayer,
}

impl<S> PropagateDeadline<S> {
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

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if let Some(deadline) = context::deadline() {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(self.layer.margin);
            let headers = req.headers_mut();
            // A shorter limit the request already carries (tonic's `Request::set_timeout`
            // writes `grpc-timeout`) is the call's deadline: it stays.
            if self.layer.grpc
                && grpc_timeout(headers).is_none_or(|carried| carried > left)
                && let Ok(v) = timeout_header(left)
            {
                headers.insert(GRPC_TIMEOUT, v);
            }
            if let Some(name) = &self.layer.millis {
                let ms = u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
                if millis(headers, name).is_none_or(|carried| carried > Duration::from_millis(ms)) {
                    headers.insert(name.clone(), HeaderValue::from(ms));
                }
            }
        }
        self.inner.call(req)
    }
}

/// The limit in `headers`' `grpc-timeout`, if it has a valid one.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    crate::hint::text(headers, GRPC_TIMEOUT).and_then(parse_timeout)
}

/// The limit in `headers`' millisecond header `name`, if it has a valid one.
fn millis(headers: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    crate::hint::text(headers, name.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Runs each incoming request under the deadline its headers ask for: see
/// [`ServerDeadline`].
#[derive(Clone, Debug)]
pub struct ServerDeadlineLayer {
    grpc: bool,
    millis: Option<HeaderName>,
    max: Option<Duration>,
    default: Option<Duration>,
}

impl Default for ServerDeadlineLayer {
    fn default() -> Self {
        ServerDeadlineLayer {
            grpc: true,
            millis: Some(X_REQUEST_TIMEOUT_MS),
            max: None,
            default: None,
        }
    }
}

impl ServerDeadlineLayer {
    /// Reads `grpc-timeout` and `x-request-timeout-ms`, with no ceiling and no default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads milliseconds from `header` instead of `x-request-timeout-ms` (`None`: from no
    /// millisecond header).
    pub fn millis_header(mut self, header: Option<HeaderName>) -> Self {
        self.millis = header;
        self
    }

    /// Whether to read `grpc-timeout` (default `true`).
    pub fn grpc_timeout(mut self, enabled: bool) -> Self {
        self.grpc = enabled;
        self
    }

    /// Grants no call more than `max`, whatever it asks for.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = Some(max);
        self
    }

    /// Grants a call that asks for nothing `limit` (default: no deadline).
    pub fn default_limit(mut self, limit: Duration) -> Self {
        self.default = Some(limit);
        self
    }

    /// The limit a request with these headers gets, if any: the shortest it asks for, capped.
    pub fn limit_for(&self, headers: &http::HeaderMap) -> Option<Duration> {
        let grpc = self.grpc.then(|| grpc_timeout(headers)).flatten();
        let millis = self.millis.as_ref().and_then(|name| millis(headers, name));
        let asked = match (grpc, millis) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limit = asked.or(self.default)?;
        Some(match self.max {
            Some(max) => limit.min(max),
            None => limit,
        })
    }
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> ServerDeadline<S> {
        ServerDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// Runs each call under the deadline its request's headers ask for (`grpc-timeout`,
/// `x-request-timeout-ms`; the shortest when both are present; capped by
/// [`max`](ServerDeadlineLayer::max)): published to the layers below through
/// [`context::deadline`], and failing the call with [`DeadlineExceeded`] when it passes. A
/// request that asks for nothing runs as before (or under
/// [`default_limit`](ServerDeadlineLayer::default_limit)); a malformed value is ignored.
///
/// The clock starts when the request is called: the time it spent on the way is not known
/// here (see [`PropagateDeadlineLayer::margin`] on the caller's side).
///
/// ```
/// use http::{Request, Response};
/// use palisade_core::{BoxError, context};
/// use palisade_http::deadline::ServerDeadlineLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = tokio::time::Instant::now();
/// let handler = service_fn(|_: Request<()>| async move {
///     Ok::<_, BoxError>(context::deadline())
/// });
/// let svc = ServiceBuilder::new().layer(ServerDeadlineLayer::new()).service(handler);
/// let req = Request::get("/").header("grpc-timeout", "2S").body(()).unwrap();
/// let deadline = svc.oneshot(req).await.unwrap();
/// assert_eq!(deadline, Some(start + Duration::from_secs(2)));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ServerDeadline<S> {
    inner: S,
    layer: ServerDeadlineLayer,
}

impl<S> ServerDeadline<S> {
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

impl<S, B> Service<Request<B>> for ServerDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ServerDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(limit) = self.layer.limit_for(req.headers()) else {
            return ServerDeadlineFuture {
                inner: self.inner.call(req),
                sleep: None,
            };
        };
        let deadline = context::deadline_after(Instant::now(), limit);
        let inner = &mut self.inner;
        let future = context::with_deadline(deadline, || inner.call(req));
        ServerDeadlineFuture {
            inner: future,
            sleep: Some(sleep_until(deadline)),
        }
    }
}

pin_project! {
    /// The response future of [`ServerDeadline`].
    pub struct ServerDeadlineFuture<F> {
        #[pin]
        inner: F,
        // The deadline's timer (its instant is the deadline); `None` without one.
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F> fmt::Debug for ServerDeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerDeadlineFuture")
            .field("deadline", &self.sleep.as_ref().map(Sleep::deadline))
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ServerDeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = match this.sleep.as_ref().as_pin_ref() {
            Some(sleep) => context::with_deadline(sleep.deadline(), || inner.poll(cx)),
            None => inner.poll(cx),
        };
        if let Poll::Ready(out) = polled {
            return Poll::Ready(out.map_err(Into::into));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Box::new(DeadlineExceeded::new()))),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{Category, class_of};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn limits_from_headers() {
        let l = ServerDeadlineLayer::new();
        let ms = Duration::from_millis;
        assert_eq!(l.limit_for(request(&[]).headers()), None);
        assert_eq!(
            l.limit_for(request(&[("grpc-timeout", "250m")]).headers()),
            Some(ms(250))
        );
        assert_eq!(
            l.limit_for(request(&[("x-request-timeout-ms", "90")]).headers()),
            Some(ms(90))
        );
        assert_eq!(
            l.limit_for(
                request(&[("grpc-timeout", "1S"), ("x-request-timeout-ms", "400")]).headers()
            ),
            Some(ms(400))
        );
        assert_eq!(
            l.limit_for(request(&[("grpc-timeout", "soon")]).headers()),
            None
        );
        assert_eq!(
            l.limit_for(request(&[("x-request-timeout-ms", "-5")]).headers()),
            None
        );
        let capped = ServerDeadlineLayer::new()
            .max(ms(100))
            .default_limit(ms(50));
        assert_eq!(
            capped.limit_for(request(&[("grpc-timeout", "5S")]).headers()),
            Some(ms(100))
        );
        assert_eq!(capped.limit_for(request(&[]).headers()), Some(ms(50)));
        let grpc_only = ServerDeadlineLayer::new().millis_header(None);
        assert_eq!(
            grpc_only.limit_for(request(&[("x-request-timeout-ms", "90")]).headers()),
            None
        );
        let none = ServerDeadlineLayer::new().grpc_timeout(false);
        assert_eq!(
            none.limit_for(request(&[("grpc-timeout", "1S")]).headers()),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_gives_up_at_the_callers_deadline() {
        let slow = service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>("done")
        });
        let svc = ServiceBuilder::new()
            .layer(ServerDeadlineLayer::new())
            .service(slow);
        let start = Instant::now();
        let err = svc
            .clone()
            .oneshot(request(&[("grpc-timeout", "250m")]))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(class_of(&err).category, Category::Timeout);
        // Just enough time: it finishes.
        assert_eq!(
            svc.clone()
                .oneshot(request(&[("x-request-timeout-ms", "1001")]))
                .await
                .unwrap(),
            "done"
        );
        // No header: no deadline.
        assert_eq!(svc.oneshot(request(&[])).await.unwrap(), "done");
    }

    /// A service that is never ready.
    #[derive(Clone)]
    struct NeverReady;

    impl tower::Service<Request<()>> for NeverReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn readiness_is_the_inner_services() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut propagate = PropagateDeadlineLayer::new().layer(NeverReady);
        assert!(tower::Service::poll_ready(&mut propagate, &mut cx).is_pending());
        let mut server = ServerDeadlineLayer::new().layer(NeverReady);
        assert!(tower::Service::poll_ready(&mut server, &mut cx).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_future_shows_its_deadline() {
        let mut svc = ServerDeadlineLayer::new()
            .layer(service_fn(|_: Request<()>| async { Ok::<_, BoxError>(()) }));
        let with = svc.call(request(&[("grpc-timeout", "2S")]));
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(
            format!("{with:?}"),
            format!("ServerDeadlineFuture {{ deadline: Some({deadline:?}), .. }}")
        );
        let without = svc.call(request(&[]));
        assert_eq!(
            format!("{without:?}"),
            "ServerDeadlineFuture { deadline: None, .. }"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_the_request_already_carries_is_kept() {
        use palisade::timeout::DeadlineLayer;
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(5)))
            .layer(PropagateDeadlineLayer::new().millis_header(X_REQUEST_TIMEOUT_MS))
            .service(service_fn(|req: Request<()>| async move {
                Ok::<_, BoxError>(req.headers().clone())
            }));
        // tonic's `Request::set_timeout` writes `grpc-timeout`: the caller's shorter limit is
        // the call's deadline, and stays.
        let sent = svc
            .clone()
            .oneshot(request(&[
                ("grpc-timeout", "100m"),
                ("x-request-timeout-ms", "200"),
            ]))
            .await
            .unwrap();
        assert_eq!(sent["grpc-timeout"], "100m");
        assert_eq!(sent["x-request-timeout-ms"], "200");
        // A longer one is cut to the time left; a malformed one is replaced.
        let sent = svc
            .oneshot(request(&[
                ("grpc-timeout", "1H"),
                ("x-request-timeout-ms", "soon"),
            ]))
            .await
            .unwrap();
        assert_eq!(sent["grpc-timeout"], "5S");
        assert_eq!(sent["x-request-timeout-ms"], "5000");
    }

    #[tokio::test(start_paused = true)]
    async fn propagation_without_grpc_timeout() {
        use palisade::timeout::DeadlineLayer;
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(1)))
            .layer(
                PropagateDeadlineLayer::new()
                    .grpc_timeout(false)
                    .millis_header(X_REQUEST_TIMEOUT_MS),
            )
            .service(service_fn(|req: Request<()>| async move {
                Ok::<_, BoxError>(req.headers().clone())
            }));
        let headers = svc.oneshot(request(&[])).await.unwrap();
        assert!(!headers.contains_key("grpc-timeout"));
        assert_eq!(headers["x-request-timeout-ms"], "1000");
    }

    #[tokio::test(start_paused = true)]
    async fn propagation_sends_what_is_left_at_each_attempt() {
        use palisade::timeout::DeadlineLayer;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let client = service_fn(move |req: Request<()>| {
            s.lock().unwrap().push(req.headers().clone());
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, BoxError>(())
            }
        });
        // Two calls in a row under one deadline: the second sends 100 ms less.
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(1)))
            .service(service_fn(move |req: Request<()>| {
                let mut c = ServiceBuilder::new()
                    .layer(
                        PropagateDeadlineLayer::new()
                            .millis_header(X_REQUEST_TIMEOUT_MS)
                            .margin(Duration::from_millis(10)),
                    )
                    .service(client.clone());
                async move {
                    c.ready().await?.call(req).await?;
                    c.ready().await?.call(request(&[])).await
                }
            }));
        svc.oneshot(request(&[])).await.unwrap();
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen[0]["grpc-timeout"], "990m");
            assert_eq!(seen[0]["x-request-timeout-ms"], "990");
            assert_eq!(seen[1]["grpc-timeout"], "890m");
        }

        // Without a deadline nothing is written.
        let plain = ServiceBuilder::new()
            .layer(PropagateDeadlineLayer::new())
            .service(service_fn(|req: Request<()>| async move {
                Ok::<_, BoxError>(req.headers().contains_key("grpc-timeout"))
            }));
        assert!(!plain.oneshot(request(&[])).await.unwrap());
    }
}
