//! [`KeyedHandle`]: control of every key's breaker.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use palisade_core::ConfigError;

use super::state::Registry;
use crate::handle::BreakerHandle;
use crate::state::{Event, Listener, State};
use crate::{BreakerConfig, Reconfigured};

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
    ///
    /// The handle controls that breaker, not the key. While the key is kept, everything done
    /// through the handle (reading, [`isolate`](BreakerHandle::isolate),
    /// [`close`](BreakerHandle::close), [`trip`](BreakerHandle::trip), reconfiguring) applies
    /// to the key's calls. Once the key is evicted (idle, or for room at `max_keys`: see
    /// [`KeyedBreakerLayer`](super::KeyedBreakerLayer)'s *Eviction*), the key's next call gets
    /// a new breaker, closed, and the old handle reads and controls the old breaker, which no
    /// call reaches: isolating through it has no effect on traffic. Call `get` again to
    /// control the key's current breaker.
    ///
    /// A breaker isolated or bypassed through its handle while its key is kept stays kept
    /// (unless every key's breaker is isolated or bypassed), so the operator's setting holds.
    /// A key can be evicted between `get` and `isolate`: check with `get` afterwards (the
    /// same breaker is there, [`State::Isolated`]) when keys come and go quickly.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.registry
            .get(key)
            .map(|stripes| BreakerHandle { stripes })
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        let mut keys = Vec::new();
        self.registry.for_each(|k, _| keys.push(k.clone()));
        keys
    }

    /// The configuration every key's breaker runs with, and new keys' breakers start with.
    pub fn config(&self) -> BreakerConfig {
        self.registry.lock().config
    }

    /// Swaps the configuration of every key's breaker live (as
    /// [`BreakerHandle::reconfigure`] does for one: each keeps its state, open period,
    /// back-off, streak and, when the window is the same, its window), and of the breakers of
    /// keys that come later. Returns what each existing key's breaker kept, by key; each also
    /// logs its own `breaker reconfigured` event.
    ///
    /// A key seen for the first time while this runs gets the new configuration: keys are
    /// added under the same lock.
    ///
    /// ```
    /// use palisade_breaker::{BreakerConfig, KeyedBreakerLayer, State};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = KeyedBreakerLayer::builder("models", |model: &&str| model.to_string())
    ///     .build()
    ///     .unwrap();
    /// let handle = layer.handle();
    /// let mut config = BreakerConfig::classic();
    /// config.consecutive_failures = Some(2);
    /// let done = handle.reconfigure(config).unwrap();
    /// assert!(done.is_empty()); // no key yet
    /// assert_eq!(handle.config().consecutive_failures, Some(2));
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field (see [`BreakerConfig::validate`]);
    /// nothing changes then.
    pub fn reconfigure(
        &self,
        config: BreakerConfig,
    ) -> Result<Vec<(K, Reconfigured)>, ConfigError> {
        config.validate()?;
        let mut writer = self.registry.lock();
        writer.config = config;
        let mut done = Vec::new();
        self.registry.for_each(|key, stripes| {
            let shared = &stripes.get().shared;
            done.push((
                key.clone(),
                shared.core.reconfigure(config, shared.now_ms()),
            ));
        });
        drop(writer);
        Ok(done)
    }

    /// Trips every key's breaker (see [`BreakerHandle::trip`]: one isolated or bypassed by
    /// an operator stays so, one open stays open for the rest of its period).
    pub fn trip_all(&self) {
        self.registry.for_each(|_, stripes| {
            let shared = &stripes.get().shared;
            shared.core.trip_now(shared.now_ms());
        });
    }

    /// A [`Listener`] for a parent breaker that trips every child here when the parent opens
    /// (as [`trip_all`](Self::trip_all): a child an operator isolated or bypassed is left so).
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
            from,
            to: State::Open,
        } = event
        {
            if from == State::HalfOpen {
                // The parent's probe failed: the outage goes on, as quietly as the parent's.
                tracing::debug!(target: "palisade_breaker", breaker = %self.0.registry.name, parent, "parent re-opened: tripping its children again");
            } else {
                tracing::info!(target: "palisade_breaker", breaker = %self.0.registry.name, parent, "parent opened: tripping its children");
            }
            self.0.trip_all();
        }
    }
}
