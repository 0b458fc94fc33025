//! Where jitter's randomness comes from: a seed, or the user's factory. Never a thread rng.

use std::fmt;
use std::sync::Arc;

use palisade_core::sync::atomic::{AtomicU64, Ordering};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// A source of rngs, one per jittered delay (only failures draw).
pub(crate) enum RngSource {
    /// Rng number n is seeded with `seed` mixed with n: the same seed and the same order of
    /// failures give the same delays.
    Seeded { seed: u64, drawn: AtomicU64 },
    /// The user's factory.
    Factory(Arc<dyn Fn() -> SmallRng + Send + Sync>),
}

impl RngSource {
    pub(crate) fn seeded(seed: u64) -> Self {
        RngSource::Seeded {
            seed,
            drawn: AtomicU64::new(0),
        }
    }

    /// A source seeded once from the operating system (so that a fleet of processes does not
    /// jitter in step), falling back to a fixed seed if the OS has no randomness to give.
    pub(crate) fn from_entropy() -> Self {
        let seed = SmallRng::try_from_os_rng()
            .map(|mut rng| rng.next_u64())
            .unwrap_or(0x5EED_5EED_5EED_5EED);
        Self::seeded(seed)
    }

    /// The rng for the next delay.
    pub(crate) fn next(&self) -> SmallRng {
        match self {
            RngSource::Seeded { seed, drawn } => {
                let n = drawn.fetch_add(1, Ordering::Relaxed);
                SmallRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
            RngSource::Factory(f) => f(),
        }
    }
}

impl fmt::Debug for RngSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RngSource::Seeded { seed, .. } => f.debug_struct("Seeded").field("seed", seed).finish(),
            RngSource::Factory(_) => f.write_str("Factory"),
        }
    }
}
