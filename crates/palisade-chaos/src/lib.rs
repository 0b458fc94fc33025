//! Seeded fault injection for tower services: failures, canned responses, latency, hangs and
//! capacity limits, on schedules, switchable at run time.
//!
//! [`ChaosLayer`] wraps a service and, for each call, decides from its configuration whether to
//! let the call through, delay it, fail it, answer it itself or make it hang. It is how a stack
//! is tested against the faults it is meant to survive (in tests, in the simulator, in a staging
//! deployment) and it is safe to leave in production code: disabled, it costs one relaxed atomic
//! load per call.
//!
//! - A [`Fault`] applies an [`Effect`] to a `rate` share of the calls its [`Schedule`] covers:
//!   always, in outage windows, or flapping.
//! - A [`Capacity`] admits so many calls per second (fixed, or ramping up as a dependency
//!   recovers) and applies its `over` effect to the rest, like a rate-limited or overloaded
//!   server.
//! - Failures are [`error::Injected`] errors carrying a [`Class`](palisade_core::Class), so
//!   retry, breaker, route and fallback above react as they would to the real failure.
//!
//! # Example
//!
//! ```
//! use palisade_chaos::{ChaosLayer, Fault, Latency, Schedule};
//! use palisade_core::{BoxError, Category, Class, class_of};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let chaos = ChaosLayer::builder()
//!     // 50 ms more on every call.
//!     .fault(Fault::delay(Latency::Fixed(Duration::from_millis(50))))
//!     // An outage: every call from 10 s to 20 s fails with a server error.
//!     .fault(
//!         Fault::fail(Class::new(Category::ServerError))
//!             .during(Schedule::window(Duration::from_secs(10), Duration::from_secs(20))),
//!     )
//!     .seed(42)
//!     .build()?;
//! let handle = chaos.handle();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service(service_fn(|name: &'static str| async move { Ok::<_, BoxError>(name.len()) }));
//!
//! assert_eq!(svc.clone().oneshot("agent").await?, 5);
//!
//! tokio::time::sleep(Duration::from_secs(15)).await;
//! let err = svc.clone().oneshot("agent").await.unwrap_err();
//! assert_eq!(class_of(&err).category, Category::ServerError);
//!
//! // Switched off, the layer is a passthrough.
//! handle.disable();
//! assert_eq!(svc.clone().oneshot("agent").await?, 5);
//! assert_eq!(handle.injected().failed, 1);
//! assert_eq!(handle.injected().delayed, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What happens to a call
//!
//! Disabled (by [`ChaosBuilder::enabled`] or [`ChaosHandle::disable`]), the call goes straight
//! to the inner service: no clock read, no random number, no allocation. Enabled, the clock is
//! read once and:
//!
//! 1. each [`Capacity`] whose schedule covers the call takes a token from its bucket; a call
//!    over capacity gets the capacity's `over` effect;
//! 2. then the faults are checked in the order they were added: the first whose schedule covers
//!    the call and whose rate hits it decides the call.
//!
//! [`Effect::Delay`] latencies add up and let the search go on; the total is waited before the
//! call proceeds, or before an injected failure or response is returned.
//! [`Effect::Fail`], [`Effect::Respond`] and [`Effect::Hang`] end the search and do not call the
//! inner service.
//!
//! A delayed call calls the inner service at once, in [`Service::call`](tower_service::Service::call)
//! as the tower contract requires after `poll_ready`, holds its future, and polls it only once the
//! delay has elapsed. What the inner service does in `call` itself happens at once; what its
//! future does (the body of an `async` block, the request of most clients) starts after the
//! delay, as if the call had spent the delay on the way there.
//!
//! A hanging call's future stays pending until it is dropped, typically by a timeout above the
//! layer, or until the layer is switched off.
//!
//! # Switching off
//!
//! [`ChaosHandle::disable`] is a kill switch: new calls go straight to the inner service, and
//! every call a fault is still holding is let go at once, whatever latency or hang it was given.
//!
//! - A delayed call stops waiting and returns the inner service's answer (the inner service
//!   already has the call).
//! - A hanging call, or one waiting to fail or answer ([`Fault::after`]), is passed to the inner
//!   service, which answers it: the call becomes a plain passthrough, counted as
//!   [`delayed`](ChaosCounts::delayed).
//! - Outcomes already returned, and failures or responses returned without a wait, stay as
//!   they were.
//!
//! [`ChaosHandle::enable`] applies to the calls made after it: the waits a disable ended do not
//! resume.
//!
//! # Randomness
//!
//! Rates and random latencies are drawn from a sequence fixed by [`ChaosBuilder::seed`]: each
//! call that needs random numbers takes the next position in the sequence, lock-free. The same
//! seed, the same calls in the same order at the same instants, the same faults.
//!
//! # Time
//!
//! Schedules and capacity ramps count from the layer's epoch ([`ChaosLayer::epoch`]: when it
//! was built, unless [`ChaosBuilder::epoch`] says otherwise). Before an epoch set in the
//! future, time counts as the epoch itself: a schedule that applies at 0 (`Always`, a window
//! or a flapping schedule from 0) applies throughout the wait, one that starts later waits for its start
//! after the epoch, and capacities admit the rate they start with (their buckets refill as
//! time passes). See [`Schedule`]. All time is `tokio::time`, so
//! tests on a paused clock and simulations in virtual time control it.
//!
//! # Clones
//!
//! Every clone of the layer, every service it makes and every clone of those share one state:
//! the switch, the counters, the capacity buckets and the random sequence. [`Chaos`] is `Clone`
//! when the inner service is, and is a service only then: a call a fault holds keeps the inner
//! service it was given, ready, for the switch to pass the call on (see [Readiness](#readiness)).
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's. A call that is failed or answered without a wait does not
//! use the readiness it was given; the inner service keeps it for the next call. A call held by a
//! hang, or waiting to fail or answer, takes the ready inner service and the request into its
//! future, leaving a clone in the layer's service, so that [`ChaosHandle::disable`] can still
//! pass it on: whatever the readiness holds (a concurrency slot, a buffer place) stays with the
//! call, as it would with a real slow dependency, and comes back when the wait ends or the call
//! is dropped. A delayed call calls the inner service at once, as any call let through, and
//! its future keeps what the readiness gave for the delay and the call together: a delay under
//! a concurrency limit holds a slot for as long as it lasts.
//!
//! # Errors
//!
//! Errors of the inner service pass through, converted into [`BoxError`](palisade_core::BoxError).
//! Injected failures are [`error::Injected`], which carries the configured class:
//! [`class_of`](palisade_core::class_of) reads it, with nothing to register.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod bucket;
pub mod error;
mod fault;
pub mod future;
mod handle;
mod layer;
mod rng;
mod schedule;
mod service;

#[cfg(test)]
mod tests;

pub use fault::{Capacity, Effect, Fault};
pub use handle::{ChaosCounts, ChaosHandle};
pub use layer::{ChaosBuilder, ChaosLayer};
pub use schedule::{Latency, Schedule};
pub use service::Chaos;
