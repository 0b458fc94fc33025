//! Seeded, lock-free randomness: every call gets its own stream, derived from the seed and the
//! call's position in the order calls reached the layer.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random numbers of one call.
///
/// The call's index is taken from the shared counter only when the first number is drawn, so a
/// call that needs no randomness costs no atomic operation; for a given seed the same sequence
/// of calls draws the same numbers.
#[derive(Debug)]
pub(crate) struct Draws<'a> {
    seed: u64,
    counter: &'a AtomicU64,
    state: Option<u64>,
}

impl<'a> Draws<'a> {
    pub(crate) fn new(seed: u64, counter: &'a AtomicU64) -> Self {
        Draws {
            seed,
            counter,
            state: None,
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let state = match self.state {
            Some(s) => s,
            None => {
                let index = self.counter.fetch_add(1, Ordering::Relaxed);
                mix(self.seed ^ mix(index.wrapping_add(1).wrapping_mul(GOLDEN)))
            }
        };
        let state = state.wrapping_add(GOLDEN);
        self.state = Some(state);
        mix(state)
    }

    /// A number uniformly distributed in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `rate` (`rate` in `0..=1`); draws nothing at 0 or 1.
    pub(crate) fn hit(&mut self, rate: f64) -> bool {
        if rate >= 1.0 {
            true
        } else if rate <= 0.0 {
            false
        } else {
            self.unit() < rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let xs: Vec<u64> = (0..100).map(|_| Draws::new(7, &a).next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| Draws::new(7, &b).next_u64()).collect();
        assert_eq!(xs, ys);
        let c = AtomicU64::new(0);
        let zs: Vec<u64> = (0..100).map(|_| Draws::new(8, &c).next_u64()).collect();
        assert_ne!(xs, zs);
    }

    #[test]
    fn unit_is_in_range_and_roughly_uniform() {
        let counter = AtomicU64::new(0);
        let mut sum = 0.0;
        let n = 10_000;
        for _ in 0..n {
            let mut d = Draws::new(1, &counter);
            let u = d.unit();
            assert!((0.0..1.0).contains(&u));
            let v = d.unit();
            assert_ne!(u, v, "two draws of one call differ");
            sum += u;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn certain_rates_draw_nothing() {
        let counter = AtomicU64::new(0);
        let mut d = Draws::new(1, &counter);
        assert!(d.hit(1.0));
        assert!(!d.hit(0.0));
        assert_eq!(counter.load(Ordering::Relaxed), 0);
        d.hit(0.5);
        d.hit(0.5);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
    }
}
