//! A lock-free circuit breaker for tower services.
//!
//! A breaker guards a dependency as a whole: it stops calls that are bound to fail, fails them
//! fast with a useful error, and lets a few probes find out when the dependency is back.
//!
//! * **States** ([`State`]): `Closed` (calls flow), `Open` (rejecting: "open" as in an open
//!   circuit), `HalfOpen` (probing), `Isolated` (forced open by an operator) and `Bypassed`
//!   (taken out of the way by an operator: never rejects, still counts).
//! * **Trip rules** ([`BreakerConfig`]), combinable: consecutive failures; failure rate and
//!   slow-call rate over a [`Window`] — the last N outcomes (a window that slides one outcome
//!   at a time: after 1 000 successes, N failures fill it) or fixed time buckets — each with a
//!   minimum number of calls. By default: 95 % of the last 30 calls failed, or, where those
//!   reach back further than a second, of the last second's (at least 10; see
//!   [`Window::Recent`] and [`BreakerConfig`]'s *Defaults, and why*).
//! * **Adaptive throttling** while closed ([`Throttle`]): requests are refused locally in
//!   proportion to how little the dependency accepts (the Google SRE book's client-side
//!   throttling), so a dependency with part of its capacity gets about three times what it
//!   can take, not everything. One that accepts nothing is the failure rate's to judge: the
//!   throttle waits for the dependency's first answer, and opens the breaker once its window
//!   has held no accepted request for the longest open period.
//! * **What counts**: the class of each outcome, read with
//!   [`class_of`](palisade_core::class_of). Only failures that
//!   [count against health](palisade_core::Class::counts_against_health) count; client
//!   faults, rate limits and ignored errors are neither successes nor failures. A call the
//!   caller dropped counts as its [`CancelPolicy`] says (ignored by default; or a failure; or a
//!   failure after a duration, so a hung backend under an outer timeout is still seen), and so
//!   do a call whose future panicked (the panic drops it; see [`CancelPolicy`]) and a call that
//!   ends with the caller's deadline from a layer below
//!   ([`DeadlineExceeded`](palisade_core::failure::DeadlineExceeded): a timeout that saw the
//!   deadline end first fails the call as the deadline above would have dropped it).
//! * **Open** fails fast: `poll_ready` is ready at once and the call returns [`CircuitOpen`]
//!   with the time left as its `retry_after` (the `LoadShed` shape), so retry and fallback
//!   above it can act. The open period starts at [`open_duration`](BreakerConfig::open_duration),
//!   grows by [`open_backoff`](BreakerConfig::open_backoff) with each failed probe, is
//!   jittered and capped, and is never shorter than a server's `retry_after` on the failure
//!   that tripped it, up to [`max_hint`](BreakerConfig::max_hint) (60 s).
//! * **Half-open** admits at most [`half_open_probes`](BreakerConfig::half_open_probes) calls
//!   at once; a probe's slot comes back when it completes or is dropped (a panic in its
//!   future or in the inner service's `call` included: see [`CancelPolicy`]), and a probe
//!   that takes longer than [`probe_timeout`](BreakerConfig::probe_timeout) (60 s) counts as
//!   failed, even with no timeout layer below: the next call that finds every slot held that
//!   long re-opens the breaker, so a hung probe cannot keep it half-open.
//!   [`success_threshold`](BreakerConfig::success_threshold) successes close it; any failure
//!   reopens it, and so does a slow probe when the breaker trips on a
//!   [slow-call rate](BreakerConfig::slow_call_rate).
//! * **Manual control and metrics** through a [`BreakerHandle`]; **events** as `tracing`
//!   events (target `palisade_breaker`; see *Logging*) and through [`Listener`]s. The state a
//!   handle reads ([`BreakerHandle::state`], [`Metrics::state`]) is what the next call would
//!   meet: an open breaker moves to half-open when the first call after its open period
//!   comes, but reads half-open as soon as that period is over, so a readiness or health
//!   check that reads it does not wait for traffic it may itself be keeping away (reading
//!   changes nothing; the transition and its event wait for that call).
//! * **Live reconfiguration** ([`BreakerHandle::reconfigure`], [`KeyedHandle::reconfigure`]):
//!   a new [`BreakerConfig`] takes effect for every service sharing the breaker, keeping its
//!   state, open period, back-off, failure streak and (when the window is the same) its
//!   window's outcomes; the [`Reconfigured`] result and a `tracing` event list what was reset
//!   and why. An invalid configuration changes nothing.
//! * **Per-key breakers** ([`KeyedBreakerLayer`]): one per provider, model, tool or tenant,
//!   created on first use, looked up without a lock, bounded in memory (idle keys go first; a
//!   key with a call in flight is not idle; a breaker that is still open is kept until its
//!   open period ends, one an operator isolated or bypassed while any other key can go); and
//!   a **hierarchy**: a
//!   parent breaker above per-key children fails them all fast while open, and
//!   [`KeyedHandle::propagate`] trips every child when the parent opens (but those an
//!   operator isolated or bypassed).
//!
//! # Example
//!
//! ```
//! use palisade_breaker::{BreakerLayer, CircuitOpen, State};
//! use palisade_core::{BoxError, class_of};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = BreakerLayer::new("llm");
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: ()| async { Err::<(), BoxError>("503 service unavailable".into()) }));
//!
//! // Every call fails. The adaptive throttle refuses nothing before the dependency has
//! // answered once, so every call reaches the service; once 30 have, and at least 95 % of
//! // them failed, the breaker opens.
//! let mut reached = 0;
//! while handle.state() != State::Open {
//!     let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//!     assert_eq!(err.to_string(), "503 service unavailable");
//!     reached += 1;
//! }
//! assert_eq!(reached, 30);
//! // Open: the next call fails at once without reaching the service, and says when the
//! // breaker will probe again (in about 500 ms).
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert!(open.retry_after.unwrap() <= std::time::Duration::from_millis(550));
//! // It names the breaker: "circuit 'llm' open, retry in 482 ms".
//! assert_eq!(&*open.breaker, "llm");
//! assert!(err.to_string().starts_with("circuit 'llm' open, retry in "));
//! // Retryable after that time: a retry layer above waits for it, spending no retry budget.
//! assert!(class_of(&err).retryable);
//! # }
//! ```
//!
//! # Readiness
//! Closed: the inner service's readiness. Open or isolated: ready at once (the call fails
//! fast). A probe slot reserved by `poll_ready` is held until `call` uses it, and given back if
//! the service is dropped first. A `call` without a successful `poll_ready` panics, and so does
//! a response future polled after it completed (see [`Breaker`]'s *Panics*).
//!
//! What `poll_ready` decided holds only while the breaker stays as it was. If it has moved
//! since (an operator isolated, tripped or closed it, another clone's probe closed it, it
//! tripped, its open period ended), the call is decided again as the breaker stands at `call`:
//! an admission made while closed is refused once the breaker is isolated or open, and a
//! refusal made while open no longer stands once it closes. A `poll_ready` repeated before the
//! call decides again a refusal that went stale, and an admission that went stale while the
//! service is not ready: a caller waiting for the service is ready at once, to fail fast, when
//! polled after the breaker was isolated.
//!
//! A call admitted again at `call` after a refusal was never polled for by `poll_ready` (the
//! breaker was refusing it): the breaker asks the service once, without waiting, whether it is
//! ready, and if not the call fails with a [`CircuitOpen`] whose `retry_after` is zero (retry
//! now). A refusal counts as a rejection (in the metrics, and as an [`Event::Rejected`]) when
//! a call is failed with it, not when `poll_ready` decided it.

