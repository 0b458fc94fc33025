//! Whole stacks built through the facade.

use palisade::classify::{Category, ClassifyLayer, DefaultClassifier, class_of};
use palisade_test::{Flaky, Step};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn classify_behind_the_facade_reads_every_failure() {
    let flaky = Flaky::script(vec![
        Step::Err("429 rate limit, retry after 2"),
        Step::Err("connection reset"),
        Step::Ok(1),
    ]);
    let svc = ServiceBuilder::new()
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(flaky.clone());

    let err = svc.clone().oneshot("q").await.unwrap_err();
    let class = class_of(&err);
    assert_eq!(class.category, Category::RateLimited);
    assert_eq!(class.retry_after, Some(std::time::Duration::from_secs(2)));

    let err = svc.clone().oneshot("q").await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Network);
    assert!(class_of(&err).counts_against_health());

    assert_eq!(svc.clone().oneshot("q").await.unwrap(), 1);
    assert_eq!(flaky.calls(), 3);
}

/// retry → route → classify: a retry never goes back to the replica that just failed it.
#[tokio::test(start_paused = true)]
async fn retries_go_to_another_replica() {
    let warnings = palisade_test::Warnings::start();
    use palisade::classify::BoxError;
    use palisade::retry::RetryLayer;
    use palisade::route::{OutlierConfig, Route};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, Service, service_fn};

    let calls: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let replica = |i: usize| {
        let calls = calls.clone();
        ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(move |_: u32| {
            calls[i].fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 0 {
                    Err::<usize, BoxError>("503 service unavailable".into())
                } else {
                    Ok(i)
                }
            }
        }))
    };
    // No ejection, so every request may pick the bad replica first.
    let mut outlier = OutlierConfig::default();
    outlier.consecutive_failures = None;
    let route = Route::builder([replica(0), replica(1)])
        .outlier(outlier)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .max_attempts(2)
                .seed(1)
                .build()
                .unwrap(),
        )
        .service(route);
    for n in 0..200u32 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), 1);
    }
    // The bad replica is picked until its 10th failure makes it Failed (the health state
    // machine's default failed_after); each of those failures was retried once, on the good
    // replica, and every request succeeded with two attempts at most.
    assert_eq!(calls[0].load(Ordering::SeqCst), 10);
    assert_eq!(calls[1].load(Ordering::SeqCst), 200);
    // Retry and router in one task: the router never thinks the attempt context was lost.
    assert_eq!(warnings.containing("context"), 0);
}

