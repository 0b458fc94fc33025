//! The degradation switchboard: named features that can be turned off by hand or turn
//! themselves off when they keep failing, answering with their fallback meanwhile.
//!
//! A feature's words are "on" and "off" ([`Feature::turn_on`], [`Feature::turn_off`]): a
//! feature that is off sends every call to its fallback, the opposite of a bypassed breaker,
//! which lets every call through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_classify::stripe::{Stripe, Striped};
use palisade_classify::{BoxError, Class, ConfigError, ErrorStats, class_of};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Fallback, FallbackBuilder, FallbackLayer};

const ON: u8 = 0;
const MANUAL_OFF: u8 = 1;
const AUTO_OFF: u8 = 2;

/// The number of buckets a feature's failure window is divided into.
const BUCKETS: usize = 10;

/// When a feature turns itself off and back on.
///
/// Built from [`Default`] and changed field by field (the struct is `#[non_exhaustive]`, so a
/// field added later breaks nobody):
///
/// ```
/// use std::time::Duration;
/// use palisade_fallback::FeatureConfig;
///
/// let mut config = FeatureConfig::default();
/// config.failures_to_turn_off = Some(3);
/// config.cooldown = Duration::from_secs(10);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeatureConfig {
    /// Failures within `window` that turn the feature off (default `Some(5)`); `None`: it
    /// never turns itself off, only by hand. Failures that do not count against the
    /// dependency's health (a client fault, a cancellation) are not counted.
    pub failures_to_turn_off: Option<u32>,
    /// The window failures are counted over, sliding in tenths (default 60 s).
    pub window: Duration,
    /// How long it stays off after turning itself off before one probe call may try it again
    /// (default 30 s).
    pub cooldown: Duration,
}

impl Default for FeatureConfig {
    /// Off after 5 failures within 60 s; a probe after 30 s.
    fn default() -> Self {
        FeatureConfig {
            failures_to_turn_off: Some(5),
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

impl FeatureConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `failures_to_turn_off` must be at least 1 when set (`None`, not 0, is how a feature
    /// never turns itself off); `window` must be at least 10 ns (one per bucket of its tenths)
    /// and shorter than 5,800 years; `cooldown` must be greater than zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.failure_window(Instant::now()).map(drop)
    }

    /// The feature's failure window counting from `origin`, once every field is checked.
    fn failure_window(&self, origin: Instant) -> Result<ErrorStats, ConfigError> {
        if self.failures_to_turn_off == Some(0) {
            return Err(ConfigError::new(
                "failures_to_turn_off",
                "must be at least 1 (None: never turns itself off)",
            ));
        }
        if self.cooldown.is_zero() {
            return Err(ConfigError::new("cooldown", "must be greater than zero"));
        }
        ErrorStats::builder()
            .window(self.window)
            .buckets(BUCKETS)
            .build(origin)
    }
}

/// Whether a feature is on, and if not, why it is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureState {
    /// Calls go to the feature.
    On,
    /// Turned off by an operator ([`Feature::turn_off`]) until turned on again.
    TurnedOff,
    /// Turned off by its own failures; a probe may try it once `retry_after` has passed, and
    /// a probe that succeeds turns it back on with a clean record.
    AutoOff {
        /// Time left before a probe may try it.
        retry_after: Duration,
    },
}

/// One feature's line on a status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: FeatureState,
    /// Failures counted in its window.
    pub recent_failures: u64,
}

struct Inner {
    name: String,
    config: FeatureConfig,
    origin: Instant,
    state: AtomicU8,
    /// While off by its failures: when a probe may try, ms since origin.
    until: AtomicU64,
    probing: AtomicBool,
    /// Failures in the window. Cleared when the feature is turned back on; read and written
    /// only after a failure and for a status page, never on the success path.
    failures: ErrorStats,
}

/// A handle on one named feature: shared by its layers and the switchboard.
#[derive(Clone)]
pub struct Feature {
    inner: Arc<Inner>,
}

impl fmt::Debug for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feature")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

/// What a gate decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    Probe,
    No,
}

impl Feature {
    fn now_ms(&self) -> u64 {
        self.inner.origin.elapsed().as_millis() as u64
    }

