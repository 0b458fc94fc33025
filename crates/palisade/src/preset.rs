//! The recommended stack, in the recommended order, as one layer.

use std::time::Duration;

use tower::layer::util::Stack;

use crate::breaker::{BreakerConfig, BreakerHandle, BreakerLayer};
use crate::classify::{ClassifyLayer, ConfigError, DefaultClassifier};
use crate::retry::budget::Throttled;
use crate::retry::{LayerLimit, RetryLayer};
use crate::timeout::timer::SharedTimer;
use crate::timeout::{DeadlineLayer, TimeoutLayer};

/// The recommended stack as one layer, outermost first: deadline → retry (within a retry
/// budget) → breaker → timeout (per attempt, escalating) → classify.
///
/// Put a [`FallbackLayer`](crate::fallback::FallbackLayer) above it for a last-resort answer,
/// and a [`Route`](crate::route::Route) below it (between timeout and classify, so build those
/// by hand) when the dependency has several endpoints.
///
/// Its type parameters are the classifier (`C`, [`DefaultClassifier`] unless
/// [`PresetBuilder::classifier`] chose another, such as an HTTP classifier), and the retry
/// layer's budget and attempt limit (`B`, `A`, as [`RetryLayer`]'s, chosen by
/// [`PresetBuilder::retry`]).
pub type Preset<C = DefaultClassifier, B = Throttled, A = LayerLimit> = Stack<
    ClassifyLayer<C>,
    Stack<TimeoutLayer<SharedTimer>, Stack<BreakerLayer, Stack<RetryLayer<B, A>, DeadlineLayer>>>,
>;

/// Builds a [`Preset`]; see [`recommended`].
#[derive(Debug)]
pub struct PresetBuilder<C = DefaultClassifier, B: ?Sized = Throttled, A = LayerLimit> {
    name: String,
    deadline: Duration,
    attempt_timeout: Duration,
    escalation: Option<(f64, Duration)>,
    retry: Retry<B, A>,
    breaker: BreakerConfig,
    /// A breaker given whole ([`PresetBuilder::breaker_layer`]), used instead of `breaker`.
    breaker_layer: Option<BreakerLayer>,
    classifier: C,
}

/// The retry layer of a preset: given, or the default one to be named after the dependency.
enum Retry<B: ?Sized, A> {
    Given(RetryLayer<B, A>),
    Default(fn(&str) -> Result<RetryLayer<B, A>, ConfigError>),
}

impl<B: ?Sized, A> std::fmt::Debug for Retry<B, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retry::Given(_) => f.write_str("Given"),
            Retry::Default(_) => f.write_str("Default"),
        }
    }
}

fn default_retry(name: &str) -> Result<RetryLayer, ConfigError> {
    RetryLayer::builder().name(name).build()
}

