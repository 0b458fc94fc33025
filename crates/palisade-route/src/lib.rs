//! Health-ramped routing over endpoints: replicas of an agent, LLM providers, deployments.
//!
//! [`Route`] spreads calls over endpoints by their health, stops sending to sick ones, and
//! brings recovered ones back gradually so they are not knocked over again.
//!
//! * **Health state machine** (the reference design's): Healthy → Degraded after 3 unhealthy
//!   signals in a row → Failed after 10; a healthy signal makes it Recovering at 0 %; after 3
//!   healthy signals in a row its traffic [ramps](Ramp) up in steps to 100 %; an unhealthy
//!   signal while recovering drops it to Degraded at 0 %. See [`HealthConfig`].
//! * **Signals** come from active checks ([`HealthCheck`], run by
//!   [`RouteHandle::health_checker`], a future you spawn) and from real calls, read with
//!   [`class_of`](palisade_classify::class_of): only failures that
//!   [count against health](palisade_classify::Class::counts_against_health) count; a rate
//!   limit (`HealthImpact::Soft`) only cools the endpoint down for its `retry_after`.
//! * **Outlier ejection**, after Envoy's ([`OutlierConfig`]): consecutive failures, failure
//!   percentage, success rate below mean − k·σ; ejections last base × count, capped, and at most
//!   a percentage of endpoints is ejected at once (always allowing one).
//! * **Panic mode**: when fewer than [`RouteConfig::panic_threshold`] of the endpoints can take
//!   traffic, health is ignored and calls spread over all of them rather than fail.
//! * **Priority tiers** for active-passive failover: traffic stays on the lowest tier while its
//!   healthy capacity suffices and spills over as it degrades.
//! * **Picking**: weighted by health share, power of two choices on calls in flight, seedable
//!   rng. A retry of the same request avoids the endpoint that just failed when another is
//!   eligible: the retry layer runs its attempts in an
//!   [`attempt` scope](palisade_classify::attempt) that the router reads and reports to.
//! * **No eligible endpoint**: the call fails at once with [`NoHealthyEndpoint`], whose
//!   `retry_after` is the soonest ejection or cool-down to end.
//!
//! The per-call path takes no lock and allocates nothing: endpoint health lives in atomics
//! (the state machine packs into one `u64` updated by compare-and-swap). While every endpoint
//! is plainly healthy a pick reads no clock and scans nothing. Each router instance counts its
//! calls in its own lane of every endpoint; only the load that power-of-two-choices compares is
//! one counter per endpoint, shared by all callers.
//!
//! # Example
//!
//! ```
//! use palisade_classify::{BoxError, ClassifyLayer, DefaultClassifier};
//! use palisade_route::{Route, RouteConfig, HealthState};
//! use tower::{Service, ServiceExt, service_fn, Layer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let replica = |name: &'static str, up: bool| {
//!     ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(move |_: ()| async move {
//!         if up { Ok::<_, BoxError>(name) } else { Err("503 service unavailable".into()) }
//!     }))
//! };
//! let mut route = Route::new(RouteConfig::default(), [replica("a", true), replica("b", false)])?;
//! let handle = route.handle();
//!
//! // Replica b fails every call it gets; after five in a row it is ejected.
//! let mut answers = Vec::new();
//! for _ in 0..40 {
//!     if let Ok(name) = route.ready().await?.call(()).await {
//!         answers.push(name);
//!     }
//! }
//! let status = handle.status();
//! assert!(status[1].ejected);
//! assert_eq!(status[0].state, HealthState::Healthy);
//! assert!(answers.iter().all(|n| *n == "a"));
//! # Ok(()) }
//! ```
//!
//! # Errors
//! [`NoHealthyEndpoint`] when nothing is eligible; an endpoint's own errors pass through
//! unchanged. Bad configuration is a [`ConfigError`](palisade_classify::ConfigError) naming the
//! field, at build time.

mod check;
mod config;
mod endpoint;
mod error;
pub mod future;
mod health;
mod ramp;
mod service;
mod status;

pub use check::{CheckFn, CheckFuture, HealthCheck, Suite, check_fn};
pub use config::{OutlierConfig, RouteConfig};
pub use error::NoHealthyEndpoint;
pub use health::{HealthConfig, HealthState};
pub use ramp::Ramp;
pub use service::Route;
pub use status::{EndpointStatus, RouteHandle, Trend};

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::discover::Change;

/// The "discovery" of a fixed list: it never changes. [`Route::new`] uses it.
pub struct Static<S>(PhantomData<fn() -> S>);

impl<S> Clone for Static<S> {
    fn clone(&self) -> Self {
        Static(PhantomData)
    }
}

impl<S> std::fmt::Debug for Static<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Static")
    }
}

impl<S> futures_core::Stream for Static<S> {
    type Item = Result<Change<usize, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests;
