//! The per-endpoint health state machine, as a pure value that packs
//! into one `u64` so the router updates it with a compare-and-swap and reads it without a lock.

use std::time::Duration;

use palisade_core::ConfigError;

use crate::endpoint::millis;
use crate::{Ramp, RouteConfig};

/// An endpoint's health: healthy, degraded, recovering (ramping back) or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthState {
    /// Full traffic.
    Healthy,
    /// Unhealthy signals in a row: reduced traffic ([`HealthConfig::degraded_ratio`]), or none
    /// when it fell back from recovering.
    Degraded,
    /// Too many unhealthy signals: no traffic (without active checks, until its hold ends).
    Failed,
    /// Healthy again: no traffic until enough healthy checks in a row, then ramping up.
    /// Without active checks, the ramp's first step while real calls prove it (a
    /// [trial](crate#without-active-checks-trials)).
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

/// Thresholds of the health state machine.
///
/// The defaults: degraded after 3 unhealthy signals in a row, failed after 10, 3 healthy
/// signals in a row before a recovering endpoint ramps up, half the traffic while degraded,
/// and [`Ramp::default`] (5 steps, 30 s apart).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct HealthConfig {
    /// Consecutive unhealthy signals that make a healthy endpoint degraded (3; at least 1).
    pub degraded_after: u8,
    /// Consecutive unhealthy signals that make it failed (10; at least `degraded_after`).
    pub failed_after: u8,
    /// Consecutive healthy signals a recovering endpoint needs before its traffic ramps (3; at
    /// least 1).
    pub min_healthy_checks: u8,
    /// The fraction of its traffic an endpoint that degraded from healthy keeps (0.5; within
    /// `0..=1`, where 0 takes it out of traffic as a failed one): half keeps it observable
    /// without trusting it fully.
    pub degraded_ratio: f64,
    /// How traffic ramps back (5 steps, 30 s apart: 20 % at once, 100 % after 120 s). Its
    /// first step is also the share of an endpoint on
    /// [trial](crate#without-active-checks-trials).
    pub ramp: Ramp,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            degraded_after: 3,
            failed_after: 10,
            min_healthy_checks: 3,
            degraded_ratio: 0.5,
            ramp: Ramp::default(),
        }
    }
}

