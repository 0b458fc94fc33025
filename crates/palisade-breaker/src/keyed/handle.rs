//! [`KeyedHandle`]: control of every key's breaker.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::state::Registry;
use crate::handle::BreakerHandle;
use crate::state::{Event, Listener, State};

/// A handle on the breakers of a [`KeyedBreakerLayer`](super::KeyedBreakerLayer).
pub struct KeyedHandle<K> {
    pub(super) registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        KeyedHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.registry.name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> KeyedHandle<K> {
    /// The handle of one key's breaker, if it exists.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.registry.map.load().get(key).map(|e| BreakerHandle {
            stripes: e.stripes.clone(),
        })
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.map.load().keys().cloned().collect()
    }

    /// Trips every key's breaker (see [`BreakerHandle::trip`]).
    pub fn trip_all(&self) {
        for e in self.registry.map.load().values() {
            let shared = &e.stripes.get().shared;
            shared.core.trip_now(shared.now_ms());
        }
    }

    /// A [`Listener`] for a parent breaker that trips every child here when the parent opens.
    pub fn propagate(&self) -> impl Listener + 'static
    where
        K: Send + Sync + 'static,
    {
        Propagate(self.clone())
    }
}

struct Propagate<K>(KeyedHandle<K>);

impl<K: Hash + Eq + Clone + fmt::Debug + Send + Sync> Listener for Propagate<K> {
    fn on_event(&self, parent: &str, event: Event) {
        if let Event::Transition {
            to: State::Open, ..
        } = event
        {
            tracing::info!(target: "palisade_breaker", breaker = %self.0.registry.name, parent, "parent opened: tripping its children");
            self.0.trip_all();
        }
    }
}
