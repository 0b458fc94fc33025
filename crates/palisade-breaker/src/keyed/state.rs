//! The keys' breakers: a fixed set of shards, each an immutable map swapped whole when one of
//! its keys is added or evicted, so lookups take no lock and an add copies one shard only.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicUsize as TestCounter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use tokio::time::Instant;

use crate::BreakerConfig;
use palisade_core::stripe::{self, Stripe};

use crate::handle::{Lane, Shared, Stripes, stripes};
use crate::state::{Core, State};

/// Keys per shard the shard count aims at: an add copies about this many entries.
const KEYS_PER_SHARD: usize = 64;
/// The most shards (beyond `KEYS_PER_SHARD * MAX_SHARDS` keys, shards grow instead).
const MAX_SHARDS: usize = 256;
/// Shards looked at to choose the least recently used key when `max_keys` is reached.
const SAMPLE_SHARDS: usize = 4;
/// Idle keys are swept at most once per this fraction of the idle timeout.
const SWEEPS_PER_IDLE: u32 = 64;

pub(super) struct Entry {
    pub(super) stripes: Arc<Stripes>,
    /// Last use, in milliseconds since the registry's origin (written at most once a
    /// millisecond): when a call last started, or when eviction last found one running.
    last_used: AtomicU64,
}

/// How willing eviction is to drop a key, most willing first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Keep {
    /// The breaker admits calls (closed, half-open, or open with its period over).
    Admits,
    /// Open, rejecting calls for this many more milliseconds.
    Open(u64),
    /// Isolated or bypassed by an operator.
    Operator,
}

/// How willing eviction is to drop a key for room, most willing first: whether a call is in
/// flight, how willing its breaker is, and its last use.
type Rank = (bool, Keep, u64);

impl Entry {
    fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    fn core(&self) -> &Core {
        &self.stripes.get().shared.core
    }

    /// Whether a call holds the breaker: an admitted call's guard (and a
    /// [`Permit`](crate::Permit) or a [`Refusal`](crate::Refusal) taken through its handle)
    /// holds a reference to one of its stripes, which otherwise only the breaker's `Stripes`
    /// hold. So the calls pay nothing for it; this reads every stripe's count, for eviction
    /// only. A call that looked its key up just before the key is evicted may still take a
    /// stripe of the evicted breaker: lookups take no lock.
    fn in_use(&self) -> bool {
        (0..stripe::count()).any(|i| Arc::strong_count(self.stripes.nth(i)) > 1)
    }

    fn keep(&self, now: u64) -> Keep {
        let core = self.core();
        match core.state() {
            State::Isolated | State::Bypassed => Keep::Operator,
            _ => core.rejecting_for(now).map_or(Keep::Admits, Keep::Open),
        }
    }
}

/// One shard's keys and their breakers, each stored with its key's hash: a lookup hashes the
/// key once, for the shard and the slot alike (a `HashMap` would hash it again), and growing
/// the table rehashes nothing.
pub(super) struct Map<K> {
    table: HashTable<(u64, K, Arc<Entry>)>,
}

impl<K: Clone> Clone for Map<K> {
    fn clone(&self) -> Self {
        Map {
            table: self.table.clone(),
        }
    }
}

impl<K> Map<K> {
    fn new() -> Self {
        Map {
            table: HashTable::new(),
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &Arc<Entry>)> {
        self.table.iter().map(|(_, k, e)| (k, e))
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.table.iter().map(|(_, _, e)| e)
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &Arc<Entry>) -> bool) {
        self.table.retain(|(_, k, e)| keep(k, e));
    }
}

impl<K: Eq> Map<K> {
    #[inline]
    fn get(&self, hash: u64, key: &K) -> Option<&Arc<Entry>> {
        self.table
            .find(hash, |(_, k, _)| k == key)
            .map(|(_, _, e)| e)
    }

    fn insert(&mut self, hash: u64, key: K, entry: Arc<Entry>) {
        self.table
            .insert_unique(hash, (hash, key, entry), |(h, _, _)| *h);
    }

    fn remove(&mut self, hash: u64, key: &K) -> Option<Arc<Entry>> {
        let found = self.table.find_entry(hash, |(_, k, _)| k == key).ok()?;
        Some(found.remove().0.2)
    }
}

