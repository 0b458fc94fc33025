use std::future::{Future, poll_fn, ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{BoxError, Category, attempt, class_of};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::context;
use crate::error::{DeadlineExceeded, Elapsed};
use crate::{Deadline, DeadlineLayer, Timeout, TimeoutLayer};

pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Answers `Ok(ms)` after sleeping `ms` milliseconds.
pub(crate) fn slow() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    service_fn(|n: u64| async move {
        sleep(ms(n)).await;
        Ok::<u64, BoxError>(n)
    })
}

async fn call<S: Service<u64, Response = u64, Error = BoxError>>(
    svc: &mut S,
    n: u64,
) -> Result<u64, BoxError> {
    svc.ready().await?.call(n).await
}

fn is<T: std::error::Error + 'static>(err: &BoxError) -> bool {
    err.downcast_ref::<T>().is_some()
}

/// The limit a timeout error reports.
pub(crate) trait Limited: std::error::Error + 'static {
    fn reported(&self) -> Option<Duration>;
}

impl Limited for Elapsed {
    fn reported(&self) -> Option<Duration> {
        self.limit()
    }
}

impl Limited for DeadlineExceeded {
    fn reported(&self) -> Option<Duration> {
        self.limit()
    }
}

/// The limit `err` reports, when it is a `T`.
pub(crate) fn limit_of<T: Limited>(err: &BoxError) -> Option<Duration> {
    err.downcast_ref::<T>().and_then(T::reported)
}

