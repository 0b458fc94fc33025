//! A health monitor: one snapshot per dependency from the state the layers already keep, a
//! trend over recent checks, and anomaly detection on error rate and latency.
//!
//! A [`HealthMonitor`] holds, per dependency (an LLM API, a tool, another agent):
//!
//! - **components**: anything that can say whether it is healthy now — a breaker's
//!   [`BreakerHandle`](palisade_breaker::BreakerHandle) (healthy while closed or bypassed), a
//!   router's [`RouteHandle`](palisade_route::RouteHandle) (healthy while more than half its
//!   endpoints serve: not ejected, allowed traffic by their health, a rate limit's cool-down
//!   included), a switchboard's [`Feature`](palisade_fallback::Feature) (healthy
//!   while on), or any closure through [`component_fn`] (an `ErrorStats` threshold, a queue
//!   depth);
//! - a **watch** ([`HealthMonitor::watch`]), a layer that counts the dependency's calls,
//!   failures and latency ([`WatchLayer`] says what counts as what: a call a layer below it
//!   refused is a failure without a latency); each check turns the counts since the previous
//!   check into an error rate and a mean latency and feeds them to two streaming
//!   [`Detector`]s. A single
//!   failure is never an error-rate anomaly by itself (the error band is at least one call's
//!   share of the check's calls), nor is a count of failures that the dependency's usual
//!   failure rate (outages left out) gives in one check in 10 000 or more (binomial sampling noise: at 25 calls a
//!   check and a steady 1 %, two failures come in one check in 40), so a steady trickle of
//!   failures at a few calls a check raises no alarm; likewise one slow call is never a latency anomaly by itself (the
//!   latency is judged on the mean of the check's calls but its slowest), so a steady tail
//!   (a p99 of seconds) raises none while its slow calls come one to a check. Two in the same
//!   check can: with 1 % of calls slow at random, at 25 calls a check, two or more fall in
//!   one check about once in 40 checks, and such a check's mean may be flagged. Unlike the
//!   error rate's, the latency's band has no allowance for that sampling noise yet.
//!
//! Each [`check`](HealthMonitor::check) reads them all once. A check is *healthy* when every
//! component is healthy, neither detector flags an anomaly, and the error rate is at most
//! `max_error_ratio` (default 0.5; a dependency that fails from the start teaches its detector
//! nothing abnormal). The dependency's [`Status`] is the trend over the last `window` checks
//! (default 60): **healthy** when at least 95 % of them were healthy, **degrading** at least
//! 70 %, **unhealthy** below — the same rule the router applies to each endpoint's checks.
//!
//! Changes of status (a first verdict worse than healthy included, so that a service started
//! during an outage says so) and the start of an anomaly are *alerts*: a `tracing` event (target
//! `palisade::health`, `warn` when things get worse, `info` when they recover), a count in the
//! snapshot, and, with the `metrics` feature, the counter `palisade.health.alerts` (labels
//! `dependency`, and `kind`: `error_rate` or `latency` for the start of an anomaly, `status`
//! for a change of status) and the gauge `palisade.health.status` (0 healthy, 1 degrading,
//! 2 unhealthy, labels `dependency`). The [`Snapshot`] implements `serde::Serialize`, ready
//! for a readiness endpoint.
//!
//! Checks run when you call [`check`](HealthMonitor::check), or every `interval` under
//! [`run`](HealthMonitor::run) (spawn it); time is tokio's, so tests and the simulator drive
//! it on a paused clock.
//!
//! ```
//! use std::time::Duration;
//! use palisade::breaker::BreakerLayer;
//! use palisade::classify::BoxError;
//! use palisade::health::{HealthMonitor, Status};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let monitor = HealthMonitor::new();
//! let breaker = BreakerLayer::new("llm");
//! monitor.add("llm", breaker.handle());
//! let llm = ServiceBuilder::new()
//!     .layer(monitor.watch("llm"))
//!     .layer(breaker)
//!     .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
//!
//! for _ in 0..20 {
//!     llm.clone().oneshot(()).await.unwrap();
//! }
//! let snapshot = monitor.check();
//! let llm = snapshot.dependency("llm").unwrap();
//! assert_eq!(llm.status, Status::Healthy);
//! assert_eq!(llm.error_ratio, Some(0.0));
//! # }
//! ```

