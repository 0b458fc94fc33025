//! Per-key breakers: one breaker per provider, model, tool or tenant, created on first use.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_classify::{BoxError, ConfigError};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::BreakerConfig;
use crate::future::{Guard, ResponseFuture};
use crate::handle::{BreakerHandle, Shared, Stripe, Stripes};
use crate::state::{Core, Event, Listener, State};

struct Entry {
    stripes: Arc<Stripes>,
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
        self.stripes.shared().core.rejecting_for(now)
    }
}

/// The breakers of a [`KeyedBreakerLayer`], shared by its services and handles.
struct Registry<K> {
    name: String,
    config: BreakerConfig,
    origin: Instant,
    max_keys: usize,
    idle: Duration,
    /// An immutable snapshot, swapped whole on insert or eviction: lookups take no lock.
    map: ArcSwap<HashMap<K, Arc<Entry>>>,
    /// Serializes writers only (first use of a key, eviction); readers never touch it.
    write: std::sync::Mutex<()>,
    /// Hands out stripes to service instances, round robin.
    stripes: AtomicUsize,
}

impl<K> Registry<K> {
    fn next_stripe(&self) -> usize {
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
    fn stripe(&self, key: &K, stripe: usize) -> Arc<Stripe> {
        if let Some(entry) = self.map.load().get(key) {
            let now = self.millis();
            if entry.last_used.load(Ordering::Relaxed) != now {
                entry.last_used.store(now, Ordering::Relaxed);
            }
            return entry.stripes.get(stripe).clone();
        }
        self.insert(key).get(stripe).clone()
    }

    #[cold]
    fn insert(&self, key: &K) -> Arc<Stripes> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        if let Some(entry) = current.get(key) {
            return entry.stripes.clone();
        }
        let now = self.millis();
        let mut next: HashMap<K, Arc<Entry>> = (*current).clone();
        // Bounded memory. First the idle keys go, except those whose breaker still rejects
        // calls (open with time left, or isolated): evicted, it would come back closed and let
        // everything through to a dependency it has just seen failing.
        let idle = self.idle.as_millis() as u64;
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
                        breaker = %e.stripes.shared().core.name,
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
        let stripes = Stripes::new(Arc::new(Shared {
            core: Core::new(
                format!("{}[{key:?}]", self.name).into(),
                self.config,
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
    registry: Arc<Registry<K>>,
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
    /// use palisade_classify::BoxError;
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
    /// # Ok::<(), palisade_classify::ConfigError>(())
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
                config: self.config,
                origin: Instant::now(),
                max_keys: self.max_keys,
                idle: self.idle,
                map: ArcSwap::from_pointee(HashMap::new()),
                write: std::sync::Mutex::new(()),
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

/// The service a [`KeyedBreakerLayer`] makes. Readiness is the inner service's; the key's
/// breaker decides at `call`, failing fast with [`CircuitOpen`](crate::CircuitOpen) when it is open.
pub struct KeyedBreaker<S, K, F> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: F,
    /// This instance's stripe in every key's breaker (see `Stripes`).
    stripe: usize,
}

impl<S: Clone, K, F: Clone> Clone for KeyedBreaker<S, K, F> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            stripe: self.registry.next_stripe(),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedBreaker<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .field("name", &self.registry.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedBreaker<S, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let stripe = self.registry.stripe(&(self.key)(&req), self.stripe);
        let shared = &stripe.shared;
        match shared.core.admit(|| shared.now_ms()) {
            Ok(ticket) => {
                ResponseFuture::admitted(self.inner.call(req), Guard::reserve(stripe, ticket))
            }
            Err(refused) => ResponseFuture::rejected(refused),
        }
    }
}

/// A handle on the breakers of a [`KeyedBreakerLayer`].
pub struct KeyedHandle<K> {
    registry: Arc<Registry<K>>,
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
            shared: e.stripes.shared().clone(),
        })
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.map.load().keys().cloned().collect()
    }

    /// Trips every key's breaker (see [`BreakerHandle::trip`]).
    pub fn trip_all(&self) {
        for e in self.registry.map.load().values() {
            let shared = e.stripes.shared();
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
