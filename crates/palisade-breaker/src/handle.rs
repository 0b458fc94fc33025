//! [`BreakerHandle`]: manual control and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::State;
use crate::state::{Core, STRIPES};

/// One stripe: its own reference count, so the futures of service instances on different
/// threads do not contend on one. Aligned so that two stripes never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Stripe {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
}

/// What a breaker's layer, services, futures and handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Core,
    pub(crate) origin: Instant,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// Nanoseconds since the origin (saturating far below the guard's sentinels).
    pub(crate) fn now_ns(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.origin)
            .as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).min(u64::MAX / 2)
    }
}

/// The stripes of one breaker, owned by its layer and services (not by `Shared`, which the
/// stripes point to).
///
/// Each service instance takes a stripe when it is made or cloned, round robin, and its calls
/// count there: instances on different threads (a clone per connection or per worker, as tower
/// services are used) write different cache lines, and the hot path reads no thread-local.
#[derive(Debug)]
pub(crate) struct Stripes {
    stripes: [Arc<Stripe>; STRIPES],
    next: AtomicUsize,
}

impl Stripes {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Stripes> {
        Arc::new(Stripes {
            stripes: std::array::from_fn(|index| {
                Arc::new(Stripe {
                    shared: shared.clone(),
                    index,
                })
            }),
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.stripes[0].shared
    }

    /// The next stripe, round robin: for a new service instance.
    pub(crate) fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % STRIPES
    }

    /// Stripe number `index` (taken modulo the number of stripes).
    #[inline]
    pub(crate) fn get(&self, index: usize) -> &Arc<Stripe> {
        &self.stripes[index % STRIPES]
    }
}

/// Manual control and metrics of one breaker. Cheap to clone.
///
/// Operator actions take effect at once for every service sharing the breaker:
/// [`isolate`](Self::isolate) forces it open (rejecting) until [`close`](Self::close) or
/// [`reset`](Self::reset); [`bypass`](Self::bypass) lets everything through while still
/// counting, until [`close`](Self::close) or [`reset`](Self::reset).
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A breaker's numbers at one instant ([`BreakerHandle::metrics`]). `#[non_exhaustive]`: a
/// number may be added.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Successful calls since start (or the last reset).
    pub successes: u64,
    /// Calls that failed in a way that counts against health.
    pub failures: u64,
    /// Calls rejected without calling the dependency.
    pub rejections: u64,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Outcomes in the rate window, when a rate rule is configured.
    pub window_calls: Option<u32>,
    /// The fraction of the window's outcomes that failed (0.0 to 1.0), when a rate rule is
    /// configured and the window holds an outcome.
    pub failure_ratio: Option<f64>,
    /// The fraction of the window's outcomes that were slow (0.0 to 1.0), when a rate rule is
    /// configured and the window holds an outcome.
    pub slow_call_ratio: Option<f64>,
    /// How long it has been in this state.
    pub time_in_state: Duration,
    /// While open: how long until it probes.
    pub retry_after: Option<Duration>,
    /// Consecutive re-openings (failed probes) behind the current open period.
    pub reopens: u32,
}

impl BreakerHandle {
    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.core.name
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.shared.core.state()
    }

    /// Forces the breaker open (rejecting every call) until closed or reset by hand.
    pub fn isolate(&self) {
        self.shared
            .core
            .force(State::Isolated, self.shared.now_ms());
    }

    /// Closes the breaker at once, clearing its failure counts.
    pub fn close(&self) {
        self.shared.core.force(State::Closed, self.shared.now_ms());
    }

    /// Opens the breaker now for one open period, as if it had tripped (it then probes as
    /// usual). Used to propagate an open parent to its children.
    pub fn trip(&self) {
        self.shared.core.trip_now(self.shared.now_ms());
    }

    /// Takes the breaker out of the way: it lets every call through ([`State::Bypassed`])
    /// while still counting outcomes, until closed or reset by hand.
    pub fn bypass(&self) {
        self.shared
            .core
            .force(State::Bypassed, self.shared.now_ms());
    }

    /// Back to a new breaker: closed, every count cleared.
    pub fn reset(&self) {
        self.shared.core.reset(self.shared.now_ms());
    }

    /// A snapshot of the numbers.
    pub fn metrics(&self) -> Metrics {
        let n = self.shared.core.numbers(self.shared.now_ms());
        let rate = |part: u32| {
            n.window
                .filter(|w| w.calls > 0)
                .map(|w| f64::from(part) / f64::from(w.calls))
        };
        Metrics {
            state: n.state,
            successes: n.successes,
            failures: n.failures,
            rejections: n.rejections,
            consecutive_failures: n.consecutive_failures,
            window_calls: n.window.map(|w| w.calls),
            failure_ratio: n.window.and_then(|w| rate(w.failures)),
            slow_call_ratio: n.window.and_then(|w| rate(w.slow)),
            time_in_state: Duration::from_millis(n.in_state_ms),
            retry_after: (n.state == State::Open)
                .then_some(n.open_for_ms)
                .flatten()
                .map(Duration::from_millis),
            reopens: n.reopens,
        }
    }
}