//! # Clone
//! Every service a layer makes, and every clone, shares one breaker.
//!
//! # Errors
//! [`CircuitOpen`] when rejected, naming the breaker that refused and the time left before it
//! probes (`circuit 'llm' open, retry in 480 ms`); otherwise the inner service's error,
//! unchanged, as a `BoxError`.
//!
//! # Logging
//! The breaker's `tracing` events (target `palisade_breaker`) carry its name in a `breaker`
//! field. An outage writes two lines above `DEBUG`, however long it lasts:
//!
//! | Level | Message | When, and its fields |
//! |---|---|---|
//! | `WARN` | `circuit opened` | the breaker trips while closed: `open_ms`, the open period; `hint_ms`, the server's hint on the failure that tripped it, if any (the period is at least that, up to [`max_hint`](BreakerConfig::max_hint)) |
//! | `INFO` | `circuit closed` | its probes close it: `open_ms`, how long since it first opened; `failed_probes`, how many probes failed (or timed out) meanwhile |
//! | `DEBUG` | `circuit re-opened: a probe failed` | each failed probe while the outage goes on: `open_ms`, the grown period; `hint_ms`, the probe's failure's hint, if any; `reopens`, how many so far |
//! | `DEBUG` | `half-open probe timed out: counted as failed` | a probe held its slot for [`probe_timeout`](BreakerConfig::probe_timeout) |
//! | `DEBUG` | `circuit state changed` | every transition: `from`, `to` |
//!
//! An operator's actions are one `INFO` line each: `circuit state set by hand` (`from`, `to`)
//! for [`isolate`](BreakerHandle::isolate), [`close`](BreakerHandle::close),
//! [`bypass`](BreakerHandle::bypass) and [`reset`](BreakerHandle::reset), and
//! `circuit tripped by hand` for [`trip`](BreakerHandle::trip) of a closed breaker (of one
//! already half-open, or open with its period over, the same outage goes on: `DEBUG`,
//! `circuit tripped again by hand`, as for a failed probe). A parent breaker that opens
//! says so once more at `INFO` through [`KeyedHandle::propagate`] (`parent opened: tripping
//! its children`); when it re-opens after a failed probe, it trips its half-open children again
//! at `DEBUG` (`parent re-opened: tripping its children again`, and `circuit tripped again by
//! hand` for each child, as for a child still open whose open period is over). A
//! reconfiguration is one `INFO` line, `breaker reconfigured`. Metrics and [`Listener`]s hear
//! every transition and rejection whatever the log level (a trip of an open breaker whose
//! period is over is none: they never heard it leave open). A transition's line is written
//! before the listeners hear it, so what they do about it is logged after it.
//!
//! # Performance
//! The closed happy path takes no lock, allocates nothing, boxes nothing and reads no clock
//! unless a rule needs durations: an atomic load to
//! admit (and a relaxed one at `call`, to see that the breaker has not moved since), a
//! reference count taken for the call's guard (on a counter striped per service
//! instance, so clones on different threads do not contend), and on success an increment of
//! the stripe's counter and a load of the failure streak. The response future is the inner
//! future plus 24 bytes of its own and the enum's tag where the inner future leaves no room
//! for it: 24 to 40 bytes more in all (measured over a ready future, 24 → 48; an async block
//! awaiting a `sleep`, 104 → 136; a future of no size, 0 → 40). A count window costs a success three shared loads while it holds
//! only successes, and its atomic updates once it holds a failure; the default
//! [`Window::Recent`] costs the same, and a clock read per recorded outcome once it holds a
//! failure (it judges the last second too); a time window costs its updates and a clock read
//! on every call; slow-call and cancel-after rules add a clock read per call. `cargo bench -p palisade-benches --bench
//! breaker` measures it beside tower-resilience's and failsafe's breakers.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
pub mod error;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod reconfigure;
mod service;
mod state;
#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests;
mod window;

pub use config::{BreakerConfig, CancelPolicy, DEFAULT_MAX_HINT, Rate, Throttle, Window};
pub use error::CircuitOpen;
pub use handle::{BreakerHandle, Metrics, Permit, Refusal};
pub use keyed::{KeyedBreaker, KeyedBreakerBuilder, KeyedBreakerLayer, KeyedHandle};
pub use layer::{BreakerBuilder, BreakerLayer};
pub use reconfigure::{Reconfigured, Reset};
pub use service::Breaker;
pub use state::{Event, Listener, State};
