//! [`KeyedBreakerLayer`] and its builder.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;
use tower_layer::Layer;

use super::handle::KeyedHandle;
use super::service::KeyedBreaker;
use super::state::Registry;
use crate::BreakerConfig;

/// One circuit breaker per key taken from the request (a provider, a model, a tool, a tenant),
/// created on first use. See [`KeyedBreakerLayer::new`] and [`KeyedBreakerLayer::builder`].
///
/// Looking a key up takes no lock and allocates nothing: the keys are spread by hash over
/// shards (one per 64 keys of [`max_keys`](KeyedBreakerBuilder::max_keys), at most 256), each
/// an immutable map behind an [`ArcSwap`](arc_swap::ArcSwap). Adding a key replaces its shard
/// only, so it copies about 64 entries (more beyond 16 384 keys), whatever the number of keys.
///
/// # Eviction
/// Memory is bounded:
///
/// * Keys unused for [`idle_timeout`](KeyedBreakerBuilder::idle_timeout) are dropped when a
///   new key arrives (looked for at most 64 times per idle timeout, so a key may outlive it
///   by up to a 64th of it, counted from when it could go: see below for the breakers that
///   are kept). A key is in use from the start of each call until the call's response
///   future is dropped (a completed future its caller keeps holds it in use too, as tower's
///   futures keep what they own until dropped; and while a [`Permit`](crate::Permit) taken
///   through its handle is held): its idle time counts from its last call's start, or from
///   the last time eviction found a call still running, whichever is later.
/// * At [`max_keys`](KeyedBreakerBuilder::max_keys), a new key makes room by dropping the
///   least recently used key (to the millisecond) whose breaker admits calls and has no call
///   in flight, chosen among the keys of four shards (its own, then the others in turn):
///   exactly the least recently used up to 64 keys, an approximation beyond.
///
/// A dropped key's breaker starts afresh, closed, if the key comes back. Some breakers are
/// kept:
///
/// * One with a call in flight (a long completion, a stream) is never dropped for being idle:
///   dropped, the call's outcome would go to a breaker no call reaches, and a failure that
///   trips it would be lost. It is dropped for room only when every key has a call in
///   flight (the map never grows beyond `max_keys`): then the least recently used goes, with
///   a `tracing` warning (`evicting a per-key breaker with a call in flight`), and its call's
///   outcome still goes to the dropped breaker.
/// * One that still rejects calls (open with time left in its open period) is never dropped
///   for being idle, and is dropped for room only when no breaker with no call in flight
///   admits calls; then the one whose open period ends first goes, with a `tracing` warning
///   (`evicting an open per-key breaker`, with `open_for_ms`).
/// * One an operator isolated or bypassed ([`BreakerHandle::isolate`](crate::BreakerHandle::isolate),
///   [`bypass`](crate::BreakerHandle::bypass)) is never dropped for being idle, and is dropped
///   for room only when every key's breaker was isolated or bypassed (or has a call in
///   flight): then the least recently used of them goes and the operator's setting for that key is lost, with a `tracing`
///   warning (`evicting a per-key breaker an operator set`, with its `state`). Keep
///   `max_keys` above the number of keys you isolate at once.
///
/// Each eviction is logged at `DEBUG` (`per-key breaker evicted`, with the breaker's `state`
/// and `why`: `idle` or `max_keys`). A [`BreakerHandle`](crate::BreakerHandle) taken with
/// [`KeyedHandle::get`] controls the breaker the key had then, not the key: see there.
///
/// # Metrics
/// Each key's breaker reports under its own name, `name[key]`, so the `breaker` label of the
/// `palisade.breaker.*` metrics takes one value per key ever seen, not bounded by `max_keys`
/// (a metrics recorder keeps every series it was given). Key by a bounded set (a provider, a
/// model, a tenant tier or a hash bucket of the tenant) when the keys are many or chosen by
/// clients. When a key is evicted while its breaker is not closed, its
/// `palisade.breaker.state` gauge is set to 0 and `palisade.breaker.transitions` counts a
/// transition to `evicted`: the `metrics` facade cannot delete a series, and a gauge left at
/// 1 (open) would report an outage nothing tracks any more. A dropped breaker still reports
/// when it moves: one whose call was in flight when it was dropped for room (see above), or
/// one an old [`BreakerHandle`](crate::BreakerHandle) controls, may set its gauge again.
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
    /// Whether `max_open_duration` was set (or came with a whole configuration).
    max_open_set: bool,
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
            max_open_set: false,
            max_keys: 1024,
            idle: Duration::from_secs(3600),
            _key: PhantomData,
        }
    }
}

impl<K, F> KeyedBreakerBuilder<K, F> {
    crate::config::config_setters!();

    /// The most keys kept at once (1024; at least 1). Beyond it the least recently used key
    /// whose breaker admits calls and has no call in flight is dropped, approximately beyond 64 keys (see
    /// [`KeyedBreakerLayer`]'s *Eviction*).
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// Keys unused this long are dropped when a new key arrives (1 hour; at least 1 s), unless
    /// a call on them is still in flight, their breaker still rejects calls or an operator
    /// isolated or bypassed it (see [`KeyedBreakerLayer`]'s *Eviction*).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the invalid field (see [`BreakerConfig::validate`]).
    pub fn build(self) -> Result<KeyedBreakerLayer<K, F>, ConfigError> {
        let config = self.settled();
        config.validate()?;
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
            registry: Arc::new(Registry::new(self.name, self.max_keys, self.idle, config)),
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
