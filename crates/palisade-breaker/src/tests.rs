//! The layer as a service, on the paused clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{BoxError, Category, class_of};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::*;

/// The classic configuration without jitter, changed by `f`.
pub(crate) fn classic(f: impl FnOnce(&mut BreakerConfig)) -> BreakerConfig {
    let mut c = BreakerConfig::classic();
    c.jitter_ratio = 0.0;
    f(&mut c);
    c
}

fn layer(f: impl FnOnce(&mut BreakerConfig)) -> BreakerLayer {
    BreakerLayer::builder("t")
        .config(classic(f))
        .build()
        .unwrap()
}

fn failing(
    msg: &'static str,
    calls: Arc<AtomicUsize>,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: ()| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err::<(), BoxError>(msg.into()) }
    })
}

#[tokio::test(start_paused = true)]
async fn opens_fails_fast_then_probes_and_closes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, u2) = (calls.clone(), up.clone());
    let l = layer(|_| {});
    let handle = l.handle();
    let mut svc = l.layer(service_fn(move |_: ()| {
        c2.fetch_add(1, Ordering::SeqCst);
        let up = u2.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(())
            } else {
                Err::<(), BoxError>("503".into())
            }
        }
    }));
    for _ in 0..5 {
        assert!(svc.ready().await.unwrap().call(()).await.is_err());
    }
    assert_eq!(handle.state(), State::Open);
    for _ in 0..10 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<CircuitOpen>());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "rejected calls never reach the service"
    );
    let m = handle.metrics();
    assert_eq!((m.failures, m.rejections), (5, 10));
    assert_eq!(m.retry_after, Some(Duration::from_secs(30)));
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(())
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    up.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn only_failures_that_count_against_health_trip_it() {
    for msg in [
        "404 not found",
        "400 invalid request",
        "429 rate limit",
        "401 unauthorized",
    ] {
        let l = layer(|_| {});
        let mut svc = l.layer(failing(msg, Arc::default()));
        for _ in 0..50 {
            let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
            assert!(!err.is::<CircuitOpen>(), "{msg}");
        }
        assert_eq!(l.handle().state(), State::Closed, "{msg}");
    }
    let l = layer(|_| {});
    let mut svc = l.layer(failing("connection reset", Arc::default()));
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    assert_eq!(l.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_closed_breaker_is_as_ready_as_its_service_and_passes_its_errors_on() {
    let l = layer(|c| c.consecutive_failures = Some(2));
    let (mock, mut h) = tower_test::mock::pair::<(), ()>();
    let mut svc = l.layer(mock);
    let mut cx = Context::from_waker(Waker::noop());
    h.allow(0);
    assert!(svc.poll_ready(&mut cx).is_pending());
    h.allow(1);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    // A failing poll_ready is returned, and counted like a failed call.
    h.send_error("503 service unavailable");
    let mut svc = l.layer(svc.into_inner());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "503 service unavailable"),
        other => panic!("{other:?}"),
    }
    assert_eq!(l.handle().metrics().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn the_handle_controls_the_breaker_by_hand() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|_| {});
    let h = l.handle();
    assert_eq!(h.name(), "t");
    let mut svc = l.layer(failing("503", calls.clone()));
    let mut call = async || svc.ready().await.unwrap().call(()).await.unwrap_err();
    // trip: open for one open period, calls refused without reaching the service.
    h.trip();
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.metrics().retry_after, Some(Duration::from_secs(30)));
    assert!(call().await.is::<CircuitOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // close: closed at once; the calls reach the service again.
    h.close();
    assert_eq!(h.state(), State::Closed);
    for _ in 0..4 {
        assert!(!call().await.is::<CircuitOpen>());
    }
    assert_eq!(h.metrics().consecutive_failures, 4);
    // bypass: everything goes through and is counted, however many failures.
    h.bypass();
    assert_eq!(h.state(), State::Bypassed);
    for _ in 0..10 {
        assert!(!call().await.is::<CircuitOpen>());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 14);
    let m = h.metrics();
    assert_eq!(
        (m.state, m.failures, m.rejections),
        (State::Bypassed, 14, 1)
    );
    // close from bypassed clears the streak: five new failures are needed to open it.
    h.close();
    assert_eq!(h.metrics().consecutive_failures, 0);
    for _ in 0..4 {
        assert!(!call().await.is::<CircuitOpen>());
    }
    assert_eq!(h.state(), State::Closed);
    // isolate, then reset: a new breaker, every count cleared.
    h.isolate();
    assert!(call().await.is::<CircuitOpen>());
    h.reset();
    let m = h.metrics();
    assert_eq!(m.state, State::Closed);
    assert_eq!(
        (
            m.successes,
            m.failures,
            m.rejections,
            m.consecutive_failures
        ),
        (0, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_report_the_window_and_the_time() {
    let l = BreakerLayer::builder("m")
        .throttle(None)
        .window(Window::Count(10))
        .failure_rate(Rate::new(0.9, 10))
        .slow_call_duration(Duration::from_millis(100))
        .jitter_ratio(0.0)
        .build()
        .unwrap();
    let h = l.handle();
    let m = h.metrics();
    assert_eq!(
        (m.window_calls, m.failure_ratio, m.slow_call_ratio),
        (Some(0), None, None)
    );
    let mut svc = l.layer(service_fn(|fail: bool| async move {
        if fail {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Err::<(), BoxError>("503".into())
        } else {
            Ok(())
        }
    }));
    for fail in [true, false, false, false] {
        let _ = svc.ready().await.unwrap().call(fail).await;
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    let m = h.metrics();
    assert_eq!(m.window_calls, Some(4));
    assert_eq!(m.failure_ratio, Some(0.25));
    assert_eq!(m.slow_call_ratio, Some(0.25));
    assert_eq!((m.successes, m.failures), (3, 1));
    // Closed since the start, 400 ms ago; no retry_after while closed.
    assert_eq!(m.time_in_state, Duration::from_millis(400));
    assert_eq!((m.retry_after, m.reopens), (None, 0));
    h.trip();
    tokio::time::advance(Duration::from_millis(100)).await;
    let m = h.metrics();
    assert_eq!(m.time_in_state, Duration::from_millis(100));
    assert_eq!(m.retry_after, Some(Duration::from_millis(400)));
    // Isolated: no probe time to report.
    h.isolate();
    assert_eq!(h.metrics().retry_after, None);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_ready_even_when_the_service_is_not() {
    let l = layer(|_| {});
    l.handle().isolate();
    let (mock, mut h) = tower_test::mock::pair::<(), ()>();
    h.allow(0);
    let mut svc = l.layer(mock);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().state,
        State::Isolated
    );
    // Isolated by an operator: retrying cannot help until they act.
    assert!(!class_of(&err).retryable);
    assert_eq!(class_of(&err).category, Category::Rejected);
    assert!(!class_of(&err).counts_against_health());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refusal_is_retryable_after_its_hint() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|_| {});
    let handle = l.handle();
    let mut svc = l.layer(failing("503", calls.clone()));
    handle.trip();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let class = class_of(&err);
    assert_eq!(class.category, Category::Rejected);
    assert!(class.retryable);
    assert_eq!(class.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A future that never completes.
fn hang() -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>())
}

fn half_open(l: &BreakerLayer) {
    // Five failures through a failing service sharing the breaker, then wait out the period.
    let h = l.handle();
    let mut f = l.layer(failing("503", Arc::default()));
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    for _ in 0..5 {
        assert!(f.poll_ready(&mut cx).is_ready());
        let mut fut = std::pin::pin!(f.call(()));
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn dropped_probes_and_unused_reservations_give_their_slot_back() {
    let l = layer(|_| {});
    half_open(&l);
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut svc = l.layer(hang());
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    // Three probes in flight; a fourth is refused.
    let mut probes: Vec<_> = (0..3)
        .map(|_| {
            assert!(svc.poll_ready(&mut cx).is_ready());
            Box::pin(svc.call(()))
        })
        .collect();
    for p in &mut probes {
        assert!(p.as_mut().poll(&mut cx).is_pending());
    }
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(())
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
    // Dropping one (cancellation, ignored by default) frees a slot.
    probes.pop();
    assert_eq!(l.handle().state(), State::HalfOpen);
    let mut other = l.layer(hang());
    assert!(other.poll_ready(&mut cx).is_ready());
    // That reservation is dropped unused with the service: its slot comes back too.
    drop(other);
    let mut third = l.layer(hang());
    assert!(third.poll_ready(&mut cx).is_ready());
    let mut p = Box::pin(third.call(()));
    assert!(p.as_mut().poll(&mut cx).is_pending());
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(())
            .await
            .unwrap_err()
            .is::<CircuitOpen>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_slot_reserved_but_never_called_is_no_cancellation() {
    // Dropped calls count as failures; a probe reserved by poll_ready and never called is not
    // a call: dropping it gives the slot back and counts nothing.
    let l = layer(|c| {
        c.cancel = CancelPolicy::Failure;
        c.half_open_probes = 1;
    });
    half_open(&l);
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut cx = Context::from_waker(Waker::noop());
    let mut reserved = l.layer(hang());
    assert!(reserved.poll_ready(&mut cx).is_ready());
    assert_eq!(l.handle().state(), State::HalfOpen);
    drop(reserved);
    let m = l.handle().metrics();
    assert_eq!((m.state, m.failures), (State::HalfOpen, 5));
    // The slot is free again: a probe goes out; dropped once started, it is a failure.
    let mut svc = l.layer(hang());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut probe = Box::pin(svc.call(()));
    assert!(probe.as_mut().poll(&mut cx).is_pending());
    drop(probe);
    let m = l.handle().metrics();
    assert_eq!((m.state, m.failures, m.reopens), (State::Open, 6, 1));
}

#[tokio::test(start_paused = true)]
async fn failure_after_counts_a_call_dropped_at_exactly_its_duration() {
    let l = layer(|c| {
        c.cancel = CancelPolicy::FailureAfter(Duration::from_secs(2));
        c.consecutive_failures = Some(1);
    });
    let svc = l.layer(hang());
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut call = Box::pin(svc.clone().oneshot(()));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(Duration::from_millis(1_999)).await;
    drop(call);
    assert_eq!(l.handle().metrics().failures, 0);
    let mut call = Box::pin(svc.clone().oneshot(()));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(Duration::from_secs(2)).await;
    drop(call);
    assert_eq!(l.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_under_an_outer_timeout_is_seen_with_failure_after() {
    let l = layer(|c| c.cancel = CancelPolicy::FailureAfter(Duration::from_secs(2)));
    let svc = l.layer(hang());
    // The caller gives up after 1 s five times: not the backend's fault.
    for _ in 0..5 {
        let call = svc.clone().oneshot(());
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .is_err()
        );
    }
    assert_eq!(l.handle().state(), State::Closed);
    // After 3 s five times: a hung backend.
    for _ in 0..5 {
        let call = svc.clone().oneshot(());
        assert!(
            tokio::time::timeout(Duration::from_secs(3), call)
                .await
                .is_err()
        );
    }
    assert_eq!(l.handle().state(), State::Open);
}

/// A call that fails with the caller's deadline from a layer below (a per-attempt timeout
/// that saw the deadline end first, in its own timer tick) is the cancellation the deadline's
/// drop from above would have been: judged by the cancel policy, not counted as the
/// dependency's `Timeout`; its error reaches the caller unchanged.
#[tokio::test(start_paused = true)]
async fn a_deadline_exceeded_from_below_is_judged_as_a_cancellation() {
    use palisade_core::failure::DeadlineExceeded;
    for (cancel, failures) in [
        (CancelPolicy::Ignore, 0),
        (CancelPolicy::FailureAfter(Duration::from_secs(1)), 0),
        (CancelPolicy::FailureAfter(Duration::from_millis(100)), 1),
        (CancelPolicy::Failure, 1),
    ] {
        let l = layer(|c| c.cancel = cancel);
        let svc = l.layer(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err::<(), BoxError>(Box::new(DeadlineExceeded::new()))
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
        assert_eq!(l.handle().metrics().failures, failures, "{cancel:?}");
    }
    // Any other `Timeout` is the dependency's.
    let l = layer(|_| {});
    let svc = l.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>("request timed out".into())
    }));
    svc.oneshot(()).await.unwrap_err();
    assert_eq!(l.handle().metrics().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_it_by_rate() {
    let l = layer(|c| {
        c.consecutive_failures = None;
        c.window = Window::Count(10);
        c.slow_call_duration = Some(Duration::from_secs(1));
        c.slow_call_rate = Some(Rate::new(0.5, 10));
    });
    let mut svc = l.layer(service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, BoxError>(())
    }));
    for _ in 0..9 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(l.handle().state(), State::Closed);
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(l.handle().state(), State::Open);
    assert_eq!(l.handle().metrics().slow_call_ratio, Some(1.0));
}

#[test]
fn bad_configuration_fails_at_build_time_naming_the_field() {
    let err = |f: fn(&mut BreakerConfig)| {
        let mut c = BreakerConfig::default();
        f(&mut c);
        BreakerLayer::builder("x")
            .config(c)
            .build()
            .unwrap_err()
            .field()
            .to_owned()
    };
    assert_eq!(
        err(|c| c.consecutive_failures = Some(0)),
        "consecutive_failures"
    );
    assert_eq!(
        err(|c| c.throttle = Some(Throttle {
            k: 0.5,
            window: 100
        })),
        "throttle.k"
    );
    assert_eq!(
        err(|c| c.throttle = Some(Throttle {
            k: f64::NAN,
            window: 100
        })),
        "throttle.k"
    );
    assert_eq!(
        err(|c| c.throttle = Some(Throttle { k: 2.0, window: 0 })),
        "throttle.window"
    );
    assert_eq!(err(|c| c.window = Window::Count(0)), "window");
    assert_eq!(
        err(|c| c.failure_rate = Some(Rate::new(1.5, 1))),
        "failure_rate.ratio"
    );
    assert_eq!(
        err(|c| c.failure_rate = Some(Rate::new(0.0, 1))),
        "failure_rate.ratio"
    );
    assert_eq!(
        err(|c| c.failure_rate = Some(Rate::new(0.5, 101))),
        "failure_rate.min_calls"
    );
    assert_eq!(err(|c| c.half_open_probes = 0), "half_open_probes");
    assert_eq!(err(|c| c.success_threshold = 0), "success_threshold");
    assert_eq!(err(|c| c.open_duration = Duration::ZERO), "open_duration");
    assert_eq!(err(|c| c.probe_timeout = Duration::ZERO), "probe_timeout");
    assert_eq!(
        err(|c| c.probe_timeout = Duration::from_micros(500)),
        "probe_timeout"
    );
    assert_eq!(
        err(|c| c.slow_call_rate = Some(Rate::new(0.5, 1))),
        "slow_call_duration"
    );
    assert_eq!(
        err(|c| c.window = Window::Time {
            span: Duration::from_secs(1),
            buckets: 0
        }),
        "window.buckets"
    );
}

#[test]
#[should_panic(expected = "`Breaker::call` without a successful `poll_ready`")]
fn a_call_without_poll_ready_panics() {
    let mut svc = BreakerLayer::new("t").layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    drop(svc.call(()));
}

#[test]
#[should_panic(expected = "`Breaker::call` without a successful `poll_ready`")]
fn a_second_call_on_one_poll_ready_panics() {
    let mut svc = BreakerLayer::new("t").layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    drop(svc.call(()));
    drop(svc.call(()));
}

#[test]
#[should_panic(expected = "`Breaker::call` without a successful `poll_ready`")]
fn a_call_after_poll_ready_failed_panics() {
    let (mock, mut h) = tower_test::mock::pair::<(), ()>();
    let mut svc = BreakerLayer::new("t").layer(mock);
    let mut cx = Context::from_waker(Waker::noop());
    h.send_error("503 the service failed");
    assert!(matches!(
        svc.poll_ready(&mut cx),
        std::task::Poll::Ready(Err(_))
    ));
    drop(svc.call(()));
}

/// A service that is never ready and does not check its own contract: a `call` reaches it
/// (counted) whether or not it was ready, as a hand-written client's would.
#[cfg(debug_assertions)]
#[derive(Clone)]
struct NeverReady(Arc<AtomicUsize>);

#[cfg(debug_assertions)]
impl Service<()> for NeverReady {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

/// `poll_ready` returned `Pending` (the service is not ready): the admission it reserved is
/// no permission to call, and `call` panics as documented (with debug assertions, as tests
/// run) instead of calling a service that is not ready. A probe slot it holds comes back when
/// the service is dropped.
#[cfg(debug_assertions)]
#[tokio::test(start_paused = true)]
async fn a_call_after_poll_ready_returned_pending_panics_without_reaching_the_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|c| {
        c.half_open_probes = 1;
        c.success_threshold = 1;
    });
    let h = l.handle();
    let mut cx = Context::from_waker(Waker::noop());
    for half_open in [false, true] {
        if half_open {
            h.trip();
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        let mut svc = l.layer(NeverReady(calls.clone()));
        assert!(svc.poll_ready(&mut cx).is_pending());
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(svc.call(()))));
        let panic = called.expect_err("a call after `Pending` panics");
        let msg = panic
            .downcast_ref::<&str>()
            .copied()
            .or(panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or_default();
        assert!(
            msg.contains("`Breaker::call` without a successful `poll_ready`"),
            "{msg}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the service was not ready");
        drop(svc);
    }
    // The probe slot the half-open reservation held is back: a ready service probes and closes.
    assert_eq!(h.state(), State::HalfOpen);
    let mut ok = l.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    ok.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

/// Polls `fut` to completion (it answers at once), then once more.
fn poll_twice<F: Future>(fut: F) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = std::pin::pin!(fut);
    assert!(fut.as_mut().poll(&mut cx).is_ready());
    let _ = fut.as_mut().poll(&mut cx);
}

#[test]
#[should_panic(expected = "`Breaker` response future polled after completion")]
fn an_admitted_call_polled_after_completion_panics() {
    let mut svc = BreakerLayer::new("t").layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    poll_twice(svc.call(()));
}

#[test]
#[should_panic(expected = "`Breaker` response future polled after completion")]
fn a_refused_call_polled_after_completion_panics() {
    let l = BreakerLayer::new("t");
    l.handle().isolate();
    let mut svc = l.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    poll_twice(svc.call(()));
}

/// A service that answers `Ok` after `delay_ms` (read at each call), or never while `hang`.
fn answering(
    hang: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: ()| {
        let hang = hang.load(Ordering::SeqCst);
        let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_does_not_wedge_the_breaker_half_open() {
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // The defaults: one probe at a time, a probe timeout of 60 s; no timeout layer below.
    let l = BreakerLayer::new("llm");
    let handle = l.handle();
    let svc = l.layer(answering(hang.clone(), Arc::default()));
    handle.trip();
    tokio::time::advance(Duration::from_secs(1)).await;
    // The probe goes out at 1 s and never answers.
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut probe = Box::pin(svc.clone().oneshot(()));
    assert!(probe.as_mut().poll(&mut cx).is_pending());
    assert_eq!(handle.state(), State::HalfOpen);
    let refused = |err: BoxError| err.downcast_ref::<CircuitOpen>().unwrap().clone();
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("circuit 'llm' open (half-open, its probes busy), retry in "),
        "{err}"
    );
    assert_eq!(&*refused(err).breaker, "llm");
    // Just before the probe has held its slot for 60 s: still half-open, still refusing.
    tokio::time::advance(Duration::from_millis(59_999)).await;
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(refused(err).state, State::HalfOpen);
    // At 60 s the hung probe counts as a failed one: the breaker re-opens...
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(refused(err).state, State::Open);
    assert_eq!(handle.metrics().reopens, 1);
    // ...and probes again once that period is over: the dependency answers, it closes.
    hang.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(750)).await;
    svc.clone().oneshot(()).await.unwrap();
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    // The hung probe, abandoned at last, is out of date: it changes nothing.
    drop(probe);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_answers_after_the_probe_timeout_counts_as_failed() {
    let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(10_000));
    let l = layer(|c| {
        c.probe_timeout = Duration::from_secs(10);
        c.success_threshold = 1;
    });
    let handle = l.handle();
    let svc = l.layer(answering(Arc::default(), delay_ms.clone()));
    handle.trip();
    tokio::time::advance(Duration::from_secs(30)).await;
    // The probe succeeds, but after 10 s: the caller gets its answer, the breaker counts a
    // failed probe and re-opens for twice as long.
    svc.clone().oneshot(()).await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.state, m.reopens, m.failures), (State::Open, 1, 1));
    assert_eq!(m.retry_after, Some(Duration::from_secs(60)));
    // Within the timeout, a success closes it.
    delay_ms.store(9_999, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_period_as_long_as_a_duration_gets_fails_calls_fast_without_panicking() {
    // "Open until an operator closes it": the failure that trips it returns its error (it
    // used to panic converting the period), and the calls after it are refused.
    let l = layer(|c| {
        c.consecutive_failures = Some(1);
        c.open_duration = Duration::MAX;
        c.max_open_duration = Duration::MAX;
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = l.layer(failing("503", calls.clone()));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "503");
    tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.state, State::Open);
    assert!(open.retry_after.unwrap() > Duration::from_secs(1 << 40));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The operator closes it.
    l.handle().close();
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(())
            .await
            .unwrap_err()
            .to_string(),
        "503"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_does_not_close_a_breaker_that_trips_on_slow_calls() {
    // A breaker that trips on latency alone, in front of a dependency that is still slow.
    let l = layer(|c| {
        c.consecutive_failures = None;
        c.window = Window::Count(4);
        c.slow_call_duration = Some(Duration::from_secs(1));
        c.slow_call_rate = Some(Rate::new(1.0, 4));
        c.half_open_probes = 1;
        c.success_threshold = 1;
    });
    let handle = l.handle();
    let delay = Arc::new(AtomicUsize::new(2_000));
    let d = delay.clone();
    let mut svc = l.layer(service_fn(move |_: ()| {
        let ms = d.load(Ordering::SeqCst) as u64;
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }
    }));
    for _ in 0..4 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(handle.state(), State::Open);
    // The open period over, a probe: still slow. It answers, but it is what the rule trips
    // on, so the breaker opens again (for longer) instead of letting everything through.
    tokio::time::advance(Duration::from_secs(30)).await;
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.metrics().reopens, 1);
    // Fast again: the next probe closes it.
    delay.store(10, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

// ---- A decision reserved by `poll_ready` and a breaker that moves before `call` ----

/// A service that answers `Ok` at once, counting its calls.
fn answering_ok(
    calls: Arc<AtomicUsize>,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: ()| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(()) }
    })
}

fn open_state(err: &BoxError) -> (State, Option<Duration>) {
    let open = err
        .downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("not a refusal: {err}"));
    (open.state, open.retry_after)
}

#[tokio::test(start_paused = true)]
async fn a_refusal_reserved_while_isolated_no_longer_stands_once_closed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|_| {});
    let h = l.handle();
    let mut svc = l.layer(answering_ok(calls.clone()));
    // Ready while isolated (a refusal reserved), closed by the operator, then called.
    h.isolate();
    svc.ready().await.unwrap();
    h.close();
    svc.call(()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The same, called ten minutes later, after polling ready again.
    h.isolate();
    svc.ready().await.unwrap();
    h.close();
    tokio::time::advance(Duration::from_secs(600)).await;
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Nothing was rejected: a refusal counts when a call is failed with it.
    let m = h.metrics();
    assert_eq!((m.state, m.successes, m.rejections), (State::Closed, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_reserved_while_open_no_longer_stands_once_a_probe_closed_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|c| {
        c.half_open_probes = 1;
        c.success_threshold = 1;
    });
    let h = l.handle();
    let mut waiting = l.layer(answering_ok(calls.clone()));
    h.trip();
    waiting.ready().await.unwrap();
    // The period over, another clone's probe closes the breaker.
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut other = waiting.clone();
    other.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    tokio::time::advance(Duration::from_secs(60)).await;
    waiting.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let m = h.metrics();
    assert_eq!((m.state, m.successes, m.rejections), (State::Closed, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_reserved_while_open_stands_until_the_open_period_ends() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|c| c.half_open_probes = 1);
    let h = l.handle();
    let mut svc = l.layer(answering_ok(calls.clone()));
    h.trip();
    svc.ready().await.unwrap();
    // Nothing moved: refused, saying how long is left now, and counted once.
    tokio::time::advance(Duration::from_secs(10)).await;
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(
        open_state(&err),
        (State::Open, Some(Duration::from_secs(20)))
    );
    assert_eq!(h.metrics().rejections, 1);
    // Reserved 1 ms before the period ends, called 1 ms after, with no call meanwhile (the
    // breaker has not moved: it reads HalfOpen, what the next call meets, but is still in the
    // state it entered when tripped): the call is the probe.
    tokio::time::advance(Duration::from_millis(19_999)).await;
    svc.ready().await.unwrap();
    tokio::time::advance(Duration::from_millis(2)).await;
    let m = h.metrics();
    assert_eq!(
        (m.state, m.retry_after, m.time_in_state),
        (State::HalfOpen, None, Duration::from_millis(30_001))
    );
    svc.call(()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.metrics().rejections, 1);
}

/// Every transition a breaker announces, in order.
#[derive(Default)]
struct TransitionLog(std::sync::Mutex<Vec<(State, State)>>);

impl TransitionLog {
    fn take(&self) -> Vec<(State, State)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Listener for Arc<TransitionLog> {
    fn on_event(&self, _: &str, event: Event) {
        if let Event::Transition { from, to } = event {
            self.0.lock().unwrap().push((from, to));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_left_alone_reads_half_open_once_its_open_period_ends_and_then_probes() {
    use palisade_core::{ClassifyLayer, DefaultClassifier};
    use std::sync::atomic::AtomicBool;
    use tokio::time::sleep;

    let log = Arc::new(TransitionLog::default());
    // The defaults (one probe at a time, two successes close), behind a classifier.
    let l = BreakerLayer::builder("p")
        .listener(log.clone())
        .build()
        .unwrap();
    let h = l.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(false));
    let (c, u) = (calls.clone(), up.clone());
    let mut svc = l.layer(
        ClassifyLayer::new(DefaultClassifier::default()).layer(service_fn(move |_: ()| {
            c.fetch_add(1, Ordering::SeqCst);
            let up = u.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err::<(), BoxError>("503 service unavailable".into())
                }
            }
        })),
    );
    while h.state() != State::Open {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    let reached = calls.load(Ordering::SeqCst);
    assert_eq!(log.take(), [(State::Closed, State::Open)]);

    // During the open period: Open, with the time left.
    let m = h.metrics();
    assert_eq!(m.state, State::Open);
    let period = m.retry_after.unwrap();
    assert!(
        period > Duration::ZERO && period <= Duration::from_millis(550),
        "{period:?}"
    );
    sleep(period - Duration::from_millis(1)).await;
    let m = h.metrics();
    assert_eq!(
        (h.state(), m.state, m.retry_after),
        (State::Open, State::Open, Some(Duration::from_millis(1)))
    );

    // Over, and no call for ten minutes: HalfOpen, with nothing left to wait for, and the
    // time in state still counted from the opening. Reading moved nothing and announced
    // nothing.
    sleep(Duration::from_secs(600)).await;
    let m = h.metrics();
    assert_eq!(
        (h.state(), m.state, m.retry_after),
        (State::HalfOpen, State::HalfOpen, None)
    );
    assert_eq!(
        m.time_in_state,
        period - Duration::from_millis(1) + Duration::from_secs(600)
    );
    assert_eq!(log.take(), []);
    assert_eq!(calls.load(Ordering::SeqCst), reached);

    // The next call is a probe: it reaches the dependency, fails, and re-opens the breaker for
    // a longer period, read as Open with its time left.
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "503 service unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), reached + 1);
    assert_eq!(
        log.take(),
        [
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open)
        ]
    );
    let m = h.metrics();
    assert_eq!((m.state, m.reopens), (State::Open, 1));
    assert!(m.retry_after.unwrap() > period, "{m:?}");

    // Left alone again, it reads HalfOpen; the next call takes the one probe slot (another is
    // refused, half-open), and two successful probes close it.
    sleep(Duration::from_secs(600)).await;
    assert_eq!(h.state(), State::HalfOpen);
    up.store(true, Ordering::SeqCst);
    let mut probe = h.try_acquire().unwrap();
    assert_eq!(h.try_acquire().unwrap_err().state, State::HalfOpen);
    probe.start();
    probe.success();
    assert_eq!(h.state(), State::HalfOpen);
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    assert_eq!(
        log.take(),
        [
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    let m = h.metrics();
    assert_eq!((m.retry_after, m.reopens), (None, 0));
}

#[tokio::test(start_paused = true)]
async fn an_admission_reserved_while_closed_is_refused_once_isolated_or_tripped() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = layer(|_| {});
    let h = l.handle();
    let mut svc = l.layer(answering_ok(calls.clone()));
    svc.ready().await.unwrap();
    h.isolate();
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(open_state(&err), (State::Isolated, None));
    // Polled ready again in between changes nothing: the call is decided as it stands.
    h.close();
    svc.ready().await.unwrap();
    h.trip();
    svc.ready().await.unwrap();
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(
        open_state(&err),
        (State::Open, Some(Duration::from_secs(30)))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.metrics().rejections, 2);
    // Closed again and left alone: admitted as ever.
    h.close();
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_waiting_for_the_service_is_let_go_once_the_breaker_is_isolated() {
    let l = layer(|_| {});
    let h = l.handle();
    let mut cx = Context::from_waker(Waker::noop());
    let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
    handle.allow(0);
    let mut svc = l.layer(mock);
    // Admitted while closed, waiting for the service.
    assert!(svc.poll_ready(&mut cx).is_pending());
    h.isolate();
    // Polled again: ready at once, and the call fails fast.
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(open_state(&err), (State::Isolated, None));
    // Closed again: it waits for the service as before.
    h.close();
    assert!(svc.poll_ready(&mut cx).is_pending());
    handle.allow(1);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(h.metrics().rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_probe_reservation_gives_back_no_slot_of_a_later_half_open_period() {
    let l = layer(|c| {
        c.half_open_probes = 1;
        c.success_threshold = 1;
    });
    let h = l.handle();
    let mut cx = Context::from_waker(Waker::noop());
    h.trip();
    tokio::time::advance(Duration::from_secs(30)).await;
    // `stale` reserves the one probe slot; the breaker is tripped again by hand and, half-open
    // again, `b` takes the new period's slot.
    let mut stale = l.layer(hang());
    assert!(stale.poll_ready(&mut cx).is_ready());
    assert_eq!(h.state(), State::HalfOpen);
    h.trip();
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut b = l.layer(hang());
    assert!(b.poll_ready(&mut cx).is_ready());
    let mut probe = Box::pin(b.call(()));
    assert!(probe.as_mut().poll(&mut cx).is_pending());
    // `stale`'s call is decided again: its old slot is not b's, and the one slot is busy.
    let mut call = Box::pin(stale.call(()));
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(open_state(&e).0, State::HalfOpen),
        other => panic!("{other:?}"),
    }
    let mut c = l.layer(hang());
    assert!(c.poll_ready(&mut cx).is_ready());
    let mut call = Box::pin(c.call(()));
    assert!(matches!(call.as_mut().poll(&mut cx), Poll::Ready(Err(_))));
    // b's probe dropped (ignored by default) frees the slot: the next call is the probe.
    drop(probe);
    assert!(c.poll_ready(&mut cx).is_ready());
    let mut call = Box::pin(c.call(()));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    assert_eq!(h.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_call_decided_again_asks_the_service_it_never_polled_whether_it_is_ready() {
    let l = layer(|c| c.half_open_probes = 1);
    let h = l.handle();
    let mut cx = Context::from_waker(Waker::noop());
    // Refused when polled (the service is not polled for a refused call), and the open period
    // over when called: the breaker would send the probe, but the service is not ready. The
    // call fails at once, to be retried now, and the probe slot comes back.
    let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
    handle.allow(0);
    let mut svc = l.layer(mock);
    h.trip();
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    tokio::time::advance(Duration::from_secs(30)).await;
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(open_state(&err), (State::Open, Some(Duration::ZERO)));
    assert!(class_of(&err).retryable);
    assert_eq!(h.state(), State::HalfOpen);
    let mut probe = l.layer(hang());
    assert!(probe.poll_ready(&mut cx).is_ready());
    let mut call = Box::pin(probe.call(()));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    drop(call);
    // Refused while isolated, closed, then the service's readiness fails: that error is the
    // call's, and counts as a failure would in `poll_ready`.
    h.isolate();
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    h.close();
    handle.send_error("503 service unavailable");
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "503 service unavailable");
    assert_eq!(h.metrics().failures, 1);
}

// ---- What a sustained outage writes to the log ----

#[derive(Default)]
struct Transitions(AtomicUsize);

impl Listener for Arc<Transitions> {
    fn on_event(&self, _: &str, event: Event) {
        if let Event::Transition { .. } = event {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A server's hint longer than `max_hint`: the opening says both what the server asked and
/// the period it got, so that a breaker probing again after a minute is not a surprise.
#[tokio::test(start_paused = true)]
async fn the_opening_says_the_hint_it_was_given() {
    use tracing::Level;

    let recorded = palisade_test::Events::start();
    let l = BreakerLayer::builder("llm")
        .consecutive_failures(1)
        .failure_rate(None)
        .jitter_ratio(0.0)
        .build()
        .unwrap();
    let h = l.handle();
    let class = palisade_core::Class::new(Category::ServerError)
        .with_retry_after(Duration::from_secs(3600));
    h.try_acquire().unwrap().failure(class);
    assert_eq!(
        h.try_acquire().unwrap_err().retry_after,
        Some(Duration::from_secs(60))
    );
    let events: Vec<_> = recorded
        .take()
        .into_iter()
        .filter(|e| e.target == "palisade_breaker" && e.level == Level::WARN)
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].message(), "circuit opened");
    assert_eq!(events[0].field("open_ms"), Some("60000"));
    assert_eq!(events[0].field("hint_ms"), Some("3600000"));
}

#[tokio::test(start_paused = true)]
async fn a_sustained_outage_warns_once_and_its_end_says_how_long_it_lasted() {
    use tokio::time::{Instant, sleep};
    use tracing::Level;

    let recorded = palisade_test::Events::start();
    let transitions = Arc::new(Transitions::default());
    // The defaults, in front of a dependency that answers 503 to 100 requests at 10 a second.
    let l = BreakerLayer::builder("llm")
        .listener(transitions.clone())
        .build()
        .unwrap();
    let h = l.handle();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let u = up.clone();
    let mut svc = l.layer(service_fn(move |_: ()| {
        let up = u.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(())
            } else {
                Err::<(), BoxError>("503 service unavailable".into())
            }
        }
    }));
    let mut opened = None;
    for _ in 0..100 {
        let _ = svc.ready().await.unwrap().call(()).await;
        if opened.is_none() && h.state() == State::Open {
            opened = Some(Instant::now());
        }
        sleep(Duration::from_millis(100)).await;
    }
    let reopens = h.metrics().reopens;
    assert!(reopens >= 5, "{reopens}");
    // It recovers: the breaker closes after its probes.
    up.store(true, Ordering::SeqCst);
    let closed = loop {
        let _ = svc.ready().await.unwrap().call(()).await;
        if h.state() == State::Closed {
            break Instant::now();
        }
        sleep(Duration::from_millis(100)).await;
    };
    let events: Vec<_> = recorded
        .take()
        .into_iter()
        .filter(|e| e.target == "palisade_breaker")
        .collect();
    let at = |level: Level| events.iter().filter(move |e| e.level == level);
    // One warning: the first opening.
    let warnings: Vec<_> = at(Level::WARN).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].message(), "circuit opened");
    // One line at INFO: the close, saying how long it was open and how many probes failed.
    let infos: Vec<_> = at(Level::INFO).collect();
    assert_eq!(infos.len(), 1, "{infos:#?}");
    assert_eq!(infos[0].message(), "circuit closed");
    let open_ms = (closed - opened.unwrap()).as_millis().to_string();
    assert_eq!(infos[0].field("open_ms"), Some(open_ms.as_str()));
    assert_eq!(
        infos[0].field("failed_probes"),
        Some(reopens.to_string().as_str())
    );
    assert_eq!(h.metrics().reopens, 0);
    // Every re-opening at DEBUG, with its count; every transition too, as the listeners hear
    // them: the first opening, two per failed probe, and the last probing and close.
    let counts: Vec<String> = at(Level::DEBUG)
        .filter(|e| e.message() == "circuit re-opened: a probe failed")
        .map(|e| e.field("reopens").unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=reopens).map(|n| n.to_string()).collect();
    assert_eq!(counts, expected);
    let changes = at(Level::DEBUG)
        .filter(|e| e.message() == "circuit state changed")
        .count();
    assert_eq!(changes, 1 + 2 * reopens as usize + 2);
    assert_eq!(changes, transitions.0.load(Ordering::SeqCst));
    // An operator's actions are worth a line each.
    h.isolate();
    h.close();
    let by_hand: Vec<_> = recorded
        .take()
        .into_iter()
        .filter(|e| e.level == Level::INFO && e.message() == "circuit state set by hand")
        .map(|e| {
            (
                e.field("from").unwrap().to_owned(),
                e.field("to").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_hand,
        [
            ("closed".to_owned(), "isolated".to_owned()),
            ("isolated".to_owned(), "closed".to_owned())
        ]
    );
}

// ---- A probe whose call panics ----

fn boom(at: &str) -> Result<(), BoxError> {
    panic!("the service panicked {at}")
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_future_panics_is_a_dropped_probe() {
    for cancel in [CancelPolicy::Ignore, CancelPolicy::Failure] {
        let l = layer(|c| {
            c.half_open_probes = 1;
            c.success_threshold = 1;
            c.cancel = cancel;
        });
        let h = l.handle();
        let mut svc = l.layer(service_fn(|_: ()| async { boom("in its future") }));
        h.trip();
        tokio::time::advance(Duration::from_secs(30)).await;
        svc.ready().await.unwrap();
        assert_eq!(h.state(), State::HalfOpen);
        // Spawned, as a server runs each request: the panic ends the task, which drops the
        // call's future with the probe's slot.
        let call = svc.call(());
        assert!(tokio::spawn(call).await.unwrap_err().is_panic());
        let m = h.metrics();
        if cancel == CancelPolicy::Failure {
            // A cancellation that counts as a failure: a failed probe.
            assert_eq!((m.state, m.failures, m.reopens), (State::Open, 1, 1));
        } else {
            // Ignored: the slot is free again, and the next call is the probe.
            assert_eq!((m.state, m.failures), (State::HalfOpen, 0));
            let mut next = l.layer(answering_ok(Arc::default()));
            next.ready().await.unwrap().call(()).await.unwrap();
            assert_eq!(h.state(), State::Closed);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_call_panics_gives_its_slot_back_and_counts_nothing() {
    // The panic comes out of the inner service's `call`, before the call has started: as for a
    // probe reserved and never called, its slot comes back whatever the cancel policy.
    let l = layer(|c| {
        c.half_open_probes = 1;
        c.success_threshold = 1;
        c.cancel = CancelPolicy::Failure;
    });
    let h = l.handle();
    let mut svc = l.layer(service_fn(
        |_: ()| -> std::future::Ready<Result<(), BoxError>> { std::future::ready(boom("in call")) },
    ));
    h.trip();
    tokio::time::advance(Duration::from_secs(30)).await;
    svc.ready().await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(svc.call(())))).is_err();
    assert!(panicked);
    let m = h.metrics();
    assert_eq!((m.state, m.failures), (State::HalfOpen, 0));
    let mut next = l.layer(answering_ok(Arc::default()));
    next.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

// Regressions from a review of the core breaker: each failed before its fix.

fn network() -> palisade_core::Class {
    palisade_core::Class::new(Category::Network)
}

#[tokio::test(start_paused = true)]
async fn a_time_window_is_whole_milliseconds_per_bucket_and_covers_its_whole_span() {
    let build = |span_ms| {
        BreakerLayer::builder("t")
            .window(Window::Time {
                span: Duration::from_millis(span_ms),
                buckets: 1000,
            })
            .failure_rate(Rate::new(0.5, 100))
            .throttle(None)
            .build()
    };
    // 1999 ms in 1000 buckets would be buckets of 1 ms, covering 1000 ms: refused.
    assert_eq!(build(1999).unwrap_err().field(), "window.span");
    // 2000 ms: buckets of 2 ms. A failure 1.5 s old is still in the window, gone at 2 s.
    let h = build(2000).unwrap().handle();
    h.try_acquire().unwrap().failure(network());
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(h.metrics().window_calls, Some(1));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(h.metrics().window_calls, Some(0));
}

#[tokio::test(start_paused = true)]
async fn close_on_a_closed_breaker_clears_its_counts_and_announces_no_transition() {
    let log = Arc::new(TransitionLog::default());
    let h = BreakerLayer::builder("t")
        .consecutive_failures(5)
        .window(Window::Count(10))
        .failure_rate(Rate::new(1.0, 10))
        .throttle(None)
        .listener(log.clone())
        .build()
        .unwrap()
        .handle();
    for _ in 0..4 {
        h.try_acquire().unwrap().failure(network());
    }
    assert_eq!(h.metrics().window_calls, Some(4));
    h.close();
    let m = h.metrics();
    assert_eq!((m.consecutive_failures, m.window_calls), (0, Some(0)));
    // One more failure is the first of a new streak, not the fifth.
    h.try_acquire().unwrap().failure(network());
    assert_eq!(h.state(), State::Closed);
    // Nothing moved: no transition said it did.
    assert_eq!(log.take(), []);
}

/// How many of 40 failing calls `h` refuses (they are made in a row, at one instant).
fn refused_of_40_failing(h: &BreakerHandle) -> usize {
    (0..40)
        .filter(|_| match h.try_acquire() {
            Ok(p) => {
                p.failure(network());
                false
            }
            Err(_) => true,
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_that_the_dependency_answered() {
    let build = || {
        BreakerLayer::builder("t")
            .failure_rate(None)
            .build()
            .unwrap()
            .handle()
    };
    // A new breaker's throttle refuses nothing before the dependency has answered once.
    assert_eq!(refused_of_40_failing(&build()), 0);
    let h = build();
    h.try_acquire().unwrap().success();
    h.reset();
    assert_eq!(refused_of_40_failing(&h), 0);
}

/// Fails every call on `h` until the breaker leaves closed (the throttle opening it), at most
/// 50.
fn fail_until_not_closed(h: &BreakerHandle) {
    for _ in 0..50 {
        if let Ok(p) = h.try_acquire() {
            p.failure(network());
        }
        if h.state() != State::Closed {
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_close_by_hand_starts_the_throttles_silence_afresh() {
    let h = BreakerLayer::builder("t")
        .failure_rate(None)
        .throttle(Throttle::new(3.0, 5))
        .build()
        .unwrap()
        .handle();
    h.try_acquire().unwrap().success();
    // The throttle's window holds no accepted request: its silence timer starts.
    fail_until_not_closed(&h);
    assert_eq!(h.state(), State::Closed);
    tokio::time::advance(Duration::from_secs(10)).await;
    h.isolate();
    h.close();
    // 0 ms of silence since the close: the throttle refuses, it does not open the breaker.
    fail_until_not_closed(&h);
    assert_eq!(h.state(), State::Closed);
    // And a close of a breaker closed already clears the timer too.
    tokio::time::advance(Duration::from_secs(10)).await;
    h.close();
    fail_until_not_closed(&h);
    assert_eq!(h.state(), State::Closed);
    // The silence still opens it once it has lasted max_open_duration (750 ms).
    tokio::time::advance(Duration::from_millis(750)).await;
    fail_until_not_closed(&h);
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_open_period_is_at_least_a_millisecond() {
    // Under 1 ms it would round to none: refused, naming the field.
    let err = BreakerLayer::builder("t")
        .open_duration(Duration::from_micros(900))
        .max_open_duration(Duration::from_micros(900))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "open_duration");
    // Nor may jitter take a 1 ms period under 1 ms: the breaker is open as it trips.
    for seed in 0..20 {
        let h = BreakerLayer::builder("t")
            .consecutive_failures(1)
            .failure_rate(None)
            .throttle(None)
            .open_duration(Duration::from_millis(1))
            .max_open_duration(Duration::from_millis(1))
            .jitter_ratio(0.9)
            .seed(seed)
            .build()
            .unwrap()
            .handle();
        h.try_acquire().unwrap().failure(network());
        assert_eq!(h.state(), State::Open, "seed {seed}");
        assert!(h.try_acquire().is_err(), "seed {seed}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_throttle_waits_for_a_full_fifth_of_a_window_not_a_multiple_of_five() {
    for seed in 0..100 {
        let h = BreakerLayer::builder("t")
            .failure_rate(None)
            .throttle(Throttle::new(3.0, 9))
            .success_threshold(1)
            .seed(seed)
            .build()
            .unwrap()
            .handle();
        h.trip();
        tokio::time::advance(Duration::from_secs(1)).await;
        // The probe answers: closed, windows emptied, the dependency has answered.
        h.try_acquire().unwrap().success();
        assert_eq!(h.state(), State::Closed);
        // One request in a window of 9 (a fifth is 1.8): too few to throttle on.
        h.try_acquire().unwrap().failure(network());
        assert!(h.try_acquire().is_ok(), "seed {seed}");
    }
}

// ---- What a close clears before it is published, and what trip leaves alone ----

/// A listener that, when the breaker it watches is announced closed, makes one call through
/// it at once and fails it: what another thread's call admitted right after a close does.
struct FailOnClose(Arc<std::sync::OnceLock<BreakerHandle>>);

impl Listener for FailOnClose {
    fn on_event(&self, _: &str, event: Event) {
        if let Event::Transition {
            to: State::Closed, ..
        } = event
            && let Ok(p) = self.0.get().unwrap().try_acquire()
        {
            p.failure(network());
        }
    }
}

/// A breaker under `builder`, with a [`FailOnClose`] listener.
fn failing_on_close(builder: BreakerBuilder) -> BreakerHandle {
    let cell = Arc::new(std::sync::OnceLock::new());
    let h = builder
        .listener(FailOnClose(cell.clone()))
        .build()
        .unwrap()
        .handle();
    cell.set(h.clone()).unwrap();
    h
}

#[tokio::test(start_paused = true)]
async fn one_failure_right_after_a_probe_closes_the_breaker_is_one_in_an_empty_window() {
    // The defaults: 95 % of at least 30 calls. The window that tripped it is gone by the time
    // the close is published, so one failure then is one failure among none.
    let h = failing_on_close(BreakerLayer::builder("t"));
    while h.state() != State::Open {
        h.try_acquire().unwrap().failure(network());
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    h.try_acquire().unwrap().success();
    h.try_acquire().unwrap().success(); // the second probe closes it
    let m = h.metrics();
    assert_eq!(
        (m.state, m.window_calls, m.failure_ratio),
        (State::Closed, Some(1), Some(1.0))
    );
}

#[tokio::test(start_paused = true)]
async fn one_failure_right_after_a_probe_closes_the_breaker_starts_a_new_streak() {
    // Five in a row trip it; the streak that did is gone by the time the close is published.
    let h = failing_on_close(BreakerLayer::builder("t").config(classic(|_| {})));
    for _ in 0..5 {
        h.try_acquire().unwrap().failure(network());
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let probes: Vec<_> = (0..3).map(|_| h.try_acquire().unwrap()).collect();
    for p in probes {
        p.success();
    }
    let m = h.metrics();
    assert_eq!(
        (m.state, m.consecutive_failures, m.reopens),
        (State::Closed, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn one_failure_right_after_a_close_or_reset_by_hand_is_counted_from_nothing() {
    let h = failing_on_close(BreakerLayer::builder("t").config(classic(|_| {})));
    for _ in 0..5 {
        h.try_acquire().unwrap().failure(network());
    }
    // "Closes the breaker at once, clearing its failure counts": before it says it is closed.
    h.close();
    let m = h.metrics();
    assert_eq!((m.state, m.consecutive_failures), (State::Closed, 1));
    // A reset clears the metrics' counters before it says so too: the failure made after it
    // is counted.
    for _ in 0..4 {
        h.try_acquire().unwrap().failure(network());
    }
    assert_eq!(h.state(), State::Open);
    h.reset();
    let m = h.metrics();
    assert_eq!(
        (m.state, m.consecutive_failures, m.failures, m.successes),
        (State::Closed, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_close_is_logged_before_the_opening_that_follows_it_and_keeps_its_counts() {
    use tracing::Level;

    let recorded = palisade_test::Events::start();
    // One failure trips it: the failure made as it closes opens it again, for good reasons,
    // and the close, published before, neither wipes that opening's counts nor is logged
    // after it.
    let h = failing_on_close(
        BreakerLayer::builder("t").config(classic(|c| c.consecutive_failures = Some(1))),
    );
    h.try_acquire().unwrap().failure(network());
    tokio::time::advance(Duration::from_secs(30)).await;
    let probes: Vec<_> = (0..3).map(|_| h.try_acquire().unwrap()).collect();
    let _ = recorded.take();
    for p in probes {
        p.success();
    }
    let m = h.metrics();
    assert_eq!((m.state, m.consecutive_failures), (State::Open, 1));
    let lines: Vec<String> = recorded
        .take()
        .into_iter()
        .filter(|e| e.target == "palisade_breaker" && e.level <= Level::INFO)
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(lines, ["circuit closed", "circuit opened"]);
    // The same by hand.
    h.close();
    let lines: Vec<String> = recorded
        .take()
        .into_iter()
        .filter(|e| e.target == "palisade_breaker" && e.level <= Level::INFO)
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(lines, ["circuit state set by hand", "circuit opened"]);
    assert_eq!(h.metrics().consecutive_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn trip_opens_a_breaker_whose_open_period_is_over_for_a_new_one() {
    let log = Arc::new(TransitionLog::default());
    let h = BreakerLayer::builder("t")
        .config(classic(|c| c.consecutive_failures = Some(1)))
        .listener(log.clone())
        .build()
        .unwrap()
        .handle();
    h.try_acquire().unwrap().failure(network());
    assert_eq!(log.take(), [(State::Closed, State::Open)]);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(h.state(), State::HalfOpen); // its next call would probe
    // "Opens the breaker now for one open period."
    h.trip();
    let m = h.metrics();
    assert_eq!(
        (m.state, m.retry_after, m.time_in_state),
        (State::Open, Some(Duration::from_secs(30)), Duration::ZERO)
    );
    assert_eq!(h.try_acquire().unwrap_err().state, State::Open);
    // Listeners heard it open and never heard it leave: nothing to announce.
    assert_eq!(log.take(), []);
    // It probes as usual once the new period is over.
    tokio::time::advance(Duration::from_secs(30)).await;
    let _probe = h.try_acquire().unwrap();
    assert_eq!(log.take(), [(State::Open, State::HalfOpen)]);
}

/// trip() on a breaker open for the rest of its period leaves that period as it is; at the
/// very instant the period ends (it reads half-open then) it opens it for a new one.
#[tokio::test(start_paused = true)]
async fn trip_neither_lengthens_a_running_open_period_nor_skips_one_that_just_ended() {
    let h = BreakerLayer::builder("t")
        .config(classic(|c| c.consecutive_failures = Some(1)))
        .build()
        .unwrap()
        .handle();
    h.try_acquire().unwrap().failure(network());
    tokio::time::advance(Duration::from_secs(10)).await;
    h.trip();
    let m = h.metrics();
    assert_eq!(
        (m.state, m.retry_after, m.time_in_state),
        (
            State::Open,
            Some(Duration::from_secs(20)),
            Duration::from_secs(10)
        )
    );
    // Exactly at its end: half-open, so the trip opens it again for a whole period.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(h.state(), State::HalfOpen);
    h.trip();
    let m = h.metrics();
    assert_eq!(
        (m.state, m.retry_after),
        (State::Open, Some(Duration::from_secs(30)))
    );
}

#[tokio::test(start_paused = true)]
async fn trip_leaves_a_bypassed_breaker_bypassed() {
    let h = BreakerLayer::new("t").handle();
    // "Lets every call through ... until closed or reset by hand."
    h.bypass();
    h.trip();
    assert_eq!(h.state(), State::Bypassed);
    assert!(h.try_acquire().is_ok());
    // As an isolated one stays isolated.
    h.isolate();
    h.trip();
    assert_eq!(h.state(), State::Isolated);
}

/// The default rule, at least 95 % of the last 30 calls failed, at its edge: one success in
/// 30 (97 % failed) opens the breaker, two (93 %) keep it closed.
#[tokio::test(start_paused = true)]
async fn two_successes_in_thirty_keep_the_default_breaker_closed() {
    for (successes, state) in [(1, State::Open), (2, State::Closed)] {
        let l = BreakerLayer::builder("t")
            .config(BreakerConfig {
                throttle: None,
                ..BreakerConfig::default()
            })
            .build()
            .unwrap();
        let h = l.handle();
        for i in 0..30 {
            let permit = h.try_acquire().unwrap();
            if i < successes {
                permit.success();
            } else {
                permit.failure(palisade_core::Class::new(Category::ServerError));
            }
        }
        assert_eq!(h.state(), state, "{successes} success(es) in 30");
    }
}

#[test]
fn an_open_duration_set_alone_raises_the_cap_nobody_set_and_keeps_one_set() {
    let secs = Duration::from_secs;
    let max_open =
        |b: crate::BreakerBuilder| b.build().map(|l| l.handle().config().max_open_duration);
    // Alone, longer than the default cap (750 ms): the cap follows it.
    assert_eq!(
        max_open(BreakerLayer::builder("t").open_duration(secs(5))),
        Ok(secs(5))
    );
    // Shorter: the default cap stays.
    let short = BreakerLayer::builder("t").open_duration(Duration::from_millis(100));
    assert_eq!(
        max_open(short),
        Ok(BreakerConfig::default().max_open_duration)
    );
    // A cap set, before or after, is kept: raised explicitly it holds, under the period it is refused.
    let grown = BreakerLayer::builder("t")
        .max_open_duration(secs(60))
        .open_duration(secs(5));
    assert_eq!(max_open(grown), Ok(secs(60)));
    for b in [
        BreakerLayer::builder("t")
            .open_duration(secs(5))
            .max_open_duration(secs(1)),
        BreakerLayer::builder("t")
            .max_open_duration(secs(1))
            .open_duration(secs(5)),
        // A whole configuration, or one changed in place, is taken as written.
        BreakerLayer::builder("t").configure(|c| c.open_duration = secs(5)),
        BreakerLayer::builder("t").config(BreakerConfig {
            open_duration: secs(5),
            ..BreakerConfig::default()
        }),
    ] {
        assert_eq!(b.build().unwrap_err().field(), "max_open_duration");
    }
    // The keyed builder follows the same rule.
    let keyed = crate::KeyedBreakerLayer::builder("t", |k: &u32| *k).open_duration(secs(5));
    assert_eq!(
        keyed.build().map(|l| l.handle().config().max_open_duration),
        Ok(secs(5))
    );
    let keyed = crate::KeyedBreakerLayer::builder("t", |k: &u32| *k)
        .open_duration(secs(5))
        .max_open_duration(secs(2));
    assert_eq!(keyed.build().unwrap_err().field(), "max_open_duration");
}
