//! [`Ramp`]: how a recovering or new endpoint's traffic share grows back to 100 %.

use std::time::Duration;

use palisade_core::ConfigError;

/// How traffic returns to an endpoint once it is trusted again.
///
/// The default is 5 steps, 30 s apart: 20 % of its traffic at once, 100 % after 120 s.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum Ramp {
    /// Fixed steps: `steps` equal increments, `interval` apart, the
    /// first at once (5 steps of 30 s: 20 % at once, 40 % after 30 s, ... 100 % after 120 s).
    Steps {
        /// How many increments (at least 1).
        steps: u32,
        /// Time between increments.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
        interval: Duration,
    },
    /// Envoy's [slow start](https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/slow_start):
    /// over `window`, the fraction of traffic grows as `(t / window)^(1 / aggression)`, never
    /// below `min_ratio`. `aggression` 1.0 is linear; above 1 it ramps faster early.
    Linear {
        /// Time to reach 100 %.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
        window: Duration,
        /// The fraction of traffic at the start (within `0..=1`).
        min_ratio: f64,
        /// The curve's exponent denominator (> 0).
        aggression: f64,
    },
}

impl Default for Ramp {
    fn default() -> Self {
        Ramp::Steps {
            steps: 5,
            interval: Duration::from_secs(30),
        }
    }
}

impl Ramp {
    /// Checks the parameters.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule, by its path from
    /// [`RouteConfig`](crate::RouteConfig) (`health.ramp.steps`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Ramp::Steps { steps, interval } => {
                if steps == 0 {
                    return Err(ConfigError::new("health.ramp.steps", "must be at least 1"));
                }
                if interval.is_zero() && steps > 1 {
                    return Err(ConfigError::new(
                        "health.ramp.interval",
                        "must be greater than zero when there is more than one step",
                    ));
                }
            }
            Ramp::Linear {
                window,
                min_ratio,
                aggression,
            } => {
                if window.is_zero() {
                    return Err(ConfigError::new(
                        "health.ramp.window",
                        "must be greater than zero",
                    ));
                }
                if !(0.0..=1.0).contains(&min_ratio) {
                    return Err(ConfigError::new(
                        "health.ramp.min_ratio",
                        "must be within 0..=1",
                    ));
                }
                if !(aggression.is_finite() && aggression > 0.0) {
                    return Err(ConfigError::new(
                        "health.ramp.aggression",
                        "must be a finite number greater than zero",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The fraction of its traffic an endpoint gets `elapsed` after the ramp began, within
    /// `0..=1` (above 0 for [`Steps`](Ramp::Steps), and for [`Linear`](Ramp::Linear) with a
    /// `min_ratio` above 0).
    pub fn ratio(&self, elapsed: Duration) -> f64 {
        match *self {
            Ramp::Steps { steps, interval } => {
                let done = if interval.is_zero() {
                    u128::from(steps)
                } else {
                    elapsed.as_nanos() / interval.as_nanos() + 1
                };
                done.min(u128::from(steps)) as f64 / f64::from(steps)
            }
            Ramp::Linear {
                window,
                min_ratio,
                aggression,
            } => {
                let t = (elapsed.as_secs_f64() / window.as_secs_f64()).min(1.0);
                t.powf(1.0 / aggression).max(min_ratio).clamp(0.0, 1.0)
            }
        }
    }

    /// How long the ramp takes to reach 100 %.
    pub fn duration(&self) -> Duration {
        match *self {
            Ramp::Steps { steps, interval } => interval.saturating_mul(steps.saturating_sub(1)),
            Ramp::Linear { window, .. } => window,
        }
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_steps() {
        let r = Ramp::default();
        let s = |secs: u64, ms: u64| r.ratio(Duration::from_secs(secs) + Duration::from_millis(ms));
        assert_eq!(s(0, 0), 0.2);
        assert_eq!(s(29, 999), 0.2);
        assert_eq!(s(30, 0), 0.4);
        assert_eq!(s(89, 999), 0.6);
        assert_eq!(s(90, 0), 0.8);
        assert_eq!(s(119, 999), 0.8);
        assert_eq!(s(120, 0), 1.0);
        assert_eq!(s(10_000, 0), 1.0);
        assert_eq!(r.duration(), Duration::from_secs(120));
    }

    #[test]
    fn linear_and_aggression() {
        let lin = Ramp::Linear {
            window: Duration::from_secs(10),
            min_ratio: 0.1,
            aggression: 1.0,
        };
        assert_eq!(lin.ratio(Duration::ZERO), 0.1);
        assert!((lin.ratio(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(lin.ratio(Duration::from_secs(10)), 1.0);
        let fast = Ramp::Linear {
            window: Duration::from_secs(10),
            min_ratio: 0.0,
            aggression: 2.0,
        };
        assert!((fast.ratio(Duration::from_millis(2500)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn every_ramp_bound_is_pinned() {
        let steps = |steps, ms| Ramp::Steps {
            steps,
            interval: Duration::from_millis(ms),
        };
        let field = |r: Ramp| r.validate().err().map(|e| e.field().to_owned());
        // One step needs no interval (all of it at once); two do.
        assert_eq!(field(steps(1, 0)), None);
        assert_eq!(steps(1, 0).ratio(Duration::ZERO), 1.0);
        assert_eq!(field(steps(2, 0)).as_deref(), Some("health.ramp.interval"));
        assert_eq!(field(steps(2, 1)), None);
        let linear = |aggression| Ramp::Linear {
            window: Duration::from_secs(1),
            min_ratio: 0.0,
            aggression,
        };
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(
                field(linear(bad)).as_deref(),
                Some("health.ramp.aggression")
            );
        }
        assert_eq!(field(linear(1e-3)), None);
    }

    #[test]
    fn bad_ramps_name_the_field() {
        let e = Ramp::Steps {
            steps: 0,
            interval: Duration::from_secs(1),
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field(), "health.ramp.steps");
        let e = Ramp::Linear {
            window: Duration::ZERO,
            min_ratio: 0.0,
            aggression: 1.0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field(), "health.ramp.window");
        let e = Ramp::Linear {
            window: Duration::from_secs(1),
            min_ratio: 1.5,
            aggression: 1.0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field(), "health.ramp.min_ratio");
        let e = Ramp::Linear {
            window: Duration::from_secs(1),
            min_ratio: 0.0,
            aggression: f64::NAN,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field(), "health.ramp.aggression");
    }

    proptest! {
        #[test]
        fn shares_are_bounded_and_monotonic(
            steps in 1u32..20, interval_ms in 1u64..100_000,
            window_ms in 1u64..1_000_000, min_ratio in 0.0f64..=1.0, aggression in 0.05f64..10.0,
            a in 0u64..2_000_000, b in 0u64..2_000_000,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            for ramp in [
                Ramp::Steps { steps, interval: Duration::from_millis(interval_ms) },
                Ramp::Linear { window: Duration::from_millis(window_ms), min_ratio, aggression },
            ] {
                prop_assert!(ramp.validate().is_ok());
                let s_lo = ramp.ratio(Duration::from_millis(lo));
                let s_hi = ramp.ratio(Duration::from_millis(hi));
                let linear = matches!(ramp, Ramp::Linear { .. });
                prop_assert!(s_lo > 0.0 || linear);
                prop_assert!((0.0..=1.0).contains(&s_lo) && (0.0..=1.0).contains(&s_hi));
                prop_assert!(s_lo <= s_hi + 1e-12, "not monotonic: {s_lo} > {s_hi}");
                prop_assert_eq!(ramp.ratio(ramp.duration()), 1.0);
            }
        }
    }
}
