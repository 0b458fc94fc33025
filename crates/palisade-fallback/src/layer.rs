//! [`FallbackLayer`]: configuration only.

use std::fmt;
use std::sync::Arc;

use palisade_classify::{Category, Class};
use tower_layer::Layer;

use crate::Fallback;

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
/// [`FallbackLayer::handles`]:
///
/// ```
/// use palisade_classify::Category;
/// use palisade_fallback::{FallbackLayer, Static, handles_by_default};
///
/// let layer = FallbackLayer::new(Static("try again later".to_owned()))
///     .handles(|class| handles_by_default(class) || class.category == Category::Validation);
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
    /// Answers the dependency's failures ([`handles_by_default`]) with `strategy`, and hands back
    /// failing responses when no fallback answers.
    pub fn new(strategy: St) -> Self {
        FallbackLayer {
            config: Config {
                strategy: Arc::new(strategy),
                handles: Arc::new(handles_by_default),
                restore: true,
            },
        }
    }

    /// Chooses which failures the fallback answers for, by class, in place of
    /// [`handles_by_default`]. A failure it does not answer passes through unchanged (or comes
    /// back [restored](Self::restore_failed_responses), for a failing response).
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
