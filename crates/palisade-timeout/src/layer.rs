//! The layers: [`TimeoutLayer`] and [`DeadlineLayer`].

use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::ConfigError;
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
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer<K = OwnTimer> {
    limit: Limit,
    kind: PhantomData<K>,
}

impl TimeoutLayer {
    /// Fails each call that does not finish within `timeout` with
    /// [`Elapsed`](crate::error::Elapsed). Every attempt gets the same limit (no
    /// escalation); a zero `timeout` fails every call that is not ready at its first poll.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer::with_limit(Limit::new(timeout))
    }

    /// A builder for a timeout of `timeout` with options (escalation), validated by
    /// [`build`](TimeoutBuilder::build).
    pub fn builder(timeout: Duration) -> TimeoutBuilder {
        TimeoutBuilder {
            timeout,
            escalation: None,
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
        TimeoutLayer::with_limit(self.limit)
    }
}

impl<K: TimerKind> TimeoutLayer<K> {
    fn with_limit(limit: Limit) -> Self {
        TimeoutLayer {
            limit,
            kind: PhantomData,
        }
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
        Ok(TimeoutLayer::with_limit(limit))
    }
}

impl<S, K: TimerKind> Layer<S> for TimeoutLayer<K> {
    type Service = Timeout<S, K>;

    fn layer(&self, inner: S) -> Timeout<S, K> {
        Timeout::with_limit(inner, self.limit)
    }
}

/// Applies one [`Deadline`] over the whole call of the wrapped service (retries and backoff
/// included when the wrapped service retries).
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// Fails each call that does not finish within `limit` of the call with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded).
    pub fn new(limit: Duration) -> Self {
        DeadlineLayer { limit }
    }

    /// The time each call is granted.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline::new(inner, self.limit)
    }
}