mod detector;
mod watch;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::ConfigError;
use serde::Serialize;

pub use detector::{Detector, DetectorBuilder};
pub use watch::{Watch, WatchFuture, WatchLayer};

use watch::{Totals, Watched};

/// A dependency's health over the recent checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// At least 95 % of the window's checks were healthy.
    Healthy,
    /// At least 70 %.
    Degrading,
    /// Below 70 %.
    Unhealthy,
    /// No check yet.
    Unknown,
}

impl Status {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degrading => "degrading",
            Status::Unhealthy => "unhealthy",
            Status::Unknown => "unknown",
        }
    }

    /// The trend rule: the status of a window in which `healthy` of `checks` were healthy.
    pub fn of(healthy: usize, checks: usize) -> Status {
        if checks == 0 {
            return Status::Unknown;
        }
        // Integer arithmetic: 95 % and 70 % exactly, without rounding surprises; in u128,
        // where no count of checks can overflow it.
        let (healthy, checks) = (healthy as u128, checks as u128);
        if healthy * 100 >= checks * 95 {
            Status::Healthy
        } else if healthy * 100 >= checks * 70 {
            Status::Degrading
        } else {
            Status::Unhealthy
        }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Healthy | Status::Unknown => 0,
            Status::Degrading => 1,
            Status::Unhealthy => 2,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Component`] says at one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// Whether it is healthy now.
    pub healthy: bool,
    /// A short human-readable state ("open", "2 of 3 endpoints serving").
    pub detail: String,
}

impl Reading {
    /// A reading.
    pub fn new(healthy: bool, detail: impl Into<String>) -> Self {
        Reading {
            healthy,
            detail: detail.into(),
        }
    }
}

/// Something whose health a [`HealthMonitor`] reads at every check.
///
/// Implemented for breakers' and routers' handles (with those features), and for any closure
/// through [`component_fn`].
pub trait Component: Send + Sync + 'static {
    /// The kind of component: `"breaker"`, `"route"`, `"feature"`...
    fn kind(&self) -> &'static str;
    /// Its name, as the snapshot shows it.
    fn name(&self) -> String;
    /// Its health now.
    fn reading(&self) -> Reading;
}

/// A [`Component`] from a closure.
///
/// ```
/// use palisade::health::{HealthMonitor, Reading, Status, component_fn};
///
/// let monitor = HealthMonitor::new();
/// monitor.add("search", component_fn("queue", "search-jobs", || Reading::new(false, "backlog 9000")));
/// let snapshot = monitor.check();
/// assert_eq!(snapshot.dependency("search").unwrap().status, Status::Unhealthy);
/// ```
pub fn component_fn<F>(kind: &'static str, name: impl Into<String>, reading: F) -> impl Component
where
    F: Fn() -> Reading + Send + Sync + 'static,
{
    FnComponent {
        kind,
        name: name.into(),
        reading,
    }
}

struct FnComponent<F> {
    kind: &'static str,
    name: String,
    reading: F,
}

impl<F> Component for FnComponent<F>
where
    F: Fn() -> Reading + Send + Sync + 'static,
{
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn reading(&self) -> Reading {
        (self.reading)()
    }
}

#[cfg(feature = "breaker")]
impl Component for palisade_breaker::BreakerHandle {
    fn kind(&self) -> &'static str {
        "breaker"
    }

    fn name(&self) -> String {
        palisade_breaker::BreakerHandle::name(self).to_owned()
    }

    /// Healthy unless open or isolated by hand. Half-open is healthy, as palisade-http's
    /// `/ready` reads it: a breaker whose open period is over reads half-open before any call
    /// probes, and a dependency called unhealthy then (taken out of a load balancer, say)
    /// would get no call to probe with, and stay unhealthy for ever; a probe that fails opens
    /// it again.
    fn reading(&self) -> Reading {
        use palisade_breaker::State;
        let state = self.state();
        let healthy = !matches!(state, State::Open | State::Isolated);
        Reading::new(healthy, state.as_str())
    }
}

#[cfg(feature = "route")]
impl<K: Clone + Send + Sync + 'static> Component for palisade_route::RouteHandle<K> {
    fn kind(&self) -> &'static str {
        "route"
    }

    fn name(&self) -> String {
        "endpoints".to_owned()
    }

    /// Healthy while more than half the endpoints serve: those not ejected whose health
    /// allows them traffic. A router exists to ride out a bad endpoint, so one bad replica of
    /// three is not an unhealthy dependency, nor is an endpoint ramping back after a failure;
    /// losing half the fleet is. An endpoint cooling down after a rate limit serves: its 429s
    /// are the server pacing its callers, and calls still reach it when every endpoint cools.
    /// The detail counts the serving endpoints, and those ejected or cooling down.
    fn reading(&self) -> Reading {
        let status = self.status();
        let serving = status
            .iter()
            .filter(|e| !e.ejected && e.traffic_ratio > 0.0)
            .count();
        let ejected = status.iter().filter(|e| e.ejected).count();
        let cooling = status.iter().filter(|e| e.cooling_down).count();
        let mut detail = format!("{serving} of {} endpoints serving", status.len());
        if ejected > 0 {
            detail.push_str(&format!(", {ejected} ejected"));
        }
        if cooling > 0 {
            detail.push_str(&format!(", {cooling} cooling down after a rate limit"));
        }
        Reading::new(serving * 2 > status.len(), detail)
    }
}