#[tokio::test(start_paused = true)]
async fn timeout_boundary() {
    let mut svc = TimeoutLayer::new(ms(100)).layer(slow());
    let start = Instant::now();
    assert_eq!(call(&mut svc, 99).await.unwrap(), 99);
    assert_eq!(start.elapsed(), ms(99));

    let start = Instant::now();
    let err = call(&mut svc, 101).await.unwrap_err();
    assert!(is::<Elapsed>(&err), "{err}");
    assert_eq!(err.to_string(), "attempt timed out after 100 ms");
    assert_eq!(limit_of::<Elapsed>(&err), Some(ms(100)));
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn deadline_boundary() {
    let mut svc = DeadlineLayer::new(ms(100)).layer(slow());
    let start = Instant::now();
    assert_eq!(call(&mut svc, 99).await.unwrap(), 99);
    assert_eq!(start.elapsed(), ms(99));

    let start = Instant::now();
    let err = call(&mut svc, 101).await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err), "{err}");
    assert_eq!(err.to_string(), "deadline of 100 ms exceeded");
    assert_eq!(limit_of::<DeadlineExceeded>(&err), Some(ms(100)));
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through() {
    let failing = service_fn(|_: u64| ready(Err::<u64, BoxError>("boom".into())));
    let mut t = Timeout::new(failing, ms(10));
    assert_eq!(call(&mut t, 0).await.unwrap_err().to_string(), "boom");
    let mut d = Deadline::new(failing, ms(10));
    assert_eq!(call(&mut d, 0).await.unwrap_err().to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn escalation_lengthens_each_attempt_up_to_the_cap() {
    let mut svc = TimeoutLayer::builder(ms(100))
        .escalate(2.0, ms(300))
        .build()
        .unwrap()
        .layer(slow());
    for (n, limit) in [(0, 100), (1, 200), (2, 300), (3, 300)] {
        svc.ready().await.unwrap();
        let fut = context::with_timeouts_so_far(n, || svc.call(10_000));
        let start = Instant::now();
        let err = fut.await.unwrap_err();
        assert!(is::<Elapsed>(&err));
        assert_eq!(start.elapsed(), ms(limit), "n = {n}");
        // The error names the limit that ran out: the escalated one.
        assert_eq!(limit_of::<Elapsed>(&err), Some(ms(limit)), "n = {n}");
        assert_eq!(
            err.to_string(),
            format!("attempt timed out after {limit} ms")
        );
    }
    // Just inside the escalated limit of the second attempt.
    svc.ready().await.unwrap();
    let fut = context::with_timeouts_so_far(1, || svc.call(199));
    assert_eq!(fut.await.unwrap(), 199);
}

#[tokio::test(start_paused = true)]
async fn without_escalation_the_count_is_ignored() {
    let mut svc = TimeoutLayer::new(ms(100)).layer(slow());
    svc.ready().await.unwrap();
    let fut = context::with_timeouts_so_far(3, || svc.call(10_000));
    let start = Instant::now();
    assert!(fut.await.is_err());
    assert_eq!(start.elapsed(), ms(100));
}

#[test]
fn bad_escalation_names_the_field() {
    let layer = TimeoutLayer::builder(ms(100));
    let field = |b: crate::TimeoutBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(layer.escalate(0.9, ms(500))), "factor");
    assert_eq!(field(layer.escalate(f64::NAN, ms(500))), "factor");
    assert_eq!(field(layer.escalate(2.0, ms(50))), "cap");
    assert_eq!(field(TimeoutLayer::builder(ms(0))), "timeout");
    assert_eq!(layer.build().unwrap().escalation(), None);
    let ok = layer.escalate(1.5, ms(500)).build().unwrap();
    assert_eq!(ok.escalation(), Some((1.5, ms(500))));
    assert_eq!(ok.timeout(), ms(100));
}

/// Records `context::deadline()` as seen inside the inner future on each poll.
fn probe(
    seen: Arc<std::sync::Mutex<Vec<Option<Instant>>>>,
) -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    service_fn(move |n: u64| {
        let seen = seen.clone();
        async move {
            let sleep = sleep(ms(n));
            let mut sleep = pin!(sleep);
            poll_fn(|cx| {
                seen.lock().unwrap().push(context::deadline());
                sleep.as_mut().poll(cx)
            })
            .await;
            Ok::<u64, BoxError>(n)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn deadline_is_visible_inside_and_nested_deadlines_take_the_minimum() {
    let seen = Arc::default();
    let start = Instant::now();
    let mut svc = DeadlineLayer::new(ms(100))
        .layer(DeadlineLayer::new(ms(1000)).layer(probe(Arc::clone(&seen))));
    assert_eq!(context::deadline(), None);
    assert_eq!(call(&mut svc, 50).await.unwrap(), 50);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|d| *d == Some(start + ms(100))), "{seen:?}");
    assert_eq!(context::deadline(), None);

    // The outer, shorter deadline fires; the inner one would not have. The error says the
    // time the call was granted: the outer's 100 ms, not the inner's 1 s.
    let start = Instant::now();
    let err = call(&mut svc, 500).await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err));
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(err.to_string(), "deadline of 100 ms exceeded");

    // The other way round: the inner, shorter one fires.
    let mut svc = DeadlineLayer::new(ms(1000)).layer(DeadlineLayer::new(ms(100)).layer(slow()));
    let start = Instant::now();
    let err = call(&mut svc, 500).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(limit_of::<DeadlineExceeded>(&err), Some(ms(100)));
}

/// An inner deadline that starts after the outer one (here 30 ms into it) and ends after it
/// reports the time the outer one left it.
#[tokio::test(start_paused = true)]
async fn an_inner_deadline_cut_short_reports_the_time_it_was_left() {
    let inner = DeadlineLayer::new(ms(1_000)).layer(slow());
    let late = service_fn(move |n: u64| {
        let mut inner = inner.clone();
        async move {
            sleep(ms(30)).await;
            inner.ready().await?.call(n).await
        }
    });
    let mut svc = DeadlineLayer::new(ms(100)).layer(late);
    let start = Instant::now();
    let err = call(&mut svc, 500).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(limit_of::<DeadlineExceeded>(&err), Some(ms(70)));
    assert_eq!(err.to_string(), "deadline of 70 ms exceeded");
}

