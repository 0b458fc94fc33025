//! The per-endpoint health state machine of the reference design, as a pure value that packs
//! into one `u64` so the router updates it with a compare-and-swap and reads it without a lock.

use std::time::Duration;

use palisade_classify::ConfigError;

use crate::Ramp;

/// An endpoint's health, as the reference design names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Full traffic.
    Healthy,
    /// Unhealthy signals in a row: reduced traffic ([`HealthConfig::degraded_share`]), or none
    /// when it fell back from recovering.
    Degraded,
    /// Too many unhealthy signals: no traffic.
    Failed,
    /// Healthy again: no traffic until enough healthy checks in a row, then ramping up.
    Recovering,
}

impl HealthState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
            HealthState::Recovering => "recovering",
        }
    }
}

/// Thresholds of the health state machine; the defaults are the reference design's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthConfig {
    /// Consecutive unhealthy signals that make a healthy endpoint degraded (3).
    pub degraded_after: u8,
    /// Consecutive unhealthy signals that make it failed (10).
    pub failed_after: u8,
    /// Consecutive healthy signals a recovering endpoint needs before its traffic ramps (3).
    pub min_healthy_checks: u8,
    /// The traffic share of an endpoint that degraded from healthy (0.5). The reference design
    /// does not say; half keeps it observable without trusting it fully.
    pub degraded_share: f64,
    /// How traffic ramps back (5 steps, 30 s apart).
    pub ramp: Ramp,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            degraded_after: 3,
            failed_after: 10,
            min_healthy_checks: 3,
            degraded_share: 0.5,
            ramp: Ramp::default(),
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.degraded_after == 0 {
            return Err(ConfigError::new(
                "health.degraded_after",
                "must be at least 1",
            ));
        }
        if self.failed_after < self.degraded_after {
            return Err(ConfigError::new(
                "health.failed_after",
                "must be at least health.degraded_after",
            ));
        }
        if self.min_healthy_checks == 0 {
            return Err(ConfigError::new(
                "health.min_healthy_checks",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.degraded_share) {
            return Err(ConfigError::new(
                "health.degraded_share",
                "must be within 0.0..=1.0",
            ));
        }
        self.ramp.validate()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Healthy = 0,
    Degraded = 1,
    /// Degraded after failing while recovering: no traffic.
    DegradedZero = 2,
    Failed = 3,
    /// Recovering, not yet ramping: no traffic.
    Recovering = 4,
    /// Recovering and ramping since `ramp_start`.
    Ramping = 5,
}

/// One endpoint's health: phase, consecutive counts and ramp start (milliseconds since the
/// router's origin). Packs into a `u64`: 3 bits phase, 8 + 8 bits counts, 45 bits of ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    phase: Phase,
    unhealthy: u8,
    healthy: u8,
    ramp_start_ms: u64,
}

const MS_MASK: u64 = (1 << 45) - 1;

impl Health {
    pub(crate) const HEALTHY: Health = Health {
        phase: Phase::Healthy,
        unhealthy: 0,
        healthy: 0,
        ramp_start_ms: 0,
    };

    /// A new endpoint that ramps up from `now_ms` (slow start).
    pub(crate) fn ramping(now_ms: u64) -> Health {
        Health {
            phase: Phase::Ramping,
            unhealthy: 0,
            healthy: 0,
            ramp_start_ms: now_ms & MS_MASK,
        }
    }

    pub(crate) fn pack(self) -> u64 {
        (self.phase as u64)
            | (u64::from(self.unhealthy) << 3)
            | (u64::from(self.healthy) << 11)
            | ((self.ramp_start_ms & MS_MASK) << 19)
    }

    pub(crate) fn unpack(v: u64) -> Health {
        let phase = match v & 0b111 {
            0 => Phase::Healthy,
            1 => Phase::Degraded,
            2 => Phase::DegradedZero,
            3 => Phase::Failed,
            4 => Phase::Recovering,
            _ => Phase::Ramping,
        };
        Health {
            phase,
            unhealthy: ((v >> 3) & 0xff) as u8,
            healthy: ((v >> 11) & 0xff) as u8,
            ramp_start_ms: v >> 19,
        }
    }

    /// Whether a passive success changes nothing (the common case: skip the write).
    pub(crate) fn is_settled_healthy(self) -> bool {
        self.phase == Phase::Healthy && self.unhealthy == 0
    }

