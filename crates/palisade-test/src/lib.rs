//! Test support shared by palisade's crates (`publish = false`).
//!
//! * [`Flaky`]: a service that fails on a script or at a seeded rate, with a chosen error or
//!   latency, and counts its calls.
//! * [`count_warnings`] / [`Warnings`]: count the `tracing` warnings a closure or a test emits.
//! * [`Events`]: record a test's `tracing` events with their levels, targets and fields.
//! * [`StatsAlloc`] / [`Region`]: a global allocator that counts allocations, for benches and
//!   tests that assert the happy path allocates nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower_service::Service;

/// A global allocator that counts allocations: `stats_alloc`'s, re-exported so that benches
/// and tests share one choice (and the workspace stays free of `unsafe`).
///
/// ```
/// use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
/// use std::alloc::System;
///
/// #[global_allocator]
/// static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
///
/// let region = Region::new(GLOBAL);
/// let v = vec![1u8; 16];
/// assert_eq!(region.change().allocations, 1);
/// drop(v);
/// ```
pub use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// One scripted outcome of a [`Flaky`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer with this value.
    Ok(u32),
    /// Fail with this message (classified by its text).
    Err(&'static str),
}

/// A flaky service for tests: follows a script, then fails at a seeded rate.
///
/// Clones share the script, the counter and the rng.
#[derive(Clone, Debug)]
pub struct Flaky {
    inner: Arc<FlakyInner>,
    latency: Duration,
}

#[derive(Debug)]
struct FlakyInner {
    script: Vec<Step>,
    calls: AtomicUsize,
    failure_rate: f64,
    error: &'static str,
    rng: std::sync::Mutex<SmallRng>,
}

impl Flaky {
    /// Follows `script` call by call, then succeeds forever.
    pub fn script(script: Vec<Step>) -> Self {
        Self::build(script, 0.0, "503 service unavailable", 0)
    }

    /// Fails with `error` at `rate` (0.0 to 1.0), seeded.
    pub fn rate(rate: f64, error: &'static str, seed: u64) -> Self {
        Self::build(Vec::new(), rate, error, seed)
    }

    fn build(script: Vec<Step>, failure_rate: f64, error: &'static str, seed: u64) -> Self {
        Flaky {
            inner: Arc::new(FlakyInner {
                script,
                calls: AtomicUsize::new(0),
                failure_rate,
                error,
                rng: std::sync::Mutex::new(SmallRng::seed_from_u64(seed)),
            }),
            latency: Duration::ZERO,
        }
    }

    /// Every call takes `latency` (on the tokio clock).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Calls made so far, by all clones.
    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    fn next(&self) -> Step {
        let n = self.inner.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(step) = self.inner.script.get(n) {
            return step.clone();
        }
        let fail = self.inner.failure_rate > 0.0 && {
            let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.random_bool(self.inner.failure_rate.clamp(0.0, 1.0))
        };
        if fail {
            Step::Err(self.inner.error)
        } else {
            Step::Ok(n as u32)
        }
    }
}

