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
//!   and retry layers, so that each attempt sends what is left at the moment it is sent. That
//!   is the whole call's time left, not an attempt's: a per-attempt `Timeout` does not publish
//!   a deadline (it is a limit on this attempt, after which the caller retries), so a server
//!   told 1 s may work on for 800 ms after a 200 ms attempt timeout gave up on it. (A
//!   `Deadline` below the retry layer would publish the attempt's limit, but its
//!   `DeadlineExceeded` is not retryable: the request would end at the first attempt that ran
//!   out of time.)
//! - Server side, [`ServerDeadlineLayer`] reads them from each incoming request and runs the
//!   call under that deadline: the layers below read it through `context::deadline` (a retry
//!   stops backing off past it), and the call fails with
//!   [`DeadlineExceeded`] when it passes, which
//!   [`ErrorResponseLayer`](crate::respond::ErrorResponseLayer) answers with 504, or, on a
//!   gRPC server, [`ErrorResponseLayer::grpc`](crate::respond::ErrorResponseLayer::grpc)
//!   with `DEADLINE_EXCEEDED` (a gRPC client reads a 504 as `UNAVAILABLE`, and retries it). A request
//!   whose deadline is already over (`grpc-timeout: 0n`) fails so at once, without running
//!   the handler.
//!
//! # A limit the caller set on the request
//!
//! tonic's `Request::set_timeout` writes `grpc-timeout` on the request (so may any client
//! that sets the header itself), and tonic's `Channel` ends each request it sends when that
//! limit passes. Below a retry layer, that is **one attempt's** limit: each attempt is a copy
//! of the caller's request, with the caller's header, so a hanging call with
//! `set_timeout(200ms)` under a 30 s deadline runs 200 ms per attempt, three attempts and
//! their backoff, well past the 200 ms the caller asked for. [`PropagateDeadline`] keeps a
//! carried header that is shorter than the time left, and cannot tell it apart from one
//! meant for one attempt.
//!
//! To make it the **whole call's** deadline, put [`ServerDeadlineLayer`] on the client, above
//! the retry (above palisade's preset): it reads the header into palisade's deadline, and the
//! call fails with [`DeadlineExceeded`] (`DEADLINE_EXCEEDED` for tonic, through
//! [`GrpcStatus::from_error`](crate::grpc::GrpcStatus::from_error)) when it passes, retries
//! and backoff included. [`PropagateDeadline`] below the retry then sees a deadline no later
//! than the header's and sends each attempt the time left: 200 ms to the first, 150 ms to a
//! retry 50 ms later, never the caller's 200 ms again.
//!
//! ```
//! use http::{Request, Response};
//! use palisade::retry::{Backoff, Jitter, RetryLayer};
//! use palisade::{ServiceBuilderExt, preset};
//! use palisade_core::BoxError;
//! use palisade_http::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
//! use palisade_http::grpc::GrpcClassifier;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // A server that answers the first attempt `UNAVAILABLE`, and notes what each one was told.
//! let sent = Arc::new(Mutex::new(Vec::new()));
//! let told = sent.clone();
//! let channel = service_fn(move |req: Request<()>| {
//!     let mut told = told.lock().unwrap();
//!     told.push(req.headers()["grpc-timeout"].clone());
//!     let status = if told.len() == 1 { "14" } else { "0" };
//!     async move { Ok::<_, BoxError>(Response::builder().header("grpc-status", status).body(())?) }
//! });
//! let retry = RetryLayer::builder()
//!     .backoff(Backoff::constant(Duration::from_millis(50)))
//!     .jitter(Jitter::None)
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     // The caller's `grpc-timeout`: the whole call's deadline.
//!     .layer(ServerDeadlineLayer::new())
//!     .palisade(preset::recommended("greeter").classifier(GrpcClassifier::new()).retry(retry).build()?)
//!     // Each attempt: the time left.
//!     .layer(PropagateDeadlineLayer::new())
//!     .service(channel);
//! // What tonic's `set_timeout(Duration::from_millis(200))` writes.
//! let req = Request::builder().header("grpc-timeout", "200000u").body(())?;
//! client.oneshot(req).await?;
//! assert_eq!(*sent.lock().unwrap(), ["200000u", "150m"]);
//! # Ok(()) }
//! ```
//!
//! The [`grpc`](crate::grpc#tonic-clients) module shows the whole stack for a tonic client.

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

/// [`GRPC_TIMEOUT`] as a header name, parsed once: looked up on every request.
const GRPC_TIMEOUT_NAME: HeaderName = HeaderName::from_static(GRPC_TIMEOUT);

