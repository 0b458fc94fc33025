//! Metrics through the [`metrics`](https://docs.rs/metrics) crate's facade, behind the
//! `metrics` feature (`palisade/metrics` in the facade).
//!
//! The `metrics` facade is the ecosystem's common ground: install any recorder (Prometheus,
//! OpenTelemetry, StatsD exporters exist for it) and palisade's layers report to it. Without
//! the feature every function here is an empty inline function. With it, nothing is allocated
//! or formatted on the happy path ([`MetricsLayer`] registers its handles when it is built;
//! measured in `benches/stack.rs`); the helpers the layers call on the failure path (a retry,
//! a timeout, a rejection) build their labels before the facade looks for a recorder, so each
//! of those calls allocates its labels (a few small strings) even without one installed.
//!
//! Names follow the OpenTelemetry conventions (dotted, lower case, unit in the instrument, not
//! the name; an exporter for Prometheus turns `palisade.calls` into `palisade_calls_total`).
//! Labels name the dependency the way each layer knows it: the retry layer's
//! [name](https://docs.rs/palisade-retry), the breaker's name, the timeout's, deadline's and
//! fallback's names, the name given to [`MetricsLayer`].
//!
//! | name | kind | labels | recorded by | when |
//! |---|---|---|---|---|
//! | `palisade.calls` | counter | `dependency`, `outcome` (`success` or the failure's [`Category`](crate::Category), e.g. `server_error`; `cancelled` for a call dropped before it completed) | [`MetricsLayer`] | every call, when it completes or is dropped before |
//! | `palisade.call.duration` | histogram, seconds | `dependency`, `outcome` (`success`, `failure`; a call dropped before it completed is a `failure`, timed until the drop) | [`MetricsLayer`] | every call, when it completes or is dropped before |
//! | `palisade.retry.retries` | counter | `dependency`, `category` | palisade-retry | a retry of a failed attempt is sent (not one decided and then never sent: the deadline passed first, a refresh failed, the caller went away) |
//! | `palisade.retry.budget_exhausted` | counter | `dependency` | palisade-retry | a retry was refused by the retry budget |
//! | `palisade.retry.gave_up` | counter | `dependency`, `reason` (`attempts_spent`, `not_retryable`, `deadline`, `retry_after_too_long`, `breaker_open`) | palisade-retry | a failure was returned without a retry |
//! | `palisade.breaker.transitions` | counter | `breaker`, `from`, `to` (a state, or `evicted` for a per-key breaker dropped while not closed) | palisade-breaker | a state change |
//! | `palisade.breaker.state` | gauge | `breaker` | palisade-breaker | when the breaker is made (0), and at a state change: 0 closed, 1 open, 2 half-open, 3 isolated, 4 bypassed; 0 when a per-key breaker is evicted. A transition is recorded when it happens: an open breaker whose open period ended with no call since stays at 1 until its next call probes (`BreakerHandle::state` and `/ready` read it as half-open already) |
//! | `palisade.breaker.rejections` | counter | `breaker`, `state` | palisade-breaker | a call refused without reaching the dependency |
//! | `palisade.timeout.elapsed` | counter | `dependency`, `kind` (`attempt`, `deadline`) | palisade-timeout | a timeout or deadline fired |
//! | `palisade.fallback.answers` | counter | `dependency`, `strategy`, `category` | palisade-fallback | a degraded answer was served |
//! | `palisade.fallback.failed` | counter | `dependency`, `strategy` | palisade-fallback | every fallback strategy failed |
//!
//! The timeout layers and the fallback layer take the dependency's name from their builders
//! (`TimeoutBuilder::name`, `DeadlineBuilder::name`, `FallbackBuilder::name`), as the retry
//! layer does; unnamed, each is labelled after itself (`timeout`, `deadline`, `fallback`, as an
//! unnamed retry layer is `retry`). palisade's preset names its deadline and per-attempt
//! timeout after its dependency, so all of a preset's series carry the same `dependency`. A
//! timeout layer keeps its name as a [`Name`], interned when the layer is built: a call carries
//! four bytes for it and does nothing with it unless the timeout fires.
//!
//! Per-key breakers (palisade-breaker's `KeyedBreakerLayer`) are named `name[key]`, so the
//! `breaker` label takes one value per key ever seen: the series follow the keys seen, not
//! the layer's `max_keys`, and an evicted key's series stay in the recorder (the facade
//! cannot delete a series; the key's state gauge is set to 0 on eviction). Key by a bounded
//! set (a provider, a model, a tenant tier or a hash bucket of the tenant) when the keys are
//! many or chosen by clients.
//!
//! Counters are registered when the event happens (a failure path, where allocating the label
//! set is allowed), except those of [`MetricsLayer`], which it registers once when built so
//! that a successful call allocates nothing: install the recorder before building it.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # {
//! use palisade_core::metrics::MetricsLayer;
//! use palisade_core::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // With a recorder installed (`metrics::set_global_recorder`), this counts each call by
//! // outcome and records its duration, labelled `dependency = "llm"`.
//! let llm = MetricsLayer::new("llm").layer(service_fn(|_: ()| async { Ok::<_, BoxError>("hi") }));
//! assert_eq!(llm.oneshot(()).await.unwrap(), "hi");
//! # }
//! # }
//! ```

