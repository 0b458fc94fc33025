//! A timeout that shares its deadline's timer ([`SharedTimer`]) behaves as one with its own,
//! and keeps no timer of its own where a deadline serves it.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use palisade_core::context::timer;
use palisade_core::{BoxError, attempt};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::error::{DeadlineExceeded, Elapsed};
use crate::tests::{hanging, limit_of, ms, seen_so_far, slow};
use crate::timer::{SharedTimer, TimerKind};
use crate::{DeadlineLayer, Timeout, TimeoutLayer};

fn shared(
    limit: Duration,
) -> Timeout<impl Service<u64, Response = u64, Error = BoxError> + Clone, SharedTimer> {
    TimeoutLayer::new(limit)
        .share_deadline_timer()
        .layer(slow())
}

/// What a call ended with: an answer, or an error with the limit it reports.
#[derive(Debug, PartialEq)]
enum End {
    Answer(u64),
    Elapsed(Option<Duration>),
    DeadlineExceeded(Option<Duration>),
    Other(String),
}

fn end(out: Result<u64, BoxError>) -> End {
    match out {
        Ok(n) => End::Answer(n),
        Err(e) => match (e.downcast_ref::<Elapsed>(), e.downcast_ref()) {
            (Some(elapsed), _) => End::Elapsed(elapsed.limit()),
            (_, Some(DeadlineExceeded { .. })) => {
                End::DeadlineExceeded(limit_of::<DeadlineExceeded>(&e))
            }
            _ => End::Other(e.to_string()),
        },
    }
}

/// Under a deadline of `deadline`: two attempts one after the other, as a retry makes them,
/// each under a timeout of `timeout` of kind `K`, the first taking `first` and the second
/// `second` milliseconds. What the whole call ended with, and after how long.
async fn two_attempts<K: TimerKind>(
    deadline: u64,
    timeout: u64,
    first: u64,
    second: u64,
    layer: TimeoutLayer<K>,
) -> (End, End, Duration) {
    assert_eq!(layer.timeout(), ms(timeout));
    let attempt = layer.layer(slow());
    let first_end = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&first_end);
    let retry = service_fn(move |_: u64| {
        let mut attempt = attempt.clone();
        let seen = Arc::clone(&seen);
        async move {
            let out = attempt.ready().await?.call(first).await;
            *seen.lock().unwrap() = Some(end(out));
            attempt.ready().await?.call(second).await
        }
    });
    let mut svc = DeadlineLayer::new(ms(deadline)).layer(retry);
    let start = Instant::now();
    let out = svc.ready().await.unwrap().call(0).await;
    let first = first_end
        .lock()
        .unwrap()
        .take()
        .unwrap_or(End::Other("none".into()));
    (first, end(out), start.elapsed())
}

/// The same scenarios with each kind of timer give the same results at the same instants:
/// attempts answered in time, attempts timed out then retried, a deadline before, at and after
/// an attempt's end.
#[tokio::test(start_paused = true)]
async fn a_shared_timer_gives_the_results_and_instants_of_an_own_one() {
    let cases = [
        // (deadline, timeout, first, second)
        (1_000, 100, 99, 50),
        (1_000, 100, 101, 50),
        (1_000, 100, 150, 150),
        (120, 100, 150, 50),
        (100, 100, 150, 50),
        (100, 100, 99, 50),
        (50, 100, 150, 50),
        (250, 100, 150, 99),
        (200, 100, 150, 150),
    ];
    for (deadline, timeout, first, second) in cases {
        let own = two_attempts(
            deadline,
            timeout,
            first,
            second,
            TimeoutLayer::new(ms(timeout)),
        )
        .await;
        let shared = two_attempts(
            deadline,
            timeout,
            first,
            second,
            TimeoutLayer::new(ms(timeout)).share_deadline_timer(),
        )
        .await;
        assert_eq!(
            shared, own,
            "deadline {deadline}, timeout {timeout}, attempts {first} and {second}"
        );
    }
    // And what they are, for a few of them.
    let shared =
        |d, t, a, b| two_attempts(d, t, a, b, TimeoutLayer::new(ms(t)).share_deadline_timer());
    assert_eq!(
        shared(1_000, 100, 101, 50).await,
        (End::Elapsed(Some(ms(100))), End::Answer(50), ms(150))
    );
    assert_eq!(
        shared(1_000, 100, 150, 150).await,
        (
            End::Elapsed(Some(ms(100))),
            End::Elapsed(Some(ms(100))),
            ms(200)
        )
    );
    assert_eq!(
        shared(120, 100, 150, 50).await,
        (
            End::Elapsed(Some(ms(100))),
            End::DeadlineExceeded(Some(ms(120))),
            ms(120)
        )
    );
    assert_eq!(
        shared(50, 100, 150, 50).await,
        (
            End::Other("none".into()),
            End::DeadlineExceeded(Some(ms(50))),
            ms(50)
        )
    );
}