    fn ramp_done(self, cfg: &HealthConfig, now_ms: u64) -> bool {
        self.phase == Phase::Ramping
            && now_ms.saturating_sub(self.ramp_start_ms) >= cfg.ramp.duration().as_millis() as u64
    }

    /// The state as the reference design names it, at `now_ms`.
    pub(crate) fn state(self, cfg: &HealthConfig, now_ms: u64) -> HealthState {
        match self.phase {
            Phase::Healthy => HealthState::Healthy,
            Phase::Degraded | Phase::DegradedZero => HealthState::Degraded,
            Phase::Failed => HealthState::Failed,
            Phase::Recovering => HealthState::Recovering,
            Phase::Ramping if self.ramp_done(cfg, now_ms) => HealthState::Healthy,
            Phase::Ramping => HealthState::Recovering,
        }
    }

    /// The traffic share at `now_ms`, in `0.0..=1.0`.
    pub(crate) fn share(self, cfg: &HealthConfig, now_ms: u64) -> f64 {
        match self.phase {
            Phase::Healthy => 1.0,
            Phase::Degraded => cfg.degraded_share,
            Phase::DegradedZero | Phase::Failed | Phase::Recovering => 0.0,
            Phase::Ramping => cfg.ramp.share(Duration::from_millis(
                now_ms.saturating_sub(self.ramp_start_ms),
            )),
        }
    }

    pub(crate) fn consecutive(self) -> (u8, u8) {
        (self.healthy, self.unhealthy)
    }

    /// An active check's verdict (the reference design's transitions).
    #[must_use]
    pub(crate) fn on_check(mut self, healthy: bool, cfg: &HealthConfig, now_ms: u64) -> Health {
        if self.ramp_done(cfg, now_ms) {
            self = Health::HEALTHY;
        }
        if healthy {
            self.unhealthy = 0;
            self.healthy = self.healthy.saturating_add(1);
            match self.phase {
                Phase::Healthy | Phase::Ramping => {}
                Phase::Degraded | Phase::DegradedZero | Phase::Failed => {
                    self.phase = Phase::Recovering;
                    self.healthy = 1;
                }
                Phase::Recovering => {}
            }
            if self.phase == Phase::Recovering && self.healthy >= cfg.min_healthy_checks {
                self.phase = Phase::Ramping;
                self.ramp_start_ms = now_ms & MS_MASK;
            }
        } else {
            self.healthy = 0;
            self.unhealthy = self.unhealthy.saturating_add(1);
            match self.phase {
                Phase::Healthy if self.unhealthy >= cfg.degraded_after => {
                    self.phase = Phase::Degraded;
                }
                Phase::Recovering | Phase::Ramping => {
                    self.phase = Phase::DegradedZero;
                    self.unhealthy = 1;
                }
                _ => {}
            }
            if matches!(self.phase, Phase::Degraded | Phase::DegradedZero)
                && self.unhealthy >= cfg.failed_after
            {
                self.phase = Phase::Failed;
            }
        }
        self
    }

