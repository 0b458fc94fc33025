//! The per-attempt limit and its escalation: plain arithmetic, no runtime.

use std::time::Duration;

use palisade_core::ConfigError;

/// A per-attempt timeout, optionally escalating after timed-out attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limit {
    base: Duration,
    /// `base` in nanoseconds, as a response future keeps it (see [`nanos`]).
    base_nanos: u64,
    /// `(factor, cap)`: attempt `n` gets `base × factor^n`, at most `cap`.
    escalation: Option<(f64, Duration)>,
}

/// The largest limit a response future keeps, in nanoseconds (about 292 years; bit 63 of its
/// word is a flag).
pub(crate) const MAX_NANOS: u64 = (1 << 63) - 1;

/// `limit` in nanoseconds, at most [`MAX_NANOS`] (a longer limit never fires anyway).
#[inline]
pub(crate) fn nanos(limit: Duration) -> u64 {
    u64::try_from(limit.as_nanos()).map_or(MAX_NANOS, |n| n.min(MAX_NANOS))
}

impl Limit {
    pub(crate) fn new(base: Duration) -> Self {
        Limit {
            base,
            base_nanos: nanos(base),
            escalation: None,
        }
    }

    pub(crate) fn base(&self) -> Duration {
        self.base
    }

    pub(crate) fn escalation(&self) -> Option<(f64, Duration)> {
        self.escalation
    }

    /// Escalates by `factor` per earlier timed-out attempt, up to `cap`.
    pub(crate) fn escalate(self, factor: f64, cap: Duration) -> Result<Self, ConfigError> {
        if factor.is_nan() || factor < 1.0 || factor.is_infinite() {
            return Err(ConfigError::new("factor", "must be a finite number >= 1"));
        }
        if cap < self.base {
            return Err(ConfigError::new("cap", "must be >= the base timeout"));
        }
        Ok(Limit {
            escalation: Some((factor, cap)),
            ..self
        })
    }

    /// The limit for an attempt after `timeouts_so_far` earlier attempts timed out.
    #[cfg(test)]
    pub(crate) fn for_attempt(&self, timeouts_so_far: u32) -> Duration {
        match self.escalation {
            Some((factor, cap)) if timeouts_so_far > 0 => {
                escalated(self.base, factor, cap, timeouts_so_far)
            }
            _ => self.base,
        }
    }

    /// [`for_attempt`](Self::for_attempt) in nanoseconds, as [`nanos`] gives them: the first
    /// attempt's (and every attempt's without escalation) is computed once, when the limit is
    /// built.
    #[inline]
    pub(crate) fn nanos_for_attempt(&self, timeouts_so_far: u32) -> u64 {
        match self.escalation {
            Some((factor, cap)) if timeouts_so_far > 0 => {
                nanos(escalated(self.base, factor, cap, timeouts_so_far))
            }
            _ => self.base_nanos,
        }
    }
}

/// `base × factor^timeouts_so_far`, at most `cap`.
#[cold]
#[inline(never)]
fn escalated(base: Duration, factor: f64, cap: Duration, timeouts_so_far: u32) -> Duration {
    let exp = i32::try_from(timeouts_so_far).unwrap_or(i32::MAX);
    let secs = base.as_secs_f64() * factor.powi(exp);
    if secs >= cap.as_secs_f64() {
        cap
    } else {
        Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn escalates_geometrically_up_to_the_cap() {
        let limit = Limit::new(ms(100)).escalate(2.0, ms(500)).unwrap();
        assert_eq!(limit.for_attempt(0), ms(100));
        assert_eq!(limit.for_attempt(1), ms(200));
        assert_eq!(limit.for_attempt(2), ms(400));
        assert_eq!(limit.for_attempt(3), ms(500));
        assert_eq!(limit.for_attempt(u32::MAX), ms(500));
    }

    #[test]
    fn without_escalation_ignores_the_count() {
        let limit = Limit::new(ms(100));
        assert_eq!(limit.for_attempt(0), ms(100));
        assert_eq!(limit.for_attempt(5), ms(100));
        assert_eq!(limit.nanos_for_attempt(5), 100_000_000);
    }

    #[test]
    fn nanos_saturate_below_the_flag_bit() {
        assert_eq!(nanos(Duration::MAX), MAX_NANOS);
        assert_eq!(nanos(Duration::from_nanos(MAX_NANOS)), MAX_NANOS);
        assert_eq!(nanos(Duration::from_nanos(MAX_NANOS + 1)), MAX_NANOS);
        assert_eq!(Limit::new(Duration::MAX).nanos_for_attempt(0), MAX_NANOS);
        let escalating = Limit::new(ms(1)).escalate(2.0, Duration::MAX).unwrap();
        assert_eq!(escalating.nanos_for_attempt(200), MAX_NANOS);
    }

    /// The first attempt gets the configured limit to the nanosecond, even one that a trip
    /// through `f64` seconds (the escalation's arithmetic) would round.
    #[test]
    fn the_first_attempt_gets_the_exact_base() {
        let base = Duration::new(123_456_789, 987_654_321);
        assert_ne!(
            Duration::from_secs_f64(base.as_secs_f64()),
            base,
            "a base the f64 round trip rounds"
        );
        let limit = Limit::new(base).escalate(2.0, Duration::MAX).unwrap();
        assert_eq!(limit.nanos_for_attempt(0), nanos(base));
        assert_eq!(limit.for_attempt(0), base);
    }

    #[test]
    fn factor_one_keeps_the_base() {
        let limit = Limit::new(ms(100)).escalate(1.0, ms(100)).unwrap();
        assert_eq!(limit.for_attempt(7), ms(100));
    }

    #[test]
    fn bad_configuration_names_the_field() {
        for factor in [0.5, f64::NAN, f64::INFINITY, -1.0] {
            let err = Limit::new(ms(100)).escalate(factor, ms(500)).unwrap_err();
            assert_eq!(err.field(), "factor", "{factor}");
        }
        let err = Limit::new(ms(100)).escalate(2.0, ms(99)).unwrap_err();
        assert_eq!(err.field(), "cap");
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn escalation_is_monotone_bounded_and_geometric(
            base_ms in 1u64..10_000,
            factor in 1.0f64..4.0,
            extra_ms in 0u64..100_000,
            n in 0u32..80,
        ) {
            let base = Duration::from_millis(base_ms);
            let cap = base + Duration::from_millis(extra_ms);
            let limit = Limit::new(base).escalate(factor, cap).unwrap();
            let d = limit.for_attempt(n);
            prop_assert!(d >= base && d <= cap);
            prop_assert!(limit.for_attempt(n + 1) >= d);
            // What a response future keeps: the same limit, in nanoseconds.
            prop_assert_eq!(limit.nanos_for_attempt(n), d.as_nanos() as u64);
            let expected = (base.as_secs_f64() * factor.powi(n as i32)).min(cap.as_secs_f64());
            prop_assert!((d.as_secs_f64() - expected).abs() <= 1e-6 * expected.max(1.0));
        }
    }

    /// The first attempt gets the base limit exactly, even where going through `f64` seconds
    /// would round it (a limit of ten million seconds and one nanosecond).
    #[test]
    fn the_first_attempt_gets_the_base_exactly() {
        let base = Duration::new(10_000_000, 1);
        let limit = Limit::new(base)
            .escalate(2.0, Duration::from_secs(100_000_000))
            .unwrap();
        assert_eq!(limit.for_attempt(0), base);
        assert_ne!(Duration::from_secs_f64(base.as_secs_f64()), base);
    }
}