/// Polled inside an owner with the owner's waker, a waiting attempt asks to be woken at its
/// end and keeps no timer; once the owner says that instant passed, it times out.
#[tokio::test(start_paused = true)]
async fn a_waiting_attempt_asks_its_owner_for_a_wake_and_keeps_no_timer() {
    let mut svc = shared(ms(100));
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(500));
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let start = Instant::now();
    assert_eq!(fut.has_own_timer(), None);
    let (polled, wake) = timer::with_owner(waker, None, || fut.as_mut().poll(&mut cx));
    assert!(polled.is_pending());
    assert_eq!(wake, Some(start + ms(100)));
    assert_eq!(fut.has_own_timer(), Some(false));
    // Woken early (by the attempt's own I/O, say): it asks again, for the same instant.
    tokio::time::advance(ms(60)).await;
    let (polled, wake) =
        timer::with_owner(waker, Some(start + ms(60)), || fut.as_mut().poll(&mut cx));
    assert!(polled.is_pending());
    assert_eq!(wake, Some(start + ms(100)));
    // The owner's timer fired a nanosecond early: not yet.
    let early = start + ms(100) - Duration::from_nanos(1);
    let (polled, _) = timer::with_owner(waker, Some(early), || fut.as_mut().poll(&mut cx));
    assert!(polled.is_pending());
    // At the end: the attempt is dropped marked as timed out, and fails with `Elapsed`.
    tokio::time::advance(ms(40)).await;
    let (polled, wake) =
        timer::with_owner(waker, Some(start + ms(100)), || fut.as_mut().poll(&mut cx));
    let Poll::Ready(Err(err)) = polled else {
        panic!("the attempt should have timed out");
    };
    assert_eq!(limit_of::<Elapsed>(&err), Some(ms(100)));
    assert_eq!(wake, None);
    assert!(!attempt::timing_out());
}

/// With nobody to share with (no deadline above, or a combinator polling it with a waker of
/// its own), a shared timeout boxes a timer of its own and still fails at its limit.
#[tokio::test(start_paused = true)]
async fn without_an_owner_it_keeps_a_timer_of_its_own() {
    // No deadline above.
    let mut svc = shared(ms(100));
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(500));
    let start = Instant::now();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(fut.has_own_timer(), Some(true));
    let err = fut.await.unwrap_err();
    assert_eq!(limit_of::<Elapsed>(&err), Some(ms(100)));
    assert_eq!(start.elapsed(), ms(100));

    // Under a deadline, but inside a `FuturesUnordered`, which polls it with a waker of its
    // own: the deadline's timer would wake the task, not the attempt.
    let attempt = shared(ms(100));
    let racing = service_fn(move |_: u64| {
        let attempt = attempt.clone();
        async move {
            let mut set: FuturesUnordered<_> = [100_u64, 500]
                .into_iter()
                .map(|n| {
                    let mut attempt = attempt.clone();
                    async move { attempt.ready().await?.call(n).await }
                })
                .collect();
            let mut ends = Vec::new();
            while let Some(out) = set.next().await {
                ends.push(end(out));
            }
            Ok::<_, BoxError>(ends)
        }
    });
    let mut svc = DeadlineLayer::new(ms(1_000)).layer(racing);
    let start = Instant::now();
    let ends = svc.ready().await.unwrap().call(0).await.unwrap();
    // The one that answers at 100 ms does (it is not past its limit); the other times out at
    // its own 100 ms, not at the deadline.
    assert_eq!(ends, [End::Answer(100), End::Elapsed(Some(ms(100)))]);
    assert_eq!(start.elapsed(), ms(100));
}