/// Writes the time left until the current deadline on outgoing requests: see the
/// [module docs](self).
///
/// It writes one form of the time left, chosen by what the dependency speaks: `grpc-timeout`
/// by default, for a gRPC server; the millisecond header named by
/// [`millis_header`](Self::millis_header) instead, for a plain HTTP one. Both, with
/// `.millis_header(..).grpc_timeout(true)` (a proxy in front of gRPC servers that reads the
/// other).
#[derive(Clone, Debug, Default)]
pub struct PropagateDeadlineLayer {
    /// Whether to write `grpc-timeout`, when [`grpc_timeout`](Self::grpc_timeout) said;
    /// `None`: unless a millisecond header is named.
    grpc: Option<bool>,
    millis: Option<HeaderName>,
    margin: Duration,
}

impl PropagateDeadlineLayer {
    /// Writes `grpc-timeout` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the time left in milliseconds in `header` (such as [`X_REQUEST_TIMEOUT_MS`])
    /// **instead of** `grpc-timeout`: naming a millisecond header chooses the plain HTTP
    /// form, and a plain HTTP dependency is not sent a gRPC header it has no use for. To send
    /// both, add [`grpc_timeout(true)`](Self::grpc_timeout) (before or after this call).
    pub fn millis_header(mut self, header: HeaderName) -> Self {
        self.millis = Some(header);
        self
    }

    /// Whether to write `grpc-timeout` (default: `true`, unless
    /// [`millis_header`](Self::millis_header) named a header). Said here, it holds whatever
    /// `millis_header` does.
    pub fn grpc_timeout(mut self, enabled: bool) -> Self {
        self.grpc = Some(enabled);
        self
    }

    /// Whether `grpc-timeout` is written.
    fn writes_grpc(&self) -> bool {
        self.grpc.unwrap_or(self.millis.is_none())
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
/// With no deadline in force, the request goes as it is (headers the caller set are kept).
/// The deadline is read from the context of the task that calls this service: put it above
/// the client, on the caller's task, as the other layers are. (Below a `tower::buffer::Buffer`,
/// a spawned task or a client with a task of its own, the context is not there, and no header
/// is sent, unless `palisade::context::CarryLayer` above the boundary and `ResumeLayer` below
/// it carry it across. tonic's `Channel` is a buffer, but nothing can be put below it: with
/// this layer and all of palisade's above the `Channel`, the pair is not needed.)
///
/// A header the request already carries with a shorter limit than the time left is kept (its
/// limit is the shortest of its values, over repeated headers and comma-separated values, as
/// [`ServerDeadline`] reads them); a longer or malformed one is replaced, every value of it. Below a retry layer, a kept header is **one
/// attempt's** limit, not the call's: every attempt is a copy of the caller's request,
/// carrying the caller's header again, and the client (tonic's `Channel`, for the
/// `grpc-timeout` that tonic's `Request::set_timeout` writes) ends each attempt when it
/// passes. To make such a header the whole call's deadline, put [`ServerDeadlineLayer`] above
/// the retry: the deadline this layer then reads is no later than the header's, so every
/// attempt, the first and each retry, sends the time left (see the
/// [module docs](self#a-limit-the-caller-set-on-the-request)). A deadline already past is
/// written as the smallest value, `0n`/`0`: the server should not start the work
/// ([`ServerDeadline`] answers such a request at once, without calling its handler).
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
/// assert_eq!(sent["x-request-timeout-ms"], "250");
/// // A millisecond header is the plain HTTP form: no `grpc-timeout` beside it.
/// assert!(!sent.contains_key("grpc-timeout"));
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
            if self.layer.writes_grpc()
                && grpc_timeout(headers).is_none_or(|carried| carried > left)
                && let Ok(v) = timeout_header(left)
            {
                headers.insert(GRPC_TIMEOUT_NAME, v);
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

/// The shortest limit in `headers`' `grpc-timeout`, over every value (each header, and each
/// part of a comma-separated one) that is valid; `None` when none is.
///
/// A value has at most eight digits (gRPC over HTTP/2), so it cannot overflow: a longer one
/// is malformed, and ignored as such.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    shortest(headers, &GRPC_TIMEOUT_NAME, parse_timeout)
}

/// The shortest limit in `headers`' millisecond header `name`, over every value (each
/// header, and each part of a comma-separated one) that is valid; `None` when none is.
///
/// A number of milliseconds too large for a `u64` is the longest limit there is
/// (`u64::MAX` ms), not a malformed value: a caller that asks for more than a ceiling gets
/// the ceiling.
fn millis(headers: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    shortest(headers, name, parse_millis)
}

/// A number of milliseconds: ASCII digits (a `+` sign allowed, as `u64`'s parser allows),
/// saturating at `u64::MAX`.
fn parse_millis(value: &str) -> Option<Duration> {
    match value.parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Some(Duration::from_millis(u64::MAX))
        }
        Err(_) => None,
    }
}

