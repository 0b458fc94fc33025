//! The token bucket behind a [`Capacity`](crate::Capacity): plain arithmetic on time since the
//! epoch, no clock and no I/O.

use std::time::Duration;

/// Calls per second over time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Rate {
    Fixed(f64),
    Ramp {
        from: f64,
        to: f64,
        start: Duration,
        ramp: Duration,
    },
}

impl Rate {
    /// The rate at `t`.
    pub(crate) fn at(&self, t: Duration) -> f64 {
        match *self {
            Rate::Fixed(r) => r,
            Rate::Ramp {
                from,
                to,
                start,
                ramp,
            } => {
                if t < start {
                    from
                } else if t >= start.saturating_add(ramp) {
                    to
                } else {
                    let x = (t - start).as_secs_f64() / ramp.as_secs_f64();
                    from + (to - from) * x
                }
            }
        }
    }

    /// The calls admitted over `[0, t)` at this rate: the integral of the rate.
    pub(crate) fn integral(&self, t: Duration) -> f64 {
        let secs = t.as_secs_f64();
        match *self {
            Rate::Fixed(r) => r * secs,
            Rate::Ramp {
                from,
                to,
                start,
                ramp,
            } => {
                let s = start.as_secs_f64();
                let w = ramp.as_secs_f64();
                if t < start {
                    from * secs
                } else if t >= start.saturating_add(ramp) {
                    from * s + (from + to) / 2.0 * w + to * (secs - s - w).max(0.0)
                } else {
                    let x = secs - s;
                    from * secs + (to - from) * x * x / (2.0 * w)
                }
            }
        }
    }
}

/// A bucket's clock: time since the layer's origin, the earlier of its epoch and the instant
/// it was built. Calls before an epoch set in the future run at the rate the epoch starts
/// with, and refill the bucket as time passes: the schedule's clock stands still until the
/// epoch, the bucket's does not.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Clock {
    /// Time since the origin.
    pub(crate) now: Duration,
    /// How long after the origin the epoch is (zero unless the epoch was set in the future).
    pub(crate) lead: Duration,
}

impl Clock {
    /// The clock of a layer whose epoch is the origin: `now` is time since the epoch.
    #[cfg(test)]
    pub(crate) fn at(now: Duration) -> Self {
        Clock {
            now,
            lead: Duration::ZERO,
        }
    }

    /// The time since the epoch (zero before it) of the clock reading `at`.
    fn since_epoch(&self, at: Duration) -> Duration {
        at.saturating_sub(self.lead)
    }

    /// The calls `rate` admits over `[0, at)` of this clock: the epoch's rate until the
    /// epoch, then the rate's own integral.
    fn integral(&self, rate: &Rate, at: Duration) -> f64 {
        rate.at(Duration::ZERO) * at.min(self.lead).as_secs_f64()
            + rate.integral(self.since_epoch(at))
    }
}

/// A token bucket's state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bucket {
    tokens: f64,
    /// When the bucket was last refilled, on its [`Clock`]; `None` before the first call (the
    /// bucket is full).
    last: Option<Duration>,
}

impl Bucket {
    /// Admits a call at `clock` if a token is left, taking it.
    pub(crate) fn try_take(&mut self, rate: &Rate, burst: Option<f64>, clock: Clock) -> bool {
        let now = clock.now;
        // No burst while the rate is zero: a capacity of 0 calls a second admits nothing,
        // whatever burst it was given for the times it is above zero.
        let r = rate.at(clock.since_epoch(now));
        let cap = match burst {
            _ if r <= 0.0 => 0.0,
            Some(b) => b,
            None => (r / 10.0).ceil().max(1.0),
        };
        self.tokens = match self.last {
            None => cap,
            Some(last) if now > last => {
                let added = clock.integral(rate, now) - clock.integral(rate, last);
                (self.tokens + added.max(0.0)).min(cap)
            }
            Some(_) => self.tokens.min(cap),
        };
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        // Tolerates the rounding of the integral at exact refill boundaries.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ramp_rate_and_integral() {
        let r = Rate::Ramp {
            from: 10.0,
            to: 110.0,
            start: Duration::from_secs(10),
            ramp: Duration::from_secs(10),
        };
        assert_eq!(r.at(ms(9_999)), 10.0);
        assert_eq!(r.at(ms(10_000)), 10.0);
        assert!((r.at(ms(15_000)) - 60.0).abs() < 1e-9);
        assert_eq!(r.at(ms(20_000)), 110.0);
        assert!((r.integral(ms(10_000)) - 100.0).abs() < 1e-9);
        // 10 s at 10/s, then the ramp's average 60/s for 10 s, then 110/s for 1 s.
        assert!((r.integral(ms(20_000)) - 700.0).abs() < 1e-9);
        assert!((r.integral(ms(21_000)) - 810.0).abs() < 1e-9);
        // Continuous at the ends of the ramp.
        let eps = Duration::from_nanos(1);
        assert!((r.integral(ms(20_000) - eps) - 700.0).abs() < 1e-6);
    }

