//! [`BreakerLayer`] and its builder: configuration, and the breaker state its services share.

use std::fmt;
use std::sync::Arc;

use palisade_core::ConfigError;
use tokio::time::Instant;
use tower_layer::Layer;

use crate::handle::{BreakerHandle, Shared, Stripes, stripes};
use crate::state::{Core, Listener};
use crate::{Breaker, BreakerConfig};

/// Puts one circuit breaker in front of a service. Every service this layer makes, and every
/// clone of them, shares the same breaker: it guards the dependency as a whole.
#[derive(Clone)]
pub struct BreakerLayer {
    pub(crate) stripes: Arc<Stripes>,
}

impl fmt::Debug for BreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("name", &self.stripes.get().shared.core.name)
            .field("config", &self.stripes.get().shared.core.live().cfg)
            .finish()
    }
}

impl BreakerLayer {
    /// A breaker named `name` with the defaults of [`BreakerConfig`]: it opens when at least
    /// 95 % of the last 30 calls failed (of the last second's, at least 10, where 30 calls
    /// reach back further), throttles adaptively while closed (`k` = 3 over the
    /// last 100 requests), stays open 500 ms (×1.5 per failed probe, at most 750 ms, ±10 %),
    /// probes one call at a time and closes after 2 successful probes; a probe gets 60 s.
    ///
    /// The name appears in [`CircuitOpen`](crate::CircuitOpen), in `tracing` events and in
    /// metrics.
    pub fn new(name: impl Into<String>) -> Self {
        BreakerLayer::builder(name)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a breaker named `name`, starting from [`BreakerConfig::default`]: one
    /// setter per configuration field, [`listener`](BreakerBuilder::listener)s, and
    /// [`build`](BreakerBuilder::build), which validates everything at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_breaker::{BreakerConfig, BreakerLayer, Rate};
    ///
    /// let layer = BreakerLayer::builder("search")
    ///     .failure_rate(Rate::new(0.5, 20))
    ///     .consecutive_failures(10)
    ///     .open_duration(Duration::from_secs(1))
    ///     .max_open_duration(Duration::from_secs(10))
    ///     .build()?;
    /// // Or a whole configuration, then a field changed.
    /// let classic = BreakerLayer::builder("db")
    ///     .config(BreakerConfig::classic())
    ///     .jitter_ratio(0.0)
    ///     .build()?;
    /// // Every field is checked, and the error names it.
    /// let err = BreakerLayer::builder("x").failure_rate(Rate::new(1.5, 20)).build().unwrap_err();
    /// assert_eq!(err.field(), "failure_rate.ratio");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn builder(name: impl Into<String>) -> BreakerBuilder {
        BreakerBuilder {
            name: name.into(),
            config: BreakerConfig::default(),
            max_open_set: false,
            listeners: Vec::new(),
        }
    }

    /// The handle for manual control and metrics.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            stripes: self.stripes.clone(),
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::from_stripes(inner, self.stripes.clone())
    }
}

/// Configures a [`BreakerLayer`]; made by [`BreakerLayer::builder`].
pub struct BreakerBuilder {
    name: String,
    config: BreakerConfig,
    /// Whether `max_open_duration` was set (or came with a whole configuration).
    max_open_set: bool,
    listeners: Vec<Arc<dyn Listener>>,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl BreakerBuilder {
    crate::config::config_setters!();

    /// Adds a listener for state changes and rejections.
    pub fn listener(mut self, listener: impl Listener + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field (see [`BreakerConfig::validate`]).
    pub fn build(self) -> Result<BreakerLayer, ConfigError> {
        let config = self.settled();
        config.validate()?;
        Ok(BreakerLayer {
            stripes: stripes(Arc::new(Shared {
                core: Core::new(self.name.into(), config, self.listeners),
                origin: Instant::now(),
            })),
        })
    }
}
