//! [`Route`]: the service that spreads calls over endpoints by their health.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use palisade_core::context::attempt;
use palisade_core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use palisade_core::{BoxError, class_of};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tower::discover::Discover;
use tower_service::Service;

use crate::endpoint::{EndpointState, LiveConfig, Waiting, live, ms_since};
use crate::future::ResponseFuture;
use crate::pick;
use crate::set::{List, Set, Versions, WOKEN};
use crate::{NoHealthyEndpoint, RouteBuilder, RouteConfig, RouteHandle, Static};

/// The panic of a `call` that no successful `poll_ready` reserved an endpoint for.
const CALL_WITHOUT_POLL_READY: &str = "`Route::call` without a successful `poll_ready` \
     on this instance: `poll_ready` picks the endpoint the call goes to, so call `poll_ready` \
     until it returns `Ready(Ok(()))` before each `call`";

/// What the router shares with its handle and health checker.
pub(crate) struct Shared<K> {
    /// The configuration in force (see [`LiveConfig`]); each router instance keeps a copy,
    /// taken again when the set's version moves.
    pub(crate) config: LiveConfig,
    /// Moves the set's version, so that every instance takes the new configuration.
    pub(crate) versions: Versions,
    /// Serialises reconfigurations (never taken by a call).
    pub(crate) reconfiguring: Mutex<()>,
    pub(crate) origin: Instant,
    /// The current endpoint set, for the handle and the checker. Written on discovery
    /// changes, read by status and checks: never on the per-call path.
    pub(crate) registry: Mutex<Vec<(K, Arc<EndpointState>)>>,
    /// Bumped by every event that may change eligibility (failures, checks, ejections,
    /// discovery); successes of healthy endpoints leave it alone.
    pub(crate) epoch: Arc<AtomicU64>,
    /// The epoch at which a full scan found every endpoint fully healthy in one tier: while the
    /// epoch has not moved since, a pick needs no scan.
    plain_at: AtomicU64,
    /// Hands out lanes to router instances, round robin (see `LaneRef`).
    next_lane: AtomicUsize,
}

