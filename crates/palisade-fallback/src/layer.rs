//! [`FallbackLayer`]: configuration only.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use palisade_core::{Category, Class, ConfigError};
use tower_layer::Layer;

use crate::Fallback;

pub(crate) type Handles = Arc<dyn Fn(&Class) -> bool + Send + Sync>;

/// The layer's settings. A service shares them with its futures through stripes (see
/// [`palisade_core::stripe`]), so that calls on different threads never contend on one
/// reference count.
pub(crate) struct Config<St> {
    pub(crate) strategy: Arc<St>,
    /// The dependency's name, for the metrics of the failure path.
    pub(crate) name: Arc<str>,
    pub(crate) handles: Handles,
    pub(crate) restore: bool,
    /// Whether a call found the strategy an empty chain yet: warned of once per layer, at the
    /// first failure it leaves unanswered (nothing knows the request type sooner).
    pub(crate) warned_empty: Arc<AtomicBool>,
}

impl<St> Clone for Config<St> {
    fn clone(&self) -> Self {
        Config {
            strategy: self.strategy.clone(),
            name: self.name.clone(),
            handles: self.handles.clone(),
            restore: self.restore,
            warned_empty: self.warned_empty.clone(),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for Config<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("strategy", &self.strategy)
            .field("name", &self.name)
            .field("restore", &self.restore)
            .finish_non_exhaustive()
    }
}

/// The default choice of failures to answer for: failures of the dependency, not of the caller.
///
/// Answered: server errors, transient faults, network faults, timeouts, rate limits, resource
/// exhaustion, refusals by a protecting layer ([`Category::Rejected`]: an open breaker, a
/// throttle, a feature switched off) and failures nothing is known about
/// ([`Category::Unknown`]).
///
/// Not answered: the caller's own faults ([`Category::Validation`], [`Category::NotFound`],
/// [`Category::Authentication`]), where a canned reply to a malformed request would hide a bug;
/// the caller's cancellation; and errors the classifier accepted as normal outcomes
/// ([`Category::Ignored`]). A category added to palisade later is not answered until it is
/// listed here. To answer client faults too, widen the choice with
/// [`FallbackBuilder::handles`]:
///
/// ```
/// use palisade_core::Category;
/// use palisade_fallback::{Constant, FallbackLayer, handles_by_default};
///
/// let layer = FallbackLayer::builder(Constant("try again later".to_owned()))
///     .handles(|class| handles_by_default(class) || class.category == Category::Validation)
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub fn handles_by_default(class: &Class) -> bool {
    matches!(
        class.category,
        Category::ServerError
            | Category::Transient
            | Category::Network
            | Category::Timeout
            | Category::RateLimited
            | Category::ResourceExhausted
            | Category::Rejected
            | Category::Unknown
    )
}

/// The name of an unnamed [`FallbackLayer`], in its metrics.
const DEFAULT_NAME: &str = "fallback";

/// Answers failures of the inner service with a strategy; see the [crate docs](crate).
///
/// # Metrics
/// A degraded answer is counted as `palisade.fallback.answers{dependency, strategy,
/// category}`, a call no strategy answered as `palisade.fallback.failed{dependency,
/// strategy}` (feature `metrics` of palisade-core), `dependency` being the name given to
/// [`FallbackBuilder::name`], `"fallback"` by default.
pub struct FallbackLayer<St> {
    pub(crate) config: Config<St>,
}

impl<St> Clone for FallbackLayer<St> {
    fn clone(&self) -> Self {
        FallbackLayer {
            config: self.config.clone(),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for FallbackLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FallbackLayer").field(&self.config).finish()
    }
}

impl<St> FallbackLayer<St> {
    /// Answers failures with `strategy`, with the defaults:
    ///
    /// * the failures answered are the dependency's ([`handles_by_default`]);
    /// * a failing response no fallback answers is handed back as
    ///   [`Answer::Restored`](crate::Answer::Restored);
    /// * its metrics name the dependency `"fallback"`.
    ///
    /// [`builder`](Self::builder) changes any of them.
    pub fn new(strategy: St) -> Self {
        FallbackLayer {
            config: Config {
                strategy: Arc::new(strategy),
                name: Arc::from(DEFAULT_NAME),
                handles: Arc::new(handles_by_default),
                restore: true,
                warned_empty: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    /// A layer answering failures with `strategy`, with a setter per option; the defaults are
    /// [`new`](Self::new)'s.
    pub fn builder(strategy: St) -> FallbackBuilder<St> {
        FallbackBuilder {
            layer: Self::new(strategy),
        }
    }

    /// The dependency's name, as its metrics are labelled ([`FallbackBuilder::name`]).
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Builds a [`FallbackLayer`]; made by [`FallbackLayer::builder`].
pub struct FallbackBuilder<St> {
    layer: FallbackLayer<St>,
}

impl<St: fmt::Debug> fmt::Debug for FallbackBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FallbackBuilder")
            .field(&self.layer.config)
            .finish()
    }
}

impl<St> FallbackBuilder<St> {
    /// Chooses which failures the fallback answers for, by class, in place of
    /// [`handles_by_default`]. A failure it does not answer passes through unchanged (or comes
    /// back [restored](Self::restore_failed_responses), for a failing response).
    pub fn handles(mut self, predicate: impl Fn(&Class) -> bool + Send + Sync + 'static) -> Self {
        self.layer.config.handles = Arc::new(predicate);
        self
    }

    /// Whether a failing response ([`FailedResponse`](palisade_core::FailedResponse)) is
    /// handed back as [`Answer::Restored`](crate::Answer::Restored) when no fallback answers
    /// (default `true`); otherwise the error stays an error.
    pub fn restore_failed_responses(mut self, restore: bool) -> Self {
        self.layer.config.restore = restore;
        self
    }

    /// The name of the dependency whose failures this layer answers for (`"fallback"` by
    /// default): its answers and its calls left unanswered are counted
    /// with it as the `dependency` label of `palisade.fallback.answers` and
    /// `palisade.fallback.failed`, as the retry layer's and the breaker's metrics are labelled
    /// with theirs. The response futures reach it through the configuration they already
    /// share, so it costs a call nothing.
    ///
    /// ```
    /// use palisade_fallback::{Constant, FallbackLayer};
    ///
    /// let layer = FallbackLayer::builder(Constant("sorry")).name("llm").build().unwrap();
    /// assert_eq!(layer.name(), "llm");
    /// assert_eq!(FallbackLayer::new(Constant("sorry")).name(), "fallback");
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.layer.config.name = name.into();
        self
    }

    /// The layer.
    ///
    /// # Errors
    /// None today: every combination of these options is valid. The `Result` is the shape
    /// every palisade builder has, so that an option added later can be checked without
    /// breaking callers.
    pub fn build(self) -> Result<FallbackLayer<St>, ConfigError> {
        Ok(self.layer)
    }
}

impl<S, St> Layer<S> for FallbackLayer<St> {
    type Service = Fallback<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_layer(inner, self)
    }
}