#[tokio::test(start_paused = true)]
async fn timeout_does_not_publish_a_deadline() {
    let seen = Arc::default();
    let mut svc = TimeoutLayer::new(ms(100)).layer(probe(Arc::clone(&seen)));
    call(&mut svc, 10).await.unwrap();
    assert!(seen.lock().unwrap().iter().all(Option::is_none));
}

#[test]
fn errors_are_classified() {
    let _ = TimeoutLayer::new(ms(1));
    let _ = DeadlineLayer::new(ms(1));
    let elapsed = class_of(&BoxError::from(Elapsed::new()));
    assert_eq!(elapsed.category, Category::Timeout);
    assert!(elapsed.retryable);
    let exceeded = class_of(&BoxError::from(DeadlineExceeded::new()));
    assert_eq!(exceeded.category, Category::Timeout);
    assert!(!exceeded.retryable);
}

#[test]
fn a_ready_response_needs_no_timer() {
    // No runtime at all: creating a `Sleep` would panic, so none is created.
    let ready_svc = service_fn(|n: u64| ready(Ok::<u64, BoxError>(n)));
    let mut cx = Context::from_waker(Waker::noop());
    let mut t = Timeout::new(ready_svc, ms(1));
    let fut = pin!(t.call(7));
    assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(7))));
    let mut d = Deadline::new(ready_svc, ms(1));
    let fut = pin!(d.call(8));
    assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(8))));
}

