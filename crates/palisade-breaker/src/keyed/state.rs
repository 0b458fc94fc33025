//! The keys' breakers: an immutable map swapped whole on insert or eviction, so lookups take
//! no lock.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::BreakerConfig;
use palisade_core::stripe::Stripe;

use crate::handle::{Lane, Shared, Stripes, stripes};
use crate::state::Core;

pub(super) struct Entry {
    pub(super) stripes: Arc<Stripes>,
    /// Last use, in milliseconds since the registry's origin (written at most once a
    /// millisecond).
    last_used: AtomicU64,
}

impl Entry {
    fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// How much longer this key's breaker rejects calls (see [`Core::rejecting_for`]).
    fn rejecting_for(&self, now: u64) -> Option<u64> {
        self.stripes.get().shared.core.rejecting_for(now)
    }
}

/// The breakers of a [`KeyedBreakerLayer`](super::KeyedBreakerLayer), shared by its services and handles.
pub(super) struct Registry<K> {
    pub(super) name: String,
    pub(super) origin: Instant,
    pub(super) max_keys: usize,
    pub(super) idle: Duration,
    /// An immutable snapshot, swapped whole on insert or eviction: lookups take no lock.
    pub(super) map: ArcSwap<HashMap<K, Arc<Entry>>>,
    /// Serializes writers only (first use of a key, eviction, reconfiguration); readers never
    /// touch it. It guards the configuration new keys' breakers start with.
    pub(super) write: std::sync::Mutex<BreakerConfig>,
    /// Hands out stripes to service instances, round robin.
    pub(super) stripes: AtomicUsize,
}

impl<K> Registry<K> {
    pub(super) fn next_stripe(&self) -> usize {
        self.stripes.fetch_add(1, Ordering::Relaxed)
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    /// Milliseconds since the origin (the clock the keys' breakers use too).
    fn millis(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// Stripe `stripe` of `key`'s breaker, created on first use. Only the stripe's reference
    /// count is touched, not the breaker's (which every thread shares).
    #[inline]
    pub(super) fn stripe(&self, key: &K, stripe: usize) -> Arc<Stripe<Lane>> {
        if let Some(entry) = self.map.load().get(key) {
            let now = self.millis();
            if entry.last_used.load(Ordering::Relaxed) != now {
                entry.last_used.store(now, Ordering::Relaxed);
            }
            return entry.stripes.nth(stripe).clone();
        }
        self.insert(key).nth(stripe).clone()
    }

    #[cold]
    fn insert(&self, key: &K) -> Arc<Stripes> {
        let writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        if let Some(entry) = current.get(key) {
            return entry.stripes.clone();
        }
        let now = self.millis();
        let mut next: HashMap<K, Arc<Entry>> = (*current).clone();
        // Bounded memory. First the idle keys go, except those whose breaker still rejects
        // calls (open with time left, or isolated): evicted, it would come back closed and let
        // everything through to a dependency it has just seen failing.
        let idle = crate::state::millis(self.idle);
        next.retain(|_, e| {
            now.saturating_sub(e.last_used()) < idle || e.rejecting_for(now).is_some()
        });
        // Then, while full, the least recently used of the breakers that admit calls; only if
        // every breaker rejects, the one that would probe soonest, with a warning.
        while next.len() >= self.max_keys {
            let victim = next
                .iter()
                .filter(|(_, e)| e.rejecting_for(now).is_none())
                .min_by_key(|(_, e)| e.last_used())
                .map(|(k, _)| k.clone());
            let victim = match victim {
                Some(k) => k,
                None => {
                    let Some((k, e)) = next
                        .iter()
                        .min_by_key(|(_, e)| (e.rejecting_for(now).unwrap_or(0), e.last_used()))
                    else {
                        break;
                    };
                    tracing::warn!(
                        target: "palisade_breaker",
                        breaker = %e.stripes.get().shared.core.name,
                        key = ?k,
                        open_for_ms = e.rejecting_for(now).unwrap_or(0),
                        max_keys = self.max_keys,
                        "evicting an open per-key breaker: every key's breaker is open and \
                         max_keys is reached; the key starts afresh, closed, if it comes back"
                    );
                    k.clone()
                }
            };
            next.remove(&victim);
        }
        let stripes = stripes(Arc::new(Shared {
            core: Core::new(
                format!("{}[{key:?}]", self.name).into(),
                *writer,
                Vec::new(),
            ),
            origin: self.origin,
        }));
        next.insert(
            key.clone(),
            Arc::new(Entry {
                stripes: stripes.clone(),
                last_used: AtomicU64::new(now),
            }),
        );
        tracing::debug!(target: "palisade_breaker", breaker = %self.name, ?key, keys = next.len(), "per-key breaker created");
        self.map.store(Arc::new(next));
        stripes
    }
}
