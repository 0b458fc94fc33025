//! [`RetryLayer`] and its [`RetryBuilder`]: configuration only.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, ConfigError};
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tower_layer::Layer;

use crate::adaptive::{AdaptiveAttempts, AdaptiveLimit};
use crate::attempts::{LayerLimit, MaxAttemptsFn};
use crate::backoff::{Backoff, Jitter};
use crate::budget::{IntoShared, Throttled};
use crate::policy::{self, Pacer, Policy};
use crate::rng::RngSource;
use crate::service::{RefreshFuture, RefreshHook, Retry, Shared};

/// The default attempt limit: 3, the first attempt included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The default initial delay for `RateLimited` failures: 5 s.
pub const DEFAULT_RATE_LIMITED_DELAY: Duration = Duration::from_secs(5);

/// The default ceiling on a server's retry hint: 60 s. A longer hint is not waited for.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The default least time before the deadline a retry starts with: 10 ms (see
/// [`RetryBuilder::min_attempt_time`]).
pub const DEFAULT_MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// Retries failed calls as their class allows, with backoff, within a budget and a deadline.
///
/// Clones share everything: the budget, the adaptive limit and the rng. See the
/// [crate documentation](crate) for the behaviour and an example.
pub struct RetryLayer<B: ?Sized = Throttled, A = LayerLimit> {
    shared: Arc<Shared<B, A>>,
}

impl RetryLayer {
    /// A layer with these defaults: 3 attempts; exponential backoff from 1 s, factor 2, capped
    /// at 60 s, ±10 % jitter; 5 s before retrying a rate-limited call that gave no hint;
    /// server hints honoured (stretched by a random 0–10 %), up to 60 s; its own [`Throttled`]
    /// budget (12 % of requests plus 1 a second, at least 8 a second, stopped while the
    /// dependency fails more than it answers); an rng seeded from the operating system.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults of [`RetryLayer::new`]: the only way to make a
    /// [`RetryBuilder`].
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            backoff: Backoff::default(),
            jitter: Jitter::default(),
            rate_limited: DEFAULT_RATE_LIMITED_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            wait_for_breaker: true,
            wait_for_budget: true,
            min_attempt_time: DEFAULT_MIN_ATTEMPT_TIME,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            adaptive: None,
            budget: Arc::new(Throttled::default()),
            rng: None,
            refresh: None,
            name: Arc::from("retry"),
            attempts: LayerLimit,
        }
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: ?Sized, A> RetryLayer<B, A> {
    /// The budget this layer draws on.
    pub fn budget(&self) -> &Arc<B> {
        &self.shared.budget
    }

    /// The attempt limit a request without an override gets right now (the adaptive limit, if
    /// adaptive attempts are on).
    pub fn max_attempts(&self) -> u32 {
        self.shared.limit()
    }
}

impl<B: ?Sized, A> Clone for RetryLayer<B, A> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: fmt::Debug + ?Sized, A: fmt::Debug> fmt::Debug for RetryLayer<B, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S: Clone, B: ?Sized, A> Layer<S> for RetryLayer<B, A> {
    type Service = Retry<S, B, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, self.shared.clone())
    }
}

/// Builds a [`RetryLayer`]; made by [`RetryLayer::builder`], every setting starts at the
/// default of [`RetryLayer::new`]. [`build`](RetryBuilder::build) checks them all.
///
/// ```
/// use palisade_retry::{budget::RatioBudget, Backoff, Jitter, RetryLayer};
/// use std::{sync::Arc, time::Duration};
///
/// let shared = Arc::new(RatioBudget::default());
/// let layer = RetryLayer::builder()
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(50), 2.0).with_cap(Duration::from_secs(2)))
///     .jitter(Jitter::Full)
///     .budget(shared.clone()) // hand the same Arc to other layers to share it
///     .seed(42)
///     .build()
///     .unwrap();
/// assert_eq!(layer.max_attempts(), 4);
/// assert!(Arc::ptr_eq(layer.budget(), &shared));
/// ```
pub struct RetryBuilder<B: ?Sized = Throttled, A = LayerLimit> {
    backoff: Backoff,
    jitter: Jitter,
    rate_limited: Duration,
    max_retry_after: Duration,
    wait_for_breaker: bool,
    wait_for_budget: bool,
    min_attempt_time: Duration,
    max_attempts: u32,
    adaptive: Option<AdaptiveAttempts>,
    budget: Arc<B>,
    rng: Option<RngSource>,
    refresh: Option<RefreshHook>,
    name: Arc<str>,
    attempts: A,
}

