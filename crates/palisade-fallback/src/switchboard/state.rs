//! A feature's state ([`Feature`]): on, turned off by hand, or off by its own failures until a
//! probe succeeds; and the [`Switchboard`] that names them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_classify::{Class, ConfigError, ErrorStats};
use tokio::time::Instant;

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
pub(crate) enum Admit {
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

    /// Whether it was turned off by hand: a gate then reports ready without asking the
    /// feature's service.
    #[inline]
    pub(crate) fn is_turned_off(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == MANUAL_OFF
    }

    #[inline]
    pub(crate) fn admit(&self) -> Admit {
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

    /// Frees the probe slot without a verdict (a probe dropped before it finished).
    pub(crate) fn release_probe(&self) {
        self.inner.probing.store(false, Ordering::Release);
    }

    pub(crate) fn outcome(&self, failure: Option<Class>, probe: bool) {
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
