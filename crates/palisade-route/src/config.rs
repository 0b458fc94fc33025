//! [`RouteConfig`]: everything a [`Route`](crate::Route) is told, validated at build time.
//!
//! Field paths in a [`ConfigError`] are relative to [`RouteConfig`]: `outlier.max_ejection_ratio`,
//! `health.ramp.steps`, `panic_ratio`. Fractions are `*_ratio` in `0..=1`, and `None` is the one
//! way to turn a rule off (written `"off"` in a configuration file, with the `serde` feature): a
//! zero or out-of-range value is an error, never an off switch.

use std::time::Duration;

use palisade_core::ConfigError;

use crate::HealthConfig;

/// Passive outlier detection, after Envoy's
/// [outlier detection](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier).
///
/// Consecutive failures eject at once (on the next pick). The failure ratio and success rate
/// rules are judged over each interval of the
/// [health checker](crate::RouteHandle::health_checker), which also runs the active checks.
///
/// The defaults are Envoy's: `consecutive_5xx` 5, `base_ejection_time` 30 s,
/// `max_ejection_time` 300 s, `max_ejection_percent` 10 (here a ratio, 0.1),
/// `failure_percentage_threshold` 85 (0.85), `success_rate_stdev_factor` 1900 (1.9),
/// `success_rate_minimum_hosts` 5 and `success_rate_request_volume` 100, with two
/// differences in the failure-ratio rule: it is on here, where Envoy computes it but enforces
/// it only once `enforcing_failure_percentage` is raised from 0, and it is judged from the
/// same `min_hosts` and `request_volume` as the success-rate rule (Envoy's
/// `failure_percentage_request_volume` is 50).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (`Some(5)`; `None` turns the rule off; at
    /// least 1). Failures while it is ejected (of calls in flight when it was ejected, or sent
    /// to it in panic mode) do not count: they would eject it again the moment its ejection
    /// ends, without a trial.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub consecutive_failures: Option<u32>,
    /// The first ejection's length; the n-th in a row lasts n times as long, up to
    /// `max_ejection`, and from the 31st in a row on `max_ejection` whatever the base (30 s;
    /// more than zero). Also how long the health machine holds an endpoint at 0 % without active checks
    /// before its [trial](crate#without-active-checks-trials).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub base_ejection: Duration,
    /// The longest ejection or hold (300 s; at least `base_ejection`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub max_ejection: Duration,
    /// At most this fraction of the endpoints is ejected at once, always allowing one (0.1;
    /// within `0..=1`, where 0 means one at a time).
    pub max_ejection_ratio: f64,
    /// Eject an endpoint whose failed fraction of calls over an interval reaches this
    /// (`Some(0.85)`; `None` turns the rule off; within `0 < r <= 1`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub failure_ratio: Option<f64>,
    /// Eject an endpoint whose success rate over an interval is below mean − factor × σ of all
    /// judged endpoints (`Some(1.9)`; `None` turns the rule off; finite and more than zero).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub success_rate_stdev_factor: Option<f64>,
    /// Endpoints that must have enough volume before the rate rules judge anyone (5; at least
    /// 1).
    pub min_hosts: u32,
    /// Calls an endpoint needs in an interval to be judged by the rate rules (100; at least 1).
    pub request_volume: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: Some(5),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_ratio: 0.1,
            failure_ratio: Some(0.85),
            success_rate_stdev_factor: Some(1.9),
            min_hosts: 5,
            request_volume: 100,
        }
    }
}

/// Whether `r` is a fraction: within `0..=1` (not NaN).
fn is_ratio(r: f64) -> bool {
    (0.0..=1.0).contains(&r)
}

