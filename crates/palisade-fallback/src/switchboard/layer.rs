//! [`FeatureLayer`]: a feature with its fallback, configuration only.

use std::fmt;

use palisade_core::{Class, ConfigError};
use tower_layer::Layer;

use super::{Feature, Gate};
use crate::{Fallback, FallbackBuilder, FallbackLayer};

/// A named feature with its fallback: while the feature is off, or when it fails, the fallback
/// answers (marked degraded): a feature flag with a fallback, as a layer.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_fallback::{Constant, FeatureLayer, FeatureState, Switchboard};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let board = Switchboard::new();
/// let summaries = board.feature("summaries");
/// let svc = ServiceBuilder::new()
///     .layer(FeatureLayer::new(summaries.clone(), Constant("(summary unavailable)".to_owned())))
///     .service(service_fn(|text: String| async move { Ok::<_, BoxError>(format!("summary of {text}")) }));
///
/// summaries.turn_off();
/// let answer = svc.oneshot("a long text".to_owned()).await.unwrap();
/// assert!(answer.is_degraded());
/// assert_eq!(answer.into_inner(), "(summary unavailable)");
/// assert_eq!(board.snapshot()[0].state, FeatureState::TurnedOff);
/// # }
/// ```
///
/// # Tiers
/// A condition's tiered strategies (for "primary service unavailable": wait and retry → use a
/// backup service → queue for manual processing) are a [`Chain`]:
/// `Chain::new().then(Alternative::new(primary_with_retry)).then(Alternative::new(backup)).then(FromRequest(queue))`.
///
/// [`Chain`]: crate::Chain
pub struct FeatureLayer<St> {
    feature: Feature,
    fallback: FallbackLayer<St>,
}

impl<St> Clone for FeatureLayer<St> {
    fn clone(&self) -> Self {
        FeatureLayer {
            feature: self.feature.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<St> fmt::Debug for FeatureLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureLayer")
            .field("feature", &self.feature)
            .finish_non_exhaustive()
    }
}

impl<St> FeatureLayer<St> {
    /// `feature`, answered by `strategy` while off or failing, with the fallback's defaults
    /// ([`FallbackLayer::new`]'s): the dependency's failures
    /// ([`handles_by_default`](crate::handles_by_default), which includes the feature's own
    /// refusal while off, a [`FeatureOff`](super::FeatureOff)) are answered, and a failing
    /// response nothing answered is handed back. [`builder`](Self::builder) changes either.
    pub fn new(feature: Feature, strategy: St) -> Self {
        FeatureLayer {
            feature,
            fallback: FallbackLayer::new(strategy),
        }
    }

    /// `feature`, answered by `strategy`, with a setter per option of the fallback; the
    /// defaults are [`new`](Self::new)'s.
    pub fn builder(feature: Feature, strategy: St) -> FeatureBuilder<St> {
        FeatureBuilder {
            feature,
            fallback: FallbackLayer::builder(strategy),
        }
    }
}

/// Builds a [`FeatureLayer`]; made by [`FeatureLayer::builder`]. (A [`Feature`] itself comes
/// from a [`Switchboard`](super::Switchboard).)
pub struct FeatureBuilder<St> {
    feature: Feature,
    fallback: FallbackBuilder<St>,
}

impl<St> fmt::Debug for FeatureBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureBuilder")
            .field("feature", &self.feature)
            .finish_non_exhaustive()
    }
}

impl<St> FeatureBuilder<St> {
    /// Chooses which failures the fallback answers for, by class
    /// ([`FallbackBuilder::handles`]). A predicate that leaves out
    /// [`Category::Rejected`](palisade_core::Category::Rejected) lets the feature's
    /// [`FeatureOff`](super::FeatureOff) refusal through to the caller as an error.
    pub fn handles(mut self, predicate: impl Fn(&Class) -> bool + Send + Sync + 'static) -> Self {
        self.fallback = self.fallback.handles(predicate);
        self
    }

    /// Whether a failing response is handed back when no fallback answers (default `true`;
    /// [`FallbackBuilder::restore_failed_responses`]).
    pub fn restore_failed_responses(mut self, restore: bool) -> Self {
        self.fallback = self.fallback.restore_failed_responses(restore);
        self
    }

    /// The layer.
    ///
    /// # Errors
    /// Those of [`FallbackBuilder::build`] (none today).
    pub fn build(self) -> Result<FeatureLayer<St>, ConfigError> {
        Ok(FeatureLayer {
            feature: self.feature,
            fallback: self.fallback.build()?,
        })
    }
}

impl<S, St> Layer<S> for FeatureLayer<St> {
    type Service = Fallback<Gate<S>, St>;

    fn layer(&self, inner: S) -> Self::Service {
        self.fallback.layer(Gate::new(inner, self.feature.clone()))
    }
}
