//! Health-ramped routing over endpoints: replicas of an agent, LLM providers, deployments.
//!
//! [`Route`] spreads calls over endpoints by their health, stops sending to sick ones, and
//! brings recovered ones back gradually so they are not knocked over again.
//!
//! * **Health state machine**: Healthy → Degraded after 3 unhealthy
//!   signals in a row → Failed after 10; a healthy signal makes it Recovering at 0 %; after 3
//!   healthy signals in a row its traffic [ramps](Ramp) up in steps to 100 %; an unhealthy
//!   signal while recovering drops it to Degraded at 0 %. See [`HealthConfig`]. Without active
//!   checks nothing stays at 0 % for good: see [trials](#without-active-checks-trials).
//! * **Signals** come from active checks ([`HealthCheck`], run by
//!   [`RouteHandle::health_checker`], a future you spawn) and from real calls, read with
//!   [`class_of`](palisade_core::class_of): only failures that
//!   [count against health](palisade_core::Class::counts_against_health) count; a rate
//!   limit (`HealthImpact::Soft`) only cools the endpoint down for its `retry_after`: calls
//!   go to the other endpoints meanwhile, and when every endpoint that could take a call
//!   cools down, to those, so that their limiters decide rather than the router (the
//!   refused request's own retry waits for its hint).
//! * **Outlier ejection**, after Envoy's ([`OutlierConfig`]): consecutive failures, failure
//!   ratio, success rate below mean − k·σ; ejections last base × the times in a row the
//!   endpoint was taken out, capped, and at most a fraction of the endpoints is ejected at once
//!   (always allowing one).
//! * **Panic mode**: when health lets through less than [`RouteConfig::panic_ratio`] of the
//!   endpoints' traffic (the sum of their shares, so that one endpoint back at its ramp's
//!   first step does not end it and take everything; a new endpoint in slow start, healthy,
//!   counts in full), health is ignored and calls spread over all of them rather than fail. With [tiers](RouteBuilder::tier), as Envoy's panic threshold
//!   with priority levels, a tier panics by its own endpoints' traffic and only while the tiers
//!   together lack healthy capacity: two primaries down with a healthy standby send every call
//!   to the standby, not back to the primaries.
//! * **Priority tiers** for active-passive failover ([`RouteBuilder::tier`]): traffic stays on
//!   the lowest tier while its healthy capacity suffices and spills over as it degrades. A
//!   retry whose failed endpoint is the only eligible one in the tier its call would go to
//!   goes to the lowest other tier with an eligible endpoint instead, as Envoy's
//!   `previous_priorities` retry plugin moves a retry to another priority: with a single
//!   primary and a standby, a request the primary failed is retried on the standby, not on
//!   the primary again until enough failures eject it. The retry still waits its backoff
//!   (about 1 s by default: give the retry layer a shorter backoff for a faster failover).
//!   With no eligible endpoint in any other tier, the retry goes back to the endpoint that
//!   failed.
//! * **Picking**: weighted by health share, power of two choices on calls in flight (two
//!   distinct endpoints while all are plainly healthy, as in tower's `p2c`), seedable
//!   rng. A retry of the same request avoids the endpoint that just failed when another is
//!   eligible, in the same tier or, when the failed endpoint is the only eligible one there,
//!   in another (see the tiers above); when none is, a retry on the same endpoint beats no
//!   retry. The retry layer runs its attempts in an
//!   [`attempt` scope](palisade_core::context::attempt) that the router reads and reports to
//!   (see [Retries](#retries-and-the-attempt-context)).
//! * **Discovery**: endpoints come and go through a tower [`Discover`](tower::discover::Discover)
//!   ([`Route::discover`]); every clone of the router shares the one endpoint set (see
//!   [Discovery](#discovery)).
//! * **No eligible endpoint** (every one ejected or held out, none cooling down, panic mode
//!   off or not reached): the call fails at once with [`NoHealthyEndpoint`], whose
//!   `retry_after` is the soonest ejection, hold or cool-down to end that gives an endpoint
//!   back its share (none for an endpoint that active checks took out of traffic: only they
//!   bring it back).
//! * **An endpoint whose readiness fails** (its `poll_ready` returns an error) has failed, not
//!   the router: the error counts against that endpoint as a failed call of its class would
//!   (toward its health and outlier ejection), its spent service is replaced by a fresh clone,
//!   and the router picks again. Within one `poll_ready`, an endpoint whose readiness failed
//!   is not picked again while another endpoint is eligible (in its tier or, as for a retry,
//!   another), so one pass tries every eligible endpoint before any twice, panic mode
//!   included: there health is ignored, and picks free to repeat would land on the failing
//!   endpoints again and again (with two of three failing, about three calls in ten would
//!   fail). A retry's failed endpoint gives way first: when the only eligible endpoints left
//!   are it and those whose readiness failed, the retry goes back to it. When every pick of one
//!   `poll_ready` (as many as there are endpoints) lands on an endpoint whose readiness fails,
//!   the router reports ready and the call fails at once with [`NoHealthyEndpoint`] (no
//!   `retry_after`), as when nothing is eligible; the next `poll_ready` picks afresh. The
//!   router's `poll_ready` never returns an error: tower takes one as the end of the service,
//!   and a `Buffer` in front would fail every later request even after the endpoints
//!   recovered. tower's `p2c::Balance` stays alive the same way, but evicts the endpoint until
//!   discovery inserts it again; the router keeps it and lets its health decide, since a fixed
//!   list has no discovery to bring it back.
//! * **An endpoint that is not ready yet** (its `poll_ready` is pending: at its concurrency
//!   limit, say) holds up the router only while no other endpoint of its tier, or of a tier
//!   before it, is ready: the pass picks again, avoiding it, and waits only when every
//!   endpoint it could pick is pending, woken by whichever is ready first (tower's
//!   `p2c::Balance` likewise picks among ready endpoints). Not ready is not unhealthy: it
//!   counts nothing against the endpoint, and a busy primary does not spill its calls to the
//!   standby's tier, while a busy standby that a call spilled to gives the call back to a
//!   ready primary. The endpoint waited for is polled first at the next `poll_ready` while the
//!   pick could still give it the call (as a pick does, that includes an endpoint cooling down
//!   when every one does, and one held out in panic mode: waiting there keeps its place in
//!   line); once it is ejected, held out, cooling down (with another endpoint to go to) or the
//!   endpoint a retry avoids, the router stops waiting for it and drops what its pending
//!   readiness held (a place in a concurrency limit's queue) by replacing its service with a
//!   fresh clone. A change of the endpoint that takes it out of traffic (a failure, an
//!   ejection, a rate limit) wakes the task waiting for it, so that it picks again; one that
//!   comes with time alone (another endpoint's hold ending) does not, and is seen at the next
//!   wake-up. A pass that ends ready (another endpoint took the call, or none is eligible)
//!   stops waiting for every endpoint that was not ready and drops what their pending
//!   readiness held the same way: kept, a place freed in such an endpoint's queue would go to
//!   this router instance, which may not poll it again for long (an idle connection's clone),
//!   and the endpoint would refuse every other caller meanwhile. Likewise a reservation that
//!   a `poll_ready` made is kept by the next one (a caller that polled ready and then did not
//!   call: a `ready()` that lost a race against a timeout, say; a `Buffer`'s worker polls
//!   ready only once it holds a request, and calls at once) only while the pick could still
//!   give the call to its endpoint; else it is let go, and the router picks again. A verdict
//!   that no endpoint is eligible is not kept: the next `poll_ready` picks afresh.
//! * **A circuit breaker inside each endpoint** is redundant with the router and hides failures
//!   from it: a breaker's refusal is a local rejection, which does not count against the
//!   endpoint's health (the endpoint was not called), so while a per-endpoint breaker is open
//!   the router keeps sending it its share, each refused. Put one breaker above the router,
//!   for the dependency as a whole, and let the router's health and outlier ejection be the
//!   per-endpoint breaker: an endpoint that fails is taken out of traffic and brought back on
//!   trial, as a breaker would.
//! * **Live reconfiguration** ([`RouteHandle::reconfigure`]): a new [`RouteConfig`] reaches
//!   every clone at its next `poll_ready`, keeping each endpoint's health, ejection, cool-down
//!   and ramp; the [`RouteReconfigured`] result and a `tracing` event say what was reset.
//!
//! The per-call path takes no lock and allocates nothing: endpoint health lives in atomics
//! (the state machine packs into one `u64` updated by compare-and-swap). While every endpoint
//! is plainly healthy a pick reads no clock and scans nothing. Each router instance counts its
//! calls in its own lane of every endpoint; only the load that power-of-two-choices compares is
//! one counter per endpoint, shared by all callers.
//!
//! A clone is not free: it allocates once (its own list of the endpoints' services, which
//! holds what their readiness reserved), clones each endpoint's service and takes a lane, about
//! 400 instructions and one allocation of a pointer or two per endpoint. Clone a router once
//! per connection or task and call it many times; where a server clones its service for every
//! request (axum, hyper-util's `TowerToHyperService`), put tower's
//! [`Buffer`](https://docs.rs/tower/0.5/tower/buffer/struct.Buffer.html) in front of the
//! router: its clones share one router.
//!
//! # Without active checks: trials
//!
//! An endpoint that gets no traffic sends no signals, so with real calls as the only signals
//! an endpoint at 0 % would never come back. Envoy's answer for passive health checking is the
//! ejection time: an ejected host is returned to service once its ejection time is over, and
//! real traffic judges it again; a host that still fails is ejected again, for longer (the
//! [outlier detection overview](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier):
//! base ejection time × the times it was ejected, at most
//! [`max_ejection`](OutlierConfig::max_ejection); Envoy lowers the multiplier again while the
//! host stays healthy). The router applies the same rule to its health state machine:
//!
//! * When an endpoint's health takes it to 0 % (Failed, or Degraded after failing while
//!   recovering), it is **held** out for the next ejection time:
//!   [`base_ejection`](OutlierConfig::base_ejection) × its strikes, capped. Outlier ejections
//!   and holds count strikes together: ejecting an endpoint that is held ends with the hold
//!   rather than adding a strike, so one bad spell lengthens the next one once.
//! * When the hold (and any ejection) is over, the endpoint is **on trial**: it shows as
//!   [`Recovering`](HealthState::Recovering) and takes the ramp's first step of traffic (20 %
//!   by default; at least 10 %, Envoy's slow-start `min_weight_percent` default, for a ramp
//!   that starts at zero). Real calls are its checks: after
//!   [`min_healthy_checks`](HealthConfig::min_healthy_checks) successes in a row it ramps up
//!   as usual; a failure holds it out again for the next, longer ejection time.
//! * Strikes are cleared once the endpoint is fully healthy again: its ramp is done, or it is
//!   at full traffic after `min_healthy_checks` successes in a row.
//!
//! An endpoint that an active check has judged is left to the checks (they bring it back
//! through Recovering), since a probe is cheaper than a real call to learn that it is still
//! down. An outlier ejection of an endpoint whose health still allows traffic (degraded at
//! 50 %, say) returns it at that share when it ends, as Envoy does.
//!
//! With the defaults, a replica that fails every call is out for 30 s after its first five
//! failures, comes back degraded at half its share (five more failures), then is out for 60 s,
//! 90 s, ... up to 300 s, each trial costing one failed call, and any others its 20 % share
//! sends it before that failure returns (none where failures are quick). At 100 calls per
//! second over three replicas that is 5 of the 3,000 calls of the first 30 s after detection
//! (0.17 %), then one call per minute or more. A replica that was bad for less than 30 s is back at
//! half its share when its ejection ends and at its full share after three successes; one
//! that reached Failed gets a trial when its hold ends and its full share 120 s (the ramp)
//! after three successes. The defaults are Envoy's (`base_ejection_time` 30 s,
//! `max_ejection_time` 300 s, `consecutive_5xx` 5, `max_ejection_percent` 10, here
//! [`max_ejection_ratio`](OutlierConfig::max_ejection_ratio) 0.1, which with three endpoints
//! still ejects one).
//!
//! The pick does not change for any of this: while every endpoint is plainly healthy it reads
//! no clock; an endpoint held or on trial is not plainly healthy, so picks then scan with the
//! time, which is how they see a hold end.
//!
//! # Timeouts
//!
//! A call that a per-attempt timeout above the router cuts off never returns an error to the
//! router: its future is dropped. Dropped like that, a slow endpoint would never fail a call
//! and would keep its share of traffic however slow it got. So a call dropped while
//! [`attempt::timing_out`](palisade_core::context::attempt::timing_out) is true, which
//! `palisade-timeout`'s `Timeout` sets around the drop of an attempt whose time is up (see
//! [`attempt::time_out`](palisade_core::context::attempt::time_out)), is recorded as a
//! failure of class [`Timeout`](palisade_core::Category::Timeout) for its endpoint, by the
//! same path as a returned error of that class: it counts toward consecutive-failure ejection,
//! the failure percentage and the health state machine, and a retry's next attempt avoids the
//! endpoint. That is Envoy's rule: its
//! [outlier detection](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier)
//! counts a timeout as a locally originated failure of the host, an error like a 5xx unless
//! local and external errors are split.
//!
//! Every other early drop is neutral, as before: the call only leaves its endpoint's load. A
//! whole-call deadline that fires (`palisade-timeout`'s `Deadline`) is not evidence against the
//! endpoint of the attempt in flight, nor is a caller giving up or a retry cancelling an
//! attempt. The check costs one thread-local read, made only when a call is dropped before it
//! completes; a completed call does not look. The timeout's mark does not cross a task
//! boundary, but a `Buffer` is none here: its worker hands the response future back to the
//! caller's task, which drops it inside the timeout's drop, so a router behind a `Buffer`
//! learns of the timeout too. Across a spawned task (a client with a task of its own) the
//! future below is not dropped with the one above at all, and the router does not learn of
//! it.
//!
//! # Retries and the attempt context
//!
//! A retry layer above runs each attempt after the first (its `poll_ready`, its `call` and
//! every poll of its future), and the first attempt's `call` and polls, inside an
//! [`attempt` scope](palisade_core::context::attempt) that names the endpoint that failed the
//! previous attempt of the request (`avoid`). The first attempt's `poll_ready` comes before
//! the retry's own `call` and runs outside it (it has nothing to avoid; under nested retries
//! it sees the enclosing one's attempt). The router reads the scope in three places:
//!
//! * `poll_ready` picks an endpoint other than `avoid` when another is eligible, in another
//!   tier when `avoid` is the only eligible endpoint of the tier the call would go to (see
//!   the tiers above).
//! * `call` reads it again (one thread-local read), for when `poll_ready` ran outside the
//!   scope: behind a `tower::buffer::Buffer` or any boundary that polls the router ready on
//!   another task, with the scope carried to `call` by the pair of layers in
//!   `palisade::context` (see below). If `avoid` is the endpoint `poll_ready` reserved and
//!   another is eligible, the router picks again without it (the same pick, allocating
//!   nothing) and polls that endpoint's service once with a no-op waker: if it is ready, the
//!   request goes there, and the reserved service, ready as tower's contract allows it to
//!   stay, is kept for this instance's next call; if it is not ready (or there is no other
//!   eligible endpoint), the request goes to the reserved one, and that endpoint's service is
//!   replaced by a fresh clone, so that the pending readiness polled with no waker holds
//!   nothing (a concurrency limit's place, handed to it later and never used).
//! * The response future reports a failure that counts against health as the endpoint to
//!   avoid next time.
//!
//! A boundary between the retry layer and the router that carries nothing (a `Buffer` alone, a
//! client that calls on its own task) runs both `poll_ready` and `call` outside the scope,
//! while the response future is still polled inside it. The router notices that on the future's
//! first poll (a bit in the future, and one thread-local read on that poll only when `call`
//! saw no scope) and logs a `tracing` warning, once per process, saying that retries cannot
//! avoid the failed endpoint there and naming the fix: put `palisade::context::CarryLayer`
//! above the boundary and `palisade::context::ResumeLayer` below it.
//!
//! # Discovery
//!
//! A router made with [`Route::discover`] and all its clones share one endpoint set, so they
//! can be cloned freely (a retry layer clones its service for each retried request, a server
//! clones its stack per connection) without a `Buffer` in front and without `D: Clone`:
//!
//! * **One driver at a time.** Discovery is polled from `poll_ready`, by whichever instance gets
//!   there first once the stream has woken (a `try_lock`; the others carry on with the set they
//!   have). A change is applied once, to the shared set. Polling from `poll_ready` is what
//!   tower's own `Balance` does; sharing the stream rather than spawning a task for it means no
//!   runtime is needed, nothing runs in the background where a user did not put it (no task to
//!   leak or to stop), and changes land deterministically, at the next `poll_ready`, on a
//!   paused-clock test or in the simulator. The stream is polled with a waker of the router's
//!   own that marks it as woken and wakes the task that polled it last, as a router that owned
//!   its stream would be woken; a clone waiting for an endpoint's readiness on another task
//!   learns of the change when it is next polled.
//! * **Noticing a change costs one atomic load.** Each instance keeps its own copy of the
//!   endpoint list and its own clones of the endpoint services (and its own lane, see above);
//!   on every `poll_ready` it loads one word that holds the set's version and whether the
//!   stream woke, and only when the version differs from the one it copied takes the new list
//!   (a lock and allocations, on a change only), keeping its services of the endpoints that
//!   stayed, with whatever `poll_ready` reserved, and cloning the services of new ones (and
//!   the new service of an endpoint inserted again, see below). Until the stream wakes,
//!   `poll_ready` takes no lock.
//! * **Errors do not fail calls.** A discovery error is logged with `tracing::warn!` and the
//!   router keeps routing over the endpoints discovery gave so far; the stream is polled again
//!   at the next `poll_ready`. That is what Envoy does when an update of its endpoints fails
//!   and what gRPC does when its resolver fails after having given addresses: a resolver
//!   hiccup is no reason to fail requests that have healthy endpoints, and an error from
//!   `poll_ready` would do worse than that (tower treats it as the end of the service: a
//!   `Buffer` in front would fail every later request). With no endpoint at all, calls fail
//!   with [`NoHealthyEndpoint`] as they would anyway.
//! * **Discovery ending keeps the last set**, for good.
//! * **An insert of a key already in the set** updates that endpoint in place: it takes what
//!   the insert carries, the service and the key (equal to the old one, but a key type may
//!   carry more than its identity, an address, say: [`status`](RouteHandle::status),
//!   [`keys`](Route::keys), the health checks and the logs see the new key), and keeps
//!   everything the router knows of the endpoint: its health state, ejection and the count of
//!   ejections that sets the next one's length, hold, cool-down, ramp, outlier statistics,
//!   active-check trend and token (so a retry still avoids it). The key is the endpoint's
//!   identity (by its `PartialEq`), as a host is in Envoy, which keeps a host's outlier
//!   detection state when its discovery announces the host again, and updates in place the
//!   weight, metadata and priority that the announcement carries. An insert carries nothing
//!   else here: every discovered endpoint is in tier 0 (tiers are for a fixed list's
//!   endpoints, [`RouteBuilder::tier`]), and there are no per-endpoint weights. So a discovery
//!   that announces every endpoint again from time to time (a Kubernetes watch that resyncs,
//!   a DNS poll) neither brings an ejected endpoint back before its ejection ends, nor
//!   forgets how often it was ejected, nor makes a healthy endpoint ramp up again (slow start
//!   is for new keys: a ramp in progress goes on). Calls in flight to the old service finish
//!   normally and count toward the same endpoint; each instance drops its copy of the old
//!   service (and a reservation made on it) when it takes the new list. To start an endpoint
//!   afresh (another backend under a reused key), remove it and insert it again: a removal
//!   forgets the endpoint.
//! * **Removal** takes the endpoint out of every instance's next pick; calls in flight to it
//!   finish normally.
//!
//! # Example
//!
//! ```
//! use palisade_core::{BoxError, ClassifyLayer, DefaultClassifier};
//! use palisade_route::{Route, HealthState};
//! use tower::{Service, ServiceExt, service_fn, Layer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let replica = |name: &'static str, up: bool| {
//!     ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(move |_: ()| async move {
//!         if up { Ok::<_, BoxError>(name) } else { Err("503 service unavailable".into()) }
//!     }))
//! };
//! let mut route = Route::new([replica("a", true), replica("b", false)]);
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
//! # Building
//!
//! [`Route::new`] takes the endpoints and uses the documented defaults of [`RouteConfig`];
//! [`Route::builder`] sets anything else, field by field or whole ([`RouteBuilder::config`]),
//! and adds endpoints in other tiers; [`Route::discover`] and [`Route::discover_builder`] do
//! the same for endpoints fed by a tower `Discover` (all in tier 0: a discovery change carries
//! a key and a service, no tier). [`RouteBuilder::build`] checks every field
//! at once. Fractions are `*_ratio`, in `0..=1`, and `None` is the one way to turn a rule off
//! (a zero or out-of-range value is a [`ConfigError`](palisade_core::ConfigError), never a
//! secret off switch).
//!
//! # Why there is no `RouteLayer`
//!
//! A tower [`Layer`](tower_layer::Layer) wraps one service in another; a router spreads calls
//! over many services, each endpoint's own, so there is no one inner service for a layer to
//! wrap. tower's own load balancer is built the same way for the same reason: `Balance` is a
//! service made from a `Discover`, not a layer. The router goes at the bottom of a stack, as
//! the service the layers above wrap (`ServiceBuilder::new().layer(..).service(route)`), with
//! each endpoint's own layers (a classifier, a client) inside its endpoint service.
//!
//! # Errors
//! [`NoHealthyEndpoint`] when nothing is eligible, or when every endpoint the router tried
//! failed its readiness; an endpoint's own call errors pass through unchanged. `poll_ready`
//! never fails. Bad configuration is a [`ConfigError`](palisade_core::ConfigError) naming the
//! field by its path (`outlier.max_ejection_ratio`), at build time.

mod builder;
mod check;
mod config;
mod endpoint;
mod error;
pub mod future;
mod health;
mod pick;
mod ramp;
mod reconfigure;
mod service;
mod set;
mod status;

pub use builder::RouteBuilder;
pub use check::{CheckFn, CheckFuture, HealthCheck, Suite, check_fn};
pub use config::{OutlierConfig, RouteConfig};
pub use error::NoHealthyEndpoint;
pub use health::{HealthConfig, HealthState};
pub use ramp::Ramp;
pub use reconfigure::RouteReconfigured;
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
#[cfg(not(palisade_loom))]
mod tests;

#[cfg(test)]
#[cfg(palisade_loom)]
mod loom_tests;