impl<Req> Service<Req> for Flaky {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let step = self.next();
        let latency = self.latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match step {
                Step::Ok(v) => Ok(v),
                Step::Err(msg) => Err(msg.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn follows_the_script_then_succeeds() {
        let svc = Flaky::script(vec![Step::Err("boom"), Step::Ok(7)]);
        assert_eq!(
            svc.clone().oneshot(()).await.unwrap_err().to_string(),
            "boom"
        );
        assert_eq!(svc.clone().oneshot(()).await.unwrap(), 7);
        assert_eq!(svc.clone().oneshot(()).await.unwrap(), 2);
        assert_eq!(svc.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_rate_is_reproducible_and_latency_is_virtual() {
        let run = |seed| async move {
            let svc = Flaky::rate(0.5, "503", seed).with_latency(Duration::from_secs(1));
            let mut out = Vec::new();
            for _ in 0..32 {
                out.push(svc.clone().oneshot(()).await.is_ok());
            }
            out
        };
        let start = tokio::time::Instant::now();
        let a = run(7).await;
        assert_eq!(start.elapsed(), Duration::from_secs(32));
        assert_eq!(a, run(7).await);
        assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok));
    }

    #[test]
    fn warnings_are_counted_by_what_they_say() {
        let warnings = Warnings::start();
        tracing::warn!("breaker open");
        tracing::warn!("breaker closed");
        tracing::info!("breaker half-open");
        assert_eq!(warnings.count(), 2);
        assert_eq!(warnings.containing("breaker"), 2);
        assert_eq!(warnings.containing("closed"), 1);
        assert_eq!(warnings.containing("half-open"), 0, "not a warning");
    }

    #[test]
    fn events_keep_every_field_in_order_until_dropped() {
        let events = Events::start();
        tracing::info!(target: "palisade_test", count = 3, name = "x", "reconfigured");
        let seen = events.take();
        assert_eq!(seen.len(), 1);
        let fields: Vec<_> = seen[0].fields().collect();
        assert_eq!(
            fields,
            [
                ("message", "reconfigured"),
                ("count", "3"),
                ("name", "\"x\"")
            ]
        );
        assert_eq!(seen[0].message(), "reconfigured");
        assert!(tracing::enabled!(tracing::Level::INFO), "recording");
        drop(events);
        // Dropped: this thread records nothing more, and its events are not even built.
        assert!(RECORDED.with(|r| r.borrow().is_none()));
        assert!(!tracing::enabled!(tracing::Level::ERROR), "not recording");
    }
}

/// Counts the `tracing` events at `WARN` level emitted on this thread while
/// [`count_warnings`] runs its closure; no output, no global subscriber.
///
/// ```
/// let (n, out) = palisade_test::count_warnings(|| {
///     tracing::warn!("one");
///     tracing::info!("not counted");
///     7
/// });
/// assert_eq!((n, out), (1, 7));
/// ```
pub fn count_warnings<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let warnings = Warnings::start();
    let out = f();
    (warnings.count(), out)
}

type Messages = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Keeps the message of every warning.
#[derive(Default)]
struct WarnCounter(Messages);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut message = String::new();
            event.record(&mut Message(&mut message));
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Counts the `tracing` warnings emitted on this thread from now until it is dropped (for
/// async tests on a current-thread runtime, where [`count_warnings`]'s closure cannot await).
///
/// ```
/// let warnings = palisade_test::Warnings::start();
/// tracing::warn!("context lost");
/// tracing::warn!("budget exhausted");
/// assert_eq!(warnings.count(), 2);
/// assert_eq!(warnings.containing("context"), 1);
/// ```
#[derive(Debug)]
pub struct Warnings {
    seen: Messages,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Warnings {
    /// Starts counting.
    pub fn start() -> Self {
        let counter = WarnCounter::default();
        let seen = counter.0.clone();
        Warnings {
            seen,
            _guard: tracing::subscriber::set_default(counter),
        }
    }

    /// The warnings counted so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The warnings so far whose message contains `text`.
    pub fn containing(&self, text: &str) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.contains(text))
            .count()
    }
}

/// Polls a future once with a no-op waker and returns its output: for services whose happy
/// path answers at once (the allocation tests here, and every bench).
///
/// Always inlined, as an `.await` on the future would be: out of line, the future is moved into
/// this frame across a call, and the copy, read with wider loads than the caller's stores, stalls
/// on store forwarding (about 10 ns here) for any future the optimiser does not inline away,
/// which measures the harness rather than the layer (the bare service was always inlined).
///
/// # Panics
/// If the future is pending.
#[inline(always)]
pub fn poll_now<F: std::future::Future>(fut: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the call should answer at once"),
    }
}

/// How many allocations 10 000 calls of `svc` make (each `poll_ready`, then `call`, answering
/// at once), counted by `global` (the test binary's `#[global_allocator]`), after 1 000 calls
/// to warm up (thread stripes, clock samples).
///
/// The count is process-wide, and the test harness's own threads allocate now and then (a
/// loaded machine once added 4 to 10 000 in CI), so three rounds of 10 000 calls are counted
/// and the fewest is returned: what the calls allocate is the same in each round, and another
/// thread can only add to it.
pub fn allocations<S: Service<u64, Response = u64>>(
    global: &'static StatsAlloc<std::alloc::System>,
    mut svc: S,
) -> u64 {
    let mut call = |i| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match svc.poll_ready(&mut cx) {
            std::task::Poll::Ready(Ok(())) => {}
            _ => panic!("the service should be ready at once"),
        }
        let _ = poll_now(svc.call(i));
    };
    for i in 0..1_000 {
        call(i);
    }
    (0..3)
        .map(|_| {
            let region = Region::new(global);
            for i in 0..10_000 {
                call(i);
            }
            region.change().allocations as u64
        })
        .min()
        .unwrap_or(0)
}

