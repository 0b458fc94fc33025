//! [`FallbackLayer`]: configuration only.

use std::fmt;
use std::sync::Arc;

use palisade_classify::{Category, Class};
use tower_layer::Layer;

use crate::{Fallback, FallbackFailed};

pub(crate) type Handles = Arc<dyn Fn(&Class) -> bool + Send + Sync>;

/// The layer's settings. A service shares them with its futures through stripes (see
/// [`palisade_classify::stripe`]), so that calls on different threads never contend on one
/// reference count.
pub(crate) struct Config<St> {
    pub(crate) strategy: Arc<St>,
    pub(crate) handles: Handles,
    pub(crate) restore: bool,
}

impl<St> Clone for Config<St> {
    fn clone(&self) -> Self {
        Config {
            strategy: self.strategy.clone(),
            handles: self.handles.clone(),
            restore: self.restore,
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for Config<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("strategy", &self.strategy)
            .field("restore", &self.restore)
            .finish_non_exhaustive()
    }
}

/// The default choice of failures to answer for: all of them, except the caller's own
/// cancellation and errors the classifier accepted as normal outcomes.
pub fn handles_by_default(class: &Class) -> bool {
    !matches!(class.category, Category::Cancelled | Category::Ignored)
}

/// Answers failures of the inner service with a strategy; see the [crate docs](crate).
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
    /// Answers every failure but cancellations with `strategy`, and hands back failing
    /// responses when no fallback answers.
    pub fn new(strategy: St) -> Self {
        palisade_classify::register::<FallbackFailed>();
        FallbackLayer {
            config: Config {
                strategy: Arc::new(strategy),
                handles: Arc::new(handles_by_default),
                restore: true,
            },
        }
    }

    /// Chooses which failures the fallback answers for, by class.
    pub fn handles(mut self, predicate: impl Fn(&Class) -> bool + Send + Sync + 'static) -> Self {
        self.config.handles = Arc::new(predicate);
        self
    }

    /// Whether a failing response ([`FailedResponse`](palisade_classify::FailedResponse)) is
    /// handed back as [`Answer::Restored`](crate::Answer::Restored) when no fallback answers
    /// (default `true`); otherwise the error stays an error.
    pub fn restore_failed_responses(mut self, restore: bool) -> Self {
        self.config.restore = restore;
        self
    }
}

impl<S, St> Layer<S> for FallbackLayer<St> {
    type Service = Fallback<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_layer(inner, self)
    }
}
