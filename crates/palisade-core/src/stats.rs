//! [`ErrorStats`]: an error aggregator over a sliding window, in fixed memory and without locks.

use crate::sync::atomic::Ordering;
use crate::window::SlotRing;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Category, Class, ConfigError};

const CATEGORIES: usize = Category::ALL.len();

/// Failures per category over a sliding time window: counts, error rate, pattern detection.
///
/// The window is a fixed ring of buckets (default: 300 s in 60 buckets of 5 s), so memory does
/// not grow with traffic and the window slides with bucket resolution. Recording is two or
/// three atomic operations and never locks; reading sums the buckets. Time is passed in as a
/// [`tokio::time::Instant`], so the aggregator works under the paused clock and in the
/// simulator.
///
/// A bucket that is being recycled while another thread records into it may, in that instant,
/// lose the other thread's sample: counts are exact for one writer and may be short by a few
/// samples per bucket rotation under contention, never over.
///
/// ```
/// use palisade_core::{Category, Class, ErrorStats};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let start = Instant::now();
/// let stats = ErrorStats::builder().window(Duration::from_secs(60)).build(start)?;
/// for _ in 0..5 {
///     stats.record(Class::new(Category::RateLimited), start);
/// }
/// assert_eq!(stats.count(Category::RateLimited, start), 5);
/// assert!(stats.is_pattern_detected(Category::RateLimited, 5, start));
/// // A minute later the window has slid past them.
/// let later = start + Duration::from_secs(61);
/// assert_eq!(stats.count(Category::RateLimited, later), 0);
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
pub struct ErrorStats {
    origin: Instant,
    bucket_nanos: u64,
    window: Duration,
    ring: SlotRing<CATEGORIES>,
}

impl fmt::Debug for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorStats")
            .field("window", &self.window)
            .field("buckets", &self.ring.len())
            .finish()
    }
}

/// Configures an [`ErrorStats`]; made by [`ErrorStats::builder`].
#[derive(Clone, Copy, Debug)]
pub struct ErrorStatsBuilder {
    window: Duration,
    buckets: usize,
}

impl ErrorStatsBuilder {
    /// How far back the statistics look (default 300 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets divide the window (default 60): the resolution of the slide.
    pub fn buckets(mut self, buckets: usize) -> Self {
        self.buckets = buckets;
        self
    }

    /// Builds the aggregator, counting time from `origin`.
    ///
    /// # Errors
    /// `window` must be at least one nanosecond and less than 584 years (`u64::MAX`
    /// nanoseconds) per bucket; `buckets` must be between 1 and 65 536.
    pub fn build(self, origin: Instant) -> Result<ErrorStats, ConfigError> {
        if self.buckets == 0 || self.buckets > 65_536 {
            return Err(ConfigError::new("buckets", "must be between 1 and 65536"));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new("window", "must be greater than zero"));
        }
        let bucket_nanos = u64::try_from(self.window.as_nanos() / self.buckets as u128)
            .map_err(|_| ConfigError::new("window", "must be shorter than 584 years per bucket"))?;
        if bucket_nanos == 0 {
            return Err(ConfigError::new(
                "window",
                "must be at least one nanosecond per bucket",
            ));
        }
        Ok(ErrorStats {
            origin,
            bucket_nanos,
            // In u128: the window may exceed `u64::MAX` nanoseconds even though a bucket does
            // not, and it is never longer than the `Duration` it was cut from.
            window: nanos(u128::from(bucket_nanos) * self.buckets as u128),
            ring: SlotRing::new(self.buckets),
        })
    }
}

/// A whole number of nanoseconds that fits in a `Duration`.
fn nanos(n: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    Duration::new(
        u64::try_from(n / PER_SEC).unwrap_or(u64::MAX),
        (n % PER_SEC) as u32,
    )
}

/// What an [`ErrorStats`] saw over its window, at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ErrorSnapshot {
    /// Failures per category, indexed by [`Category::index`].
    pub counts: [u64; CATEGORIES],
    /// All failures in the window.
    pub total: u64,
    /// Failures per second over the window.
    pub rate_per_second: f64,
    /// The window's length.
    pub window: Duration,
}

impl ErrorSnapshot {
    /// The failures of one category.
    pub fn count(&self, category: Category) -> u64 {
        self.counts[category.index()]
    }
}

impl ErrorStats {
    /// A builder with the defaults: a 300 s window in 60 buckets.
    pub fn builder() -> ErrorStatsBuilder {
        ErrorStatsBuilder {
            window: Duration::from_secs(300),
            buckets: 60,
        }
    }

