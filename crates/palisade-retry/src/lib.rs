//! Retry for tower services: the class decides, backoff and jitter space the attempts, a
//! lock-free budget bounds them system-wide, and the deadline cuts them short.
//!
//! [`RetryLayer`] reads the [`Class`](palisade_core::Class) of every failed attempt with
//! [`class_of`](palisade_core::class_of) (put a
//! [`ClassifyLayer`](palisade_core::ClassifyLayer) below it, closest to the endpoint) and
//! acts on it:
//!
//! | the failure | what retry does |
//! |---|---|
//! | not retryable (validation, not found, a cancellation, an ignored error, ...) | returns it at once |
//! | retryable | waits the [`Backoff`] delay, spread by the [`Jitter`], then tries again |
//! | with a server hint (`retry_after`) | waits that long instead of the backoff (gRPC A6, RFC 9110's `Retry-After`), stretched by a random 0–10 % so that callers refused together do not return together (never less than the hint; under a deadline, drawn within the time it leaves); a hint above [`max_retry_after`](RetryBuilder::max_retry_after) (60 s) is not waited for: the error is returned |
//! | `Rejected` (a breaker below refused it) | with a `retry_after` (an open breaker's remaining period): retries after it, spending no budget and not closing the throttle, since the refused attempt added no load and the breaker decides what goes through; under a deadline the refused attempt does not count toward the attempt limit either, and the wait is stretched by a random 0–50 % so that held requests do not return together: the request waits for the breaker while its stretched wait ends before its deadline, even with a limit of one attempt (a request whose stretched wait passes its deadline fails at once, so the held requests are not crowded into the moments before their deadlines) ([`RetryBuilder::wait_for_breaker`]; with it off, the refusal is returned at once); without a `retry_after` (a throttle shedding load): an ordinary retry, within the budget |
//! | `RateLimited` without a hint | starts its backoff from its own, longer delay ([`rate_limited_delay`](RetryBuilder::rate_limited_delay), 5 s) |
//! | `Authentication`, with a [`refresh`](RetryBuilder::refresh) hook | runs the hook, then retries once, as soon as the hook is done and a server hint (a 401's `Retry-After`) has passed; a hint above [`max_retry_after`](RetryBuilder::max_retry_after), or one that ends past the deadline, returns the error without running the hook |
//! | `Timeout` | retries; an escalating per-attempt timeout below lengthens the next attempt (see *Deadlines and timeouts*) |
//!
//! Every retry needs an attempt left (the limit counts the first attempt, default 3; per request
//! with [`max_attempts_fn`](RetryBuilder::max_attempts_fn); [`AdaptiveAttempts`] with the dependency's
//! health) and a withdrawal from the [budget]. When any of them says no, the caller
//! gets the **last real error**: never an error made up by this layer, and unchanged unless an
//! attempt before the last timed out (see *Timed-out attempts*). Under a
//! deadline, a retry the budget refuses first waits for the budget to allow it, until the
//! deadline ([`RetryBuilder::wait_for_budget`]; not for a 429 the server paced, nor for a
//! credential refresh). A response
//! that arrived (`Ok`) is final and never retried; failing responses reach this layer as errors
//! ([`FailedResponse`](palisade_core::FailedResponse)) and can be restored by the caller.
//!
//! # Timed-out attempts
//!
//! An attempt cut off by a timeout may have reached the other side and taken effect there;
//! only its answer was late. When a request fails in the end and at least one attempt
//! *before* its last failed with [`Category::Timeout`](palisade_core::Category::Timeout),
//! and the final error is not a timeout itself (which says so on its own), the final error
//! is wrapped in [`AfterTimeouts`] (from `palisade_core::failure`), which says how many did. A caller that must know whether a non-idempotent call may have happened
//! (a payment, a message sent; palisade-durable's sagas do this) looks for it with
//! [`AfterTimeouts::find`]: an HTTP 500 from the last attempt does not say the timed-out one
//! did nothing.
//!
//! The wrapper is transparent: it displays as the final error, has it as its `source()`, and
//! has no class of its own, so [`class_of`](palisade_core::class_of) and every layer above
//! read the final error's class as before. Only a `downcast_ref` on the returned error itself
//! sees the wrapper (use [`AfterTimeouts::inner`], or walk the chain);
//! [`FailedResponse::restore`](palisade_core::FailedResponse::restore) looks through it. A
//! request that succeeds, fails on its first attempt or with a timeout, or had no timed-out
//! attempt before its last gets its error exactly as the attempt returned it.
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, ClassifyLayer, DefaultClassifier};
//! use palisade_retry::{budget::RatioBudget, Backoff, Jitter, RetryLayer};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A tool that fails twice with a 503, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let tool = service_fn(move |prompt: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         match n {
//!             0 | 1 => Err::<String, BoxError>("503 service unavailable".into()),
//!             _ => Ok(format!("done: {prompt}")),
//!         }
//!     }
//! });
//!
//! // One budget for every layer that calls this dependency.
//! let budget = Arc::new(RatioBudget::default());
//! let mut agent = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_attempts(3)
//!             .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
//!             .jitter(Jitter::Full)
//!             .budget(budget.clone())
//!             .build()
//!             .unwrap(),
//!     )
//!     .layer(ClassifyLayer::new(DefaultClassifier::default()))
//!     .service(tool);
//!
//! let answer = agent.ready().await.unwrap().call("summarise").await.unwrap();
//! assert_eq!(answer, "done: summarise");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```
//!
//! # Budgets
//!
//! A per-request attempt limit cannot stop a retry storm: when a dependency fails, every
//! request multiplies its load by the limit. A [budget] caps retries across all
//! requests: [`RatioBudget`](budget::RatioBudget) (Finagle's: a share of requests plus a
//! reserve), [`TokenBucket`](budget::TokenBucket) (gRPC's retry throttling),
//! [`RateCap`](budget::RateCap) (a fixed number per second), or
//! [`Throttled`](budget::Throttled), a budget behind a throttle and the default: retries stay
//! under 12 % of requests (after the Google SRE book's per-client retry budget of 10 %; at
//! least 8 a second, so that a client that sends little can retry) and stop altogether
//! while the dependency fails more calls than it answers (gRPC's throttling), so an outage or a
//! brownout is not made worse by retries that cannot succeed. A failure with a server's hint
//! (a rate limit with `Retry-After`) is paced by the server and does not close the throttle. They are lock-free, allocate
//! nothing after construction, are shared by every clone of a layer and by every layer given
//! the same `Arc`, and also implement tower's `retry::budget::Budget`. An exhausted budget is
//! reported with a `WARN` event and the last error is returned (under a deadline, once the
//! wait for the budget reaches it).
//!
//! # Clone requirement
//!
//! Requests must be `Clone`: the inner service consumes a request, so the layer keeps a copy
//! (one clone) for each attempt that another attempt may follow, and only for those. Another
//! may follow every attempt but the last; and under a deadline with
//! [`wait_for_breaker`](RetryBuilder::wait_for_breaker) on (the default), the last one too,
//! even with a limit of one attempt, since a breaker's refusal of it does not count and the
//! same attempt is sent again when the breaker probes. So without a deadline, or with
//! `wait_for_breaker(false)`, a request is never cloned with a limit of one attempt, nor for
//! its last attempt; under a deadline with it on, it is cloned once for every attempt sent.
//! (For the first attempt, the deadline is the one seen by `call`, around which
//! palisade-timeout's `Deadline` publishes it as it does around each poll.)
//! Make large requests cheap to clone by sharing them, e.g. `Arc<Prompt>` or `bytes::Bytes`
//! bodies, so a clone is a reference count increment.
//!
//! The inner service must be `Clone` too, but a call that succeeds at once clones nothing: the
//! first attempt goes to the wrapped instance (which `poll_ready` made ready), and only when a
//! request first fails does its future take a clone for the retries, from a spare cloned when
//! the layer wrapped the service (the spare sits behind a mutex that only that first retry
//! locks). tower's `Retry` instead clones the inner service on every call, so every layer below
//! it pays its clone (reference counts shared by all threads) even when nothing fails. Retries
//! therefore see the service as it was wrapped: changes made through
//! [`Retry::get_mut`] reach the first attempts only, and a service whose instances drift apart
//! (a router that polls its own discovery stream, say) belongs behind a
//! `tower::buffer::Buffer`, whose clones all reach one instance.
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's. Retries wait for the inner service to be ready again
//! before each attempt; if that fails, its error is returned (the request's final error,
//! counted by its class like any other) and the reserved budget withdrawal is given back.
//!
//! # Panics
//!
//! Like tower's: a response future polled after it returned panics, and a `call` without
//! `poll_ready` is the inner service's to judge (see [`Retry`]'s *Panics*).
//!
//! # Errors
//!
//! The inner service's error only needs `Into<BoxError>`, as every palisade and tower layer
//! asks; the layer returns [`BoxError`](palisade_core::BoxError), like the others. It adds
//! no error of its own: when it stops, the caller gets the last real error (downcast it as
//! usual).
//!
//! # Cancellation
//!
//! Dropping the response future drops the attempt in flight and the backoff timer, and gives
//! back the budget withdrawal reserved for a retry not yet sent, so a cancelled call leaves no
//! timer, permit or token behind.
//!
//! # Deadlines and timeouts
//!
//! Inside a deadline set by palisade-timeout's `Deadline` layer, retry never sleeps past it,
//! and starts a retry only with at least [`min_attempt_time`](RetryBuilder::min_attempt_time)
//! (10 ms) left: an attempt sent in a deadline's last moments is cut off before it can be
//! answered, yet loads the dependency.
//! Below, "the deadline" is that last moment an attempt may start. When the next attempt could
//! not start before the deadline (after its backoff or a server hint, at their least: the
//! lower bound of the jitter's range, the hint before its stretch), the last error is
//! returned at once. Otherwise the random part of the wait (the jitter, a hint's stretch) is
//! drawn within the time left: such a wait that can end before the deadline is never given up
//! at random. A wait for an open breaker is the exception, checked as drawn (see
//! [`wait_for_breaker`](RetryBuilder::wait_for_breaker)). The deadline is looked at again when
//! the wait ends (a backoff, a hold for an open breaker or for the budget, a credential
//! refresh, the service's readiness), just before the attempt is sent: however late the task
//! is polled (a busy runtime, a refresh that outlasts a deadline carried into a task), no
//! attempt is sent after it; the request ends with its last error and gives back the budget
//! withdrawal reserved for it. (tokio's timer fires on whole milliseconds, up to one after
//! the time asked, so that last look allows a millisecond less than `min_attempt_time`, but
//! never the deadline itself: with `min_attempt_time` set to zero, a wait drawn to end in the
//! deadline's last millisecond fires at its tick and ends the request so.) Each attempt is
//! made with
//! the number of earlier attempts of the request that timed out, so a `Timeout` layer below with escalation
//! configured gives a timed-out request a longer timeout on its next attempt. Both pass through
//! [`palisade_core::context`] ([`deadline`](palisade_core::context::deadline),
//! [`with_timeouts_so_far`](palisade_core::context::attempt::with_timeouts_so_far)): retry
//! does not depend on palisade-timeout. Like the rest of that context they follow one poll on
//! one thread, so they do not by themselves reach through a `Buffer` or a spawned task between
//! the layers: put palisade-core's `CarryLayer` above such a boundary and `ResumeLayer` below
//! it (see [the context's docs](palisade_core::context#task-boundaries)).
//!
//! # Attempts and routing
//!
//! Every poll of an attempt's future, and the readiness check and `call` of every retry, run
//! inside [`palisade_core::context::attempt::scope`] with the attempt number and the endpoint a
//! router below reported failing on an earlier attempt, so the router can send the retry
//! elsewhere. (The first attempt's `poll_ready` is the caller's and runs outside; its `call` runs
//! in the scope of attempt 1, so that a layer below can tell a retry layer is above it.)
//!
//! # Randomness
//!
//! Jitter draws from a [`SmallRng`] made per delay (only failures draw): from a
//! [`seed`](RetryBuilder::seed) (the n-th delay of a layer uses
//! `SmallRng::seed_from_u64(seed ^ n × 0x9E3779B97F4A7C15)`, so the same seed and the same
//! order of failures give the same delays), from a user's
//! [`rng_factory`](RetryBuilder::rng_factory), or, by default, from a seed taken once from the
//! operating system when the layer is built. Never from a thread rng on the request path.
//!
//! # Tracing
//!
//! Events under the target `palisade_retry`: `DEBUG` for each failed attempt that is retried
//! (`attempt`, `category`, `delay_ms`, `balance`) or not (`reason`), `TRACE` when a retry is
//! sent, `DEBUG` when a retry's service fails its readiness check (`category`, `error`), `WARN`
//! when a credential refresh fails, and when the budget is exhausted: at most once per 10 s per
//! layer, with `since_last_warning` (how many refusals since the last warning went to `DEBUG`
//! only), so that an outage warns once rather than once per request; every refusal also
//! counts in the `palisade.retry.budget_exhausted` metric. Field values are
//! computed only when a subscriber listens; the happy path emits nothing.
//!
//! # Performance
//!
//! The happy path takes no lock, allocates nothing, boxes no future and clones no service; the
//! response future keeps what only failures need behind one pointer. Each thread takes its
//! references to the shared state from its own cache line, so calls from many threads do not
//! contend on a reference count. `cargo bench -p palisade-benches --bench retry` compares it with tower's
//! `Retry` and `TpsBudget`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod attempts;
mod backoff;
pub mod budget;
mod ctx;
pub mod future;
mod layer;
mod policy;
mod rng;
mod service;
#[cfg(test)]
mod tests;
mod window;

pub use adaptive::AdaptiveAttempts;
pub use attempts::{LayerLimit, MaxAttempts, MaxAttemptsFn, max_attempts_fn};
pub use backoff::{Backoff, DEFAULT_CAP, Jitter};
pub use layer::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER, DEFAULT_MIN_ATTEMPT_TIME,
    DEFAULT_RATE_LIMITED_DELAY, RetryBuilder, RetryLayer,
};
pub use palisade_core::failure::AfterTimeouts;
/// The rng jitter draws from (rand's `SmallRng`), re-exported for
/// [`RetryBuilder::rng_factory`].
pub use rand::rngs::SmallRng;
pub use service::Retry;