#[cfg(feature = "metrics")]
mod layer;

#[cfg(feature = "metrics")]
pub use layer::{Metrics, MetricsFuture, MetricsLayer};

// Two attributes rather than `all(test, ..)`: cargo-mutants recognises the module as test code.
#[cfg(test)]
#[cfg(feature = "metrics")]
mod tests;

/// The metric names, as constants.
pub mod names {
    /// Calls by outcome ([`MetricsLayer`](super)).
    pub const CALLS: &str = "palisade.calls";
    /// Call durations in seconds ([`MetricsLayer`](super)).
    pub const CALL_DURATION: &str = "palisade.call.duration";
    /// Retries sent.
    pub const RETRIES: &str = "palisade.retry.retries";
    /// Retries the budget refused.
    pub const BUDGET_EXHAUSTED: &str = "palisade.retry.budget_exhausted";
    /// Failures returned without a retry.
    pub const GAVE_UP: &str = "palisade.retry.gave_up";
    /// Breaker state changes.
    pub const BREAKER_TRANSITIONS: &str = "palisade.breaker.transitions";
    /// A breaker's current state.
    pub const BREAKER_STATE: &str = "palisade.breaker.state";
    /// Calls a breaker refused.
    pub const BREAKER_REJECTIONS: &str = "palisade.breaker.rejections";
    /// Timeouts and deadlines that fired.
    pub const TIMEOUT_ELAPSED: &str = "palisade.timeout.elapsed";
    /// Degraded answers served.
    pub const FALLBACK_ANSWERS: &str = "palisade.fallback.answers";
    /// Calls no fallback strategy could answer.
    pub const FALLBACK_FAILED: &str = "palisade.fallback.failed";
}

#[cfg(feature = "metrics")]
fn label(value: &str) -> metrics::SharedString {
    metrics::SharedString::from(value.to_owned())
}

/// Counts a retry of a failure of `category` for `dependency`.
#[inline]
pub fn retried(dependency: &str, category: crate::Category) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::RETRIES, "dependency" => label(dependency), "category" => category.as_str())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (dependency, category);
}

/// Counts a retry the budget refused for `dependency`.
#[inline]
pub fn budget_exhausted(dependency: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::BUDGET_EXHAUSTED, "dependency" => label(dependency)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = dependency;
}

/// Counts a failure returned without a retry, for `reason`.
#[inline]
pub fn gave_up(dependency: &str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::GAVE_UP, "dependency" => label(dependency), "reason" => reason)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (dependency, reason);
}

