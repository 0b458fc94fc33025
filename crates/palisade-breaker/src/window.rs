//! Outcome windows: a count window that truly slides over the last N outcomes, and a time
//! window of fixed buckets. Both are fixed memory and lock-free.

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const EMPTY: u8 = 0;
const SUCCESS: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

/// What a window holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Outcomes in the window.
    pub calls: u32,
    /// Failures among them.
    pub failures: u32,
    /// Slow calls among them (successful or not).
    pub slow: u32,
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
/// O(buckets) per read, memory independent of traffic.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width_ms: u64,
    /// Per bucket: the slot number + 1 it holds (0: never used), then calls, failures, slow.
    buckets: Box<[[AtomicU64; 4]]>,
}

const RESETTING: u64 = u64::MAX;

impl TimeWindow {
    pub(crate) fn new(buckets: usize, width_ms: u64) -> Self {
        TimeWindow {
            width_ms: width_ms.max(1),
            buckets: (0..buckets)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    pub(crate) fn record(&self, failure: bool, slow: bool, now_ms: u64) -> Counts {
        let slot = now_ms / self.width_ms + 1;
        let b = &self.buckets[(slot % self.buckets.len() as u64) as usize];
        let mut spins = 0;
        loop {
            let seen = b[0].load(Ordering::Acquire);
            if seen == slot {
                break;
            }
            if seen == RESETTING {
                spins += 1;
                if spins > 64 {
                    return self.counts(now_ms);
                }
                std::hint::spin_loop();
                continue;
            }
            if seen > slot {
                // A late record for a slot the ring moved past: too old to count.
                return self.counts(now_ms);
            }
            if b[0]
                .compare_exchange(seen, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for c in &b[1..] {
                    c.store(0, Ordering::Relaxed);
                }
                b[0].store(slot, Ordering::Release);
                break;
            }
        }
        b[1].fetch_add(1, Ordering::Relaxed);
        if failure {
            b[2].fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            b[3].fetch_add(1, Ordering::Relaxed);
        }
        self.counts(now_ms)
    }

    pub(crate) fn counts(&self, now_ms: u64) -> Counts {
        let newest = now_ms / self.width_ms + 1;
        let oldest = newest.saturating_sub(self.buckets.len() as u64 - 1);
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let slot = b[0].load(Ordering::Acquire);
            if slot == RESETTING || slot == 0 || slot < oldest || slot > newest {
                continue;
            }
            c.calls += b[1].load(Ordering::Relaxed) as u32;
            c.failures += b[2].load(Ordering::Relaxed) as u32;
            c.slow += b[3].load(Ordering::Relaxed) as u32;
        }
        c
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            b[0].store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
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
