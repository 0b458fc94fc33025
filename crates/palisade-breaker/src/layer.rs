//! [`BreakerLayer`] and its builder: configuration, and the breaker state its services share.

use std::fmt;
use std::sync::Arc;

use palisade_classify::ConfigError;
use tokio::time::Instant;
use tower_layer::Layer;

use crate::handle::{BreakerHandle, Shared, Stripes};
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
            .field("name", &self.stripes.shared().core.name)
            .field("config", &self.stripes.shared().core.cfg)
            .finish()
    }
}

impl BreakerLayer {
    /// A breaker named `name` with the defaults of [`BreakerConfig`](crate::BreakerConfig).
    pub fn new(name: impl Into<String>) -> Self {
        BreakerLayer::builder(name)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a breaker named `name`.
    pub fn builder(name: impl Into<String>) -> BreakerBuilder {
        BreakerBuilder {
            name: name.into(),
            config: BreakerConfig::default(),
            listeners: Vec::new(),
        }
    }

    /// The handle for manual control and metrics.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.stripes.shared().clone(),
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::from_stripes(inner, self.stripes.clone())
    }
}

/// Configures a [`BreakerLayer`].
pub struct BreakerBuilder {
    name: String,
    config: BreakerConfig,
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
    /// The whole configuration.
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut BreakerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Adds a listener for state changes and rejections.
    pub fn listener(mut self, listener: impl Listener + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<BreakerLayer, ConfigError> {
        self.config.validate()?;
        Ok(BreakerLayer {
            stripes: Stripes::new(Arc::new(Shared {
                core: Core::new(self.name.into(), self.config, self.listeners),
                origin: Instant::now(),
            })),
        })
    }
}
