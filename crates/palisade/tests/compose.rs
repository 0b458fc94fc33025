//! What happens between palisade's layers: a deadline that ends in a timeout's tick, a user's
//! layer between the retry and the timeout, a caller that goes away mid-probe, a retry that is
//! decided but never sent.
#![cfg(all(feature = "retry", feature = "breaker", feature = "timeout"))]

use std::time::Duration;

use palisade::breaker::BreakerLayer;
use palisade::classify::BoxError;
use palisade::timeout::error::DeadlineExceeded;
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn hang() -> impl tower::Service<u8, Response = u8, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|_: u8| async {
        std::future::pending::<()>().await;
        Ok::<u8, BoxError>(0)
    })
}

/// A caller's deadline that runs out while an attempt hangs is the caller's time spent, not a
/// failure of the dependency: the deadline drops the breaker's call, a cancellation, which the
/// default `CancelPolicy::Ignore` does not count. The same must hold when the per-attempt
/// timeout below the breaker happens to fire in the same millisecond tick as the deadline
/// (deadline 100.2 ms, attempt timeout 100.6 ms): the timeout then fails the call "as the
/// deadline would have" with `DeadlineExceeded`, but the breaker between them reads that error
/// as a `Timeout` failure of the dependency.
#[tokio::test(start_paused = true)]
async fn a_deadline_firing_in_the_timeouts_tick_is_not_a_breaker_failure() {
    for (deadline_us, attempt_us) in [(99_000, 100_600), (100_200, 100_600)] {
        let breaker = BreakerLayer::new("dep");
        let handle = breaker.handle();
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_micros(deadline_us)))
            .layer(breaker)
            .layer(TimeoutLayer::new(Duration::from_micros(attempt_us)))
            .service(hang());
        let err = svc.oneshot(1).await.unwrap_err();
        let case = format!("deadline {deadline_us} us, attempt timeout {attempt_us} us: {err}");
        assert!(err.is::<DeadlineExceeded>(), "{case}");
        assert_eq!(handle.metrics().failures, 0, "{case}");
    }
}

/// A layer of the user's own between the retry and an escalating timeout, written the usual
/// way (its future readies and calls the service below: `inner.ready().await?.call(req)`),
/// with no task boundary. The facade docs say the context "follows the poll on the current
/// task", and the attempt does (a router below such a layer still sees it), but the count of
/// timed-out attempts is published only around the retry's own `call`: the timeout's `call`,
/// made during a poll, reads 0 and never escalates, and since it ran inside an attempt scope
/// it does not warn either.
#[tokio::test(start_paused = true)]
async fn escalation_survives_a_user_layer_that_calls_from_its_future() {
    use palisade::context::attempt;
    use palisade::retry::budget::Unlimited;
    use palisade::retry::{Backoff, Jitter, RetryLayer};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let below = ServiceBuilder::new()
        .layer(
            TimeoutLayer::builder(Duration::from_millis(100))
                .escalate(2.0, Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .service(service_fn(move |_: u8| {
            // What the service below sees of the attempt when it is called.
            log.lock()
                .unwrap()
                .push((start.elapsed(), attempt::current().map(|a| a.number)));
            async {
                std::future::pending::<()>().await;
                Ok::<u8, BoxError>(0)
            }
        }));
    // The user's layer: calls the service below from its future.
    let deferring = service_fn(move |req: u8| {
        let below = below.clone();
        async move { below.oneshot(req).await }
    });
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(10)))
        .layer(
            RetryLayer::builder()
                .budget(Unlimited)
                .max_attempts(3)
                .backoff(Backoff::constant(Duration::from_millis(1)))
                .jitter(Jitter::None)
                .seed(1)
                .build()
                .unwrap(),
        )
        .service(deferring);
    let err = svc.oneshot(1).await.unwrap_err();
    let ms = Duration::from_millis;
    // The attempt number does reach the service below the user's layer...
    let numbers: Vec<_> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    // ... and so should the escalation: 100 ms, then 200 ms, then 400 ms.
    let starts: Vec<_> = seen.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(starts, [ms(0), ms(101), ms(302)], "{err}");
    assert_eq!(err.to_string(), "attempt timed out after 400 ms");
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx)
}

/// A request of the preset waiting for the open breaker's probe, then sending it, is dropped by
/// its caller while the probe hangs: the probe slot comes back (the next request is admitted as
/// the probe at once), and nothing is counted against the dependency.
#[tokio::test(start_paused = true)]
async fn a_caller_dropping_the_preset_mid_probe_gives_the_slot_back() {
    use palisade::ServiceBuilderExt;
    use palisade::breaker::State;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (preset, handle) = palisade::preset::recommended("dep")
        .build_with_breaker()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let svc = ServiceBuilder::new()
        .palisade(preset)
        .service(service_fn(move |_: u8| {
            count.fetch_add(1, Ordering::SeqCst);
            async {
                std::future::pending::<()>().await;
                Ok::<u8, BoxError>(0)
            }
        }));
    handle.trip();
    let mut a = Box::pin(svc.clone().oneshot(1));
    assert!(poll_once(&mut a).is_pending(), "waiting for the probe");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(poll_once(&mut a).is_pending(), "probing");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(a);
    let m = handle.metrics();
    assert_eq!((m.state, m.failures), (State::HalfOpen, 0));
    let mut b = Box::pin(svc.clone().oneshot(2));
    assert!(poll_once(&mut b).is_pending());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "admitted as the probe at once"
    );
}

/// `palisade.retry.retries` counts "retries sent" (`names::RETRIES`), and
/// `palisade.retry.gave_up` "a failure was returned without a retry". A retry decided after a
/// failure is counted as retried at once; when it is then not sent (here: the task is polled
/// again only after the deadline, so the retry looks at the deadline before sending and gives
/// up), the same failure is counted as given up too, and the retries counter says a retry went
/// out that never did.
#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn a_retry_that_is_never_sent_is_not_counted_as_sent() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use palisade::retry::budget::Unlimited;
    use palisade::retry::{Backoff, Jitter, RetryLayer};
    use std::sync::{Arc, Mutex};
    use tower::{Layer, Service};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let preset = palisade::preset::recommended("llm")
        .deadline(Duration::from_millis(1_000))
        .retry(
            RetryLayer::builder()
                .name("llm")
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
        *seen.lock().unwrap() += 1;
        async { Err::<u8, BoxError>("503 service unavailable".into()) }
    }));
    svc.ready().await.unwrap();
    let mut fut = Box::pin(svc.call(1));
    assert!(poll_once(&mut fut).is_pending(), "backing off 500 ms");
    tokio::time::advance(Duration::from_millis(1_500)).await;
    let std::task::Poll::Ready(Err(err)) = poll_once(&mut fut) else {
        panic!("the deadline has passed");
    };
    assert_eq!(err.to_string(), "503 service unavailable");
    assert_eq!(*calls.lock().unwrap(), 1, "no retry was sent");

    // One snapshot: the debugging recorder hands counters over as it reads them.
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("{other:?}"),
            })
            .sum()
    };
    let (retries, gave_up) = (
        counter("palisade.retry.retries"),
        counter("palisade.retry.gave_up"),
    );
    assert_eq!(
        (retries, gave_up),
        (0, 1),
        "one failure, no retry sent: retries {retries}, gave_up {gave_up}"
    );
}