impl<B: ?Sized, A> RetryBuilder<B, A> {
    /// Attempts per request, the first included (at least 1; 1 means no retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The jitter applied to each backoff delay.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The initial delay before retrying a `RateLimited` failure. The backoff's shape still
    /// applies, and so does its cap, except that a cap below this delay is raised to it: with
    /// `Backoff::exponential(100 ms, 2.0).with_cap(1 s)` and the default 5 s, each retry of a
    /// rate limit waits up to 5 s (the jitter's draw, below the raised cap), not 1 s. A
    /// failure with a server's `retry_after` waits for that hint instead.
    pub fn rate_limited_delay(mut self, delay: Duration) -> Self {
        self.rate_limited = delay;
        self
    }

    /// The longest server retry hint to honour; a failure whose hint is longer is returned at
    /// once rather than waited for. A hint honoured is waited for stretched by a random 0 to
    /// 10 % (the ceiling applies to the hint, before the stretch; under a deadline the stretch is
    /// drawn within the time left, and only a hint that itself reaches the deadline is not
    /// waited for): never less than the server asked, and the callers a limiter refused together, each told the same hint, come back
    /// spread over a tenth of it instead of all in the same instant. In palisade's simulator
    /// (80 calls a second against a limit of 50, each refusal hinting 1 s), not one of the
    /// preset's requests retried on the exact hint was answered: each retry came back in step
    /// with a new call and found the limit spent again. Stretched, retried requests are
    /// answered, after 1.15 s on average.
    ///
    /// `Duration::MAX` honours every hint, however long: a wait longer than the clock can
    /// hold ends in 30 years, as `tokio::time::sleep` makes it (under a deadline, such a hint
    /// is not waited for at all).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Whether a request that a breaker below refused, saying when it probes the dependency
    /// again (an open breaker's [`CircuitOpen`](palisade_core::failure::CircuitOpen) with its
    /// `retry_after`), waits for that moment without using up an attempt, for as long as the
    /// request's deadline allows. Default: `true`.
    ///
    /// A refused attempt reached nothing, so waiting for the breaker adds no load to the
    /// dependency and spends no budget: the breaker still decides what goes through, one probe
    /// at a time. Each wait is the breaker's `retry_after` stretched by a random 0–50 %, so that
    /// the requests held during an outage do not all come back at the same instant (the
    /// thundering herd that exponential backoff with jitter exists to avoid). A request whose
    /// stretched wait would end at or past its deadline fails at once with the refusal: unlike
    /// a server hint's stretch, this one is not drawn again within the time left, which would
    /// crowd the held requests into the moments before their deadlines just as the dependency
    /// starts to take calls again (in the simulator's brownout at 67 requests a second, that
    /// answered 70.2–70.7 % of requests instead of 71.9–72.1 %). This holds for a request's
    /// last attempt, and for a request of one attempt (a non-idempotent one, whose refusal
    /// means it was never sent): the layer keeps a copy of the request for each attempt then
    /// (see the crate's *Clone requirement*). In palisade's
    /// simulator this takes the preset's success through a 10 s outage from 75.8 % to 98.2 %
    /// (requests sent during it are answered once the dependency is back, within their 10 s
    /// deadline) and through a dependency flapping every 2 s from 66.7 % to 93.8 %, at 1.00
    /// and 1.01 upstream calls per request (0.77 and 0.74 without).
    ///
    /// With `false`, a refusal that says when the breaker probes again is returned at once,
    /// whatever attempts are left: retrying sooner would meet the same refusal, and later is
    /// the wait this turns off. Set it where a fallback above should answer at once while the
    /// breaker is open rather than after the wait (the gave-up reason is `breaker_open`).
    /// Without a deadline above (no [`context::deadline`](palisade_core::context::deadline))
    /// to bound the wait, each refusal uses an attempt like any failure, and the request fails
    /// once they are spent.
    pub fn wait_for_breaker(mut self, wait: bool) -> Self {
        self.wait_for_breaker = wait;
        self
    }