    /// The feature's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Turns it on (ending an automatic or manual off): calls go to the feature again. A
    /// feature turned back on starts with a clean record: the failures counted before are
    /// forgotten.
    pub fn turn_on(&self) {
        if self.set(ON, "feature turned on") {
            self.clear_failures();
        }
    }

    /// Turns it off until [`turn_on`](Self::turn_on): every call goes to the fallback, without
    /// reaching the feature.
    pub fn turn_off(&self) {
        self.set(MANUAL_OFF, "feature turned off by hand");
    }

    /// Sets the state; whether it changed.
    fn set(&self, state: u8, message: &'static str) -> bool {
        let changed = self.inner.state.swap(state, Ordering::AcqRel) != state;
        if changed {
            tracing::info!(target: "palisade_fallback", feature = %self.inner.name, "{message}");
        }
        changed
    }

    /// Forgets the failures counted so far: the failures that turned the feature off say
    /// nothing about it once it is back on.
    fn clear_failures(&self) {
        self.inner.failures.clear();
    }

    /// Its state now.
    pub fn state(&self) -> FeatureState {
        match self.inner.state.load(Ordering::Acquire) {
            ON => FeatureState::On,
            MANUAL_OFF => FeatureState::TurnedOff,
            _ => FeatureState::AutoOff {
                retry_after: Duration::from_millis(
                    self.inner
                        .until
                        .load(Ordering::Acquire)
                        .saturating_sub(self.now_ms()),
                ),
            },
        }
    }

    /// Whether it is on: calls go to the feature now.
    pub fn is_on(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == ON
    }

    #[inline]
    fn admit(&self) -> Admit {
        match self.inner.state.load(Ordering::Acquire) {
            ON => Admit::Yes,
            MANUAL_OFF => Admit::No,
            _ if self.now_ms() >= self.inner.until.load(Ordering::Acquire)
                && self
                    .inner
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok() =>
            {
                Admit::Probe
            }
            _ => Admit::No,
        }
    }

    fn auto_off(&self) {
        let cooldown_ms = u64::try_from(self.inner.config.cooldown.as_millis()).unwrap_or(u64::MAX);
        let until = self.now_ms().saturating_add(cooldown_ms);
        self.inner.until.store(until, Ordering::Release);
        if self.inner.state.swap(AUTO_OFF, Ordering::AcqRel) != AUTO_OFF {
            tracing::warn!(target: "palisade_fallback", feature = %self.inner.name, cooldown_ms, "feature turned itself off after its failures");
        }
    }

    fn outcome(&self, failure: Option<Class>, probe: bool) {
        if probe {
            self.inner.probing.store(false, Ordering::Release);
        }
        match failure {
            // Only turn it back on if still off by its failures (an operator may have acted
            // meanwhile).
            None if probe
                && self
                    .inner
                    .state
                    .compare_exchange(AUTO_OFF, ON, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok() =>
            {
                self.clear_failures();
                tracing::info!(target: "palisade_fallback", feature = %self.inner.name, "feature back on after a successful probe");
            }
            None => {}
            Some(class) => {
                let now = Instant::now();
                let failures = &self.inner.failures;
                failures.record(class, now);
                let limit = self.inner.config.failures_to_turn_off;
                if probe || limit.is_some_and(|limit| failures.total(now) >= u64::from(limit)) {
                    self.auto_off();
                }
            }
        }
    }

    fn status(&self) -> FeatureStatus {
        FeatureStatus {
            name: self.inner.name.clone(),
            state: self.state(),
            recent_failures: self.inner.failures.total(Instant::now()),
        }
    }
}

/// Named features, for a status page and for operators.
#[derive(Clone, Default)]
pub struct Switchboard {
    features: Arc<Mutex<Vec<Feature>>>,
}

impl fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl Switchboard {
    /// An empty switchboard.
    pub fn new() -> Self {
        Self::default()
    }

    /// The feature named `name`, registered with the default [`FeatureConfig`] on first use
    /// (off after 5 failures within 60 s; a probe after 30 s). A feature registered before
    /// under that name keeps its configuration.
    pub fn feature(&self, name: &str) -> Feature {
        self.feature_with(name, FeatureConfig::default())
            .expect("the default feature configuration is valid")
    }