/// Records a breaker's state change; `code` is the new state's gauge value (see the table).
#[inline]
pub fn breaker_transition(breaker: &str, from: &'static str, to: &'static str, code: u8) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(names::BREAKER_TRANSITIONS, "breaker" => label(breaker), "from" => from, "to" => to)
            .increment(1);
        metrics::gauge!(names::BREAKER_STATE, "breaker" => label(breaker)).set(f64::from(code));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (breaker, from, to, code);
}

/// Sets a breaker's state gauge to `code` without a transition: a breaker made closed (0)
/// has a series from the start, rather than none until it first opens.
#[inline]
pub fn breaker_state(breaker: &str, code: u8) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(names::BREAKER_STATE, "breaker" => label(breaker)).set(f64::from(code));
    #[cfg(not(feature = "metrics"))]
    let _ = (breaker, code);
}

/// Counts a call the breaker refused in `state`.
#[inline]
pub fn breaker_rejected(breaker: &str, state: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::BREAKER_REJECTIONS, "breaker" => label(breaker), "state" => state)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (breaker, state);
}

/// Counts a timeout (`"attempt"`) or a deadline (`"deadline"`) of `dependency` that fired.
#[inline]
pub fn timeout_elapsed(dependency: &str, kind: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::TIMEOUT_ELAPSED, "dependency" => label(dependency), "kind" => kind)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (dependency, kind);
}

/// Counts a degraded answer from `strategy` to a failure of `category` of `dependency`.
#[inline]
pub fn fallback_answered(dependency: &str, strategy: &'static str, category: crate::Category) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FALLBACK_ANSWERS, "dependency" => label(dependency), "strategy" => strategy, "category" => category.as_str())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (dependency, strategy, category);
}

/// Counts a call to `dependency` that no fallback strategy could answer.
#[inline]
pub fn fallback_failed(dependency: &str, strategy: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FALLBACK_FAILED, "dependency" => label(dependency), "strategy" => strategy)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (dependency, strategy);
}

/// A dependency's name, interned: four bytes, `Copy`, for the layers whose response futures
/// hold no shared state to reach a name through (the timeout and the deadline), so that
/// carrying it costs a call almost nothing.
///
/// [`Name::new`] interns the text once for the process: a second layer built with the same
/// name (a rebuilt stack, a clone of a configuration) gets the same `Name` and keeps nothing
/// more. Each distinct name is kept until the process ends, so name layers after
/// dependencies, a bounded set, never after per-request data. [`Name::as_str`] reads the
/// table under a read lock: the layers read it only when a timer fires, never on a call that
/// answers in time.
///
/// ```
/// use palisade_core::metrics::Name;
///
/// let llm = Name::new("llm");
/// assert_eq!(llm.as_str(), "llm");
/// assert_eq!(llm, Name::new(&String::from("llm")));
/// assert_eq!(std::mem::size_of::<Name>(), 4);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(u32);

/// The interned names: the text of `Name(i)` is `list[i]`.
struct Names {
    list: Vec<&'static str>,
    index: std::collections::BTreeMap<&'static str, u32>,
}

static NAMES: std::sync::RwLock<Names> = std::sync::RwLock::new(Names {
    list: Vec::new(),
    index: std::collections::BTreeMap::new(),
});

impl Name {
    /// The interned name `name`: the same `Name` every time for the same text.
    ///
    /// # Panics
    /// If more than `u32::MAX` distinct names were interned (names are dependencies', not
    /// per-request data).
    pub fn new(name: &str) -> Name {
        use std::sync::PoisonError;

        // Build time only (a layer is built, never a call), so a lock is fine here.
        let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&i) = names.index.get(name) {
            return Name(i);
        }
        let i = u32::try_from(names.list.len()).expect("fewer than 2^32 distinct names");
        let text: &'static str = Box::leak(Box::from(name));
        names.list.push(text);
        names.index.insert(text, i);
        Name(i)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        let names = NAMES
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names.list[self.0 as usize]
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
