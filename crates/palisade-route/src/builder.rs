//! [`RouteBuilder`]: a [`Route`]'s endpoints (or discovery) and configuration, validated at
//! [`build`](RouteBuilder::build).

use std::fmt;
use std::time::Duration;

use palisade_core::ConfigError;
use tower::discover::Discover;

use crate::{HealthConfig, OutlierConfig, Route, RouteConfig, Static};

/// Configures a [`Route`]; made by [`Route::builder`] (a fixed list of endpoints) or
/// [`Route::discover_builder`] (endpoints from a tower `Discover`).
///
/// Each setter changes one field of the [`RouteConfig`] (whose docs give the defaults and the
/// rules); [`build`](Self::build) checks them all at once.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::BoxError;
/// use palisade_route::{OutlierConfig, Route};
/// use tower::service_fn;
///
/// # fn main() -> Result<(), BoxError> {
/// let replica = |name: &'static str| service_fn(move |_: ()| async move {
///     Ok::<_, BoxError>(name)
/// });
/// let mut outlier = OutlierConfig::default();
/// outlier.consecutive_failures = Some(3);
/// outlier.max_ejection_ratio = 0.5;
/// let route = Route::builder([replica("east"), replica("west")])
///     // Tier 1 takes traffic only as far as tier 0 cannot (active-passive failover).
///     .tier(1, [replica("backup")])
///     .outlier(outlier)
///     .panic_ratio(None)
///     .cooldown(Duration::from_secs(2))
///     .seed(7)
///     .build()?;
/// assert_eq!(route.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
///
/// let mut bad = OutlierConfig::default();
/// bad.max_ejection_ratio = 10.0;
/// let err = Route::builder([replica("a")]).outlier(bad).build().unwrap_err();
/// assert_eq!(err.field(), "outlier.max_ejection_ratio");
/// # Ok(()) }
/// ```
pub struct RouteBuilder<D: Discover> {
    config: RouteConfig,
    discover: Option<D>,
    /// A fixed list's endpoints as `(tier, key, service)`, in order.
    fixed: Vec<(u8, D::Key, D::Service)>,
}

impl<D: Discover> fmt::Debug for RouteBuilder<D>
where
    D::Key: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteBuilder")
            .field("config", &self.config)
            .field("discover", &self.discover.is_some())
            .field(
                "endpoints",
                &self
                    .fixed
                    .iter()
                    .map(|(tier, key, _)| (tier, key))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<S> RouteBuilder<Static<S>> {
    /// A fixed list's builder, its endpoints in tier 0.
    pub(crate) fn fixed(endpoints: impl IntoIterator<Item = S>) -> Self {
        RouteBuilder {
            config: RouteConfig::default(),
            discover: None,
            fixed: Vec::new(),
        }
        .tier(0, endpoints)
    }

    /// Adds `endpoints` in priority tier `tier`, keyed by position after those given so far.
    ///
    /// Traffic stays on the lowest tier while its healthy capacity suffices and spills over to
    /// the next as it degrades (see [`RouteConfig::overprovisioning`]): priorities as in
    /// Envoy's [priority levels](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/priority).
    pub fn tier(mut self, tier: u8, endpoints: impl IntoIterator<Item = S>) -> Self {
        for svc in endpoints {
            let key = self.fixed.len();
            self.fixed.push((tier, key, svc));
        }
        self
    }
}

impl<D: Discover> RouteBuilder<D> {
    /// A discovery-fed builder.
    pub(crate) fn discovered(discover: D) -> Self {
        RouteBuilder {
            config: RouteConfig::default(),
            discover: Some(discover),
            fixed: Vec::new(),
        }
    }

    /// The whole configuration, replacing what the setters gave so far.
    pub fn config(mut self, config: RouteConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut RouteConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The health state machine ([`RouteConfig::health`]).
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.config.health = health;
        self
    }

    /// Passive outlier detection ([`RouteConfig::outlier`]).
    pub fn outlier(mut self, outlier: OutlierConfig) -> Self {
        self.config.outlier = outlier;
        self
    }

    /// Panic mode's threshold, `None` to turn it off ([`RouteConfig::panic_ratio`]).
    pub fn panic_ratio(mut self, ratio: Option<f64>) -> Self {
        self.config.panic_ratio = ratio;
        self
    }

    /// Tiers' overprovisioning factor ([`RouteConfig::overprovisioning`]).
    pub fn overprovisioning(mut self, factor: f64) -> Self {
        self.config.overprovisioning = factor;
        self
    }

    /// The cool-down after a rate limit without a hint ([`RouteConfig::cooldown`]).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// The longest cool-down a hint can impose ([`RouteConfig::max_cooldown`]).
    pub fn max_cooldown(mut self, max: Duration) -> Self {
        self.config.max_cooldown = max;
        self
    }

    /// Whether endpoints added at run time ramp up ([`RouteConfig::slow_start`]).
    pub fn slow_start(mut self, on: bool) -> Self {
        self.config.slow_start = on;
        self
    }

    /// The health trend's window ([`RouteConfig::trend_window`]).
    pub fn trend_window(mut self, window: Duration) -> Self {
        self.config.trend_window = window;
        self
    }

    /// The picking rng's seed ([`RouteConfig::seed`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
}

impl<D: Discover> RouteBuilder<D>
where
    D::Key: Clone + PartialEq + fmt::Debug,
    D::Service: Clone,
{
    /// Builds the router.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field by its path from [`RouteConfig`]
    /// (`outlier.max_ejection_ratio`, `health.ramp.steps`).
    pub fn build(self) -> Result<Route<D>, ConfigError> {
        self.config.validate()?;
        Ok(Route::from_parts(self.config, self.discover, self.fixed))
    }
}
