//! The verdict: [`Class`], [`Category`], [`Severity`], [`FaultLevel`] and [`HealthImpact`].

use std::fmt;
use std::time::Duration;

/// What kind of failure an outcome is.
///
/// The categories cover what callers of remote services meet (transient faults, rate limits,
/// authentication, validation, not found, server errors, timeouts, network faults), plus
/// `ResourceExhausted` (overload), `Cancelled` (the caller gave up), `Ignored` (an error
/// accepted as a normal outcome) and `Rejected` (a protecting layer refused to send the call). The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Category {
    /// A brief, self-healing fault: a dropped packet, a momentary blip.
    Transient,
    /// The dependency is throttling the caller (HTTP 429, `RESOURCE_EXHAUSTED` quota).
    RateLimited,
    /// The caller's credentials were refused (HTTP 401/403).
    Authentication,
    /// The request itself is wrong (HTTP 400/422); sending it again cannot help.
    Validation,
    /// What was asked for does not exist (HTTP 404).
    NotFound,
    /// The dependency failed internally (HTTP 5xx).
    ServerError,
    /// No answer came in time.
    Timeout,
    /// The connection could not be made or was lost.
    Network,
    /// The dependency or this process ran out of something: memory, disk, a pool, capacity.
    ResourceExhausted,
    /// The caller cancelled the call; nothing is wrong with the dependency.
    Cancelled,
    /// Nothing more is known.
    Unknown,
    /// An error the classifier accepted as a normal outcome (for example a cache miss reported
    /// as an error). It still travels up as an error, but it is never retried and never counts
    /// against health: the "ignorable" outcome of Finagle's response classifiers.
    Ignored,
    /// The call never reached the dependency: a layer that protects it refused to send it (an
    /// open circuit breaker, a load shed). It says nothing new about the dependency (the
    /// refusing layer counted what made it refuse), so it never counts against health, and it
    /// is retryable: a retry after the `retry_after` the refusal gives, if any, may be let
    /// through. palisade's retry layer spends no retry budget on a refusal that says when to
    /// come back (it added no load); one that does not is retried within the budget.
    Rejected,
}

impl Category {
    /// Every category, in declaration order (useful for metrics tables).
    pub const ALL: [Category; 13] = [
        Category::Transient,
        Category::RateLimited,
        Category::Authentication,
        Category::Validation,
        Category::NotFound,
        Category::ServerError,
        Category::Timeout,
        Category::Network,
        Category::ResourceExhausted,
        Category::Cancelled,
        Category::Unknown,
        Category::Ignored,
        Category::Rejected,
    ];

