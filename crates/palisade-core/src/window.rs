//! [`SlotRing`]: counters over a sliding time window, in a fixed ring of buckets, without locks.
//!
//! Time is cut into numbered slots (the caller maps an instant to a slot number, usually
//! `elapsed / width`). The ring keeps the last `len` slots: each bucket remembers the slot it
//! holds, so there is no rotation step. A writer that finds an older slot in its bucket claims
//! the bucket with one compare-and-swap, zeroes it and moves it on; a reader sums the buckets
//! whose slot is inside the window and skips the rest. A ring left idle for hours therefore
//! reads as empty. Memory is `len × (8 + 4·N)` bytes whatever the traffic.
//!
//! Used by the breaker's time-based window and by [`ErrorStats`](crate::ErrorStats); modelled
//! under loom (`RUSTFLAGS="--cfg palisade_loom" cargo test -p palisade-core --lib --release
//! loom`).
//!
//! ```
//! use palisade_core::window::SlotRing;
//! use palisade_core::sync::atomic::Ordering;
//!
//! // Two counters (say calls and failures) over the last 3 slots.
//! let ring = SlotRing::<2>::new(3);
//! for (slot, failed) in [(0, false), (0, true), (1, true), (5, false)] {
//!     if let Some(bucket) = ring.enter(slot) {
//!         bucket[0].fetch_add(1, Ordering::Relaxed);
//!         bucket[1].fetch_add(u32::from(failed), Ordering::Relaxed);
//!     }
//! }
//! assert_eq!(ring.sum(1), [3, 2]); // slots 0 and 1
//! assert_eq!(ring.sum(5), [1, 0]); // slots 3..=5: only the last call
//! ```

use std::fmt;

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A bucket's slot word meaning "a writer is zeroing this bucket".
const RESETTING: u64 = u64::MAX;
/// How many times a writer waits for another one to finish zeroing a bucket before it drops
/// its sample (zeroing is `N` stores, so this is never reached in practice).
const SPINS: u32 = 64;

struct Bucket<const N: usize> {
    /// The slot this bucket holds plus one; 0: never used (or cleared); [`RESETTING`].
    slot: AtomicU64,
    counts: [AtomicU32; N],
}

/// `N` counters per time slot over a window of the last `len` slots; see the
/// [module docs](self).
///
/// Counts are exact for one writer. Under contention a sample can be lost in the instant a
/// bucket is recycled (a writer that finds the bucket being zeroed by another for too long, or
/// a late writer whose slot the ring has already moved past), never counted twice.
pub struct SlotRing<const N: usize> {
    buckets: Box<[Bucket<N>]>,
}

impl<const N: usize> SlotRing<N> {
    /// A ring of `len` buckets (at least one: a `len` of 0 is taken as 1), all empty.
    pub fn new(len: usize) -> Self {
        SlotRing {
            buckets: (0..len.max(1))
                .map(|_| Bucket {
                    slot: AtomicU64::new(0),
                    counts: std::array::from_fn(|_| AtomicU32::new(0)),
                })
                .collect(),
        }
    }

    /// How many slots the window spans.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Always `false`: a ring has at least one bucket.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The counters of `slot`'s bucket, moved on to `slot` (and zeroed) if it held an older
    /// one; add to them with `fetch_add`. `None` when the sample is too late to count (the
    /// bucket already holds a newer slot) or, rarely, when another writer kept the bucket busy.
    /// Slot numbers above `u64::MAX - 2` are clamped.
    #[inline]
    pub fn enter(&self, slot: u64) -> Option<&[AtomicU32; N]> {
        let want = slot.min(RESETTING - 2) + 1;
        let bucket = &self.buckets[(want - 1) as usize % self.buckets.len()];
        let mut spins = 0;
        loop {
            let seen = bucket.slot.load(Ordering::Acquire);
            if seen == want {
                return Some(&bucket.counts);
            }
            if seen == RESETTING {
                spins += 1;
                if spins > SPINS {
                    return None;
                }
                std::hint::spin_loop();
                #[cfg(palisade_loom)]
                loom::thread::yield_now();
                continue;
            }
            if seen > want {
                // A late sample for a slot the ring has moved past: too old to count.
                return None;
            }
            if bucket
                .slot
                .compare_exchange(seen, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for count in &bucket.counts {
                    count.store(0, Ordering::Relaxed);
                }
                bucket.slot.store(want, Ordering::Release);
                return Some(&bucket.counts);
            }
        }
    }

    /// Each counter summed over the window that ends with slot `newest` (the `len` slots up to
    /// and including it).
    pub fn sum(&self, newest: u64) -> [u64; N] {
        let newest = newest.min(RESETTING - 2) + 1;
        let oldest = newest.saturating_sub(self.buckets.len() as u64 - 1);
        let mut sums = [0u64; N];
        for bucket in self.buckets.iter() {
            let slot = bucket.slot.load(Ordering::Acquire);
            if slot == RESETTING || slot == 0 || slot < oldest || slot > newest {
                continue;
            }
            for (sum, count) in sums.iter_mut().zip(&bucket.counts) {
                *sum += u64::from(count.load(Ordering::Relaxed));
            }
        }
        sums
    }

