//! Per-attempt timeouts (with escalation) and whole-call deadlines for tower services.
//!
//! - [`Timeout`] limits one attempt. Placed below a retry layer it bounds each attempt; a
//!   timed-out attempt fails with [`Elapsed`](error::Elapsed), which
//!   [`class_of`](palisade_core::class_of) reads as `Timeout`, retryable. With
//!   [`TimeoutBuilder::escalate`] the next attempt gets a longer limit (`base × factor^n`, capped),
//!   where `n` is the number of earlier attempts that timed out, published by the retry layer
//!   through [`context::with_timeouts_so_far`].
//! - [`Deadline`] limits the whole call. Placed above a retry layer it bounds all attempts and
//!   backoff sleeps together; it fails with [`DeadlineExceeded`](error::DeadlineExceeded), `Timeout`
//!   but **not** retryable. While it polls the call, the layers below read the deadline with
//!   [`context::deadline`] (a retry does not start a backoff that would end after it).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{class_of, BoxError, Category};
//! use palisade_timeout::{DeadlineLayer, TimeoutLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<u64, BoxError>(ms)
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2)))
//!     .layer(TimeoutLayer::builder(Duration::from_millis(100)).escalate(2.0, Duration::from_secs(1)).build().unwrap())
//!     .service(slow);
//!
//! assert_eq!(svc.ready().await.unwrap().call(50).await.unwrap(), 50);
//! let err = svc.ready().await.unwrap().call(150).await.unwrap_err();
//! assert_eq!(err.to_string(), "attempt timed out after 100 ms");
//! let class = class_of(&err);
//! assert_eq!(class.category, Category::Timeout);
//! assert!(class.retryable);
//! # }
//! ```
//!
//! # When the clock starts
//!
//! [`Timeout`] counts from the moment the inner future first returns `Pending`, not from
//! `call`: its future polls the inner future first and creates the timer only then, so a
//! response that is ready at once costs neither a timer nor a clock read (tower's `Timeout`
//! creates a `Sleep` in `call`). Time a future spends between `call` and its first poll is
//! therefore not counted; under a retry layer the first poll follows the call at once.
//!
//! [`Deadline`] counts from the first poll of its future (which a tower caller makes right
//! after `call`), or from its `call` if a layer below reads the deadline there, and its clock
//! is lazy: during the call and the first poll it publishes only its limit,
//! and the clock is read when a layer below first asks for
//! [`context::deadline`] (a retry deciding whether a backoff fits, after a failed attempt) or
//! when the inner future first returns `Pending`. A call whose response is ready at once, with
//! nobody asking, reads no clock and creates no timer, so a deadline over a fast path is about
//! as cheap as [`Timeout`] (a tokio clock read costs ~30 ns on the bench machine). The deadline
//! is published around the inner `call` and every poll of the response future; a
//! `CarryLayer` below reads it in `call` to send it across a task boundary.
//!
//! Both futures keep the timer inline (a tokio `Sleep`, no box), so a call that waits allocates
//! nothing, and each is about the size of tower's `Timeout` future (the `timeout` bench prints
//! the sizes).
//!
//! # One timer for a deadline and its timeouts
//!
//! A [`Deadline`] over a retry and a [`Timeout`] per attempt below it run two timers at once
//! while an attempt waits, and a tokio `Sleep` is 96 bytes, so a response future that keeps
//! both inline carries 192 bytes of timers, when the task only ever needs to wake at the earlier
//! of the two instants. [`TimeoutLayer::share_deadline_timer`] builds a timeout
//! ([`timer::SharedTimer`]) whose future keeps only the instant its attempt ends and asks the
//! deadline's future above to wake the task then
//! ([`context::timer`](palisade_core::context::timer)): the deadline's future arms its one
//! timer at the earlier of its deadline and the instants asked for, and, when an attempt's
//! instant passes, polls the call again so that the timeout fails that attempt exactly as its
//! own timer would have. palisade's preset is built this way.
//!
//! Sharing needs the deadline above on the same task, with only layers between them that poll
//! their inner future with the task's own waker (retry, breaker, classify and fallback do).
//! Where that does not hold (no deadline above, a task boundary, or a combinator that gives its
//! children wakers of their own), the timeout sees it at its first wait and boxes a timer of its
//! own: still correct, at one allocation per waiting attempt.
//!
//! # Timed-out attempts
//!
//! When a [`Timeout`] elapses, its future drops the attempt itself, inside
//! [`attempt::time_out`](palisade_core::context::attempt::time_out), and only then fails with
//! [`Elapsed`](error::Elapsed). A router below (`palisade-route`) sees that drop and records a
//! failure of class `Timeout` for the endpoint the attempt went to: it counts toward
//! consecutive-failure ejection and the health state machine exactly as a returned timeout
//! error would, and a retry above avoids that endpoint for its next attempt. Without it a slow
//! endpoint never fails a call (its calls are cut off above the router, never answered) and
//! keeps its share of traffic. This is how Envoy treats a router timeout: its
//! [outlier detection](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier)
//! counts a timeout as a locally originated failure of the host (and as a 5xx for
//! `consecutive_5xx` unless `split_external_local_origin_errors` is set).
//!
//! Any other drop stays neutral: a [`Deadline`] that fires ends the whole call because the
//! caller's time is spent, which says nothing about the endpoint of the attempt in flight; a
//! caller that gives up or a retry that cancels an attempt neither. The mark is a thread-local
//! set around that one drop, so it reaches a router in the same task (through classify, breaker
//! and the like), and one behind a `tower::buffer::Buffer` too (the buffer's response future
//! owns the router's once the worker has made the call, and is dropped by the caller), but not
//! one on a task of its own (a spawned call keeps running after the timeout drops its handle):
//! there the timeout is still an error for the layers above, only the router does not learn of
//! it.
//!
//! # Escalation across a task boundary
//!
//! An escalating [`Timeout`] reads how many earlier attempts timed out in its `call`. Behind a
//! `Buffer` (or any service that calls on a task of its own) that `call` runs on the worker,
//! where the retry above set nothing, so every attempt would get the base limit. Put
//! `palisade_core::context::carry::CarryLayer` above the boundary and `ResumeLayer` below
//! it and the count crosses in the request. Without them, an escalating timeout whose call saw
//! no attempt while its future is polled inside one says so once, with a `tracing` warning.
//!
//! # Errors
//!
//! Both services return [`BoxError`](palisade_core::BoxError): the inner error converted,
//! or [`Elapsed`](error::Elapsed) / [`DeadlineExceeded`](error::DeadlineExceeded), whose
//! classes [`class_of`](palisade_core::class_of) knows with nothing to register.
//! On expiry the inner future is dropped.
//!
//! Each error says which limit ran out, in its message and through its `limit()`:
//!
//! - [`Elapsed`](error::Elapsed): the limit of the attempt that timed out, escalated when
//!   earlier attempts had (`attempt timed out after 400 ms`);
//! - [`DeadlineExceeded`](error::DeadlineExceeded): the time the call was granted
//!   (`deadline of 30 s exceeded`). Under an enclosing deadline that ends first (an outer
//!   [`Deadline`], or one carried across a task boundary, such as a caller's deadline that a
//!   server took from a request header), that is the time the enclosing one left the call
//!   when this one started.
//!
//! Each response future keeps that limit as one word beside its timer (a sharing timeout's
//! in the space it already had), so reporting it reads no clock and allocates nothing beyond
//! the error's `BoxError`.
//!
//! # Readiness
//!
//! `poll_ready` is delegated; neither limit covers waiting for readiness.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod context;
pub mod error;
pub mod future;
mod layer;
mod service;
mod state;
pub mod timer;

pub use layer::{
    DEFAULT_DEADLINE_NAME, DEFAULT_TIMEOUT_NAME, DeadlineBuilder, DeadlineLayer, TimeoutBuilder,
    TimeoutLayer,
};
pub use service::{Deadline, Timeout};

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