/// What writers share, behind [`Registry::write`].
pub(super) struct Writer {
    /// The configuration new keys' breakers start with.
    pub(super) config: BreakerConfig,
    /// Keys in every shard.
    len: usize,
    /// The next shard sampled for eviction (round robin).
    cursor: usize,
    /// No key can be idle before this (milliseconds since the origin): the next sweep.
    sweep_due: u64,
}

/// The breakers of a [`KeyedBreakerLayer`](super::KeyedBreakerLayer), shared by its services and handles.
pub(super) struct Registry<K> {
    pub(super) name: String,
    pub(super) origin: Instant,
    pub(super) max_keys: usize,
    pub(super) idle: Duration,
    /// Picks a key's shard.
    hasher: RandomState,
    /// Immutable snapshots, each swapped whole when one of its keys is added or evicted:
    /// lookups take no lock, an add copies one shard (and the shard of the key it evicts).
    shards: Box<[ArcSwap<Map<K>>]>,
    /// Serializes writers only (first use of a key, eviction, reconfiguration); readers never
    /// touch it.
    pub(super) write: std::sync::Mutex<Writer>,
    /// Hands out stripes to service instances, round robin.
    pub(super) stripes: AtomicUsize,
    /// Entries copied by writers, for the tests' bound on the work an add does.
    #[cfg(test)]
    pub(super) copied: TestCounter,
    /// Entries looked at to choose a key to evict, likewise.
    #[cfg(test)]
    pub(super) examined: TestCounter,
}