    /// Whether a retry the budget refuses waits for the budget, within the request's
    /// deadline, instead of failing at once. Default: `true`.
    ///
    /// The budget bounds how many retries reach the dependency; it says nothing about *when*.
    /// Failing a request the moment the budget is spent throws away the deadline it still has:
    /// a dependency that fails for a moment (a restart, a flap, the first second of an
    /// outage, before the breaker has seen enough calls to open) fails every request it
    /// touched then, though the budget allows more retries a second later. With this on, such
    /// a retry keeps its request and asks the budget again every 250 ms (each look stretched by
    /// a random 0–50 %), and goes out once the budget allows it; it fails with its last error
    /// when the next look would fall at or after the deadline. The budget still counts every
    /// retry sent, so the load on the dependency stays within it. One exception, for gRPC's
    /// throttle (the default budget's second half), which only the dependency's successes
    /// refill: callers that send their next request only once this one is answered (an
    /// agent's loop, a pool of workers) send nothing while they are held, so nothing would
    /// ever refill it and every held request would wait out its deadline, however soon the
    /// dependency recovered. So one held retry per 250 ms, in the whole layer, goes out past
    /// the throttle as a probe, still within the budget behind it
    /// ([`Budget::try_probe`](crate::budget::Budget::try_probe)); a budget that time refills
    /// ([`RatioBudget`](crate::budget::RatioBudget), [`RateCap`](crate::budget::RateCap))
    /// allows no probe. In palisade's simulator, with one caller sending its next request when
    /// the last is answered, this answers a request held through a 10 s outage 300 ms after
    /// the dependency recovers instead of failing it at its deadline. AWS's SDKs make the same
    /// choice in their "adaptive" retry mode, whose client-side rate limiter delays requests
    /// rather than failing them.
    ///
    /// Not held: a failure the server paced (`RateLimited` with a `retry_after` hint), which
    /// fails at once when the budget refuses its retry: the server's limit, not the budget, is
    /// what it would wait on, and a held 429 only queues behind the same limit. Nor a
    /// credential refresh.
    ///
    /// In palisade's simulator this takes the preset's success from 93.8 % to 100 % with a
    /// dependency flapping every 2 s (at 1.07 upstream calls per request, against 1.17 for
    /// tower's retry), and from 66.8 % to 68.8 % in the brownout (at 0.94 calls per request
    /// during the ramp); the rate-limit scenario is unchanged.
    ///
    /// Without a deadline above, or with `false`, a refused retry fails the request at once
    /// with its last error. A request waiting for the budget holds its request (and its memory)
    /// until then: with `false`, a service that must fail fast under load sheds instead.
    pub fn wait_for_budget(mut self, wait: bool) -> Self {
        self.wait_for_budget = wait;
        self
    }

    /// The least time an attempt is given: a retry starts only while at least this is left
    /// before the request's deadline. Default: 10 ms ([`DEFAULT_MIN_ATTEMPT_TIME`]). The first
    /// attempt is the caller's, sent as it comes.
    ///
    /// An attempt sent in a deadline's last moments is cut off before any dependency can
    /// answer it, yet the dependency still takes the call and does the work: load at the
    /// worst moment, for nothing. Its wait (a backoff, a server's hint, a hold for the breaker
    /// or the budget) is fitted to end earlier instead, and a request that cannot start a
    /// retry in time ends with its last error, its gave-up reason `deadline`. Waits are fitted
    /// to end by the last start, and tokio's timer fires on whole milliseconds, up to one after
    /// the time asked: a retry whose wait ended is sent with one millisecond less left, never
    /// at or after the deadline. Set it near the dependency's fastest useful answer:
    /// `Duration::ZERO` sends a retry with any time left before the deadline. Requests without
    /// a deadline are not affected.
    pub fn min_attempt_time(mut self, time: Duration) -> Self {
        self.min_attempt_time = time;
        self
    }

    /// Adaptive attempts: the limit moves between 1 and twice [`max_attempts`](Self::max_attempts)
    /// with the dependency's recent successes and failures. `None` (the default) keeps the
    /// limit fixed.
    pub fn adaptive(mut self, adaptive: impl Into<Option<AdaptiveAttempts>>) -> Self {
        self.adaptive = adaptive.into();
        self
    }

