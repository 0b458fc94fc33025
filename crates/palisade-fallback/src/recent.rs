//! The last-good cache: answers by key, kept in the order they were stored (an insertion-ordered
//! hash map, `hashlink`'s `LinkedHashMap`), so that storing, finding and evicting each touch a
//! fixed number of entries whatever the cache holds.
//!
//! A plain struct that takes `now`; [`LastGood`](crate::LastGood) keeps it behind its lock.

use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use hashlink::LinkedHashMap;
use tokio::time::Instant;

/// The hasher of the index. Keys are already the output of a randomly keyed hash (the
/// strategy's `RandomState`), so hashing them again would only cost time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this keeps the hasher correct for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// At most `capacity` answers by key, each with when it was stored, from the one stored
/// longest ago to the newest. Storing moves the key to the newest end; a full cache evicts
/// at the oldest end.
#[derive(Debug)]
pub(crate) struct Recent<R> {
    capacity: usize,
    entries: LinkedHashMap<u64, (Instant, R), BuildHasherDefault<KeyHasher>>,
}

impl<R> Recent<R> {
    /// An empty cache for at most `capacity` answers (at least 1). Nothing is allocated until
    /// the first answer is stored.
    pub(crate) fn new(capacity: usize) -> Self {
        Recent {
            capacity: capacity.max(1),
            entries: LinkedHashMap::default(),
        }
    }

    /// How many answers it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Stores `answer` for `key` at `now` (not earlier than any `now` given before), as the
    /// newest entry; a new key in a full cache evicts the entry stored longest ago. First, up
    /// to two entries older than `ttl` are dropped from the oldest end, so stale answers do not
    /// linger while new ones come in.
    pub(crate) fn store(&mut self, key: u64, answer: R, now: Instant, ttl: Duration) {
        for _ in 0..2 {
            match self.entries.front() {
                Some((_, (at, _))) if now.saturating_duration_since(*at) >= ttl => {
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
        // `insert` moves a key already there to the newest end.
        self.entries.insert(key, (now, answer));
        if self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// The answer for `key` and how long ago it was stored, if that is less than `ttl`.
    pub(crate) fn get(&self, key: u64, now: Instant, ttl: Duration) -> Option<(&R, Duration)> {
        let (at, answer) = self.entries.get(&key)?;
        let age = now.saturating_duration_since(*at);
        (age < ttl).then_some((answer, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    impl<R> Recent<R> {
        /// The keys from the oldest to the newest, checking that the times never go backwards
        /// and the capacity holds.
        fn order(&self) -> Vec<u64> {
            let times: Vec<Instant> = self.entries.values().map(|(at, _)| *at).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "times out of order");
            assert!(self.entries.len() <= self.capacity, "capacity bound");
            self.entries.keys().copied().collect()
        }
    }

    #[test]
    fn the_index_hasher_passes_keys_through_and_still_mixes_bytes() {
        let hash = |f: &dyn Fn(&mut KeyHasher)| {
            let mut h = KeyHasher::default();
            f(&mut h);
            h.finish()
        };
        assert_eq!(hash(&|h| h.write_u64(0xdead_beef)), 0xdead_beef);
        let (ab, ba) = (hash(&|h| h.write(b"ab")), hash(&|h| h.write(b"ba")));
        assert_ne!(ab, ba);
        assert_ne!(ab, 0);
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_full_cache_evicts_the_entry_stored_longest_ago() {
        let t0 = Instant::now();
        let mut c = Recent::new(3);
        c.store(1, "a", at(t0, 0), TTL);
        c.store(2, "b", at(t0, 1), TTL);
        c.store(3, "c", at(t0, 2), TTL);
        assert_eq!(c.order(), [1, 2, 3]);
        // Storing 1 again makes it the newest: 2 is now the one stored longest ago.
        c.store(1, "a2", at(t0, 3), TTL);
        assert_eq!(c.order(), [2, 3, 1]);
        c.store(4, "d", at(t0, 4), TTL);
        assert_eq!(c.order(), [3, 1, 4]);
        assert_eq!(c.get(2, at(t0, 4), TTL), None, "2 was evicted");
        assert_eq!(
            c.get(1, at(t0, 4), TTL),
            Some((&"a2", Duration::from_secs(1)))
        );
        // Ties (one instant) go by the order of storing.
        c.store(5, "e", at(t0, 4), TTL);
        c.store(6, "f", at(t0, 4), TTL);
        assert_eq!(c.order(), [4, 5, 6]);
    }

    #[test]
    fn an_answer_is_given_until_it_is_ttl_old_and_expired_ones_are_dropped() {
        let t0 = Instant::now();
        let mut c = Recent::new(10);
        c.store(1, 10, at(t0, 0), TTL);
        c.store(2, 20, at(t0, 30), TTL);
        let just_before = at(t0, 60) - Duration::from_millis(1);
        assert_eq!(c.get(1, just_before, TTL).map(|(a, _)| *a), Some(10));
        assert_eq!(c.get(1, at(t0, 60), TTL), None, "ttl old: stale");
        assert_eq!(c.len(), 2, "a lookup changes nothing");
        // The next store drops the expired entry at the oldest end, not the fresh one.
        c.store(3, 30, at(t0, 60), TTL);
        assert_eq!(c.order(), [2, 3]);
        // At most two expired entries go per store.
        for k in 10..15 {
            c.store(k, k as i32, at(t0, 61), TTL);
        }
        assert_eq!(c.order(), [2, 3, 10, 11, 12, 13, 14]);
        c.store(99, 0, at(t0, 200), TTL);
        assert_eq!(c.order(), [10, 11, 12, 13, 14, 99]);
        c.store(98, 0, at(t0, 200), TTL);
        assert_eq!(c.order(), [12, 13, 14, 99, 98]);
    }

    #[test]
    fn it_never_holds_more_than_capacity_and_removal_keeps_links_whole() {
        let t0 = Instant::now();
        let mut c = Recent::new(5);
        let mut secs = 0;
        for k in 0..100u64 {
            // Every third store refreshes an earlier key, and time moves in uneven steps so
            // that the expiry path removes from the middle of the slot vector.
            let key = if k % 3 == 0 { k / 2 } else { k };
            secs += k * k % 23;
            c.store(key, k, at(t0, secs), Duration::from_secs(40));
            c.order();
            assert!(c.len() <= 5);
        }
        assert_eq!(c.len(), 5);
    }
}