    #[test]
    fn zero_length_ramp_is_a_step() {
        let r = Rate::Ramp {
            from: 1.0,
            to: 5.0,
            start: Duration::from_secs(2),
            ramp: Duration::ZERO,
        };
        assert_eq!(r.at(ms(1_999)), 1.0);
        assert_eq!(r.at(ms(2_000)), 5.0);
        assert!((r.integral(ms(3_000)) - 7.0).abs() < 1e-9);
    }

    #[test]
    fn bucket_starts_full_then_refills_at_the_rate() {
        let rate = Rate::Fixed(100.0);
        let mut b = Bucket::default();
        // Default burst: a tenth of a second of calls.
        let first: usize = (0..20)
            .filter(|_| b.try_take(&rate, None, Clock::at(ms(0))))
            .count();
        assert_eq!(first, 10);
        // One token every 10 ms.
        assert!(!b.try_take(&rate, None, Clock::at(ms(9))));
        assert!(b.try_take(&rate, None, Clock::at(ms(10))));
        assert!(!b.try_take(&rate, None, Clock::at(ms(10))));
        // A long pause fills it up to the burst only.
        let later: usize = (0..20)
            .filter(|_| b.try_take(&rate, None, Clock::at(ms(10_000))))
            .count();
        assert_eq!(later, 10);
    }

    #[test]
    fn explicit_burst_and_zero_rate() {
        let mut b = Bucket::default();
        let n = (0..10)
            .filter(|_| b.try_take(&Rate::Fixed(1.0), Some(3.0), Clock::at(ms(0))))
            .count();
        assert_eq!(n, 3);
        let mut z = Bucket::default();
        assert!(!z.try_take(&Rate::Fixed(0.0), None, Clock::at(ms(0))));
        assert!(!z.try_take(&Rate::Fixed(0.0), None, Clock::at(ms(100_000))));
        // A slow rate still admits whole calls.
        let mut slow = Bucket::default();
        assert!(slow.try_take(&Rate::Fixed(0.5), None, Clock::at(ms(0))));
        assert!(!slow.try_take(&Rate::Fixed(0.5), None, Clock::at(ms(1_999))));
        assert!(slow.try_take(&Rate::Fixed(0.5), None, Clock::at(ms(2_000))));
    }

    /// Before an epoch set in the future, the bucket refills at the rate the epoch starts
    /// with: a capacity is not a burst followed by nothing until the epoch.
    #[test]
    fn before_a_future_epoch_the_bucket_refills_at_the_starting_rate() {
        let lead = Duration::from_secs(60);
        let at = |now| Clock { now: ms(now), lead };
        let mut b = Bucket::default();
        let rate = Rate::Fixed(10.0);
        assert!(b.try_take(&rate, None, at(0)));
        assert!(!b.try_take(&rate, None, at(50)));
        assert!(b.try_take(&rate, None, at(100)));
        // Across the epoch: 59.95 s to 60.05 s is 0.1 s of refill.
        assert!(b.try_take(&rate, None, at(59_950)));
        assert!(b.try_take(&rate, None, at(60_050)));
        assert!(!b.try_take(&rate, None, at(60_100)));
        // A ramp from 0 admits nothing before its epoch, then counts from it.
        let ramp = Rate::Ramp {
            from: 0.0,
            to: 100.0,
            start: Duration::ZERO,
            ramp: Duration::from_secs(10),
        };
        let mut r = Bucket::default();
        assert!(!r.try_take(&ramp, None, at(30_000)));
        assert!(!r.try_take(&ramp, None, at(60_000)));
        // 1 s into the ramp: 5 calls admitted over it, the burst of a 10/s rate is 1.
        assert!(r.try_take(&ramp, None, at(61_000)));
        assert!(!r.try_take(&ramp, None, at(61_000)));
        // Reading the same instants with no lead and the epoch at the origin gives the same.
        let mut same = Bucket::default();
        assert!(!same.try_take(&ramp, None, Clock::at(ms(0))));
        assert!(same.try_take(&ramp, None, Clock::at(ms(1_000))));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let rate = Rate::Fixed(10.0);
        let mut b = Bucket::default();
        assert!(b.try_take(&rate, None, Clock::at(ms(1_000))));
        assert!(!b.try_take(&rate, None, Clock::at(ms(500))));
        assert!(!b.try_take(&rate, None, Clock::at(ms(1_050))));
        assert!(b.try_take(&rate, None, Clock::at(ms(1_100))));
    }
}
