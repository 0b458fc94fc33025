//! [`KeyedBreakerLayer`] and its builder.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_core::ConfigError;
use tokio::time::Instant;
use tower_layer::Layer;

use super::handle::KeyedHandle;
use super::service::KeyedBreaker;
use super::state::Registry;
use crate::BreakerConfig;

/// One circuit breaker per key taken from the request (a provider, a model, a tool, a tenant),
/// created on first use. See [`KeyedBreakerLayer::new`] and [`KeyedBreakerLayer::builder`].
///
/// Looking a key up takes no lock: the keys live in an immutable map behind an
/// [`ArcSwap`](arc_swap::ArcSwap), replaced whole when a key is added (rare). Memory is
/// bounded: when a new key arrives, keys idle longer than
/// [`idle_timeout`](KeyedBreakerBuilder::idle_timeout) are dropped, and beyond
/// [`max_keys`](KeyedBreakerBuilder::max_keys) the least recently used key (to the
/// millisecond) is dropped; a dropped key's breaker starts afresh, closed, if it comes back.
/// A breaker that still rejects calls (open with time left in its open period, or isolated)
/// is never dropped for being idle, and is dropped for room only when every key's breaker
/// rejects; then the one whose open period ends first goes, with a `tracing` warning.
///
/// # Hierarchy
/// Put a [`BreakerLayer`](crate::BreakerLayer) for the parent (a provider) above a keyed layer
/// for the children (its models): an open parent fails every child's calls fast, without
/// reaching them. Add [`KeyedHandle::propagate`] as a listener of the parent to also trip every
/// child when the parent opens, so each child probes on its own afterwards.
pub struct KeyedBreakerLayer<K, F> {
    pub(super) registry: Arc<Registry<K>>,
    key: F,
}

impl<K, F: Clone> Clone for KeyedBreakerLayer<K, F> {
    fn clone(&self) -> Self {
        KeyedBreakerLayer {
            registry: self.registry.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K, F> fmt::Debug for KeyedBreakerLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("name", &self.registry.name)
            .finish_non_exhaustive()
    }
}

/// Configures a [`KeyedBreakerLayer`]; made by [`KeyedBreakerLayer::builder`].
pub struct KeyedBreakerBuilder<K, F> {
    name: String,
    key: F,
    config: BreakerConfig,
    max_keys: usize,
    idle: Duration,
    _key: PhantomData<fn() -> K>,
}

impl<K, F> fmt::Debug for KeyedBreakerBuilder<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<K, F> KeyedBreakerLayer<K, F> {
    /// Per-key breakers named `name[key]`, `key` taking the key from each request, each with
    /// the defaults of [`BreakerConfig`] (see [`BreakerLayer::new`](crate::BreakerLayer::new)),
    /// at most 1024 keys, idle keys dropped after an hour.
    ///
    /// The key function's signature names the request type, so nothing else needs a type
    /// annotation:
    ///
    /// ```
    /// use palisade_breaker::KeyedBreakerLayer;
    /// use palisade_core::BoxError;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// struct Completion {
    ///     model: &'static str,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = KeyedBreakerLayer::new("model", |c: &Completion| c.model);
    /// let handle = layer.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service(service_fn(|_: Completion| async { Ok::<_, BoxError>("done") }));
    /// assert_eq!(svc.oneshot(Completion { model: "small" }).await.unwrap(), "done");
    /// assert_eq!(handle.keys(), ["small"]);
    /// # }
    /// ```
    pub fn new<Req>(name: impl Into<String>, key: F) -> Self
    where
        F: Fn(&Req) -> K,
    {
        KeyedBreakerLayer::builder(name, key)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for per-key breakers named `name[key]`, `key` taking the key from each
    /// request: the setters of [`BreakerLayer::builder`](crate::BreakerLayer::builder) (the
    /// configuration every key's breaker gets), plus [`max_keys`](KeyedBreakerBuilder::max_keys)
    /// and [`idle_timeout`](KeyedBreakerBuilder::idle_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_breaker::{BreakerConfig, KeyedBreakerLayer};
    ///
    /// struct Call {
    ///     tenant: u32,
    /// }
    ///
    /// let layer = KeyedBreakerLayer::builder("tenant", |c: &Call| c.tenant)
    ///     .config(BreakerConfig::classic())
    ///     .max_keys(10_000)
    ///     .idle_timeout(Duration::from_secs(600))
    ///     .build()?;
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn builder<Req>(name: impl Into<String>, key: F) -> KeyedBreakerBuilder<K, F>
    where
        F: Fn(&Req) -> K,
    {
        KeyedBreakerBuilder {
            name: name.into(),
            key,
            config: BreakerConfig::default(),
            max_keys: 1024,
            idle: Duration::from_secs(3600),
            _key: PhantomData,
        }
    }
}

impl<K, F> KeyedBreakerBuilder<K, F> {
    crate::config::config_setters!();

    /// The most keys kept at once (1024; at least 1). Beyond it the least recently used key
    /// whose breaker admits calls is dropped (see [`KeyedBreakerLayer`]).
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// Keys unused this long are dropped when a new key arrives (1 hour; at least 1 s), unless
    /// their breaker still rejects calls.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the invalid field (see [`BreakerConfig::validate`]).
    pub fn build(self) -> Result<KeyedBreakerLayer<K, F>, ConfigError> {
        self.config.validate()?;
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if self.idle < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be at least one second",
            ));
        }
        Ok(KeyedBreakerLayer {
            registry: Arc::new(Registry {
                name: self.name,
                origin: Instant::now(),
                max_keys: self.max_keys,
                idle: self.idle,
                map: ArcSwap::from_pointee(HashMap::new()),
                write: std::sync::Mutex::new(self.config),
                stripes: AtomicUsize::new(0),
            }),
            key: self.key,
        })
    }
}

impl<K, F> KeyedBreakerLayer<K, F> {
    /// A handle on every key's breaker.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedBreakerLayer<K, F> {
    type Service = KeyedBreaker<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            registry: self.registry.clone(),
            key: self.key.clone(),
            stripe: self.registry.next_stripe(),
        }
    }
}