impl<K> Registry<K> {
    pub(super) fn new(
        name: String,
        max_keys: usize,
        idle: Duration,
        config: BreakerConfig,
    ) -> Self {
        let shards = max_keys
            .div_ceil(KEYS_PER_SHARD)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Registry {
            name,
            origin: Instant::now(),
            max_keys,
            idle,
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|_| ArcSwap::from_pointee(Map::new()))
                .collect(),
            write: std::sync::Mutex::new(Writer {
                config,
                len: 0,
                cursor: 0,
                sweep_due: 0,
            }),
            stripes: AtomicUsize::new(0),
            #[cfg(test)]
            copied: TestCounter::new(0),
            #[cfg(test)]
            examined: TestCounter::new(0),
        }
    }

    pub(super) fn next_stripe(&self) -> usize {
        self.stripes.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f` with every key and its breaker's stripes (a snapshot per shard).
    pub(super) fn for_each(&self, mut f: impl FnMut(&K, &Arc<Stripes>)) {
        for shard in self.shards.iter() {
            for (k, e) in shard.load().iter() {
                f(k, &e.stripes);
            }
        }
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    /// Milliseconds since the origin (the clock the keys' breakers use too).
    fn millis(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// `key`'s hash, and its shard: bits 40 to 47 of the hash, which the shard's table uses
    /// for neither its slot (the low bits) nor its tag (the top seven), so that the keys of one
    /// shard still spread over its slots. The shard count is a power of two, at most 256.
    #[inline]
    fn locate(&self, key: &K) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        (hash, ((hash >> 40) as usize) & (self.shards.len() - 1))
    }

    /// `key`'s breaker, if it has one.
    pub(super) fn get(&self, key: &K) -> Option<Arc<Stripes>> {
        let (hash, shard) = self.locate(key);
        self.shards[shard]
            .load()
            .get(hash, key)
            .map(|e| e.stripes.clone())
    }

    /// Stripe `stripe` of `key`'s breaker, created on first use. Only the stripe's reference
    /// count is touched, not the breaker's (which every thread shares); the reference the
    /// call's guard keeps is also how eviction sees the call in flight (`Entry::in_use`).
    #[inline]
    pub(super) fn stripe(&self, key: &K, stripe: usize) -> Arc<Stripe<Lane>> {
        let (hash, shard) = self.locate(key);
        if let Some(entry) = self.shards[shard].load().get(hash, key) {
            let now = self.millis();
            if entry.last_used.load(Ordering::Relaxed) != now {
                entry.last_used.store(now, Ordering::Relaxed);
            }
            return entry.stripes.nth(stripe).clone();
        }
        self.insert(key, hash, shard).nth(stripe).clone()
    }

    /// A copy of shard `i`, to change and store.
    fn copy(&self, i: usize) -> Map<K> {
        let map = (**self.shards[i].load()).clone();
        #[cfg(test)]
        self.copied.fetch_add(map.len(), Ordering::Relaxed);
        map
    }

    /// Drops `victim`'s breaker from the gauge (see the crate docs' *Metrics*) and logs it.
    fn evicted(&self, key: &K, victim: &Entry, why: &'static str) {
        let core = victim.core();
        let state = core.state();
        if state != State::Closed {
            // The facade cannot delete a series: a gauge left at its last value (open, say)
            // would report an outage that is no longer tracked.
            palisade_core::metrics::breaker_transition(&core.name, state.as_str(), "evicted", 0);
        }
        tracing::debug!(target: "palisade_breaker", breaker = %core.name, ?key, %state, %why, "per-key breaker evicted");
    }

    /// Drops the idle keys whose breaker admits calls and has no call in flight, if any can
    /// be idle yet. A full pass, at most once per `1 / SWEEPS_PER_IDLE` of the idle timeout.
    fn sweep(&self, writer: &mut Writer, now: u64) {
        if now < writer.sweep_due {
            return;
        }
        let idle = crate::state::millis(self.idle);
        let mut due = u64::MAX;
        for i in 0..self.shards.len() {
            let shard = self.shards[i].load();
            let mut gone = 0;
            for e in shard.values() {
                let last = e.last_used();
                if now.saturating_sub(last) < idle {
                    due = due.min(last.saturating_add(idle));
                    continue;
                }
                if e.in_use() {
                    // Used now: its call started long ago and is still running (a stream, a
                    // long completion). Evicted, its outcome would go to a breaker no call
                    // reaches (a failure that trips it would be lost) and its key's next call
                    // would start afresh. Idle from now on, at the earliest.
                    e.last_used.store(now, Ordering::Relaxed);
                    due = due.min(now.saturating_add(idle));
                    continue;
                }
                // Idle, but a breaker that still rejects calls (open with time left, or set by
                // an operator) stays: evicted, it would come back closed and let everything
                // through to a dependency it has just seen failing. It can start admitting at
                // any moment (an operator closes it), and then goes: looked at again at the
                // next step, so that it outlives the idle timeout by a step at most.
                if e.keep(now) == Keep::Admits {
                    gone += 1;
                } else {
                    due = now;
                }
            }
            if gone > 0 {
                let mut next = self.copy(i);
                next.retain(|k, e| {
                    let stays = now.saturating_sub(e.last_used()) < idle
                        || e.keep(now) != Keep::Admits
                        || e.in_use();
                    if !stays {
                        self.evicted(k, e, "idle");
                    }
                    stays
                });
                writer.len -= shard.len() - next.len();
                self.shards[i].store(Arc::new(next));
            }
        }
        // The key being added is idle at `now + idle` at the earliest.
        due = due.min(now.saturating_add(idle));
        let step = crate::state::millis(self.idle / SWEEPS_PER_IDLE).max(1);
        writer.sweep_due = due.max(now.saturating_add(step));
    }

    /// The key to evict for room: the least recently used breaker that admits calls and has
    /// no call in flight among a sample of shards (`own` and the next ones round robin); if
    /// the sample has none, the best of every shard: with no call in flight before in use,
    /// then admitting, then open (soonest probe first), then set by an operator (least
    /// recently used first).
    fn victim(&self, writer: &mut Writer, own: usize, now: u64) -> Option<(usize, K, Rank)> {
        let n = self.shards.len();
        let mut best: Option<(Rank, usize, K)> = None;
        let consider = |i: usize, best: &mut Option<(Rank, usize, K)>| {
            let shard = self.shards[i].load();
            #[cfg(test)]
            self.examined.fetch_add(shard.len(), Ordering::Relaxed);
            for (k, e) in shard.iter() {
                // Open breakers by time left, the others by last use.
                let rank = (false, e.keep(now), e.last_used());
                // Whether a call is in flight is read (a load per stripe) only for a key that
                // would be chosen if none were.
                if best.as_ref().is_none_or(|(b, _, _)| rank < *b) {
                    let rank = (e.in_use(), rank.1, rank.2);
                    if best.as_ref().is_none_or(|(b, _, _)| rank < *b) {
                        *best = Some((rank, i, k.clone()));
                    }
                }
            }
        };
        let sample = SAMPLE_SHARDS.min(n);
        consider(own, &mut best);
        let (mut looked, mut j) = (1, 0);
        while looked < sample {
            let i = (writer.cursor + j) % n;
            j += 1;
            if i != own {
                consider(i, &mut best);
                looked += 1;
            }
        }
        writer.cursor = (writer.cursor + j) % n;
        if !matches!(best, Some(((false, Keep::Admits, _), _, _))) && sample < n {
            // Nothing in the sample admits calls with none in flight: look everywhere (every
            // key, when every breaker rejects calls or is in use; that case is logged).
            best = None;
            for i in 0..n {
                consider(i, &mut best);
            }
        }
        best.map(|(rank, i, k)| (i, k, rank))
    }

    #[cold]
    fn insert(&self, key: &K, hash: u64, shard: usize) -> Arc<Stripes> {
        let mut writer = self.lock();
        if let Some(entry) = self.shards[shard].load().get(hash, key) {
            return entry.stripes.clone();
        }
        let now = self.millis();
        // Bounded memory. First the idle keys go; then, while full, one key per missing
        // place (see `victim`).
        self.sweep(&mut writer, now);
        while writer.len >= self.max_keys {
            let Some((i, victim, (in_use, keep, _))) = self.victim(&mut writer, shard, now) else {
                break;
            };
            let mut next = self.copy(i);
            let Some(e) = next.remove(self.locate(&victim).0, &victim) else {
                break;
            };
            let name = &e.core().name;
            // One warning: an in-use victim means every key is in use, whatever its state.
            if in_use {
                tracing::warn!(
                    target: "palisade_breaker",
                    breaker = %name,
                    key = ?victim,
                    state = %e.core().state(),
                    max_keys = self.max_keys,
                    "evicting a per-key breaker with a call in flight: every key's breaker has \
                     a call in flight and max_keys is reached; the call's outcome goes to the \
                     evicted breaker, and the key starts afresh, closed, if it comes back"
                );
            } else {
                match keep {
                    Keep::Admits => {}
                    Keep::Open(left) => tracing::warn!(
                        target: "palisade_breaker",
                        breaker = %name,
                        key = ?victim,
                        open_for_ms = left,
                        max_keys = self.max_keys,
                        "evicting an open per-key breaker: every key's breaker is open (or set by \
                         an operator, or has a call in flight) and max_keys is reached; the key \
                         starts afresh, closed, if it comes back"
                    ),
                    Keep::Operator => tracing::warn!(
                        target: "palisade_breaker",
                        breaker = %name,
                        key = ?victim,
                        state = %e.core().state(),
                        max_keys = self.max_keys,
                        "evicting a per-key breaker an operator set: every key's breaker is isolated \
                         or bypassed by an operator (or has a call in flight) and max_keys is \
                         reached; the operator's setting of this key is lost, and the key starts \
                         afresh, closed, if it comes back"
                    ),
                }
            }
            self.evicted(&victim, &e, "max_keys");
            self.shards[i].store(Arc::new(next));
            writer.len -= 1;
        }
        // On the registry's clock (its origin), which eviction compares every key's open
        // period and last use on; but in its state since now, not since the registry's origin.
        let stripes = stripes(Arc::new(Shared {
            core: Core::new(
                format!("{}[{key:?}]", self.name).into(),
                writer.config,
                Vec::new(),
            )
            .salted()
            .made_at(now),
            origin: self.origin,
        }));
        let mut next = self.copy(shard);
        next.insert(
            hash,
            key.clone(),
            Arc::new(Entry {
                stripes: stripes.clone(),
                last_used: AtomicU64::new(now),
            }),
        );
        writer.len += 1;
        tracing::debug!(target: "palisade_breaker", breaker = %self.name, ?key, keys = writer.len, "per-key breaker created");
        self.shards[shard].store(Arc::new(next));
        stripes
    }
}
