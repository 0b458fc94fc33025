//! Layer behaviour on the paused clock: delays, the class's decisions, budgets, cancellation.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class, Classified};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

use crate::budget::fixtures::{rate_cap, ratio_budget};
use crate::budget::{Budget, Unlimited};
use crate::{AdaptiveAttempts, Backoff, Jitter, RetryLayer};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One scripted answer.
#[derive(Clone, Debug)]
enum Answer {
    Ok(u32),
    Err(Class, &'static str),
    /// Never answers.
    Hang,
    /// Panics in `call`.
    Panic,
}

fn err(category: Category, msg: &'static str) -> Answer {
    Answer::Err(Class::new(category), msg)
}

/// A scripted service that records when it was called.
#[derive(Clone, Debug)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<Duration>>>,
    start: Instant,
    /// Fail `poll_ready` once the call count reaches this.
    unready_after: Option<usize>,
    /// Stay unready (`Pending`) once the call count reaches this.
    stall_after: Option<usize>,
}

impl Script {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Script {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            calls: Arc::new(Mutex::new(Vec::new())),
            start: Instant::now(),
            unready_after: None,
            stall_after: None,
        }
    }

    fn calls(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl<Req> Service<Req> for Script {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match (self.unready_after, self.stall_after) {
            (Some(n), _) if self.count() >= n => Poll::Ready(Err("not ready".into())),
            (_, Some(n)) if self.count() >= n => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.calls.lock().unwrap().push(self.start.elapsed());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Ok(0));
        if let Answer::Panic = answer {
            panic!("the inner service panicked in call");
        }
        Box::pin(async move {
            match answer {
                Answer::Ok(v) => Ok(v),
                Answer::Err(class, msg) => Err(Box::new(Classified::new(class, msg)) as BoxError),
                Answer::Hang => std::future::pending().await,
                Answer::Panic => unreachable!("panics in call"),
            }
        })
    }
}

fn layer() -> crate::RetryBuilder<Unlimited> {
    RetryLayer::builder()
        .budget(Unlimited)
        .jitter(Jitter::None)
        .backoff(Backoff::exponential(ms(100), 2.0))
        .seed(1)
}

/// Asserts that the calls were made at 0 and then each after its server's hint, stretched by
/// 0 to 10 % (never less: a hint is the least the server asked to wait).
#[track_caller]
fn after_hints(calls: &[Duration], hints: &[Duration]) {
    assert_eq!(calls.len(), hints.len() + 1, "{calls:?}");
    assert_eq!(calls[0], Duration::ZERO);
    for (pair, hint) in calls.windows(2).zip(hints) {
        let wait = pair[1] - pair[0];
        assert!(
            wait >= *hint && wait <= hint.mul_f64(1.1),
            "waited {wait:?} on a {hint:?} hint: {calls:?}"
        );
    }
}

async fn run<S: Service<u32, Response = u32, Error = BoxError>>(svc: S) -> Result<u32, String> {
    svc.oneshot(0).await.map_err(|e| e.to_string())
}

#[tokio::test(start_paused = true)]
async fn exact_delays_for_each_backoff() {
    let ms_list = |v: &[u64]| v.iter().map(|n| ms(*n)).collect::<Vec<_>>();
    for (backoff, expected) in [
        (Backoff::constant(ms(50)), ms_list(&[0, 50, 100, 150])),
        (
            Backoff::linear(ms(100), ms(50)),
            ms_list(&[0, 100, 250, 450]),
        ),
        (
            Backoff::exponential(ms(100), 2.0),
            ms_list(&[0, 100, 300, 700]),
        ),
        (
            Backoff::exponential(ms(100), 3.0).with_cap(ms(500)),
            ms_list(&[0, 100, 400, 900]),
        ),
    ] {
        let script = Script::new([
            err(Category::ServerError, "e1"),
            err(Category::ServerError, "e2"),
            err(Category::ServerError, "e3"),
            Answer::Ok(7),
        ]);
        let svc = layer()
            .backoff(backoff)
            .max_attempts(4)
            .build()
            .unwrap()
            .layer(script.clone());
        assert_eq!(run(svc).await, Ok(7));
        assert_eq!(script.calls(), expected, "{backoff:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fixed_seed_gives_exact_jittered_delays() {
    let backoff = Backoff::exponential(ms(100), 2.0);
    for jitter in [
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Proportional(0.5),
    ] {
        let attempt = || async {
            let script = Script::new([
                err(Category::Network, "e1"),
                err(Category::Network, "e2"),
                err(Category::Network, "e3"),
            ]);
            let svc = layer()
                .backoff(backoff)
                .jitter(jitter)
                .max_attempts(4)
                .seed(42)
                .build()
                .unwrap()
                .layer(script.clone());
            run(svc).await.unwrap();
            script.calls()
        };
        let first = attempt().await;
        assert_eq!(first, attempt().await, "{jitter:?} is reproducible");
        // The documented derivation: the n-th jittered delay of a layer (n from 0) draws from
        // `SmallRng::seed_from_u64(seed ^ n × 0x9E3779B97F4A7C15)`. tokio's timer wakes on the
        // next whole millisecond.
        let mut previous = Duration::ZERO;
        let mut at = Duration::ZERO;
        let mut expected = vec![at];
        for n in 0..3u64 {
            let mut rng = SmallRng::seed_from_u64(42 ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            previous = jitter.apply(backoff.delay(n as u32 + 1), &backoff, previous, &mut rng);
            at = ms((at + previous).as_nanos().div_ceil(1_000_000) as u64);
            expected.push(at);
        }
        assert_eq!(first, expected, "{jitter:?}");
    }
}

/// Decorrelated jitter grows from the previous *backoff* delay: a server's hint waited for
/// before it is not one. A 20 s hint used to become the previous delay, so the next unhinted
/// retry could wait up to 60 s (3 × 20 s, bounded only by the backoff's cap).
#[tokio::test(start_paused = true)]
async fn a_servers_hint_does_not_feed_decorrelated_jitter() {
    let backoff = Backoff::exponential(ms(100), 2.0).with_cap(Duration::from_secs(120));
    for seed in 0..50 {
        let script = Script::new([
            Answer::Err(
                Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(20)),
                "429",
            ),
            err(Category::ServerError, "503"),
        ]);
        let svc = layer()
            .backoff(backoff)
            .jitter(Jitter::Decorrelated)
            .max_attempts(3)
            .seed(seed)
            .build()
            .unwrap()
            .layer(script.clone());
        assert_eq!(run(svc).await, Ok(0));
        let calls = script.calls();
        after_hints(&calls[..2], &[Duration::from_secs(20)]);
        // No backoff delay came before: the first decorrelated draw is from the initial
        // delay to three times it (100-300 ms), on tokio's millisecond tick.
        let wait = calls[2] - calls[1];
        assert!(
            wait >= ms(100) && wait <= ms(301),
            "seed {seed}: waited {wait:?} after a 503 that followed a 20 s hint"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn boundaries_one_millisecond_either_side() {
    async fn step(d: Duration) {
        advance(d).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    let script = Script::new([
        err(Category::ServerError, "e1"),
        err(Category::ServerError, "e2"),
    ]);
    let svc = layer().build().unwrap().layer(script.clone());
    let task = tokio::spawn(run(svc));
    tokio::task::yield_now().await;
    assert_eq!(script.count(), 1);
    step(ms(99)).await;
    assert_eq!(script.count(), 1);
    step(ms(2)).await;
    assert_eq!(script.count(), 2);
    // The second call was made when the clock reached 101 ms; the second delay is 200 ms.
    step(ms(199)).await; // t = 300: 1 ms early
    assert_eq!(script.count(), 2);
    step(ms(2)).await; // t = 302: 1 ms late
    assert_eq!(script.count(), 3);
    assert_eq!(task.await.unwrap(), Ok(0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_capped() {
    let hinted = |secs| {
        Answer::Err(
            Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(secs)),
            "429 slow down",
        )
    };
    // A hint longer than the backoff is waited for (stretched by up to a tenth).
    let script = Script::new([hinted(2)]);
    let svc = layer()
        .rate_limited_delay(ms(500))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    after_hints(&script.calls(), &[ms(2000)]);

    // A hint shorter than the rate-limited delay is the delay: the server said when.
    let script = Script::new([Answer::Err(
        Class::new(Category::RateLimited).with_retry_after(ms(10)),
        "429",
    )]);
    let svc = layer()
        .rate_limited_delay(ms(500))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    after_hints(&script.calls(), &[ms(10)]);

    // A hint above the maximum (60 s by default) is not waited for: the error comes back now.
    let script = Script::new([hinted(61)]);
    let svc = layer().build().unwrap().layer(script.clone());
    let start = Instant::now();
    assert_eq!(run(svc).await, Err("429 slow down".into()));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(script.count(), 1);

    // ... unless the maximum is raised; exactly at the maximum is still honoured.
    let script = Script::new([hinted(61)]);
    let svc = layer()
        .max_retry_after(Duration::from_secs(61))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    after_hints(&script.calls(), &[ms(61_000)]);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_failures_start_from_their_own_delay() {
    let script = Script::new([
        err(Category::RateLimited, "429"),
        err(Category::RateLimited, "429"),
    ]);
    let svc = layer().build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    // 5 s by default, then the backoff's factor: 10 s.
    assert_eq!(script.calls(), [ms(0), ms(5_000), ms(15_000)]);

    // A backoff capped below the rate-limited delay: the cap is raised to that delay (as
    // `rate_limited_delay` says), so each retry of a rate limit waits 5 s, not the 1 s cap.
    let script = Script::new([
        err(Category::RateLimited, "429"),
        err(Category::RateLimited, "429"),
    ]);
    let svc = layer()
        .backoff(Backoff::exponential(ms(100), 2.0).with_cap(ms(1_000)))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    assert_eq!(script.calls(), [ms(0), ms(5_000), ms(10_000)]);
}

#[tokio::test(start_paused = true)]
async fn the_class_decides() {
    for (category, calls) in [
        (Category::Validation, 1),
        (Category::NotFound, 1),
        (Category::Authentication, 1), // no refresh hook
        (Category::Cancelled, 1),
        (Category::Ignored, 1),
        (Category::Transient, 2),
        (Category::Timeout, 2),
        (Category::ResourceExhausted, 2),
        (Category::Unknown, 2),
    ] {
        let script = Script::new([err(category, "boom")]);
        let svc = layer().build().unwrap().layer(script.clone());
        let out = run(svc).await;
        assert_eq!(script.count(), calls, "{category}");
        assert_eq!(out.is_ok(), calls == 2, "{category}");
    }
}

#[tokio::test(start_paused = true)]
async fn exhaustion_returns_the_last_real_error() {
    let script = Script::new([
        err(Category::ServerError, "first"),
        err(Category::Network, "second"),
        err(Category::Timeout, "third"),
        Answer::Ok(1),
    ]);
    let svc = layer().build().unwrap().layer(script.clone());
    let e = svc.oneshot(0).await.unwrap_err();
    assert_eq!(e.to_string(), "third");
    // The very error the service returned, class and all.
    assert!(e.downcast_ref::<Classified>().is_some());
    assert_eq!(script.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_success_is_final() {
    let script = Script::new([Answer::Ok(5), err(Category::ServerError, "never seen")]);
    let svc = layer().build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Ok(5));
    assert_eq!(script.count(), 1);
    let script = Script::new([err(Category::ServerError, "once"), Answer::Ok(6)]);
    let svc = layer().build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Ok(6));
    assert_eq!(script.count(), 2);
}

/// A credential refresh hook that takes 30 ms, and the count of its runs.
fn refresh_hook() -> (
    impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static,
    Arc<AtomicUsize>,
) {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counted = refreshes.clone();
    let hook = move || {
        let counted = counted.clone();
        Box::pin(async move {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(ms(30)).await;
            Ok::<(), BoxError>(())
        }) as std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    };
    (hook, refreshes)
}

#[tokio::test(start_paused = true)]
async fn authentication_refreshes_then_retries_once() {
    let (hook, refreshes) = refresh_hook();
    let script = Script::new([
        err(Category::Authentication, "401 unauthorized"),
        err(Category::Authentication, "401 again"),
    ]);
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("401 again".into()));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    // Retried as soon as the refresh finished, without backoff.
    assert_eq!(script.calls(), [ms(0), ms(30)]);

    let script = Script::new([err(Category::Authentication, "401"), Answer::Ok(3)]);
    let svc = layer().refresh(hook).build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Ok(3));

    // A failing hook returns the authentication error and gives the reserved retry back.
    let cap = Arc::new(rate_cap(5, Duration::from_secs(1)));
    let script = Script::new([err(Category::Authentication, "401 bad key")]);
    let svc = layer()
        .budget(cap.clone())
        .refresh(|| async { Err::<(), BoxError>("vault down".into()) })
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("401 bad key".into()));
    assert_eq!(script.count(), 1);
    assert_eq!(cap.balance(), 5);
}

/// A 401 may carry a server's hint too (`Retry-After` on any status, read by palisade-http):
/// the refreshed retry goes once the refresh is done and the hint has passed, whichever is
/// later; a hint beyond `max_retry_after`, or past the deadline, returns the 401 without a
/// refresh.
/// A fallback chain that failed is final for the layers above it (`FallbackFailed`: its class
/// is made not retryable), a 401 inside it too: the refresh hook does not re-run the call and
/// every fallback. A 401 from the call itself is still refreshed.
#[tokio::test(start_paused = true)]
async fn a_failed_fallback_chain_is_not_refreshed() {
    let (hook, refreshes) = refresh_hook();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let chain = tower::service_fn(move |_: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            let unauthorized: BoxError = Box::new(Classified::new(
                Class::new(Category::Authentication),
                "401 unauthorized",
            ));
            let fallback: BoxError = "no cached answer".into();
            Err::<u32, BoxError>(Box::new(palisade_core::failure::FallbackFailed::new(
                unauthorized,
                vec![("cache", fallback)],
            )))
        }
    });
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(chain.clone());
    let e = svc.oneshot(0).await.unwrap_err();
    assert!(e.is::<palisade_core::failure::FallbackFailed>(), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    // Also where a layer between them classified the failed chain again.
    let reclassified = tower::ServiceExt::map_err(chain, |e: BoxError| -> BoxError {
        Box::new(Classified::new(Class::new(Category::Authentication), e))
    });
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(reclassified);
    svc.oneshot(0).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);

    let script = Script::new([err(Category::Authentication, "401"), Answer::Ok(3)]);
    let svc = layer().refresh(hook).build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Ok(3));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refreshed_retry_waits_for_the_servers_hint() {
    let (hook, refreshes) = refresh_hook();
    let auth = |hint: Duration, msg| {
        Answer::Err(
            Class::new(Category::Authentication).with_retry_after(hint),
            msg,
        )
    };
    // The hint outlasts the 30 ms refresh: sent at the hint, exactly (no stretch: only the
    // refresh's own time spreads such retries).
    let script = Script::new([auth(ms(2000), "401 come back in 2 s"), Answer::Ok(7)]);
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(7));
    assert_eq!(script.calls(), [ms(0), ms(2000)]);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    // The refresh outlasts the hint: sent when the refresh is done.
    let script = Script::new([auth(ms(10), "401"), Answer::Ok(7)]);
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(7));
    assert_eq!(script.calls(), [ms(0), ms(30)]);
    // A hint of the most the policy waits (60 s) is waited for.
    let script = Script::new([
        auth(Duration::from_secs(60), "401 in a minute"),
        Answer::Ok(8),
    ]);
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(8));
    assert_eq!(script.calls(), [ms(0), Duration::from_secs(60)]);
    // A hint beyond it: the 401 is returned, nothing refreshed.
    let script = Script::new([auth(Duration::from_secs(600), "401 in 10 minutes")]);
    let svc = layer()
        .refresh(hook.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("401 in 10 minutes".into()));
    assert_eq!(script.count(), 1);
    assert_eq!(refreshes.load(Ordering::SeqCst), 3);
    // A hint that ends past the deadline: returned at once, nothing refreshed.
    let start = Instant::now();
    crate::ctx::hooks::DEADLINE.set(Some(start + ms(1999)));
    let script = Script::new([auth(ms(2000), "401 in 2 s")]);
    let svc = layer().refresh(hook).build().unwrap().layer(script.clone());
    assert_eq!(run(svc).await, Err("401 in 2 s".into()));
    crate::ctx::hooks::DEADLINE.set(None);
    assert_eq!(script.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(refreshes.load(Ordering::SeqCst), 3);
}

/// A retry that is never sent costs the budget nothing, even when user code panics on the
/// way: the refresh hook itself (called as the retry is decided), its future, or the inner
/// service's `call` for the retry.
#[tokio::test(start_paused = true)]
async fn a_panic_on_the_way_to_a_retry_gives_its_withdrawal_back() {
    /// Calls `svc` and polls the call once, which panics; the call is dropped then.
    fn call_panics<S: Service<u32>>(mut svc: S)
    where
        S::Future: Unpin,
    {
        let mut fut = svc.call(0);
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| futures_poll(&mut fut)));
        assert!(polled.is_err(), "the poll should have panicked");
    }
    // The hook panics when called.
    let cap = Arc::new(rate_cap(5, Duration::from_secs(1)));
    let script = Script::new([err(Category::Authentication, "401")]);
    let svc = layer()
        .budget(cap.clone())
        .refresh(|| -> std::future::Ready<Result<(), BoxError>> { panic!("hook panicked") })
        .build()
        .unwrap()
        .layer(script.clone());
    call_panics(svc);
    assert_eq!(script.count(), 1);
    assert_eq!(cap.balance(), 5);
    // The hook's future panics.
    let script = Script::new([err(Category::Authentication, "401")]);
    let svc = layer()
        .budget(cap.clone())
        .refresh(|| async { panic!("hook future panicked") })
        .build()
        .unwrap()
        .layer(script.clone());
    call_panics(svc);
    assert_eq!(cap.balance(), 5);
    // The retry's call panics (no backoff: the retry is sent in the same poll).
    let script = Script::new([err(Category::ServerError, "503"), Answer::Panic]);
    let svc = layer()
        .budget(cap.clone())
        .backoff(Backoff::constant(Duration::ZERO))
        .build()
        .unwrap()
        .layer(script.clone());
    call_panics(svc);
    assert_eq!(script.count(), 2);
    assert_eq!(cap.balance(), 5);
    // Sent, it is spent.
    let script = Script::new([err(Category::ServerError, "503"), Answer::Ok(1)]);
    let svc = layer()
        .budget(cap.clone())
        .backoff(Backoff::constant(Duration::ZERO))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(1));
    assert_eq!(cap.balance(), 4);
}

