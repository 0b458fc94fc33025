//! The layer as a service, on the paused clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use palisade_classify::{BoxError, Category, class_of};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::*;

/// The classic configuration without jitter, changed by `f`.
fn classic(f: impl FnOnce(&mut BreakerConfig)) -> BreakerConfig {
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

mod keyed {
    use super::*;

    /// A model call: which model, and whether it works.
    #[derive(Clone, Debug)]
    struct Call {
        model: &'static str,
        ok: bool,
    }

    fn models() -> impl Service<Call, Response = (), Error = BoxError, Future: Send> + Clone {
        service_fn(|c: Call| async move {
            if c.ok {
                Ok(())
            } else {
                Err::<(), BoxError>("503 overloaded".into())
            }
        })
    }

    fn keyed(
        max_keys: usize,
    ) -> KeyedBreakerLayer<&'static str, impl Fn(&Call) -> &'static str + Clone> {
        KeyedBreakerLayer::builder("model", |c: &Call| c.model)
            .config(classic(|_| {}))
            .max_keys(max_keys)
            .idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_breaker() {
        let layer = keyed(16);
        let handle = layer.handle();
        let mut svc = layer.layer(models());
        for _ in 0..5 {
            let _ = svc
                .ready()
                .await
                .unwrap()
                .call(Call {
                    model: "big",
                    ok: false,
                })
                .await;
        }
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Call {
                model: "big",
                ok: true,
            })
            .await
            .unwrap_err();
        assert_eq!(
            &*err.downcast_ref::<CircuitOpen>().unwrap().breaker,
            "model[\"big\"]"
        );
        assert_eq!(
            err.to_string(),
            "circuit 'model[\"big\"]' open, retry in 30 s"
        );
        svc.ready()
            .await
            .unwrap()
            .call(Call {
                model: "small",
                ok: true,
            })
            .await
            .unwrap();
        assert_eq!(handle.get(&"big").unwrap().state(), State::Open);
        assert_eq!(handle.get(&"small").unwrap().state(), State::Closed);
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["big", "small"]);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_by_idle_eviction_and_max_keys() {
        let layer = keyed(2);
        let handle = layer.handle();
        let mut svc = layer.layer(models());
        for model in ["a", "b"] {
            svc.ready()
                .await
                .unwrap()
                .call(Call { model, ok: true })
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        svc.ready()
            .await
            .unwrap()
            .call(Call {
                model: "a",
                ok: true,
            })
            .await
            .unwrap();
        // A third key: the least recently used (b) goes.
        svc.ready()
            .await
            .unwrap()
            .call(Call {
                model: "c",
                ok: true,
            })
            .await
            .unwrap();
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        // After the idle timeout, both old keys go when a new one arrives.
        tokio::time::advance(Duration::from_secs(61)).await;
        svc.ready()
            .await
            .unwrap()
            .call(Call {
                model: "d",
                ok: true,
            })
            .await
            .unwrap();
        assert_eq!(handle.keys(), ["d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_parent_fails_its_children_fast_and_propagates() {
        let children = keyed(16);
        let child_handle = children.handle();
        let parent = BreakerLayer::builder("provider")
            .config(classic(|_| {}))
            .listener(child_handle.propagate())
            .build()
            .unwrap();
        let parent_handle = parent.handle();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let inner = service_fn(move |c: Call| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if c.ok {
                    Ok(())
                } else {
                    Err::<(), BoxError>("503".into())
                }
            }
        });
        let mut svc = tower::ServiceBuilder::new()
            .layer(parent)
            .layer(children)
            .service(inner);
        // Two models work, then the provider fails across models.
        for model in ["a", "b"] {
            svc.ready()
                .await
                .unwrap()
                .call(Call { model, ok: true })
                .await
                .unwrap();
        }
        for (i, model) in ["a", "b", "a", "b", "a"].into_iter().enumerate() {
            let _ = svc
                .ready()
                .await
                .unwrap()
                .call(Call { model, ok: false })
                .await;
            assert_eq!(parent_handle.state() == State::Open, i == 4);
        }
        // The parent rejects every model without calling anything...
        let before = calls.load(Ordering::SeqCst);
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Call {
                model: "b",
                ok: true,
            })
            .await
            .unwrap_err();
        // It names the parent that refused, not the child the call was for.
        assert_eq!(
            &*err.downcast_ref::<CircuitOpen>().unwrap().breaker,
            "provider"
        );
        assert_eq!(err.to_string(), "circuit 'provider' open, retry in 30 s");
        assert_eq!(calls.load(Ordering::SeqCst), before);
        // ...and opening it tripped every child, which probe on their own later.
        assert_eq!(child_handle.get(&"a").unwrap().state(), State::Open);
        assert_eq!(child_handle.get(&"b").unwrap().state(), State::Open);
    }

    /// Calls `model` once (working), `n` times.
    async fn use_key<S>(svc: &mut S, model: &'static str)
    where
        S: Service<Call, Response = (), Error = BoxError>,
    {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(Call { model, ok: true })
            .await;
    }

    /// Opens `model`'s breaker: five failures.
    async fn open_key<S>(svc: &mut S, model: &'static str)
    where
        S: Service<Call, Response = (), Error = BoxError>,
    {
        for _ in 0..5 {
            let _ = svc
                .ready()
                .await
                .unwrap()
                .call(Call { model, ok: false })
                .await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_new_keys_never_evicts_an_open_breaker() {
        let layer = keyed(2);
        let handle = layer.handle();
        let mut svc = layer.layer(models());
        open_key(&mut svc, "busy").await;
        tokio::time::advance(Duration::from_millis(900)).await;
        // From 1 s on, a new key every millisecond, and a call to the busy key every 100 ms.
        // Each new key evicts one: never the open breaker, which keeps rejecting.
        tokio::time::advance(Duration::from_millis(100)).await;
        for i in 0..300 {
            if i % 100 == 50 {
                use_key(&mut svc, "busy").await;
            }
            let key: &'static str = Box::leak(format!("new-{i}").into_boxed_str());
            use_key(&mut svc, key).await;
            assert_eq!(
                handle.get(&"busy").map(|h| h.state()),
                Some(State::Open),
                "after {key}"
            );
            assert_eq!(handle.keys().len(), 2);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recency_is_kept_to_the_millisecond() {
        // Whichever of two keys was used last, 5 ms later than the other, stays.
        for (last, evicted) in [("a", "b"), ("b", "a")] {
            let layer = keyed(2);
            let handle = layer.handle();
            let mut svc = layer.layer(models());
            use_key(&mut svc, "a").await;
            use_key(&mut svc, "b").await;
            tokio::time::advance(Duration::from_millis(5)).await;
            use_key(&mut svc, last).await;
            use_key(&mut svc, "c").await;
            let mut keys = handle.keys();
            keys.sort();
            assert_eq!(keys, [last, "c"], "{evicted} should go");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_open_breaker_stays_until_its_open_period_ends() {
        let layer = KeyedBreakerLayer::builder("model", |c: &Call| c.model)
            .config(classic(|_| {}))
            .idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(models());
        open_key(&mut svc, "a").await;
        use_key(&mut svc, "b").await;
        // Both idle for 2 s: b goes, a (open for 28 s more) stays, still open.
        tokio::time::advance(Duration::from_secs(2)).await;
        use_key(&mut svc, "c").await;
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
        // Once its open period is over, an idle key goes like any other.
        tokio::time::advance(Duration::from_secs(28)).await;
        use_key(&mut svc, "d").await;
        assert_eq!(handle.keys(), ["d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_breaker_is_open_the_cap_evicts_the_one_that_probes_first_and_warns() {
        let capture = Capture::install();
        let layer = keyed(2);
        let handle = layer.handle();
        let mut svc = layer.layer(models());
        open_key(&mut svc, "a").await;
        tokio::time::advance(Duration::from_secs(10)).await;
        open_key(&mut svc, "b").await;
        // Both open (a for 20 s more, b for 30 s), and a new key needs room: a goes.
        use_key(&mut svc, "c").await;
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(handle.get(&"b").unwrap().state(), State::Open);
        let warning = capture
            .events()
            .into_iter()
            .find(|e| e.message().starts_with("evicting an open per-key breaker"))
            .expect("a warning");
        assert_eq!(warning.field("breaker"), Some("model[\"a\"]"));
        assert_eq!(warning.field("open_for_ms"), Some("20000"));
        assert_eq!(warning.level, tracing::Level::WARN);
    }

    #[tokio::test(start_paused = true)]
    async fn tracing_events_name_the_breaker() {
        let capture = Capture::install();
        let children = keyed(16);
        let parent = BreakerLayer::builder("provider")
            .config(classic(|_| {}))
            .half_open_probes(1)
            .probe_timeout(Duration::from_secs(1))
            .listener(children.handle().propagate())
            .build()
            .unwrap();
        let parent_handle = parent.handle();
        let mut svc = tower::ServiceBuilder::new()
            .layer(parent)
            .layer(children)
            .service(service_fn(|c: Call| async move {
                if c.model == "hang" {
                    std::future::pending::<()>().await;
                }
                if c.ok {
                    Ok(())
                } else {
                    Err::<(), BoxError>("503".into())
                }
            }));
        open_key(&mut svc, "a").await;
        // Half-open, with a probe that hangs past the probe timeout.
        tokio::time::advance(Duration::from_secs(30)).await;
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut hung = Box::pin(svc.clone().oneshot(Call {
            model: "hang",
            ok: true,
        }));
        assert!(hung.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        use_key(&mut svc, "b").await;
        assert_eq!(parent_handle.metrics().reopens, 1);
        let events = capture.events();
        for message in [
            "per-key breaker created",
            "circuit opened",
            "circuit state changed",
            "parent opened: tripping its children",
            "half-open probe timed out: counted as failed",
        ] {
            assert!(
                events.iter().any(|e| e.message() == message),
                "no {message:?} in {events:#?}"
            );
        }
        for e in &events {
            let name = e.field("breaker").unwrap_or_else(|| panic!("{e:?}"));
            assert!(
                name.starts_with("provider") || name.starts_with("model"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = KeyedBreakerLayer::builder("x", |c: &u32| *c)
            .max_keys(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_keys");
        let err = KeyedBreakerLayer::builder("x", |c: &u32| *c)
            .config(BreakerConfig::classic())
            .half_open_probes(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "half_open_probes");
    }
}

/// Records the `palisade_breaker` tracing events of the threads that asked for them.
///
/// It is installed once, as the global default, rather than per test with `set_default`:
/// tracing caches each callsite's interest process-wide, and a test on another thread that
/// reaches a callsite first while no scoped subscriber listens can cache "never" for it, racing
/// a test that has just installed its own (its events then go unseen). A global subscriber that
/// is always interested leaves no such race; each test reads only its own thread's events (the
/// paused-clock runtime is current-thread, so a test's events land on its thread).
struct Capture {
    _not_send: std::marker::PhantomData<*const ()>,
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<Captured>>> =
        const { std::cell::RefCell::new(None) };
}

#[derive(Debug)]
struct Captured {
    level: tracing::Level,
    fields: Vec<(&'static str, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn message(&self) -> &str {
        self.field("message").unwrap_or_default()
    }
}

impl Capture {
    /// Starts keeping this thread's events until the returned value is dropped.
    fn install() -> Capture {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Global).expect("no other global subscriber");
            // Callsites registered before, while no subscriber listened, cached "never".
            tracing::callsite::rebuild_interest_cache();
        });
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        Capture {
            _not_send: std::marker::PhantomData,
        }
    }

    /// This thread's events so far (taken).
    fn events(&self) -> Vec<Captured> {
        CAPTURED.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURED.with(|c| *c.borrow_mut() = None);
    }
}

impl tracing::field::Visit for Captured {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.fields.push((field.name(), format!("{value:?}")));
    }
}

/// The process-wide subscriber behind [`Capture`].
struct Global;

impl tracing::Subscriber for Global {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "palisade_breaker"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        CAPTURED.with(|c| {
            if let Some(events) = c.borrow_mut().as_mut() {
                let mut captured = Captured {
                    level: *event.metadata().level(),
                    fields: Vec::new(),
                };
                event.record(&mut captured);
                events.push(captured);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