#[cfg(feature = "fallback")]
impl Component for palisade_fallback::Feature {
    fn kind(&self) -> &'static str {
        "feature"
    }

    fn name(&self) -> String {
        palisade_fallback::Feature::name(self).to_owned()
    }

    /// Healthy while on; a feature turned off, by hand or by its own failures, means its
    /// dependency is being served by the fallback.
    fn reading(&self) -> Reading {
        use palisade_fallback::FeatureState;
        match self.state() {
            FeatureState::On => Reading::new(true, "on"),
            FeatureState::TurnedOff => Reading::new(false, "turned off"),
            FeatureState::AutoOff { retry_after } => Reading::new(
                false,
                format!(
                    "off after failures, probe in {} ms",
                    retry_after.as_millis()
                ),
            ),
            _ => Reading::new(false, "off"),
        }
    }
}

/// One component in a [`DependencySnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentSnapshot {
    /// [`Component::kind`].
    pub kind: &'static str,
    /// [`Component::name`].
    pub name: String,
    /// Its reading at the check.
    #[serde(flatten)]
    pub reading: Reading,
}

/// One dependency at one check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DependencySnapshot {
    /// The dependency's name.
    pub name: String,
    /// The trend over the window.
    pub status: Status,
    /// Whether this check was healthy.
    pub healthy_now: bool,
    /// Healthy checks in the window.
    pub healthy_checks: usize,
    /// Checks in the window.
    pub checks: usize,
    /// Failures per call since the previous check, when the watch saw enough calls: a call
    /// refused below the watch (an open breaker's, a shed) is a failure (see [`WatchLayer`]).
    pub error_ratio: Option<f64>,
    /// Mean latency since the previous check, in milliseconds, of the calls that were not
    /// refused (a refusal takes no time at the dependency), when the watch saw enough of them.
    pub latency_ms: Option<f64>,
    /// Whether the error rate is anomalous now (`false` at a check that saw too few calls to
    /// judge). An anomaly is alerted when it starts: one that goes on after such checks raises
    /// no second alert.
    pub error_anomaly: bool,
    /// Whether the latency is anomalous now (`false` at a check that saw too few calls to
    /// judge), alerted as the error rate's is. Judged on the mean without the check's slowest
    /// call: one slow call is sampling noise (a steady tail would otherwise flag every check
    /// that holds one), a slowdown moves the mean of the rest.
    pub latency_anomaly: bool,
    /// Alerts raised for this dependency so far.
    pub alerts: u64,
    /// Its components.
    pub components: Vec<ComponentSnapshot>,
}

/// Every dependency at one check; what a readiness endpoint serves.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// The worst status among the dependencies (`Unknown` when there are none).
    pub status: Status,
    /// Each dependency, in the order they were added.
    pub dependencies: Vec<DependencySnapshot>,
}

impl Snapshot {
    /// The dependency called `name`.
    pub fn dependency(&self, name: &str) -> Option<&DependencySnapshot> {
        self.dependencies.iter().find(|d| d.name == name)
    }
}

