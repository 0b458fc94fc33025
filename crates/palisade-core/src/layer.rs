//! [`ClassifyLayer`]: configuration only.

use tower_layer::Layer;

use crate::{ClassifyService, DefaultClassifier};

/// Applies a classifier to every outcome of the inner service; see the [crate docs](crate).
#[derive(Clone, Debug, Default)]
pub struct ClassifyLayer<C = DefaultClassifier> {
    classifier: C,
}

impl<C> ClassifyLayer<C> {
    /// A layer that classifies with `classifier`.
    pub fn new(classifier: C) -> Self {
        ClassifyLayer { classifier }
    }
}

impl<S, C: Clone> Layer<S> for ClassifyLayer<C> {
    type Service = ClassifyService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService::new(inner, self.classifier.clone())
    }
}