/// deadline → retry → timeout(escalating): a timed-out attempt is retried with a longer
/// per-attempt timeout, and retry never sleeps past the deadline.
mod deadlines_and_escalation {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use palisade::classify::BoxError;
    use palisade::retry::{Backoff, Jitter, RetryLayer};
    use palisade_timeout::{DeadlineLayer, TimeoutLayer};
    use tokio::time::Instant;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn retry(attempts: u32, delay: Duration) -> RetryLayer {
        RetryLayer::builder()
            .max_attempts(attempts)
            .backoff(Backoff::constant(delay))
            .jitter(Jitter::None)
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_is_retried_with_a_longer_timeout() {
        let warnings = palisade_test::Warnings::start();
        // The tool always needs 1.5 s; the first attempt may take 1 s, the next 2 s.
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let tool = service_fn(move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, BoxError>("done")
            }
        });
        let start = Instant::now();
        let answer = ServiceBuilder::new()
            .layer(retry(3, Duration::from_millis(100)))
            .layer(
                TimeoutLayer::builder(Duration::from_secs(1))
                    .escalate(2.0, Duration::from_secs(4))
                    .build()
                    .unwrap(),
            )
            .service(tool)
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(answer, "done");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // 1 s timed out + 100 ms backoff + 1.5 s answer.
        assert_eq!(start.elapsed(), Duration::from_millis(2600));
        // Timeout and retry in one task: no context was lost, nothing to warn about.
        assert_eq!(warnings.count(), 0);
    }

    /// deadline → retry → timeout(escalating) → tool: the tool reads, through
    /// `palisade::classify::context`, the deadline `Deadline` set and the count retry set,
    /// and the timeout escalated on that count; `palisade::timeout::context` re-exports the
    /// same functions.
    #[tokio::test(start_paused = true)]
    async fn every_layer_reads_the_one_context() {
        use palisade::classify::context;
        use std::sync::Mutex;

        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let tool = service_fn(move |_: ()| {
            let timeouts = context::attempt::timeouts_so_far();
            assert_eq!(timeouts, palisade::timeout::context::timeouts_so_far());
            let record = record.clone();
            async move {
                let deadline = context::deadline();
                assert_eq!(deadline, palisade::timeout::context::deadline());
                record.lock().unwrap().push((timeouts, deadline));
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, BoxError>("done")
            }
        });
        let start = Instant::now();
        let answer = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(10)))
            .layer(retry(3, Duration::from_millis(100)))
            .layer(
                TimeoutLayer::builder(Duration::from_secs(1))
                    .escalate(2.0, Duration::from_secs(4))
                    .build()
                    .unwrap(),
            )
            .service(tool)
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(answer, "done");
        let at = Some(start + Duration::from_secs(10));
        assert_eq!(*seen.lock().unwrap(), [(0, at), (1, at)]);
        assert_eq!(start.elapsed(), Duration::from_millis(2600));
        assert_eq!(
            (context::deadline(), context::attempt::timeouts_so_far()),
            (None, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_escalation_every_attempt_times_out() {
        let tool = service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, BoxError>("done")
        });
        let err = ServiceBuilder::new()
            .layer(retry(3, Duration::from_millis(100)))
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .service(tool)
            .oneshot(())
            .await
            .unwrap_err();
        assert!(err.is::<palisade_timeout::error::Elapsed>(), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_once_when_the_next_backoff_would_pass_the_deadline() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let tool = service_fn(move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), BoxError>("503 service unavailable".into()) }
        });
        let start = Instant::now();
        let err = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(2)))
            .layer(retry(5, Duration::from_millis(1500)))
            .service(tool)
            .oneshot(())
            .await
            .unwrap_err();
        // Attempt 1 at 0 s, attempt 2 at 1.5 s; a third would start at 3 s, past the deadline:
        // the last real error comes back at 1.5 s, without sleeping towards the deadline.
        assert_eq!(err.to_string(), "503 service unavailable");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }
}