    /// The feature named `name`, registered with `config` on first use. A feature registered
    /// before under that name keeps its configuration.
    ///
    /// # Errors
    /// A `config` that fails [`FeatureConfig::validate`] (checked even when the name is
    /// registered already).
    pub fn feature_with(&self, name: &str, config: FeatureConfig) -> Result<Feature, ConfigError> {
        let now = Instant::now();
        let failures = config.failure_window(now)?;
        let mut features = self.features.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = features.iter().find(|f| f.inner.name == name) {
            return Ok(f.clone());
        }
        let feature = Feature {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                config,
                origin: now,
                state: AtomicU8::new(ON),
                until: AtomicU64::new(0),
                probing: AtomicBool::new(false),
                failures,
            }),
        };
        features.push(feature.clone());
        Ok(feature)
    }

    /// Every feature's state, for a status page.
    pub fn snapshot(&self) -> Vec<FeatureStatus> {
        let features = self
            .features
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        features.iter().map(Feature::status).collect()
    }
}

pub use palisade_classify::failure::FeatureOff;

/// Lets calls through to a feature while it is on, fails them at once with
/// [`FeatureOff`] while it is off, and counts its failures (those that count against
/// health) to turn it off automatically. Usually used through [`FeatureLayer`].
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    /// The feature, striped: each gate instance reads its own stripe and its futures hold that
    /// stripe's reference, so instances on different threads never share a reference count.
    stripes: Arc<Striped<Feature>>,
    feature: Arc<Stripe<Feature>>,
}

impl<S> Gate<S> {
    fn new(inner: S, feature: Feature) -> Self {
        let stripes = Arc::new(Striped::new(feature));
        Gate {
            inner,
            feature: stripes.pick().clone(),
            stripes,
        }
    }
}

impl<S: Clone> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            inner: self.inner.clone(),
            feature: self.stripes.pick().clone(),
            stripes: self.stripes.clone(),
        }
    }
}

impl<S, Req> Service<Req> for Gate<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.feature.inner.state.load(Ordering::Acquire) == MANUAL_OFF {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.feature.admit() {
            Admit::No => GateFuture {
                inner: None,
                feature: None,
                probe: false,
                off: Some(self.feature.inner.name.clone()),
            },
            admit => GateFuture {
                inner: Some(self.inner.call(req)),
                feature: Some(self.feature.clone()),
                probe: admit == Admit::Probe,
                off: None,
            },
        }
    }
}

pin_project! {
    /// The future of a [`Gate`] call.
    pub struct GateFuture<F> {
        #[pin]
        inner: Option<F>,
        feature: Option<Arc<Stripe<Feature>>>,
        probe: bool,
        off: Option<String>,
    }

    impl<F> PinnedDrop for GateFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A dropped probe frees the probe slot without a verdict.
            if let Some(feature) = this.feature.take()
                && *this.probe
            {
                feature.inner.probing.store(false, Ordering::Release);
            }
        }
    }
}

impl<F> fmt::Debug for GateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for GateFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let feature = this.off.take().unwrap_or_default();
            return Poll::Ready(Err(Box::new(FeatureOff { feature })));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        this.inner.set(None);
        if let Some(feature) = this.feature.take() {
            let failure = match &result {
                Ok(_) => None,
                Err(e) => Some(class_of(e)).filter(Class::counts_against_health),
            };
            feature.outcome(failure, *this.probe);
        }
        Poll::Ready(result)
    }
}

/// A named feature with its fallback: while the feature is off, or when it fails, the fallback
/// answers (marked degraded): a feature flag with a fallback, as a layer.
///
/// ```
/// use palisade_classify::BoxError;
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
    /// refusal while off, a [`FeatureOff`]) are answered, and a failing response nothing
    /// answered is handed back. [`builder`](Self::builder) changes either.
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
/// from a [`Switchboard`].)
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
    /// [`Category::Rejected`](palisade_classify::Category::Rejected) lets the feature's
    /// [`FeatureOff`] refusal through to the caller as an error.
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