    /// Forgets every count, as if the ring were new. Lock-free: a bucket that a writer is
    /// recycling at that moment is left to it, and afterwards holds only that newer sample.
    pub fn clear(&self) {
        for bucket in self.buckets.iter() {
            let seen = bucket.slot.load(Ordering::Acquire);
            if seen == 0 || seen == RESETTING {
                continue;
            }
            if bucket
                .slot
                .compare_exchange(seen, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            for count in &bucket.counts {
                count.store(0, Ordering::Relaxed);
            }
            bucket.slot.store(0, Ordering::Release);
        }
    }
}

impl<const N: usize> fmt::Debug for SlotRing<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotRing")
            .field("len", &self.buckets.len())
            .field("counters", &N)
            .finish()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn add<const N: usize>(ring: &SlotRing<N>, slot: u64, i: usize) -> bool {
        ring.enter(slot)
            .map(|b| b[i].fetch_add(1, Ordering::Relaxed))
            .is_some()
    }

    #[test]
    fn slots_expire_as_the_window_slides() {
        let ring = SlotRing::<2>::new(4);
        assert_eq!(ring.len(), 4);
        assert!(!ring.is_empty());
        assert!(add(&ring, 0, 0));
        assert!(add(&ring, 3, 1));
        assert_eq!(ring.sum(3), [1, 1]);
        assert_eq!(ring.sum(4), [0, 1], "slot 0 left the window 1..=4");
        assert_eq!(ring.sum(6), [0, 1]);
        assert_eq!(ring.sum(7), [0, 0]);
        // Slot 4 reuses slot 0's bucket: zeroed first.
        assert!(add(&ring, 4, 0));
        assert_eq!(ring.sum(4), [1, 1]);
        // A late sample for slot 0 is dropped, not added to slot 4.
        assert!(!add(&ring, 0, 0));
        assert_eq!(ring.sum(4), [1, 1]);
        // Reading an older window ignores newer slots.
        assert_eq!(ring.sum(2), [0, 0]);
    }

    #[test]
    fn clear_forgets_everything_and_a_zero_length_ring_has_one_bucket() {
        let ring = SlotRing::<1>::new(0);
        assert_eq!(ring.len(), 1);
        assert!(add(&ring, 7, 0));
        assert!(add(&ring, 7, 0));
        assert_eq!(ring.sum(7), [2]);
        ring.clear();
        assert_eq!(ring.sum(7), [0]);
        assert!(add(&ring, 7, 0));
        assert_eq!(ring.sum(7), [1]);
        // Enormous slot numbers are clamped, not wrapped onto "never used".
        assert!(add(&ring, u64::MAX, 0));
        assert_eq!(ring.sum(u64::MAX), [1]);
        assert_eq!(format!("{ring:?}"), "SlotRing { len: 1, counters: 1 }");
    }

    proptest! {
        /// Against a model that keeps every sample: one writer's samples, in order, sum
        /// exactly to the model's count over any window ending at the newest slot.
        #[test]
        fn one_writer_counts_exactly(len in 1usize..8, steps in proptest::collection::vec((0u64..4, 0usize..2), 0..64)) {
            let ring = SlotRing::<2>::new(len);
            let mut now = 0u64;
            let mut kept: Vec<(u64, usize)> = Vec::new();
            for (advance, i) in steps {
                now += advance;
                prop_assert!(add(&ring, now, i));
                kept.push((now, i));
            }
            let oldest = now.saturating_sub(len as u64 - 1);
            let mut want = [0u64; 2];
            for (slot, i) in kept {
                if slot >= oldest {
                    want[i] += 1;
                }
            }
            prop_assert_eq!(ring.sum(now), want);
        }
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two writers in the same new slot, one of them recycling the bucket: both samples count
    /// and the old slot's count is gone.
    #[test]
    fn loom_writers_racing_a_recycle_keep_both_samples() {
        loom::model(|| {
            let ring = Arc::new(SlotRing::<1>::new(1));
            ring.enter(0).unwrap()[0].fetch_add(5, Ordering::Relaxed);
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let ring = ring.clone();
                    thread::spawn(move || {
                        if let Some(b) = ring.enter(1) {
                            b[0].fetch_add(1, Ordering::Relaxed);
                            true
                        } else {
                            false
                        }
                    })
                })
                .collect();
            let counted = handles
                .into_iter()
                .map(|h| u64::from(h.join().unwrap()))
                .sum::<u64>();
            assert_eq!(ring.sum(1), [counted]);
            assert!(counted >= 1);
        });
    }

    /// A clear racing a writer: afterwards the ring holds at most that writer's sample, never
    /// the cleared ones.
    #[test]
    fn loom_clear_racing_a_writer() {
        loom::model(|| {
            let ring = Arc::new(SlotRing::<1>::new(2));
            ring.enter(0).unwrap()[0].fetch_add(3, Ordering::Relaxed);
            let writer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    ring.enter(1)
                        .map(|b| b[0].fetch_add(1, Ordering::Relaxed))
                        .is_some()
                })
            };
            ring.clear();
            let wrote = writer.join().unwrap();
            let total = ring.sum(1)[0];
            assert!(
                total <= u64::from(wrote),
                "cleared samples came back: {total}"
            );
        });
    }
}