impl HealthConfig {
    /// Checks every field, the ramp's too.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule, by its path from
    /// [`RouteConfig`] (`health.failed_after`, `health.ramp.steps`).
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if !(0.0..=1.0).contains(&self.degraded_ratio) {
            return Err(ConfigError::new(
                "health.degraded_ratio",
                "must be within 0..=1",
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
    /// Recovering, not yet ramping: no traffic under active checks, a trial share without.
    Recovering = 4,
    /// Recovering and ramping since `ms`.
    Ramping = 5,
}

/// The share of an endpoint on trial when the ramp's first step is zero (a linear ramp with
/// `min_ratio` 0): Envoy's slow start never weighs an endpoint below 10 % either
/// (`min_weight_percent`).
const MIN_TRIAL_SHARE: f64 = 0.1;

/// One endpoint's health: phase, consecutive counts, strikes (times in a row it was taken out
/// of traffic) and one instant in milliseconds since the router's origin: the ramp's start
/// while ramping, the end of the hold while it has no traffic. Packs into a `u64`: 3 bits
/// phase, 8 + 8 bits counts, 5 bits strikes, 40 bits of ms (34 years: a hold that would end
/// later, an ejection time of `Duration::MAX` say, ends then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    phase: Phase,
    unhealthy: u8,
    healthy: u8,
    strikes: u8,
    ms: u64,
}

const MS_MASK: u64 = (1 << 40) - 1;
const MAX_STRIKES: u8 = (1 << 5) - 1;

/// How long the `strikes`-th exclusion in a row lasts: base × strikes, capped (Envoy's
/// ejection time). The count stops at [`MAX_STRIKES`]: from there on every exclusion is the
/// longest, so that a base below a 31st of the cap still reaches it.
fn exclusion_ms(cfg: &RouteConfig, strikes: u8) -> u64 {
    let o = &cfg.outlier;
    if strikes >= MAX_STRIKES {
        return millis(o.max_ejection);
    }
    millis(
        o.base_ejection
            .saturating_mul(u32::from(strikes.max(1)))
            .min(o.max_ejection),
    )
}

impl Health {
    pub(crate) const HEALTHY: Health = Health {
        phase: Phase::Healthy,
        unhealthy: 0,
        healthy: 0,
        strikes: 0,
        ms: 0,
    };

    /// A new endpoint that ramps up from `now_ms` (slow start).
    pub(crate) fn ramping(now_ms: u64) -> Health {
        Health {
            phase: Phase::Ramping,
            ms: now_ms & MS_MASK,
            ..Health::HEALTHY
        }
    }

    /// When the slow start this health began with started (see [`Health::ramping`]); `None`
    /// for any other health.
    pub(crate) fn ramp_start(self) -> Option<u64> {
        (self.phase == Phase::Ramping).then_some(self.ms)
    }

    /// Whether this is still the slow start that began at `start` (a new endpoint's ramp), not
    /// a ramp back from being out: that one follows a strike, and begins at its own instant.
    pub(crate) fn starting(self, start: u64) -> bool {
        self.phase == Phase::Ramping && self.strikes == 0 && self.ms == start
    }

    pub(crate) fn pack(self) -> u64 {
        (self.phase as u64)
            | (u64::from(self.unhealthy) << 3)
            | (u64::from(self.healthy) << 11)
            | (u64::from(self.strikes & MAX_STRIKES) << 19)
            | ((self.ms & MS_MASK) << 24)
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
            strikes: ((v >> 19) & u64::from(MAX_STRIKES)) as u8,
            ms: v >> 24,
        }
    }

    /// Whether a passive success changes nothing (the common case: skip the write).
    pub(crate) fn is_settled_healthy(self) -> bool {
        self.phase == Phase::Healthy && self.unhealthy == 0 && self.strikes == 0
    }

    fn ramp_done(self, cfg: &HealthConfig, now_ms: u64) -> bool {
        self.phase == Phase::Ramping
            && now_ms.saturating_sub(self.ms) >= millis(cfg.ramp.duration())
    }

    /// Whether the machine gives it no traffic: failed, degraded from recovering, or degraded
    /// with a zero [`degraded_ratio`](HealthConfig::degraded_ratio). Recovering is not out: it
    /// is on its way back.
    fn is_out(self, cfg: &HealthConfig) -> bool {
        match self.phase {
            Phase::DegradedZero | Phase::Failed => true,
            Phase::Degraded => cfg.degraded_ratio == 0.0,
            _ => false,
        }
    }

    /// Without active checks, the end of the hold of an endpoint that is out (0 when it is not
    /// out): until then it gets nothing, from then on a trial.
    pub(crate) fn held_until(self, cfg: &HealthConfig) -> u64 {
        if self.is_out(cfg) { self.ms } else { 0 }
    }

    /// Whether, without active checks, it is on trial at `now_ms`: out, and its hold is over.
    fn on_trial(self, cfg: &HealthConfig, now_ms: u64) -> bool {
        self.is_out(cfg) && now_ms >= self.ms
    }

    /// The share of an endpoint on trial: the ramp's first step.
    fn trial_share(cfg: &HealthConfig) -> f64 {
        let first = cfg.ramp.ratio(Duration::ZERO);
        if first > 0.0 { first } else { MIN_TRIAL_SHARE }
    }

    /// The state at `now_ms`. `trials`: no active check judges the endpoint, so an endpoint
    /// whose hold is over, or that is recovering, is on trial (shown as recovering).
    pub(crate) fn state(self, cfg: &HealthConfig, now_ms: u64, trials: bool) -> HealthState {
        match self.phase {
            _ if trials && self.on_trial(cfg, now_ms) => HealthState::Recovering,
            Phase::Healthy => HealthState::Healthy,
            Phase::Degraded | Phase::DegradedZero => HealthState::Degraded,
            Phase::Failed => HealthState::Failed,
            Phase::Recovering => HealthState::Recovering,
            Phase::Ramping if self.ramp_done(cfg, now_ms) => HealthState::Healthy,
            Phase::Ramping => HealthState::Recovering,
        }
    }

    /// The traffic share at `now_ms`, in `0.0..=1.0`; `trials` as for [`state`](Self::state).
    pub(crate) fn share(self, cfg: &HealthConfig, now_ms: u64, trials: bool) -> f64 {
        if trials && (self.phase == Phase::Recovering || self.on_trial(cfg, now_ms)) {
            return Health::trial_share(cfg);
        }
        match self.phase {
            Phase::Healthy => 1.0,
            Phase::Degraded => cfg.degraded_ratio,
            Phase::DegradedZero | Phase::Failed | Phase::Recovering => 0.0,
            Phase::Ramping => cfg
                .ramp
                .ratio(Duration::from_millis(now_ms.saturating_sub(self.ms))),
        }
    }

    pub(crate) fn consecutive(self) -> (u8, u8) {
        (self.healthy, self.unhealthy)
    }

    /// One more strike; returns the end of the exclusion it starts at `now_ms`, at most the
    /// last instant the packed state can hold.
    fn strike(&mut self, cfg: &RouteConfig, now_ms: u64) -> u64 {
        self.strikes = (self.strikes + 1).min(MAX_STRIKES);
        now_ms
            .saturating_add(exclusion_ms(cfg, self.strikes))
            .min(MS_MASK)
    }

    /// Takes it out of traffic until `now_ms` + the next exclusion's length (one more strike).
    fn hold(mut self, cfg: &RouteConfig, now_ms: u64) -> Health {
        self.ms = self.strike(cfg, now_ms);
        self
    }

    /// An outlier ejection at `now_ms`: the updated health and the ejection's end. An ejection
    /// and a hold of the health machine are one strike: ejecting an endpoint the machine holds
    /// ends with the hold; otherwise it is the next strike.
    #[must_use]
    pub(crate) fn eject(mut self, cfg: &RouteConfig, now_ms: u64) -> (Health, u64) {
        if self.is_out(&cfg.health) && self.ms > now_ms {
            return (self, self.ms);
        }
        let end = self.strike(cfg, now_ms);
        (self, end)
    }

    /// An active check's verdict.
    #[must_use]
    pub(crate) fn on_check(self, healthy: bool, cfg: &RouteConfig, now_ms: u64) -> Health {
        self.signal(healthy, false, cfg, now_ms)
    }

    /// The transitions, for both kinds of signal. Entering a zero-traffic phase holds the
    /// endpoint out for the next exclusion time; a passive failure on trial (out, hold over)
    /// holds it again, for longer. Strikes are cleared once it is fully healthy again.
    fn signal(mut self, healthy: bool, passive: bool, cfg: &RouteConfig, now_ms: u64) -> Health {
        let h = &cfg.health;
        if self.ramp_done(h, now_ms) {
            self = Health::HEALTHY;
        }
        let was_out = self.is_out(h);
        let trial_failed = passive && !healthy && self.on_trial(h, now_ms);
        if healthy {
            self.unhealthy = 0;
            self.healthy = self.healthy.saturating_add(1);
            match self.phase {
                Phase::Healthy if self.healthy >= h.min_healthy_checks => self.strikes = 0,
                Phase::Healthy | Phase::Ramping => {}
                Phase::Degraded | Phase::DegradedZero | Phase::Failed => {
                    self.phase = Phase::Recovering;
                    self.healthy = 1;
                }
                Phase::Recovering => {}
            }
            if self.phase == Phase::Recovering && self.healthy >= h.min_healthy_checks {
                self.phase = Phase::Ramping;
                self.ms = now_ms & MS_MASK;
            }
        } else {
            self.healthy = 0;
            self.unhealthy = self.unhealthy.saturating_add(1);
            match self.phase {
                Phase::Healthy if self.unhealthy >= h.degraded_after => {
                    self.phase = Phase::Degraded;
                }
                Phase::Recovering | Phase::Ramping => {
                    self.phase = Phase::DegradedZero;
                    self.unhealthy = 1;
                }
                _ => {}
            }
            if matches!(self.phase, Phase::Degraded | Phase::DegradedZero)
                && self.unhealthy >= h.failed_after
            {
                self.phase = Phase::Failed;
            }
            if (!was_out && self.is_out(h)) || trial_failed {
                self = self.hold(cfg, now_ms);
            }
        }
        self
    }

    /// A failed real call while the endpoint is ejected until `ejected_until` (a call that
    /// was in flight when it was ejected): as a failed [`on_outcome`](Self::on_outcome), but
    /// a hold it starts belongs to the ejection's bad spell, one strike with it: it ends with
    /// the ejection, as an ejection of a held endpoint ends with the hold. That is so whether
    /// the failure takes the endpoint out or fails its trial (a trial call in flight when an
    /// outlier ejection took the endpoint on trial out again).
    #[must_use]
    pub(crate) fn on_failure_while_ejected(
        self,
        cfg: &RouteConfig,
        now_ms: u64,
        ejected_until: u64,
    ) -> Health {
        let h = &cfg.health;
        let next = self.on_outcome(false, cfg, now_ms);
        if next.is_out(h) && (!self.is_out(h) || self.on_trial(h, now_ms)) {
            return Health {
                strikes: self.strikes,
                ms: ejected_until.min(MS_MASK),
                ..next
            };
        }
        next
    }

    /// The outcome of a real call. Failures are unhealthy signals. A success is a healthy
    /// signal too, except that an endpoint still serving traffic while degraded goes straight
    /// back to healthy after `min_healthy_checks` successes in a row (it never stopped
    /// receiving traffic, so there is nothing to ramp), instead of dropping to 0 % as a
    /// recovering endpoint would. A degraded endpoint with no traffic (a zero
    /// [`degraded_ratio`](HealthConfig::degraded_ratio)) is out as a failed one is, and comes
    /// back as one: recovering, then ramping.
    #[must_use]
    pub(crate) fn on_outcome(mut self, success: bool, cfg: &RouteConfig, now_ms: u64) -> Health {
        if success && self.phase == Phase::Degraded && !self.is_out(&cfg.health) {
            self.unhealthy = 0;
            self.healthy = self.healthy.saturating_add(1);
            if self.healthy >= cfg.health.min_healthy_checks {
                self = Health::HEALTHY;
            }
            return self;
        }
        self.signal(success, true, cfg, now_ms)
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(h: Health, signals: &[bool], cfg: &RouteConfig, now: u64) -> Health {
        signals.iter().fold(h, |h, s| h.on_check(*s, cfg, now))
    }

    #[test]
    fn reference_transitions() {
        let cfg = RouteConfig::default();
        let h = Health::HEALTHY;
        let h = run(h, &[false, false], &cfg, 0);
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Healthy);
        let h = h.on_check(false, &cfg, 0);
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Degraded);
        assert_eq!(h.share(&cfg.health, 0, false), 0.5);
        let h = run(h, &[false; 6], &cfg, 0);
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Degraded);
        let h = h.on_check(false, &cfg, 0); // the 10th
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Failed);
        assert_eq!(h.share(&cfg.health, 0, false), 0.0);
        // One healthy check: recovering at 0 %.
        let h = h.on_check(true, &cfg, 1_000);
        assert_eq!(h.state(&cfg.health, 1_000, false), HealthState::Recovering);
        assert_eq!(h.share(&cfg.health, 1_000, false), 0.0);
        let h = h.on_check(true, &cfg, 2_000);
        assert_eq!(h.share(&cfg.health, 2_000, false), 0.0);
        // The third: ramp starts at 20 %.
        let h = h.on_check(true, &cfg, 3_000);
        assert_eq!(h.state(&cfg.health, 3_000, false), HealthState::Recovering);
        assert_eq!(h.share(&cfg.health, 3_000, false), 0.2);
        assert_eq!(h.share(&cfg.health, 32_999, false), 0.2);
        assert_eq!(h.share(&cfg.health, 33_000, false), 0.4);
        assert_eq!(
            h.state(&cfg.health, 122_999, false),
            HealthState::Recovering
        );
        assert_eq!(h.state(&cfg.health, 123_000, false), HealthState::Healthy);
        assert_eq!(h.share(&cfg.health, 123_000, false), 1.0);
    }

    #[test]
    fn a_failed_check_while_recovering_drops_to_degraded_at_zero() {
        let cfg = RouteConfig::default();
        let h = run(Health::HEALTHY, &[false; 10], &cfg, 0);
        let h = run(h, &[true, true, true], &cfg, 0);
        assert_eq!(h.share(&cfg.health, 0, false), 0.2);
        let h = h.on_check(false, &cfg, 10);
        assert_eq!(h.state(&cfg.health, 10, false), HealthState::Degraded);
        assert_eq!(h.share(&cfg.health, 10, false), 0.0);
        // Nine more failures make it failed again.
        let h = run(h, &[false; 9], &cfg, 10);
        assert_eq!(h.state(&cfg.health, 10, false), HealthState::Failed);
    }

    #[test]
    fn passive_successes_restore_a_degraded_endpoint_without_zeroing_it() {
        let cfg = RouteConfig::default();
        let h = run(Health::HEALTHY, &[false; 3], &cfg, 0);
        let h = h.on_outcome(true, &cfg, 0);
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Degraded);
        assert_eq!(h.share(&cfg.health, 0, false), 0.5);
        let h = h.on_outcome(true, &cfg, 0).on_outcome(true, &cfg, 0);
        assert_eq!(h, Health::HEALTHY);
    }

    #[test]
    fn without_checks_a_held_endpoint_gets_trials_and_the_holds_grow() {
        let cfg = RouteConfig::default();
        let hc = &cfg.health;
        let h = (0..10).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0));
        assert_eq!(h.state(hc, 0, true), HealthState::Failed);
        assert_eq!(h.held_until(hc), 30_000);
        assert_eq!(h.share(hc, 29_999, true), 0.0);
        assert_eq!(h.share(hc, 30_000, true), 0.2);
        assert_eq!(h.state(hc, 30_000, true), HealthState::Recovering);
        // Under active checks the hold gives nothing: the checks decide.
        assert_eq!(h.share(hc, 30_000, false), 0.0);
        assert_eq!(h.state(hc, 30_000, false), HealthState::Failed);
        // A failed trial holds it for the second exclusion time, 60 s.
        let h = h.on_outcome(false, &cfg, 30_000);
        assert_eq!(h.held_until(hc), 90_000);
        // A failure while held (a call that was in flight) changes no hold.
        assert_eq!(h.on_outcome(false, &cfg, 40_000).held_until(hc), 90_000);
        // A passing trial: recovering at the trial share, ramping after three successes.
        let h = h.on_outcome(true, &cfg, 90_000);
        assert_eq!(h.share(hc, 90_000, true), 0.2);
        assert_eq!(h.held_until(hc), 0);
        let h = h
            .on_outcome(true, &cfg, 90_500)
            .on_outcome(true, &cfg, 91_000);
        assert_eq!(h.share(hc, 121_000, true), 0.4);
        assert!(!h.is_settled_healthy());
        // Ramped: strikes cleared, so the next bad spell starts at 30 s again.
        let h = h.on_outcome(true, &cfg, 211_000);
        assert!(h.is_settled_healthy());
        let h = (0..10).fold(h, |h, _| h.on_outcome(false, &cfg, 300_000));
        assert_eq!(h.held_until(hc), 330_000);
    }

    #[test]
    fn an_ejection_and_a_hold_are_one_strike() {
        let cfg = RouteConfig::default();
        let (h, until) = Health::HEALTHY.eject(&cfg, 0);
        assert_eq!(until, 30_000);
        // Back, failing: held at the second strike, and an ejection now ends with the hold.
        let h = (0..10).fold(h, |h, _| h.on_outcome(false, &cfg, 30_000));
        assert_eq!(h.held_until(&cfg.health), 90_000);
        let (same, until) = h.eject(&cfg, 30_000);
        assert_eq!((same, until), (h, 90_000));
        // Not held: the next strike. Capped at max_ejection.
        let (_, until) = h.eject(&cfg, 90_000);
        assert_eq!(until, 180_000);
        let mut h = Health::HEALTHY;
        for _ in 0..40 {
            h = h.eject(&cfg, 0).0;
        }
        assert_eq!(h.eject(&cfg, 0).1, 300_000);
    }

    /// "The n-th in a row lasts n times as long", capped at `max_ejection`, whatever the base
    /// (5 s under a 300 s cap here). The count of strikes stops at 31, where ejections
    /// stopped growing (at 155 s, never reaching the cap): from the 31st on, each lasts
    /// `max_ejection`.
    #[test]
    fn ejections_reach_max_ejection_whatever_the_base() {
        let mut cfg = RouteConfig::default();
        cfg.outlier.base_ejection = Duration::from_secs(5);
        cfg.outlier.max_ejection = Duration::from_secs(300);
        assert_eq!(cfg.validate(), Ok(()));
        let mut h = Health::HEALTHY;
        let mut lengths = Vec::new();
        let mut now = 0;
        for _ in 0..70 {
            let (next, until) = h.eject(&cfg, now);
            lengths.push(until - now);
            h = next;
            now = until;
        }
        assert_eq!(lengths[0], 5_000);
        assert_eq!(lengths[29], 150_000, "the 30th ejection: 30 x 5 s");
        assert_eq!(lengths[30], 300_000, "the 31st on: max_ejection");
        assert_eq!(*lengths.last().unwrap(), 300_000);
    }

    #[test]
    fn an_ejection_time_of_duration_max_lasts_as_long_as_the_state_can_say() {
        let mut cfg = RouteConfig::default();
        cfg.outlier.base_ejection = Duration::MAX;
        cfg.outlier.max_ejection = Duration::MAX;
        assert_eq!(Health::HEALTHY.eject(&cfg, 1_000).1, MS_MASK);
        let h = (0..10).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 1_000));
        assert_eq!(h.held_until(&cfg.health), MS_MASK);
        assert_eq!(h.share(&cfg.health, MS_MASK - 1, true), 0.0);
        // A ramp longer than milliseconds can count is never done early.
        cfg.health.ramp = Ramp::Steps {
            steps: 2,
            interval: Duration::from_secs(u64::MAX / 3),
        };
        let h = Health::ramping(0);
        assert_eq!(
            h.state(&cfg.health, MS_MASK, false),
            HealthState::Recovering
        );
    }

    #[test]
    fn a_ramp_that_starts_at_zero_still_gives_a_trial() {
        let mut cfg = RouteConfig::default();
        cfg.health.ramp = Ramp::Linear {
            window: Duration::from_secs(60),
            min_ratio: 0.0,
            aggression: 1.0,
        };
        let h = (0..10).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0));
        assert_eq!(h.share(&cfg.health, 30_000, true), MIN_TRIAL_SHARE);
    }

    #[test]
    fn only_plain_health_is_settled() {
        let cfg = RouteConfig::default();
        assert!(Health::HEALTHY.is_settled_healthy());
        // One failure, or a strike still on its record: not settled (a success must write).
        assert!(
            !Health::HEALTHY
                .on_outcome(false, &cfg, 0)
                .is_settled_healthy()
        );
        let (struck, _) = Health::HEALTHY.eject(&cfg, 0);
        assert!(!struck.is_settled_healthy());
        // Degraded, even with no unhealthy signal left in a row and no strike.
        let degraded = run(Health::HEALTHY, &[false; 3], &cfg, 0).on_outcome(true, &cfg, 0);
        assert_eq!(degraded.consecutive(), (1, 0));
        assert!(!degraded.is_settled_healthy());
    }

    #[test]
    fn a_zero_degraded_ratio_takes_a_degraded_endpoint_out() {
        let mut cfg = RouteConfig::default();
        cfg.health.degraded_ratio = 0.0;
        let h = (0..3).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0));
        assert_eq!(h.state(&cfg.health, 0, false), HealthState::Degraded);
        assert_eq!(h.share(&cfg.health, 0, false), 0.0);
        // Out, so held for the first ejection time, then on trial.
        assert_eq!(h.held_until(&cfg.health), 30_000);
        assert_eq!(h.share(&cfg.health, 30_000, true), 0.2);
        // With half its traffic it is not out: no hold.
        let cfg = RouteConfig::default();
        let h = (0..3).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0));
        assert_eq!(h.held_until(&cfg.health), 0);
    }

    #[test]
    fn strikes_clear_after_enough_successes_in_a_row() {
        let cfg = RouteConfig::default();
        let (struck, until) = Health::HEALTHY.eject(&cfg, 0);
        assert_eq!(until, 30_000);
        let ok = |h: Health, n: usize| (0..n).fold(h, |h, _| h.on_outcome(true, &cfg, 30_000));
        // Two successes keep the strike: the next ejection is the second's, 60 s.
        assert_eq!(ok(struck, 2).eject(&cfg, 40_000).1, 100_000);
        // The third clears it: 30 s again.
        assert_eq!(ok(struck, 3).eject(&cfg, 40_000).1, 70_000);
    }

    /// A trial call in flight when an outlier ejection took the endpoint on trial out again
    /// fails: the ejection already struck for that bad spell, so the failure keeps the
    /// ejection's end and strike instead of holding it for the next strike's longer time.
    #[test]
    fn a_trial_failing_while_ejected_ends_with_the_ejection() {
        let cfg = RouteConfig::default();
        let h = &cfg.health;
        let held = (0..10).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0));
        assert_eq!(held.held_until(h), 30_000);
        // On trial from 30 s; ejected at 31 s, the second strike: 60 s.
        let (ejected, until) = held.eject(&cfg, 31_000);
        assert_eq!(until, 91_000);
        let failed = ejected.on_failure_while_ejected(&cfg, 32_000, until);
        assert_eq!(failed.held_until(h), until);
        assert_eq!(failed.strikes, ejected.strikes);
        // Without the ejection, the failed trial is that second strike itself.
        assert_eq!(held.on_outcome(false, &cfg, 32_000).held_until(h), 92_000);
        // A failure of an endpoint held and not yet on trial changes no hold either way.
        let early = held.on_failure_while_ejected(&cfg, 1_000, 30_000);
        assert_eq!((early.held_until(h), early.strikes), (30_000, held.strikes));
    }

    #[test]
    fn states_have_lower_case_names() {
        let names = [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Failed,
            HealthState::Recovering,
        ]
        .map(HealthState::as_str);
        assert_eq!(names, ["healthy", "degraded", "failed", "recovering"]);
    }

    #[test]
    fn slow_start_ramps_from_the_instant_it_was_added() {
        let cfg = RouteConfig::default();
        let h = Health::ramping(50_000);
        assert_eq!(h.share(&cfg.health, 50_000, false), 0.2);
        assert_eq!(h.share(&cfg.health, 79_999, false), 0.2);
        assert_eq!(h.share(&cfg.health, 80_000, false), 0.4);
        assert_eq!(
            h.state(&cfg.health, 169_999, false),
            HealthState::Recovering
        );
        assert_eq!(h.state(&cfg.health, 170_000, false), HealthState::Healthy);
        assert_eq!(Health::unpack(h.pack()), h);
    }

    #[test]
    fn only_the_slow_start_an_endpoint_was_added_with_is_starting() {
        let cfg = RouteConfig::default();
        let h = Health::ramping(50_000);
        assert_eq!(h.ramp_start(), Some(50_000));
        assert!(h.starting(50_000));
        assert!(!h.starting(50_001), "a ramp that began at another instant");
        assert_eq!(Health::HEALTHY.ramp_start(), None);
        assert!(!Health::HEALTHY.starting(0));
        // Taken out and back at the same instant: a ramp back follows a strike.
        let out = run(h, &[false; 5], &cfg, 50_000);
        assert!(out.is_out(&cfg.health), "{out:?}");
        let back = run(out, &[true; 5], &cfg, 50_000);
        assert_eq!(back.ramp_start(), Some(50_000), "{back:?}");
        assert!(!back.starting(50_000), "{back:?}");
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
        assert_eq!(bad(|c| c.degraded_ratio = 1.1), "health.degraded_ratio");
    }

    proptest! {
        #[test]
        fn pack_round_trips(phase in 0u64..6, u in any::<u8>(), h in any::<u8>(), strikes in 0u64..32, ms in 0u64..(1 << 40)) {
            let v = phase | (u64::from(u) << 3) | (u64::from(h) << 11) | (strikes << 19) | (ms << 24);
            prop_assert_eq!(Health::unpack(v).pack(), v);
        }

        #[test]
        fn shares_stay_in_bounds(signals in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..60_000), 0..200)) {
            let cfg = RouteConfig::default();
            let mut h = Health::HEALTHY;
            let mut now = 0;
            for (passive, ok, dt) in signals {
                now += dt;
                h = if passive { h.on_outcome(ok, &cfg, now) } else { h.on_check(ok, &cfg, now) };
                let s = h.share(&cfg.health, now, false);
                let trial = h.share(&cfg.health, now, true);
                prop_assert!((0.0..=1.0).contains(&trial));
                prop_assert!((0.0..=1.0).contains(&s));
                // Failed and zero-traffic states really get nothing.
                if h.state(&cfg.health, now, false) == HealthState::Failed { prop_assert_eq!(s, 0.0); }
                // Without active checks nothing is out for good: it is held or on trial.
                if h.is_out(&cfg.health) {
                    prop_assert!(trial > 0.0 || h.held_until(&cfg.health) > now);
                    prop_assert!(h.held_until(&cfg.health) <= now + 300_000);
                }
                prop_assert_eq!(Health::unpack(h.pack()), h);
            }
        }
    }
}