struct Dependency {
    name: String,
    components: Vec<Box<dyn Component>>,
    watched: Option<Arc<Watched>>,
    last: Totals,
    errors: Detector,
    /// The base failure rate the error band's sampling noise is judged at: failures and
    /// calls per check, each averaged over about the last 50 checks with a sample that were
    /// neither anomalous nor over the error ceiling.
    base: BaseRate,
    latency: Detector,
    trend: VecDeque<bool>,
    status: Status,
    /// Whether this check found the error rate, the latency, anomalous (false without a
    /// sample).
    error_anomaly: bool,
    latency_anomaly: bool,
    /// Whether the last check that had a sample of each found it anomalous: an anomaly is
    /// alerted when it starts, not again when it resumes after checks that saw too few calls
    /// to judge (callers held by an open breaker complete no call for seconds).
    error_episode: bool,
    latency_episode: bool,
    alerts: u64,
}

#[derive(Clone, Debug)]
struct Settings {
    window: usize,
    min_calls: u64,
    max_error_ratio: f64,
    errors: Detector,
    latency: Detector,
}

/// The most checks of a dependency's trend allocated before any is made.
const PREALLOCATED: usize = 64;

/// The shortest interval [`HealthMonitor::run`] checks at: tokio's timer resolution.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Gathers the health of dependencies; see the [module docs](self). Cloning shares it.
#[derive(Clone)]
pub struct HealthMonitor {
    settings: Arc<Settings>,
    dependencies: Arc<Mutex<Vec<Dependency>>>,
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("window", &self.settings.window)
            .field("min_calls", &self.settings.min_calls)
            .field("max_error_ratio", &self.settings.max_error_ratio)
            .finish_non_exhaustive()
    }
}

impl Default for HealthMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMonitor {
    /// A monitor with the defaults: a window of 60 checks, at least 10 calls between two
    /// checks for a sample, `max_error_ratio` 0.5, an error-rate detector with a floor of
    /// 0.05 (at least `1 / calls` of the sample, and above the sampling noise of the
    /// long-run failure rate) and a latency detector whose floor is a
    /// quarter of the mean (at least 1 ms), both otherwise [`Detector::new`]'s.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> HealthMonitorBuilder {
        HealthMonitorBuilder {
            settings: Settings {
                window: 60,
                min_calls: 10,
                max_error_ratio: 0.5,
                errors: Detector::builder()
                    .floor(0.05)
                    .build()
                    .expect("valid error detector"),
                latency: Detector::new(),
            },
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Dependency>) -> R) -> R {
        let mut deps = self
            .dependencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut deps)
    }

    fn entry<'a>(&self, deps: &'a mut Vec<Dependency>, name: &str) -> &'a mut Dependency {
        let at = match deps.iter().position(|d| d.name == name) {
            Some(at) => at,
            None => {
                deps.push(Dependency {
                    name: name.to_owned(),
                    components: Vec::new(),
                    watched: None,
                    last: Totals::default(),
                    errors: self.settings.errors.clone(),
                    base: BaseRate::default(),
                    latency: self.settings.latency.clone(),
                    // The usual window up front; a longer one grows with the checks.
                    trend: VecDeque::with_capacity(self.settings.window.min(PREALLOCATED)),
                    status: Status::Unknown,
                    error_anomaly: false,
                    latency_anomaly: false,
                    error_episode: false,
                    latency_episode: false,
                    alerts: 0,
                });
                deps.len() - 1
            }
        };
        &mut deps[at]
    }

    /// Adds a component to the dependency called `dependency` (created on first mention).
    pub fn add(&self, dependency: &str, component: impl Component) {
        self.with(|deps| {
            self.entry(deps, dependency)
                .components
                .push(Box::new(component))
        });
    }

    /// The layer that counts `dependency`'s calls for the monitor (one per dependency: a
    /// second call returns a layer sharing the first one's counts).
    pub fn watch(&self, dependency: &str) -> WatchLayer {
        self.with(|deps| {
            let dep = self.entry(deps, dependency);
            let watched = dep.watched.get_or_insert_with(Watched::new).clone();
            WatchLayer { watched }
        })
    }

    /// Checks every dependency now; see the [module docs](self).
    pub fn check(&self) -> Snapshot {
        let settings = &*self.settings;
        self.with(|deps| {
            let dependencies: Vec<_> = deps.iter_mut().map(|d| d.check(settings)).collect();
            let status = dependencies
                .iter()
                .map(|d| d.status)
                .max_by_key(|s| s.rank())
                .unwrap_or(Status::Unknown);
            Snapshot {
                status,
                dependencies,
            }
        })
    }

    /// Checks every `interval`, forever (spawn it; drop the task to stop). An interval below
    /// 1 ms, zero included, is taken as 1 ms: tokio's timer resolution.
    pub async fn run(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval.max(MIN_INTERVAL));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.check();
        }
    }
}

