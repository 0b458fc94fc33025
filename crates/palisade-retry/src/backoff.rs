//! How long to wait before each retry: [`Backoff`] gives the delay, [`Jitter`] spreads it.

use std::time::Duration;

use palisade_core::ConfigError;
use rand::Rng;

/// The default cap on any backoff delay: 60 s.
pub const DEFAULT_CAP: Duration = Duration::from_secs(60);

/// The delay before the n-th retry, before jitter: constant, linear or exponential, never more
/// than a cap.
///
/// Retry numbers count from 1 (the delay after the first attempt failed). Arithmetic is done in
/// whole nanoseconds, so integer factors give exact delays, and anything that would overflow
/// is the cap.
///
/// ```
/// use palisade_retry::Backoff;
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// let b = Backoff::exponential(ms(100), 2.0).with_cap(ms(500));
/// let delays: Vec<_> = (1..=5).map(|n| b.delay(n)).collect();
/// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
///
/// let l = Backoff::linear(ms(100), ms(50));
/// assert_eq!(l.delay(3), ms(200));
/// assert_eq!(Backoff::constant(ms(30)).delay(9), ms(30));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    kind: Kind,
    initial: Duration,
    cap: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Constant,
    Linear(Duration),
    Exponential(f64),
}

impl Backoff {
    /// The same `delay` before every retry (its cap is `delay`).
    pub const fn constant(delay: Duration) -> Self {
        Backoff {
            kind: Kind::Constant,
            initial: delay,
            cap: delay,
        }
    }

    /// `initial` before the first retry, `step` more before each next one; capped at 60 s (or
    /// `initial`, if larger) unless [`with_cap`](Backoff::with_cap) says otherwise.
    pub fn linear(initial: Duration, step: Duration) -> Self {
        Backoff {
            kind: Kind::Linear(step),
            initial,
            cap: DEFAULT_CAP.max(initial),
        }
    }

    /// `initial` × `factor`^(n − 1) before the n-th retry (`factor` ≥ 1); capped at 60 s (or
    /// `initial`, if larger) unless [`with_cap`](Backoff::with_cap) says otherwise.
    pub fn exponential(initial: Duration, factor: f64) -> Self {
        Backoff {
            kind: Kind::Exponential(factor),
            initial,
            cap: DEFAULT_CAP.max(initial),
        }
    }

    /// The same backoff with another cap (at least the initial delay).
    pub const fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The same backoff starting from another initial delay (the retry layer uses this for
    /// its rate-limited delay). The cap is raised to `initial` if it was below.
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self.cap = self.cap.max(initial);
        self
    }

    /// The delay before the first retry.
    pub const fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// Checks the parameters: the cap is at least the initial delay, an exponential factor is
    /// finite and at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cap < self.initial {
            return Err(ConfigError::new(
                "backoff.cap",
                "must be at least the initial delay",
            ));
        }
        if let Kind::Exponential(f) = self.kind
            && (!f.is_finite() || f < 1.0)
        {
            return Err(ConfigError::new(
                "backoff.factor",
                "must be a finite number of at least 1.0",
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry; 0 is read as 1), capped.
    pub fn delay(&self, retry: u32) -> Duration {
        let n = retry.max(1) - 1;
        let delay = match self.kind {
            Kind::Constant => self.initial,
            Kind::Linear(step) => step
                .checked_mul(n)
                .and_then(|d| d.checked_add(self.initial))
                .unwrap_or(self.cap),
            Kind::Exponential(factor) => {
                let nanos =
                    self.initial.as_nanos() as f64 * factor.powi(n.min(i32::MAX as u32) as i32);
                // An overflow (infinite, or NaN from 0 × infinity) fails the test: the cap.
                if nanos < self.cap.as_nanos() as f64 {
                    Duration::from_nanos(nanos.round() as u64)
                } else {
                    self.cap
                }
            }
        };
        delay.min(self.cap)
    }
}

impl Default for Backoff {
    /// Exponential from 1 s, factor 2, capped at 60 s.
    fn default() -> Self {
        Backoff::exponential(Duration::from_secs(1), 2.0)
    }
}

/// How a backoff delay is spread so that clients that failed together do not retry together.
///
/// Each kind draws the delay uniformly from a range ([`Jitter::bounds`]); the result never
/// exceeds the backoff's cap. Randomness comes from the retry layer's seeded rng, so a fixed
/// seed gives the same delays on every run.
///
/// | jitter | delay drawn from |
/// |---|---|
/// | `None` | exactly `d` |
/// | `Full` | `[0, d]` |
/// | `Equal` | `[d/2, d]` |
/// | `Decorrelated` | `[initial, 3 × previous delay]` (AWS's "decorrelated jitter"; the first uses `previous = initial`; a wait for a server's `Retry-After` is not a previous delay) |
/// | `Proportional(f)` | `[d × (1 − f), d × (1 + f)]`, `0 ≤ f ≤ 1` |
///
/// More kinds may be added: the enum is `#[non_exhaustive]`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: the backoff delay itself.
    None,
    /// Anywhere between zero and the delay.
    Full,
    /// Half the delay, plus anywhere up to the other half.
    Equal,
    /// Between the initial delay and three times the previous delay, capped.
    Decorrelated,
    /// The delay, give or take this fraction of it (0.1 = ±10 %).
    Proportional(f64),
}