/// An inner future holding a clone of `token` until it is dropped.
fn holder(token: Arc<()>) -> impl Service<u64, Response = u64, Error = BoxError> {
    service_fn(move |n: u64| {
        let token = Arc::clone(&token);
        async move {
            sleep(ms(n)).await;
            drop(token);
            Ok::<u64, BoxError>(n)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn dropped_futures_leave_nothing() {
    let token = Arc::new(());
    let mut cx = Context::from_waker(Waker::noop());
    let mut t = Timeout::new(holder(Arc::clone(&token)), ms(100));
    let mut d = Deadline::new(holder(Arc::clone(&token)), ms(100));
    {
        let mut a = Box::pin(t.call(1000));
        let mut b = Box::pin(d.call(1000));
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(Arc::strong_count(&token), 5); // 1 + 2 services + 2 futures
    }
    assert_eq!(Arc::strong_count(&token), 3);

    // On expiry the deadline drops the inner future before the caller drops the future.
    let mut b = Box::pin(d.call(1000));
    let err = (&mut b).await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err));
    assert_eq!(Arc::strong_count(&token), 3);
    drop(b);
    drop((t, d));
    assert_eq!(Arc::strong_count(&token), 1);
}

#[tokio::test(start_paused = true)]
async fn a_zero_limit_still_lets_a_ready_response_through() {
    let ready_svc = service_fn(|n: u64| ready(Ok::<u64, BoxError>(n)));
    let mut t = Timeout::new(ready_svc, Duration::ZERO);
    assert_eq!(call(&mut t, 3).await.unwrap(), 3);
    let mut d = Deadline::new(ready_svc, Duration::ZERO);
    assert_eq!(call(&mut d, 4).await.unwrap(), 4);
    // ... but anything that waits fails at once.
    let mut t = Timeout::new(slow(), Duration::ZERO);
    let start = Instant::now();
    assert!(is::<Elapsed>(&call(&mut t, 1).await.unwrap_err()));
    let mut d = Deadline::new(slow(), Duration::ZERO);
    assert!(is::<DeadlineExceeded>(&call(&mut d, 1).await.unwrap_err()));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[test]
fn layers_services_and_futures_are_send_and_sync() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let (tl, dl) = (TimeoutLayer::new(ms(1)), DeadlineLayer::new(ms(1)));
    send_sync(&tl);
    send_sync(&dl);
    let mut t = tl.layer(slow());
    let mut d = dl.layer(slow());
    send_sync(&t);
    send_sync(&d);
    send(&t.call(1));
    send(&d.call(1));
}

#[tokio::test(start_paused = true)]
async fn an_enormous_deadline_means_no_limit_not_a_panic() {
    use tower::ServiceExt;
    let svc = crate::DeadlineLayer::new(std::time::Duration::MAX).layer(tower::service_fn(
        |_: ()| async {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok::<_, palisade_core::BoxError>(7)
        },
    ));
    assert_eq!(svc.oneshot(()).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_clock_starts_at_the_first_poll_and_only_when_needed() {
    let mut cx = Context::from_waker(Waker::noop());
    let mut d = Deadline::new(slow(), ms(100));
    let mut fut = Box::pin(d.call(1000));
    // Not polled yet: no clock read, no deadline.
    assert_eq!(fut.deadline(), None);
    tokio::time::advance(ms(40)).await;
    let first_poll = Instant::now();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Pending: the clock started at this poll, not at `call`.
    assert_eq!(fut.deadline(), Some(first_poll + ms(100)));
    let err = fut.await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err));
    assert_eq!(first_poll.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_read_below_during_the_first_poll_starts_the_clock_there() {
    // The inner future reads the deadline on its first poll (as a retry does after a failed
    // attempt), then waits 30 ms; the deadline seen and the one enforced are the same.
    let seen = Arc::default();
    let mut d = DeadlineLayer::new(ms(100)).layer(probe(Arc::clone(&seen)));
    let mut fut = Box::pin(d.call(30));
    tokio::time::advance(ms(5)).await;
    let first_poll = Instant::now();
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    assert_eq!(fut.deadline(), Some(first_poll + ms(100)));
    assert_eq!(fut.await.unwrap(), 30);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|d| *d == Some(first_poll + ms(100))),
        "{seen:?}"
    );
    // Nothing is left behind on this thread.
    assert_eq!(context::deadline(), None);
}

/// Never completes; records [`attempt::timing_out`] when dropped, and panics then if asked.
pub(crate) struct Probe {
    seen: Arc<std::sync::Mutex<Vec<bool>>>,
    panic: bool,
}

impl Future for Probe {
    type Output = Result<u64, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let timing_out = attempt::timing_out();
        self.seen.lock().unwrap().push(timing_out);
        if self.panic {
            panic!("the attempt's drop panicked");
        }
    }
}

pub(crate) fn hanging(
    seen: &Arc<std::sync::Mutex<Vec<bool>>>,
    panic: bool,
) -> impl Service<u64, Response = u64, Error = BoxError, Future = Probe> + Clone {
    let seen = Arc::clone(seen);
    service_fn(move |_: u64| Probe {
        seen: Arc::clone(&seen),
        panic,
    })
}

pub(crate) fn seen_so_far(seen: &Arc<std::sync::Mutex<Vec<bool>>>) -> Vec<bool> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_elapsed_timeout_drops_its_attempt_marked_as_timed_out() {
    let seen = Arc::default();
    let mut svc = TimeoutLayer::new(ms(100)).layer(hanging(&seen, false));
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(0));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(ms(99)).await;
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(seen_so_far(&seen), []);
    tokio::time::advance(ms(1)).await;
    let Poll::Ready(Err(err)) = fut.as_mut().poll(&mut cx) else {
        panic!("the timeout should have fired");
    };
    assert!(is::<Elapsed>(&err));
    // Dropped inside the poll, marked; the mark is gone once the poll returns.
    assert_eq!(seen_so_far(&seen), [true]);
    assert!(!attempt::timing_out());
    // Polled again: a panic (tower's contract), and nothing dropped twice on the way.
    let again =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
    let message = again.expect_err("a finished future polled again panics");
    assert_eq!(
        message.downcast_ref::<&str>(),
        Some(&"`Timeout` response future polled after completion")
    );
    assert_eq!(seen_so_far(&seen), []);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "`Deadline` response future polled after completion")]