impl Dependency {
    fn check(&mut self, settings: &Settings) -> DependencySnapshot {
        let components: Vec<_> = self
            .components
            .iter()
            .map(|c| ComponentSnapshot {
                kind: c.kind(),
                name: c.name(),
                reading: c.reading(),
            })
            .collect();
        let mut healthy = components.iter().all(|c| c.reading.healthy);

        let (mut error_ratio, mut latency_ms) = (None, None);
        // The thresholds each sample was judged against, read before the sample moves them.
        let (mut error_threshold, mut latency_threshold) = (0.0, 0.0);
        // Alerts start an episode: raised where the last check with a sample was not anomalous.
        let (mut error_started, mut latency_started) = (false, false);
        self.error_anomaly = false;
        self.latency_anomaly = false;
        if let Some(watched) = &self.watched {
            let now = watched.totals();
            let delta = now.since(self.last);
            self.last = now;
            let slowest = watched.take_slowest();
            let min_calls = settings.min_calls.max(1);
            if delta.calls >= min_calls {
                // The counters are read one by one while calls run: a failure counted after
                // `calls` was read shows in this delta without its call (which the next delta
                // has). Clamped, a ratio never passes 1.
                let ratio = delta.failures.min(delta.calls) as f64 / delta.calls as f64;
                // One failure among the check's calls is sampling noise, never an anomaly by
                // itself: among 10 calls it is 0.1, above the usual floor of 0.05, and a
                // steady 1 % of failures would be flagged after every run of clean checks.
                // Nor is a count of failures that the base rate makes as often as one check
                // in 10 000: at 25 calls a check and a steady 1 %, two failures (8 %) come in
                // one check in 40, three in one in 500. The base rate is the long run's, not
                // the detector's mean: over 10 checks of 25 calls a 1 % rate is 2.5 failures,
                // and after a few clean checks the mean says a third of that.
                let base = self.base.rate().unwrap_or(self.errors.mean());
                let noise = (binomial_threshold(base, delta.calls) - self.errors.mean()).max(0.0);
                self.errors.set_floor(
                    settings
                        .errors
                        .floor()
                        .max(1.0 / delta.calls as f64)
                        .max(noise),
                );
                error_threshold = self.errors.threshold();
                self.error_anomaly = self.errors.observe(ratio);
                // The base rate is the dependency's usual noise: learnt from the checks that
                // were neither anomalous nor over the error ceiling. Learnt from an outage too,
                // it kept error bursts after it below the band for 75 checks and more.
                if !self.error_anomaly && ratio <= settings.max_error_ratio {
                    self.base.add(delta.failures.min(delta.calls), delta.calls);
                }
                error_started = self.error_anomaly && !self.error_episode;
                self.error_episode = self.error_anomaly;
                healthy &= ratio <= settings.max_error_ratio;
                error_ratio = Some(ratio);
            }
            // Refusals have no latency (the watch adds none for them): the mean is over the
            // calls that were answered, and needs as many of them as a sample does.
            // Likewise a refusal counted without its call: never more refusals than calls,
            // or the difference would wrap into a huge count of timed calls.
            let timed = delta.calls.saturating_sub(delta.refused);
            if timed >= min_calls {
                let ms = delta.micros as f64 / timed as f64 / 1000.0;
                // One slow call among the check's calls is sampling noise, as one failure is:
                // the detector judges the mean of the others. With a steady tail (1 call in
                // 100 taking 2 s, 10 calls a check), the mean of one check in ten jumps
                // fivefold, and judged on it the dependency was never healthy; a slowdown of
                // the calls, or of more than one of them, still moves the mean of the rest.
                let judged = if timed >= 2 {
                    let rest = delta.micros.saturating_sub(slowest.min(delta.micros));
                    rest as f64 / (timed - 1) as f64 / 1000.0
                } else {
                    ms
                };
                self.latency
                    .set_floor((self.latency.mean() * 0.25).max(1.0));
                latency_threshold = self.latency.threshold();
                self.latency_anomaly = self.latency.observe(judged);
                latency_started = self.latency_anomaly && !self.latency_episode;
                self.latency_episode = self.latency_anomaly;
                latency_ms = Some(ms);
            }
        }
        healthy &= !self.error_anomaly && !self.latency_anomaly;

        if self.trend.len() == settings.window {
            self.trend.pop_front();
        }
        self.trend.push_back(healthy);
        let healthy_checks = self.trend.iter().filter(|h| **h).count();
        let status = Status::of(healthy_checks, self.trend.len());

        let name = &self.name;
        let mut raised: [Option<&'static str>; 3] = [None; 3];
        if error_started {
            tracing::warn!(
                target: "palisade::health",
                dependency = %name,
                error_ratio = ?error_ratio,
                threshold = error_threshold,
                "error rate anomaly"
            );
            raised[0] = Some("error_rate");
        }
        if latency_started {
            tracing::warn!(
                target: "palisade::health",
                dependency = %name,
                latency_ms = ?latency_ms,
                threshold_ms = latency_threshold,
                "latency anomaly"
            );
            raised[1] = Some("latency");
        }
        if self.status == Status::Unknown && status.rank() == 0 {
            // A healthy first verdict: nothing changed, nothing to alert. (A first verdict
            // that is worse is one: a service started during an outage raises it.)
            self.status = status;
        } else if status != self.status {
            let from = self.status;
            if status.rank() > from.rank() {
                tracing::warn!(target: "palisade::health", dependency = %name, %from, to = %status, "dependency health changed");
            } else {
                tracing::info!(target: "palisade::health", dependency = %name, %from, to = %status, "dependency health changed");
            }
            raised[2] = Some("status");
            self.status = status;
        }
        for kind in raised.into_iter().flatten() {
            self.alert(kind);
        }
        #[cfg(feature = "metrics")]
        ::metrics::gauge!("palisade.health.status", "dependency" => self.name.clone())
            .set(f64::from(self.status.rank()));

        DependencySnapshot {
            name: self.name.clone(),
            status: self.status,
            healthy_now: healthy,
            healthy_checks,
            checks: self.trend.len(),
            error_ratio,
            latency_ms,
            error_anomaly: self.error_anomaly,
            latency_anomaly: self.latency_anomaly,
            alerts: self.alerts,
            components,
        }
    }

    fn alert(&mut self, kind: &'static str) {
        self.alerts += 1;
        #[cfg(feature = "metrics")]
        ::metrics::counter!("palisade.health.alerts", "dependency" => self.name.clone(), "kind" => kind)
            .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = kind;
    }
}

/// Builds a [`HealthMonitor`]; made by [`HealthMonitor::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HealthMonitorBuilder {
    settings: Settings,
}