/// The recommended stack for a dependency named `name`, with these defaults:
///
/// - a 30 s deadline for the whole call, retries and their waits included;
/// - retries as [`RetryLayer::new`]: 3 attempts, exponential backoff from 1 s with ±10 %
///   jitter, a server's retry hint taken as the delay (stretched by a random 0–10 %), and a
///   [`Throttled`] budget (retries up to 12 % of requests
///   plus 1 a second, at least 8 a second for a client that sends little, stopped by
///   gRPC-style retry throttling while the dependency mostly fails); a call the open breaker refused
///   ([`Category::Rejected`](crate::classify::Category::Rejected), with the time until its
///   next probe) waits for that probe, stretched by a random 0–50 %, spending neither budget
///   nor an attempt, until the deadline
///   ([`RetryBuilder::wait_for_breaker`](crate::retry::RetryBuilder::wait_for_breaker)): in
///   the simulator's 10 s outage this answers 98.2 % of the requests, 75.8 % when each refusal
///   used an attempt, at no more upstream calls per request (where a fallback above should
///   answer at once instead, give [`PresetBuilder::retry`] a layer built with
///   `wait_for_breaker(false)`); one the closed breaker's throttle shed is retried within the
///   budget; and a retry the budget refuses waits for the budget, looking again every 250 ms,
///   until the deadline, except after a 429 the server paced
///   ([`RetryBuilder::wait_for_budget`](crate::retry::RetryBuilder::wait_for_budget)): with a
///   dependency flapping every 2 s this answers 100 % of the requests instead of 93.8 %; and
///   since the budget's throttle comes back only with the dependency's successes, one held
///   retry per 250 ms goes past it as a probe, so that callers sending one request at a time,
///   who send nothing while held, learn of a recovery within a probe period rather than at
///   their deadlines; no retry starts with less than 10 ms left before the deadline
///   ([`RetryBuilder::min_attempt_time`](crate::retry::RetryBuilder::min_attempt_time));
/// - the breaker as [`BreakerConfig::default`]: it opens when 95 % of the last 30 calls (of
///   the last second's, at least 10, where 30 calls reach back further)
///   failed, throttles adaptively while closed (the Google SRE book's client-side throttling,
///   `k` = 3 over the last 100 requests), stays open 500 ms (×1.5 per failed probe, at most
///   750 ms; longer where the failure that tripped it carried a server's hint, up to 60 s),
///   probes one call at a time and closes after 2 successes. Pass
///   [`BreakerConfig::classic`] to [`PresetBuilder::breaker`] for 5 failures in a row and
///   30 s open;
/// - a 10 s timeout per attempt, doubled after each timed-out attempt up to 30 s, which
///   shares the deadline's timer
///   ([`TimeoutLayer::share_deadline_timer`](crate::timeout::TimeoutLayer::share_deadline_timer));
/// - the default classifier;
/// - the deadline, retry, breaker and timeout all named `name`, so that every metric they
///   record carries `dependency` (`breaker` for the breaker's) = `name`.
///
/// The breaker's [`BreakerHandle`] (for `/ready`, metrics, an operator's `isolate`) comes with
/// the stack from [`PresetBuilder::build_with_breaker`]; [`PresetBuilder::breaker_layer`]
/// takes a breaker built beforehand, whose handle you keep; a preset read from a file gives
/// it through [`PresetHandle::breaker`](crate::config::PresetHandle::breaker) (feature
/// `config`).
///
/// # Behind an HTTP handler
///
/// The retry layer waits for an open breaker's next probe, up to the deadline. Behind a
/// server's handler, with a deadline longer than the caller will wait (the caller's own,
/// through palisade-http's `ServerDeadlineLayer`, or the preset's 30 s), a request that comes
/// during an outage is held for that probe instead of being answered 503 with `Retry-After`
/// at once by palisade-http's `ErrorResponseLayer`. A server that prefers to fail fast, and
/// let its callers retry when `Retry-After` says, gives the preset a retry layer that does
/// not wait for the breaker:
///
/// ```
/// use palisade::retry::RetryLayer;
/// use palisade::preset;
///
/// # fn main() -> Result<(), palisade::classify::ConfigError> {
/// let retry = RetryLayer::builder().name("llm").wait_for_breaker(false).build()?;
/// let (preset, breaker) = preset::recommended("llm").retry(retry).build_with_breaker()?;
/// # let _ = (preset, breaker);
/// # Ok(()) }
/// ```
///
/// # Requests that are not `Clone`
///
/// The retry layer keeps a copy of each request for the next attempt, so the preset asks for
/// `Req: Clone`. A server's request (`Request<axum::body::Body>`,
/// `Request<hyper::body::Incoming>`) is not: over an axum `Router` the stack does not compile
/// (``the trait bound `Body: Clone` is not satisfied``; rustc's hint to borrow the request
/// does not help). palisade-http's `body::ReplayLayer` (feature `http-layers`) above the
/// preset keeps each body for replay, and `body::ReplayAttempts` on the retry layer gives one
/// attempt to a body too large to keep (below). Over a server, a retry runs the handler
/// again, with whatever it does: keep retries there for handlers that are safe to run twice
/// (reads, idempotent writes). Where a handler calls a dependency, the retry usually belongs
/// on that outgoing client instead (the preset, or the layers one by one), with only
/// `ErrorResponseLayer` and a server deadline over the `Router`, as palisade-http's
/// `axum_agent` example has it.
///
/// ```
/// # #[cfg(not(feature = "http-axum"))]
/// # fn main() {}
/// # #[cfg(feature = "http-axum")]
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::classify::BoxError> {
/// use axum::body::Body;
/// use axum::http::{Request, StatusCode};
/// use axum::{Router, routing::post};
/// use palisade::http::body::{ReplayAttempts, ReplayLayer};
/// use palisade::http::{ErrorResponseLayer, HttpClassifier};
/// use palisade::retry::{LayerLimit, RetryLayer};
/// use palisade::{ServiceBuilderExt, preset};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// // A handler that fails its first call with a 503, then echoes the body.
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let app = Router::new().route(
///     "/echo",
///     post(move |body: String| async move {
///         match counted.fetch_add(1, Ordering::SeqCst) {
///             0 => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
///             _ => (StatusCode::OK, body),
///         }
///     }),
/// );
/// let retry = RetryLayer::builder()
///     .name("app")
///     .max_attempts_with(ReplayAttempts::new(LayerLimit))
///     .build()?;
/// let server = ServiceBuilder::new()
///     .layer(ErrorResponseLayer::new())
///     .layer(ReplayLayer::new(64 * 1024))
///     .palisade(preset::recommended("app").classifier(HttpClassifier::new()).retry(retry).build()?)
///     .service(app);
///
/// let request = Request::post("/echo").body(Body::from("hello"))?;
/// let response = server.oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503 was retried, with the body replayed");
/// let body = axum::body::to_bytes(response.into_body(), 1024).await?;
/// assert_eq!(&body[..], b"hello");
/// # Ok(()) }
/// ```
///
/// `cargo run --release -p palisade-sim` runs this stack (with each scenario's deadline and
/// attempt timeout), tower's own retry and timeout layers and two baselines through outages,
/// rate limits, latency spikes and brownouts in virtual time, and prints what each achieved.
///
/// ```
/// use palisade::classify::BoxError;
/// use palisade::{ServiceBuilderExt, preset};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let llm = service_fn(|prompt: String| async move { Ok::<_, BoxError>(format!("answer to {prompt}")) });
/// let agent = ServiceBuilder::new()
///     .palisade(preset::recommended("llm").build()?)
///     .service(llm);
/// assert_eq!(agent.oneshot("hi".to_owned()).await?, "answer to hi");
/// # Ok(()) }
/// ```
pub fn recommended(name: impl Into<String>) -> PresetBuilder {
    PresetBuilder {
        name: name.into(),
        deadline: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(10),
        escalation: Some((2.0, Duration::from_secs(30))),
        retry: Retry::Default(default_retry),
        breaker: BreakerConfig::default(),
        breaker_layer: None,
        classifier: DefaultClassifier::default(),
    }
}

impl<C, B: ?Sized, A> PresetBuilder<C, B, A> {
    /// The limit on the whole call, retries and backoff included.
    pub fn deadline(mut self, limit: Duration) -> Self {
        self.deadline = limit;
        self
    }

    /// The limit on each attempt, and how it escalates after timeouts (`None`: it does not).
    pub fn attempt_timeout(mut self, limit: Duration, escalation: Option<(f64, Duration)>) -> Self {
        self.attempt_timeout = limit;
        self.escalation = escalation;
        self
    }

    /// The retry layer (build it with [`RetryLayer::builder`], and give it the dependency's
    /// name with [`RetryBuilder::name`](crate::retry::RetryBuilder::name) so that its tracing
    /// events say whose calls they retried; without this call the preset names its retry layer
    /// after the dependency itself).
    ///
    /// Any budget and attempt limit: the preset's type follows the layer's.
    pub fn retry<B2: ?Sized, A2>(self, retry: RetryLayer<B2, A2>) -> PresetBuilder<C, B2, A2> {
        PresetBuilder {
            name: self.name,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            escalation: self.escalation,
            retry: Retry::Given(retry),
            breaker: self.breaker,
            breaker_layer: self.breaker_layer,
            classifier: self.classifier,
        }
    }

    /// The breaker's configuration.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self.breaker_layer = None;
        self
    }

    /// A breaker built beforehand, whose [`handle`](BreakerLayer::handle) you keep (to
    /// watch it, or to [`reconfigure`](crate::breaker::BreakerHandle::reconfigure) it live),
    /// used instead of one built from [`breaker`](Self::breaker)'s configuration. To get the
    /// handle of the breaker the preset builds, use
    /// [`build_with_breaker`](Self::build_with_breaker).
    pub fn breaker_layer(mut self, layer: BreakerLayer) -> Self {
        self.breaker_layer = Some(layer);
        self
    }

    /// The classifier at the bottom of the stack: any [`Classify`](crate::classify::Classify)
    /// implementation (an HTTP or gRPC classifier for an HTTP client, a
    /// [`ClassifierBuilder`](crate::classify::ClassifierBuilder)'s, your own).
    ///
    /// For an HTTP client, palisade-http's `HttpClassifier` (feature `http-layers`) judges a
    /// response by its status and headers; add palisade-http's `body::PeekLayer` right below
    /// the preset (`.palisade(preset).layer(PeekLayer::new())`) for it to read what a failing
    /// response's body says too: an LLM API's 429 that says the account's quota is spent
    /// (OpenAI's `insufficient_quota`) is then not retried.
    pub fn classifier<C2>(self, classifier: C2) -> PresetBuilder<C2, B, A> {
        PresetBuilder {
            name: self.name,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            escalation: self.escalation,
            retry: self.retry,
            breaker: self.breaker,
            breaker_layer: self.breaker_layer,
            classifier,
        }
    }

    /// Builds the stack.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the invalid field: `name` when it is empty or only
    /// whitespace (it names the dependency in the breaker's errors, metrics and spans),
    /// `deadline` when it is zero (every call would fail before it starts), `timeout` when
    /// the [attempt timeout](Self::attempt_timeout) is zero (with or without escalation), or
    /// another of the timeout's (`factor`, `cap`) or one of the breaker's.
    pub fn build(self) -> Result<Preset<C, B, A>, ConfigError> {
        self.build_with_breaker().map(|(preset, _)| preset)
    }

    /// Builds the stack, and gives its breaker's handle: to register in palisade-http's
    /// `Health` for `/ready`, to watch, or to [`isolate`](BreakerHandle::isolate) and
    /// [`reconfigure`](BreakerHandle::reconfigure) the breaker while it runs. The same
    /// handle as [`breaker_layer`](Self::breaker_layer)'s, when one was given.
    ///
    /// ```
    /// # #[cfg(not(feature = "http-layers"))]
    /// # fn main() {}
    /// # #[cfg(feature = "http-layers")]
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), palisade::classify::BoxError> {
    /// use palisade::classify::BoxError;
    /// use palisade::http::health::Health;
    /// use palisade::{ServiceBuilderExt, preset};
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// let (preset, breaker) = preset::recommended("llm").build_with_breaker()?;
    /// let llm = ServiceBuilder::new()
    ///     .palisade(preset)
    ///     .service(service_fn(|prompt: String| async move { Ok::<_, BoxError>(prompt) }));
    /// let health = Health::new().breaker(breaker.clone());
    ///
    /// // `/ready`: served by `health.service()`, or `health.router()` with `http-axum`.
    /// assert_eq!(health.readiness().0, 200);
    /// breaker.isolate();
    /// assert_eq!(health.readiness().0, 503);
    /// assert!(llm.oneshot("hi".to_owned()).await.is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with_breaker(self) -> Result<(Preset<C, B, A>, BreakerHandle), ConfigError> {
        check_name(&self.name)?;
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be greater than zero"));
        }
        // Through the builder with or without escalation: it refuses a zero timeout, which
        // `TimeoutLayer::new` would take (every attempt would time out before it starts).
        let timeout = match self.escalation {
            Some((factor, cap)) => {
                TimeoutLayer::builder(self.attempt_timeout).escalate(factor, cap)
            }
            None => TimeoutLayer::builder(self.attempt_timeout),
        }
        // Its metrics, as the deadline's, labelled with the dependency like the others'.
        .name(&self.name)
        .build()?
        // The deadline above wakes the attempts: one timer per call, not two.
        .share_deadline_timer();
        let retry = match self.retry {
            Retry::Given(retry) => retry,
            Retry::Default(default) => default(&self.name)?,
        };
        let breaker = match self.breaker_layer {
            Some(layer) => layer,
            None => BreakerLayer::builder(self.name.as_str())
                .config(self.breaker)
                .build()?,
        };
        let handle = breaker.handle();
        let deadline = DeadlineLayer::builder(self.deadline)
            .name(&self.name)
            .build()?;
        let preset = Stack::new(
            ClassifyLayer::new(self.classifier),
            Stack::new(timeout, Stack::new(breaker, Stack::new(retry, deadline))),
        );
        Ok((preset, handle))
    }
}