    /// The name of the dependency this layer retries calls to ("retry" by default): every
    /// tracing event of the layer carries it as `dependency`, so a log line says whose calls
    /// were retried or refused. The preset names it after the dependency.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Seeds the jitter's rng: the same seed and the same order of failures give the same
    /// delays on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(RngSource::seeded(seed));
        self
    }

    /// Draws each jittered delay from a fresh rng made by `factory` (called on failures only).
    pub fn rng_factory<F>(mut self, factory: F) -> Self
    where
        F: Fn() -> SmallRng + Send + Sync + 'static,
    {
        self.rng = Some(RngSource::Factory(Arc::new(factory)));
        self
    }

    /// An async hook that refreshes credentials. When an attempt fails with
    /// `Category::Authentication`, the hook runs and, if it succeeds, the request is retried
    /// once, as soon as the hook is done (within the attempt limit and the budget). A server's
    /// hint on the failure (a 401 with `Retry-After`) holds: the retry waits until it has
    /// passed too, and a hint above [`max_retry_after`](Self::max_retry_after) or past the
    /// deadline returns the error without running the hook. If the hook fails, the
    /// authentication error is returned. Without a hook, authentication failures are not
    /// retried; nor is one inside a fallback chain that failed below
    /// (`palisade_core::failure::FallbackFailed`), which is final for the layers above it.
    ///
    /// Concurrent failing requests each call the hook; make it coalesce refreshes if that
    /// matters (a shared `tokio::sync::OnceCell` or a generation counter).
    pub fn refresh<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.refresh = Some(Arc::new(move || Box::pin(hook()) as RefreshFuture));
        self
    }

    /// The retry budget: a value (this layer's own) or an `Arc` shared with whoever else holds
    /// it. Use [`Unlimited`](crate::budget::Unlimited) for none.
    pub fn budget<B2: ?Sized>(self, budget: impl IntoShared<B2>) -> RetryBuilder<B2, A> {
        RetryBuilder {
            backoff: self.backoff,
            jitter: self.jitter,
            rate_limited: self.rate_limited,
            max_retry_after: self.max_retry_after,
            wait_for_breaker: self.wait_for_breaker,
            wait_for_budget: self.wait_for_budget,
            min_attempt_time: self.min_attempt_time,
            max_attempts: self.max_attempts,
            adaptive: self.adaptive,
            budget: budget.into_shared(),
            rng: self.rng,
            refresh: self.refresh,
            name: self.name,
            attempts: self.attempts,
        }
    }

    /// Reads a per-request attempt limit from each request (see
    /// [`MaxAttempts`](crate::MaxAttempts)); `None` keeps the layer's.
    pub fn max_attempts_fn<F>(self, f: F) -> RetryBuilder<B, MaxAttemptsFn<F>> {
        self.max_attempts_with(crate::attempts::max_attempts_fn(f))
    }

    /// Reads per-request attempt limits with any [`MaxAttempts`](crate::MaxAttempts).
    pub fn max_attempts_with<A2>(self, attempts: A2) -> RetryBuilder<B, A2> {
        RetryBuilder {
            backoff: self.backoff,
            jitter: self.jitter,
            rate_limited: self.rate_limited,
            max_retry_after: self.max_retry_after,
            wait_for_breaker: self.wait_for_breaker,
            wait_for_budget: self.wait_for_budget,
            min_attempt_time: self.min_attempt_time,
            max_attempts: self.max_attempts,
            adaptive: self.adaptive,
            budget: self.budget,
            rng: self.rng,
            refresh: self.refresh,
            name: self.name,
            attempts,
        }
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: `max_attempts` is 0, `backoff.cap` is below the
    /// initial delay, `backoff.factor` is below 1 or not finite, `jitter` has a proportional
    /// factor outside 0..=1.
    pub fn build(self) -> Result<RetryLayer<B, A>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        self.backoff.validate()?;
        self.jitter.validate()?;
        let shared = Shared {
            policy: Policy {
                backoff: self.backoff,
                jitter: self.jitter,
                rate_limited: self.rate_limited,
                max_retry_after: self.max_retry_after,
                wait_for_breaker: self.wait_for_breaker,
                wait_for_budget: self.wait_for_budget,
                min_attempt_time: self.min_attempt_time,
            },
            max_attempts: self.max_attempts,
            adaptive: self
                .adaptive
                .map(|a| AdaptiveLimit::new(a, self.max_attempts)),
            budget: self.budget,
            rng: self.rng.unwrap_or_else(RngSource::from_entropy),
            refresh: self.refresh,
            name: self.name,
            attempts: self.attempts,
            probe: Pacer::new(Instant::now(), policy::BUDGET_PROBE),
            warning: Pacer::new(Instant::now(), policy::BUDGET_WARNING),
        };
        Ok(RetryLayer {
            shared: Arc::new(shared),
        })
    }
}

impl<B: fmt::Debug + ?Sized, A: fmt::Debug> fmt::Debug for RetryBuilder<B, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("rate_limited_delay", &self.rate_limited)
            .field("max_retry_after", &self.max_retry_after)
            .field("wait_for_breaker", &self.wait_for_breaker)
            .field("wait_for_budget", &self.wait_for_budget)
            .field("min_attempt_time", &self.min_attempt_time)
            .field("adaptive", &self.adaptive)
            .field("budget", &self.budget)
            .field("rng", &self.rng)
            .field("refresh", &self.refresh.is_some())
            .field("attempts", &self.attempts)
            .finish()
    }
}