impl HealthMonitorBuilder {
    /// How many recent checks the trend covers (default 60).
    pub fn window(mut self, checks: usize) -> Self {
        self.settings.window = checks;
        self
    }

    /// The fewest calls between two checks that make an error-rate sample, and the fewest
    /// calls not refused that make a latency sample (default 10); with fewer, the check judges
    /// by the components (and the other sample) alone.
    pub fn min_calls(mut self, calls: u64) -> Self {
        self.settings.min_calls = calls;
        self
    }

    /// The error rate above which a check is unhealthy whatever the detector learned, in
    /// `0..=1` (default 0.5).
    pub fn max_error_ratio(mut self, ratio: f64) -> Self {
        self.settings.max_error_ratio = ratio;
        self
    }

    /// The error-rate detector (default: a floor of 0.05, otherwise [`Detector::new`]). At
    /// each check its floor is at least `1 / calls` of that check's sample, so that one
    /// failure is never an anomaly by itself, and the threshold is at least the failure ratio
    /// the dependency's usual failure rate (over about the last 50 checks that were neither
    /// anomalous nor over `max_error_ratio`) reaches in fewer
    /// than one check in 10 000 at that many calls, so that sampling noise is never one.
    pub fn error_detector(mut self, detector: Detector) -> Self {
        self.settings.errors = detector;
        self
    }

    /// The latency detector, fed milliseconds; its floor is reset at every check to a quarter
    /// of its mean, at least 1 ms (default [`Detector::new`]).
    pub fn latency_detector(mut self, detector: Detector) -> Self {
        self.settings.latency = detector;
        self
    }

