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

/// Running counts over a ring of outcome codes, adjusted by exactly what each write replaced:
/// what [`CountWindow`] and [`RecentWindow`] share.
#[derive(Debug, Default)]
struct Tally {
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl Tally {
    /// A slot that held `old` (`EMPTY` if none) now holds `new`.
    fn replace(&self, old: u8, new: u8) {
        match (old == EMPTY, new == EMPTY) {
            (true, false) => {
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.calls.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        adjust(&self.failures, old & FAILURE != 0, new & FAILURE != 0);
        adjust(&self.slow, old & SLOW != 0, new & SLOW != 0);
    }

    /// Whether `len` slots hold only successes that were not slow.
    #[inline]
    fn all_successes(&self, len: usize) -> bool {
        self.failures.load(Ordering::Relaxed) == 0
            && self.slow.load(Ordering::Relaxed) == 0
            && self.calls.load(Ordering::Relaxed) as usize == len
    }

    /// The counts now. Each write adjusts them after its slot's swap, so two writes to one
    /// slot (or a write racing a reset) may apply their adjustments in the other order, and a
    /// count may pass below zero for a moment, wrapping round: read as 0 (no window holds 2^31
    /// outcomes), and failures and slow calls never more than the calls, so that a moment's
    /// wrap never reads as a window of failures (a success recorded then would trip the
    /// breaker).
    fn counts(&self) -> Counts {
        let read = |c: &AtomicU32| {
            let v = c.load(Ordering::Relaxed);
            if v > i32::MAX as u32 { 0 } else { v }
        };
        let calls = read(&self.calls);
        Counts {
            calls,
            failures: read(&self.failures).min(calls),
            slow: read(&self.slow).min(calls),
        }
    }
}

/// The last `n` outcomes: each record replaces the oldest, and running counts are adjusted by
/// exactly what was replaced, so the window slides one outcome at a time.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[AtomicU8]>,
    next: AtomicU64,
    tally: Tally,
}

impl CountWindow {
    pub(crate) fn new(n: usize) -> Self {
        CountWindow {
            ring: (0..n).map(|_| AtomicU8::new(EMPTY)).collect(),
            next: AtomicU64::new(0),
            tally: Tally::default(),
        }
    }

    pub(crate) fn record(&self, failure: bool, slow: bool) -> Counts {
        let new = code(failure, slow);
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % self.ring.len() as u64) as usize;
        let old = self.ring[i].swap(new, Ordering::AcqRel);
        self.tally.replace(old, new);
        self.counts()
    }

    /// Whether the window is full and holds only successes that were not slow: recording
    /// another such success would change nothing.
    #[inline]
    pub(crate) fn all_successes(&self) -> bool {
        self.tally.all_successes(self.ring.len())
    }

    pub(crate) fn counts(&self) -> Counts {
        self.tally.counts()
    }

    pub(crate) fn reset(&self) {
        for slot in self.ring.iter() {
            self.tally
                .replace(slot.swap(EMPTY, Ordering::AcqRel), EMPTY);
        }
    }
}

/// The last `n` outcomes, judged as a [`CountWindow`]; and, where they reach back further than
/// `within_ms` (calls come slower than `n` per `within_ms`), the outcomes of the last
/// `within_ms` alone, when there are at least `min_recent` of them ([`recent`](Self::recent)).
/// At a low request rate it still speaks of the last moments, not of the last half minute.
/// `within_ms` and `min_recent` are the caller's to pass (the breaker's configuration holds
/// them), so a reconfiguration that changes only them keeps the outcomes.
///
/// Each slot holds an outcome's code and the millisecond it was recorded (plus one; 0 is an
/// empty slot). Running counts over the whole ring make [`record`](Self::record) `O(1)` and say
/// whether it holds only plain successes ([`all_successes`](Self::all_successes)), as for a
/// count window: the breaker then stops recording successes, reading no clock, and the slots
/// keep the times the ring filled. When the next outcome that is not a plain success comes,
/// the ring's successes are taken as seen at that moment (`floor`): they were the last calls,
/// and a success the quiet path did not record must not make the ring look older than it is.
/// [`recent`](Self::recent) scans the ring (`O(n)`); the breaker asks it only after a failure.
#[derive(Debug)]
pub(crate) struct RecentWindow {
    ring: Box<[AtomicU64]>,
    next: AtomicU64,
    /// Outcomes recorded before this time (ms) count as recorded at it (see above).
    floor: AtomicU64,
    tally: Tally,
}

impl RecentWindow {
    pub(crate) fn new(n: usize) -> Self {
        RecentWindow {
            ring: (0..n).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            tally: Tally::default(),
        }
    }