    /// A dense index in `0..Category::ALL.len()`, for per-category counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The snake-case name used in logs, metrics labels and config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Transient => "transient",
            Category::RateLimited => "rate_limited",
            Category::Authentication => "authentication",
            Category::Validation => "validation",
            Category::NotFound => "not_found",
            Category::ServerError => "server_error",
            Category::Timeout => "timeout",
            Category::Network => "network",
            Category::ResourceExhausted => "resource_exhausted",
            Category::Cancelled => "cancelled",
            Category::Unknown => "unknown",
            Category::Ignored => "ignored",
            Category::Rejected => "rejected",
        }
    }

    /// The fault level of this category (see [`FaultLevel`]).
    pub const fn fault_level(self) -> FaultLevel {
        match self {
            Category::Transient
            | Category::RateLimited
            | Category::ServerError
            | Category::Timeout
            | Category::Network
            | Category::Unknown => FaultLevel::Transient,
            Category::ResourceExhausted | Category::Rejected => FaultLevel::Resource,
            Category::Authentication
            | Category::Validation
            | Category::NotFound
            | Category::Cancelled
            | Category::Ignored => FaultLevel::Logic,
        }
    }

    /// How an outcome of this category affects the health of the endpoint that produced it.
    pub const fn health_impact(self) -> HealthImpact {
        match self {
            Category::Transient
            | Category::ServerError
            | Category::Timeout
            | Category::Network
            | Category::ResourceExhausted
            | Category::Unknown => HealthImpact::Full,
            Category::RateLimited => HealthImpact::Soft,
            Category::Authentication
            | Category::Validation
            | Category::NotFound
            | Category::Cancelled
            | Category::Ignored
            | Category::Rejected => HealthImpact::None,
        }
    }

    /// Whether a failure of this category is worth retrying by default.
    pub const fn default_retryable(self) -> bool {
        matches!(
            self.fault_level(),
            FaultLevel::Transient | FaultLevel::Resource
        )
    }

    /// The default severity of a failure of this category.
    pub const fn default_severity(self) -> Severity {
        match self {
            Category::Validation | Category::NotFound | Category::Cancelled | Category::Ignored => {
                Severity::Low
            }
            Category::Transient
            | Category::RateLimited
            | Category::ServerError
            | Category::Timeout
            | Category::Network
            | Category::Unknown
            | Category::Rejected => Severity::Medium,
            Category::Authentication | Category::ResourceExhausted => Severity::High,
        }
    }

    /// What is usually worth doing about a failure of this category.
    pub const fn suggested_action(self) -> &'static str {
        match self {
            Category::Transient => "retry at once",
            Category::RateLimited => "back off, honouring the server's retry hint",
            Category::Authentication => "refresh credentials",
            Category::Validation => "return the error to the user",
            Category::NotFound => "return the error to the user",
            Category::ServerError => "retry with backoff",
            Category::Timeout => "retry with a longer timeout",
            Category::Network => "retry with backoff, preferably elsewhere",
            Category::ResourceExhausted => "release resources, reset state, back off hard",
            Category::Cancelled => "nothing: the caller gave up",
            Category::Unknown => "retry with backoff",
            Category::Ignored => "nothing: a normal outcome",
            Category::Rejected => "retry once the refusing layer lets calls through again",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failure is: low (log and go on), medium (retry or fall back), high (needs
/// attention), critical (the system is failing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Severity {
    /// Log and continue.
    Low,
    /// Retry or fall back.
    Medium,
    /// Needs attention.
    High,
    /// System failure.
    Critical,
}

impl Severity {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Three fault levels, which choose the recovery strategy: transient (retry with backoff),
/// resource (clean up, reset, back off hard), logic (no retry: compensate or escalate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FaultLevel {
    /// L1: transient. Retry automatically with backoff.
    Transient,
    /// L2: resource. Release resources, reset state, back off hard.
    Resource,
    /// L3: logic. Do not retry: compensate, or escalate to a person.
    ///
    /// The caller's own cancellation is also L3 in the sense that it is never retried, but
    /// recovery layers never escalate a cancellation to a person.
    Logic,
}

impl FaultLevel {
    /// `"L1"`, `"L2"` or `"L3"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultLevel::Transient => "L1",
            FaultLevel::Resource => "L2",
            FaultLevel::Logic => "L3",
        }
    }
}

impl fmt::Display for FaultLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an outcome weighs on the health of the endpoint that produced it.
///
/// * `Full`: a real failure of the dependency. Breakers count it, routers eject on it.
/// * `Soft`: the dependency is healthy but protecting itself (rate limiting). It is **not**
///   counted by breakers or outlier ejection (a 429 storm must not open every breaker or eject
///   every replica), but routers lower the endpoint's weight and honour its `retry_after` as a
///   cool-down for that endpoint.
/// * `None`: the caller's fault or choice (bad input, unknown resource, refused credentials,
///   cancellation). Health is unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HealthImpact {
    /// No effect on health.
    None,
    /// Lowers weight, never ejects or trips.
    Soft,
    /// Counts as a failure of the endpoint.
    Full,
}

/// The classification of one failed outcome: computed once, by the classify layer closest to
/// the endpoint, and read by every layer above it through [`class_of`](crate::class_of).
///
/// `Class` is `Copy` and 32 bytes; building one never allocates.
///
/// # Example
/// ```
/// use palisade_core::{Category, Class, FaultLevel};
/// use std::time::Duration;
///
/// let class = Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2));
/// assert!(class.retryable);
/// assert_eq!(class.fault_level(), FaultLevel::Transient);
/// assert!(!class.counts_against_health()); // a 429 never trips a breaker...
/// assert_eq!(class.to_string(), "rate_limited (medium, retryable, retry after 2s)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Class {
    /// What kind of failure this is.
    pub category: Category,
    /// How bad it is.
    pub severity: Severity,
    /// Whether retrying the same call may succeed. [`Class::new`] takes the category's default
    /// ([`Category::default_retryable`]); a class may say otherwise, as the category says what
    /// kind of failure it is and this whether it can pass: an exhausted quota is
    /// [`Category::RateLimited`] (the dependency refusing, not failing) but not retryable
    /// (see [`DEFAULT_MESSAGE_RULES`](crate::DEFAULT_MESSAGE_RULES)).
    pub retryable: bool,
    /// How long the server asked the caller to wait before trying again, if it said.
    #[cfg_attr(feature = "serde", serde(default, with = "opt_duration_ms"))]
    pub retry_after: Option<Duration>,
}

