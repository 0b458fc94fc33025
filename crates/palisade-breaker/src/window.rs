//! Outcome windows: a count window that truly slides over the last N outcomes, and a time
//! window of fixed buckets. Both are fixed memory and lock-free.

use palisade_core::window::SlotRing;

use palisade_core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const EMPTY: u8 = 0;
const SUCCESS: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

/// What a window holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Outcomes in the window.
    pub(crate) calls: u32,
    /// Failures among them.
    pub(crate) failures: u32,
    /// Slow calls among them (successful or not).
    pub(crate) slow: u32,
}

fn code(failure: bool, slow: bool) -> u8 {
    (if failure { FAILURE } else { SUCCESS }) | if slow { SLOW } else { 0 }
}

/// The last `n` outcomes: each record replaces the oldest, and running counts are adjusted by
/// exactly what was replaced, so the window slides one outcome at a time.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    pub(crate) fn new(n: usize) -> Self {
        CountWindow {
            ring: (0..n).map(|_| AtomicU8::new(EMPTY)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    pub(crate) fn record(&self, failure: bool, slow: bool) -> Counts {
        let new = code(failure, slow);
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % self.ring.len() as u64) as usize;
        let old = self.ring[i].swap(new, Ordering::AcqRel);
        if old == EMPTY {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        adjust(&self.failures, old & FAILURE != 0, failure);
        adjust(&self.slow, old & SLOW != 0, slow);
        self.counts()
    }

    /// Whether the window is full and holds only successes that were not slow: recording
    /// another such success would change nothing.
    #[inline]
    pub(crate) fn all_successes(&self) -> bool {
        self.failures.load(Ordering::Relaxed) == 0
            && self.slow.load(Ordering::Relaxed) == 0
            && self.calls.load(Ordering::Relaxed) as usize == self.ring.len()
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        for slot in self.ring.iter() {
            let old = slot.swap(EMPTY, Ordering::AcqRel);
            if old != EMPTY {
                self.calls.fetch_sub(1, Ordering::Relaxed);
                adjust(&self.failures, old & FAILURE != 0, false);
                adjust(&self.slow, old & SLOW != 0, false);
            }
        }
    }
}

/// Moves a counter from `was` to `now` (one of them set): +1, −1 or nothing.
fn adjust(counter: &AtomicU32, was: bool, now: bool) {
    match (was, now) {
        (false, true) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Outcomes over the last `buckets × width` of time, in fixed buckets: O(1) per record,
/// O(buckets) per read, memory independent of traffic. The buckets are palisade-core's
/// [`SlotRing`] (shared with its `ErrorStats`), with three counters: calls, failures, slow.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width_ms: u64,
    ring: SlotRing<3>,
}

impl TimeWindow {
    pub(crate) fn new(buckets: usize, width_ms: u64) -> Self {
        TimeWindow {
            width_ms: width_ms.max(1),
            ring: SlotRing::new(buckets),
        }
    }

    pub(crate) fn record(&self, failure: bool, slow: bool, now_ms: u64) -> Counts {
        if let Some(b) = self.ring.enter(now_ms / self.width_ms) {
            b[0].fetch_add(1, Ordering::Relaxed);
            if failure {
                b[1].fetch_add(1, Ordering::Relaxed);
            }
            if slow {
                b[2].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counts(now_ms)
    }

    pub(crate) fn counts(&self, now_ms: u64) -> Counts {
        let [calls, failures, slow] = self.ring.sum(now_ms / self.width_ms);
        Counts {
            calls: calls as u32,
            failures: failures as u32,
            slow: slow as u32,
        }
    }

    pub(crate) fn reset(&self) {
        self.ring.clear();
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn count_window_slides_one_outcome_at_a_time() {
        let w = CountWindow::new(4);
        for _ in 0..1000 {
            w.record(false, false);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 0,
                slow: 0
            }
        );
        // After 1000 successes, the 4 next failures fill the window: no more needed.
        for i in 1..=4 {
            assert_eq!(w.record(true, false).failures, i);
        }
        assert_eq!(
            w.record(false, true),
            Counts {
                calls: 4,
                failures: 3,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn time_window_buckets_expire() {
        let w = TimeWindow::new(10, 1000);
        w.record(true, false, 0);
        w.record(false, true, 500);
        assert_eq!(
            w.counts(999),
            Counts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.counts(9_999).calls, 2);
        assert_eq!(w.counts(10_000).calls, 0);
        w.record(true, false, 10_000);
        assert_eq!(
            w.counts(10_000),
            Counts {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        // A record stamped before the bucket's slot is dropped.
        w.record(true, false, 0);
        assert_eq!(w.counts(10_000).calls, 1);
        w.reset();
        assert_eq!(w.counts(10_000).calls, 0);
    }

    proptest! {
        #[test]
        fn count_window_matches_the_last_n(n in 1usize..50, outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300)) {
            let w = CountWindow::new(n);
            for (f, s) in &outcomes {
                w.record(*f, *s);
            }
            let last: Vec<_> = outcomes.iter().rev().take(n).collect();
            prop_assert_eq!(w.counts(), Counts {
                calls: last.len() as u32,
                failures: last.iter().filter(|(f, _)| *f).count() as u32,
                slow: last.iter().filter(|(_, s)| *s).count() as u32,
            });
        }
    }
}