    /// Records an outcome at `now_ms`; returns the whole ring's counts.
    pub(crate) fn record(&self, failure: bool, slow: bool, now_ms: u64) -> Counts {
        if (failure || slow) && self.all_successes() {
            self.floor.fetch_max(now_ms, Ordering::AcqRel);
        }
        let new = u64::from(code(failure, slow)) | (now_ms.saturating_add(1) << 3);
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % self.ring.len() as u64) as usize;
        let old = self.ring[i].swap(new, Ordering::AcqRel);
        self.tally.replace(outcome(old), outcome(new));
        self.counts()
    }

    /// Whether the ring is full and holds only successes that were not slow (whatever their
    /// age): recording another such success would change no count but its time, which the
    /// floor stands in for.
    #[inline]
    pub(crate) fn all_successes(&self) -> bool {
        self.tally.all_successes(self.ring.len())
    }

    /// The whole ring's counts, as a count window's.
    pub(crate) fn counts(&self) -> Counts {
        self.tally.counts()
    }

    /// The outcomes of the last `within_ms` before `now_ms`, when the ring holds an older one
    /// too (it reaches back further) and they are at least `min_recent`; `None` otherwise.
    pub(crate) fn recent(&self, now_ms: u64, within_ms: u64, min_recent: u32) -> Option<Counts> {
        let floor = self.floor.load(Ordering::Acquire);
        let mut counts = Counts::default();
        let mut older = false;
        for slot in self.ring.iter() {
            let v = slot.load(Ordering::Acquire);
            if v == 0 {
                continue;
            }
            let at = ((v >> 3) - 1).max(floor);
            if now_ms.saturating_sub(at) >= within_ms {
                older = true;
                continue;
            }
            let c = outcome(v);
            counts.calls += 1;
            counts.failures += u32::from(c & FAILURE != 0);
            counts.slow += u32::from(c & SLOW != 0);
        }
        (older && counts.calls >= min_recent).then_some(counts)
    }

    pub(crate) fn reset(&self) {
        for slot in self.ring.iter() {
            self.tally
                .replace(outcome(slot.swap(0, Ordering::AcqRel)), EMPTY);
        }
        self.floor.store(0, Ordering::Release);
    }
}