/// Spreads calls over endpoints by their health; see the [crate docs](crate).
///
/// # Clone
/// Clones share one endpoint set: a change that discovery makes reaches every clone, those
/// made before it and after it alike, and a clone never needs a `tower::buffer::Buffer` to
/// stay in step, so a retry layer above can clone the router freely (`D` itself need not be
/// `Clone`). Discovery is polled by whichever clone's `poll_ready` runs first after the
/// stream woke, and each clone notices a new set with one atomic load (see
/// [Discovery](crate#discovery)). Clones share every endpoint's health, and pick with their
/// own reproducible rng.
///
/// Endpoint services must be `Clone`: each router instance keeps its own clone of every
/// endpoint's service and calls it directly, as tower's `Balance` does, so no call clones a
/// service; cloning the router clones those (and a few `Arc`s and an rng), and a clone takes
/// its own copies of endpoints that discovery adds later. A service whose readiness fails is
/// replaced by a fresh clone, and so is one that discovery inserts again under its key. Give
/// each connection or worker its own clone of the router: each clone also counts its calls in
/// its own lane, so clones on different threads do not contend.
///
/// # Readiness
/// `poll_ready` applies discovery changes if the stream woke, picks an endpoint and waits for
/// that endpoint to be ready. When no endpoint is eligible it reports ready anyway and the call
/// fails at once with [`NoHealthyEndpoint`] (the `LoadShed` shape), so retry and fallback above
/// can act; a second `poll_ready` before that call picks afresh. An endpoint that is not ready
/// yet gives way to another ready one, and a `poll_ready` that ends ready drops what the
/// endpoints it did not wait for queued for (a place in a concurrency limit's queue) by
/// replacing their services with fresh clones. `poll_ready` never returns an error, which
/// tower would take as the end of the router. An endpoint whose `poll_ready` fails counts that failure against its own health, as
/// a failed call, gets a fresh clone of its service, and the router picks again, not that
/// endpoint while another is eligible (in another tier if need be), so one `poll_ready` tries
/// every eligible endpoint before any twice, in panic mode as well; when every pick of one
/// `poll_ready` (as many as there are endpoints) lands on such an endpoint, the router reports
/// ready and the call fails with [`NoHealthyEndpoint`], as when none is eligible (see the
/// [crate docs](crate)).
/// A discovery error does not fail `poll_ready` either: it is logged and the router keeps the
/// endpoints it has (see [Discovery](crate#discovery)). `call` may send the request to another
/// ready endpoint than the one `poll_ready` chose, when a retry's attempt context (only known
/// at `call` behind a boundary) says to avoid the chosen one (see
/// [Retries](crate#retries-and-the-attempt-context)).
///
/// # Panics
/// `poll_ready` reserves something: the endpoint the next call goes to (or the verdict that
/// none is eligible). So, as tower's own services that reserve in `poll_ready` (`Buffer`,
/// `ConcurrencyLimit`, `Balance`), `call` panics unless the last `poll_ready` of this instance
/// returned `Ready(Ok(()))` and no call has used it since: after a `Pending` or an error, on
/// a second `call`, or on a clone (a clone reserves nothing of its original's). Its
/// [`ResponseFuture`] panics if polled after it completed, as tower's futures do.
pub struct Route<D: Discover> {
    shared: Arc<Shared<D::Key>>,
    /// The endpoint set and discovery, shared by every clone.
    set: Arc<Set<D>>,
    /// This instance's copy of the set's list, as of `version`; copy-on-write.
    endpoints: List<D::Key, D::Service>,
    /// This instance's copy of the configuration, as of `version`.
    config: Arc<RouteConfig>,
    /// The set's version `endpoints` was copied at (its [`Set::state`] without [`WOKEN`]).
    version: u64,
    rng: SmallRng,
    /// Seeds for clones, so that each clone (one per connection or worker, say) picks
    /// differently yet reproducibly. Per instance: never contended.
    seeds: AtomicU64,
    /// This instance's lane in every endpoint (see `LaneRef`).
    lane: usize,
    /// This instance's own copy of each endpoint's service, in the order of `endpoints`: a
    /// call goes to the instance's copy, so no call clones a service (tower's `Balance` owns
    /// its services the same way).
    services: Vec<D::Service>,
    /// The endpoints whose readiness failed, or that were not ready yet, during the current
    /// `poll_ready`, one bit per position in `endpoints`: that `poll_ready`'s next picks avoid
    /// them. Sized at the first such endpoint (it keeps its size), emptied when `endpoints`
    /// changes, all clear between calls of `poll_ready`.
    unready: Vec<u64>,
    /// The endpoints whose service in `services` returned `Pending` to a `poll_ready` of this
    /// instance and was neither ready nor replaced since: each holds what its pending
    /// readiness queued for (a place in a concurrency limit's queue, and the permit handed to
    /// it later), one bit per position in `endpoints`. A pass that ends ready lets them go
    /// (see [`let_go`](Self::let_go)). Empty while none is (the common case: one check at the
    /// end of a pass); sized at the first (it keeps its capacity), emptied when `endpoints`
    /// changes.
    queued: Vec<u64>,
    /// The endpoint `poll_ready` chose, whose service in `services` is ready.
    ready: Option<usize>,
    /// The endpoint `poll_ready` chose that was not ready yet.
    pending: Option<usize>,
    unavailable: Option<NoHealthyEndpoint>,
    /// Where this instance's task waits to be woken when the endpoint in `pending` is taken
    /// out of traffic (see [`Waiters`](crate::endpoint::Waiters)); made at its first wait.
    waiting: Option<Arc<Waiting>>,
}

