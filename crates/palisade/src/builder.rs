//! palisade's layers as [`ServiceBuilder`] methods: [`ServiceBuilderExt`].

#[cfg(feature = "timeout")]
use std::time::Duration;

use tower::ServiceBuilder;
#[allow(
    unused_imports,
    reason = "every method is behind a feature; with none on, nothing uses it"
)]
use tower::layer::util::Stack;

/// palisade's layers as [`ServiceBuilder`] methods, one per layer, in the style of
/// tower-http's `ServiceBuilderExt`. Each adds its layer below the layers already added, as
/// [`ServiceBuilder::layer`] does; each is there when its crate's feature is on.
///
/// Two names differ from the layers' on purpose: tower's own `ServiceBuilder` has inherent
/// `timeout` and `retry` methods (behind tower's features of those names), and an inherent
/// method silently wins over a trait method of the same name, so palisade's are
/// [`attempt_timeout`](Self::attempt_timeout) and [`retries`](Self::retries).
///
/// The trait is sealed: only `ServiceBuilder` implements it, so methods can be added without
/// breaking anyone.
///
/// ```
/// use std::time::Duration;
/// use palisade::ServiceBuilderExt;
/// use palisade::breaker::BreakerLayer;
/// use palisade::classify::{BoxError, DefaultClassifier};
/// use palisade::fallback::Constant;
/// use palisade::retry::RetryLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let llm = service_fn(|_: String| async { Err::<String, BoxError>("503 Service Unavailable".into()) });
/// let agent = ServiceBuilder::new()
///     .fallback(Constant("Sorry, try again later.".to_owned()))
///     .deadline(Duration::from_secs(30))
///     .retries(RetryLayer::new())
///     .circuit_breaker(BreakerLayer::new("llm"))
///     .attempt_timeout(Duration::from_secs(10))
///     .classify(DefaultClassifier::default())
///     .service(llm);
/// let answer = agent.oneshot("hello".to_owned()).await.unwrap();
/// assert!(answer.degraded().is_some());
/// assert_eq!(answer.into_inner(), "Sorry, try again later.");
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Puts the service below in a `tracing` span per call (per attempt under a retry), named
    /// after `dependency`: [`TraceLayer::new`](crate::classify::trace::TraceLayer::new).
    #[cfg(feature = "classify")]
    fn trace(
        self,
        dependency: impl Into<std::sync::Arc<str>>,
    ) -> ServiceBuilder<Stack<crate::classify::trace::TraceLayer, L>>;

    /// Classifies every outcome of the service below:
    /// [`ClassifyLayer::new`](crate::classify::ClassifyLayer::new).
    #[cfg(feature = "classify")]
    fn classify<C>(
        self,
        classifier: C,
    ) -> ServiceBuilder<Stack<crate::classify::ClassifyLayer<C>, L>>;

    /// Bounds each call below (each attempt, under a retry):
    /// [`TimeoutLayer::new`](crate::timeout::TimeoutLayer::new).
    #[cfg(feature = "timeout")]
    fn attempt_timeout(
        self,
        limit: Duration,
    ) -> ServiceBuilder<Stack<crate::timeout::TimeoutLayer, L>>;

    /// Bounds each whole call, retries included, and tells the layers below the deadline:
    /// [`DeadlineLayer::new`](crate::timeout::DeadlineLayer::new).
    #[cfg(feature = "timeout")]
    fn deadline(self, limit: Duration) -> ServiceBuilder<Stack<crate::timeout::DeadlineLayer, L>>;

    /// Retries what the class says is worth retrying, with this retry layer
    /// ([`RetryLayer::new`](crate::retry::RetryLayer::new) or its builder).
    #[cfg(feature = "retry")]
    fn retries<B: ?Sized, A>(
        self,
        layer: crate::retry::RetryLayer<B, A>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<B, A>, L>>;

    /// Guards the dependency below with this circuit breaker
    /// ([`BreakerLayer::new`](crate::breaker::BreakerLayer::new) or its builder).
    #[cfg(feature = "breaker")]
    fn circuit_breaker(
        self,
        layer: crate::breaker::BreakerLayer,
    ) -> ServiceBuilder<Stack<crate::breaker::BreakerLayer, L>>;

    /// Answers the failures of the service below with `strategy`:
    /// [`FallbackLayer::new`](crate::fallback::FallbackLayer::new).
    #[cfg(feature = "fallback")]
    fn fallback<St>(
        self,
        strategy: St,
    ) -> ServiceBuilder<Stack<crate::fallback::FallbackLayer<St>, L>>;

    /// Carries the layers' context into each request, above a task boundary:
    /// [`CarryLayer`](crate::context::CarryLayer).
    #[cfg(feature = "classify")]
    fn carry_context(self) -> ServiceBuilder<Stack<crate::context::CarryLayer, L>>;

    /// Takes the context out of each request again, below a task boundary:
    /// [`ResumeLayer`](crate::context::ResumeLayer).
    #[cfg(feature = "classify")]
    fn resume_context(self) -> ServiceBuilder<Stack<crate::context::ResumeLayer, L>>;

    /// Adds a [`Preset`](crate::preset::Preset): the recommended stack, as one layer.
    #[cfg(all(
        feature = "classify",
        feature = "timeout",
        feature = "retry",
        feature = "breaker"
    ))]
    fn palisade<C, B: ?Sized, A>(
        self,
        preset: crate::preset::Preset<C, B, A>,
    ) -> ServiceBuilder<Stack<crate::preset::Preset<C, B, A>, L>>;

    /// Ends the builder with a [`Route`](crate::route::Route) as the service at the bottom,
    /// wrapped in the layers added so far: the router is not a layer but the service that
    /// picks an endpoint for each call (as tower's `Balance` is), so this stands where
    /// [`ServiceBuilder::service`] would.
    ///
    /// ```
    /// use palisade::ServiceBuilderExt;
    /// use palisade::classify::{BoxError, DefaultClassifier};
    /// use palisade::retry::RetryLayer;
    /// use palisade::route::Route;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let replica = |name: &'static str| service_fn(move |_: ()| async move { Ok::<_, BoxError>(name) });
    /// let client = ServiceBuilder::new()
    ///     .retries(RetryLayer::new())
    ///     .classify(DefaultClassifier::default())
    ///     .route(Route::new([replica("east"), replica("west")]));
    /// assert!(["east", "west"].contains(&client.oneshot(()).await?));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "route")]
    fn route<D>(self, route: crate::route::Route<D>) -> L::Service
    where
        D: tower::discover::Discover,
        L: tower::Layer<crate::route::Route<D>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "classify")]
    fn trace(
        self,
        dependency: impl Into<std::sync::Arc<str>>,
    ) -> ServiceBuilder<Stack<crate::classify::trace::TraceLayer, L>> {
        self.layer(crate::classify::trace::TraceLayer::new(dependency))
    }

    #[cfg(feature = "classify")]
    fn classify<C>(
        self,
        classifier: C,
    ) -> ServiceBuilder<Stack<crate::classify::ClassifyLayer<C>, L>> {
        self.layer(crate::classify::ClassifyLayer::new(classifier))
    }

    #[cfg(feature = "timeout")]
    fn attempt_timeout(
        self,
        limit: Duration,
    ) -> ServiceBuilder<Stack<crate::timeout::TimeoutLayer, L>> {
        self.layer(crate::timeout::TimeoutLayer::new(limit))
    }

    #[cfg(feature = "timeout")]
    fn deadline(self, limit: Duration) -> ServiceBuilder<Stack<crate::timeout::DeadlineLayer, L>> {
        self.layer(crate::timeout::DeadlineLayer::new(limit))
    }

    #[cfg(feature = "retry")]
    fn retries<B: ?Sized, A>(
        self,
        layer: crate::retry::RetryLayer<B, A>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<B, A>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker(
        self,
        layer: crate::breaker::BreakerLayer,
    ) -> ServiceBuilder<Stack<crate::breaker::BreakerLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "fallback")]
    fn fallback<St>(
        self,
        strategy: St,
    ) -> ServiceBuilder<Stack<crate::fallback::FallbackLayer<St>, L>> {
        self.layer(crate::fallback::FallbackLayer::new(strategy))
    }

    #[cfg(feature = "classify")]
    fn carry_context(self) -> ServiceBuilder<Stack<crate::context::CarryLayer, L>> {
        self.layer(crate::context::CarryLayer::new())
    }

    #[cfg(feature = "classify")]
    fn resume_context(self) -> ServiceBuilder<Stack<crate::context::ResumeLayer, L>> {
        self.layer(crate::context::ResumeLayer::new())
    }

    #[cfg(all(
        feature = "classify",
        feature = "timeout",
        feature = "retry",
        feature = "breaker"
    ))]
    fn palisade<C, B: ?Sized, A>(
        self,
        preset: crate::preset::Preset<C, B, A>,
    ) -> ServiceBuilder<Stack<crate::preset::Preset<C, B, A>, L>> {
        self.layer(preset)
    }

    #[cfg(feature = "route")]
    fn route<D>(self, route: crate::route::Route<D>) -> L::Service
    where
        D: tower::discover::Discover,
        L: tower::Layer<crate::route::Route<D>>,
    {
        self.service(route)
    }
}

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}
