//! [`ChaosHandle`]: run-time switch and counters shared by a layer, its clones and its services.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_core::BoxError;
use tokio::sync::Notify;

use crate::bucket::Bucket;

/// State shared by every clone of a layer and every service it made.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) enabled: AtomicBool,
    /// Woken by [`ChaosHandle::disable`]: every call a fault holds (a delay, a hang, an
    /// outcome after a wait) waits on it too, and goes on as a passthrough when it fires.
    pub(crate) switched_off: Arc<Notify>,
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
            switched_off: Arc::new(Notify::new()),
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

    /// Recounts a call whose injected outcome (`None`: a hang) a disable replaced with the
    /// inner service's answer: it was held, then the inner service answered, so it counts as
    /// delayed.
    pub(crate) fn fault_ended_by_disable<Res>(&self, outcome: Option<&Result<Res, BoxError>>) {
        let was = match outcome {
            None => &self.hung,
            Some(Ok(_)) => &self.responded,
            Some(Err(_)) => &self.failed,
        };
        bump(&self.delayed);
        was.fetch_sub(1, Ordering::Relaxed);
        tracing::trace!("chaos: disabled, passing a held call on");
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Switches injection on and off at run time and counts what was injected.
///
/// Every clone of a [`ChaosLayer`](crate::ChaosLayer), every service it made and every clone of
/// those share one handle's state: disabling it turns all of them into plain passthroughs at
/// once, calls already in flight included (see [`disable`](Self::disable)). Get it with
/// [`ChaosLayer::handle`](crate::ChaosLayer::handle) or [`Chaos::handle`](crate::Chaos::handle).
#[derive(Clone, Debug)]
pub struct ChaosHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ChaosHandle {
    /// Turns injection on, for the calls made from now on.
    ///
    /// Calls whose faults an earlier [`disable`](Self::disable) ended stay passthroughs.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Relaxed);
    }

    /// Turns injection off: new calls go straight to the inner service, and the faults of
    /// calls in flight end at once.
    ///
    /// A call waiting out an added delay stops waiting and returns the inner service's answer
    /// (the inner service was called when the call was made). A call held by a hang, or by a
    /// failure or response with a wait ([`Fault::after`](crate::Fault::after)), stops waiting
    /// and is passed to the inner service, which answers it; it counts as
    /// [`delayed`](ChaosCounts::delayed) instead. Failures and responses returned at once,
    /// and outcomes already returned, are not undone. This is the kill switch of a game day:
    /// however long the latency or the hang, nothing injected outlives it.
    ///
    /// ```
    /// use palisade_chaos::{ChaosLayer, Fault, Latency};
    /// use palisade_core::BoxError;
    /// use std::time::Duration;
    /// use tokio::time::{Instant, sleep};
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // An hour of added latency on every call.
    /// let chaos = ChaosLayer::builder()
    ///     .fault(Fault::delay(Latency::Fixed(Duration::from_secs(3600))))
    ///     .build()?;
    /// let handle = chaos.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(chaos)
    ///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    ///
    /// let start = Instant::now();
    /// let switch_off = async {
    ///     sleep(Duration::from_secs(1)).await;
    ///     handle.disable();
    /// };
    /// // The call is in flight when the layer is switched off, and answers then.
    /// let (answer, ()) = tokio::join!(svc.oneshot(7), switch_off);
    /// assert_eq!(answer?, 7);
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn disable(&self) {
        self.shared.enabled.store(false, Ordering::Relaxed);
        // After the store: a call that registered before this wakes up; one that registers
        // after it reads the switch again and passes through.
        self.shared.switched_off.notify_waiters();
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
/// failed counts as failed. A hang, or a failure or response with a wait, that
/// [`ChaosHandle::disable`] ended before it took effect moves to `delayed`: the call was held,
/// then the inner service answered. `over_capacity` counts, in addition, the calls a
/// [`Capacity`](crate::Capacity) refused, whatever its effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChaosCounts {
    /// Calls failed with an [`Injected`](crate::error::Injected) error.
    pub failed: u64,
    /// Calls answered with an injected response.
    pub responded: u64,
    /// Calls delayed, then passed to the inner service (including calls whose hang, failure or
    /// response a disable ended).
    pub delayed: u64,
    /// Calls made to hang.
    pub hung: u64,
    /// Calls beyond a capacity: once each, however many capacities they were beyond.
    pub over_capacity: u64,
}

impl ChaosCounts {
    /// Calls injected upon in any way: `failed + responded + delayed + hung`.
    pub fn total(&self) -> u64 {
        self.failed + self.responded + self.delayed + self.hung
    }
}