impl<D> Clone for Route<D>
where
    D: Discover,
    D::Key: Clone,
    D::Service: Clone,
{
    fn clone(&self) -> Self {
        let seed = self
            .seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Route {
            lane: self.shared.next_lane.fetch_add(1, Ordering::Relaxed),
            shared: self.shared.clone(),
            set: self.set.clone(),
            endpoints: self.endpoints.clone(),
            config: self.config.clone(),
            // The clone catches up with the set at its first poll_ready if this copy is old.
            version: self.version,
            // A clone picks differently from its original and its siblings, reproducibly.
            rng: SmallRng::seed_from_u64(seed),
            seeds: AtomicU64::new(seed ^ 0xd1b5_4a32_d192_ed03),
            // Clones of the original's services: what its poll_ready reserved stays with it.
            services: self.services.clone(),
            unready: Vec::new(),
            queued: Vec::new(),
            ready: None,
            pending: None,
            unavailable: None,
            waiting: None,
        }
    }
}

impl<D: Discover> fmt::Debug for Route<D>
where
    D::Key: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.key).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl<S: Clone> Route<Static<S>> {
    /// A router over a fixed list of endpoints, all in tier 0, keyed by position, with the
    /// defaults of [`RouteConfig`]: the health state machine of [`HealthConfig`](crate::HealthConfig)
    /// (degraded after 3 failures in a row, failed after 10, ramped back over 120 s), Envoy's
    /// outlier detection defaults ([`OutlierConfig`](crate::OutlierConfig): ejected after 5
    /// failures in a row, for 30 s and longer each time, at most 300 s, at most a tenth of the
    /// endpoints at once but always one), panic mode below half the endpoints, seed `0x5eed`.
    ///
    /// [`Route::builder`] sets anything else, and tiers.
    pub fn new(endpoints: impl IntoIterator<Item = S>) -> Self {
        Route::builder(endpoints)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a router over a fixed list of endpoints, in tier 0, keyed by position;
    /// [`RouteBuilder::tier`] adds endpoints in other tiers.
    pub fn builder(endpoints: impl IntoIterator<Item = S>) -> RouteBuilder<Static<S>> {
        RouteBuilder::fixed(endpoints)
    }
}

impl<D> Route<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
    D::Error: Into<BoxError>,
{
    /// A router whose endpoints come and go through `discover` (tier 0; new endpoints ramp up,
    /// as [`RouteConfig::slow_start`] is on by default), with the defaults of [`RouteConfig`]
    /// (see [`Route::new`]).
    ///
    /// The router and all its clones share the endpoint set; discovery is polled from their
    /// `poll_ready`, no task is spawned and no runtime is needed (see
    /// [Discovery](crate#discovery)).
    ///
    /// The key is the endpoint's identity (by its `PartialEq`). A
    /// [`Change::Insert`](tower::discover::Change::Insert) of a key already in the set
    /// replaces that endpoint's service and key (an equal key that carries more, an address
    /// say, is what [`status`](RouteHandle::status), [`keys`](Self::keys), the health checks
    /// and the logs see from then on) and keeps its health, ejection (and count of ejections),
    /// hold, cool-down, ramp and outlier statistics, so a discovery that announces its
    /// endpoints again from time to time does not bring an ejected one back early; a
    /// [`Change::Remove`](tower::discover::Change::Remove) forgets the endpoint, so removing
    /// and inserting it again starts it afresh. See [Discovery](crate#discovery).
    ///
    /// ```
    /// use palisade_core::BoxError;
    /// use palisade_route::Route;
    /// use tower::discover::ServiceList;
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let replica = |name: &'static str| service_fn(move |_: ()| async move {
    ///     Ok::<_, BoxError>(name)
    /// });
    /// let route = Route::discover(ServiceList::new([replica("a"), replica("b")]));
    /// // A clone made before discovery was ever polled: whichever polls first applies the
    /// // changes, for both.
    /// let mut clone = route.clone();
    /// let name = clone.ready().await?.call(()).await?;
    /// assert!(name == "a" || name == "b");
    /// assert_eq!(route.handle().status().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn discover(discover: D) -> Self {
        Route::discover_builder(discover)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a router whose endpoints come and go through `discover`, as
    /// [`Route::discover`] makes with the defaults.
    ///
    /// ```
    /// use palisade_core::BoxError;
    /// use palisade_route::Route;
    /// use tower::discover::ServiceList;
    /// use tower::service_fn;
    ///
    /// # fn main() -> Result<(), BoxError> {
    /// let replica = service_fn(|_: ()| async { Ok::<_, BoxError>("a") });
    /// let route = Route::discover_builder(ServiceList::new([replica]))
    ///     .slow_start(false)
    ///     .build()?;
    /// # let _ = route;
    /// # Ok(()) }
    /// ```
    pub fn discover_builder(discover: D) -> RouteBuilder<D> {
        RouteBuilder::discovered(discover)
    }
}

impl<D: Discover> Route<D>
where
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
{
    /// A router from a validated `config`, fed by `discover` if any, over the `fixed`
    /// endpoints `(tier, key, service)` (which do not ramp up: they are there from the start).
    pub(crate) fn from_parts(
        config: RouteConfig,
        discover: Option<D>,
        fixed: Vec<(u8, D::Key, D::Service)>,
    ) -> Self {
        let is_fixed = discover.is_none();
        let set = Arc::new(Set::new(discover));
        let mut route = Route {
            shared: Arc::new(Shared {
                config: live(config),
                versions: set.versions(),
                reconfiguring: Mutex::new(()),
                origin: Instant::now(),
                registry: Mutex::new(Vec::new()),
                epoch: Arc::new(AtomicU64::new(0)),
                plain_at: AtomicU64::new(u64::MAX),
                next_lane: AtomicUsize::new(1),
            }),
            set,
            lane: 0,
            endpoints: Arc::new(Vec::new()),
            config: Arc::new(config),
            version: 0,
            rng: SmallRng::seed_from_u64(config.seed),
            seeds: AtomicU64::new(config.seed ^ 0x2545_f491_4f6c_dd1d),
            services: Vec::new(),
            unready: Vec::new(),
            queued: Vec::new(),
            ready: None,
            pending: None,
            unavailable: None,
            waiting: None,
        };
        if is_fixed {
            for (tier, key, svc) in fixed {
                route.set.insert(&route.shared, key, svc, tier, false);
            }
            route.set.publish(&route.shared);
            route.sync();
        }
        route
    }

    /// The configuration this instance routes with: the one it was built with, or the one
    /// a [`RouteHandle::reconfigure`] put in force, from this instance's next `poll_ready`.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// A handle for status and health checks, usable from other tasks.
    pub fn handle(&self) -> RouteHandle<D::Key> {
        RouteHandle {
            shared: self.shared.clone(),
        }
    }

    /// The endpoints' keys, in the router's order, as this instance last saw them (at its
    /// last `poll_ready`).
    pub fn keys(&self) -> impl Iterator<Item = &D::Key> {
        self.endpoints.iter().map(|e| &e.key)
    }

    /// The token of the endpoint `poll_ready` reserved, if any.
    #[cfg(test)]
    #[cfg(not(palisade_loom))]
    pub(crate) fn reserved(&self) -> Option<u64> {
        self.ready.map(|i| self.endpoints[i].state.token)
    }

    /// Discovery errors seen so far (each one was logged).
    #[cfg(test)]
    #[cfg(not(palisade_loom))]
    pub(crate) fn discovery_errors(&self) -> u64 {
        self.set.errors()
    }

    /// Loads the router's epoch, then catches up with the shared set if it changed; returns
    /// the epoch, for [`pick`](Self::pick), and whether discovery woke. The happy path is two
    /// atomic loads.
    ///
    /// The order matters: the set's version is bumped before the epoch, so an instance that
    /// read the new epoch reads the new version too and picks from the new list; one that read
    /// the old epoch can only mark that old epoch as plainly healthy, which the new one voids.
    #[inline]
    fn sync(&mut self) -> (u64, bool) {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        let state = self.set.state();
        let version = state & !WOKEN;
        if version != self.version {
            self.refresh(version);
        }
        (epoch, state & WOKEN != 0)
    }

    /// The router's epoch for a pick, read again within a pass: `None` if the set has a new
    /// list this instance has not taken yet, which the pass leaves to the next `poll_ready`.
    /// The pick then neither skips its scan on the new epoch nor marks it plainly healthy
    /// from the old list (see [`sync`](Self::sync) for the order of the loads).
    fn listed_epoch(&self) -> Option<u64> {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        (self.set.state() & !WOKEN == self.version).then_some(epoch)
    }

    /// Takes the set's current list: keeps this instance's services of the endpoints that
    /// stayed (with what `poll_ready` reserved), clones the services of new ones and the new
    /// services of endpoints that discovery inserted again (whose reservation, made on the
    /// old service, is dropped). Only on a discovery change: may allocate.
    #[cold]
    fn refresh(&mut self, version: u64) {
        let list = self.set.list();
        // By the id of the service, not the endpoint's token: an endpoint inserted again keeps
        // its token (and state) but not its service. A service queued for readiness is let go
        // (its endpoint gets a fresh clone), but for the endpoint this instance waits for,
        // which keeps its place.
        let queued = std::mem::take(&mut self.queued);
        let drop_queued = |pos: usize| Some(pos) != self.pending && is_marked(&queued, pos);
        let mut old: HashMap<u64, D::Service> = self
            .endpoints
            .iter()
            .map(|e| e.id)
            .zip(std::mem::take(&mut self.services))
            .enumerate()
            .filter_map(|(pos, kept)| (!drop_queued(pos)).then_some(kept))
            .collect();
        let now_at = |i: Option<usize>| {
            let id = self.endpoints[i?].id;
            list.iter().position(|e| e.id == id)
        };
        let (ready, pending) = (now_at(self.ready), now_at(self.pending));
        self.services = list
            .iter()
            .map(|e| old.remove(&e.id).unwrap_or_else(|| e.service()))
            .collect();
        self.ready = ready;
        self.pending = pending;
        // Positions in the old list mean nothing in the new one.
        self.unready.clear();
        // Nothing was eligible in the old list; the new one gets a fresh pick.
        self.unavailable = None;
        self.endpoints = list;
        self.config = self.shared.config.load_full();
        self.version = version;
        if let Some(w) = self.pending {
            self.mark_queued(w);
        }
    }
}

impl<D: Discover> Route<D> {
    /// Picks an endpoint: eligibility, ejections, panic mode, tiers, then power of two choices
    /// weighted by health, avoiding the endpoint with token `avoid` and, if `unready`, the
    /// endpoints whose readiness failed in this `poll_ready`, when another is eligible (see
    /// [`pick::pick`], which runs the steps; `epoch` and `now` as there).
    #[inline]
    fn pick(
        &mut self,
        epoch: Option<u64>,
        avoid: Option<u64>,
        unready: bool,
        now: impl FnOnce() -> u64,
    ) -> Result<usize, NoHealthyEndpoint> {
        let avoid = if unready {
            pick::Avoid {
                token: avoid,
                not_ready: &self.unready,
            }
        } else {
            pick::Avoid::token(avoid)
        };
        pick::pick(
            &self.endpoints,
            &self.config,
            &self.shared.plain_at,
            &mut self.rng,
            epoch,
            avoid,
            now,
        )
    }
}

impl<D> Route<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
    D::Error: Into<BoxError>,
{
    /// Discovery woke: polls it (unless another instance is doing so now), then catches up
    /// with the set; returns the epoch as [`sync`](Self::sync) does.
    #[cold]
    fn poll_discovery(&mut self, cx: &Context<'_>) -> u64 {
        self.set.drive(&self.shared, cx.waker());
        self.sync().0
    }
}

impl<D, Req> Service<Req> for Route<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Error: Into<BoxError>,
    D::Service: Service<Req> + Clone,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<D::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let (mut plain, woken) = self.sync();
        if woken {
            plain = self.poll_discovery(cx);
        }
        // The epoch the picks of this pass go by (see `listed_epoch`).
        let mut epoch = Some(plain);
        let origin = self.shared.origin;
        let now = || ms_since(origin, Instant::now());
        if let Some(i) = self.ready {
            // A reservation from an earlier `poll_ready` (of a caller that polled ready and
            // then did not call) stands while the pick would still use its endpoint:
            // at once while nothing changed since every endpoint was plainly healthy, else
            // after a look. Once the endpoint is out (failed, ejected, ...), the reservation is
            // let go and the router picks again.
            if self.shared.plain_at.load(Ordering::Acquire) == plain
                || self.still_eligible(i, None, now())
            {
                return Poll::Ready(Ok(()));
            }
            self.ready = None;
            self.abandon(i);
        }
        // A verdict that no endpoint was eligible is as old as the pass that gave it: an
        // ejection may have ended since. The call it was for never came; this pass picks
        // afresh.
        self.unavailable = None;
        let avoid = attempt::current().and_then(|a| a.avoid);
        // Whether an endpoint was marked in `unready` in this pass: its readiness failed, or
        // it was not ready yet.
        let mut unready = false;
        // The first endpoint of this pass that was not ready yet.
        let mut waiting = None;
        let poll = 'pass: {
            for _ in 0..self.endpoints.len().max(1) {
                // An endpoint that was not ready last time keeps its place in line while the
                // pick could still give it the call: not once ejected, cooling down or the one
                // to avoid while another can take it. By the pick's own rule, not by its
                // health alone: given up here and picked again, as an endpoint cooling down
                // when all do or one held out in panic mode would be, it would queue afresh at
                // each `poll_ready` and never keep the place handed to it.
                let i = match self.pending.take() {
                    Some(i) if self.still_eligible(i, avoid, now()) => i,
                    stale => {
                        if let Some(i) = stale {
                            self.abandon(i);
                        }
                        match self.pick(epoch, avoid, unready, now) {
                            // Not ready is not unhealthy: a busy endpoint gives way to
                            // another of its tier or of a tier before it (a busy standby that
                            // a call spilled to does not hold it up while a primary is
                            // ready), but its tier does not spill to the next; and once the
                            // pick can only go back to an endpoint of this pass (pending, or
                            // whose readiness failed), the pass waits.
                            Ok(i) if waiting.is_some_and(|w| self.holds_up(w, i)) => {
                                self.pending = waiting;
                                break 'pass Poll::Pending;
                            }
                            Ok(i) => i,
                            Err(none) => {
                                self.unavailable = Some(none);
                                break 'pass Poll::Ready(Ok(()));
                            }
                        }
                    }
                };
                match self.services[i].poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        self.ready = Some(i);
                        break 'pass Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(e)) => {
                        // The endpoint's failure, not the router's: counted against its
                        // health and replaced by a fresh clone. The next picks of this pass
                        // avoid it while another endpoint is eligible: in panic mode, where
                        // health is ignored, picks that may repeat would otherwise land on
                        // the failing endpoints again and again.
                        self.not_ready(i, e.into());
                        self.mark_unready(i);
                        unready = true;
                        // The failure moved the epoch. Only the epoch is read again: a
                        // discovery change waits for the next `poll_ready`, since `waiting`
                        // and the marks are positions in this list.
                        epoch = self.listed_epoch();
                    }
                    Poll::Pending => {
                        // Not ready yet: the next picks of this pass try the others (a busy
                        // endpoint, one at its concurrency limit, say, must not hold up the
                        // router while another is ready), and the pass waits only when each
                        // it could pick is not ready. Every one polled has our waker.
                        waiting.get_or_insert(i);
                        self.mark_unready(i);
                        self.mark_queued(i);
                        unready = true;
                    }
                }
            }
            if waiting.is_some() {
                self.pending = waiting;
                break 'pass Poll::Pending;
            }
            // Every endpoint this pass tried failed its readiness. That is no reason to fail
            // `poll_ready`, which tower takes as the end of the router (a `Buffer` in front
            // would fail every later request, even once the endpoints recover): as when
            // nothing is eligible, this call fails at once and the next `poll_ready` picks
            // afresh.
            self.unavailable = Some(NoHealthyEndpoint { retry_after: None });
            Poll::Ready(Ok(()))
        };
        if unready {
            self.unready.fill(0);
        }
        // A pass that ends ready no longer waits for the endpoints that were not ready: what
        // their pending readiness queued for is let go, or a place freed for it would be
        // handed to this instance, which may not poll that service again for long (an idle
        // connection's clone), and kept from every other caller.
        if poll.is_ready() && !self.queued.is_empty() {
            self.let_go();
        }
        if let (Poll::Pending, Some(w)) = (&poll, self.pending) {
            self.wait_for(w, avoid, cx, now);
        }
        poll
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(none) = self.unavailable.take() {
            tracing::debug!(%none, "no endpoint for the call");
            return ResponseFuture::failed(Box::new(none));
        }
        let Some(mut i) = self.ready.take() else {
            panic!("{CALL_WITHOUT_POLL_READY}");
        };
        let scope = attempt::current();
        if let Some(avoid) = scope.and_then(|a| a.avoid)
            && self.endpoints[i].state.token == avoid
            && let Some(other) = self.divert::<Req>(i, avoid)
        {
            // The reserved service stays ready for this instance's next call.
            self.ready = Some(i);
            i = other;
        }
        let lanes = &self.endpoints[i].lanes;
        let future = self.services[i].call(req);
        ResponseFuture::new(
            future,
            lanes[self.lane & (lanes.len() - 1)].clone(),
            scope.is_none(),
        )
    }
}

