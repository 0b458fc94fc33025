//! [`WatchLayer`]: counts a dependency's calls, failures and latency for the monitor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use palisade_core::sync::CachePadded;
use palisade_core::{BoxError, Category, attempt, class_of};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

/// Stripes of counters: service instances (cloned per connection or worker) spread over them,
/// so threads rarely write the same cache line.
const STRIPES: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Counts {
    calls: AtomicU64,
    failures: AtomicU64,
    /// Of the failures, the refusals: counted in `calls` and `failures`, not in `micros`.
    refused: AtomicU64,
    micros: AtomicU64,
    /// The slowest answered call since the monitor last took it, in microseconds.
    slowest: AtomicU64,
}

/// Totals since the watch was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) refused: u64,
    pub(crate) micros: u64,
}

impl Totals {
    pub(crate) fn since(self, earlier: Totals) -> Totals {
        Totals {
            calls: self.calls.wrapping_sub(earlier.calls),
            failures: self.failures.wrapping_sub(earlier.failures),
            refused: self.refused.wrapping_sub(earlier.refused),
            micros: self.micros.wrapping_sub(earlier.micros),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Watched {
    stripes: [CachePadded<Counts>; STRIPES],
    next: AtomicUsize,
}

impl Watched {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Watched {
            stripes: Default::default(),
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % STRIPES
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        // The counters are free-running and wrap (atomics do): so do their sums, and
        // `since` takes the difference modulo 2^64.
        for s in &self.stripes {
            t.calls = t.calls.wrapping_add(s.calls.load(Ordering::Relaxed));
            t.failures = t.failures.wrapping_add(s.failures.load(Ordering::Relaxed));
            t.refused = t.refused.wrapping_add(s.refused.load(Ordering::Relaxed));
            t.micros = t.micros.wrapping_add(s.micros.load(Ordering::Relaxed));
        }
        t
    }

    /// The slowest call answered since the last time it was taken, in microseconds (0 with
    /// none): taken by each check, so that one slow call among a check's calls can be told
    /// from a slowdown. A call that ends while it is taken may land in either check.
    pub(crate) fn take_slowest(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.slowest.swap(0, Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
impl Watched {
    /// Records `calls` answered calls of `micros` each, as the watch records them.
    pub(crate) fn add_timed(&self, calls: u64, micros: u64) {
        for _ in 0..calls {
            self.stripes[0].record(std::time::Duration::from_micros(micros), false);
        }
    }

    /// Adds to the counters directly, as a check reading them while calls run may find them:
    /// failures and refusals whose calls it has not counted yet.
    pub(crate) fn add(&self, calls: u64, failures: u64, refused: u64) {
        let s = &self.stripes[0];
        s.calls.fetch_add(calls, Ordering::Relaxed);
        s.failures.fetch_add(failures, Ordering::Relaxed);
        s.refused.fetch_add(refused, Ordering::Relaxed);
    }
}

/// Counts the calls of the service it wraps, their failures and their latency, for a
/// [`HealthMonitor`](super::HealthMonitor)'s anomaly detection. Made by
/// [`HealthMonitor::watch`](super::HealthMonitor::watch). Each call counts by its outcome:
///
/// - a response, or an error the dependency answered that is not its failure (a
///   [`Class`](palisade_core::Class) that does not
///   [count against health](palisade_core::Class::counts_against_health): bad input, not
///   found, refused credentials, a rate limit): a call, and its latency;
/// - an error that counts against health, or an attempt dropped by a per-attempt timeout
///   above (a hang is the worst failure): a call, a failure, and its latency;
/// - a refusal ([`Category::Rejected`]: an open breaker, a load shed, a feature turned off,
///   below the watch): a call and a failure, since the caller got no answer, but no latency:
///   it took no time at the dependency, and counting its near-zero time would pull the mean
///   down and make the normal latency look like a rise once calls go through again;
/// - the caller's own cancellation ([`Category::Cancelled`]), or a call its caller drops
///   (cut by a whole-call deadline above, or no longer wanted): nothing, as it is nobody's
///   verdict on the dependency.
///
/// Place it where the outcome is the one to judge: above a retry layer it sees what callers
/// got (a call the breaker refused, after its retries, is a failure there); below one, each
/// attempt; below the breaker, what reached the dependency, where there are no refusals. A
/// call reads the clock twice and adds to at most four relaxed counters on its instance's
/// stripe; it allocates nothing and takes no lock.
#[derive(Clone, Debug)]
pub struct WatchLayer {
    pub(crate) watched: Arc<Watched>,
}

impl<S> Layer<S> for WatchLayer {
    type Service = Watch<S>;

    fn layer(&self, inner: S) -> Watch<S> {
        Watch {
            inner,
            stripe: self.watched.pick(),
            watched: self.watched.clone(),
        }
    }
}

/// The service of [`WatchLayer`].
///
/// # Panics
/// `Watch` reserves nothing in `poll_ready`: `poll_ready`, `call` and polls of its response
/// future after completion are forwarded to the inner service and future, whose own contract
/// applies.
#[derive(Debug)]
pub struct Watch<S> {
    inner: S,
    watched: Arc<Watched>,
    stripe: usize,
}

impl<S: Clone> Clone for Watch<S> {
    fn clone(&self) -> Self {
        Watch {
            inner: self.inner.clone(),
            watched: self.watched.clone(),
            stripe: self.watched.pick(),
        }
    }
}

impl<S, Req> Service<Req> for Watch<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = WatchFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        WatchFuture {
            inner: self.inner.call(req),
            watched: self.watched.clone(),
            stripe: self.stripe,
            start: Instant::now(),
            done: false,
        }
    }
}

pin_project! {
    /// The response future of [`Watch`].
    #[derive(Debug)]
    pub struct WatchFuture<F> {
        #[pin]
        inner: F,
        watched: Arc<Watched>,
        stripe: usize,
        start: Instant,
        done: bool,
    }

    impl<F> PinnedDrop for WatchFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // An attempt dropped by its per-attempt timeout is a failure of the dependency
            // (a hang is the worst kind); one dropped by its caller is nobody's verdict.
            if !*this.done && attempt::timing_out() {
                this.watched.stripes[*this.stripe].record(this.start.elapsed(), true);
            }
        }
    }
}

impl Counts {
    /// A call that failed without reaching the dependency: no latency to learn from.
    #[inline]
    fn record_refused(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn record(&self, elapsed: std::time::Duration, failed: bool) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        // A read first: most calls are not the slowest, and leave the line unwritten.
        if micros > self.slowest.load(Ordering::Relaxed) {
            self.slowest.fetch_max(micros, Ordering::Relaxed);
        }
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<F, T, E> Future for WatchFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx)).map_err(Into::into);
        *this.done = true;
        let counts = &this.watched.stripes[*this.stripe];
        match &out {
            Ok(_) => counts.record(this.start.elapsed(), false),
            Err(err) => {
                let class = class_of(err);
                match class.category {
                    // The caller gave up: as a call it drops, nobody's verdict.
                    Category::Cancelled => {}
                    // Refused below the watch: the caller failed, the dependency took no time.
                    Category::Rejected => counts.record_refused(),
                    _ => counts.record(this.start.elapsed(), class.counts_against_health()),
                }
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters are free-running: each wraps at `u64::MAX` (atomics do), and the totals
    /// and the difference between two checks wrap with them instead of overflowing.
    #[test]
    fn counters_that_wrap_still_give_the_counts_since_the_last_check() {
        let watched = Watched::new();
        watched.stripes[0]
            .micros
            .store(u64::MAX - 10, Ordering::Relaxed);
        watched.stripes[0].calls.store(u64::MAX, Ordering::Relaxed);
        watched.stripes[1].micros.store(5, Ordering::Relaxed);
        watched.stripes[4]
            .refused
            .store(u64::MAX, Ordering::Relaxed);
        let before = watched.totals();
        watched.stripes[2].record(std::time::Duration::from_micros(40), true);
        watched.stripes[3].record(std::time::Duration::from_micros(60), false);
        watched.stripes[4].record_refused();
        let delta = watched.totals().since(before);
        assert_eq!(
            delta,
            Totals {
                calls: 3,
                failures: 2,
                refused: 1,
                micros: 100
            }
        );
    }
}