#[tokio::test(start_paused = true)]
async fn per_request_attempt_limits() {
    let failing = || Script::new((0..10).map(|_| err(Category::ServerError, "503")));
    let layer = layer()
        .max_attempts_fn(|req: &u32| (*req > 0).then_some(*req))
        .build()
        .unwrap();
    for (req, calls) in [(0u32, 3), (1, 1), (5, 5)] {
        let script = failing();
        let svc = layer.layer(script.clone());
        assert!(svc.oneshot(req).await.is_err());
        assert_eq!(script.count(), calls, "request {req}");
    }
}

/// A request's own limit is read again after each failed attempt, from the copy kept for the
/// next one, and may only lower the limit: a request whose body turned out not to be
/// replayable while it streamed (palisade-http's `ReplayAttempts`) ends with its attempt's own
/// error instead of sending a copy that cannot be read.
#[tokio::test(start_paused = true)]
async fn a_request_limit_that_drops_during_the_request_stops_its_retries() {
    use std::sync::atomic::{AtomicU32, Ordering};
    // The request carries its limit (0: the layer's), shared by its copies.
    let layer = layer()
        .max_attempts(3)
        .max_attempts_fn(|req: &Arc<AtomicU32>| match req.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        })
        .build()
        .unwrap();
    // (the limit the request reads before its first attempt, the one it reads after it
    // failed, the calls made)
    for (before, after, calls) in [(0, 0, 3), (0, 1, 1), (0, 2, 2), (2, 5, 2), (0, 9, 3)] {
        let script = Script::new((0..10).map(|_| err(Category::ServerError, "503")));
        let limit = Arc::new(AtomicU32::new(before));
        let dropped = limit.clone();
        let svc = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .map_request(move |req: Arc<AtomicU32>| {
                dropped.store(after, Ordering::SeqCst);
                req
            })
            .service(script.clone());
        let e = svc.oneshot(limit).await.unwrap_err();
        assert_eq!(e.to_string(), "503", "{before} then {after}");
        assert_eq!(script.count(), calls, "{before} then {after}");
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_attempts_follow_the_dependency() {
    let layer = layer()
        .max_attempts(2)
        .adaptive(AdaptiveAttempts::new(3, 2).unwrap())
        .build()
        .unwrap();
    assert_eq!(layer.max_attempts(), 2);
    for _ in 0..3 {
        run(layer.layer(Script::new([]))).await.unwrap();
    }
    assert_eq!(layer.max_attempts(), 3);
    for _ in 0..10 {
        run(layer.layer(Script::new([]))).await.unwrap();
    }
    assert_eq!(layer.max_attempts(), 4, "at most twice the base");
    // Two requests failing all their attempts shrink it by one.
    for _ in 0..2 {
        let script = Script::new((0..10).map(|_| err(Category::ServerError, "503")));
        run(layer.layer(script)).await.unwrap_err();
    }
    assert_eq!(layer.max_attempts(), 3);
    // Client faults are neither.
    for _ in 0..5 {
        run(layer.layer(Script::new([err(Category::Validation, "400")])))
            .await
            .unwrap_err();
    }
    assert_eq!(layer.max_attempts(), 3);
    for _ in 0..20 {
        let script = Script::new((0..10).map(|_| err(Category::ServerError, "503")));
        run(layer.layer(script)).await.unwrap_err();
    }
    assert_eq!(layer.max_attempts(), 1, "down to a single attempt");

    // `None` turns them off again: the limit stays where it was set.
    let fixed = crate::tests::layer()
        .max_attempts(2)
        .adaptive(AdaptiveAttempts::default())
        .adaptive(None)
        .build()
        .unwrap();
    for _ in 0..20 {
        run(fixed.layer(Script::new([]))).await.unwrap();
    }
    assert_eq!(fixed.max_attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ignored_error_is_a_success_and_a_cancellation_neither() {
    let bucket = Arc::new(crate::budget::fixtures::bucket(4, 1.0));
    let l = layer()
        .max_attempts(2)
        .adaptive(AdaptiveAttempts::new(1, 1).unwrap())
        .budget(bucket.clone())
        .build()
        .unwrap();
    // A failure spends a token and shrinks the limit...
    run(l.layer(Script::new([
        err(Category::ServerError, "503"),
        err(Category::ServerError, "503"),
    ])))
    .await
    .unwrap_err();
    assert_eq!((bucket.milli_tokens(), l.max_attempts()), (2_000, 1));
    // ...an error its classifier said to ignore is a success: a token back, the limit grows...
    run(l.layer(Script::new([err(Category::Ignored, "404 is fine here")])))
        .await
        .unwrap_err();
    assert_eq!((bucket.milli_tokens(), l.max_attempts()), (3_000, 2));
    // ...and a cancellation is neither for the limit, even one its classifier calls retryable
    // (the budget counts it as it counts every failed attempt of a retryable class).
    let mut cancelled = Class::new(Category::Cancelled);
    cancelled.retryable = true;
    run(l.layer(Script::new([Answer::Err(cancelled, "cancelled")])))
        .await
        .unwrap_err();
    assert_eq!(l.max_attempts(), 2);
}

/// A request that counts its clones.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counted(self.0.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn the_request_is_cloned_only_when_another_attempt_may_follow() {
    for (limit, answers, clones) in [
        (1, vec![err(Category::ServerError, "503")], 0),
        (3, vec![], 1),
        (
            3,
            vec![
                err(Category::ServerError, "503"),
                err(Category::ServerError, "503"),
                err(Category::ServerError, "503"),
            ],
            2,
        ),
        (3, vec![err(Category::ServerError, "503")], 2),
    ] {
        let n = Arc::new(AtomicUsize::new(0));
        let svc = layer()
            .max_attempts(limit)
            .build()
            .unwrap()
            .layer(Script::new(answers.clone()));
        let _ = svc.oneshot(Counted(n.clone())).await;
        assert_eq!(n.load(Ordering::SeqCst), clones, "{limit} {answers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_returns_the_last_error() {
    let budget = Arc::new(ratio_budget(Duration::from_secs(10), 0, 0.0));
    let script = Script::new([err(Category::ServerError, "only")]);
    let svc = layer()
        .budget(budget.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("only".into()));
    assert_eq!(script.count(), 1);
    assert_eq!(budget.retries_at(Instant::now()), 0);
}

#[tokio::test(start_paused = true)]
async fn layers_share_a_budget() {
    let cap = Arc::new(rate_cap(1, Duration::from_secs(2)));
    let a = layer().budget(cap.clone()).build().unwrap();
    let b = layer().budget(cap.clone()).build().unwrap();
    let failing = || Script::new((0..10).map(|_| err(Category::ServerError, "503")));
    let (sa, sb) = (failing(), failing());
    run(a.layer(sa.clone())).await.unwrap_err();
    run(b.layer(sb.clone())).await.unwrap_err();
    // Two retries in the window, whichever layer sent them.
    assert_eq!(sa.count() + sb.count(), 2 + 2);
    assert_eq!(cap.balance(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_during_the_backoff_gives_the_retry_back() {
    for budget in ["ratio", "cap"] {
        let ratio = Arc::new(ratio_budget(Duration::from_secs(10), 1, 0.0));
        let cap = Arc::new(rate_cap(1, Duration::from_secs(10)));
        let balance = || {
            if budget == "ratio" {
                ratio.balance()
            } else {
                cap.balance()
            }
        };
        let script = Script::new([err(Category::ServerError, "503")]);
        let builder = layer().backoff(Backoff::constant(ms(1000)));
        let svc: Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>> =
            if budget == "ratio" {
                let svc = builder
                    .budget(ratio.clone())
                    .build()
                    .unwrap()
                    .layer(script.clone());
                Box::new(move || Box::pin(svc.oneshot(0)))
            } else {
                let svc = builder
                    .budget(cap.clone())
                    .build()
                    .unwrap()
                    .layer(script.clone());
                Box::new(move || Box::pin(svc.oneshot(0)))
            };
        let before = balance();
        let mut fut = svc();
        assert!(futures_poll(&mut fut).is_pending());
        assert_eq!(script.count(), 1);
        assert_eq!(
            balance(),
            before - 1,
            "{budget}: a retry is reserved while sleeping"
        );
        advance(ms(500)).await;
        drop(fut);
        assert_eq!(balance(), before, "{budget}: the reservation came back");
        // And no timer fires a retry later.
        advance(ms(5000)).await;
        assert_eq!(script.count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_during_an_attempt_leaves_nothing_behind() {
    let cap = Arc::new(rate_cap(2, Duration::from_secs(1)));
    // Drop during the first attempt: nothing was reserved.
    let script = Script::new([Answer::Hang]);
    let svc = layer()
        .budget(cap.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    let mut fut = Box::pin(svc.oneshot(0));
    assert!(futures_poll(&mut fut).is_pending());
    drop(fut);
    assert_eq!(cap.balance(), 2);

    // Drop during the retry: the retry was sent, so its withdrawal stays spent; nothing else.
    let script = Script::new([err(Category::ServerError, "503"), Answer::Hang]);
    let svc = layer()
        .budget(cap.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    let mut fut = Box::pin(svc.oneshot(0));
    assert!(futures_poll(&mut fut).is_pending());
    advance(ms(100)).await;
    assert!(futures_poll(&mut fut).is_pending());
    assert_eq!(script.count(), 2);
    assert_eq!(cap.balance(), 1);
    drop(fut);
    assert_eq!(cap.balance(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_during_a_refresh_or_a_readiness_wait_gives_the_retry_back() {
    // A refresh that never ends.
    let cap = Arc::new(rate_cap(2, Duration::from_secs(1)));
    let script = Script::new([err(Category::Authentication, "401")]);
    let svc = layer()
        .budget(cap.clone())
        .refresh(std::future::pending::<Result<(), BoxError>>)
        .build()
        .unwrap()
        .layer(script.clone());
    let mut fut = Box::pin(svc.oneshot(0));
    assert!(futures_poll(&mut fut).is_pending());
    assert_eq!(cap.balance(), 1, "a retry is reserved while refreshing");
    drop(fut);
    assert_eq!(cap.balance(), 2);
    assert_eq!(script.count(), 1);

    // A retry service that never becomes ready.
    let mut script = Script::new([err(Category::ServerError, "503")]);
    script.stall_after = Some(1);
    let svc = layer()
        .budget(cap.clone())
        .backoff(Backoff::constant(Duration::ZERO))
        .build()
        .unwrap()
        .layer(script.clone());
    let mut fut = Box::pin(svc.oneshot(0));
    assert!(futures_poll(&mut fut).is_pending());
    assert_eq!(script.count(), 1);
    assert_eq!(
        cap.balance(),
        1,
        "a retry is reserved while waiting for readiness"
    );
    drop(fut);
    assert_eq!(cap.balance(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_before_a_retry_gives_the_retry_back() {
    let cap = Arc::new(rate_cap(2, Duration::from_secs(1)));
    let mut script = Script::new([err(Category::ServerError, "503")]);
    script.unready_after = Some(1);
    let svc = layer()
        .budget(cap.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    let mut svc = svc;
    // The first readiness check passes (no calls yet).
    let fut = ServiceExt::<u32>::ready(&mut svc).await.unwrap().call(0);
    assert_eq!(fut.await.unwrap_err().to_string(), "not ready");
    assert_eq!(script.count(), 1);
    assert_eq!(cap.balance(), 2);
}

/// A request whose retry ends on its service's readiness error ends with that error: it counts
/// by its class for adaptive attempts, as every final error does, and the end is traced.
#[tokio::test(start_paused = true)]
async fn a_readiness_error_before_a_retry_is_the_requests_final_failure() {
    let events = palisade_test::Events::start();
    let l = layer()
        .name("llm")
        .max_attempts(2)
        .adaptive(AdaptiveAttempts::new(10, 2).unwrap())
        .build()
        .unwrap();
    for n in 0..2 {
        let mut script = Script::new([err(Category::ServerError, "503")]);
        script.unready_after = Some(1);
        let mut svc = l.layer(script.clone());
        let fut = ServiceExt::<u32>::ready(&mut svc).await.unwrap().call(0);
        assert_eq!(fut.await.unwrap_err().to_string(), "not ready");
        assert_eq!(script.count(), 1);
        // Two requests that failed (the second ending the streak of `shrink_after`).
        assert_eq!(l.max_attempts(), 2 - n, "after {} failed requests", n + 1);
    }
    let lines: Vec<String> = events
        .take()
        .iter()
        .filter(|e| e.level == tracing::Level::DEBUG)
        .map(|e| {
            let fields: Vec<String> = e.fields().map(|(n, v)| format!("{n}={v}")).collect();
            fields.join(" ")
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "message=the retry service failed its readiness check; returning its error dependency=llm attempt=1 category="
        ) && l.ends_with("error=not ready")),
        "{lines:#?}"
    );
}

/// A request whose credential refresh fails ends with its authentication error, counted by
/// its class like any final error: a classifier that marks it retryable makes it a failure for
/// adaptive attempts.
#[tokio::test(start_paused = true)]
async fn a_failed_refresh_ends_the_request_and_counts_it() {
    let l = layer()
        .max_attempts(2)
        .adaptive(AdaptiveAttempts::new(10, 1).unwrap())
        .refresh(|| async { Err::<(), BoxError>("token endpoint down".into()) })
        .build()
        .unwrap();
    let denied = Answer::Err(
        Class::new(Category::Authentication).with_retryable(true),
        "401",
    );
    let script = Script::new([denied]);
    assert_eq!(run(l.layer(script.clone())).await, Err("401".into()));
    assert_eq!(script.count(), 1);
    assert_eq!(l.max_attempts(), 1, "the failed request was counted");
}

/// A hint is the classifier's to set: one longer than any `Instant` can hold (honoured, with a
/// ceiling that allows every hint) is a very long wait, as `tokio::time::sleep` makes it,
/// never a panic.
#[tokio::test(start_paused = true)]
async fn a_hint_too_long_for_an_instant_is_a_long_wait_not_a_panic() {
    let script = Script::new([Answer::Err(
        Class::new(Category::RateLimited).with_retry_after(Duration::MAX),
        "429",
    )]);
    let svc = layer()
        .max_retry_after(Duration::MAX)
        .build()
        .unwrap()
        .layer(script.clone());
    let mut fut = Box::pin(svc.oneshot(0));
    assert!(futures_poll(&mut fut).is_pending());
    advance(Duration::from_secs(86_400 * 365)).await;
    assert!(futures_poll(&mut fut).is_pending());
    assert_eq!(script.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_counts_failures_and_successes() {
    let bucket = Arc::new(crate::budget::fixtures::bucket(4, 1.0));
    let l = layer().budget(bucket.clone()).build().unwrap();
    // 503, 503 → retry (3 left > 2), then the second failure leaves 2: no more retries.
    let script = Script::new([
        err(Category::ServerError, "a"),
        err(Category::ServerError, "b"),
    ]);
    assert_eq!(run(l.layer(script.clone())).await, Err("b".into()));
    assert_eq!(script.count(), 2);
    assert_eq!(bucket.milli_tokens(), 2000);
    run(l.layer(Script::new([]))).await.unwrap();
    assert_eq!(bucket.milli_tokens(), 3000);
    // Non-retryable failures cost nothing.
    run(l.layer(Script::new([err(Category::Validation, "400")])))
        .await
        .unwrap_err();
    assert_eq!(bucket.milli_tokens(), 3000);
}

/// Polls once with a no-op waker.
fn futures_poll<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_traced() {
    // The paused-clock runtime is current-thread: every event of this call lands on this thread.
    let events = palisade_test::Events::start();
    let cap = Arc::new(rate_cap(1, Duration::from_secs(1)));
    let script = Script::new([
        err(Category::ServerError, "503"),
        err(Category::Timeout, "timed out"),
    ]);
    let svc = layer()
        .name("llm")
        .budget(cap)
        .build()
        .unwrap()
        .layer(script);
    assert_eq!(run(svc).await, Err("timed out".into()));
    let lines: Vec<String> = events
        .take()
        .iter()
        .map(|e| {
            let fields: Vec<String> = e.fields().map(|(n, v)| format!("{n}={v}")).collect();
            format!("{} {}", e.level, fields.join(" "))
        })
        .collect();
    assert_eq!(
        lines,
        [
            "DEBUG message=retrying dependency=llm attempt=1 category=\"server_error\" delay_ms=100 balance=0",
            "TRACE message=sending retry dependency=llm attempt=2 timeouts=0",
            "WARN message=retry budget exhausted; returning the last error dependency=llm attempt=2 category=\"timeout\" balance=0 since_last_warning=0",
        ]
    );
}

/// An outage refuses the budget to request after request: one warning per 10 s, saying how
/// many refusals went to DEBUG alone since the last.
#[tokio::test(start_paused = true)]
async fn a_budget_that_keeps_refusing_warns_once_per_ten_seconds() {
    let events = palisade_test::Events::start();
    let budget = Arc::new(ratio_budget(Duration::from_secs(10), 0, 0.0));
    let l = layer().name("llm").budget(budget).build().unwrap();
    for _ in 0..50 {
        let s = Script::new([err(Category::ServerError, "503")]);
        assert_eq!(run(l.layer(s)).await, Err("503".into()));
        tokio::time::advance(Duration::from_millis(300)).await;
    }
    let refusals: Vec<(String, Option<String>)> = events
        .take()
        .iter()
        .filter(|e| e.message() == "retry budget exhausted; returning the last error")
        .map(|e| {
            let since = e
                .fields()
                .find(|(n, _)| *n == "since_last_warning")
                .map(|(_, v)| v.to_string());
            (e.level.to_string(), since)
        })
        .collect();
    assert_eq!(refusals.len(), 50, "each refusal is an event");
    let warnings: Vec<_> = refusals
        .iter()
        .enumerate()
        .filter(|(_, (level, _))| level == "WARN")
        .map(|(i, (_, since))| (i, since.clone()))
        .collect();
    // At 0, 10.2 s (the 35th, 34 refusals after) and 20.4 s (the 69th would be): 0 and 34.
    assert_eq!(
        warnings,
        [(0, Some("0".to_owned())), (34, Some("33".to_owned()))],
        "{refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .filter(|(level, _)| level != "WARN")
            .all(|(level, since)| level == "DEBUG" && since.is_none())
    );
}

#[tokio::test(start_paused = true)]
async fn unclassified_errors_are_read_by_the_default_rules() {
    use palisade_test::{Flaky, Step};
    // Plain errors, no classify layer: class_of falls back to the message rules.
    let flaky = Flaky::script(vec![
        Step::Err("503 service unavailable"),
        Step::Err("connection reset by peer"),
        Step::Ok(7),
    ]);
    let svc = layer().build().unwrap().layer(flaky.clone());
    assert_eq!(svc.oneshot(()).await.unwrap(), 7);
    assert_eq!(flaky.calls(), 3);

    let flaky = Flaky::script(vec![Step::Err("400 bad request: invalid prompt")]);
    let svc = layer().build().unwrap().layer(flaky.clone());
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(flaky.calls(), 1);

    // A latency-bound flaky dependency on the paused clock: a seeded 50 % failure rate.
    let flaky = Flaky::rate(0.5, "502 bad gateway", 3).with_latency(ms(20));
    let l = layer().max_attempts(5).build().unwrap();
    let mut ok = 0;
    for _ in 0..20 {
        ok += usize::from(l.layer(flaky.clone()).oneshot(()).await.is_ok());
    }
    assert!(ok >= 18, "{ok} of 20 succeeded within five attempts");
}

mod context {
    use super::*;
    use crate::ctx::hooks;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retries_before_a_wasted_sleep() {
        let start = Instant::now();
        // 250 ms left: the first retry (100 ms) fits, the second (200 ms more) would not.
        hooks::DEADLINE.set(Some(start + ms(250)));
        let script = Script::new([
            err(Category::ServerError, "e1"),
            err(Category::ServerError, "e2"),
            err(Category::ServerError, "e3"),
        ]);
        let svc = layer()
            .max_attempts(5)
            .build()
            .unwrap()
            .layer(script.clone());
        assert_eq!(run(svc).await, Err("e2".into()));
        assert_eq!(script.calls(), [ms(0), ms(100)]);
        // Returned at once after the second failure, not at the deadline.
        assert_eq!(start.elapsed(), ms(100));

        // A server hint that ends after the deadline: no retry at all.
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(1999)));
        let script = Script::new([Answer::Err(
            Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2)),
            "429",
        )]);
        let svc = layer().build().unwrap().layer(script.clone());
        assert_eq!(run(svc).await, Err("429".into()));
        assert_eq!(script.count(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        hooks::DEADLINE.set(None);
    }

    /// An open breaker's refusal, probing again in `left` milliseconds.
    fn open(left: u64) -> Answer {
        Answer::Err(
            Class::new(Category::Rejected).with_retry_after(ms(left)),
            "circuit open",
        )
    }

    /// The gaps between consecutive calls.
    fn gaps(calls: &[Duration]) -> Vec<Duration> {
        calls.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_refused_by_an_open_breaker_waits_for_it_without_using_attempts() {
        let script = || {
            Script::new([
                err(Category::ServerError, "503"),
                open(1000),
                open(1000),
                open(400),
                open(1000),
                Answer::Ok(7),
            ])
        };
        // Two attempts, four refusals between them: answered, each refusal waited for.
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(10_000)));
        let s = script();
        let svc = layer().max_attempts(2).build().unwrap().layer(s.clone());
        assert_eq!(run(svc).await, Ok(7));
        let gaps = gaps(&s.calls());
        assert_eq!(gaps.len(), 5);
        assert_eq!(gaps[0], ms(100), "the 503's backoff");
        for (gap, left) in gaps[1..].iter().zip([1000, 1000, 400, 1000]) {
            // The breaker's time, stretched by up to half.
            assert!(*gap >= ms(left) && *gap <= ms(left * 3 / 2), "{gaps:?}");
        }

        // Not past the deadline: refused until it is near, the request fails with the refusal
        // before it rather than sleep through it.
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(2_500)));
        let s = script();
        let svc = layer().max_attempts(2).build().unwrap().layer(s.clone());
        assert_eq!(run(svc).await, Err("circuit open".into()));
        assert!(s.count() < 6, "{:?}", s.calls());
        assert!(start.elapsed() < ms(2_500));

        // Turned off: the first refusal is returned at once, with attempts left.
        hooks::DEADLINE.set(Some(Instant::now() + ms(10_000)));
        let s = script();
        let svc = layer()
            .max_attempts(3)
            .wait_for_breaker(false)
            .build()
            .unwrap()
            .layer(s.clone());
        let start = Instant::now();
        assert_eq!(run(svc).await, Err("circuit open".into()));
        assert_eq!(s.count(), 2, "the 503, then the refusal");
        assert_eq!(
            start.elapsed(),
            ms(100),
            "the 503's backoff, no wait after the refusal"
        );
        // Without a deadline: each refusal is an attempt.
        hooks::DEADLINE.set(None);
        let s = script();
        let svc = layer().max_attempts(2).build().unwrap().layer(s.clone());
        assert_eq!(run(svc).await, Err("circuit open".into()));
        assert_eq!(s.count(), 2);
    }

    /// A refusal whose time to come back is endless (a classifier's `Duration::MAX`): under a
    /// deadline, the wait cannot fit, so the refusal is returned at once, not a panic.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_with_an_endless_hint_is_returned_at_once() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(10_000)));
        let script = Script::new([Answer::Err(
            Class::new(Category::Rejected).with_retry_after(Duration::MAX),
            "circuit open",
        )]);
        let svc = layer().build().unwrap().layer(script.clone());
        let result = run(svc).await;
        hooks::DEADLINE.set(None);
        assert_eq!(result, Err("circuit open".into()));
        assert_eq!(script.count(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Waiting for a breaker, even the last attempt keeps a copy of the request (one clone per
    /// attempt sent: the first, the retry after the 503, the one after the refusal), since a
    /// refusal of it is followed by another; without a deadline the last one keeps none.
    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_keeps_a_copy_only_when_a_refusal_may_follow_it() {
        for (deadline, clones) in [(true, 3), (false, 1)] {
            hooks::DEADLINE.set(deadline.then(|| Instant::now() + ms(10_000)));
            let n = Arc::new(AtomicUsize::new(0));
            let s = Script::new([err(Category::ServerError, "503"), open(100), Answer::Ok(1)]);
            let svc = layer().max_attempts(2).build().unwrap().layer(s.clone());
            let out = svc
                .oneshot(Counted(n.clone()))
                .await
                .map_err(|e| e.to_string());
            let expected = if deadline {
                Ok(1)
            } else {
                Err("circuit open".to_owned())
            };
            assert_eq!(out, expected);
            assert_eq!(n.load(Ordering::SeqCst), clones, "deadline: {deadline}");
        }
        hooks::DEADLINE.set(None);
    }

    /// The crate's "Clone requirement": a copy of the request is kept while another attempt may
    /// follow: a retry, or, waiting for a breaker under a deadline, the same attempt again after
    /// a refusal. So a request of one attempt keeps one then too, and only then.
    #[tokio::test(start_paused = true)]
    async fn a_copy_is_kept_exactly_while_another_attempt_may_follow() {
        // Every attempt fails with a 503: no refusal comes, but one might have.
        for (limit, deadline, wait_for_breaker, clones) in [
            (1, false, true, 0),
            (1, true, false, 0),
            (1, true, true, 1),
            (2, false, true, 1),
            (2, true, false, 1),
            (2, true, true, 2),
        ] {
            hooks::DEADLINE.set(deadline.then(|| Instant::now() + ms(10_000)));
            let n = Arc::new(AtomicUsize::new(0));
            let s = Script::new((0..limit).map(|_| err(Category::ServerError, "503")));
            let svc = layer()
                .max_attempts(limit)
                .wait_for_breaker(wait_for_breaker)
                .build()
                .unwrap()
                .layer(s.clone());
            let out = svc.oneshot(Counted(n.clone())).await;
            hooks::DEADLINE.set(None);
            assert!(out.is_err());
            assert_eq!(s.count(), limit as usize);
            assert_eq!(
                n.load(Ordering::SeqCst),
                clones,
                "limit {limit}, deadline {deadline}, wait_for_breaker {wait_for_breaker}"
            );
        }
    }

    /// A request whose copy cannot be sent (palisade-http's `ReplayBody` streamed once: its
    /// copies are `Taken`, and `ReplayAttempts` says `Some(0)` of them) is refused by an open
    /// breaker under a deadline: it ends with the refusal, not with the unsendable copy sent
    /// once the breaker lets calls through (which failed with the copy's own "not replayable"
    /// error, a validation failure no fallback above would answer).
    #[tokio::test(start_paused = true)]
    async fn a_refused_request_whose_copy_cannot_be_sent_ends_with_the_refusal() {
        /// A request whose body goes with its first send: its copies cannot be sent.
        #[derive(Debug)]
        struct Once {
            copy: bool,
            clones: Arc<AtomicUsize>,
        }
        impl Clone for Once {
            fn clone(&self) -> Self {
                self.clones.fetch_add(1, Ordering::SeqCst);
                Once {
                    copy: true,
                    clones: self.clones.clone(),
                }
            }
        }
        /// `svc`'s answer to a request of its own body (not a copy), counting its clones.
        async fn send<S>(svc: S, clones: &Arc<AtomicUsize>) -> Result<u32, String>
        where
            S: Service<Once, Response = u32, Error = BoxError>,
        {
            let once = Once {
                copy: false,
                clones: clones.clone(),
            };
            svc.oneshot(once).await.map_err(|e| e.to_string())
        }
        hooks::DEADLINE.set(Some(Instant::now() + ms(10_000)));
        // The request itself says one attempt (sendable), its copies none: a copy is kept for
        // the refusal and found unsendable when it comes.
        let clones = Arc::new(AtomicUsize::new(0));
        let s = Script::new([open(500), Answer::Ok(7)]);
        let svc = layer()
            .max_attempts_fn(|r: &Once| Some(if r.copy { 0 } else { 1 }))
            .build()
            .unwrap()
            .layer(s.clone());
        let start = Instant::now();
        let out = send(svc, &clones).await;
        assert_eq!(out, Err("circuit open".to_owned()));
        assert_eq!(s.count(), 1, "the copy is never sent");
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing is waited for");
        assert_eq!(clones.load(Ordering::SeqCst), 1);
        // The request itself says so from the start: no copy is even made.
        let clones = Arc::new(AtomicUsize::new(0));
        let s = Script::new([open(500), Answer::Ok(7)]);
        let svc = layer()
            .max_attempts_fn(|_: &Once| Some(0))
            .build()
            .unwrap()
            .layer(s.clone());
        let out = send(svc, &clones).await;
        assert_eq!(out, Err("circuit open".to_owned()));
        assert_eq!((s.count(), clones.load(Ordering::SeqCst)), (1, 0));
        // A copy that can be sent after a retryable failure as well: `Some(0)` ends it there
        // too, with that failure.
        let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
        let svc = layer()
            .max_attempts(3)
            .max_attempts_fn(|r: &Once| r.copy.then_some(0))
            .build()
            .unwrap()
            .layer(s.clone());
        let out = send(svc, &Arc::default()).await;
        hooks::DEADLINE.set(None);
        assert_eq!(out, Err("503".to_owned()));
        assert_eq!(s.count(), 1);
    }

    /// A request of one attempt (a non-idempotent one, say, whose refusal means it was never
    /// sent) refused by an open breaker under a deadline waits for the breaker like any last
    /// attempt: the refused attempt does not count, so it does not use up the only one.
    #[tokio::test(start_paused = true)]
    async fn a_single_attempt_refused_by_an_open_breaker_waits_for_it() {
        hooks::DEADLINE.set(Some(Instant::now() + ms(10_000)));
        // The layer's limit of one.
        let s = Script::new([open(500), Answer::Ok(7)]);
        let svc = layer().max_attempts(1).build().unwrap().layer(s.clone());
        assert_eq!(run(svc).await, Ok(7), "{:?}", s.calls());
        let gaps = gaps(&s.calls());
        assert!(
            gaps.len() == 1 && gaps[0] >= ms(500) && gaps[0] <= ms(750),
            "the breaker's time, stretched by up to half: {gaps:?}"
        );
        // A request's own limit of one; refused again and again, it keeps waiting.
        let single = || layer().max_attempts_fn(|_: &u32| Some(1)).build().unwrap();
        let s = Script::new([open(500), open(500), open(500), Answer::Ok(7)]);
        assert_eq!(run(single().layer(s.clone())).await, Ok(7));
        assert_eq!(s.count(), 4);
        // The attempt that reaches the dependency is its one: its failure is final.
        let s = Script::new([open(500), err(Category::ServerError, "503"), Answer::Ok(7)]);
        assert_eq!(run(single().layer(s.clone())).await, Err("503".into()));
        assert_eq!(s.count(), 2);
        // With the option off, or without a deadline, the refusal is returned at once.
        let s = Script::new([open(500), Answer::Ok(7)]);
        let off = layer().max_attempts(1).wait_for_breaker(false).build();
        let start = Instant::now();
        assert_eq!(
            run(off.unwrap().layer(s.clone())).await,
            Err("circuit open".into())
        );
        hooks::DEADLINE.set(None);
        let s2 = Script::new([open(500), Answer::Ok(7)]);
        assert_eq!(
            run(single().layer(s2.clone())).await,
            Err("circuit open".into())
        );
        assert_eq!((s.count(), s2.count()), (1, 1));
        assert_eq!(start.elapsed(), Duration::ZERO);

        // Through `palisade_core::context`, published around the call and each poll, as
        // palisade-timeout's `Deadline` does: the copy is kept at the call, so the deadline
        // must be seen there.
        let at = Instant::now() + ms(10_000);
        let s = Script::new([open(500), Answer::Ok(7)]);
        let mut svc = layer().max_attempts(1).build().unwrap().layer(s.clone());
        let mut fut = std::pin::pin!(palisade_core::context::with_deadline(at, || svc.call(0)));
        let out = std::future::poll_fn(|cx| {
            palisade_core::context::with_deadline(at, || fut.as_mut().poll(cx))
        })
        .await
        .map_err(|e| e.to_string());
        assert_eq!(out, Ok(7));
        assert_eq!(s.count(), 2);
    }

    /// A wait that ends before the deadline is waited for, whatever its random part draws: the
    /// stretch of a server's hint and a backoff's jitter are drawn within the time left. Drawn
    /// first and then checked against the deadline, with 1 s left, they gave up at once 48 in
    /// 100 requests told to come back in 950 ms; with 500 ms left, about half of those whose
    /// full jitter spreads a 1 s backoff over 0 to 1 s. (A breaker's stretch is checked as
    /// drawn, on purpose: `policy::tests`.)
    #[tokio::test(start_paused = true)]
    async fn a_wait_that_ends_before_the_deadline_is_never_given_up_at_random() {
        let limited = Answer::Err(
            Class::new(Category::RateLimited).with_retry_after(ms(950)),
            "429",
        );
        let jittered = || {
            layer()
                .backoff(Backoff::constant(ms(1000)))
                .jitter(Jitter::Full)
        };
        // With no least attempt time, a wait may be drawn to end in the deadline's last
        // millisecond; with the default 10 ms, never.
        // Under a real `Deadline` layer the deadline falls anywhere within a millisecond: with
        // the default, half a millisecond past one too.
        let default = crate::DEFAULT_MIN_ATTEMPT_TIME;
        let half = Duration::from_micros(500);
        for (floor, past) in [(Duration::ZERO, ms(0)), (default, ms(0)), (default, half)] {
            let mut at_the_tick = [0; 2];
            for seed in 0..100 {
                for (case, (first, least, left, builder)) in [
                    (limited.clone(), ms(950), ms(1000), layer()),
                    (
                        err(Category::ServerError, "503"),
                        ms(0),
                        ms(500),
                        jittered(),
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    let left = left + past;
                    let start = Instant::now();
                    hooks::DEADLINE.set(Some(start + left));
                    let message = match &first {
                        Answer::Err(_, message) => *message,
                        _ => unreachable!("both fail first"),
                    };
                    let s = Script::new([first, Answer::Ok(7)]);
                    let svc = builder
                        .min_attempt_time(floor)
                        .seed(seed)
                        .build()
                        .unwrap()
                        .layer(s.clone());
                    let out = run(svc).await;
                    hooks::DEADLINE.set(None);
                    let calls = s.calls();
                    if out.is_err() {
                        // Drawn to end before the deadline, but in its last millisecond: tokio's
                        // timer fires on whole milliseconds, at the deadline's tick, when no
                        // attempt is sent any more (it could not start before the deadline).
                        assert_eq!(out, Err(message.into()), "seed {seed}");
                        assert_eq!(calls, [ms(0)], "seed {seed}");
                        assert_eq!(start.elapsed(), left, "seed {seed}");
                        at_the_tick[case] += 1;
                        continue;
                    }
                    assert_eq!(out, Ok(7), "seed {seed}: {calls:?}");
                    // At least the floor left, less the millisecond the timer may fire late.
                    let floor = floor.saturating_sub(ms(1));
                    assert!(
                        calls[1] >= least && calls[1] < left && left - calls[1] >= floor,
                        "seed {seed}: waited {:?}, at least {least:?}, before {left:?} less {floor:?}",
                        calls[1]
                    );
                }
            }
            if floor.is_zero() {
                // One millisecond of the 50 ms a hint's stretch is drawn in, of the 500 ms of the
                // jitter's: a few requests at most.
                assert!(
                    at_the_tick[0] <= 6 && at_the_tick[1] <= 2,
                    "{at_the_tick:?}"
                );
            } else {
                // Drawn to end at least 10 ms before the deadline, every wait's timer fires in
                // time, wherever the deadline falls within its millisecond.
                assert_eq!(at_the_tick, [0, 0], "{past:?} past the millisecond");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_carries_the_timeouts_so_far() {
        hooks::TIMEOUTS.with_borrow_mut(Vec::clear);
        let script = Script::new([
            err(Category::Timeout, "timed out"),
            err(Category::ServerError, "503"),
            err(Category::Timeout, "timed out"),
            Answer::Ok(1),
        ]);
        let svc = layer()
            .max_attempts(4)
            .build()
            .unwrap()
            .layer(script.clone());
        assert_eq!(run(svc).await, Ok(1));
        assert_eq!(hooks::TIMEOUTS.take(), [0, 1, 1, 2]);
    }

    /// The same as the first half of `the_deadline_stops_retries_before_a_wasted_sleep`, with
    /// the deadline set through `palisade_core::context` around each poll, as a `Deadline`
    /// layer above does, instead of the test hook.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_through_the_classify_context_stops_retries() {
        use palisade_core::context;

        let start = Instant::now();
        let at = start + ms(250);
        let script = Script::new([
            err(Category::ServerError, "e1"),
            err(Category::ServerError, "e2"),
            err(Category::ServerError, "e3"),
        ]);
        let mut svc = layer()
            .max_attempts(5)
            .build()
            .unwrap()
            .layer(script.clone());
        let mut fut = std::pin::pin!(svc.call(0));
        let out = std::future::poll_fn(|cx| context::with_deadline(at, || fut.as_mut().poll(cx)))
            .await
            .map_err(|e| e.to_string());
        assert_eq!(out, Err("e2".into()));
        assert_eq!(script.calls(), [ms(0), ms(100)]);
        assert_eq!(start.elapsed(), ms(100));

        // Without the scope the same script is retried up to its end.
        let script = Script::new([
            err(Category::ServerError, "e1"),
            err(Category::ServerError, "e2"),
            err(Category::ServerError, "e3"),
        ]);
        let svc = layer()
            .max_attempts(3)
            .build()
            .unwrap()
            .layer(script.clone());
        assert_eq!(run(svc).await, Err("e3".into()));
        assert_eq!(script.count(), 3);
    }

    /// What each attempt's `call` reads from `palisade_core::context`, where palisade-timeout's
    /// `Timeout` reads it to escalate.
    #[derive(Clone)]
    struct ReadsTimeouts {
        script: Script,
        seen: Arc<Mutex<Vec<u32>>>,
    }

    impl Service<u32> for ReadsTimeouts {
        type Response = u32;
        type Error = BoxError;
        type Future = <Script as Service<u32>>::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Service::<u32>::poll_ready(&mut self.script, cx)
        }

        fn call(&mut self, req: u32) -> Self::Future {
            let n = palisade_core::context::attempt::timeouts_so_far();
            self.seen.lock().unwrap().push(n);
            self.script.call(req)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_publishes_its_timeouts_through_the_classify_context() {
        let svc = ReadsTimeouts {
            script: Script::new([
                err(Category::Timeout, "timed out"),
                err(Category::ServerError, "503"),
                err(Category::Timeout, "timed out"),
                Answer::Ok(1),
            ]),
            seen: Arc::default(),
        };
        let seen = svc.seen.clone();
        let retry = layer().max_attempts(4).build().unwrap().layer(svc);
        assert_eq!(run(retry).await, Ok(1));
        assert_eq!(*seen.lock().unwrap(), [0, 1, 1, 2]);
        assert_eq!(palisade_core::context::attempt::timeouts_so_far(), 0);
    }

    /// The same count as the attempt's future is polled, for a layer between this one and a
    /// timeout that calls the service below from its future (`async move { inner.oneshot(req)
    /// .await }`) rather than its own `call`: each poll of a retry's attempt sees the count
    /// its `call` saw. Polls read the count the caller's context had (0) before.
    #[tokio::test(start_paused = true)]
    async fn each_retry_s_polls_see_its_timeouts_too() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let script = Script::new([
            err(Category::Timeout, "timed out"),
            err(Category::Timeout, "timed out"),
            Answer::Ok(1),
        ]);
        let deferring = tower::service_fn(move |req: u32| {
            let (log, script) = (log.clone(), script.clone());
            async move {
                // Read at the first poll, where such a layer would call the timeout below.
                log.lock()
                    .unwrap()
                    .push(palisade_core::context::attempt::timeouts_so_far());
                script.oneshot(req).await
            }
        });
        let retry = layer().max_attempts(3).build().unwrap().layer(deferring);
        assert_eq!(run(retry).await, Ok(1));
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
    }

    /// A budget that refuses every retry until `opens`, then allows each; it counts the asks
    /// and the refunds.
    struct Shut {
        opens: Instant,
        asked: AtomicUsize,
        refunded: AtomicUsize,
    }

    impl Shut {
        fn until(opens: Instant) -> Arc<Self> {
            Arc::new(Shut {
                opens,
                asked: AtomicUsize::new(0),
                refunded: AtomicUsize::new(0),
            })
        }
    }

    impl Budget for Shut {
        fn try_withdraw(&self) -> Option<crate::budget::Withdrawal> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            (Instant::now() >= self.opens).then_some(crate::budget::Withdrawal::new(0))
        }

        fn refund(&self, _: crate::budget::Withdrawal) {
            self.refunded.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A budget that allows the first retry and refuses every later one.
    struct FirstOnly(AtomicUsize);

    impl Budget for FirstOnly {
        fn try_withdraw(&self) -> Option<crate::budget::Withdrawal> {
            (self.0.fetch_add(1, Ordering::SeqCst) == 0)
                .then_some(crate::budget::Withdrawal::new(0))
        }

        fn refund(&self, _: crate::budget::Withdrawal) {}
    }

    /// A request held for the budget until its deadline ends with its last error, marked with
    /// the attempts that timed out before it, as any final error is.
    #[tokio::test(start_paused = true)]
    async fn a_retry_held_for_the_budget_until_the_deadline_keeps_the_timeouts_before_it() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(3_000)));
        let s = Script::new([
            err(Category::Timeout, "attempt timed out"),
            err(Category::ServerError, "503"),
            Answer::Ok(7),
        ]);
        let svc = layer()
            .budget(Arc::new(FirstOnly(AtomicUsize::new(0))) as Arc<dyn Budget>)
            .build()
            .unwrap()
            .layer(s.clone());
        let error = svc.oneshot(1).await.unwrap_err();
        hooks::DEADLINE.set(None);
        assert_eq!(s.count(), 2, "the third attempt was never allowed");
        assert_eq!(error.to_string(), "503");
        let marked = crate::AfterTimeouts::find(&*error).expect("marked");
        assert_eq!(marked.timeouts(), 1);
    }

    /// Under a deadline, a retry the budget refuses waits for it, asking again every 250 ms
    /// (stretched by up to half), and goes out once it is allowed.
    #[tokio::test(start_paused = true)]
    async fn a_retry_the_budget_refuses_waits_for_it_within_the_deadline() {
        // A 503, and a 503 whose server gave a hint: only a rate limit's hint means the server
        // paces the retries itself.
        let hinted = Answer::Err(
            Class::new(Category::ServerError).with_retry_after(ms(100)),
            "503 with a hint",
        );
        for failure in [err(Category::ServerError, "503"), hinted] {
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(10_000)));
            let budget = Shut::until(start + ms(2_000));
            let s = Script::new([failure.clone(), Answer::Ok(7)]);
            let svc = layer()
                .budget(budget.clone())
                .build()
                .unwrap()
                .layer(s.clone());
            assert_eq!(run(svc).await, Ok(7), "{failure:?}");
            let calls = s.calls();
            assert_eq!(calls.len(), 2);
            assert!(
                calls[1] >= ms(2_000) && calls[1] <= ms(2_000 + 375),
                "the retry goes out within one look of the budget opening: {calls:?}"
            );
            // The refusal after the failure, one look after the 100 ms delay, then one every
            // 250–375 ms until 2 s: between 6 and 10 asks, the last allowed.
            let asked = budget.asked.load(Ordering::SeqCst);
            assert!((6..=10).contains(&asked), "{asked}");
            assert_eq!(budget.refunded.load(Ordering::SeqCst), 0);
        }
        hooks::DEADLINE.set(None);
    }

    /// When the budget stays shut, the request fails with its last error at its last look
    /// before the deadline, not after it, having sent nothing more.
    #[tokio::test(start_paused = true)]
    async fn a_budget_that_stays_shut_fails_the_request_before_its_deadline() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(3_000)));
        let budget = Shut::until(start + ms(60_000));
        let s = Script::new([err(Category::ServerError, "503")]);
        let svc = layer()
            .budget(budget.clone())
            .build()
            .unwrap()
            .layer(s.clone());
        assert_eq!(run(svc).await, Err("503".into()));
        assert_eq!(s.count(), 1);
        let waited = start.elapsed();
        assert!(
            waited < ms(3_000) && waited >= ms(3_000 - 375),
            "{waited:?}"
        );
        hooks::DEADLINE.set(None);
    }

    /// gRPC's throttle comes back only with successes. A caller that sends its next request
    /// only once this one is answered sends nothing while its retry is held, so without a
    /// probe the retry would wait out its deadline though the dependency recovered at once:
    /// the held retry goes out as the layer's probe at its first look.
    #[tokio::test(start_paused = true)]
    async fn a_retry_the_throttle_holds_goes_out_as_a_probe() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(10_000)));
        let bucket = Arc::new(crate::budget::fixtures::bucket(4, 0.1));
        for _ in 0..4 {
            bucket.on_failure();
        }
        assert!(bucket.try_withdraw().is_none(), "the throttle refuses");
        let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
        let svc = layer()
            .budget(bucket.clone())
            .build()
            .unwrap()
            .layer(s.clone());
        assert_eq!(run(svc).await, Ok(7));
        assert_eq!(
            s.calls(),
            [Duration::ZERO, ms(100)],
            "after the backoff alone"
        );
        hooks::DEADLINE.set(None);
    }

    /// One probe per 250 ms for the whole layer: of two requests held together, the second
    /// goes out a probe period after the first, and each goes out, no more.
    #[tokio::test(start_paused = true)]
    async fn held_retries_probe_one_at_a_time() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(10_000)));
        let bucket = Arc::new(crate::budget::fixtures::bucket(4, 0.1));
        for _ in 0..4 {
            bucket.on_failure();
        }
        let s = Script::new([
            err(Category::ServerError, "503"),
            err(Category::ServerError, "503"),
            Answer::Ok(7),
            Answer::Ok(8),
        ]);
        let l = layer().budget(bucket.clone()).build().unwrap();
        let (a, b) = tokio::join!(run(l.layer(s.clone())), run(l.layer(s.clone())));
        hooks::DEADLINE.set(None);
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let calls = s.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert_eq!(calls[2], ms(100), "the first probe, after the backoff");
        assert!(
            calls[3] >= ms(350) && calls[3] <= ms(100 + 375 + 375),
            "the second held retry waits for the next probe period: {calls:?}"
        );
    }

    /// The log says "retrying" only for a retry that is sent: one waiting for the budget says
    /// so, and says "retrying" when the budget allows it; one the budget never allows says
    /// that it waited, then that it gave up.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waiting_for_the_budget_is_logged_as_retrying_only_once_allowed() {
        for (opens, sent) in [(ms(2_000), true), (ms(60_000), false)] {
            let events = palisade_test::Events::start();
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(3_000)));
            let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
            let svc = layer()
                .name("llm")
                .budget(Shut::until(start + opens))
                .build()
                .unwrap()
                .layer(s.clone());
            let expected = if sent { Ok(7) } else { Err("503".into()) };
            assert_eq!(run(svc).await, expected);
            let said: Vec<String> = events
                .take()
                .iter()
                .filter(|e| e.target == "palisade_retry")
                .map(|e| e.message().to_owned())
                .filter(|m| m.starts_with("retr"))
                .collect();
            let mut expected = vec!["retry budget exhausted; waiting for it".to_owned()];
            expected.push(
                if sent {
                    "retrying: the budget allows it now"
                } else {
                    "retry budget exhausted; returning the last error"
                }
                .to_owned(),
            );
            assert_eq!(said, expected, "budget opens at {opens:?}");
            assert_eq!(s.count(), 1 + usize::from(sent));
        }
        hooks::DEADLINE.set(None);
    }

    /// No deadline to bound the wait, the option off, or a failure the server paced (a 429 with
    /// a hint, where the server's limit and not the budget is what a retry would wait on): the
    /// request fails at once, as a budget refusal always did.
    #[tokio::test(start_paused = true)]
    async fn a_refused_retry_fails_at_once_without_a_deadline_turned_off_or_when_paced() {
        let paced = Answer::Err(
            Class::new(Category::RateLimited).with_retry_after(ms(500)),
            "429",
        );
        let cases = [
            (false, true, err(Category::ServerError, "503"), "503"),
            (true, false, err(Category::ServerError, "503"), "503"),
            (true, true, paced, "429"),
        ];
        for (deadline, wait, answer, expected) in cases {
            let start = Instant::now();
            hooks::DEADLINE.set(deadline.then(|| start + ms(10_000)));
            let budget = Shut::until(start + ms(1_000));
            let s = Script::new([answer, Answer::Ok(7)]);
            let svc = layer()
                .budget(budget.clone())
                .wait_for_budget(wait)
                .build()
                .unwrap()
                .layer(s.clone());
            assert_eq!(run(svc).await, Err(expected.into()), "{deadline} {wait}");
            assert_eq!(s.count(), 1);
            assert_eq!(start.elapsed(), Duration::ZERO, "{deadline} {wait}");
            assert_eq!(budget.asked.load(Ordering::SeqCst), 1);
        }
        hooks::DEADLINE.set(None);
    }

    /// A retry that waited for the budget and was then allowed holds a withdrawal: dropped
    /// while the service below is not ready, it gives that withdrawal back; dropped while it
    /// still waits, it has nothing to give back.
    #[tokio::test(start_paused = true)]
    async fn dropping_a_request_that_waits_for_the_budget_refunds_only_what_it_took() {
        for (drop_at, refunded) in [(ms(1_000), 0), (ms(3_000), 1)] {
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(10_000)));
            let budget = Shut::until(start + ms(2_000));
            let mut s = Script::new([err(Category::ServerError, "503")]);
            s.stall_after = Some(1);
            let svc = layer()
                .budget(budget.clone())
                .build()
                .unwrap()
                .layer(s.clone());
            let call = tokio::spawn(svc.oneshot(0));
            tokio::time::sleep(drop_at).await;
            assert!(!call.is_finished());
            call.abort();
            let _ = call.await;
            assert_eq!(
                budget.refunded.load(Ordering::SeqCst),
                refunded,
                "{drop_at:?}"
            );
            assert_eq!(s.count(), 1);
        }
        hooks::DEADLINE.set(None);
    }

    /// The error a finished poll gave, as text.
    fn error_of(out: Poll<Result<u32, BoxError>>) -> String {
        match out {
            Poll::Ready(Err(error)) => error.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A retry whose backoff ended before the deadline but whose task is polled again only at
    /// or after it (a busy runtime) is not sent: the request ends with its last error, and the
    /// budget withdrawal reserved for the retry comes back. Polled before it, with at least
    /// the least attempt time left (10 ms by default, less the millisecond tokio's timer may
    /// fire late), the retry goes.
    #[tokio::test(start_paused = true)]
    async fn a_retry_polled_at_or_after_the_deadline_is_not_sent() {
        let default = crate::DEFAULT_MIN_ATTEMPT_TIME;
        assert_eq!(default, ms(10));
        for (floor, polled_at, sent) in [
            (default, ms(1_500), false),
            (default, ms(1_000), false),
            (default, ms(992), false),
            (default, ms(991), true),
            (default, ms(990), true),
            (Duration::ZERO, ms(1_000), false),
            (Duration::ZERO, ms(999), true),
        ] {
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(1_000)));
            let budget = Shut::until(start);
            let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
            let svc = layer()
                .min_attempt_time(floor)
                .budget(budget.clone())
                .backoff(Backoff::constant(ms(500)))
                .build()
                .unwrap()
                .layer(s.clone());
            let mut fut = Box::pin(svc.oneshot(0));
            assert!(futures_poll(&mut fut).is_pending(), "backing off 500 ms");
            advance(polled_at).await;
            let out = futures_poll(&mut fut);
            if sent {
                assert!(matches!(out, Poll::Ready(Ok(7))), "{polled_at:?}: {out:?}");
                assert_eq!(s.calls(), [ms(0), polled_at]);
                assert_eq!(budget.refunded.load(Ordering::SeqCst), 0);
            } else {
                assert_eq!(error_of(out), "503", "{polled_at:?}");
                assert_eq!(s.calls(), [ms(0)], "{polled_at:?}");
                assert_eq!(budget.refunded.load(Ordering::SeqCst), 1, "{polled_at:?}");
            }
        }
        hooks::DEADLINE.set(None);
    }

    /// A wait fitted to end exactly at the last start, under a deadline half a millisecond
    /// past a whole one (as a real `Deadline` layer's falls): tokio's timer fires at the next
    /// whole millisecond, half a millisecond late, and the retry still goes, with 9.5 ms left
    /// of the 10 ms asked. Without the allowance it was given up at random, a wait that ended
    /// in time.
    #[tokio::test(start_paused = true)]
    async fn a_wait_fitted_to_the_last_start_is_sent_when_its_timer_fires_late() {
        let start = Instant::now();
        let half = Duration::from_micros(500);
        hooks::DEADLINE.set(Some(start + ms(1_000) + half));
        let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
        let svc = layer()
            .backoff(Backoff::constant(ms(990) + half))
            .build()
            .unwrap()
            .layer(s.clone());
        assert_eq!(run(svc).await, Ok(7));
        assert_eq!(s.calls(), [ms(0), ms(991)]);
        hooks::DEADLINE.set(None);
    }

    /// The same after a wait for an open breaker below: the refusal is returned, and the
    /// request held for the breaker is not sent again after the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_request_held_for_a_breaker_is_not_sent_after_the_deadline() {
        let start = Instant::now();
        hooks::DEADLINE.set(Some(start + ms(1_000)));
        let s = Script::new([open(100), Answer::Ok(7)]);
        let svc = layer().build().unwrap().layer(s.clone());
        let mut fut = Box::pin(svc.oneshot(0));
        assert!(
            futures_poll(&mut fut).is_pending(),
            "waiting for the breaker"
        );
        advance(ms(1_500)).await;
        assert_eq!(error_of(futures_poll(&mut fut)), "circuit open");
        assert_eq!(s.calls(), [ms(0)]);
        hooks::DEADLINE.set(None);
    }

    /// A held retry's next look at the budget is not armed when it would leave less than the
    /// least attempt time: the request ends at this look rather than sleeping to a look that
    /// could not send it. Floor 200 ms, deadline 480 ms: the look after the backoff's 100 ms is
    /// in time (380 ms left), the next one (250–375 ms later) would leave at most 130 ms.
    #[tokio::test(start_paused = true)]
    async fn a_held_retry_ends_at_its_last_look_that_leaves_an_attempt_time() {
        for seed in 0..10 {
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(480)));
            let budget = Shut::until(start + ms(60_000));
            let s = Script::new([err(Category::ServerError, "503")]);
            let svc = layer()
                .min_attempt_time(ms(200))
                .budget(budget.clone())
                .seed(seed)
                .build()
                .unwrap()
                .layer(s.clone());
            assert_eq!(run(svc).await, Err("503".into()));
            assert_eq!(start.elapsed(), ms(100), "seed {seed}");
            assert_eq!(budget.asked.load(Ordering::SeqCst), 2, "seed {seed}");
        }
        hooks::DEADLINE.set(None);
    }

    /// The same after a wait for the budget, which opened meanwhile: nothing is taken from it
    /// past the deadline, or with less than the least attempt time left, and the request ends
    /// with its last error.
    #[tokio::test(start_paused = true)]
    async fn a_retry_held_for_the_budget_is_not_sent_after_the_deadline() {
        let default = crate::DEFAULT_MIN_ATTEMPT_TIME;
        for (floor, polled_at, sent) in [
            (default, ms(3_500), false),
            (default, ms(2_995), false),
            (Duration::ZERO, ms(2_995), true),
        ] {
            let start = Instant::now();
            hooks::DEADLINE.set(Some(start + ms(3_000)));
            let budget = Shut::until(start + ms(2_000));
            let s = Script::new([err(Category::ServerError, "503"), Answer::Ok(7)]);
            let svc = layer()
                .min_attempt_time(floor)
                .budget(budget.clone())
                .build()
                .unwrap()
                .layer(s.clone());
            let mut fut = Box::pin(svc.oneshot(0));
            assert!(futures_poll(&mut fut).is_pending(), "held for the budget");
            advance(polled_at).await;
            let out = futures_poll(&mut fut);
            if sent {
                assert!(matches!(out, Poll::Ready(Ok(7))), "{out:?}");
                assert_eq!(s.calls(), [ms(0), polled_at]);
                assert_eq!(budget.asked.load(Ordering::SeqCst), 2);
            } else {
                assert_eq!(error_of(out), "503", "{polled_at:?}");
                assert_eq!(s.calls(), [ms(0)]);
                assert_eq!(
                    budget.asked.load(Ordering::SeqCst),
                    1,
                    "only the first refusal"
                );
            }
            assert_eq!(budget.refunded.load(Ordering::SeqCst), 0);
        }
        hooks::DEADLINE.set(None);
    }

    /// Under a deadline carried only in `palisade_core::context` (no `Deadline` future above to
    /// end the call, as under `Resume` in a spawned task), a credential refresh that ends after
    /// the deadline is not followed by a retry: the authentication failure is returned.
    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_ends_after_a_carried_deadline_sends_no_retry() {
        use palisade_core::context;

        let start = Instant::now();
        let at = start + ms(1_000);
        let s = Script::new([err(Category::Authentication, "401"), Answer::Ok(7)]);
        let mut svc = layer()
            .refresh(|| async {
                tokio::time::sleep(ms(2_000)).await;
                Ok::<(), BoxError>(())
            })
            .build()
            .unwrap()
            .layer(s.clone());
        let mut fut = std::pin::pin!(svc.call(0));
        let out = std::future::poll_fn(|cx| context::with_deadline(at, || fut.as_mut().poll(cx)))
            .await
            .map_err(|e| e.to_string());
        assert_eq!(out, Err("401".into()));
        assert_eq!(s.calls(), [ms(0)]);
        assert_eq!(start.elapsed(), ms(2_000));
    }
}

