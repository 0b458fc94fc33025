//! The layers: [`TimeoutLayer`] and [`DeadlineLayer`].

use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::metrics::Name;
use tower_layer::Layer;

use crate::state::Limit;
use crate::timer::{OwnTimer, SharedTimer, TimerKind};
use crate::{Deadline, Timeout};

/// Applies a per-attempt [`Timeout`] to the wrapped service, optionally escalating after
/// attempts that timed out (see [`TimeoutBuilder::escalate`]).
///
/// ```
/// use std::time::Duration;
/// use palisade_timeout::TimeoutLayer;
///
/// // A fixed limit: infallible.
/// let fixed = TimeoutLayer::new(Duration::from_millis(250));
/// assert_eq!(fixed.escalation(), None);
///
/// // With options: validated when built.
/// let escalating = TimeoutLayer::builder(Duration::from_millis(250))
///     .escalate(2.0, Duration::from_secs(2))
///     .build()?;
/// assert_eq!(escalating.escalation(), Some((2.0, Duration::from_secs(2))));
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
///
/// `K` says how each response future keeps its timer: [`OwnTimer`] (the default), or
/// [`SharedTimer`] after [`share_deadline_timer`](Self::share_deadline_timer).
///
/// # Metrics
/// A timeout that fires is counted as `palisade.timeout.elapsed{dependency, kind="attempt"}`
/// (feature `metrics` of palisade-core), `dependency` being the name given to
/// [`TimeoutBuilder::name`], `"timeout"` by default.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer<K = OwnTimer> {
    limit: Limit,
    name: Name,
    kind: PhantomData<K>,
}

/// The name of an unnamed [`TimeoutLayer`], in its metrics.
pub const DEFAULT_TIMEOUT_NAME: &str = "timeout";

/// The name of an unnamed [`DeadlineLayer`], in its metrics.
pub const DEFAULT_DEADLINE_NAME: &str = "deadline";

impl TimeoutLayer {
    /// Fails each call that does not finish within `timeout` with
    /// [`Elapsed`](crate::error::Elapsed). Every attempt gets the same limit (no
    /// escalation); a zero `timeout` fails every call that is not ready at its first poll.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer::with_limit(Limit::new(timeout), Name::new(DEFAULT_TIMEOUT_NAME))
    }

    /// A builder for a timeout of `timeout` with options (escalation, name), validated by
    /// [`build`](TimeoutBuilder::build).
    pub fn builder(timeout: Duration) -> TimeoutBuilder {
        TimeoutBuilder {
            timeout,
            escalation: None,
            name: None,
        }
    }

    /// The same timeout, sharing the timer of the [`Deadline`] above it instead of keeping a
    /// tokio `Sleep` in each response future (see
    /// [One timer for a deadline and its timeouts](crate#one-timer-for-a-deadline-and-its-timeouts)).
    /// Use it where a [`DeadlineLayer`] sits above on the same task, with only layers between
    /// them that poll their inner future with the task's own waker (retry, breaker, classify,
    /// fallback); elsewhere each waiting attempt boxes a timer of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_core::BoxError;
    /// use palisade_timeout::{DeadlineLayer, TimeoutLayer};
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let slow = service_fn(|ms: u64| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     Ok::<u64, BoxError>(ms)
    /// });
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(DeadlineLayer::new(Duration::from_secs(2)))
    ///     .layer(TimeoutLayer::new(Duration::from_millis(100)).share_deadline_timer())
    ///     .service(slow);
    /// assert_eq!(svc.ready().await.unwrap().call(50).await.unwrap(), 50);
    /// let err = svc.ready().await.unwrap().call(150).await.unwrap_err();
    /// assert_eq!(err.to_string(), "attempt timed out after 100 ms");
    /// # }
    /// ```
    pub fn share_deadline_timer(self) -> TimeoutLayer<SharedTimer> {
        TimeoutLayer::with_limit(self.limit, self.name)
    }
}

impl<K: TimerKind> TimeoutLayer<K> {
    fn with_limit(limit: Limit, name: Name) -> Self {
        TimeoutLayer {
            limit,
            name,
            kind: PhantomData,
        }
    }

    /// The dependency's name, as its metrics are labelled ([`TimeoutBuilder::name`]).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The base (first attempt's) timeout.
    pub fn timeout(&self) -> Duration {
        self.limit.base()
    }

    /// The escalation `(factor, cap)`, if configured.
    pub fn escalation(&self) -> Option<(f64, Duration)> {
        self.limit.escalation()
    }
}

/// Builds a [`TimeoutLayer`]; made by [`TimeoutLayer::builder`].
#[derive(Clone, Copy, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct TimeoutBuilder {
    timeout: Duration,
    escalation: Option<(f64, Duration)>,
    name: Option<Name>,
}

