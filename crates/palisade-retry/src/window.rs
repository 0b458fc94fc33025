//! A fixed ring of time slots, each one `AtomicU64` packing `(epoch, count)`.
//!
//! The epoch of an instant is the number of whole slot widths since the ring's origin. Every
//! slot carries the epoch it was last written in, so there is no rotation step at all: a
//! reader ignores slots whose epoch has left the window, and a writer that finds an old epoch
//! in its slot starts it afresh with one compare-and-swap. A ring left idle for hours therefore
//! reads as empty, and a writer whose `now` is late (it read the clock before another thread
//! moved on) still lands in the right slot or, if its slot was already reused, is dropped as
//! expired. No lock, no allocation, no background task.
//!
//! Epochs are `u32` and compared with wrapping arithmetic, so the ring works for 2^31 slot
//! widths after its creation (at least 6.8 years for the smallest slot width allowed, 100 ms).

use std::time::Duration;

use palisade_core::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// The number of slots of every ring: a window of `ttl` is read as ten slots of `ttl / 10`.
pub(crate) const SLOTS: usize = 10;

/// Packs an epoch and a count into one word.
#[inline]
pub(crate) const fn pack(epoch: u32, count: u32) -> u64 {
    ((epoch as u64) << 32) | count as u64
}

/// Unpacks an `(epoch, count)` word.
#[inline]
pub(crate) const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// How many slots `slot_epoch` lies behind `now_epoch`: 0 for the current slot, positive for
/// older slots, negative when the slot was written by a thread whose clock read is ahead.
#[inline]
pub(crate) const fn age(now_epoch: u32, slot_epoch: u32) -> i32 {
    now_epoch.wrapping_sub(slot_epoch) as i32
}

/// Whether a slot of `slot_epoch` counts in the window that ends at `now_epoch`.
#[inline]
pub(crate) const fn in_window(now_epoch: u32, slot_epoch: u32) -> bool {
    let age = age(now_epoch, slot_epoch);
    age < SLOTS as i32 && age > -(SLOTS as i32)
}

/// Maps instants to slot epochs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
    slot_nanos: u64,
}

impl Clock {
    /// A clock for a window of `window` (read as [`SLOTS`] slots), starting at `origin`.
    pub(crate) fn new(origin: Instant, window: Duration) -> Self {
        let slot_nanos = (window.as_nanos() / SLOTS as u128).clamp(1, u64::MAX as u128) as u64;
        Clock { origin, slot_nanos }
    }

    /// The epoch of `now` (wrapping).
    #[inline]
    pub(crate) fn epoch(&self, now: Instant) -> u32 {
        self.epoch_of(self.nanos(now))
    }

    /// Nanoseconds from the origin to `now` (u64 nanoseconds last 584 years; 64-bit division
    /// is several times cheaper than 128-bit).
    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        since
            .as_secs()
            .wrapping_mul(1_000_000_000)
            .wrapping_add(since.subsec_nanos() as u64)
    }

    /// The epoch of an instant `nanos` after the origin (wrapping on purpose: epochs are
    /// compared with wrapping arithmetic).
    #[inline]
    pub(crate) fn epoch_of(&self, nanos: u64) -> u32 {
        (nanos / self.slot_nanos) as u32
    }

    /// The width of one slot, in nanoseconds.
    #[inline]
    pub(crate) fn slot_nanos(&self) -> u64 {
        self.slot_nanos
    }
}