async fn a_finished_deadline_future_polled_again_panics() {
    let mut svc = DeadlineLayer::new(ms(100)).layer(slow());
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(10));
    let mut cx = Context::from_waker(Waker::noop());
    while fut.as_mut().poll(&mut cx).is_pending() {
        tokio::time::advance(ms(10)).await;
    }
    let _ = fut.as_mut().poll(&mut cx);
}

#[tokio::test(start_paused = true)]
async fn other_drops_of_the_attempt_are_not_marked() {
    let seen = Arc::default();
    // The caller gives up before the timeout.
    let mut svc = TimeoutLayer::new(ms(100)).layer(hanging(&seen, false));
    let gave_up = tokio::time::timeout(ms(50), call(&mut svc, 0)).await;
    assert!(gave_up.is_err());
    assert_eq!(seen_so_far(&seen), [false]);
    // A deadline fires, alone or above a longer per-attempt timeout.
    let mut svc = DeadlineLayer::new(ms(100)).layer(hanging(&seen, false));
    assert!(is::<DeadlineExceeded>(
        &call(&mut svc, 0).await.unwrap_err()
    ));
    assert_eq!(seen_so_far(&seen), [false]);
    let mut svc =
        DeadlineLayer::new(ms(100)).layer(TimeoutLayer::new(ms(200)).layer(hanging(&seen, false)));
    assert!(is::<DeadlineExceeded>(
        &call(&mut svc, 0).await.unwrap_err()
    ));
    assert_eq!(seen_so_far(&seen), [false]);
    // A deadline below a timeout that fires first is part of the timed-out attempt.
    let mut svc =
        TimeoutLayer::new(ms(100)).layer(DeadlineLayer::new(ms(200)).layer(hanging(&seen, false)));
    assert!(is::<Elapsed>(&call(&mut svc, 0).await.unwrap_err()));
    assert_eq!(seen_so_far(&seen), [true]);
    assert!(!attempt::timing_out());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_drop_of_the_attempt_clears_the_mark() {
    let seen = Arc::default();
    let mut svc = TimeoutLayer::new(ms(100)).layer(hanging(&seen, true));
    svc.ready().await.unwrap();
    let mut fut = Box::pin(svc.call(0));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(ms(100)).await;
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut cx);
    }));
    assert!(polled.is_err());
    assert_eq!(seen_so_far(&seen), [true]);
    assert!(!attempt::timing_out());
    // The attempt is gone: dropping the future drops nothing twice.
    drop(fut);
    assert_eq!(seen_so_far(&seen), []);
}

/// An escalating timeout behind a task boundary (its call outside the retry's attempt, its
/// future polled inside it) warns once; the same timeout called inside the attempt does not.
#[tokio::test(start_paused = true)]
async fn an_escalating_timeout_that_lost_its_context_warns_once() {
    let layer = TimeoutLayer::builder(ms(100))
        .escalate(2.0, ms(1_000))
        .build()
        .unwrap();
    let mut svc = layer.layer(slow());
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut state = attempt::Attempt {
        number: 1,
        avoid: None,
    };
    // Polled until its timer is armed (the first Pending), inside the attempt.
    let mut run = |scoped_call: bool| {
        let fut = if scoped_call {
            attempt::scope(&mut state, || svc.call(10_000))
        } else {
            svc.call(10_000)
        };
        let mut fut = Box::pin(fut);
        palisade_test::count_warnings(|| {
            attempt::scope(&mut state, || {
                assert!(fut.as_mut().poll(&mut cx).is_pending())
            })
        })
        .0
    };
    assert_eq!(run(true), 0, "called inside the attempt: nothing lost");
    assert_eq!(run(false), 1, "called outside: the count cannot reach it");
    assert_eq!(run(false), 0, "once per process");
    // Without a retry above (no attempt at call or poll), nothing to warn about.
    let mut fut = Box::pin(svc.call(10_000));
    let (n, _) = palisade_test::count_warnings(|| fut.as_mut().poll(&mut cx));
    assert_eq!(n, 0);
}