impl TimeoutBuilder {
    /// Lengthens the limit of an attempt after earlier attempts of the same request timed out:
    /// `timeout × factor^n`, at most `cap`, where `n` is
    /// [`context::timeouts_so_far`](crate::context::timeouts_so_far) at call time (set by a
    /// retry layer above). A retry after a timeout thus waits longer instead of timing out
    /// again at the same point, as gRPC's hedging and retry design (A6) and Envoy's
    /// `per_try_timeout` with backoff suggest for tail latency. Default: no escalation.
    pub fn escalate(mut self, factor: f64, cap: Duration) -> Self {
        self.escalation = Some((factor, cap));
        self
    }

    /// The name of the dependency whose attempts this layer limits (`"timeout"`,
    /// [`DEFAULT_TIMEOUT_NAME`], by default): a timeout that fires is counted with it as the
    /// `dependency` label of `palisade.timeout.elapsed`, as the retry layer's and the breaker's
    /// metrics are labelled with theirs. The preset names it after the dependency.
    ///
    /// The name is interned ([`Name`]) when this is called: each distinct name is kept once
    /// for the life of the process, and a response future carries four bytes for it.
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Name::new(name.as_ref()));
        self
    }

    /// The layer.
    ///
    /// # Errors
    /// [`ConfigError`] naming `timeout` if it is zero, `factor` if it is below 1, NaN or
    /// infinite, or `cap` if it is shorter than the base timeout.
    pub fn build(self) -> Result<TimeoutLayer, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        let mut limit = Limit::new(self.timeout);
        if let Some((factor, cap)) = self.escalation {
            limit = limit.escalate(factor, cap)?;
        }
        let name = self.name.unwrap_or_else(|| Name::new(DEFAULT_TIMEOUT_NAME));
        Ok(TimeoutLayer::with_limit(limit, name))
    }
}

impl<S, K: TimerKind> Layer<S> for TimeoutLayer<K> {
    type Service = Timeout<S, K>;

    fn layer(&self, inner: S) -> Timeout<S, K> {
        Timeout::with_limit(inner, self.limit, self.name)
    }
}

/// Applies one [`Deadline`] over the whole call of the wrapped service (retries and backoff
/// included when the wrapped service retries).
///
/// ```
/// use std::time::Duration;
/// use palisade_timeout::DeadlineLayer;
///
/// // Unnamed: infallible.
/// let unnamed = DeadlineLayer::new(Duration::from_secs(30));
/// assert_eq!(unnamed.name(), "deadline");
///
/// // With options: validated when built.
/// let named = DeadlineLayer::builder(Duration::from_secs(30)).name("llm").build()?;
/// assert_eq!((named.limit(), named.name()), (Duration::from_secs(30), "llm"));
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
///
/// # Metrics
/// A deadline that expires is counted as `palisade.timeout.elapsed{dependency,
/// kind="deadline"}` (feature `metrics` of palisade-core), `dependency` being the name given
/// to [`DeadlineBuilder::name`], `"deadline"` by default.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    limit: Duration,
    name: Name,
}

impl DeadlineLayer {
    /// Fails each call that does not finish within `limit` with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded), counted from the first poll of
    /// its response future (or from `call`, if a layer below reads the deadline there; see
    /// the [crate docs](crate)).
    pub fn new(limit: Duration) -> Self {
        DeadlineLayer {
            limit,
            name: Name::new(DEFAULT_DEADLINE_NAME),
        }
    }

    /// A builder for a deadline of `limit` with options (the name), validated by
    /// [`build`](DeadlineBuilder::build).
    pub fn builder(limit: Duration) -> DeadlineBuilder {
        DeadlineBuilder { limit, name: None }
    }

    /// The time each call is granted.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The dependency's name, as its metrics are labelled ([`DeadlineBuilder::name`]).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::with_name(inner, self.limit, self.name)
    }
}

/// Builds a [`DeadlineLayer`]; made by [`DeadlineLayer::builder`].
#[derive(Clone, Copy, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DeadlineBuilder {
    limit: Duration,
    name: Option<Name>,
}

impl DeadlineBuilder {
    /// The name of the dependency whose calls this layer limits (`"deadline"`,
    /// [`DEFAULT_DEADLINE_NAME`], by default): a deadline that expires is counted with it as
    /// the `dependency` label of `palisade.timeout.elapsed`, as the retry layer's and the
    /// breaker's metrics are labelled with theirs. The preset names it after the dependency.
    ///
    /// The name is interned ([`Name`]) when this is called: each distinct name is kept once
    /// for the life of the process, and a response future carries four bytes for it.
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Name::new(name.as_ref()));
        self
    }

    /// The layer.
    ///
    /// # Errors
    /// [`ConfigError`] naming `deadline` if the limit is zero (every call would fail before
    /// it starts; [`DeadlineLayer::new`] takes it).
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if self.limit.is_zero() {
            return Err(ConfigError::new("deadline", "must be greater than zero"));
        }
        Ok(DeadlineLayer {
            limit: self.limit,
            name: self
                .name
                .unwrap_or_else(|| Name::new(DEFAULT_DEADLINE_NAME)),
        })
    }
}