impl<D: Discover> Route<D>
where
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
{
    /// Records that endpoint `i`'s service failed its readiness, as a failed call of the
    /// error's class, and replaces that spent service with a fresh clone.
    #[cold]
    fn not_ready(&mut self, i: usize, e: BoxError) {
        let state = &self.endpoints[i].state;
        tracing::debug!(endpoint = %state.label(), error = %e, "endpoint failed its readiness");
        state.on_failure(class_of(&e), &self.config, state.now_ms());
        self.services[i] = self.endpoints[i].service();
        self.unqueue(i);
    }

    /// Whether endpoint `i`, picked at an earlier `poll_ready` (not ready then, or reserved),
    /// is still one the pick could give the call to at `now`, by the pick's own rules
    /// ([`pick::pickable`]): with a share of traffic, or taking calls as a last resort or in
    /// panic mode, and not the endpoint with token `avoid` while another is eligible.
    #[cold]
    fn still_eligible(&self, i: usize, avoid: Option<u64>, now: u64) -> bool {
        pick::pickable(&self.endpoints, &self.config, i, avoid, now)
    }

    /// The pass is to wait (for `w`, the first endpoint of the pass that was not ready) rather
    /// than try endpoint `i`, the next pick: `i` is in a later tier than `w` (not ready is not
    /// unhealthy: a busy tier does not spill to the next), or is one this pass polled already
    /// (the pick had nothing else left).
    #[cold]
    fn holds_up(&self, w: usize, i: usize) -> bool {
        self.endpoints[i].state.tier > self.endpoints[w].state.tier || is_marked(&self.unready, i)
    }

    /// The pass waits for endpoint `w`: besides the wakers every endpoint polled has, the task
    /// is to be woken when `w` is taken out of traffic (see
    /// [`Waiters`](crate::endpoint::Waiters)). Then looks at `w` again, in case that happened
    /// before this registered (and wakes the task at once if so).
    #[cold]
    fn wait_for(&mut self, w: usize, avoid: Option<u64>, cx: &Context<'_>, now: impl Fn() -> u64) {
        let state = &self.endpoints[w].state;
        let slot = self.waiting.get_or_insert_with(Arc::default);
        if slot.set(state.token, cx.waker()) != state.token {
            state.waiters.add(slot);
        }
        state.waiters.arm();
        // After arming (see `EndpointState::bump`): a change this load does not see wakes us.
        self.shared.epoch.load(Ordering::SeqCst);
        if !self.still_eligible(w, avoid, now()) {
            cx.waker().wake_by_ref();
        }
    }

    /// Gives up waiting for endpoint `i`: its service is replaced by a fresh clone, so that
    /// whatever its pending readiness holds (a place in a concurrency limit's queue, say) is
    /// let go rather than kept by a router that no longer means to call it.
    #[cold]
    fn abandon(&mut self, i: usize) {
        let state = &self.endpoints[i].state;
        tracing::debug!(endpoint = %state.label(), "stopped waiting for an endpoint no longer picked");
        self.services[i] = self.endpoints[i].service();
        self.unqueue(i);
    }

    /// The pass ended ready (with the endpoint in `ready`, or the verdict that none is
    /// eligible): every other endpoint whose service is queued for readiness is abandoned
    /// ([`abandon`](Self::abandon)), so that what it queued for goes to another caller.
    #[cold]
    fn let_go(&mut self) {
        let keep = self.ready;
        for word in 0..self.queued.len() {
            let mut bits = self.queued[word];
            while bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if Some(i) != keep {
                    self.abandon(i);
                }
            }
        }
        // Emptied, keeping its capacity: the next mark allocates nothing.
        self.queued.clear();
    }

    /// Marks endpoint `i`'s service as queued for readiness: it returned `Pending`.
    #[cold]
    fn mark_queued(&mut self, i: usize) {
        if self.queued.is_empty() {
            self.queued.resize(self.endpoints.len().div_ceil(64), 0);
        }
        self.queued[i / 64] |= 1 << (i % 64);
    }

    /// Endpoint `i`'s service was replaced by a fresh clone: nothing of it is queued.
    fn unqueue(&mut self, i: usize) {
        if let Some(word) = self.queued.get_mut(i / 64) {
            *word &= !(1 << (i % 64));
        }
    }

    /// Marks endpoint `i` as one whose readiness failed, or which was not ready yet, in this
    /// `poll_ready`.
    #[cold]
    fn mark_unready(&mut self, i: usize) {
        // Empty until the first failure, and again after a discovery change (which clears
        // it): otherwise sized for the current list.
        if self.unready.is_empty() {
            self.unready.resize(self.endpoints.len().div_ceil(64), 0);
        }
        self.unready[i / 64] |= 1 << (i % 64);
    }

    /// At `call`, when the attempt context says to avoid the reserved endpoint `i` (with token
    /// `avoid`): another eligible endpoint whose service is ready now, polled once with a no-op
    /// waker, if there is one. Allocates nothing, but for a fresh clone of a service that was
    /// not ready.
    #[cold]
    fn divert<Req>(&mut self, i: usize, avoid: u64) -> Option<usize>
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
    {
        if self.endpoints.len() < 2 {
            return None;
        }
        let origin = self.shared.origin;
        let j = self
            .pick(None, Some(avoid), false, || {
                ms_since(origin, Instant::now())
            })
            .ok()
            .filter(|&j| j != i)?;
        let mut cx = Context::from_waker(Waker::noop());
        match self.services[j].poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Some(j),
            Poll::Ready(Err(e)) => {
                self.not_ready(j, e.into());
                None
            }
            Poll::Pending => {
                // Its pending readiness now holds what it queued for (a place in a concurrency
                // limit's queue, and the permit handed to it later) with a no-op waker: nobody
                // would be woken to use it, and this instance may not poll that service again
                // for long (a standby, say). A fresh clone lets it go.
                self.services[j] = self.endpoints[j].service();
                None
            }
        }
    }
}

/// Whether bit `i` of the bitset `words` (bit `i % 64` of word `i / 64`) is set.
fn is_marked(words: &[u64], i: usize) -> bool {
    words
        .get(i / 64)
        .is_some_and(|word| word & (1 << (i % 64)) != 0)
}