/// Adds `n` to the count of `epoch` in `slot` (which must be the slot of `epoch`).
///
/// Starts the slot afresh when it holds an older epoch; drops the addition when the slot was
/// already reused by a newer epoch (the event has expired for every reader). Saturates.
#[inline]
pub(crate) fn add(slot: &AtomicU64, epoch: u32, n: u32) {
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        let (tag, count) = unpack(cur);
        let next = if tag == epoch {
            pack(epoch, count.saturating_add(n))
        } else if age(epoch, tag) < 0 {
            return;
        } else {
            pack(epoch, n)
        };
        match slot.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// Takes one back from the count of `epoch` in `slot`, if that slot still holds `epoch`.
#[inline]
pub(crate) fn sub_one(slot: &AtomicU64, epoch: u32) {
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        let (tag, count) = unpack(cur);
        if tag != epoch || count == 0 {
            return;
        }
        match slot.compare_exchange_weak(
            cur,
            pack(tag, count - 1),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// The sum of the counts of `ring` inside the window ending at `epoch`.
#[inline]
pub(crate) fn sum(ring: &[AtomicU64; SLOTS], epoch: u32) -> u64 {
    ring.iter()
        .map(|slot| {
            let (tag, count) = unpack(slot.load(Ordering::Acquire));
            if in_window(epoch, tag) {
                count as u64
            } else {
                0
            }
        })
        .sum()
}

/// A fresh ring (every slot at epoch 0, count 0).
pub(crate) fn ring() -> [AtomicU64; SLOTS] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// The outcome of [`try_take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// One was taken, recorded in this epoch.
    Taken(u32),
    /// The limit was reached.
    Refused,
}

/// Records one event in the current slot of `ring` if the window then holds at most
/// `limit(epoch)` events.
///
/// The limit is re-read on every try (it may depend on other counters that only grow within an
/// epoch). The compare-and-swap on the current slot serialises concurrent takers of the same
/// epoch, so within one epoch the count never exceeds the limit; two takers whose clock reads
/// straddle a slot boundary can each take the last one (at most one extra per boundary and
/// racing thread).
#[inline]
pub(crate) fn try_take(
    ring: &[AtomicU64; SLOTS],
    mut epoch: u32,
    mut limit: impl FnMut(u32) -> u64,
) -> Take {
    loop {
        let idx = epoch as usize % SLOTS;
        let cur = ring[idx].load(Ordering::Acquire);
        let (tag, count) = unpack(cur);
        let here = if tag == epoch {
            count
        } else if age(epoch, tag) < 0 {
            // Another thread already moved this slot to a later epoch: our clock read is
            // stale, take its view of time.
            epoch = tag;
            continue;
        } else {
            0
        };
        let others: u64 = ring
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != idx)
            .map(|(_, slot)| {
                let (tag, count) = unpack(slot.load(Ordering::Acquire));
                if in_window(epoch, tag) {
                    count as u64
                } else {
                    0
                }
            })
            .sum();
        if others + here as u64 + 1 > limit(epoch) || here == u32::MAX {
            return Take::Refused;
        }
        if ring[idx]
            .compare_exchange(
                cur,
                pack(epoch, here + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            return Take::Taken(epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        assert_eq!(unpack(pack(7, 9)), (7, 9));
        assert_eq!(unpack(pack(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
    }

    #[test]
    fn window_membership_wraps() {
        assert!(in_window(5, 5));
        assert!(in_window(5, 0)); // age 5
        assert!(in_window(9, 0)); // age 9
        assert!(!in_window(10, 0)); // age 10: gone
        assert!(in_window(3, 5)); // written by a clock that is ahead
        assert!(in_window(0, 9)); // up to nine slots ahead
        assert!(!in_window(0, 10)); // ten ahead: a ring's worth, not this window's
        assert!(in_window(2, u32::MAX)); // across the wrap: age 3
        assert!(!in_window(u32::MAX / 2, 0));
    }

    #[test]
    fn clock_epochs() {
        let origin = Instant::now();
        let clock = Clock::new(origin, Duration::from_secs(10));
        assert_eq!(clock.epoch(origin), 0);
        assert_eq!(clock.epoch(origin + Duration::from_millis(999)), 0);
        assert_eq!(clock.epoch(origin + Duration::from_millis(1000)), 1);
        assert_eq!(clock.epoch(origin + Duration::from_secs(35)), 35);
    }

    #[test]
    fn add_restarts_old_slots_and_drops_stale_writes() {
        let ring = ring();
        add(&ring[3], 3, 2);
        add(&ring[3], 3, 1);
        assert_eq!(sum(&ring, 3), 3);
        // Ten slots later the same slot is reused from zero.
        add(&ring[3], 13, 1);
        assert_eq!(sum(&ring, 13), 1);
        // A late writer for epoch 3 is dropped: its event already expired.
        add(&ring[3], 3, 5);
        assert_eq!(sum(&ring, 13), 1);
        sub_one(&ring[3], 3);
        assert_eq!(sum(&ring, 13), 1);
        sub_one(&ring[3], 13);
        assert_eq!(sum(&ring, 13), 0);
        sub_one(&ring[3], 13);
        assert_eq!(sum(&ring, 13), 0);
    }

    #[test]
    fn idle_ring_reads_empty() {
        let ring = ring();
        for e in 0..10 {
            add(&ring[e as usize % SLOTS], e, 1);
        }
        assert_eq!(sum(&ring, 9), 10);
        assert_eq!(sum(&ring, 10), 9);
        assert_eq!(sum(&ring, 19), 0);
        assert_eq!(sum(&ring, 1_000_000), 0);
    }

    #[test]
    fn try_take_respects_the_limit_and_follows_newer_slots() {
        let ring = ring();
        assert_eq!(try_take(&ring, 0, |_| 2), Take::Taken(0));
        assert_eq!(try_take(&ring, 0, |_| 2), Take::Taken(0));
        assert_eq!(try_take(&ring, 0, |_| 2), Take::Refused);
        // Nine slots later both are still in the window.
        assert_eq!(try_take(&ring, 9, |_| 2), Take::Refused);
        assert_eq!(try_take(&ring, 10, |_| 2), Take::Taken(10));
        // A stale clock read (epoch 0) sees slot 0 reused by epoch 10 and adopts it.
        assert_eq!(try_take(&ring, 0, |_| 2), Take::Taken(10));
        assert_eq!(try_take(&ring, 10, |_| 2), Take::Refused);
    }
}