    /// The outcome of a real call. Failures are unhealthy signals. A success is a healthy
    /// signal too, except that an endpoint still serving traffic while degraded goes straight
    /// back to healthy after `min_healthy_checks` successes in a row (it never stopped
    /// receiving traffic, so there is nothing to ramp), instead of dropping to 0 % as a
    /// recovering endpoint would.
    #[must_use]
    pub(crate) fn on_outcome(mut self, success: bool, cfg: &HealthConfig, now_ms: u64) -> Health {
        if success && self.phase == Phase::Degraded {
            self.unhealthy = 0;
            self.healthy = self.healthy.saturating_add(1);
            if self.healthy >= cfg.min_healthy_checks {
                self = Health::HEALTHY;
            }
            return self;
        }
        self.on_check(success, cfg, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(h: Health, signals: &[bool], cfg: &HealthConfig, now: u64) -> Health {
        signals.iter().fold(h, |h, s| h.on_check(*s, cfg, now))
    }

    #[test]
    fn reference_transitions() {
        let cfg = HealthConfig::default();
        let h = Health::HEALTHY;
        let h = run(h, &[false, false], &cfg, 0);
        assert_eq!(h.state(&cfg, 0), HealthState::Healthy);
        let h = h.on_check(false, &cfg, 0);
        assert_eq!(h.state(&cfg, 0), HealthState::Degraded);
        assert_eq!(h.share(&cfg, 0), 0.5);
        let h = run(h, &[false; 6], &cfg, 0);
        assert_eq!(h.state(&cfg, 0), HealthState::Degraded);
        let h = h.on_check(false, &cfg, 0); // the 10th
        assert_eq!(h.state(&cfg, 0), HealthState::Failed);
        assert_eq!(h.share(&cfg, 0), 0.0);
        // One healthy check: recovering at 0 %.
        let h = h.on_check(true, &cfg, 1_000);
        assert_eq!(h.state(&cfg, 1_000), HealthState::Recovering);
        assert_eq!(h.share(&cfg, 1_000), 0.0);
        let h = h.on_check(true, &cfg, 2_000);
        assert_eq!(h.share(&cfg, 2_000), 0.0);
        // The third: ramp starts at 20 %.
        let h = h.on_check(true, &cfg, 3_000);
        assert_eq!(h.state(&cfg, 3_000), HealthState::Recovering);
        assert_eq!(h.share(&cfg, 3_000), 0.2);
        assert_eq!(h.share(&cfg, 32_999), 0.2);
        assert_eq!(h.share(&cfg, 33_000), 0.4);
        assert_eq!(h.state(&cfg, 122_999), HealthState::Recovering);
        assert_eq!(h.state(&cfg, 123_000), HealthState::Healthy);
        assert_eq!(h.share(&cfg, 123_000), 1.0);
    }

    #[test]
    fn a_failed_check_while_recovering_drops_to_degraded_at_zero() {
        let cfg = HealthConfig::default();
        let h = run(Health::HEALTHY, &[false; 10], &cfg, 0);
        let h = run(h, &[true, true, true], &cfg, 0);
        assert_eq!(h.share(&cfg, 0), 0.2);
        let h = h.on_check(false, &cfg, 10);
        assert_eq!(h.state(&cfg, 10), HealthState::Degraded);
        assert_eq!(h.share(&cfg, 10), 0.0);
        // Nine more failures make it failed again.
        let h = run(h, &[false; 9], &cfg, 10);
        assert_eq!(h.state(&cfg, 10), HealthState::Failed);
    }

    #[test]
    fn passive_successes_restore_a_degraded_endpoint_without_zeroing_it() {
        let cfg = HealthConfig::default();
        let h = run(Health::HEALTHY, &[false; 3], &cfg, 0);
        let h = h.on_outcome(true, &cfg, 0);
        assert_eq!(h.state(&cfg, 0), HealthState::Degraded);
        assert_eq!(h.share(&cfg, 0), 0.5);
        let h = h.on_outcome(true, &cfg, 0).on_outcome(true, &cfg, 0);
        assert_eq!(h, Health::HEALTHY);
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = |f: fn(&mut HealthConfig)| {
            let mut c = HealthConfig::default();
            f(&mut c);
            c.validate().unwrap_err().field().to_owned()
        };
        assert_eq!(bad(|c| c.degraded_after = 0), "health.degraded_after");
        assert_eq!(bad(|c| c.failed_after = 2), "health.failed_after");
        assert_eq!(
            bad(|c| c.min_healthy_checks = 0),
            "health.min_healthy_checks"
        );
        assert_eq!(bad(|c| c.degraded_share = 1.1), "health.degraded_share");
    }

    proptest! {
        #[test]
        fn pack_round_trips(phase in 0u64..6, u in any::<u8>(), h in any::<u8>(), ms in 0u64..(1 << 45)) {
            let v = phase | (u64::from(u) << 3) | (u64::from(h) << 11) | (ms << 19);
            prop_assert_eq!(Health::unpack(v).pack(), v);
        }

        #[test]
        fn shares_stay_in_bounds(signals in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..60_000), 0..200)) {
            let cfg = HealthConfig::default();
            let mut h = Health::HEALTHY;
            let mut now = 0;
            for (passive, ok, dt) in signals {
                now += dt;
                h = if passive { h.on_outcome(ok, &cfg, now) } else { h.on_check(ok, &cfg, now) };
                let s = h.share(&cfg, now);
                prop_assert!((0.0..=1.0).contains(&s));
                // Failed and zero-traffic states really get nothing.
                if h.state(&cfg, now) == HealthState::Failed { prop_assert_eq!(s, 0.0); }
                prop_assert_eq!(Health::unpack(h.pack()), h);
            }
        }
    }
}