impl Class {
    /// The class of a failure of `category`, with that category's default severity and
    /// retryability and no retry hint.
    pub const fn new(category: Category) -> Self {
        Class {
            category,
            severity: category.default_severity(),
            retryable: category.default_retryable(),
            retry_after: None,
        }
    }

    /// The same class with another severity.
    pub const fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The same class, retryable or not.
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The same class with a server's retry hint.
    pub const fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The fault level, derived from the category.
    pub const fn fault_level(&self) -> FaultLevel {
        self.category.fault_level()
    }

    /// How this outcome weighs on the endpoint's health, derived from the category.
    pub const fn health_impact(&self) -> HealthImpact {
        self.category.health_impact()
    }

    /// Whether this outcome counts as a failure of the endpoint: `true` for server and
    /// transport faults, `false` for client faults (Validation, NotFound, Authentication), the
    /// caller's own cancellation, ignored errors, and rate limiting (which counts only softly; see
    /// [`HealthImpact::Soft`]).
    pub const fn counts_against_health(&self) -> bool {
        matches!(self.health_impact(), HealthImpact::Full)
    }
}

impl From<Category> for Class {
    fn from(category: Category) -> Self {
        Class::new(category)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}",
            self.category,
            self.severity,
            if self.retryable {
                "retryable"
            } else {
                "not retryable"
            }
        )?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        f.write_str(")")
    }
}

#[cfg(feature = "serde")]
mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            // Saturating: a hint beyond `u64::MAX` ms stays the longest, never wraps short.
            Some(d) => s.serialize_some(&crate::time::millis(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_map_to_levels_and_health() {
        use Category::*;
        for (cat, level, health, retry) in [
            (Transient, FaultLevel::Transient, HealthImpact::Full, true),
            (RateLimited, FaultLevel::Transient, HealthImpact::Soft, true),
            (Authentication, FaultLevel::Logic, HealthImpact::None, false),
            (Validation, FaultLevel::Logic, HealthImpact::None, false),
            (NotFound, FaultLevel::Logic, HealthImpact::None, false),
            (ServerError, FaultLevel::Transient, HealthImpact::Full, true),
            (Timeout, FaultLevel::Transient, HealthImpact::Full, true),
            (Network, FaultLevel::Transient, HealthImpact::Full, true),
            (
                ResourceExhausted,
                FaultLevel::Resource,
                HealthImpact::Full,
                true,
            ),
            (Cancelled, FaultLevel::Logic, HealthImpact::None, false),
            (Unknown, FaultLevel::Transient, HealthImpact::Full, true),
            (Ignored, FaultLevel::Logic, HealthImpact::None, false),
            (Rejected, FaultLevel::Resource, HealthImpact::None, true),
        ] {
            let c = Class::new(cat);
            assert_eq!(c.fault_level(), level, "{cat}");
            assert_eq!(c.health_impact(), health, "{cat}");
            assert_eq!(c.retryable, retry, "{cat}");
            assert_eq!(c.counts_against_health(), health == HealthImpact::Full);
        }
    }

    #[test]
    fn index_is_dense_and_matches_all() {
        for (i, c) in Category::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            Class::new(Category::Validation).to_string(),
            "validation (low, not retryable)"
        );
        assert_eq!(FaultLevel::Resource.to_string(), "L2");
    }

    #[test]
    fn class_is_small_and_copy() {
        fn copy<T: Copy>() {}
        copy::<Class>();
        assert!(std::mem::size_of::<Class>() <= 32);
    }
}
