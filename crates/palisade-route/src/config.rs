//! [`RouteConfig`]: everything a [`Route`](crate::Route) is told, validated at build time.

use std::time::Duration;

use palisade_classify::ConfigError;

use crate::HealthConfig;

/// Passive outlier detection, after Envoy's.
///
/// Consecutive failures eject at once (on the next pick). Failure percentage and success rate
/// are judged over each interval of the [health checker](crate::RouteHandle::health_checker), which also
/// runs the active checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (5; 0 disables).
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th in a row lasts n times as long (30 s). Also how
    /// long the health machine holds an endpoint at 0 % without active checks before its
    /// [trial](crate#without-active-checks-trials).
    pub base_ejection: Duration,
    /// The longest ejection or hold (300 s).
    pub max_ejection: Duration,
    /// At most this percentage of endpoints is ejected at once, always allowing one (10 %).
    pub max_ejection_percent: f64,
    /// Eject when an endpoint's failure percentage over an interval reaches this (85 %; above
    /// 100 disables).
    pub failure_percentage: f64,
    /// Eject when an endpoint's success rate is below mean − factor × σ of all endpoints
    /// (1.9; 0 disables).
    pub success_rate_stdev_factor: f64,
    /// Endpoints that must have enough volume before the rate rules judge anyone (5).
    pub min_hosts: u32,
    /// Requests an endpoint needs in an interval to be judged by the rate rules (100).
    pub request_volume: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10.0,
            failure_percentage: 85.0,
            success_rate_stdev_factor: 1.9,
            min_hosts: 5,
            request_volume: 100,
        }
    }
}

/// The configuration of a [`Route`](crate::Route).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteConfig {
    /// The health state machine (its thresholds and ramp).
    pub health: HealthConfig,
    /// Passive outlier detection.
    pub outlier: OutlierConfig,
    /// Below this fraction of endpoints with traffic, the router ignores health and spreads
    /// over all of them rather than fail everything (0.5, as Envoy; 0 disables).
    pub panic_threshold: f64,
    /// A tier keeps all traffic while `healthy fraction × overprovisioning ≥ 1` (1.4, as
    /// Envoy); below that, the rest spills to the next tier.
    pub overprovisioning: f64,
    /// How long a rate-limited endpoint is skipped when the server gave no retry hint (1 s).
    pub cooldown: Duration,
    /// The longest cool-down a server's retry hint can impose (60 s).
    pub max_cooldown: Duration,
    /// Whether endpoints added at run time ramp up as recovering ones do (slow start).
    pub slow_start: bool,
    /// The window of the health trend in [`RouteHandle::status`](crate::RouteHandle::status)
    /// (300 s), kept in 10 buckets.
    pub trend_window: Duration,
    /// The seed of the picking rng (clones and runs with the same seed pick the same).
    pub seed: u64,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            panic_threshold: 0.5,
            overprovisioning: 1.4,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
            slow_start: true,
            trend_window: Duration::from_secs(300),
            seed: 0x5eed,
        }
    }
}

impl RouteConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.health.validate()?;
        let o = &self.outlier;
        if o.base_ejection.is_zero() {
            return Err(ConfigError::new(
                "outlier.base_ejection",
                "must be greater than zero",
            ));
        }
        if o.max_ejection < o.base_ejection {
            return Err(ConfigError::new(
                "outlier.max_ejection",
                "must be at least outlier.base_ejection",
            ));
        }
        if !(0.0..=100.0).contains(&o.max_ejection_percent) {
            return Err(ConfigError::new(
                "outlier.max_ejection_percent",
                "must be within 0..=100",
            ));
        }
        if !(o.failure_percentage.is_finite() && o.failure_percentage > 0.0) {
            return Err(ConfigError::new(
                "outlier.failure_percentage",
                "must be a finite number greater than zero",
            ));
        }
        if !(o.success_rate_stdev_factor.is_finite() && o.success_rate_stdev_factor >= 0.0) {
            return Err(ConfigError::new(
                "outlier.success_rate_stdev_factor",
                "must be a finite number, zero or more",
            ));
        }
        if !(0.0..=1.0).contains(&self.panic_threshold) {
            return Err(ConfigError::new(
                "panic_threshold",
                "must be within 0.0..=1.0",
            ));
        }
        if !(self.overprovisioning.is_finite() && self.overprovisioning >= 1.0) {
            return Err(ConfigError::new(
                "overprovisioning",
                "must be a finite number, at least 1.0",
            ));
        }
        if self.trend_window < Duration::from_millis(10) {
            return Err(ConfigError::new("trend_window", "must be at least 10 ms"));
        }
        if self.max_cooldown < self.cooldown {
            return Err(ConfigError::new(
                "max_cooldown",
                "must be at least cooldown",
            ));
        }
        Ok(())
    }
}