/// The outcome code in a [`RecentWindow`] slot (`EMPTY` for an empty slot).
fn outcome(slot: u64) -> u8 {
    (slot & 0b111) as u8
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

/// Counts of `calls` outcomes, more than a `u32` holds (over 4 billion in one time window),
/// scaled down to `u32::MAX` calls: the ratios the rules judge stay as they are, where cutting
/// each count would raise them (and wrapping round make failures outnumber calls).
#[cold]
#[inline(never)]
fn scaled(calls: u64, failures: u64, slow: u64) -> Counts {
    let scale = |n: u64| {
        let n = u128::from(n.min(calls)) * u128::from(u32::MAX) / u128::from(calls);
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    Counts {
        calls: u32::MAX,
        failures: scale(failures),
        slow: scale(slow),
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
        let most = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        match u32::try_from(calls) {
            Ok(calls) => Counts {
                calls,
                failures: most(failures),
                slow: most(slow),
            },
            Err(_) => scaled(calls, failures, slow),
        }
    }

    pub(crate) fn reset(&self) {
        self.ring.clear();
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {

    /// Two writes to one slot whose adjustments land in the other order pass a count below
    /// zero for a moment: read as none, never as 4 294 967 295 failures (a review reproduced
    /// the wrap with loom; a success recorded then tripped the breaker).
    #[test]
    fn a_count_that_wraps_for_a_moment_reads_as_none() {
        let w = CountWindow::new(1);
        // The second write's adjustment (a failure replaced by a success) before the first's
        // (an empty slot filled with a failure).
        w.tally.replace(FAILURE, SUCCESS);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 0,
                failures: 0,
                slow: 0
            }
        );
        w.tally.replace(EMPTY, FAILURE);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        // The calls themselves: a slot emptied (a reset) before the write that filled it.
        let r = CountWindow::new(1);
        r.tally.replace(SUCCESS, EMPTY);
        assert_eq!(
            r.counts(),
            Counts {
                calls: 0,
                failures: 0,
                slow: 0
            }
        );
        // Slow calls and failures never outnumber the calls either.
        let v = CountWindow::new(4);
        v.tally.replace(EMPTY, SUCCESS);
        v.tally.replace(SUCCESS, FAILURE | SLOW);
        v.tally.replace(SUCCESS, FAILURE | SLOW);
        assert_eq!(
            v.counts(),
            Counts {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_time_window_holding_more_than_a_count_holds_keeps_its_ratios() {
        // 6 billion calls over two buckets, half of them failed: the counts are scaled down
        // to what a `u32` holds, not wrapped round (which would make failures outnumber
        // calls) nor cut at its largest each (which would make the ratio 0.7).
        let w = TimeWindow::new(2, 1);
        for slot in 0..2 {
            let b = w.ring.enter(slot).unwrap();
            b[0].fetch_add(3_000_000_000, Ordering::Relaxed);
            b[1].fetch_add(1_500_000_000, Ordering::Relaxed);
        }
        assert_eq!(
            w.counts(1),
            Counts {
                calls: u32::MAX,
                failures: u32::MAX / 2,
                slow: 0
            }
        );
    }

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

    #[test]
    fn recent_window_judges_the_last_span_where_the_ring_reaches_back_further() {
        // 4 outcomes, 1 s, at least 2 recent ones.
        let w = RecentWindow::new(4);
        let recent = |now| w.recent(now, 1_000, 2);
        w.record(false, false, 0);
        w.record(true, false, 500);
        // As a count window: the whole ring.
        assert_eq!(
            w.record(true, false, 900),
            Counts {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        // Nothing older than 1 s yet: the ring is judged as a count window alone.
        assert_eq!(recent(999), None);
        // At 1 000 the success at 0 is a second old: the last second holds the two failures.
        let two = Counts {
            calls: 2,
            failures: 2,
            slow: 0,
        };
        assert_eq!(recent(1_000), Some(two));
        // Fewer than 2 in the last second: too little to judge by.
        assert_eq!(recent(1_500), None);
        // A slow call counts as slow in both.
        assert_eq!(w.record(false, true, 1_600).slow, 1);
        assert_eq!(recent(1_600).map(|c| (c.calls, c.slow)), Some((2, 1)));
        w.reset();
        assert_eq!(w.counts(), Counts::default());
        assert_eq!(recent(10_000), None);
        assert!(!w.all_successes());
    }

    #[test]
    fn successes_not_recorded_while_quiet_are_taken_as_seen_at_the_next_failure() {
        let w = RecentWindow::new(3);
        let recent = |now| w.recent(now, 1_000, 1);
        for t in [0, 1, 2] {
            w.record(false, false, t);
        }
        assert!(w.all_successes());
        // The breaker records no success while the ring holds only successes; 10 s on, a
        // failure: the successes were the last calls, and count as seen now, not 10 s ago,
        // so the ring does not reach back further than a second.
        w.record(true, false, 10_000);
        w.record(true, false, 10_500);
        assert_eq!(recent(10_999), None);
        // A second later the success left and the first failure are old, and the last
        // second holds the second failure alone.
        assert_eq!(
            recent(11_000),
            Some(Counts {
                calls: 1,
                failures: 1,
                slow: 0
            })
        );
        // Once the ring holds a failure, the floor stays: a later success is as recent as it
        // is.
        w.record(false, false, 11_600);
        assert_eq!(recent(12_000).map(|c| c.calls), Some(1));
    }

    proptest! {
        #[test]
        fn recent_window_matches_a_model(
            n in 1usize..20,
            within in 1u64..50,
            min in 1u32..5,
            steps in proptest::collection::vec((0u64..10, any::<bool>(), any::<bool>()), 0..200),
        ) {
            // Every outcome recorded, at times that only go forward. The model: the last n
            // outcomes; those of the last `within` when an older one is among them and they
            // are at least `min`; a failure or slow call after a full ring of plain successes
            // takes those successes as seen at its time.
            let w = RecentWindow::new(n);
            let mut t = 0;
            let mut all: Vec<(u64, bool, bool)> = Vec::new();
            for (dt, f, sl) in &steps {
                t += dt;
                let quiet = all.len() >= n && all.iter().rev().take(n).all(|&(_, f, s)| !f && !s);
                if (*f || *sl) && quiet {
                    for o in all.iter_mut().rev().take(n) {
                        o.0 = o.0.max(t);
                    }
                }
                all.push((t, *f, *sl));
                let last: Vec<_> = all.iter().rev().take(n).collect();
                let count = |v: &[&(u64, bool, bool)]| Counts {
                    calls: v.len() as u32,
                    failures: v.iter().filter(|(_, f, _)| *f).count() as u32,
                    slow: v.iter().filter(|(_, _, s)| *s).count() as u32,
                };
                prop_assert_eq!(w.record(*f, *sl, t), count(&last));
                let young: Vec<_> = last.iter().copied().filter(|(at, _, _)| t - at < within).collect();
                let older = young.len() < last.len();
                let want = (older && young.len() as u32 >= min).then(|| count(&young));
                prop_assert_eq!(w.recent(t, within, min), want);
            }
        }

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