/// The facade's recommended preset behaves as its parts promise, in the right order.
mod preset {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use palisade::classify::{BoxError, Category, class_of};
    use palisade::{ServiceBuilderExt, preset};
    use tokio::time::Instant;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn flaky(
        fails: usize,
        msg: &'static str,
    ) -> (
        impl tower::Service<(), Response = &'static str, Error = BoxError, Future: Send> + Clone,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let svc = service_fn(move |_: ()| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < fails {
                    Err::<_, BoxError>(msg.into())
                } else {
                    Ok("ok")
                }
            }
        });
        (svc, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_within_the_deadline() {
        let (svc, calls) = flaky(2, "503 service unavailable");
        let start = Instant::now();
        let agent = ServiceBuilder::new()
            .palisade(preset::recommended("llm").build().unwrap())
            .service(svc);
        assert_eq!(agent.oneshot(()).await.unwrap(), "ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn client_faults_are_returned_at_once() {
        let (svc, calls) = flaky(100, "404 model not found");
        let agent = ServiceBuilder::new()
            .palisade(preset::recommended("llm").build().unwrap())
            .service(svc);
        let err = agent.oneshot(()).await.unwrap_err();
        assert_eq!(class_of(&err).category, Category::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_dependency_is_cut_by_the_attempt_timeout_and_the_deadline() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let hung = service_fn(move |_: ()| {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<&'static str, BoxError>>()
        });
        let start = Instant::now();
        let agent = ServiceBuilder::new()
            .palisade(
                preset::recommended("llm")
                    .deadline(Duration::from_secs(5))
                    .attempt_timeout(Duration::from_secs(2), None)
                    .build()
                    .unwrap(),
            )
            .service(hung);
        let err = agent.oneshot(()).await.unwrap_err();
        // Attempt 1 times out at 2 s; the next backoff plus attempt may not outlive the 5 s
        // deadline, so the call ends by then, with a timeout.
        assert!(
            start.elapsed() <= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(class_of(&err).category, Category::Timeout);
        assert!(calls.load(Ordering::SeqCst) >= 1);
    }

    /// Where a fallback above should answer at once while the breaker is open, the preset's
    /// docs say to give it a retry layer built with `wait_for_breaker(false)`: the answer is
    /// then the fallback's, at once, and nothing reaches the dependency.
    #[tokio::test(start_paused = true)]
    async fn a_fallback_answers_at_once_while_the_breaker_is_open_when_retry_does_not_wait() {
        use palisade::breaker::BreakerLayer;
        use palisade::fallback::{Answer, Constant, FallbackLayer};
        use palisade::retry::RetryLayer;

        let (svc, calls) = flaky(usize::MAX, "503 service unavailable");
        let breaker = BreakerLayer::new("llm");
        breaker.handle().trip();
        let retry = RetryLayer::builder()
            .wait_for_breaker(false)
            .build()
            .unwrap();
        let agent = ServiceBuilder::new()
            .layer(FallbackLayer::new(Constant("cached answer")))
            .palisade(
                preset::recommended("llm")
                    .breaker_layer(breaker)
                    .retry(retry)
                    .build()
                    .unwrap(),
            )
            .service(svc);
        let start = Instant::now();
        let answer = agent.oneshot(()).await.unwrap();
        assert!(matches!(answer, Answer::Fallback { .. }), "{answer:?}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = preset::recommended("llm")
            .attempt_timeout(Duration::from_secs(1), Some((0.5, Duration::from_secs(2))))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "factor");
    }
}

/// The preset takes any classifier and any retry budget: here a classifier that reads a
/// status in an `Ok` response, and an unlimited budget. A 503 that arrives as `Ok` is retried.
#[tokio::test(start_paused = true)]
async fn the_preset_takes_any_classifier_and_any_budget() {
    use palisade::ServiceBuilderExt;
    use palisade::classify::{BoxError, Class, classify_fn};
    use palisade::retry::RetryLayer;
    use palisade::retry::budget::Unlimited;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    use tower::service_fn;

    let calls = Arc::new(AtomicU16::new(0));
    let counter = calls.clone();
    // Answers 503 twice, then 200, always as `Ok`.
    let api = service_fn(move |_: ()| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<u16, BoxError>(if n < 2 { 503 } else { 200 }) }
    });
    let by_status = classify_fn(|r: &Result<u16, BoxError>| match r {
        Ok(s) if *s >= 500 => Some(Class::new(Category::ServerError)),
        Ok(_) => None,
        Err(_) => Some(Class::new(Category::Unknown)),
    });
    let preset = palisade::preset::recommended("api")
        .classifier(by_status)
        .retry(
            RetryLayer::builder()
                .budget(Unlimited)
                .backoff(palisade::retry::Backoff::constant(
                    std::time::Duration::from_millis(10),
                ))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().palisade(preset).service(api);
    assert_eq!(svc.oneshot(()).await.unwrap(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// The preset's response future over a service that answers at once (`Ready<Result<u64,
/// BoxError>>`, 24 bytes, as the `stack` bench measures it) fits in 256 bytes: its deadline and
/// per-attempt timeout share one timer. (tower's own timeout, retry, load-shed and
/// concurrency-limit stack is 328 bytes over the same service.)
#[test]
fn the_preset_future_fits_in_256_bytes() {
    use palisade::classify::BoxError;
    use tower::{Layer, Service, service_fn};
    let bare = service_fn(|x: u64| std::future::ready(Ok::<u64, BoxError>(x)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut svc = palisade::preset::recommended("llm")
        .build()
        .unwrap()
        .layer(bare);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let size = std::mem::size_of_val(&svc.call(1));
    assert!(size <= 256, "the preset's response future is {size} bytes");
}