/// The deadline is published around the inner call, lazily: a layer below that reads it there
/// starts the clock at the call (and sees the same instant the deadline then fires at); one
/// that does not read it leaves the clock to the first poll.
#[tokio::test(start_paused = true)]
async fn the_deadline_is_readable_in_the_inner_call() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let mut svc = DeadlineLayer::new(ms(100)).layer(service_fn(move |n: u64| {
        *record.lock().unwrap() = context::deadline();
        async move {
            sleep(ms(n)).await;
            Ok::<u64, BoxError>(n)
        }
    }));
    let start = Instant::now();
    let fut = svc.call(60);
    assert_eq!(*seen.lock().unwrap(), Some(start + ms(100)));
    // Time passes before the first poll: it counts, since the clock started at the call.
    sleep(ms(50)).await;
    let err = fut.await.unwrap_err();
    assert!(is::<DeadlineExceeded>(&err), "{err}");
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(context::deadline(), None);

    // Nobody reads it in the call: the clock starts at the first poll, as before.
    let mut quiet = DeadlineLayer::new(ms(100)).layer(slow());
    let fut = quiet.call(60);
    sleep(ms(50)).await;
    let start = Instant::now();
    assert_eq!(fut.await.unwrap(), 60);
    assert_eq!(start.elapsed(), ms(60));
}

/// The accessors report what the layer and services were built with.
#[test]
fn accessors_report_the_configuration() {
    let layer = DeadlineLayer::new(ms(250));
    assert_eq!(layer.limit(), ms(250));
    let deadline = layer.layer(slow());
    assert_eq!(deadline.limit(), ms(250));
    let timeout = TimeoutLayer::new(ms(40)).layer(slow());
    assert_eq!(timeout.timeout(), ms(40));
}

/// A service whose readiness is pending, then fails.
#[derive(Clone)]
struct NotReady {
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Service<u64> for NotReady {
    type Response = u64;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Poll::Pending,
            _ => Poll::Ready(Err("overloaded".into())),
        }
    }

    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n))
    }
}

/// Both services pass their inner service's readiness through: pending, then its error.
#[test]
fn readiness_is_the_inner_services() {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let not_ready = || NotReady {
        polls: Arc::default(),
    };
    let mut timeout = TimeoutLayer::new(ms(40)).layer(not_ready());
    assert!(timeout.poll_ready(&mut cx).is_pending());
    match timeout.poll_ready(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "overloaded"),
        _ => panic!("the inner error"),
    }
    let mut deadline = DeadlineLayer::new(ms(40)).layer(not_ready());
    assert!(deadline.poll_ready(&mut cx).is_pending());
    assert!(matches!(deadline.poll_ready(&mut cx), Poll::Ready(Err(_))));
}

/// A request with room for the context, to carry it across a spawned task.
struct Job {
    ms: u64,
    context: Option<palisade_core::context::Carried>,
}

impl palisade_core::context::Carrier for Job {
    fn carry_context(&mut self, context: palisade_core::context::Carried) {
        self.context = Some(context);
    }
    fn take_context(&mut self) -> Option<palisade_core::context::Carried> {
        self.context.take()
    }
}