#[test]
fn futures_and_layers_are_send_and_sync() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    let layer = RetryLayer::new();
    send_sync(&layer);
    let mut svc = layer.layer(Script::new([]));
    send_sync(&svc);
    let fut = Service::<u32>::call(&mut svc, 1);
    send(&fut);
    let dynamic = RetryLayer::builder()
        .budget(Arc::new(Unlimited) as Arc<dyn Budget>)
        .build()
        .unwrap();
    send_sync(&dynamic);
}

/// A stand-in for a router: picks endpoint `number` for attempt `number`, fails the first two
/// attempts and reports the endpoint that failed.
#[derive(Clone, Default)]
struct Router {
    seen: Arc<Mutex<Vec<Option<palisade_core::attempt::Attempt>>>>,
    /// The attempt each readiness check ran in.
    readied: Arc<Mutex<Vec<Option<palisade_core::attempt::Attempt>>>>,
    /// The attempt each response future was polled in, after its first poll.
    polled: Arc<Mutex<Vec<Option<palisade_core::attempt::Attempt>>>>,
}

impl Service<u32> for Router {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let current = palisade_core::attempt::current();
        self.readied.lock().unwrap().push(current);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        use palisade_core::attempt;
        let current = attempt::current();
        self.seen.lock().unwrap().push(current);
        let number = current.map_or(1, |a| a.number);
        let endpoint = 100 + u64::from(number);
        let polled = Arc::clone(&self.polled);
        Box::pin(async move {
            tokio::task::yield_now().await;
            polled.lock().unwrap().push(attempt::current());
            if number < 3 {
                // Reported while the attempt's future is polled.
                attempt::report_failed_endpoint(endpoint);
                Err(Box::new(Classified::new(Class::new(Category::Network), "reset")) as BoxError)
            } else {
                Ok(endpoint as u32)
            }
        })
    }
}

