//! [`Route`]: the service that spreads calls over endpoints by their health.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_classify::{BoxError, ConfigError, attempt, class_of};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::endpoint::{EndpointState, ms_since};
use crate::future::ResponseFuture;
use crate::health::Health;
use crate::{NoHealthyEndpoint, RouteConfig, RouteHandle, Static};

pub(crate) struct Endpoint<K, S> {
    key: K,
    svc: S,
    state: Arc<EndpointState>,
}

impl<K: Clone, S: Clone> Clone for Endpoint<K, S> {
    fn clone(&self) -> Self {
        Endpoint {
            key: self.key.clone(),
            svc: self.svc.clone(),
            state: self.state.clone(),
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
}

/// Spreads calls over endpoints by their health; see the [crate docs](crate).
///
/// # Clone
/// A router over a static list is `Clone` when its endpoint services are: clones share every
/// endpoint's health (atomics behind an `Arc`) and pick with their own rng. A router fed by a
/// [`Discover`] applies the changes it polls to itself only: share it through
/// `tower::buffer::Buffer`.
///
/// # Readiness
/// `poll_ready` applies discovery changes, picks an endpoint and waits for that endpoint to be
/// ready. When no endpoint is eligible it reports ready anyway and the call fails at once with
/// [`NoHealthyEndpoint`] (the `LoadShed` shape), so retry and fallback above can act.
pub struct Route<D: Discover> {
    shared: Arc<Shared<D::Key>>,
    endpoints: Vec<Endpoint<D::Key, D::Service>>,
    discover: Option<D>,
    rng: SmallRng,
    ready: Option<usize>,
    unavailable: Option<NoHealthyEndpoint>,
}

impl<D> Clone for Route<D>
where
    D: Discover + Clone,
    D::Key: Clone,
    D::Service: Clone,
{
    fn clone(&self) -> Self {
        Route {
            shared: self.shared.clone(),
            endpoints: self.endpoints.clone(),
            discover: self.discover.clone(),
            // A clone picks differently from its original, but reproducibly.
            rng: SmallRng::seed_from_u64(
                self.shared.config.seed ^ self.endpoints.len() as u64 ^ 0x9e37_79b9,
            ),
            // What poll_ready reserved belongs to the original.
            ready: None,
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

impl<S> Route<Static<S>> {
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
{
    fn build(config: RouteConfig, discover: Option<D>) -> Result<Self, ConfigError> {
        config.validate()?;
        palisade_classify::register::<NoHealthyEndpoint>();
        Ok(Route {
            shared: Arc::new(Shared {
                config,
                origin: Instant::now(),
                registry: Mutex::new(Vec::new()),
            }),
            endpoints: Vec::new(),
            discover,
            rng: SmallRng::seed_from_u64(config.seed),
            ready: None,
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
        ));
        tracing::debug!(endpoint = %state.label, tier, slow_start, "endpoint added");
        self.ready = None;
        let mut registry = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.endpoints.iter().position(|e| e.key == key) {
            self.endpoints[i] = Endpoint {
                key: key.clone(),
                svc,
                state: state.clone(),
            };
            registry.retain(|(k, _)| *k != key);
        } else {
            self.endpoints.push(Endpoint {
                key: key.clone(),
                svc,
                state: state.clone(),
            });
        }
        registry.push((key, state));
    }

    fn remove(&mut self, key: &D::Key) {
        if let Some(i) = self.endpoints.iter().position(|e| e.key == *key) {
            // Calls in flight keep their endpoint's state alive and finish normally.
            let gone = self.endpoints.swap_remove(i);
            tracing::debug!(endpoint = %gone.state.label, "endpoint removed");
            self.ready = None;
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

impl<D: Discover> Route<D> {
    /// Picks an endpoint at `now` (ms since origin): eligibility, ejections, panic mode, tiers,
    /// then power of two choices weighted by health. Allocates nothing.
    fn pick(&mut self, now: u64) -> Result<usize, NoHealthyEndpoint> {
        let cfg = &self.shared.config;
        let eps = &self.endpoints;
        if eps.is_empty() {
            return Err(NoHealthyEndpoint { retry_after: None });
        }
        let n = eps.len();

        // Consecutive-failure ejections, within the cap (always at least one).
        let max_ejected = ((n as f64 * cfg.outlier.max_ejection_percent / 100.0) as usize).max(1);
        let mut ejected = eps.iter().filter(|e| e.state.ejected_until() > now).count();
        if cfg.outlier.consecutive_failures > 0 {
            for e in eps {
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

        let weight = |e: &Endpoint<D::Key, D::Service>, panic: bool| -> f64 {
            let s = &e.state;
            if s.cooldown_until() > now {
                0.0
            } else if panic {
                1.0
            } else if s.ejected_until() > now {
                0.0
            } else {
                s.health().share(&cfg.health, now)
            }
        };
        let available = eps.iter().filter(|e| weight(e, false) > 0.0).count();
        let panic = (available as f64) < cfg.panic_threshold * n as f64;
        if panic {
            tracing::debug!(available, endpoints = n, "panic mode: ignoring health");
        }
        let avoid = attempt::current().and_then(|a| a.avoid);

        // Tiers in increasing order; each keeps min(1, health × overprovisioning) of what
        // reaches it and spills the rest.
        let mut tier = eps.iter().map(|e| e.state.tier).min().unwrap_or(0);
        let mut chosen = None;
        loop {
            let (sum, count) = eps
                .iter()
                .filter(|e| e.state.tier == tier)
                .fold((0.0, 0usize), |(s, c), e| (s + weight(e, panic), c + 1));
            if sum > 0.0 {
                chosen = Some(tier);
                let capacity = (sum / count as f64 * cfg.overprovisioning).min(1.0);
                if capacity >= 1.0 || self.rng.random::<f64>() < capacity {
                    break;
                }
            }
            match eps.iter().map(|e| e.state.tier).filter(|t| *t > tier).min() {
                Some(next) => tier = next,
                None => break,
            }
        }
        let Some(tier) = chosen else {
            let retry_after = eps
                .iter()
                .filter_map(|e| {
                    let back = e.state.ejected_until().max(e.state.cooldown_until());
                    (back > now).then(|| back - now)
                })
                .min()
                .map(Duration::from_millis);
            return Err(NoHealthyEndpoint { retry_after });
        };

        // Weighted draws within the tier, avoiding the endpoint that just failed this request
        // when another is eligible.
        let others = eps
            .iter()
            .filter(|e| {
                e.state.tier == tier && Some(e.state.token) != avoid && weight(e, panic) > 0.0
            })
            .count();
        let skip = if others > 0 { avoid } else { None };
        let total: f64 = eps
            .iter()
            .filter(|e| e.state.tier == tier && Some(e.state.token) != skip)
            .map(|e| weight(e, panic))
            .sum();
        let draw = |rng: &mut SmallRng| -> usize {
            let mut r = rng.random::<f64>() * total;
            let mut last = 0;
            for (i, e) in eps.iter().enumerate() {
                if e.state.tier != tier || Some(e.state.token) == skip {
                    continue;
                }
                let w = weight(e, panic);
                if w <= 0.0 {
                    continue;
                }
                last = i;
                if r < w {
                    return i;
                }
                r -= w;
            }
            last
        };
        let a = draw(&mut self.rng);
        let b = draw(&mut self.rng);
        let load = |i: usize| {
            eps[i]
                .state
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        Ok(if load(b) < load(a) { b } else { a })
    }
}

impl<D, Req> Service<Req> for Route<D>
where
    D: Discover + Unpin,
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
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
        let now = ms_since(self.shared.origin, Instant::now());
        let mut last_error = None;
        for _ in 0..self.endpoints.len().max(1) {
            let i = match self.pick(now) {
                Ok(i) => i,
                Err(none) => {
                    self.unavailable = Some(none);
                    return Poll::Ready(Ok(()));
                }
            };
            let ep = &mut self.endpoints[i];
            match ep.svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(i);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    ep.state.on_failure(class_of(&e), &self.shared.config, now);
                    last_error = Some(e);
                }
                Poll::Pending => return Poll::Pending,
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
        let ep = &mut self.endpoints[i];
        ResponseFuture::new(ep.svc.call(req), ep.state.clone())
    }
}