/// A deadline that fires over a shared timeout whose attempt ends later drops the attempt
/// unmarked, as with a timer of its own.
#[tokio::test(start_paused = true)]
async fn a_deadline_before_the_attempts_end_drops_it_unmarked() {
    let seen = Arc::default();
    let inner = hanging(&seen, false);
    let mut svc = DeadlineLayer::new(ms(100)).layer(
        TimeoutLayer::new(ms(200))
            .share_deadline_timer()
            .layer(inner.clone()),
    );
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(seen_so_far(&seen), [false]);
    // And the other way round: the attempt's end first, dropped marked.
    let mut svc = DeadlineLayer::new(ms(200)).layer(
        TimeoutLayer::new(ms(100))
            .share_deadline_timer()
            .layer(inner),
    );
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(seen_so_far(&seen), [true]);
}

/// A limit too long to add to the clock means no limit, as with a timer of its own: no panic,
/// and the deadline above still ends the call.
#[tokio::test(start_paused = true)]
async fn an_enormous_shared_limit_means_no_limit() {
    let mut svc = DeadlineLayer::new(ms(300)).layer(
        TimeoutLayer::new(Duration::MAX)
            .share_deadline_timer()
            .layer(slow()),
    );
    assert_eq!(svc.ready().await.unwrap().call(200).await.unwrap(), 200);
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(400).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), ms(300));
}

/// What a waiting attempt's future and its timer print: the attempt's end, and whether it fell
/// back to a timer of its own.
#[tokio::test(start_paused = true)]
async fn a_waiting_attempt_describes_its_timer() {
    let never = service_fn(|_: u64| std::future::pending::<Result<u64, BoxError>>());
    let mut svc = TimeoutLayer::new(ms(100))
        .share_deadline_timer()
        .layer(never);
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(500));
    let mut cx = Context::from_waker(Waker::noop());
    let end = Instant::now() + ms(100);
    assert!(format!("{fut:?}").contains("Idle"), "{fut:?}");
    // Without an owner: its own timer.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let printed = format!("{fut:?}");
    assert!(printed.starts_with("ResponseFuture {"), "{printed}");
    assert!(printed.contains("SharedSleep"), "{printed}");
    assert!(printed.contains(&format!("end: {end:?}")), "{printed}");
    assert!(printed.contains("own_timer: true"), "{printed}");
}

/// An escalating shared timeout reports the escalated limit that ran out, as one with a timer
/// of its own does, whether the deadline's timer served it or it boxed one of its own.
#[tokio::test(start_paused = true)]
async fn a_shared_timeout_reports_its_escalated_limit() {
    let layer = TimeoutLayer::builder(ms(100))
        .escalate(2.0, ms(1_000))
        .build()
        .unwrap();
    for (shared, own_timer) in [(true, false), (true, true), (false, true)] {
        for (n, limit) in [(0, 100), (1, 200), (3, 800), (4, 1_000)] {
            let ends = if shared {
                let mut attempt = layer.share_deadline_timer().layer(slow());
                attempt.ready().await.unwrap();
                let fut = palisade_core::context::attempt::with_timeouts_so_far(n, || {
                    attempt.call(5_000)
                });
                if own_timer {
                    end(fut.await)
                } else {
                    let mut fut = Some(fut);
                    let waiting = service_fn(move |_: u64| fut.take().unwrap());
                    let mut svc = DeadlineLayer::new(ms(10_000)).layer(waiting);
                    end(svc.ready().await.unwrap().call(0).await)
                }
            } else {
                let mut attempt = layer.layer(slow());
                attempt.ready().await.unwrap();
                let fut = palisade_core::context::attempt::with_timeouts_so_far(n, || {
                    attempt.call(5_000)
                });
                end(fut.await)
            };
            assert_eq!(
                ends,
                End::Elapsed(Some(ms(limit))),
                "shared {shared}, own timer {own_timer}, {n} timeouts so far"
            );
        }
    }
}

/// A shared timeout's timer keeps its limit in the space it had: an instant and a word.
#[test]
fn a_shared_timer_is_an_instant_and_a_word() {
    use crate::timer::SharedSleep;
    assert_eq!(
        std::mem::size_of::<SharedSleep>(),
        std::mem::size_of::<Instant>() + std::mem::size_of::<u64>()
    );
}