/// Records every `tracing` event emitted on this thread, with its level, target and fields,
/// from [`Events::start`] until the value is dropped: for tests that check what an event says
/// (a reconfiguration's resets, a warning's fields).
///
/// It installs one process-wide subscriber, once, rather than a scoped one per test: tracing
/// caches each callsite's interest process-wide, and a test on another thread that reaches a
/// callsite first while no scoped subscriber listens can cache "never" for it, racing a test
/// that has just installed its own (whose events then go unseen). The global subscriber is
/// always interested, and keeps only the events of threads that started recording (the
/// paused-clock runtime is current-thread, so a test's events land on its own thread). A
/// scoped subscriber such as [`Warnings`]'s still takes precedence on its thread.
///
/// ```
/// let events = palisade_test::Events::start();
/// tracing::info!(target: "palisade_example", reset = "window", "breaker reconfigured");
/// let seen = events.with_message("breaker reconfigured");
/// assert_eq!(seen.len(), 1);
/// assert_eq!(seen[0].target, "palisade_example");
/// assert_eq!(seen[0].level, tracing::Level::INFO);
/// assert_eq!(seen[0].field("reset"), Some("\"window\""));
/// ```
#[derive(Debug)]
pub struct Events {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// One recorded event: see [`Events`].
#[derive(Clone, Debug)]
pub struct Event {
    /// Its level.
    pub level: tracing::Level,
    /// Its target (the emitting crate's module path unless the event names one).
    pub target: &'static str,
    fields: Vec<(&'static str, String)>,
}

impl Event {
    /// A field's value as `Debug` prints it (strings quoted, `%`-fields as their `Display`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field in the order the event gave them, the message first: `(name, value)`,
    /// values as [`field`](Self::field) gives them.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.fields.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// The event's message (empty when it has none).
    pub fn message(&self) -> &str {
        self.field("message").unwrap_or_default()
    }
}

thread_local! {
    static RECORDED: std::cell::RefCell<Option<Vec<Event>>> =
        const { std::cell::RefCell::new(None) };
}

impl Events {
    /// Starts recording this thread's events.
    pub fn start() -> Events {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            // A test binary whose own global subscriber was set first keeps it; then only
            // threads with a scoped subscriber would be seen, so say so loudly.
            tracing::subscriber::set_global_default(Recorder)
                .expect("palisade_test::Events needs to be the global tracing subscriber");
            // Callsites registered before, while no subscriber listened, cached "never".
            tracing::callsite::rebuild_interest_cache();
        });
        RECORDED.with(|r| *r.borrow_mut() = Some(Vec::new()));
        Events {
            _not_send: std::marker::PhantomData,
        }
    }

    /// The events recorded so far (taken: the next call returns only later ones).
    pub fn take(&self) -> Vec<Event> {
        RECORDED.with(|r| {
            r.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }

    /// The events recorded so far whose message contains `text` (the others are dropped).
    pub fn with_message(&self, text: &str) -> Vec<Event> {
        self.take()
            .into_iter()
            .filter(|e| e.message().contains(text))
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        RECORDED.with(|r| *r.borrow_mut() = None);
    }
}

impl tracing::field::Visit for Event {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.fields.push((field.name(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.fields.push((field.name(), value.to_owned()));
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// The process-wide subscriber behind [`Events`].
struct Recorder;

impl tracing::Subscriber for Recorder {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        RECORDED.with(|r| r.borrow().is_some())
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        let mut recorded = Event {
            level: *metadata.level(),
            target: metadata.target(),
            fields: Vec::new(),
        };
        event.record(&mut recorded);
        RECORDED.with(|r| {
            if let Some(events) = r.borrow_mut().as_mut() {
                events.push(recorded);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
