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
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.registry.map.load().get(key).map(|e| BreakerHandle {
            stripes: e.stripes.clone(),
        })
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.map.load().keys().cloned().collect()
    }

    /// The configuration every key's breaker runs with, and new keys' breakers start with.
    pub fn config(&self) -> BreakerConfig {
        *self
            .registry
            .write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
        let mut writer = self
            .registry
            .write
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *writer = config;
        let map = self.registry.map.load_full();
        let done = map
            .iter()
            .map(|(key, e)| {
                let shared = &e.stripes.get().shared;
                (
                    key.clone(),
                    shared.core.reconfigure(config, shared.now_ms()),
                )
            })
            .collect();
        drop(writer);
        Ok(done)
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