/// A deadline carried across a spawned task (`CarryLayer` above, `ResumeLayer` below) bounds a
/// longer `Deadline` on the other side: the work there is cut off when the caller's time is
/// spent, not when the inner, longer limit would end it.
#[tokio::test(start_paused = true)]
async fn an_inner_longer_deadline_does_not_outlive_the_enclosing_one() {
    use palisade_core::context::{CarryLayer, ResumeLayer};

    let below = ResumeLayer::new().layer(DeadlineLayer::new(ms(1_000)).layer(service_fn(
        |job: Job| async move {
            sleep(ms(job.ms)).await;
            Ok::<u64, BoxError>(job.ms)
        },
    )));
    let spawned = Arc::new(std::sync::Mutex::new(None));
    let slot = Arc::clone(&spawned);
    let boundary = service_fn(move |job: Job| {
        let mut below = below.clone();
        *slot.lock().unwrap() = Some(tokio::spawn(below.call(job)));
        // The caller waits for nothing it can get early: only its own deadline ends the wait.
        std::future::pending::<Result<u64, BoxError>>()
    });
    let mut svc = DeadlineLayer::new(ms(100)).layer(CarryLayer::new().layer(boundary));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Job {
            ms: 500,
            context: None,
        })
        .await
        .unwrap_err();
    assert!(is::<DeadlineExceeded>(&err), "{err}");
    assert_eq!(start.elapsed(), ms(100));
    // The spawned side ends at the caller's deadline too, not 400 ms later with an answer
    // nobody waits for, and says so: the caller's 100 ms, not its own 1 s.
    let task = spawned.lock().unwrap().take().unwrap();
    let below = task.await.unwrap();
    assert!(
        matches!(&below, Err(e) if limit_of::<DeadlineExceeded>(e) == Some(ms(100))),
        "{below:?}"
    );
    assert_eq!(start.elapsed(), ms(100));
}

/// `DeadlineFuture::deadline` reports the instant the call fails at. A clock started in `call`
/// (a layer below read the deadline there) under an enclosing deadline that ends first is bounded
/// by it from the start: before the first poll too, not only once the timer is armed.
#[tokio::test(start_paused = true)]
async fn a_clock_started_in_the_call_reports_the_enclosing_deadline_when_it_ends_first() {
    let mut svc = DeadlineLayer::new(ms(100)).layer(service_fn(|n: u64| {
        // Read in the call, as a `CarryLayer` does: the clock starts here.
        let seen = context::deadline();
        async move {
            sleep(ms(n)).await;
            Ok::<_, BoxError>(seen)
        }
    }));
    let outer = Instant::now() + ms(50);
    let fut = context::with_deadline(outer, || svc.call(500));
    assert_eq!(fut.deadline(), Some(outer), "before the first poll");
    let mut fut = pin!(fut);
    let polled = context::with_deadline(outer, || {
        fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    });
    assert!(polled.is_pending());
    assert_eq!(fut.deadline(), Some(outer), "once armed");
    let err = poll_fn(|cx| context::with_deadline(outer, || fut.as_mut().poll(cx)))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), outer, "it fails at the instant it reported");
    // It says how long it was granted: the 50 ms the enclosing deadline left it.
    assert_eq!(limit_of::<DeadlineExceeded>(&err), Some(ms(50)));

    // An enclosing deadline that ends later changes nothing.
    let start = Instant::now();
    let fut = context::with_deadline(start + ms(1_000), || svc.call(500));
    assert_eq!(fut.deadline(), Some(start + ms(100)));
}

/// Each layer is named after itself unless given a name, keeps its name through
/// `share_deadline_timer` and hands it to its services; a deadline built with a builder is
/// checked like a timeout.
#[test]
fn layers_take_a_name_for_their_metrics() {
    use crate::{DEFAULT_DEADLINE_NAME, DEFAULT_TIMEOUT_NAME};

    let unnamed = TimeoutLayer::new(ms(10));
    assert_eq!(unnamed.name(), DEFAULT_TIMEOUT_NAME);
    assert_eq!(DEFAULT_TIMEOUT_NAME, "timeout");
    let built = TimeoutLayer::builder(ms(10)).build().unwrap();
    assert_eq!(built.name(), "timeout");
    let named = TimeoutLayer::builder(ms(10))
        .escalate(2.0, ms(40))
        .name("llm")
        .build()
        .unwrap()
        .share_deadline_timer();
    assert_eq!(named.name(), "llm");
    let svc = named.layer(service_fn(|x: u64| ready(Ok::<_, BoxError>(x))));
    assert_eq!(svc.name(), "llm");
    assert_eq!(Timeout::new((), ms(1)).name(), "timeout");

    let unnamed = DeadlineLayer::new(ms(10));
    assert_eq!(unnamed.name(), DEFAULT_DEADLINE_NAME);
    assert_eq!(DEFAULT_DEADLINE_NAME, "deadline");
    let named = DeadlineLayer::builder(ms(10))
        .name(String::from("db"))
        .build()
        .unwrap();
    assert_eq!((named.limit(), named.name()), (ms(10), "db"));
    assert_eq!(named.layer(()).name(), "db");
    assert_eq!(Deadline::new((), ms(1)).name(), "deadline");
    assert_eq!(
        DeadlineLayer::builder(ms(10)).build().unwrap().name(),
        "deadline"
    );
    let err = DeadlineLayer::builder(Duration::ZERO)
        .name("db")
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("deadline", "must be greater than zero")
    );
}

