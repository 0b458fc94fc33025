//! [`Route`]: the service that spreads calls over endpoints by their health.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_classify::context::attempt;
use palisade_classify::{BoxError, ConfigError, class_of};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::endpoint::{EndpointState, LaneRef, lane_refs, ms_since};
use crate::future::ResponseFuture;
use crate::health::Health;
use crate::{NoHealthyEndpoint, RouteConfig, RouteHandle, Static};

pub(crate) struct Endpoint<K, S> {
    key: K,
    svc: S,
    state: Arc<EndpointState>,
    /// One reference to `state` per lane; a call holds its router instance's.
    lanes: Arc<[Arc<LaneRef>]>,
}

impl<K: Clone, S: Clone> Clone for Endpoint<K, S> {
    fn clone(&self) -> Self {
        Endpoint {
            key: self.key.clone(),
            svc: self.svc.clone(),
            state: self.state.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

/// What the router shares with its handle and health checker.
pub(crate) struct Shared<K> {
    pub(crate) config: RouteConfig,
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
/// Endpoint services must be `Clone`: each router instance keeps its own clone of every
/// endpoint's service and calls it directly, as tower's `Balance` does, so no call clones a
/// service; cloning the router clones those (and two `Arc`s and an rng). A service whose
/// readiness fails is replaced by a fresh clone. Give each connection or worker its own clone
/// of the router: each clone also counts its calls in its own lane, so clones on different
/// threads do not contend. Clones share every endpoint's health and pick with their own
/// reproducible rng. A router fed
/// by a [`Discover`] applies the changes it polls to itself (and clones made afterwards): poll
/// discovery from one instance, for example behind `tower::buffer::Buffer`.
///
/// # Readiness
/// `poll_ready` applies discovery changes, picks an endpoint and waits for that endpoint to be
/// ready. When no endpoint is eligible it reports ready anyway and the call fails at once with
/// [`NoHealthyEndpoint`] (the `LoadShed` shape), so retry and fallback above can act.
pub struct Route<D: Discover> {
    shared: Arc<Shared<D::Key>>,
    /// Copy-on-write: clones share it; a discovery change makes a new one.
    endpoints: Arc<Vec<Endpoint<D::Key, D::Service>>>,
    discover: Option<D>,
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
    /// The endpoint `poll_ready` chose, whose service in `services` is ready.
    ready: Option<usize>,
    /// The endpoint `poll_ready` chose that was not ready yet.
    pending: Option<usize>,
    unavailable: Option<NoHealthyEndpoint>,
}

impl<D> Clone for Route<D>
where
    D: Discover + Clone,
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
            endpoints: self.endpoints.clone(),
            discover: self.discover.clone(),
            // A clone picks differently from its original and its siblings, reproducibly.
            rng: SmallRng::seed_from_u64(seed),
            seeds: AtomicU64::new(seed ^ 0xd1b5_4a32_d192_ed03),
            // Clones of the original's services: what its poll_ready reserved stays with it.
            services: self.services.clone(),
            ready: None,
            pending: None,
            unavailable: None,
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
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S: Clone> Route<Static<S>> {
    /// A router over a fixed list of endpoints, all in tier 0, keyed by position.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(
        config: RouteConfig,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConfigError> {
        Self::with_tiers(config, endpoints.into_iter().map(|s| (0, s)))
    }

    /// A router over a fixed list of `(tier, endpoint)`: traffic stays on the lowest tier while
    /// its healthy capacity suffices and spills to the next as it degrades.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn with_tiers(
        config: RouteConfig,
        endpoints: impl IntoIterator<Item = (u8, S)>,
    ) -> Result<Self, ConfigError> {
        let mut route = Route::build(config, None)?;
        for (i, (tier, svc)) in endpoints.into_iter().enumerate() {
            route.insert(i, svc, tier, false);
        }
        Ok(route)
    }
}

impl<D> Route<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
    D::Error: Into<BoxError>,
{
    /// A router whose endpoints come and go through `discover` (tier 0; new endpoints ramp up
    /// when [`RouteConfig::slow_start`] is on).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field of `config`.
    pub fn discover(config: RouteConfig, discover: D) -> Result<Self, ConfigError> {
        Route::build(config, Some(discover))
    }

    fn apply_changes(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        while let Some(d) = self.discover.as_mut() {
            match Pin::new(d).poll_discover(cx) {
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => {
                    let slow = self.shared.config.slow_start;
                    self.insert(key, svc, 0, slow);
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => self.remove(&key),
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(None) => self.discover = None,
                Poll::Pending => break,
            }
        }
        Ok(())
    }
}

impl<D: Discover> Route<D>
where
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
{
    fn build(config: RouteConfig, discover: Option<D>) -> Result<Self, ConfigError> {
        config.validate()?;
        palisade_classify::register::<NoHealthyEndpoint>();
        Ok(Route {
            shared: Arc::new(Shared {
                config,
                origin: Instant::now(),
                registry: Mutex::new(Vec::new()),
                epoch: Arc::new(AtomicU64::new(0)),
                plain_at: AtomicU64::new(u64::MAX),
                next_lane: AtomicUsize::new(1),
            }),
            lane: 0,
            endpoints: Arc::new(Vec::new()),
            discover,
            rng: SmallRng::seed_from_u64(config.seed),
            seeds: AtomicU64::new(config.seed ^ 0x2545_f491_4f6c_dd1d),
            services: Vec::new(),
            ready: None,
            pending: None,
            unavailable: None,
        })
    }

    fn insert(&mut self, key: D::Key, svc: D::Service, tier: u8, slow_start: bool) {
        let now = ms_since(self.shared.origin, Instant::now());
        let health = if slow_start {
            Health::ramping(now)
        } else {
            Health::HEALTHY
        };
        let state = Arc::new(EndpointState::new(
            tier,
            format!("{key:?}"),
            health,
            self.shared.config,
            self.shared.origin,
            self.shared.epoch.clone(),
        ));
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(endpoint = %state.label, tier, slow_start, "endpoint added");
        self.ready = None;
        self.pending = None;
        let mut registry = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let endpoints = Arc::make_mut(&mut self.endpoints);
        let endpoint = Endpoint {
            key: key.clone(),
            svc: svc.clone(),
            lanes: lane_refs(&state),
            state: state.clone(),
        };
        if let Some(i) = endpoints.iter().position(|e| e.key == key) {
            endpoints[i] = endpoint;
            self.services[i] = svc;
            registry.retain(|(k, _)| *k != key);
        } else {
            endpoints.push(endpoint);
            self.services.push(svc);
        }
        registry.push((key, state));
    }

    fn remove(&mut self, key: &D::Key) {
        if let Some(i) = self.endpoints.iter().position(|e| e.key == *key) {
            // Calls in flight keep their endpoint's state alive and finish normally.
            let gone = Arc::make_mut(&mut self.endpoints).swap_remove(i);
            self.services.swap_remove(i);
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::debug!(endpoint = %gone.state.label, "endpoint removed");
            self.ready = None;
            self.pending = None;
            self.shared
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(k, _)| k != key);
        }
    }

    /// A handle for status and health checks, usable from other tasks.
    pub fn handle(&self) -> RouteHandle<D::Key> {
        RouteHandle {
            shared: self.shared.clone(),
        }
    }

    /// The endpoints' keys, in the router's order.
    pub fn keys(&self) -> impl Iterator<Item = &D::Key> {
        self.endpoints.iter().map(|e| &e.key)
    }
}

/// What one scan of the endpoints learns about one of them.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The traffic share health allows, zero while ejected or cooling down.
    weight: f64,
    tier: u8,
    cooling: bool,
    /// When it comes back by itself (end of ejection or cool-down), if later than now.
    back: u64,
}

/// Endpoints the scan keeps on the stack; beyond this, slots are recomputed when needed.
const CACHED: usize = 64;

fn slot<K, S>(endpoints: &[Endpoint<K, S>], cfg: &RouteConfig, i: usize, now: u64) -> Slot {
    let s = &endpoints[i].state;
    let ejected = s.ejected_until();
    let cooldown = s.cooldown_until();
    let cooling = cooldown > now;
    let health = s.health();
    let trials = s.trials();
    let weight = if cooling || ejected > now {
        0.0
    } else {
        health.share(&cfg.health, now, trials)
    };
    // Without active checks, an endpoint the health machine holds out returns for a trial.
    let held = if trials {
        health.held_until(&cfg.health)
    } else {
        0
    };
    let back = ejected.max(cooldown).max(held);
    Slot {
        weight,
        tier: s.tier,
        cooling,
        back: if back > now { back } else { 0 },
    }
}

impl<D: Discover> Route<D> {
    /// Applies consecutive-failure ejections within the cap (always allowing one). Only runs
    /// when the scan saw a candidate: the failure path.
    fn eject_candidates(&self, now: u64) {
        let cfg = &self.shared.config;
        let n = self.endpoints.len();
        let max_ejected = ((n as f64 * cfg.outlier.max_ejection_percent / 100.0) as usize).max(1);
        let mut ejected = self
            .endpoints
            .iter()
            .filter(|e| e.state.ejected_until() > now)
            .count();
        for e in self.endpoints.iter() {
            if ejected >= max_ejected {
                break;
            }
            if e.state.ejected_until() <= now
                && e.state.consecutive_failures() >= cfg.outlier.consecutive_failures
            {
                e.state.eject(cfg, now);
                ejected += 1;
            }
        }
    }

    /// Picks an endpoint at `now` (ms since origin): eligibility, ejections, panic mode, tiers,
    /// then power of two choices weighted by health. One scan of the endpoints into a stack
    /// cache; O(1) after it when every endpoint is plainly healthy. Allocates nothing.
    /// Picks an endpoint. `now` reads the clock: only a pick that has to look at health,
    /// ejections or cool-downs needs it, so the fast path reads no clock.
    fn pick(&mut self, now: impl FnOnce() -> u64) -> Result<usize, NoHealthyEndpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(NoHealthyEndpoint { retry_after: None });
        }
        let avoid = attempt::current().and_then(|a| a.avoid);
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if avoid.is_none() && self.shared.plain_at.load(Ordering::Acquire) == epoch {
            // Nothing changed since every endpoint was seen fully healthy: classic power of two
            // choices, no scan.
            let load = |i: usize| self.endpoints[i].state.in_flight.load(Ordering::Relaxed);
            let a = self.rng.random_range(0..n);
            let b = self.rng.random_range(0..n);
            return Ok(if load(b) < load(a) { b } else { a });
        }
        let now = now();
        let threshold = self.shared.config.outlier.consecutive_failures;
        if threshold > 0
            && self.endpoints.iter().any(|e| {
                e.state.consecutive_failures() >= threshold && e.state.ejected_until() <= now
            })
        {
            self.eject_candidates(now);
        }

        let endpoints: &[Endpoint<D::Key, D::Service>] = &self.endpoints;
        let cfg = &self.shared.config;
        let rng = &mut self.rng;
        let mut cache = [Slot::default(); CACHED];
        let mut available = 0;
        let mut uniform = true;
        let first_tier = self.endpoints[0].state.tier;
        for i in 0..n {
            let slot = slot(endpoints, cfg, i, now);
            if slot.weight > 0.0 {
                available += 1;
            }
            uniform &= slot.weight == 1.0 && slot.tier == first_tier;
            if let Some(cached) = cache.get_mut(i) {
                *cached = slot;
            }
        }
        let load = |i: usize| endpoints[i].state.in_flight.load(Ordering::Relaxed);
        if uniform {
            // If nothing happened during the scan, later picks can skip it.
            self.shared.plain_at.store(epoch, Ordering::Release);
        }
        if uniform && avoid.is_none() {
            // Every endpoint plainly healthy, one tier: classic power of two choices.
            let a = rng.random_range(0..n);
            let b = rng.random_range(0..n);
            return Ok(if load(b) < load(a) { b } else { a });
        }

        let panic = (available as f64) < cfg.panic_threshold * n as f64;
        if panic {
            tracing::debug!(available, endpoints = n, "panic mode: ignoring health");
        }
        let get = |i: usize| {
            if i < CACHED {
                cache[i]
            } else {
                slot(endpoints, cfg, i, now)
            }
        };
        let weight = |slot: Slot| -> f64 {
            if slot.cooling {
                0.0
            } else if panic {
                1.0
            } else {
                slot.weight
            }
        };

        // Tiers in increasing order; each keeps min(1, health × overprovisioning) of what
        // reaches it and spills the rest.
        let mut tier = (0..n).map(|i| get(i).tier).min().unwrap_or(0);
        let mut chosen = None;
        loop {
            let (sum, count) = (0..n)
                .map(get)
                .filter(|s| s.tier == tier)
                .fold((0.0, 0usize), |(sum, c), s| (sum + weight(s), c + 1));
            if sum > 0.0 {
                chosen = Some(tier);
                let capacity = (sum / count as f64 * cfg.overprovisioning).min(1.0);
                if capacity >= 1.0 || rng.random::<f64>() < capacity {
                    break;
                }
            }
            match (0..n).map(|i| get(i).tier).filter(|t| *t > tier).min() {
                Some(next) => tier = next,
                None => break,
            }
        }
        let Some(tier) = chosen else {
            let retry_after = (0..n)
                .map(|i| get(i).back)
                .filter(|back| *back > now)
                .min()
                .map(|back| Duration::from_millis(back - now));
            return Err(NoHealthyEndpoint { retry_after });
        };

        // Weighted draws within the tier, avoiding the endpoint that just failed this request
        // when another is eligible.
        let token = |i: usize| endpoints[i].state.token;
        let in_tier = |i: usize| get(i).tier == tier && weight(get(i)) > 0.0;
        let others = (0..n)
            .filter(|&i| in_tier(i) && Some(token(i)) != avoid)
            .count();
        let skip = if others > 0 { avoid } else { None };
        let eligible = |i: usize| in_tier(i) && Some(token(i)) != skip;
        let total: f64 = (0..n)
            .filter(|&i| eligible(i))
            .map(|i| weight(get(i)))
            .sum();
        let draw = |rng: &mut SmallRng| -> usize {
            let mut r = rng.random::<f64>() * total;
            let mut last = 0;
            for i in (0..n).filter(|&i| eligible(i)) {
                let w = weight(get(i));
                last = i;
                if r < w {
                    return i;
                }
                r -= w;
            }
            last
        };
        let a = draw(rng);
        let b = draw(rng);
        Ok(if load(b) < load(a) { b } else { a })
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
        self.apply_changes(cx)?;
        if self.ready.is_some() || self.unavailable.is_some() {
            return Poll::Ready(Ok(()));
        }
        let origin = self.shared.origin;
        let now = || ms_since(origin, Instant::now());
        let mut last_error = None;
        for _ in 0..self.endpoints.len().max(1) {
            // An endpoint that was not ready last time keeps its place in line.
            let i = match self.pending.take() {
                Some(waiting) => waiting,
                None => match self.pick(now) {
                    Ok(i) => i,
                    Err(none) => {
                        self.unavailable = Some(none);
                        return Poll::Ready(Ok(()));
                    }
                },
            };
            match self.services[i].poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(i);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    let endpoint = &self.endpoints[i];
                    endpoint
                        .state
                        .on_failure(class_of(&e), &self.shared.config, now());
                    // A service that failed its readiness is spent: the next call gets a fresh
                    // clone of the endpoint's service.
                    self.services[i] = endpoint.svc.clone();
                    last_error = Some(e);
                }
                Poll::Pending => {
                    self.pending = Some(i);
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Err(last_error.unwrap_or_else(|| {
            Box::new(NoHealthyEndpoint { retry_after: None })
        })))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(none) = self.unavailable.take() {
            tracing::debug!(%none, "no endpoint for the call");
            return ResponseFuture::failed(Box::new(none));
        }
        let Some(i) = self.ready.take() else {
            return ResponseFuture::failed("Route::call without poll_ready returning Ready".into());
        };
        let lanes = &self.endpoints[i].lanes;
        let future = self.services[i].call(req);
        ResponseFuture::new(future, lanes[self.lane & (lanes.len() - 1)].clone())
    }
}
