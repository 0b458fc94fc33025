//! [`ChaosHandle`]: run-time switch and counters shared by a layer, its clones and its services.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::bucket::Bucket;

/// State shared by every clone of a layer and every service it made.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) enabled: AtomicBool,
    /// How many calls drew random numbers: the position of the next one in the call order.
    pub(crate) draws: AtomicU64,
    /// One bucket per capacity, in order. Only locked on the enabled path, for a few
    /// arithmetic operations.
    pub(crate) buckets: Vec<Mutex<Bucket>>,
    pub(crate) failed: AtomicU64,
    pub(crate) responded: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) hung: AtomicU64,
    pub(crate) over_capacity: AtomicU64,
}

impl Shared {
    pub(crate) fn new(enabled: bool, capacities: usize) -> Self {
        Shared {
            enabled: AtomicBool::new(enabled),
            draws: AtomicU64::new(0),
            buckets: (0..capacities)
                .map(|_| Mutex::new(Bucket::default()))
                .collect(),
            failed: AtomicU64::new(0),
            responded: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            over_capacity: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Switches injection on and off at run time and counts what was injected.
///
/// Every clone of a [`ChaosLayer`](crate::ChaosLayer), every service it made and every clone of
/// those share one handle's state: disabling it turns all of them into plain passthroughs at
/// once. Get it with [`ChaosLayer::handle`](crate::ChaosLayer::handle) or
/// [`Chaos::handle`](crate::Chaos::handle).
#[derive(Clone, Debug)]
pub struct ChaosHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ChaosHandle {
    /// Turns injection on.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Relaxed);
    }

    /// Turns injection off: calls go straight to the inner service.
    pub fn disable(&self) {
        self.shared.enabled.store(false, Ordering::Relaxed);
    }

    /// Whether injection is on.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_enabled()
    }

    /// What was injected so far.
    pub fn injected(&self) -> ChaosCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.shared;
        ChaosCounts {
            failed: load(&s.failed),
            responded: load(&s.responded),
            delayed: load(&s.delayed),
            hung: load(&s.hung),
            over_capacity: load(&s.over_capacity),
        }
    }
}

/// Counts of injected outcomes, from [`ChaosHandle::injected`].
///
/// Each call injected upon is counted once, by its final outcome, in `failed`, `responded`,
/// `delayed` (latency added, then the inner service answered) or `hung`; a call delayed and then
/// failed counts as failed. `over_capacity` counts, in addition, the calls a
/// [`Capacity`](crate::Capacity) refused, whatever its effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChaosCounts {
    /// Calls failed with an [`Injected`](crate::error::Injected) error.
    pub failed: u64,
    /// Calls answered with an injected response.
    pub responded: u64,
    /// Calls delayed, then passed to the inner service.
    pub delayed: u64,
    /// Calls made to hang.
    pub hung: u64,
    /// Calls beyond a capacity.
    pub over_capacity: u64,
}

impl ChaosCounts {
    /// Calls injected upon in any way: `failed + responded + delayed + hung`.
    pub fn total(&self) -> u64 {
        self.failed + self.responded + self.delayed + self.hung
    }
}
