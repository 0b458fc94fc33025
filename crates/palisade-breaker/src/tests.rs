//! The layer as a service, on the paused clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use palisade_classify::{BoxError, Category, class_of};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::*;

fn layer(f: impl FnOnce(&mut BreakerConfig)) -> BreakerLayer {
    BreakerLayer::builder("t")
        .configure(|c| {
            *c = BreakerConfig::classic();
            c.jitter = 0.0;
            f(c)
        })
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
        c.slow_call_rate = Some(Rate {
            threshold: 0.5,
            min_calls: 10,
        });
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
    assert_eq!(l.handle().metrics().slow_call_rate, Some(1.0));
}

#[test]
fn bad_configuration_fails_at_build_time_naming_the_field() {
    let err = |f: fn(&mut BreakerConfig)| {
        BreakerLayer::builder("x")
            .configure(f)
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
        err(|c| c.failure_rate = Some(Rate {
            threshold: 1.5,
            min_calls: 1
        })),
        "failure_rate.threshold"
    );
    assert_eq!(
        err(|c| c.failure_rate = Some(Rate {
            threshold: 0.0,
            min_calls: 1
        })),
        "failure_rate.threshold"
    );
    assert_eq!(
        err(|c| c.failure_rate = Some(Rate {
            threshold: 0.5,
            min_calls: 101
        })),
        "failure_rate.min_calls"
    );
    assert_eq!(err(|c| c.half_open_probes = 0), "half_open_probes");
    assert_eq!(err(|c| c.success_threshold = 0), "success_threshold");
    assert_eq!(err(|c| c.open_duration = Duration::ZERO), "open_duration");
    assert_eq!(
        err(|c| c.slow_call_rate = Some(Rate {
            threshold: 0.5,
            min_calls: 1
        })),
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

    fn keyed(max_keys: usize) -> KeyedBreakerLayer<&'static str, fn(&Call) -> &'static str> {
        KeyedBreakerLayer::builder("model")
            .config(BreakerConfig {
                jitter: 0.0,
                ..BreakerConfig::classic()
            })
            .max_keys(max_keys)
            .idle_timeout(Duration::from_secs(60))
            .build((|c: &Call| c.model) as fn(&Call) -> &'static str)
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
        assert!(err.is::<CircuitOpen>());
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
            .configure(|c| {
                *c = BreakerConfig::classic();
                c.jitter = 0.0;
            })
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
        assert!(err.is::<CircuitOpen>());
        assert_eq!(calls.load(Ordering::SeqCst), before);
        // ...and opening it tripped every child, which probe on their own later.
        assert_eq!(child_handle.get(&"a").unwrap().state(), State::Open);
        assert_eq!(child_handle.get(&"b").unwrap().state(), State::Open);
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = KeyedBreakerLayer::builder("x")
            .max_keys(0)
            .build::<u32, _>(|c: &u32| *c)
            .unwrap_err();
        assert_eq!(err.field(), "max_keys");
        let err = KeyedBreakerLayer::builder("x")
            .config(BreakerConfig {
                half_open_probes: 0,
                ..BreakerConfig::classic()
            })
            .build::<u32, _>(|c: &u32| *c)
            .unwrap_err();
        assert_eq!(err.field(), "half_open_probes");
    }
}