/// The smallest of the values of every header `name` in `headers`, each split at commas
/// (RFC 9110 §5.3: several headers of one name are one list), trimmed, and read by `parse`;
/// the parts that do not parse are ignored. A proxy that appends its own, shorter limit to
/// the caller's is obeyed, whichever comes first.
///
/// `name` is a [`HeaderName`], not a `&str`: a string would be parsed into a header name
/// again on every lookup (about 200 instructions each, on every request).
fn shortest(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: impl Fn(&str) -> Option<Duration>,
) -> Option<Duration> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| parse(part.trim()))
        .min()
}

/// Runs each incoming request under the deadline its headers ask for: see
/// [`ServerDeadline`].
///
/// It serves a client too: above the retry layer of a client, it makes a limit the caller
/// wrote on the request (tonic's `Request::set_timeout`) the whole call's deadline, where the
/// client alone would apply it to each attempt (see
/// [the module docs](self#a-limit-the-caller-set-on-the-request)).
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
    /// Reads `grpc-timeout` and `x-request-timeout-ms` (the shortest of all their values),
    /// with no ceiling and no default.
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

    /// Grants no call more than `max`, whatever it asks for, and whether it asks at all: a
    /// request without a valid deadline header gets
    /// [`default_limit`](Self::default_limit) when one is set, else `max`. A value too large
    /// to read (`x-request-timeout-ms: 99999999999999999999999`) asks for the longest limit
    /// there is, and gets `max` too.
    ///
    /// ```
    /// use http::Request;
    /// use palisade_http::deadline::ServerDeadlineLayer;
    /// use std::time::Duration;
    ///
    /// let layer = ServerDeadlineLayer::new().max(Duration::from_secs(10));
    /// let asks = |value: &str| Request::get("/").header("x-request-timeout-ms", value).body(()).unwrap();
    /// assert_eq!(layer.limit_for(asks("250").headers()), Some(Duration::from_millis(250)));
    /// assert_eq!(layer.limit_for(asks("60000").headers()), Some(Duration::from_secs(10)));
    /// assert_eq!(layer.limit_for(asks("99999999999999999999999").headers()), Some(Duration::from_secs(10)));
    /// // No header: the ceiling, unless a default is set.
    /// let none = Request::get("/").body(()).unwrap();
    /// assert_eq!(layer.limit_for(none.headers()), Some(Duration::from_secs(10)));
    /// let layer = layer.default_limit(Duration::from_secs(2));
    /// assert_eq!(layer.limit_for(none.headers()), Some(Duration::from_secs(2)));
    /// ```
    pub fn max(mut self, max: Duration) -> Self {
        self.max = Some(max);
        self
    }

    /// Grants a call that asks for nothing (no header, or none with a valid value) `limit`,
    /// capped by [`max`](Self::max) (default: `max` if set, else no deadline).
    pub fn default_limit(mut self, limit: Duration) -> Self {
        self.default = Some(limit);
        self
    }

    /// The limit a request with these headers gets, if any: the shortest it asks for over
    /// every value of the headers read (several headers of one name, comma-separated values;
    /// malformed ones ignored), capped by [`max`](Self::max); for a request that asks for
    /// nothing, [`default_limit`](Self::default_limit), else `max`, else none.
    pub fn limit_for(&self, headers: &http::HeaderMap) -> Option<Duration> {
        let grpc = self.grpc.then(|| grpc_timeout(headers)).flatten();
        let millis = self.millis.as_ref().and_then(|name| millis(headers, name));
        let asked = match (grpc, millis) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Asking for nothing: the default, else the ceiling.
        let limit = asked.or(self.default).or(self.max)?;
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
/// `x-request-timeout-ms`; the shortest of every value present, both headers, repeated
/// headers and comma-separated values alike; capped by [`max`](ServerDeadlineLayer::max)):
/// published to the layers below through [`context::deadline`], and failing the call with
/// [`DeadlineExceeded`] when it passes. A malformed value is ignored; a request that asks for
/// nothing runs under [`default_limit`](ServerDeadlineLayer::default_limit) if set, else
/// under [`max`](ServerDeadlineLayer::max) if set, else without a deadline.
///
/// The clock starts when the request is called: the time it spent on the way is not known
/// here (see [`PropagateDeadlineLayer::margin`] on the caller's side).
///
/// # Expiry
///
/// When the deadline passes, the call fails with [`DeadlineExceeded`] (a `Timeout`, which
/// [`ErrorResponseLayer`](crate::respond::ErrorResponseLayer) answers with 504, and
/// [`ErrorResponseLayer::grpc`](crate::respond::ErrorResponseLayer::grpc) with
/// `DEADLINE_EXCEEDED`) and the
/// handler's future is dropped. The error says the limit the request was granted (what its
/// headers asked for, capped by [`max`](ServerDeadlineLayer::max), or the
/// [`default_limit`](ServerDeadlineLayer::default_limit)): `deadline of 250 ms exceeded`. A deadline that is over before the handler starts fails the
/// same way, at once, and the handler never runs, as
/// [gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) has the
/// server give up on a call whose deadline has passed:
///
/// - a request that asks for no time at all (`grpc-timeout: 0n`, `x-request-timeout-ms: 0`,
///   what [`PropagateDeadline`] sends when the caller's deadline has passed; or a
///   [`max`](ServerDeadlineLayer::max) of zero) is not passed to the inner service;
/// - a response future first polled at or after its deadline is dropped unpolled (an `async`
///   handler's body runs only when polled).
///
/// Once the handler's future has been polled, an answer it has ready wins over a deadline
/// that passed in the meantime, as with `tokio::time::timeout`: the work is done, and the
/// answer is sent rather than thrown away. An error it has ready at or past the deadline is
/// the deadline's, [`DeadlineExceeded`]: the caller has given up by then, and below a client
/// the attempt that ran out of time fails at that very instant with the transport's own
/// timeout (tonic's `Channel` applies the `grpc-timeout` [`PropagateDeadline`] sent it),
/// which would say less. An error before the deadline is the handler's.
///
/// # On a client
///
/// Above a client's retry layer, it runs each call under the limit the caller wrote on the
/// request (`grpc-timeout`, which tonic's `Request::set_timeout` writes): the layers below
/// read it as palisade's deadline (a `Deadline` layer below keeps the earlier of the two, a
/// retry does not back off past it, [`PropagateDeadline`] sends each attempt the time left),
/// and the call fails with [`DeadlineExceeded`] when it passes. See
/// [the module docs](self#a-limit-the-caller-set-on-the-request).
///
/// # Readiness
///
/// Readiness is the inner service's. A request refused because its deadline is already over
/// is not passed to the inner service: `call` is not made after the inner `poll_ready`
/// answered ready, which tower allows, but whatever that `poll_ready` reserved for the call
/// (a slot in tower's `Buffer`, a `ConcurrencyLimit` permit) stays with this service until
/// its next call uses it, or until it is dropped. axum and hyper-util's
/// `TowerToHyperService` call a clone of the service for each request and drop it after, so
/// the reservation is released with it.
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
                state: State::Plain {
                    inner: self.inner.call(req),
                },
            };
        };
        let now = Instant::now();
        let deadline = context::deadline_after(now, limit);
        if deadline <= now {
            // Over before it starts: the inner service is not called (see "Readiness").
            return ServerDeadlineFuture {
                state: State::Expired { deadline, limit },
            };
        }
        let inner = &mut self.inner;
        let future = context::with_deadline(deadline, || inner.call(req));
        ServerDeadlineFuture {
            state: State::Timed {
                inner: future,
                sleep: sleep_until(deadline),
                polled: false,
                limit,
            },
        }
    }
}