impl OutlierConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule (`outlier.…`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "outlier.consecutive_failures",
                "must be at least 1 (None, \"off\" in a configuration file, turns the rule off)",
            ));
        }
        if self.base_ejection.is_zero() {
            return Err(ConfigError::new(
                "outlier.base_ejection",
                "must be greater than zero",
            ));
        }
        if self.max_ejection < self.base_ejection {
            return Err(ConfigError::new(
                "outlier.max_ejection",
                "must be at least outlier.base_ejection",
            ));
        }
        if !is_ratio(self.max_ejection_ratio) {
            return Err(ConfigError::new(
                "outlier.max_ejection_ratio",
                "must be within 0..=1",
            ));
        }
        if let Some(r) = self.failure_ratio
            && !(is_ratio(r) && r > 0.0)
        {
            return Err(ConfigError::new(
                "outlier.failure_ratio",
                "must be greater than 0 and at most 1 (None, \"off\" in a configuration file, turns the rule off)",
            ));
        }
        if let Some(k) = self.success_rate_stdev_factor
            && !(k.is_finite() && k > 0.0)
        {
            return Err(ConfigError::new(
                "outlier.success_rate_stdev_factor",
                "must be a finite number greater than zero (None, \"off\" in a configuration file, turns the rule off)",
            ));
        }
        if self.min_hosts == 0 {
            return Err(ConfigError::new("outlier.min_hosts", "must be at least 1"));
        }
        if self.request_volume == 0 {
            return Err(ConfigError::new(
                "outlier.request_volume",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// How many endpoints out of `n` may be ejected at once: the ratio of them, rounded down,
    /// but always one.
    pub(crate) fn max_ejected(&self, n: usize) -> usize {
        ((n as f64 * self.max_ejection_ratio) as usize).max(1)
    }
}

/// The configuration of a [`Route`](crate::Route); [`Route::builder`](crate::Route::builder)
/// sets it field by field or whole.
///
/// The defaults: [`HealthConfig::default`], [`OutlierConfig::default`], panic mode below half
/// the endpoints and overprovisioning 1.4 (both Envoy's), a 1 s cool-down after a rate limit
/// without a hint and at most 60 s with one, slow start on, a 300 s health trend, seed `0x5eed`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RouteConfig {
    /// The health state machine (its thresholds and ramp).
    pub health: HealthConfig,
    /// Passive outlier detection.
    pub outlier: OutlierConfig,
    /// When health lets through less than this fraction of the endpoints' traffic (the sum of
    /// their health shares: one recovering at a fifth of its share counts a fifth of an
    /// endpoint, and a new one in [slow start](Self::slow_start) counts in full, so that a
    /// fleet discovered all at once does not panic), the router ignores health and spreads over all of them rather than fail
    /// everything (`Some(0.5)`, after Envoy's `healthy_panic_threshold` of 50 %, which counts
    /// hosts; `None` turns panic mode off; within `0 < r <= 1`). With tiers, each tier is
    /// judged by its own endpoints, and only while the tiers together lack healthy capacity
    /// (Envoy's normalized total availability below 100 %): a healthy standby tier that can
    /// take every call stops a dead primary tier from panicking.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub panic_ratio: Option<f64>,
    /// A tier keeps all traffic while `healthy fraction × overprovisioning ≥ 1` (1.4, as
    /// Envoy; finite, at least 1); below that, the rest spills to the next tier.
    pub overprovisioning: f64,
    /// How long a rate-limited endpoint is skipped when the server gave no retry hint (1 s;
    /// at least 1 ms: the cool-down has no off switch).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub cooldown: Duration,
    /// The longest cool-down a server's retry hint can impose (60 s; at least `cooldown`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub max_cooldown: Duration,
    /// Whether endpoints added at run time ramp up as recovering ones do (slow start; on).
    pub slow_start: bool,
    /// The window of the health trend in [`RouteHandle::status`](crate::RouteHandle::status)
    /// (300 s; at least 10 ms), kept in 10 buckets.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub trend_window: Duration,
    /// The seed of the picking rng (`0x5eed`; clones and runs with the same seed pick the
    /// same). In a configuration file any `u64`: one above 9223372036854775807, TOML's
    /// largest integer, is written as a string of digits (`palisade_core::serde_seed`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_seed"))]
    pub seed: u64,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            panic_ratio: Some(0.5),
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
    /// Checks every field, the nested configurations' too.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule, by its path from here
    /// (`outlier.max_ejection_ratio`, `health.ramp.steps`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.health.validate()?;
        self.outlier.validate()?;
        if let Some(r) = self.panic_ratio
            && !(is_ratio(r) && r > 0.0)
        {
            return Err(ConfigError::new(
                "panic_ratio",
                "must be greater than 0 and at most 1 (None, \"off\" in a configuration file, turns panic mode off)",
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
        if self.cooldown < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "cooldown",
                "must be at least 1 ms (cool-downs count whole milliseconds, and a rate limit's \
                 cool-down has no off switch: below that, with max_cooldown as low, a 429 would \
                 cool nothing down)",
            ));
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

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;

    /// The field a change of the defaults is refused for, or `None` when it is accepted.
    fn refused(f: impl FnOnce(&mut RouteConfig)) -> Option<String> {
        let mut c = RouteConfig::default();
        f(&mut c);
        c.validate().err().map(|e| e.field().to_owned())
    }

    #[test]
    fn the_defaults_are_valid_and_documented() {
        let c = RouteConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let o = c.outlier;
        assert_eq!(o.consecutive_failures, Some(5));
        assert_eq!(o.base_ejection, Duration::from_secs(30));
        assert_eq!(o.max_ejection, Duration::from_secs(300));
        assert_eq!(o.max_ejection_ratio, 0.1);
        assert_eq!(o.failure_ratio, Some(0.85));
        assert_eq!(o.success_rate_stdev_factor, Some(1.9));
        assert_eq!((o.min_hosts, o.request_volume), (5, 100));
        assert_eq!(c.panic_ratio, Some(0.5));
        assert_eq!(c.overprovisioning, 1.4);
        assert_eq!(c.cooldown, Duration::from_secs(1));
        assert_eq!(c.max_cooldown, Duration::from_secs(60));
        assert!(c.slow_start);
        assert_eq!(c.trend_window, Duration::from_secs(300));
        assert_eq!(c.seed, 0x5eed);
    }

    #[test]
    fn none_is_the_only_off_switch() {
        let path = "outlier.consecutive_failures";
        assert_eq!(
            refused(|c| c.outlier.consecutive_failures = Some(0)).as_deref(),
            Some(path)
        );
        assert_eq!(refused(|c| c.outlier.consecutive_failures = Some(1)), None);
        assert_eq!(refused(|c| c.outlier.consecutive_failures = None), None);
        let path = Some("outlier.failure_ratio");
        for bad in [0.0, -0.1, 1.01, f64::NAN] {
            assert_eq!(
                refused(|c| c.outlier.failure_ratio = Some(bad)).as_deref(),
                path
            );
        }
        assert_eq!(refused(|c| c.outlier.failure_ratio = Some(1.0)), None);
        assert_eq!(refused(|c| c.outlier.failure_ratio = None), None);
        let path = Some("outlier.success_rate_stdev_factor");
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let r = refused(|c| c.outlier.success_rate_stdev_factor = Some(bad));
            assert_eq!(r.as_deref(), path);
        }
        assert_eq!(
            refused(|c| c.outlier.success_rate_stdev_factor = Some(1e-9)),
            None
        );
        assert_eq!(
            refused(|c| c.outlier.success_rate_stdev_factor = None),
            None
        );
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(
                refused(|c| c.panic_ratio = Some(bad)).as_deref(),
                Some("panic_ratio")
            );
        }
        assert_eq!(refused(|c| c.panic_ratio = Some(1.0)), None);
        assert_eq!(refused(|c| c.panic_ratio = None), None);
    }

    #[test]
    fn every_bound_is_pinned() {
        let path = Some("outlier.max_ejection_ratio");
        for bad in [-0.01, 1.01, f64::NAN] {
            assert_eq!(
                refused(|c| c.outlier.max_ejection_ratio = bad).as_deref(),
                path
            );
        }
        // Zero is meaningful: one endpoint at a time.
        for good in [0.0, 1.0] {
            assert_eq!(refused(|c| c.outlier.max_ejection_ratio = good), None);
        }
        let path = Some("outlier.base_ejection");
        assert_eq!(
            refused(|c| c.outlier.base_ejection = Duration::ZERO).as_deref(),
            path
        );
        let path = Some("outlier.max_ejection");
        let r = refused(|c| c.outlier.max_ejection = Duration::from_millis(29_999));
        assert_eq!(r.as_deref(), path);
        assert_eq!(
            refused(|c| c.outlier.max_ejection = Duration::from_secs(30)),
            None
        );
        assert_eq!(
            refused(|c| c.outlier.min_hosts = 0).as_deref(),
            Some("outlier.min_hosts")
        );
        assert_eq!(refused(|c| c.outlier.min_hosts = 1), None);
        let path = Some("outlier.request_volume");
        assert_eq!(refused(|c| c.outlier.request_volume = 0).as_deref(), path);
        assert_eq!(refused(|c| c.outlier.request_volume = 1), None);
        for bad in [0.99, f64::INFINITY, f64::NAN] {
            let r = refused(|c| c.overprovisioning = bad);
            assert_eq!(r.as_deref(), Some("overprovisioning"));
        }
        assert_eq!(refused(|c| c.overprovisioning = 1.0), None);
        let r = refused(|c| c.trend_window = Duration::from_millis(9));
        assert_eq!(r.as_deref(), Some("trend_window"));
        assert_eq!(
            refused(|c| c.trend_window = Duration::from_millis(10)),
            None
        );
        // A zero cool-down is no off switch, with or without a zero max_cooldown.
        assert_eq!(
            refused(|c| c.cooldown = Duration::ZERO).as_deref(),
            Some("cooldown")
        );
        let r = refused(|c| {
            c.cooldown = Duration::ZERO;
            c.max_cooldown = Duration::ZERO;
        });
        assert_eq!(r.as_deref(), Some("cooldown"));
        // Nor is one that whole milliseconds round down to zero.
        let r = refused(|c| c.cooldown = Duration::from_micros(999));
        assert_eq!(r.as_deref(), Some("cooldown"));
        assert_eq!(refused(|c| c.cooldown = Duration::from_millis(1)), None);
        let r = refused(|c| c.max_cooldown = Duration::from_millis(999));
        assert_eq!(r.as_deref(), Some("max_cooldown"));
        assert_eq!(refused(|c| c.max_cooldown = Duration::from_secs(1)), None);
        // The nested configurations are checked too, by their paths from here.
        let r = refused(|c| c.health.degraded_after = 0);
        assert_eq!(r.as_deref(), Some("health.degraded_after"));
        let r = refused(|c| c.outlier.min_hosts = 0);
        assert_eq!(r.as_deref(), Some("outlier.min_hosts"));
    }

    #[test]
    fn at_most_a_ratio_of_the_endpoints_is_ejected_but_always_one() {
        let mut o = OutlierConfig::default();
        assert_eq!(o.max_ejected(3), 1);
        assert_eq!(o.max_ejected(10), 1);
        assert_eq!(o.max_ejected(29), 2);
        assert_eq!(o.max_ejected(30), 3);
        o.max_ejection_ratio = 0.0;
        assert_eq!(o.max_ejected(100), 1);
        o.max_ejection_ratio = 0.5;
        assert_eq!(o.max_ejected(5), 2);
        o.max_ejection_ratio = 1.0;
        assert_eq!(o.max_ejected(7), 7);
    }
}