/// A router that reports the endpoint it failed on before any future is polled: from a
/// retry's readiness check, or from its `call` (the second attempt's; a report from the first
/// attempt's `call` is documented as not kept). Fails the first two attempts.
#[derive(Clone)]
struct ReportsEarly {
    in_call: bool,
    seen: Arc<Mutex<Vec<Option<palisade_core::attempt::Attempt>>>>,
}

impl Service<u32> for ReportsEarly {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        use palisade_core::attempt;
        if !self.in_call && attempt::current().is_some_and(|a| a.number == 2) {
            attempt::report_failed_endpoint(77);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        use palisade_core::attempt;
        let current = attempt::current();
        self.seen.lock().unwrap().push(current);
        let number = current.map_or(0, |a| a.number);
        if self.in_call && number == 2 {
            attempt::report_failed_endpoint(55);
        }
        std::future::ready(if number < 3 {
            Err(Box::new(Classified::new(Class::new(Category::Network), "reset")) as BoxError)
        } else {
            Ok(number)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_reported_in_a_retrys_call_or_readiness_is_avoided() {
    use palisade_core::attempt::Attempt;
    for (in_call, token) in [(true, 55), (false, 77)] {
        let router = ReportsEarly {
            in_call,
            seen: Arc::default(),
        };
        let svc = layer().build().unwrap().layer(router.clone());
        assert_eq!(svc.oneshot(0).await.unwrap(), 3);
        assert_eq!(
            router.seen.lock().unwrap()[2],
            Some(Attempt {
                number: 3,
                avoid: Some(token)
            }),
            "reported in {}",
            if in_call { "call" } else { "poll_ready" }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_tell_the_router_which_endpoint_failed() {
    use palisade_core::attempt::Attempt;
    let router = Router::default();
    let svc = layer().build().unwrap().layer(router.clone());
    assert_eq!(svc.oneshot(0).await.unwrap(), 103);
    // Each call runs in its attempt's scope, the first one too, with nothing to avoid.
    let attempts = [
        Some(Attempt {
            number: 1,
            avoid: None,
        }),
        Some(Attempt {
            number: 2,
            avoid: Some(101),
        }),
        Some(Attempt {
            number: 3,
            avoid: Some(102),
        }),
    ];
    assert_eq!(*router.seen.lock().unwrap(), attempts);
    // A retry's readiness check runs in its attempt too (a router picks its endpoint there);
    // the first one is the caller's, outside.
    assert_eq!(
        *router.readied.lock().unwrap(),
        [None, attempts[1], attempts[2]]
    );
    // Each response future is polled in its attempt too: a router reports the endpoint that
    // failed it there.
    assert_eq!(*router.polled.lock().unwrap(), attempts);
    assert!(palisade_core::attempt::current().is_none());
}

/// A service that counts its clones and, like a semaphore-backed service, must be made ready
/// on the very instance that is then called.
#[derive(Debug)]
struct Strict {
    clones: Arc<AtomicUsize>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    ready: bool,
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Strict {
            clones: self.clones.clone(),
            answers: self.answers.clone(),
            // A clone has reserved nothing.
            ready: false,
        }
    }
}

impl Service<u32> for Strict {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        assert!(self.ready, "called without poll_ready on this instance");
        self.ready = false;
        std::future::ready(match self.answers.lock().unwrap().pop_front() {
            Some(Answer::Err(class, msg)) => Err(Box::new(Classified::new(class, msg)) as BoxError),
            _ => Ok(1),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_clones_no_service_and_retries_use_a_readied_clone() {
    let clones = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let strict = Strict {
        clones: clones.clone(),
        answers: answers.clone(),
        ready: false,
    };
    let mut svc = layer().build().unwrap().layer(strict);
    // The layer keeps one spare clone for retries.
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    for _ in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 1);
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        1,
        "the happy path cloned a service"
    );

    // A failing request takes one clone of the spare, makes it ready and retries on it.
    answers.lock().unwrap().extend([
        err(Category::ServerError, "503"),
        err(Category::ServerError, "503"),
    ]);
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 1);
    assert_eq!(clones.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_default_budget_stops_retries_while_the_dependency_fails_but_not_for_paced_failures() {
    use crate::budget::Throttled;
    let budget = Arc::new(Throttled::default());
    // Retryable failures without a hint: each takes a token. After five (two requests of three
    // attempts use six attempts) the throttle is at half and no more retries go out.
    for _ in 0..2 {
        let script = Script::new([
            err(Category::ServerError, "503"),
            err(Category::ServerError, "503"),
            err(Category::ServerError, "503"),
        ]);
        let svc = layer()
            .budget(budget.clone())
            .build()
            .unwrap()
            .layer(script.clone());
        let _ = run(svc).await;
    }
    assert!(!budget.throttle().allows_retry());
    let script = Script::new([err(Category::ServerError, "503")]);
    let svc = layer()
        .budget(budget.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("503".into()));
    assert_eq!(script.count(), 1, "throttled: no retry");

    // A rate limit with a server hint is paced by the server: it takes no token, so a
    // throttle with tokens to spare stays open however many there are.
    let budget = Arc::new(Throttled::default());
    for _ in 0..20 {
        budget.on_request();
    }
    let hinted = Answer::Err(
        Class::new(Category::RateLimited).with_retry_after(ms(300)),
        "429",
    );
    let script = Script::new([hinted.clone(), hinted]);
    let svc = layer()
        .budget(budget.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    after_hints(&script.calls(), &[ms(300), ms(300)]);
    assert_eq!(budget.throttle().milli_tokens(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_refused_call_is_retried_after_its_hint_without_budget() {
    // A budget that allows no retry at all, and a throttle at zero.
    let budget = Arc::new(ratio_budget(Duration::from_secs(10), 0, 0.0));
    let refused = Answer::Err(
        Class::new(Category::Rejected).with_retry_after(ms(400)),
        "circuit open",
    );
    let script = Script::new([refused]);
    let svc = layer()
        .budget(budget.clone())
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Ok(0));
    after_hints(&script.calls(), &[ms(400)]);
    assert_eq!(budget.retries_at(Instant::now()), 0);

    // A real failure with the same budget is not retried.
    let script = Script::new([err(Category::ServerError, "503")]);
    let svc = layer()
        .budget(budget)
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("503".into()));
    assert_eq!(script.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_without_a_time_to_come_back_is_budgeted() {
    // A throttle shedding load refuses without a hint: retrying it is an ordinary retry.
    let budget = Arc::new(ratio_budget(Duration::from_secs(10), 0, 0.0));
    let script = Script::new([err(Category::Rejected, "circuit throttled")]);
    let svc = layer()
        .budget(budget)
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(run(svc).await, Err("circuit throttled".into()));
    assert_eq!(script.count(), 1);
}

mod misuse {
    use super::*;

    /// Polls `fut` to its output with a no-op waker, advancing the paused clock when it waits.
    async fn finish<F: Future + Unpin>(fut: &mut F) -> F::Output {
        loop {
            if let Poll::Ready(out) = futures_poll(fut) {
                return out;
            }
            advance(ms(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "retry ResponseFuture polled after completion")]
    async fn a_future_polled_after_its_answer_panics() {
        let mut svc = layer().build().unwrap().layer(Script::new([Answer::Ok(1)]));
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert_eq!(finish(&mut fut).await.unwrap(), 1);
        let _ = futures_poll(&mut fut);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "retry ResponseFuture polled after completion")]
    async fn a_future_polled_after_its_last_error_panics() {
        let script = Script::new([
            err(Category::ServerError, "503"),
            err(Category::Validation, "400"),
        ]);
        let mut svc = layer().build().unwrap().layer(script.clone());
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert_eq!(finish(&mut fut).await.unwrap_err().to_string(), "400");
        assert_eq!(script.count(), 2);
        let _ = futures_poll(&mut fut);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "retry ResponseFuture polled after completion")]
    async fn a_future_polled_after_a_retried_answer_panics() {
        let script = Script::new([err(Category::ServerError, "503"), Answer::Ok(2)]);
        let mut svc = layer().build().unwrap().layer(script.clone());
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert_eq!(finish(&mut fut).await.unwrap(), 2);
        assert_eq!(script.count(), 2);
        let _ = futures_poll(&mut fut);
    }

    /// `Retry` reserves nothing in `poll_ready`: a `call` without it reaches the inner service
    /// as it is, and that service's contract applies (this one panics).
    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "called without poll_ready on this instance")]
    async fn a_call_without_poll_ready_is_the_inner_services_to_judge() {
        let strict = Strict {
            clones: Arc::default(),
            answers: Arc::default(),
            ready: false,
        };
        let mut svc = layer().build().unwrap().layer(strict);
        drop(svc.call(0));
    }

    /// ...and an inner service that needs no readiness is simply called.
    #[tokio::test(start_paused = true)]
    async fn a_call_without_poll_ready_reaches_a_lenient_inner_service() {
        let script = Script::new([Answer::Ok(3)]);
        let mut svc = layer().build().unwrap().layer(script.clone());
        assert_eq!(Service::<u32>::call(&mut svc, 0).await.unwrap(), 3);
        assert_eq!(script.count(), 1);
    }
}

mod debug {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_future_shows_its_state() {
        let show = |fut: &dyn std::fmt::Debug| format!("{fut:?}");
        let cap = Arc::new(rate_cap(5, Duration::from_secs(1)));
        // An attempt in flight.
        let mut svc = layer()
            .budget(cap.clone())
            .build()
            .unwrap()
            .layer(Script::new([
                err(Category::Timeout, "timed out"),
                Answer::Hang,
            ]));
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert_eq!(
            show(&fut),
            "ResponseFuture { state: \"calling\", attempts: 1, limit: 3, timeouts: 0, reserved: false }"
        );
        // Backing off, a retry reserved, one timeout so far.
        assert!(futures_poll(&mut fut).is_pending());
        assert_eq!(
            show(&fut),
            "ResponseFuture { state: \"sleeping\", attempts: 1, limit: 3, timeouts: 1, reserved: true }"
        );
        // The retry in flight: the reservation is spent.
        advance(ms(100)).await;
        assert!(futures_poll(&mut fut).is_pending());
        assert_eq!(
            show(&fut),
            "ResponseFuture { state: \"calling\", attempts: 2, limit: 3, timeouts: 1, reserved: false }"
        );

        // Refreshing credentials.
        let mut svc = layer()
            .refresh(std::future::pending::<Result<(), BoxError>>)
            .build()
            .unwrap()
            .layer(Script::new([err(Category::Authentication, "401")]));
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert!(futures_poll(&mut fut).is_pending());
        assert!(
            show(&fut).contains("state: \"refreshing\""),
            "{}",
            show(&fut)
        );

        // Waiting for the retry service, then done.
        let mut script = Script::new([err(Category::ServerError, "503")]);
        script.stall_after = Some(1);
        let mut svc = layer()
            .backoff(Backoff::constant(Duration::ZERO))
            .build()
            .unwrap()
            .layer(script);
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert!(futures_poll(&mut fut).is_pending());
        assert!(show(&fut).contains("state: \"ready\""), "{}", show(&fut));
        let mut svc = layer().build().unwrap().layer(Script::new([]));
        let mut fut = Service::<u32>::call(&mut svc, 0);
        assert!(futures_poll(&mut fut).is_ready());
        assert!(show(&fut).contains("state: \"done\""), "{}", show(&fut));
    }

    #[test]
    fn layers_builders_and_services_show_their_settings() {
        let builder = RetryLayer::builder()
            .name("llm")
            .max_attempts(4)
            .budget(Unlimited)
            .seed(7);
        let shown = format!("{builder:?}");
        assert!(
            shown.starts_with("RetryBuilder { name: \"llm\", max_attempts: 4, backoff: Backoff"),
            "{shown}"
        );
        for field in [
            "jitter: Proportional(0.1)",
            "rate_limited_delay: 5s",
            "max_retry_after: 60s",
            "adaptive: None",
            "budget: Unlimited",
            "rng: Some(Seeded { seed: 7 })",
            "refresh: false",
            "attempts: LayerLimit",
        ] {
            assert!(shown.contains(field), "{field} in {shown}");
        }
        let layer = builder.build().unwrap();
        let shown = format!("{layer:?}");
        assert!(
            shown.starts_with(
                "RetryLayer { shared: Retry { name: \"llm\", max_attempts: 4, limit_now: 4,"
            ),
            "{shown}"
        );
        assert!(shown.contains("rng: Seeded { seed: 7 }"), "{shown}");
        // Every setting the builder shows, the built layer shows too: the three that decide
        // what a request does while a breaker is open, the budget is spent or its deadline is
        // near were missing.
        for field in [
            "jitter: Proportional(0.1)",
            "rate_limited_delay: 5s",
            "max_retry_after: 60s",
            "wait_for_breaker: true",
            "wait_for_budget: true",
            "min_attempt_time: 10ms",
            "adaptive: None",
            "budget: Unlimited",
            "refresh: false",
            "attempts: LayerLimit",
        ] {
            assert!(shown.contains(field), "{field} in {shown}");
        }
        let svc = layer.layer(7u8);
        assert_eq!(svc.max_attempts(), 4);
        assert_eq!(svc.budget().balance(), i64::MAX);
        let shown = format!("{svc:?}");
        assert!(
            shown.starts_with("Retry { inner: 7, shared: Retry { name: \"llm\""),
            "{shown}"
        );
        let factory = RetryLayer::builder().rng_factory(|| SmallRng::seed_from_u64(1));
        assert!(format!("{factory:?}").contains("rng: Some(Factory)"));
    }

    #[test]
    fn the_service_gives_its_inner_service_back() {
        let mut svc = layer().build().unwrap().layer(5u8);
        assert_eq!(*svc.get_ref(), 5);
        *svc.get_mut() = 6;
        assert_eq!(svc.into_inner(), 6);
    }
}

/// A final error after an earlier attempt timed out is marked ([`crate::AfterTimeouts`]),
/// transparently: same message, same class, the last error as its source. One with no
/// timed-out attempt before its last is returned as it is.
#[tokio::test(start_paused = true)]
async fn a_final_error_after_a_timeout_is_marked() {
    let script = Script::new([
        err(Category::Timeout, "attempt timed out"),
        err(Category::ServerError, "HTTP 500"),
        err(Category::ServerError, "HTTP 500"),
    ]);
    let svc = layer().max_attempts(3).build().unwrap().layer(script);
    let error = svc.oneshot(1).await.unwrap_err();
    let marked = error
        .downcast_ref::<crate::AfterTimeouts>()
        .expect("marked");
    assert_eq!(marked.timeouts(), 1);
    assert_eq!(error.to_string(), "HTTP 500");
    assert_eq!(
        palisade_core::class_of(&error).category,
        Category::ServerError
    );
    assert!(marked.inner().downcast_ref::<Classified>().is_some());
    assert!(crate::AfterTimeouts::find(&*error).is_some());

    // A final timeout says so on its own: returned as it is, unmarked.
    let script = Script::new([
        err(Category::Timeout, "t1"),
        err(Category::Timeout, "t2"),
        err(Category::Timeout, "t3"),
    ]);
    let svc = layer().max_attempts(3).build().unwrap().layer(script);
    let error = svc.oneshot(1).await.unwrap_err();
    assert!(crate::AfterTimeouts::find(&*error).is_none());
    assert_eq!(error.to_string(), "t3");
    assert_eq!(palisade_core::class_of(&error).category, Category::Timeout);

    for answers in [
        vec![
            err(Category::ServerError, "e1"),
            err(Category::ServerError, "e2"),
        ],
        vec![err(Category::Timeout, "t1")],
        vec![err(Category::Validation, "bad")],
    ] {
        let svc = layer()
            .max_attempts(answers.len() as u32)
            .build()
            .unwrap()
            .layer(Script::new(answers));
        let error = svc.oneshot(1).await.unwrap_err();
        assert!(error.downcast_ref::<Classified>().is_some(), "{error:?}");
    }
}