pin_project! {
    /// The response future of [`ServerDeadline`].
    pub struct ServerDeadlineFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // No deadline: the inner future alone.
        Plain {
            #[pin]
            inner: F,
        },
        // Under a deadline, the instant of `sleep`, `limit` after the call; `polled` once
        // `inner` has been polled.
        Timed {
            #[pin]
            inner: F,
            #[pin]
            sleep: Sleep,
            polled: bool,
            limit: Duration,
        },
        // The deadline was over before the handler started: no inner future (any left was
        // dropped unpolled).
        Expired {
            deadline: Instant,
            limit: Duration,
        },
    }
}

impl<F> fmt::Debug for ServerDeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deadline = match &self.state {
            State::Plain { .. } => None,
            State::Timed { sleep, .. } => Some(sleep.deadline()),
            State::Expired { deadline, .. } => Some(*deadline),
        };
        f.debug_struct("ServerDeadlineFuture")
            .field("deadline", &deadline)
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
        let mut state = self.project().state;
        let (deadline, limit) = match state.as_mut().project() {
            StateProj::Plain { inner } => return inner.poll(cx).map_err(Into::into),
            StateProj::Expired { limit, .. } => return Poll::Ready(Err(expired(*limit))),
            StateProj::Timed {
                inner,
                sleep,
                polled,
                limit,
            } => {
                let deadline = sleep.deadline();
                // The first poll starts the handler: not at or past the deadline. After it, a
                // result that is ready wins over the timer.
                if *polled || Instant::now() < deadline {
                    *polled = true;
                    if let Poll::Ready(out) = context::with_deadline(deadline, || inner.poll(cx)) {
                        return Poll::Ready(match out {
                            Ok(response) => Ok(response),
                            // Failed at or past the deadline: the deadline's failure (a client
                            // below that applies the `grpc-timeout` sent to it gives up at the
                            // same instant, with its own timeout error).
                            Err(_) if Instant::now() >= deadline => Err(expired(*limit)),
                            Err(e) => Err(e.into()),
                        });
                    }
                    return match sleep.poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(expired(*limit))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                (deadline, *limit)
            }
        };
        // Over before the handler started: drop its future unpolled, now.
        state.set(State::Expired { deadline, limit });
        Poll::Ready(Err(expired(limit)))
    }
}