/// Checks the dependency's name: it names the breaker's errors (`circuit 'llm' open`), the
/// metrics' `dependency` label and the spans, so it must say something.
pub(crate) fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::new(
            "name",
            "must not be empty or only whitespace: it names the dependency in errors, metrics and spans",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty or blank name would read `circuit '' open` and label metrics
    /// `dependency=""`: refused at build time, naming the field, as the file's `name` is.
    #[test]
    fn an_empty_or_blank_name_is_refused_at_build_time() {
        for name in ["", " ", "\t\n"] {
            let Err(err) = recommended(name).build() else {
                panic!("{name:?} is refused");
            };
            assert_eq!(err.field(), "name", "{name:?}");
            assert_eq!(
                err.rule(),
                "must not be empty or only whitespace: it names the dependency in errors, metrics and spans"
            );
        }
        assert!(recommended(" llm ").build().is_ok());
        assert!(recommended("x").build().is_ok());
    }

    /// A zero deadline fails every call before it starts: refused at build time, naming the
    /// field, as the configuration file's `deadline` is.
    #[test]
    fn a_zero_deadline_is_refused_at_build_time() {
        let Err(err) = recommended("llm").deadline(Duration::ZERO).build() else {
            panic!("a zero deadline is refused");
        };
        assert_eq!(err.field(), "deadline");
        assert_eq!(err.rule(), "must be greater than zero");
        assert!(
            recommended("llm")
                .deadline(Duration::from_nanos(1))
                .build()
                .is_ok()
        );
    }

    /// A zero attempt timeout would time every attempt out before it starts: refused at build
    /// time, naming the timeout's field, without escalation as with it (it was taken without).
    #[test]
    fn a_zero_attempt_timeout_is_refused_at_build_time() {
        for escalation in [None, Some((2.0, Duration::from_millis(100)))] {
            let Err(err) = recommended("llm")
                .attempt_timeout(Duration::ZERO, escalation)
                .build()
            else {
                panic!("a zero attempt timeout is refused ({escalation:?})");
            };
            assert_eq!(err.field(), "timeout", "{escalation:?}");
            assert_eq!(err.rule(), "must be greater than zero");
            assert!(
                recommended("llm")
                    .attempt_timeout(
                        Duration::from_nanos(1),
                        escalation.map(|(f, _)| (f, Duration::from_secs(1)))
                    )
                    .build()
                    .is_ok()
            );
        }
    }

    /// A call whose task is polled again only after its deadline (a busy runtime), while its
    /// retry's backoff had ended before it, sends no attempt after the deadline: the retry
    /// looks at the deadline before each attempt after the first, and ends the request with
    /// the last attempt's error.
    #[tokio::test(start_paused = true)]
    async fn a_call_polled_after_its_deadline_sends_no_more_attempts() {
        use std::sync::{Arc, Mutex};
        use std::task::{Context, Poll, Waker};

        use crate::classify::BoxError;
        use crate::retry::budget::Unlimited;
        use crate::retry::{Backoff, Jitter};
        use tokio::time::Instant;
        use tower::{Layer, Service, ServiceExt, service_fn};

        let start = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let preset = recommended("llm")
            .deadline(Duration::from_millis(1_000))
            .retry(
                RetryLayer::builder()
                    .budget(Unlimited)
                    .jitter(Jitter::None)
                    .backoff(Backoff::constant(Duration::from_millis(500)))
                    .seed(1)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut svc = preset.layer(service_fn(move |_: u8| {
            seen.lock().unwrap().push(start.elapsed());
            async { Err::<u8, BoxError>("503 service unavailable".into()) }
        }));
        svc.ready().await.unwrap();
        let mut fut = std::pin::pin!(svc.call(1));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "backing off 500 ms"
        );
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let Poll::Ready(Err(err)) = fut.as_mut().poll(&mut cx) else {
            panic!("the deadline has passed");
        };
        assert_eq!(err.to_string(), "503 service unavailable");
        assert_eq!(*calls.lock().unwrap(), [Duration::ZERO]);
    }

    /// The handle `build_with_breaker` gives is the stack's breaker's: a call through the
    /// stack is counted by it, and isolating it refuses the next call. With a breaker given
    /// whole, the same handle as that layer's.
    #[tokio::test(start_paused = true)]
    async fn build_with_breaker_gives_the_stacks_breaker() {
        use crate::ServiceBuilderExt;
        use crate::breaker::State;
        use crate::classify::BoxError;
        use tower::{ServiceBuilder, ServiceExt, service_fn};

        let (preset, handle) = recommended("llm").build_with_breaker().unwrap();
        assert_eq!(handle.name(), "llm");
        let svc = ServiceBuilder::new()
            .palisade(preset)
            .service(service_fn(|x: u8| async move { Ok::<_, BoxError>(x) }));
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
        assert_eq!(handle.metrics().successes, 1);
        handle.isolate();
        assert_eq!(handle.state(), State::Isolated);
        assert!(svc.oneshot(2).await.is_err());

        let given = BreakerLayer::new("search");
        let (_, handle) = recommended("search")
            .breaker_layer(given.clone())
            .build_with_breaker()
            .unwrap();
        handle.trip();
        assert_eq!(given.handle().state(), State::Open);
    }

    /// Without [`PresetBuilder::retry`], the preset's retry layer is named after the dependency
    /// (its tracing events say whose calls they retried), and the builder says it will make
    /// that default one; with it, the layer given is kept as it is.
    #[test]
    fn the_default_retry_layer_is_named_after_the_dependency() {
        let builder = recommended("llm");
        assert!(
            format!("{builder:?}").contains("retry: Default"),
            "{builder:?}"
        );
        let preset = format!("{:?}", builder.build().unwrap());
        assert!(preset.contains(r#"Retry { name: "llm""#), "{preset}");
        let given = recommended("llm").retry(RetryLayer::new());
        assert!(format!("{given:?}").contains("retry: Given"), "{given:?}");
        let preset = format!("{:?}", given.build().unwrap());
        assert!(preset.contains(r#"Retry { name: "retry""#), "{preset}");
    }

    /// The preset's deadline and per-attempt timeout are named after the dependency, as its
    /// retry layer and breaker are, so that their metrics carry the same `dependency`.
    #[test]
    fn the_deadline_and_timeout_are_named_after_the_dependency() {
        let preset = format!("{:?}", recommended("llm").build().unwrap());
        assert!(
            preset.contains(r#"DeadlineLayer { limit: 30s, name: "llm" }"#),
            "{preset}"
        );
        assert!(
            preset.contains(r#"TimeoutLayer { limit: Limit"#),
            "{preset}"
        );
        assert!(!preset.contains(r#"name: "timeout""#), "{preset}");
        assert!(!preset.contains(r#"name: "deadline""#), "{preset}");
        assert_eq!(preset.matches(r#"name: "llm""#).count(), 4, "{preset}");
    }
}