    /// The monitor.
    ///
    /// # Errors
    /// [`ConfigError`] naming `window` if it is 0 or `max_error_ratio` outside `0..=1`.
    pub fn build(self) -> Result<HealthMonitor, ConfigError> {
        if self.settings.window == 0 {
            return Err(ConfigError::new("window", "must be at least 1 check"));
        }
        if !(0.0..=1.0).contains(&self.settings.max_error_ratio) {
            return Err(ConfigError::new("max_error_ratio", "must be within 0..=1"));
        }
        Ok(HealthMonitor {
            settings: Arc::new(self.settings),
            dependencies: Arc::default(),
        })
    }
}

/// How often a steady failure rate may cross the error band by chance: once in 10 000 checks.
const NOISE_PER_CHECK: f64 = 1e-4;

/// The weight of each check in [`BaseRate`]'s averages: about the last 50 checks count.
const BASE_WEIGHT: f64 = 0.02;

/// A dependency's long-run failure rate: failures and calls per check, each an exponentially
/// weighted average, and their ratio.
#[derive(Clone, Copy, Debug, Default)]
struct BaseRate {
    failures: f64,
    calls: f64,
}

impl BaseRate {
    /// Folds in one check's sample.
    fn add(&mut self, failures: u64, calls: u64) {
        let (f, c) = (failures as f64, calls as f64);
        if self.calls == 0.0 {
            (self.failures, self.calls) = (f, c);
        } else {
            self.failures += BASE_WEIGHT * (f - self.failures);
            self.calls += BASE_WEIGHT * (c - self.calls);
        }
    }

    /// The failure rate, once a check with calls was added.
    fn rate(&self) -> Option<f64> {
        (self.calls > 0.0).then(|| (self.failures / self.calls).clamp(0.0, 1.0))
    }
}

/// The failure ratio a check of `calls` calls reaches, at a steady failure rate `p`, with a
/// probability below [`NOISE_PER_CHECK`] (binomial sampling noise): a threshold halfway
/// between the count that rare and the one below it, 1 when no count is that rare. Exact (in
/// logarithms, as the chance of no failure at all can be too small for an `f64`) while
/// `calls × p` is at most 600, where the binomial's tail can be far heavier than a normal one
/// (at 25 calls and 1 %, three failures come in one check in 500, more than 7 standard
/// deviations above the mean); above that, the normal approximation with the Cornish-Fisher
/// correction for its skew and a continuity correction. 0 for a rate of 0 (any failure is
/// news; the monitor's other floors judge it) and for no calls.
fn binomial_threshold(p: f64, calls: u64) -> f64 {
    if p.is_nan() || p <= 0.0 || calls == 0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let n = calls as f64;
    let expected = n * p;
    // The smallest count of failures whose chance, at rate p, is below the noise allowed.
    let critical = if expected <= 600.0 {
        // In logarithms: P(X = 0) = (1 − p)^n is below what an f64 holds where
        // n·ln(1/(1 − p)) passes about 745 (at 40 % and 1 480 calls, 1e-328, though n·p is
        // 592), and has a few bits left just above. ln P(X = 0), then each term from the one
        // before, until what is left of the distribution is rare enough.
        let ln_odds = (p / (1.0 - p)).ln();
        let mut ln_pmf = n * (-p).ln_1p();
        let mut ln_below = f64::NEG_INFINITY;
        let mut x = 0u64;
        loop {
            ln_below = ln_add(ln_below, ln_pmf);
            // 1 − P(X ≤ x), without the cancellation of `1 − below`.
            if -ln_below.exp_m1() < NOISE_PER_CHECK || x >= calls {
                break x as f64 + 1.0;
            }
            x += 1;
            ln_pmf += ((n - (x - 1) as f64) / x as f64).ln() + ln_odds;
        }
    } else {
        // z for a one-sided normal tail of 1e-4, corrected for the binomial's skew.
        const Z: f64 = 3.719;
        let sd = (expected * (1.0 - p)).sqrt();
        let skew = (1.0 - 2.0 * p) / sd;
        let z = Z + (Z * Z - 1.0) * skew / 6.0;
        (expected + z * sd + 0.5).ceil()
    };
    ((critical - 0.5) / n).min(1.0)
}

/// `ln(eᵃ + eᵇ)`, without leaving the logarithms (`a` may be −∞: nothing yet).
fn ln_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests;