/// The error of a call whose deadline, `limit` after the call, passed.
fn expired(limit: Duration) -> BoxError {
    Box::new(DeadlineExceeded::with_limit(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{Category, class_of};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
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

    /// A millisecond value too large for a `u64` asks for longer than any other: capped by
    /// `max` like `u64::MAX - 1` is, not ignored as malformed (which would leave the request
    /// to `default_limit`, or to no deadline at all).
    #[tokio::test(start_paused = true)]
    async fn an_overflowing_millisecond_value_is_capped_not_ignored() {
        let ms = Duration::from_millis;
        let capped = ServerDeadlineLayer::new().max(Duration::from_secs(5));
        for (huge, uncapped) in [
            ("18446744073709551614", u64::MAX - 1),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551616", u64::MAX),
            ("99999999999999999999999", u64::MAX),
            (" 99999999999999999999999999999999999999 ", u64::MAX),
        ] {
            let headers = request(&[("x-request-timeout-ms", huge)]);
            assert_eq!(
                capped.limit_for(headers.headers()),
                Some(Duration::from_secs(5)),
                "{huge:?}"
            );
            // Without a ceiling: the longest a millisecond header can say.
            assert_eq!(
                ServerDeadlineLayer::new().limit_for(headers.headers()),
                Some(ms(uncapped)),
                "{huge:?}"
            );
        }
        // Still malformed: a sign, a fraction, an exponent, a unit.
        for bad in ["-99999999999999999999999", "1.5", "1e3", "5s", ""] {
            assert_eq!(
                ServerDeadlineLayer::new()
                    .limit_for(request(&[("x-request-timeout-ms", bad)]).headers()),
                None,
                "{bad:?}"
            );
        }
        // The work is bounded by `max`.
        let hanging = service_fn(|_: Request<()>| std::future::pending::<Result<(), BoxError>>());
        let start = Instant::now();
        let err = capped
            .layer(hanging)
            .oneshot(request(&[(
                "x-request-timeout-ms",
                "99999999999999999999999",
            )]))
            .await
            .unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// Every value counts, the shortest wins: a second header a proxy appended, or values
    /// joined by commas in one (RFC 9110 §5.3 makes the two the same).
    #[test]
    fn every_value_of_a_deadline_header_counts_and_the_shortest_wins() {
        let l = ServerDeadlineLayer::new();
        let ms = Duration::from_millis;
        for (headers, want) in [
            (
                &[
                    ("x-request-timeout-ms", "5000"),
                    ("x-request-timeout-ms", "100"),
                ][..],
                Some(ms(100)),
            ),
            (&[("x-request-timeout-ms", "5000, 100")], Some(ms(100))),
            (&[("x-request-timeout-ms", "100,5000")], Some(ms(100))),
            (&[("x-request-timeout-ms", "soon, 200")], Some(ms(200))),
            (&[("x-request-timeout-ms", ", ,")], None),
            (
                &[("grpc-timeout", "1S"), ("grpc-timeout", "100m")],
                Some(ms(100)),
            ),
            (&[("grpc-timeout", "1S, 100m")], Some(ms(100))),
            (&[("grpc-timeout", "100m,soon")], Some(ms(100))),
            (
                &[
                    ("grpc-timeout", "1S, 300m"),
                    ("x-request-timeout-ms", "2000, 400"),
                ],
                Some(ms(300)),
            ),
            // A value too large for the type counts as the longest, not as the shortest.
            (
                &[("x-request-timeout-ms", "99999999999999999999999, 700")],
                Some(ms(700)),
            ),
        ] {
            assert_eq!(l.limit_for(request(headers).headers()), want, "{headers:?}");
        }
    }

    /// `max` is a ceiling for every request: one that asks for nothing (or for something
    /// malformed) gets `default_limit` when set, else `max`.
    #[test]
    fn max_bounds_a_request_that_asks_for_nothing() {
        let ms = Duration::from_millis;
        let capped = ServerDeadlineLayer::new().max(ms(100));
        for headers in [
            &[][..],
            &[("x-request-timeout-ms", "soon")],
            &[("grpc-timeout", "1x")],
        ] {
            assert_eq!(
                capped.limit_for(request(headers).headers()),
                Some(ms(100)),
                "{headers:?}"
            );
        }
        // A default under the ceiling: the default.
        let both = ServerDeadlineLayer::new()
            .max(ms(100))
            .default_limit(ms(50));
        assert_eq!(both.limit_for(request(&[]).headers()), Some(ms(50)));
        // A default over the ceiling: the ceiling.
        let over = ServerDeadlineLayer::new()
            .default_limit(ms(500))
            .max(ms(100));
        assert_eq!(over.limit_for(request(&[]).headers()), Some(ms(100)));
        // Neither: no deadline.
        assert_eq!(
            ServerDeadlineLayer::new().limit_for(request(&[]).headers()),
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
        // It says the limit the caller sent.
        assert_eq!(err.to_string(), "deadline of 250 ms exceeded");
        let limit = err.downcast_ref::<DeadlineExceeded>().unwrap().limit();
        assert_eq!(limit, Some(Duration::from_millis(250)));
        // Capped by the layer: the cap.
        let capped = ServiceBuilder::new()
            .layer(ServerDeadlineLayer::new().max(Duration::from_millis(100)))
            .service(slow);
        let err = capped
            .oneshot(request(&[("grpc-timeout", "250m")]))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "deadline of 100 ms exceeded");
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

    /// A handler that counts the calls made to it and the times its future started (was
    /// polled), answering after `work` (none: at once).
    fn recording(
        work: Duration,
    ) -> (
        impl Service<Request<()>, Response = &'static str, Error = BoxError, Future: Send> + Clone,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ) {
        let called = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (c, s) = (called.clone(), started.clone());
        let handler = service_fn(move |_: Request<()>| {
            c.fetch_add(1, SeqCst);
            let s = s.clone();
            async move {
                s.fetch_add(1, SeqCst);
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                Ok::<_, BoxError>("done")
            }
        });
        (handler, called, started)
    }

    /// What `PropagateDeadline` sends once the caller's deadline has passed, and the same in
    /// other units or beside a longer limit (the shortest counts).
    const OVER: [&[(&str, &str)]; 5] = [
        &[("grpc-timeout", "0n")],
        &[("x-request-timeout-ms", "0")],
        &[("grpc-timeout", "0H")],
        &[("grpc-timeout", "1S"), ("x-request-timeout-ms", "0")],
        &[("grpc-timeout", "0m"), ("x-request-timeout-ms", "1000")],
    ];

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_over_fails_at_once_without_calling_the_handler() {
        let (handler, called, started) = recording(Duration::ZERO);
        let svc = ServerDeadlineLayer::new().layer(handler);
        let start = Instant::now();
        for headers in OVER {
            let err = svc.clone().oneshot(request(headers)).await.unwrap_err();
            // The error of a deadline that passes during the handler, for no time at all.
            assert!(err.is::<DeadlineExceeded>(), "{headers:?}: {err}");
            assert_eq!(class_of(&err).category, Category::Timeout);
            assert_eq!(err.to_string(), "deadline of 0 ms exceeded", "{headers:?}");
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (0, 0));
        // A limit of zero from the layer's own configuration is over too.
        let zero = ServerDeadlineLayer::new()
            .default_limit(Duration::ZERO)
            .layer(recording(Duration::ZERO).0);
        let err = zero.oneshot(request(&[])).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        // The smallest time that is not over: the handler runs, and answers in time.
        for headers in [
            &[("grpc-timeout", "1n")][..],
            &[("x-request-timeout-ms", "1")],
        ] {
            assert_eq!(svc.clone().oneshot(request(headers)).await.unwrap(), "done");
        }
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (2, 2));
    }

    /// Over before the handler starts: answered as a deadline that passes during the handler
    /// is, 504 behind `ErrorResponseLayer`.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_over_is_answered_like_one_that_passes() {
        use crate::respond::ErrorResponseLayer;
        let (handler, called, started) = recording(Duration::from_secs(1));
        let svc = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(ServerDeadlineLayer::new())
            .service(service_fn(move |req: Request<()>| {
                let mut handler = handler.clone();
                async move {
                    let body = handler.ready().await?.call(req).await?;
                    Ok::<_, BoxError>(http::Response::new(body.to_owned()))
                }
            }));
        let late = svc
            .clone()
            .oneshot(request(&[("grpc-timeout", "100m")]))
            .await
            .unwrap();
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (1, 1));
        assert_eq!(
            late.body(),
            r#"{"error":{"type":"timeout","message":"deadline of 100 ms exceeded"}}"#
        );
        for headers in OVER {
            let over = svc.clone().oneshot(request(headers)).await.unwrap();
            assert_eq!(over.status(), late.status(), "{headers:?}");
            assert_eq!(over.status(), 504);
            assert_eq!(over.headers(), late.headers(), "{headers:?}");
            // The same answer, for the limit it asked for.
            assert_eq!(
                over.body(),
                &late.body().replace("100 ms", "0 ms"),
                "{headers:?}"
            );
        }
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_first_polled_at_its_deadline_drops_the_handler_unstarted() {
        let (handler, called, started) = recording(Duration::ZERO);
        let mut svc = ServerDeadlineLayer::new().layer(handler);
        // Polled 1 ms before the deadline: the handler starts, and its answer is ready.
        let early = svc.call(request(&[("grpc-timeout", "250m")]));
        tokio::time::advance(Duration::from_millis(249)).await;
        assert_eq!(early.await.unwrap(), "done");
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (1, 1));
        // Polled at the deadline, or after: not started, its future dropped at that poll.
        for late in [250, 300] {
            let held = Arc::new(());
            let h = held.clone();
            let mut svc = ServerDeadlineLayer::new().layer(service_fn(move |_: Request<()>| {
                let h = h.clone();
                async move {
                    let _h = h;
                    Ok::<_, BoxError>("done")
                }
            }));
            let fut = svc.call(request(&[("grpc-timeout", "250m")]));
            let deadline = Instant::now() + Duration::from_millis(250);
            assert_eq!(
                Arc::strong_count(&held),
                3,
                "the service's and the future's"
            );
            tokio::time::advance(Duration::from_millis(late)).await;
            let mut fut = std::pin::pin!(fut);
            let err = fut.as_mut().await.unwrap_err();
            assert!(err.is::<DeadlineExceeded>(), "{late}");
            assert_eq!(Arc::strong_count(&held), 2, "{late}: dropped at the poll");
            assert_eq!(
                format!("{fut:?}"),
                format!("ServerDeadlineFuture {{ deadline: Some({deadline:?}), .. }}")
            );
            // Polled again: the same error, nothing else run.
            let again = futures_util::FutureExt::now_or_never(fut.as_mut());
            assert!(matches!(again, Some(Err(e)) if e.is::<DeadlineExceeded>()));
        }
        // The first handler's service was called for the early request only.
        assert_eq!((called.load(SeqCst), started.load(SeqCst)), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn once_started_an_answer_ready_at_the_deadline_wins() {
        // The handler's work ends at the deadline's instant: its answer is sent.
        let (handler, _, started) = recording(Duration::from_millis(250));
        let svc = ServerDeadlineLayer::new().layer(handler);
        let start = Instant::now();
        assert_eq!(
            svc.clone()
                .oneshot(request(&[("grpc-timeout", "250m")]))
                .await
                .unwrap(),
            "done"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // Work that ends 1 ms after the deadline (tokio's timers tick in milliseconds): the
        // deadline.
        let err = svc
            .oneshot(request(&[("grpc-timeout", "249m")]))
            .await
            .unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(started.load(SeqCst), 2);
    }

    /// Below a client, the attempt that runs out of time fails with the transport's own
    /// timeout at the deadline's instant (tonic's `Channel` applies the `grpc-timeout` it was
    /// sent): an error ready at the deadline is the deadline's. One before it is the
    /// handler's, as is an answer at it (above).
    #[tokio::test(start_paused = true)]
    async fn an_error_at_the_deadline_is_the_deadlines() {
        let failing = |after: u64| {
            ServerDeadlineLayer::new().layer(service_fn(move |_: Request<()>| async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                Err::<(), BoxError>("transport error".into())
            }))
        };
        let start = Instant::now();
        let err = failing(250)
            .oneshot(request(&[("grpc-timeout", "250m")]))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert!(err.is::<DeadlineExceeded>(), "{err}");
        assert_eq!(err.to_string(), "deadline of 250 ms exceeded");
        let err = failing(249)
            .oneshot(request(&[("grpc-timeout", "250m")]))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "transport error");
    }

    /// A service whose `poll_ready` reserves a slot that `call` takes (as tower's `Buffer`
    /// does), counting reservations and calls.
    #[derive(Clone, Default)]
    struct Reserving {
        reserved: bool,
        reservations: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    impl tower::Service<Request<()>> for Reserving {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if !self.reserved {
                self.reserved = true;
                self.reservations.fetch_add(1, SeqCst);
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            assert!(
                std::mem::take(&mut self.reserved),
                "call without poll_ready"
            );
            self.calls.fetch_add(1, SeqCst);
            std::future::ready(Ok(()))
        }
    }

    /// A request refused as over leaves what the inner `poll_ready` reserved to this
    /// service's next call.
    #[tokio::test(start_paused = true)]
    async fn a_refused_call_leaves_the_inner_reservation_to_the_next_call() {
        let inner = Reserving::default();
        let (reservations, calls) = (inner.reservations.clone(), inner.calls.clone());
        let mut svc = ServerDeadlineLayer::new().layer(inner);
        let over = svc
            .ready()
            .await
            .unwrap()
            .call(request(&[("grpc-timeout", "0n")]));
        over.await.unwrap_err();
        assert_eq!((reservations.load(SeqCst), calls.load(SeqCst)), (1, 0));
        assert!(svc.get_ref().reserved);
        svc.ready()
            .await
            .unwrap()
            .call(request(&[("grpc-timeout", "1S")]))
            .await
            .unwrap();
        assert_eq!((reservations.load(SeqCst), calls.load(SeqCst)), (1, 1));
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
            .layer(
                PropagateDeadlineLayer::new()
                    .millis_header(X_REQUEST_TIMEOUT_MS)
                    .grpc_timeout(true),
            )
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

    /// A carried limit is the smallest of the header's values: `5000, 100` is 100 ms, kept
    /// under a 1 s deadline.
    #[tokio::test(start_paused = true)]
    async fn a_carried_limit_is_the_shortest_of_its_values() {
        use palisade::timeout::DeadlineLayer;
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(1)))
            .layer(
                PropagateDeadlineLayer::new()
                    .grpc_timeout(true)
                    .millis_header(X_REQUEST_TIMEOUT_MS),
            )
            .service(service_fn(|req: Request<()>| async move {
                Ok::<_, BoxError>(req.headers().clone())
            }));
        let sent = svc
            .clone()
            .oneshot(request(&[
                ("grpc-timeout", "5S, 100m"),
                ("x-request-timeout-ms", "5000"),
                ("x-request-timeout-ms", "100"),
            ]))
            .await
            .unwrap();
        assert_eq!(sent["grpc-timeout"], "5S, 100m");
        let millis: Vec<_> = sent.get_all("x-request-timeout-ms").iter().collect();
        assert_eq!(millis, ["5000", "100"]);
        // Every value longer than the time left: replaced, all of them.
        let sent = svc
            .oneshot(request(&[
                ("grpc-timeout", "5S, 3S"),
                ("x-request-timeout-ms", "5000"),
                ("x-request-timeout-ms", "3000"),
            ]))
            .await
            .unwrap();
        assert_eq!(sent["grpc-timeout"], "1S");
        let millis: Vec<_> = sent.get_all("x-request-timeout-ms").iter().collect();
        assert_eq!(millis, ["1000"]);
    }

    /// Naming a millisecond header chooses the plain-HTTP form: `grpc-timeout` is not sent
    /// with it unless asked for, in either order.
    #[tokio::test(start_paused = true)]
    async fn a_millis_header_is_sent_alone_unless_grpc_timeout_is_asked_for() {
        use palisade::timeout::DeadlineLayer;
        let sent = |layer: PropagateDeadlineLayer| {
            ServiceBuilder::new()
                .layer(DeadlineLayer::new(Duration::from_secs(1)))
                .layer(layer)
                .service(service_fn(|req: Request<()>| async move {
                    Ok::<_, BoxError>(req.headers().clone())
                }))
                .oneshot(request(&[]))
        };
        let http = sent(PropagateDeadlineLayer::new().millis_header(X_REQUEST_TIMEOUT_MS))
            .await
            .unwrap();
        assert!(!http.contains_key("grpc-timeout"), "{http:?}");
        assert_eq!(http["x-request-timeout-ms"], "1000");
        for both in [
            PropagateDeadlineLayer::new()
                .millis_header(X_REQUEST_TIMEOUT_MS)
                .grpc_timeout(true),
            PropagateDeadlineLayer::new()
                .grpc_timeout(true)
                .millis_header(X_REQUEST_TIMEOUT_MS),
        ] {
            let both = sent(both).await.unwrap();
            assert_eq!(both["grpc-timeout"], "1S");
            assert_eq!(both["x-request-timeout-ms"], "1000");
        }
        let grpc = sent(PropagateDeadlineLayer::new()).await.unwrap();
        assert_eq!(grpc["grpc-timeout"], "1S");
        assert!(!grpc.contains_key("x-request-timeout-ms"));
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
                            .grpc_timeout(true)
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
