//! HTTP, hyper, axum and gRPC for palisade: what an HTTP response or a client error means for
//! the layers above, what the server asked for in its headers, and palisade's failures as
//! HTTP responses on a server.
//!
//! # Clients
//!
//! - [`HttpClassifier`] classifies `http::Response`s by status (5xx retryable except 501 and
//!   505; 502, 503, 504 as server or transport faults; 429 rate limited; 408 timeout; 401/403
//!   authentication; other 4xx client faults; per-status overrides) and hyper's and
//!   hyper-util's client errors by kind ([`transport`]: connect, closed, timeout, protocol).
//!   Give it to the classify layer, or to palisade's preset, and a 503 that arrives as `Ok` is
//!   retried and counted by the breaker like any failure, and reaches the caller as an error
//!   ([more](#failing-responses-come-back-as-errors)). With
//!   [`PeekLayer`](body::PeekLayer) below the classify layer, it reads what a failing
//!   response's body says too, through palisade's message rules: OpenAI's 429 whose body says
//!   `insufficient_quota` is a spent quota, not retried, rather than a rate limit retried for
//!   nothing ([example](body::Peek#example)).
//! - [`hint`]: the server's word in the response headers, through palisade's shared parsers:
//!   `retry-after-ms`, `Retry-After` (seconds or an HTTP-date,
//!   [RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3)),
//!   `grpc-retry-pushback-ms`, `x-should-retry`, and LLM APIs' `x-ratelimit-reset-*`. The
//!   retry layer waits at least as long as the server asked (stretched by up to a tenth, so
//!   that callers told the same wait do not come back together), and does not wait a hint
//!   longer than its `max_retry_after` (60 s by default): it gives up at once instead.
//! - [`grpc`]: [`GrpcClassifier`](grpc::GrpcClassifier) for `grpc-status`, and the
//!   `grpc-timeout` format; the [stack for a tonic client](grpc#tonic-clients), above which
//!   a failing response must be restored (`.map_result(|r|
//!   r.or_else(FailedResponse::<Response<Body>>::restore))`) for the generated client to read
//!   its code, and the gRPC status palisade recommends for its own errors
//!   ([`GrpcStatus::from_error`](grpc::GrpcStatus::from_error): an open breaker's
//!   `CircuitOpen` and `NoHealthyEndpoint` `UNAVAILABLE`, `DeadlineExceeded` and `Elapsed`
//!   `DEADLINE_EXCEEDED`), which tonic would otherwise make `UNKNOWN`; on a gRPC server,
//!   [`ErrorResponseLayer::grpc`](respond::ErrorResponseLayer::grpc) answers palisade's
//!   failures with those statuses.
//! - [`body`]: request bodies kept for replay by a retry ([`ReplayLayer`](body::ReplayLayer):
//!   read before the first attempt, or, with
//!   [`ReplayLayer::streaming`](body::ReplayLayer::streaming) for gRPC client-streaming and
//!   bidirectional calls and uploads, sent as they stream and recorded on the way); response
//!   bodies watched while they stream ([`GuardLayer`](body::GuardLayer): an idle
//!   timeout between frames, a whole-body limit, gRPC trailers); a breaker that judges a
//!   streamed call when its body ends ([`StreamBreakerLayer`](body::StreamBreakerLayer));
//!   the start of failing responses' bodies read for the classifier, the whole body still
//!   given to the caller ([`PeekLayer`](body::PeekLayer)).
//! - [`deadline`]: the time left until palisade's deadline, sent as `grpc-timeout` or a
//!   millisecond header ([`PropagateDeadlineLayer`](deadline::PropagateDeadlineLayer)). A
//!   limit the caller wrote on the request (tonic's `Request::set_timeout`) is one attempt's
//!   below a retry; [`ServerDeadlineLayer`](deadline::ServerDeadlineLayer) above the retry
//!   makes it the whole call's deadline
//!   ([more](deadline#a-limit-the-caller-set-on-the-request)).
//!
//! # Servers
//!
//! - [`ErrorResponseLayer`] turns palisade's failures into responses (an open breaker 503 with
//!   `Retry-After`, a timeout 504, a rate limit 429, a failing response restored as it was
//!   less its hop-by-hop headers, a fallback's answer marked `x-palisade-degraded`), so
//!   palisade's layers stack on an axum `Router` or a hyper server, whose error type is
//!   `Infallible`. [`HttpError`] and [`HttpAnswer`] are the same as axum's `IntoResponse`
//!   (feature `axum`).
//! - [`health`]: `GET /health` and `GET /ready` from the breakers (and, feature `route`, the
//!   routers) you register, as a tower service or an axum `Router`.
//! - [`ServerDeadlineLayer`](deadline::ServerDeadlineLayer) runs each request under the
//!   deadline its caller sent (on a client, above the retry: the limit the caller wrote on
//!   the request).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use palisade::{ServiceBuilderExt, preset};
//! use palisade_core::BoxError;
//! use palisade_http::HttpClassifier;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // An LLM API that rate-limits the first call, asking for 200 ms. (In a real program: a
//! // hyper-util `Client`, whose requests with `Full<Bytes>` bodies are `Clone`.)
//! let calls = Arc::new(AtomicU32::new(0));
//! let api = service_fn(move |_: Request<String>| {
//!     let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let response = if first {
//!             Response::builder().status(429).header("retry-after-ms", "200").body(String::new())
//!         } else {
//!             Response::builder().status(200).body("hello".to_owned())
//!         };
//!         Ok::<_, BoxError>(response?)
//!     }
//! });
//! let llm = ServiceBuilder::new()
//!     .palisade(preset::recommended("llm").classifier(HttpClassifier::new()).build()?)
//!     .service(api);
//!
//! let start = tokio::time::Instant::now();
//! let response = llm.oneshot(Request::new("hi".to_owned())).await?;
//! assert_eq!(response.body(), "hello");
//! // It waited the server's 200 ms, stretched by up to a tenth so that callers refused
//! // together do not all come back together.
//! assert!((200..=220).contains(&start.elapsed().as_millis()));
//! # Ok(()) }
//! ```
//!
//! # Failing responses come back as errors
//!
//! The classify layer turns a response the classifier judges a failure into an error, a
//! [`FailedResponse`](palisade_core::FailedResponse) that carries it, so that the layers above
//! treat it as the failure it is. The caller gets that error too: a 503 once the retries are
//! spent, and a 404 (not retryable) at once, as `Err`, not as `Ok(response)`. Its message
//! names the status and the class (`HTTP 404 Not Found, classified as not_found (low, not
//! retryable)`); [`FailedResponse::restore`](palisade_core::FailedResponse::restore) gives the
//! response back, for a caller that reads failing responses itself. On a server,
//! [`ErrorResponseLayer`] restores it.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use palisade::{ServiceBuilderExt, preset};
//! use palisade_core::{BoxError, FailedResponse};
//! use palisade_http::HttpClassifier;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let api = service_fn(|_: Request<String>| async {
//!     Ok::<_, BoxError>(Response::builder().status(404).body("no such model".to_owned())?)
//! });
//! let llm = ServiceBuilder::new()
//!     .palisade(preset::recommended("llm").classifier(HttpClassifier::new()).build()?)
//!     .service(api);
//!
//! let err = llm.clone().oneshot(Request::new(String::new())).await.unwrap_err();
//! assert_eq!(err.to_string(), "HTTP 404 Not Found, classified as not_found (low, not retryable)");
//! let response = llm
//!     .oneshot(Request::new(String::new()))
//!     .await
//!     .or_else(FailedResponse::<Response<String>>::restore)?;
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! assert_eq!(response.body(), "no such model");
//! # Ok(()) }
//! ```
//!
//! # Which requests are retried
//!
//! [`HttpClassifier`] judges responses and errors, not methods: a `POST` whose attempt timed
//! out, whose connection dropped before the response, or that got a 503 is retried like a
//! `GET`. [RFC 9110 §9.2.2](https://www.rfc-editor.org/rfc/rfc9110#section-9.2.2) asks a
//! client not to retry a request that is not idempotent automatically unless it knows the
//! request can be repeated. LLM APIs take their calls as `POST` and answer a repeat as a new
//! call (the cost is a second completion, usually wanted after a 429 or a 503); a payment or
//! a tool call with side effects needs an idempotency key, or one attempt. Say so per request
//! with the retry layer's [`max_attempts_fn`](palisade_retry::RetryBuilder::max_attempts_fn):
//!
//! ```
//! use http::{Request, Response};
//! use palisade::{ServiceBuilderExt, preset};
//! use palisade::retry::RetryLayer;
//! use palisade_core::BoxError;
//! use palisade_http::HttpClassifier;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // One attempt for a request that is neither idempotent by its method nor carries an
//! // idempotency key; the layer's own limit for the others.
//! let retry = RetryLayer::builder()
//!     .max_attempts_fn(|req: &Request<String>| {
//!         let repeatable =
//!             req.method().is_idempotent() || req.headers().contains_key("idempotency-key");
//!         (!repeatable).then_some(1)
//!     })
//!     .build()?;
//! let calls = Arc::new(AtomicU32::new(0));
//! let counted = calls.clone();
//! let api = service_fn(move |_: Request<String>| {
//!     counted.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<_, BoxError>(Response::builder().status(503).body(String::new())?) }
//! });
//! let client = ServiceBuilder::new()
//!     .palisade(preset::recommended("payments").classifier(HttpClassifier::new()).retry(retry).build()?)
//!     .service(api);
//!
//! let charge = Request::post("/charge").body(String::new())?;
//! assert!(client.clone().oneshot(charge).await.is_err());
//! assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "a bare POST: one attempt");
//! let keyed = Request::post("/charge").header("idempotency-key", "c-42").body(String::new())?;
//! assert!(client.oneshot(keyed).await.is_err());
//! assert_eq!(calls.load(Ordering::SeqCst), 3, "with a key: the layer's 3 attempts");
//! # Ok(()) }
//! ```
//!
//! # Streamed responses: failures after the head
//!
//! palisade's layers judge a call when its future completes, and an HTTP call's future
//! completes when the response head arrives. A streamed body (an LLM's tokens, a gRPC server
//! stream) can fail after that: the connection is cut, the stream stalls, the trailers carry a
//! failing `grpc-status`. Such a failure is the call's failure, and the layers that judge
//! health hear of it as follows:
//!
//! - [`GuardLayer`](body::GuardLayer), right above the client, turns each of them into a body
//!   error that carries its class (a stall past the idle timeout or the whole-body limit is a
//!   `Timeout`, a cut connection `Network`, a failing `grpc-status` its code's class) and
//!   hands it to its [`on_failure`](body::GuardLayer::on_failure) report.
//! - **The breaker**: [`StreamBreakerLayer`](body::StreamBreakerLayer), in place of the
//!   breaker's own layer, admits calls through the same breaker
//!   ([`BreakerHandle::try_reserve`](palisade_breaker::BreakerHandle::try_reserve)) and records
//!   each call's outcome once, when its body ends, fails or is dropped. One call, one outcome:
//!   every rule of the breaker (failures in a row, a failure ratio, slow calls) sees a stream
//!   that failed half-way exactly as a call that failed outright, so with the default rule
//!   the breaker opens after 30 such streams, where a breaker that judged the heads would
//!   count 30 successes and never open. (Recording a failure after a success had been counted
//!   for the head would leave one success and one failure per call: a 50 % failure ratio that
//!   never reaches the default 95 %, and a streak of failures that every head clears.)
//! - **The router**: it picks an endpoint and counts the call when its head arrives, so it
//!   hears of a failure in the body afterwards, through palisade-route's
//!   `RouteHandle::report_failure` with the endpoint's key, called from each endpoint's guard (`GuardLayer::on_failure`; the
//!   router's handle exists once the router does, so the endpoints reach it through a
//!   `OnceLock`, as `tests/streams.rs` does). This adds a failure to the success already
//!   counted: streams that fail while others are running (parallel calls, the usual case for
//!   an agent) add up to a degraded endpoint; one stream at a time, each head's success clears
//!   the endpoint's streak before its body fails, so the router alone does not take such an
//!   endpoint out, and the breaker above it is the exact judge.
//! - A retry does not replay a stream that failed half-way: the caller has its tokens.
//!
//! # Stacking order
//!
//! A client, outermost first: deadline → retry → breaker (for streamed responses,
//! [`StreamBreaker`](body::StreamBreaker)) → attempt timeout → classify (with
//! [`HttpClassifier`]) → [`Peek`](body::Peek) (failing bodies read for the classifier) →
//! [`PropagateDeadline`](deadline::PropagateDeadline) → [`Guard`](body::Guard) → the client. [`Replay`](body::Replay) goes above the retry when the
//! request bodies are not `Clone` (buffered or [streaming](body::ReplayLayer::streaming)),
//! with the retry layer built with [`ReplayAttempts`](body::ReplayAttempts), which ends a
//! request whose body could not be kept with its attempt's own error. A tonic client (see
//! [`grpc`](grpc#tonic-clients)): the restore of failing responses and palisade's errors as
//! statuses → [`ServerDeadline`](deadline::ServerDeadline) (the caller's `grpc-timeout` as
//! the call's deadline) → [`Replay`](body::Replay) → the preset with
//! [`GrpcClassifier`](grpc::GrpcClassifier) and a retry built with
//! [`ReplayAttempts`](body::ReplayAttempts) → [`PropagateDeadline`](deadline::PropagateDeadline)
//! → the `Channel`; all of palisade above the `Channel`, whose buffer nothing can go below, so
//! that no `CarryLayer`/`ResumeLayer` pair is needed. A server:
//! [`ErrorResponse`](respond::ErrorResponse) →
//! [`ServerDeadline`](deadline::ServerDeadline) → your layers → the handlers.
//!
//! # Examples
//!
//! - `cargo run -p palisade-http --example llm_client`: a hyper-util client against a fake,
//!   flaky LLM provider, with and without palisade.
//! - `cargo run -p palisade-http --example grpc_client`: a tonic client against a tonic server
//!   that answers `UNAVAILABLE` and `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`, then
//!   has an outage, with and without palisade's layers over the tonic channel, stacked as
//!   [recommended for a tonic client](grpc#tonic-clients) (the caller's `grpc-timeout` as the
//!   call's deadline, request bodies kept for replay, the preset with
//!   [`GrpcClassifier`](grpc::GrpcClassifier): retry honouring the pushback, breaker; the
//!   time left sent to the server; failing statuses restored and an open breaker's refusal
//!   as `UNAVAILABLE`).
//!   The messages and the service are written by hand with prost's derive and tonic's codec:
//!   no `.proto` file, no build script.
//! - `cargo run -p palisade-http --example axum_agent --features axum`: an axum server calling a
//!   flaky tool, with health endpoints and a scripted run.
//!
//! All use 127.0.0.1 only; `tests/examples.rs` runs each on tokio's paused clock.
//!
//! # Fuzzing
//!
//! `crates/palisade-http/fuzz` holds a [cargo-fuzz](https://github.com/rust-fuzz/cargo-fuzz)
//! target, `headers`, that feeds arbitrary bytes to every header parser ([`hint`]'s and
//! palisade-core's: `Retry-After` seconds and dates, `retry-after-ms`, `x-should-retry`,
//! `grpc-retry-pushback-ms`, the rate-limit resets as durations and RFC 3339 dates;
//! `grpc-timeout`, `grpc-status` and `grpc-message`; the server's deadline headers) and
//! through the classifiers' header paths, checking that nothing panics and that every wait
//! stays within [`LONGEST`](palisade_core::hint::LONGEST). It needs a nightly toolchain:
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd crates/palisade-http && cargo +nightly fuzz run headers -- -max_total_time=60
//! ```
//!
//! On stable, `cargo check --manifest-path crates/palisade-http/fuzz/Cargo.toml` type-checks
//! it (CI does, so the target cannot rot); the crate's proptests cover the same parsers on
//! every test run.
//!
//! # Features
//!
//! | feature | what |
//! |---|---|
//! | `hyper` (default) | hyper's and hyper-util's client errors classified by kind |
//! | `axum` | `IntoResponse` for [`HttpError`] and [`HttpAnswer`]; `Health::router` |
//! | `tower-http` | the `tower_http` module: tower-http's classifiers for palisade, and palisade's for tower-http |
//! | `route` | routers' readiness in `/ready` (`Health::route`) |

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod deadline;
pub mod grpc;
pub mod health;
pub mod hint;
pub mod respond;
mod status;
#[cfg(feature = "tower-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
pub mod tower_http;
pub mod transport;

pub use respond::{ErrorResponseLayer, HttpAnswer, HttpError};
pub use status::{
    HttpClassifier, HttpClassifierBuilder, apply_hints, describe_status, status_class,
};