/// A deadline that ends before an attempt's time is up, both timers firing in the same tick
/// of tokio's millisecond timer (100.2 ms over 100.6 ms): the call fails with the deadline's
/// error and the attempt is dropped unmarked (not blamed on its endpoint), with the attempt's
/// own timer as with one shared with the deadline. (With its own timer, it failed with the
/// attempt's retryable `Elapsed`, marked as timed out.) A tie, 100 ms over 100 ms, is the
/// attempt's timeout with either timer.
#[tokio::test(start_paused = true)]
async fn a_deadline_ending_first_in_the_same_tick_fails_the_call_as_the_deadline() {
    for shared in [false, true] {
        for (deadline, attempt, deadline_wins) in
            [(100_200, 100_600, true), (100_000, 100_000, false)]
        {
            let seen = Arc::default();
            let deadline = DeadlineLayer::new(Duration::from_micros(deadline));
            let timeout = TimeoutLayer::new(Duration::from_micros(attempt));
            let err = if shared {
                let mut svc =
                    deadline.layer(timeout.share_deadline_timer().layer(hanging(&seen, false)));
                svc.ready().await.unwrap().call(0).await.unwrap_err()
            } else {
                let mut svc = deadline.layer(timeout.layer(hanging(&seen, false)));
                svc.ready().await.unwrap().call(0).await.unwrap_err()
            };
            let case = format!("shared {shared}, deadline wins {deadline_wins}: {err}");
            assert_eq!(err.is::<DeadlineExceeded>(), deadline_wins, "{case}");
            assert_eq!(err.is::<Elapsed>(), !deadline_wins, "{case}");
            assert_eq!(seen_so_far(&seen), [!deadline_wins], "{case}");
        }
    }
}

// ---- review: which limit the caller's error names ----

/// The docs (crate `# Errors`): a `DeadlineExceeded` says the time the call was granted. When
/// the deadline ends first but both timers fire in the same millisecond tick, the attempt's
/// own timer sees it first and fails the call with `DeadlineExceeded::new()`: no limit, and the
/// message `deadline exceeded` instead of `deadline of 100.2 ms exceeded`. With a shared timer
/// the same call reports the limit.
#[tokio::test(start_paused = true)]
async fn review_same_tick_deadline_error_names_the_granted_limit() {
    for shared in [true, false] {
        let seen = Arc::default();
        let deadline = DeadlineLayer::new(Duration::from_micros(100_200));
        let timeout = TimeoutLayer::new(Duration::from_micros(100_600));
        let err = if shared {
            let mut svc =
                deadline.layer(timeout.share_deadline_timer().layer(hanging(&seen, false)));
            svc.ready().await.unwrap().call(0).await.unwrap_err()
        } else {
            let mut svc = deadline.layer(timeout.layer(hanging(&seen, false)));
            svc.ready().await.unwrap().call(0).await.unwrap_err()
        };
        assert!(err.is::<DeadlineExceeded>(), "shared {shared}: {err}");
        assert_eq!(
            limit_of::<DeadlineExceeded>(&err),
            Some(Duration::from_micros(100_200)),
            "shared {shared}: {err}"
        );
    }
}