    /// The window, rounded down to a whole number of nanoseconds per bucket.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn slot(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX - 2)
    }

    /// Forgets every failure counted so far, as if the aggregator were new (its window and
    /// buckets stay as configured). Lock-free: a bucket that a concurrent [`record`] is
    /// recycling at that moment is left to it, and holds only that newer sample afterwards.
    ///
    /// [`record`]: ErrorStats::record
    pub fn clear(&self) {
        self.ring.clear();
    }

    /// Records one failure of `class` at `now`.
    pub fn record(&self, class: Class, now: Instant) {
        self.record_category(class.category, now);
    }

    /// Records one failure of `category` at `now`.
    pub fn record_category(&self, category: Category, now: Instant) {
        if let Some(counts) = self.ring.enter(self.slot(now)) {
            counts[category.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sums each category over the buckets inside the window ending at `now`.
    fn sum(&self, now: Instant) -> [u64; CATEGORIES] {
        self.ring.sum(self.slot(now))
    }

    /// Failures of `category` in the window ending at `now`.
    pub fn count(&self, category: Category, now: Instant) -> u64 {
        self.sum(now)[category.index()]
    }

    /// All failures in the window ending at `now`.
    pub fn total(&self, now: Instant) -> u64 {
        self.sum(now).iter().sum()
    }

    /// Failures per second over the window ending at `now`.
    pub fn error_rate(&self, now: Instant) -> f64 {
        self.total(now) as f64 / self.window.as_secs_f64()
    }

    /// Whether `category` reached `threshold` failures in the window ending at `now`: a
    /// pattern worth an alert (5 is a common threshold).
    pub fn is_pattern_detected(&self, category: Category, threshold: u64, now: Instant) -> bool {
        self.count(category, now) >= threshold
    }

    /// Everything at once.
    pub fn snapshot(&self, now: Instant) -> ErrorSnapshot {
        let counts = self.sum(now);
        let total = counts.iter().sum();
        ErrorSnapshot {
            counts,
            total,
            rate_per_second: total as f64 / self.window.as_secs_f64(),
            window: self.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(window_s: u64, buckets: usize, origin: Instant) -> ErrorStats {
        ErrorStats::builder()
            .window(Duration::from_secs(window_s))
            .buckets(buckets)
            .build(origin)
            .unwrap()
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let t = Instant::now();
        let e = ErrorStats::builder()
            .window(Duration::ZERO)
            .build(t)
            .unwrap_err();
        assert_eq!(e.field(), "window");
        let e = ErrorStats::builder().buckets(0).build(t).unwrap_err();
        assert_eq!(e.field(), "buckets");
        let e = ErrorStats::builder()
            .window(Duration::from_nanos(10))
            .buckets(20)
            .build(t)
            .unwrap_err();
        assert_eq!(e.field(), "window");
        // The bucket count's limits, exactly.
        let e = ErrorStats::builder().buckets(65_537).build(t).unwrap_err();
        assert_eq!(
            (e.field(), e.rule()),
            ("buckets", "must be between 1 and 65536")
        );
        let most = ErrorStats::builder()
            .window(Duration::from_secs(65_536))
            .buckets(65_536)
            .build(t)
            .unwrap();
        assert_eq!(most.window(), Duration::from_secs(65_536));
        assert_eq!(
            format!("{most:?}"),
            "ErrorStats { window: 65536s, buckets: 65536 }"
        );
        let one = ErrorStats::builder().buckets(1).build(t).unwrap();
        assert_eq!(one.window(), Duration::from_secs(300));
    }

    /// A window longer than `u64::MAX` nanoseconds in all (about 584 years) whose buckets each
    /// fit in one is valid: it is kept exactly, without overflowing (a panic in debug builds, a
    /// wrapped, far shorter window and a wrong error rate in release ones).
    #[test]
    fn a_window_of_centuries_does_not_overflow() {
        let t = Instant::now();
        let years = |n: u64| Duration::from_secs(n * 365 * 86_400);
        let s = ErrorStats::builder()
            .window(years(1_000))
            .buckets(60)
            .build(t)
            .unwrap();
        assert_eq!(s.window(), years(1_000));
        s.record_category(Category::Timeout, t);
        assert_eq!(s.count(Category::Timeout, t + years(900)), 1);
        assert!((s.error_rate(t) - 1.0 / years(1_000).as_secs_f64()).abs() < 1e-24);
        // The longest: each bucket just under 2^64 ns.
        let s = ErrorStats::builder()
            .window(Duration::MAX)
            .buckets(65_536)
            .build(t);
        assert_eq!(s.unwrap_err().field(), "window");
        let most = Duration::from_nanos(u64::MAX) * 65_536;
        let s = ErrorStats::builder()
            .window(most)
            .buckets(65_536)
            .build(t)
            .unwrap();
        assert_eq!(s.window(), most);
    }

    #[test]
    fn a_snapshot_counts_each_category() {
        let t = Instant::now();
        let s = ErrorStats::builder().build(t).unwrap();
        for _ in 0..3 {
            s.record_category(Category::Timeout, t);
        }
        s.record_category(Category::Network, t);
        let snap = s.snapshot(t);
        assert_eq!(snap.count(Category::Timeout), 3);
        assert_eq!(snap.count(Category::Network), 1);
        assert_eq!(snap.count(Category::ServerError), 0);
        assert_eq!(snap.total, 4);
    }

    #[test]
    fn clear_forgets_everything_and_counting_resumes() {
        let t0 = Instant::now();
        let s = stats(10, 10, t0);
        for i in 0..5 {
            s.record_category(Category::Timeout, t0 + Duration::from_secs(i));
            s.record_category(Category::ServerError, t0 + Duration::from_secs(i));
        }
        let t = t0 + Duration::from_secs(5);
        assert_eq!(s.total(t), 10);
        s.clear();
        assert_eq!(s.total(t), 0);
        assert_eq!(s.count(Category::Timeout, t), 0);
        // New failures count from zero, in buckets that held old ones too.
        s.record_category(Category::Timeout, t);
        s.record_category(Category::Timeout, t0 + Duration::from_secs(12));
        assert_eq!(s.count(Category::Timeout, t0 + Duration::from_secs(12)), 2);
        // Clearing an unused aggregator changes nothing.
        let fresh = stats(10, 10, t0);
        fresh.clear();
        fresh.record_category(Category::Network, t0);
        assert_eq!(fresh.total(t0), 1);
    }

    #[test]
    fn window_slides_bucket_by_bucket() {
        let t0 = Instant::now();
        let s = stats(10, 10, t0); // 1 s buckets
        for i in 0..10 {
            s.record_category(Category::Timeout, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            s.count(Category::Timeout, t0 + Duration::from_millis(9_999)),
            10
        );
        // Step past each boundary: one sample leaves per second.
        assert_eq!(s.count(Category::Timeout, t0 + Duration::from_secs(10)), 9);
        assert_eq!(
            s.count(Category::Timeout, t0 + Duration::from_millis(10_999)),
            9
        );
        assert_eq!(s.count(Category::Timeout, t0 + Duration::from_secs(11)), 8);
        assert_eq!(
            s.count(Category::Timeout, t0 + Duration::from_millis(18_999)),
            1
        );
        assert_eq!(s.count(Category::Timeout, t0 + Duration::from_secs(19)), 0);
        assert_eq!(s.count(Category::Network, t0), 0);
    }

    #[test]
    fn recycled_buckets_start_from_zero_and_late_samples_are_dropped() {
        let t0 = Instant::now();
        let s = stats(4, 4, t0);
        s.record_category(Category::Network, t0);
        s.record_category(Category::Network, t0);
        // Same bucket index, four slots later: the old counts are gone.
        let t4 = t0 + Duration::from_secs(4);
        s.record_category(Category::Network, t4);
        assert_eq!(s.count(Category::Network, t4), 1);
        // A sample stamped before the bucket's current slot is too old.
        s.record_category(Category::Network, t0);
        assert_eq!(s.count(Category::Network, t4), 1);
        // Idle for a long time: nothing stale is reported.
        assert_eq!(s.total(t0 + Duration::from_secs(1000)), 0);
    }

    #[test]
    fn rate_and_patterns() {
        let t0 = Instant::now();
        let s = ErrorStats::builder().build(t0).unwrap();
        assert_eq!(s.window(), Duration::from_secs(300));
        for _ in 0..4 {
            s.record(Class::new(Category::RateLimited), t0);
        }
        assert!(!s.is_pattern_detected(Category::RateLimited, 5, t0));
        s.record(Class::new(Category::RateLimited), t0);
        s.record(Class::new(Category::ServerError), t0);
        assert!(s.is_pattern_detected(Category::RateLimited, 5, t0));
        let snap = s.snapshot(t0);
        assert_eq!(snap.total, 6);
        assert_eq!(snap.count(Category::ServerError), 1);
        assert!((snap.rate_per_second - 6.0 / 300.0).abs() < 1e-12);
        assert!((s.error_rate(t0) - 0.02).abs() < 1e-12);
    }

    #[test]
    fn two_threads_never_overcount() {
        let t0 = Instant::now();
        let s = std::sync::Arc::new(stats(10, 10, t0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        s.record_category(Category::Timeout, t0 + Duration::from_millis(i / 4));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // All samples fall in the window ending at 5 s: never more than 40 000. Samples are lost
        // only while the other thread clears a bucket; each of the 5 slots is cleared once, and
        // the clearing thread keeps all of its own 4 000 samples for that slot however long it is
        // preempted. So at least half of them count, whatever the scheduler does.
        let n = s.count(Category::Timeout, t0 + Duration::from_secs(5));
        assert!(n <= 40_000, "{n}");
        assert!(n >= 20_000, "{n}");
    }

    proptest! {
        /// Against a reference model that keeps every sample.
        #[test]
        fn matches_a_model(steps in proptest::collection::vec((0u64..3_000, 0usize..13), 1..200),
                           query in 0u64..40_000) {
            let t0 = Instant::now();
            let s = stats(10, 10, t0);
            let mut t = 0u64;
            let mut samples = Vec::new();
            for (dt, cat) in steps {
                t += dt;
                let category = Category::ALL[cat];
                s.record_category(category, t0 + Duration::from_millis(t));
                samples.push((t, category));
            }
            let q = t + query;
            // Bucketed model: a sample counts while its 1 s slot is among the newest 10.
            let slot_q = q / 1000;
            for category in Category::ALL {
                let model = samples.iter().filter(|(ts, c)| *c == category && ts / 1000 + 10 > slot_q).count() as u64;
                prop_assert_eq!(s.count(category, t0 + Duration::from_millis(q)), model);
            }
        }
    }
}