impl Default for Jitter {
    /// ±10 %.
    fn default() -> Self {
        Jitter::Proportional(0.1)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl Jitter {
    /// Checks the parameters: a proportional factor is between 0 and 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Jitter::Proportional(f) if !(0.0..=1.0).contains(f) => Err(ConfigError::new(
                "jitter",
                "must be a proportional factor between 0.0 and 1.0",
            )),
            _ => Ok(()),
        }
    }

    /// The range the delay is drawn from, for backoff delay `delay` (before jitter), the
    /// backoff's settings and the `previous` jittered delay (zero before the first retry).
    /// Both ends are already capped.
    pub fn bounds(
        &self,
        delay: Duration,
        backoff: &Backoff,
        previous: Duration,
    ) -> (Duration, Duration) {
        let d = nanos(delay);
        let (lo, hi) = match *self {
            Jitter::None => (d, d),
            Jitter::Full => (0, d),
            Jitter::Equal => (d / 2, d),
            Jitter::Decorrelated => {
                let lo = nanos(backoff.initial);
                let prev = if previous.is_zero() {
                    lo
                } else {
                    nanos(previous)
                };
                (lo, prev.saturating_mul(3).max(lo))
            }
            Jitter::Proportional(f) => {
                let f = f.clamp(0.0, 1.0);
                let lo = (d as f64 * (1.0 - f)).round();
                let hi = (d as f64 * (1.0 + f)).round();
                (lo as u64, hi.min(u64::MAX as f64) as u64)
            }
        };
        let cap = nanos(backoff.cap);
        (
            Duration::from_nanos(lo.min(cap)),
            Duration::from_nanos(hi.min(cap)),
        )
    }

    /// Draws the jittered delay: uniform over [`bounds`](Jitter::bounds). Draws nothing from
    /// `rng` when the range is a single value.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        delay: Duration,
        backoff: &Backoff,
        previous: Duration,
        rng: &mut R,
    ) -> Duration {
        let (lo, hi) = self.bounds(delay, backoff, previous);
        if lo >= hi {
            return lo;
        }
        Duration::from_nanos(rng.random_range(nanos(lo)..=nanos(hi)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn constant_linear_exponential() {
        let c = Backoff::constant(ms(250));
        assert_eq!(
            (1..=4).map(|n| c.delay(n)).collect::<Vec<_>>(),
            [ms(250); 4]
        );
        let l = Backoff::linear(ms(100), ms(100)).with_cap(ms(350));
        assert_eq!(
            (1..=5).map(|n| l.delay(n)).collect::<Vec<_>>(),
            [ms(100), ms(200), ms(300), ms(350), ms(350)]
        );
        let e = Backoff::exponential(ms(100), 3.0).with_cap(ms(2000));
        assert_eq!(
            (1..=5).map(|n| e.delay(n)).collect::<Vec<_>>(),
            [ms(100), ms(300), ms(900), ms(2000), ms(2000)]
        );
        let half = Backoff::exponential(ms(100), 1.5);
        assert_eq!(half.delay(3), ms(225));
        assert_eq!(e.delay(0), e.delay(1));
    }

    #[test]
    fn huge_retry_numbers_are_the_cap() {
        let e = Backoff::exponential(ms(1), 2.0);
        assert_eq!(e.delay(u32::MAX), DEFAULT_CAP);
        let l = Backoff::linear(ms(1), Duration::MAX / 2);
        assert_eq!(l.delay(u32::MAX), DEFAULT_CAP);
        // A zero initial delay times an infinite power is NaN: the cap too, never a panic.
        let z = Backoff::exponential(Duration::ZERO, 2.0).with_cap(ms(7));
        assert_eq!(z.delay(u32::MAX), ms(7));
        assert_eq!(z.delay(3), Duration::ZERO);
        // Reaching the cap gives the cap, to the nanosecond, even one an f64 cannot hold
        // (2^53 + 1 ns, about 104 days) when the delay lands exactly on its rounding.
        let cap = Duration::from_nanos((1 << 53) + 1);
        let e = Backoff::exponential(Duration::from_nanos(1 << 52), 2.0).with_cap(cap);
        assert_eq!(e.delay(2), cap);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            Backoff::exponential(ms(10), 0.5)
                .validate()
                .unwrap_err()
                .field(),
            "backoff.factor"
        );
        assert_eq!(
            Backoff::exponential(ms(10), f64::NAN)
                .validate()
                .unwrap_err()
                .field(),
            "backoff.factor"
        );
        assert_eq!(
            Backoff::linear(ms(10), ms(1))
                .with_cap(ms(5))
                .validate()
                .unwrap_err()
                .field(),
            "backoff.cap"
        );
        assert!(Backoff::default().validate().is_ok());
        assert_eq!(
            Jitter::Proportional(1.5).validate().unwrap_err().field(),
            "jitter"
        );
        assert_eq!(
            Jitter::Proportional(f64::NAN)
                .validate()
                .unwrap_err()
                .field(),
            "jitter"
        );
    }

    #[test]
    fn the_limits_of_validation_are_valid() {
        // A factor of exactly 1 (a constant delay) and a cap equal to the initial delay.
        assert!(Backoff::exponential(ms(10), 1.0).validate().is_ok());
        assert_eq!(Backoff::exponential(ms(10), 1.0).delay(5), ms(10));
        assert!(
            Backoff::linear(ms(10), ms(1))
                .with_cap(ms(10))
                .validate()
                .is_ok()
        );
        assert!(Backoff::constant(ms(10)).validate().is_ok());
        assert!(Jitter::Proportional(0.0).validate().is_ok());
        assert!(Jitter::Proportional(1.0).validate().is_ok());
        assert!(Jitter::Proportional(-0.1).validate().is_err());
    }

    #[test]
    fn each_jitter_draws_from_the_range_its_table_gives() {
        let b = Backoff::exponential(ms(100), 2.0).with_cap(ms(1000));
        let bounds = |j: Jitter, d, previous| j.bounds(d, &b, previous);
        assert_eq!(bounds(Jitter::None, ms(400), ms(0)), (ms(400), ms(400)));
        assert_eq!(bounds(Jitter::Full, ms(400), ms(0)), (ms(0), ms(400)));
        assert_eq!(bounds(Jitter::Equal, ms(400), ms(0)), (ms(200), ms(400)));
        assert_eq!(
            bounds(Jitter::Proportional(0.1), ms(400), ms(0)),
            (ms(360), ms(440))
        );
        assert_eq!(
            bounds(Jitter::Proportional(0.5), ms(400), ms(0)),
            (ms(200), ms(600))
        );
        // The cap bounds the top, and the bottom.
        assert_eq!(
            bounds(Jitter::Proportional(0.5), ms(1000), ms(0)),
            (ms(500), ms(1000))
        );
        assert_eq!(
            bounds(Jitter::Proportional(0.5), ms(4000), ms(0)),
            (ms(1000), ms(1000))
        );
        // Decorrelated: from the initial delay to three times the previous one (the initial
        // before the first retry).
        assert_eq!(
            bounds(Jitter::Decorrelated, ms(400), ms(0)),
            (ms(100), ms(300))
        );
        assert_eq!(
            bounds(Jitter::Decorrelated, ms(400), ms(250)),
            (ms(100), ms(750))
        );
        assert_eq!(
            bounds(Jitter::Decorrelated, ms(400), ms(50)),
            (ms(100), ms(150))
        );
        assert_eq!(
            bounds(Jitter::Decorrelated, ms(400), ms(900)),
            (ms(100), ms(1000))
        );
    }

    #[test]
    fn with_initial_keeps_the_cap_above() {
        let b = Backoff::exponential(ms(100), 2.0).with_cap(ms(400));
        let r = b.with_initial(ms(1000));
        assert_eq!(r.initial(), ms(1000));
        assert_eq!(r.cap(), ms(1000));
        assert_eq!(b.with_initial(ms(200)).delay(2), ms(400));
    }

    #[test]
    fn fixed_seed_gives_fixed_delays() {
        let b = Backoff::exponential(ms(100), 2.0);
        let draw = |j: Jitter| {
            let mut rng = SmallRng::seed_from_u64(7);
            let mut prev = Duration::ZERO;
            (1..=4)
                .map(|n| {
                    prev = j.apply(b.delay(n), &b, prev, &mut rng);
                    prev
                })
                .collect::<Vec<_>>()
        };
        for j in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(0.1),
        ] {
            assert_eq!(draw(j), draw(j), "{j:?}");
        }
        assert_eq!(draw(Jitter::None), [ms(100), ms(200), ms(400), ms(800)]);
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            (0.0..=1.0f64).prop_map(Jitter::Proportional),
        ]
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(
            j in jitter(),
            initial_ms in 0u64..10_000,
            factor in 1.0f64..4.0,
            cap_ms in 0u64..120_000,
            retry in 1u32..64,
            prev_ms in 0u64..200_000,
            seed: u64,
        ) {
            let b = Backoff::exponential(ms(initial_ms), factor).with_cap(ms(cap_ms.max(initial_ms)));
            let d = b.delay(retry);
            prop_assert!(d >= b.initial().min(b.cap()) && d <= b.cap());
            let prev = ms(prev_ms);
            let (lo, hi) = j.bounds(d, &b, prev);
            prop_assert!(lo <= hi);
            prop_assert!(hi <= b.cap());
            let mut rng = SmallRng::seed_from_u64(seed);
            let got = j.apply(d, &b, prev, &mut rng);
            prop_assert!(got >= lo && got <= hi, "{got:?} outside {lo:?}..={hi:?}");
            // The bounds are those the table documents.
            let dn = d.as_nanos() as f64;
            match j {
                Jitter::None => prop_assert_eq!(got, d),
                Jitter::Full => prop_assert!(got <= d),
                Jitter::Equal => prop_assert!(got >= d / 2 && got <= d),
                Jitter::Decorrelated => {
                    let p = if prev.is_zero() { b.initial() } else { prev };
                    prop_assert!(got >= b.initial().min(b.cap()));
                    prop_assert!(got <= (p * 3).max(b.initial()));
                }
                Jitter::Proportional(f) => {
                    let g = got.as_nanos() as f64;
                    prop_assert!(g >= (dn * (1.0 - f)).round() - 0.5);
                    prop_assert!(g <= (dn * (1.0 + f)).round() + 0.5);
                }
            }
        }
    }
}
