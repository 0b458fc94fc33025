//! The switchboard on the paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class, Classified};
use tower::{Layer, ServiceExt, service_fn};

use crate::tests::Refused;
use crate::*;

fn summariser(
    up: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<u32, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |n: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        let up = up.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(format!("summary {n}"))
            } else {
                Err::<String, BoxError>("503 overloaded".into())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_failing_feature_turns_itself_off_and_back_on_after_a_probe() {
    let board = Switchboard::new();
    let config = FeatureConfig {
        failures_to_turn_off: Some(3),
        ..FeatureConfig::default()
    };
    let feature = board.feature_with("summaries", config).unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("no summary".to_owned()))
        .layer(summariser(up.clone(), calls.clone()));
    // Three failures (each answered by the fallback) turn it off.
    for n in 0..3 {
        let a = svc.clone().oneshot(n).await.unwrap();
        assert_eq!(a.into_inner(), "no summary");
    }
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    // While off, calls never reach it.
    for n in 0..10 {
        let a = svc.clone().oneshot(n).await.unwrap();
        // A refusal, not a failure of the dependency.
        assert_eq!(a.degraded().unwrap().class.category, Category::Rejected);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // After the cool-down, one probe: it fails, so off for another 30 s.
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = svc.clone().oneshot(0).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    // It recovers; the next probe succeeds and the feature is back on.
    up.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(29_999)).await;
    let _ = svc.clone().oneshot(0).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4, "still cooling down");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        svc.clone().oneshot(7).await.unwrap(),
        Answer::Primary("summary 7".to_owned())
    );
    assert_eq!(feature.state(), FeatureState::On);
    let status = board.snapshot();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "summaries");
    // Back on after a good probe: the failed probe and the three before are forgotten.
    assert_eq!(status[0].recent_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_recovered_feature_starts_with_a_clean_record() {
    let board = Switchboard::new();
    let config = FeatureConfig {
        failures_to_turn_off: Some(3),
        ..FeatureConfig::default()
    };
    let feature = board.feature_with("summaries", config).unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("no summary".to_owned()))
        .layer(summariser(up.clone(), calls.clone()));
    for n in 0..3 {
        let _ = svc.clone().oneshot(n).await.unwrap();
    }
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    // 30 s later (the three failures still inside the 60 s window) a probe succeeds.
    up.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!svc.clone().oneshot(0).await.unwrap().is_degraded());
    assert_eq!(feature.state(), FeatureState::On);
    assert_eq!(board.snapshot()[0].recent_failures, 0);
    // Two failures after the recovery leave it on; the third within the window turns it off.
    up.store(false, Ordering::SeqCst);
    for n in 0..2 {
        let _ = svc.clone().oneshot(n).await.unwrap();
        assert_eq!(
            feature.state(),
            FeatureState::On,
            "failure {n} after recovery"
        );
    }
    assert_eq!(board.snapshot()[0].recent_failures, 2);
    let _ = svc.clone().oneshot(2).await.unwrap();
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 7);

    // Turned back on by hand from an automatic off, it starts clean too.
    feature.turn_on();
    assert_eq!(board.snapshot()[0].recent_failures, 0);
    let _ = svc.clone().oneshot(3).await.unwrap();
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn operators_switch_features_by_hand() {
    let board = Switchboard::new();
    let feature = board.feature("search");
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(summariser(Arc::new(AtomicBool::new(true)), calls.clone()));
    feature.turn_off();
    assert_eq!(svc.clone().oneshot(1).await.unwrap().into_inner(), "off");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Manual off does not end by itself.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(feature.state(), FeatureState::TurnedOff);
    feature.turn_on();
    assert_eq!(svc.oneshot(1).await.unwrap().into_inner(), "summary 1");
    // The same name gives the same feature.
    assert!(board.feature("search").is_on());
    let config = FeatureConfig {
        failures_to_turn_off: Some(0),
        ..FeatureConfig::default()
    };
    let err = board.feature_with("x", config).unwrap_err();
    assert_eq!(err.field(), "failures_to_turn_off");
}

#[tokio::test(start_paused = true)]
async fn client_faults_do_not_turn_a_feature_off() {
    let board = Switchboard::new();
    let config = FeatureConfig {
        failures_to_turn_off: Some(2),
        ..FeatureConfig::default()
    };
    let feature = board.feature_with("f", config).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant(String::new())).layer(service_fn(
        |_: u32| async { Err::<String, BoxError>("400 invalid request".into()) },
    ));
    for n in 0..10 {
        let _ = svc.clone().oneshot(n).await;
    }
    assert!(feature.is_on());
}
#[tokio::test(start_paused = true)]
async fn the_default_feature_turns_off_after_five_failures() {
    let board = Switchboard::new();
    let feature = board.feature("summaries");
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("no summary".to_owned()))
        .layer(summariser(Arc::new(AtomicBool::new(false)), calls.clone()));
    for n in 0..4 {
        let _ = svc.clone().oneshot(n).await.unwrap();
        assert!(feature.is_on(), "failure {n}");
    }
    let _ = svc.clone().oneshot(4).await.unwrap();
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    let _ = svc.clone().oneshot(5).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_feature_without_a_failure_limit_is_turned_off_only_by_hand() {
    let board = Switchboard::new();
    let config = FeatureConfig {
        failures_to_turn_off: None,
        ..FeatureConfig::default()
    };
    let feature = board.feature_with("summaries", config).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("no summary".to_owned()))
        .layer(summariser(Arc::new(AtomicBool::new(false)), calls.clone()));
    for n in 0..50 {
        let _ = svc.clone().oneshot(n).await.unwrap();
    }
    assert!(feature.is_on());
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    assert_eq!(board.snapshot()[0].recent_failures, 50);
    feature.turn_off();
    assert_eq!(feature.state(), FeatureState::TurnedOff);
}

#[test]
fn a_feature_config_checks_every_field() {
    assert_eq!(FeatureConfig::default().validate(), Ok(()));
    let check = |change: fn(&mut FeatureConfig)| {
        let mut config = FeatureConfig::default();
        change(&mut config);
        config.validate().map_err(|e| e.field().to_owned())
    };
    assert_eq!(
        check(|c| c.failures_to_turn_off = Some(0)),
        Err("failures_to_turn_off".to_owned())
    );
    assert_eq!(check(|c| c.failures_to_turn_off = Some(1)), Ok(()));
    assert_eq!(check(|c| c.failures_to_turn_off = None), Ok(()));
    assert_eq!(
        check(|c| c.cooldown = Duration::ZERO),
        Err("cooldown".to_owned())
    );
    // A cool-down is kept in whole milliseconds: a shorter one would be none at all.
    assert_eq!(
        check(|c| c.cooldown = Duration::from_nanos(1)),
        Err("cooldown".to_owned())
    );
    assert_eq!(
        check(|c| c.cooldown = Duration::from_micros(999)),
        Err("cooldown".to_owned())
    );
    assert_eq!(check(|c| c.cooldown = Duration::from_millis(1)), Ok(()));
    assert_eq!(
        check(|c| c.window = Duration::ZERO),
        Err("window".to_owned())
    );
    assert_eq!(
        check(|c| c.window = Duration::from_nanos(9)),
        Err("window".to_owned())
    );
    assert_eq!(check(|c| c.window = Duration::from_nanos(10)), Ok(()));
    assert_eq!(
        check(|c| c.window = Duration::MAX),
        Err("window".to_owned())
    );
    assert_eq!(
        FeatureConfig::default().probe_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(
        check(|c| c.probe_timeout = Duration::ZERO),
        Err("probe_timeout".to_owned())
    );
    assert_eq!(
        check(|c| c.probe_timeout = Duration::from_micros(999)),
        Err("probe_timeout".to_owned())
    );
    assert_eq!(
        check(|c| c.probe_timeout = Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(check(|c| c.probe_timeout = Duration::MAX), Ok(()));
    // The error names the field and its rule; the switchboard refuses such a feature.
    let config = FeatureConfig {
        probe_timeout: Duration::ZERO,
        ..FeatureConfig::default()
    };
    let err = Switchboard::new().feature_with("f", config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: `probe_timeout` must be at least one millisecond"
    );
    let config = FeatureConfig {
        cooldown: Duration::from_micros(500),
        ..FeatureConfig::default()
    };
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "cooldown");
    assert_eq!(
        err.to_string(),
        "invalid configuration: `cooldown` must be at least one millisecond"
    );
    let err = Switchboard::new().feature_with("f", config).unwrap_err();
    assert_eq!(err.field(), "cooldown");
}

#[test]
fn a_window_out_of_bounds_is_refused_with_the_documented_limits() {
    let years = |n: u64| Duration::from_secs(n * 365 * 24 * 60 * 60);
    let window = |window: Duration| FeatureConfig {
        window,
        ..FeatureConfig::default()
    };
    // Below 10 ns: the rule says 10 ns, not the failure window's "per bucket", which a
    // feature's configuration does not set.
    for short in [
        Duration::ZERO,
        Duration::from_nanos(5),
        Duration::from_nanos(9),
    ] {
        let err = window(short).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: `window` must be at least 10 ns (one nanosecond for each \
             tenth of the window it slides in)",
            "{short:?}"
        );
    }
    assert_eq!(window(Duration::from_nanos(10)).validate(), Ok(()));
    // At 5,800 years and beyond: the documented limit, not a bucket's 584 years.
    let just_under = years(5_800) - Duration::from_nanos(1);
    assert_eq!(window(just_under).validate(), Ok(()));
    for long in [years(5_800), years(6_000), Duration::MAX] {
        let err = window(long).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: `window` must be shorter than 5,800 years",
            "{long:?}"
        );
    }
    // The switchboard says the same.
    let board = Switchboard::new();
    let err = board
        .feature_with("f", window(Duration::from_nanos(5)))
        .unwrap_err();
    assert_eq!(err.field(), "window");
    assert!(err.rule().starts_with("must be at least 10 ns"), "{err}");
    let err = board.feature_with("f", window(years(6_000))).unwrap_err();
    assert_eq!(err.rule(), "must be shorter than 5,800 years");
    assert!(board.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_one_millisecond_cool_down_refuses_calls_for_that_millisecond() {
    let config = FeatureConfig {
        cooldown: Duration::from_millis(1),
        ..limit(1)
    };
    let feature = Switchboard::new().feature_with("f", config).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(hanging(calls.clone()));
    let _ = svc.clone().oneshot("503").await.unwrap();
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_millis(1)
        }
    );
    // At the same instant, the call is refused; a millisecond later, it is the probe.
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn the_feature_layer_builder_sets_the_fallback() {
    let board = Switchboard::new();
    let feature = board.feature("search");
    feature.turn_off();
    // A fallback that answers server errors only lets the feature's refusal through.
    let svc = FeatureLayer::builder(feature.clone(), Constant("off".to_owned()))
        .handles(|c| c.category == Category::ServerError)
        .build()
        .unwrap()
        .layer(summariser(
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        ));
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<FeatureOff>(),
        Some(&FeatureOff {
            feature: "search".to_owned()
        })
    );
    assert_eq!(err.to_string(), "feature \"search\" is off");
    feature.turn_on();
    assert_eq!(
        svc.oneshot(1).await.unwrap(),
        Answer::Primary("summary 1".to_owned())
    );
}

/// A service that insists on `poll_ready` before each `call`, as tower's `Buffer` does.
#[derive(Clone)]
struct MustBeReady {
    ready: bool,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<u32> for MustBeReady {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called without poll_ready");
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(format!("summary {n}")))
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_readied_while_off_is_refused_even_if_turned_on_since() {
    let feature = Switchboard::new().feature("search");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(MustBeReady {
            ready: false,
            calls: calls.clone(),
        });
    feature.turn_off();
    // Ready at once, without asking the inner service.
    svc.ready().await.unwrap();
    feature.turn_on();
    // The call readied while off is refused: the inner service was not made ready for it.
    let answer = tower::Service::call(&mut svc, 1).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(answer.into_inner(), "off");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The next call, readied while on, reaches the feature.
    svc.ready().await.unwrap();
    let answer = tower::Service::call(&mut svc, 2).await.unwrap();
    assert_eq!(answer, Answer::Primary("summary 2".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "`Gate` response future polled after completion")]
async fn a_finished_gate_future_polled_again_panics() {
    let feature = Switchboard::new().feature("search");
    let mut gate = Gate::new(
        summariser(Arc::new(AtomicBool::new(true)), Arc::default()),
        feature,
    );
    gate.ready().await.unwrap();
    let mut fut = std::pin::pin!(tower::Service::call(&mut gate, 1));
    assert_eq!(fut.as_mut().await.unwrap(), "summary 1");
    let _ = fut.as_mut().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "`Gate` response future polled after completion")]
async fn a_finished_refusal_polled_again_panics() {
    let feature = Switchboard::new().feature("search");
    feature.turn_off();
    let mut gate = Gate::new(
        summariser(Arc::new(AtomicBool::new(true)), Arc::default()),
        feature,
    );
    gate.ready().await.unwrap();
    let mut fut = std::pin::pin!(tower::Service::call(&mut gate, 1));
    let err = fut.as_mut().await.unwrap_err();
    assert!(err.is::<FeatureOff>());
    let _ = fut.as_mut().await;
}

/// Fails after `secs` seconds (counted from its first poll).
fn failing_after()
-> impl tower::Service<u64, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(|secs: u64| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Err::<String, BoxError>("503 overloaded".into())
    })
}

/// A call let through now, to finish later.
async fn start<S: tower::Service<u64> + Clone>(svc: &S) -> S::Future {
    let mut svc = svc.clone();
    ServiceExt::<u64>::ready(&mut svc).await.ok().unwrap();
    svc.call(0)
}

fn limit(failures: u32) -> FeatureConfig {
    FeatureConfig {
        failures_to_turn_off: Some(failures),
        ..FeatureConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_automatic_overrides_a_manual_off() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(failing_after());
    let late = start(&svc).await;
    feature.turn_off();
    // The call let through before fails, which alone would turn the feature off by itself.
    assert!(late.await.unwrap().is_degraded());
    assert_eq!(feature.state(), FeatureState::TurnedOff);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(feature.state(), FeatureState::TurnedOff);
}

#[tokio::test(start_paused = true)]
async fn calls_let_through_before_a_turn_on_do_not_count_after_it() {
    let board = Switchboard::new();
    let feature = board.feature_with("f", limit(2)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(failing_after());
    let late = [start(&svc).await, start(&svc).await];
    for _ in 0..2 {
        let _ = svc.clone().oneshot(0).await.unwrap();
    }
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    feature.turn_on();
    // Two failures, the limit, but of calls let through before the feature was turned on.
    for call in late {
        assert!(call.await.unwrap().is_degraded());
    }
    assert_eq!(feature.state(), FeatureState::On);
    assert_eq!(board.snapshot()[0].recent_failures, 0);
    // A failure of a call let through since counts.
    let _ = svc.clone().oneshot(0).await.unwrap();
    assert_eq!(board.snapshot()[0].recent_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_probe_failing_after_a_turn_on_does_not_turn_the_feature_off() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(failing_after());
    let _ = svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = start(&svc).await;
    feature.turn_on();
    assert!(probe.await.unwrap().is_degraded());
    assert_eq!(feature.state(), FeatureState::On);
    // Without the operator, a failed probe starts the cool-down over.
    let _ = svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = start(&svc).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(probe.await.unwrap().is_degraded());
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
}

/// Answers `(secs, ok)` after `secs` seconds (counted from its first poll): an answer if
/// `ok`, a server error otherwise.
fn after()
-> impl tower::Service<(u64, bool), Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(|(secs, ok): (u64, bool)| answer_after(secs, ok))
}

/// [`after`]'s answer to `(secs, ok)`.
async fn answer_after(secs: u64, ok: bool) -> Result<String, BoxError> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    if ok {
        Ok("fine".to_owned())
    } else {
        Err("503 overloaded".into())
    }
}

/// A call of `req` let through now, to finish later.
/// A feature with a 10 s probe timeout gating a [`hanging`] primary, turned off by one
/// failure, 30 s later: its cool-down just over, the next call a probe. Returns the feature,
/// the gated service and the primary's call count.
async fn turned_off_before_a_hanging_primary() -> (
    Feature,
    impl tower::Service<&'static str, Response = Answer<String>, Error = BoxError> + Clone,
    Arc<AtomicUsize>,
) {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(hanging(calls.clone()));
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    (feature, svc, calls)
}

async fn start_with<Req, S: tower::Service<Req> + Clone>(svc: &S, req: Req) -> S::Future {
    let mut svc = svc.clone();
    ServiceExt::<Req>::ready(&mut svc).await.ok().unwrap();
    svc.call(req)
}

#[tokio::test(start_paused = true)]
async fn a_late_success_is_not_a_probe() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(after());
    let late = start_with(&svc, (5, true)).await;
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // A call let through while on succeeds after the feature turned itself off: it says
    // nothing about the feature now, only a probe does.
    assert!(!late.await.unwrap().is_degraded());
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_probe_succeeding_after_a_manual_off_leaves_it_off() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(after());
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = start_with(&svc, (1, true)).await;
    feature.turn_off();
    assert!(!probe.await.unwrap().is_degraded());
    assert_eq!(feature.state(), FeatureState::TurnedOff);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_the_probe_slot() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(summariser(Arc::new(AtomicBool::new(false)), calls.clone()));
    let _ = svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // The probe is let through, then dropped before it finishes.
    drop(start_with(&svc, 1).await);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The next call is the probe.
    let _ = svc.clone().oneshot(2).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // It failed: the cool-down starts over, and no call goes through meanwhile.
    let _ = svc.clone().oneshot(3).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// The warnings containing `text` recorded since the last call (taken). `Events`, not
/// `Warnings`: the warnings these tests count come from callsites that other tests, running
/// at the same time without a subscriber, reach too, and a scoped subscriber can then miss
/// them (tracing caches a callsite's interest process-wide; see `palisade_test::Events`).
fn warned(events: &palisade_test::Events, text: &str) -> usize {
    events
        .with_message(text)
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .count()
}

#[tokio::test(start_paused = true)]
async fn turning_itself_off_warns_once_per_off_period() {
    let events = palisade_test::Events::start();
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(after());
    let late = start_with(&svc, (1, false)).await;
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    // A late failure and a failed probe extend the off period without a new warning.
    let _ = late.await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    assert_eq!(warned(&events, "turned itself off"), 1);
    feature.turn_on();
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    assert_eq!(warned(&events, "turned itself off"), 1, "one more");
}

#[tokio::test(start_paused = true)]
async fn one_name_one_feature() {
    let board = Switchboard::new();
    let first = board.feature_with("a", limit(1)).unwrap();
    let again = board.feature("a");
    assert!(again.is_on());
    first.turn_off();
    assert_eq!(again.state(), FeatureState::TurnedOff);
    assert!(!again.is_on());
    assert_eq!(board.snapshot().len(), 1);
    // The configuration is the first registration's.
    again.turn_on();
    let svc = FeatureLayer::new(again, Constant("off".to_owned())).layer(after());
    let _ = svc.oneshot((0, false)).await.unwrap();
    assert!(matches!(first.state(), FeatureState::AutoOff { .. }));
    assert!(!first.is_on());
    let other = board.feature("b");
    assert_eq!(other.name(), "b");
    assert_eq!(board.snapshot().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn debug_shows_names_and_states() {
    let board = Switchboard::new();
    let feature = board.feature("search");
    assert_eq!(
        format!("{feature:?}"),
        r#"Feature { name: "search", state: On }"#
    );
    feature.turn_off();
    assert_eq!(
        format!("{board:?}"),
        r#"[FeatureStatus { name: "search", state: TurnedOff, recent_failures: 0 }]"#
    );
    let layer = FeatureLayer::new(feature.clone(), Constant(1u8));
    assert_eq!(
        format!("{layer:?}"),
        r#"FeatureLayer { feature: Feature { name: "search", state: TurnedOff }, .. }"#
    );
    let builder = FeatureLayer::builder(feature.clone(), Constant(1u8));
    assert_eq!(
        format!("{builder:?}"),
        r#"FeatureBuilder { feature: Feature { name: "search", state: TurnedOff }, .. }"#
    );
    let mut gate = Gate::new(after(), feature);
    ServiceExt::<(u64, bool)>::ready(&mut gate).await.unwrap();
    let fut = tower::Service::call(&mut gate, (0, true));
    assert_eq!(format!("{fut:?}"), "GateFuture { .. }");
}

/// A summariser whose readiness fails while `broken`.
#[derive(Clone, Debug, PartialEq)]
struct Unready {
    broken: bool,
}

impl tower::Service<u32> for Unready {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(if self.broken {
            Err("not ready".into())
        } else {
            Ok(())
        })
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok(format!("summary {n}")))
    }
}

#[tokio::test(start_paused = true)]
async fn a_gate_forwards_readiness_while_on_and_gives_its_inner_service_back() {
    let feature = Switchboard::new().feature("f");
    let mut gate = Gate::new(Unready { broken: true }, feature.clone());
    // A readiness that fails fails the call that follows, with its error.
    ServiceExt::<u32>::ready(&mut gate).await.unwrap();
    let err = tower::Service::call(&mut gate, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "not ready");
    // Turned off by hand, it answers ready without asking.
    feature.turn_off();
    ServiceExt::<u32>::ready(&mut gate).await.unwrap();
    assert!(gate.get_ref().broken);
    gate.get_mut().broken = false;
    feature.turn_on();
    ServiceExt::<u32>::ready(&mut gate).await.unwrap();
    assert_eq!(
        tower::Service::call(&mut gate, 3).await.unwrap(),
        "summary 3"
    );
    assert_eq!(gate.clone().into_inner(), Unready { broken: false });
}

/// Answers each request with what it names: a success, a server error, a rate limit, a
/// cancellation, an error the classifier accepts as a normal outcome, or a client fault.
fn answering()
-> impl tower::Service<&'static str, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(|kind: &'static str| async move {
        match kind {
            "ok" => Ok("fine".to_owned()),
            "503" => Err::<String, BoxError>("503 overloaded".into()),
            "429" => Err("429 rate limited".into()),
            "429 2s" | "429 1h" => Err(Classified::new(
                Class::new(Category::RateLimited)
                    .with_retry_after(Duration::from_secs(if kind == "429 2s" { 2 } else { 3600 })),
                "429 rate limited",
            )
            .into()),
            "cancelled" => {
                Err(Classified::new(Category::Cancelled.into(), "caller went away").into())
            }
            "ignored" => Err(Classified::new(Category::Ignored.into(), "nothing new").into()),
            _ => Err("400 invalid request".into()),
        }
    })
}

/// A probe answered by a rate limit with a hint is no verdict either, but the next probe waits
/// for the hint (at most a cool-down): the feature does not send its dependency a probe after
/// every refusal while the dependency asks its callers to wait. No failure is counted.
#[tokio::test(start_paused = true)]
async fn a_probe_answered_by_a_rate_limit_with_a_hint_holds_the_next_probe_back() {
    let board = Switchboard::new();
    let feature = board.feature_with("f", limit(1)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(
        tower::ServiceBuilder::new()
            .map_request(move |kind: &'static str| {
                counted.fetch_add(1, Ordering::SeqCst);
                kind
            })
            .service(answering()),
    );
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let answer = svc.clone().oneshot("429 2s").await.unwrap();
    assert!(answer.is_degraded());
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(2)
        }
    );
    assert_eq!(board.snapshot()[0].recent_failures, 1, "no failure counted");
    // Within the hint the fallback answers, without a call.
    let _ = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    // A hint of an hour holds it back for a cool-down, no longer.
    let _ = svc.clone().oneshot("429 1h").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(feature.state(), FeatureState::On);
}

/// A paced probe's hold is for the outage the probe belongs to: if the feature was turned on
/// by hand while the probe was out, the rate limit it met does not turn the feature off
/// again; and if the feature went off again since, by failures of its own, the newer outage's
/// hold is kept, not cut short to the probe's hint.
#[tokio::test(start_paused = true)]
async fn a_paced_probe_holds_only_its_own_outage() {
    let board = Switchboard::new();
    let feature = board.feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(service_fn(
        |kind: &'static str| async move {
            if kind == "slow 429 2s" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            answering().oneshot(kind.trim_start_matches("slow ")).await
        },
    ));
    for trip_again in [false, true] {
        feature.turn_on();
        let _ = svc.clone().oneshot("503").await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        // The probe goes out (and is answered 5 s later); meanwhile, the feature is turned on.
        let probe = svc.clone().oneshot("slow 429 2s");
        let meanwhile = async {
            tokio::task::yield_now().await;
            feature.turn_on();
            if trip_again {
                // Off again, by a failure of the new outage: held for its cool-down.
                let _ = svc.clone().oneshot("503").await.unwrap();
            }
        };
        let (answer, ()) = tokio::join!(probe, meanwhile);
        assert!(answer.unwrap().is_degraded());
        let expected = if trip_again {
            FeatureState::AutoOff {
                retry_after: Duration::from_secs(25),
            }
        } else {
            FeatureState::On
        };
        assert_eq!(feature.state(), expected, "tripped again: {trip_again}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_answered_with_a_failure_that_does_not_count_is_no_verdict() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(answering());
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // A rate limit or a client fault says neither that the feature works again nor that it
    // fails: the probe slot is freed and the next call probes, as a breaker's half-open does.
    for kind in ["429", "400", "cancelled"] {
        let answer = svc.clone().oneshot(kind).await;
        assert!(!matches!(answer, Ok(Answer::Primary(_))), "{kind}");
        assert_eq!(
            feature.state(),
            FeatureState::AutoOff {
                retry_after: Duration::ZERO
            },
            "a {kind} probe"
        );
    }
    // An error the classifier accepts as a normal outcome is a success: back on.
    let _ = svc.clone().oneshot("ignored").await.unwrap_err();
    assert_eq!(feature.state(), FeatureState::On);
    // As is, after another automatic off, a success.
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(feature.state(), FeatureState::On);
}

/// A service that is not ready while `wedged` (a full buffer, a pool with every connection
/// stuck on a black-holed dependency): it never wakes its caller then.
#[derive(Clone)]
struct Wedged {
    wedged: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<u32> for Wedged {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.wedged.load(Ordering::SeqCst) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err("503 overloaded".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_feature_off_by_its_failures_answers_at_once_without_waiting_for_readiness() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let (wedged, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot(0).await.unwrap();
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    wedged.store(true, Ordering::SeqCst);
    let soon = Duration::from_millis(1);
    // Cooling down: the fallback answers at once, the dependency's readiness is not awaited.
    let answer = tokio::time::timeout(soon, svc.clone().oneshot(1))
        .await
        .expect("answered without waiting for the feature's readiness")
        .unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    // After the cool-down, the probe waits for readiness; meanwhile the others are answered.
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut probe = Box::pin(svc.clone().oneshot(2));
    assert!(tokio::time::timeout(soon, &mut probe).await.is_err());
    let answer = tokio::time::timeout(soon, svc.clone().oneshot(3))
        .await
        .expect("answered while the probe waits")
        .unwrap();
    assert_eq!(answer.into_inner(), "off");
    // A probe dropped while it waits for readiness frees the probe slot.
    drop(probe);
    wedged.store(false, Ordering::SeqCst);
    let _ = svc.clone().oneshot(4).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the next call was the probe"
    );
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
}

/// A gate that waits for readiness with the probe slot is woken when the slot's hold ends and
/// answers as the feature says then: its probe failed, the cool-down starts over, its call is
/// refused and the fallback answers. It used to wait for the inner service for good, however
/// the feature changed, while other gates took the slot back. Polled again after the feature
/// was turned off or on by hand, it lets the slot go at once.
#[tokio::test(start_paused = true)]
async fn a_probe_waiting_for_readiness_lets_its_caller_go_when_its_hold_ends() {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let (wedged, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot(0).await.unwrap();
    wedged.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    let start = tokio::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(60), svc.clone().oneshot(1))
        .await
        .expect("answered by the end of the probe's hold")
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(answer.into_inner(), "off");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the probe never reached it"
    );
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        },
        "the probe failed: the cool-down starts over"
    );
    // The next probe waits; the feature is turned off by hand 3 s in.
    tokio::time::advance(Duration::from_secs(30)).await;
    let start = tokio::time::Instant::now();
    let mut probe = Box::pin(svc.clone().oneshot(2));
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut probe)
            .await
            .is_err()
    );
    feature.turn_off();
    let answer = probe.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(answer.is_degraded());
    assert_eq!(feature.state(), FeatureState::TurnedOff);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A gate polled after the feature was turned on by hand lets its slot go and forwards.
    feature.turn_on();
    let ticket = feature.admit().unwrap();
    feature.outcome(
        Some(palisade_core::Class::new(Category::ServerError)),
        ticket,
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut gate = Gate::new(
        Wedged {
            wedged: wedged.clone(),
            calls: calls.clone(),
        },
        feature.clone(),
    );
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(tower::Service::<u32>::poll_ready(&mut gate, &mut cx).is_pending());
    feature.turn_on();
    wedged.store(false, Ordering::SeqCst);
    assert!(tower::Service::<u32>::poll_ready(&mut gate, &mut cx).is_ready());
    let _ = tower::Service::call(&mut gate, 3).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "forwarded, not refused");
}

/// A call admitted without a probe slot from readiness (its gate was ready while the feature
/// was on, the feature turned itself off before the call) is the probe once the cool-down is
/// over and no probe is out; the next one, while it is out, is refused.
#[tokio::test(start_paused = true)]
async fn a_call_made_after_the_cool_down_without_a_slot_is_the_probe() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let ticket = feature.admit().unwrap();
    feature.outcome(
        Some(palisade_core::Class::new(Category::ServerError)),
        ticket,
    );
    assert!(feature.admit().is_none(), "cooling down");
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = feature.admit().expect("the probe");
    assert!(probe.is_probe());
    assert!(feature.admit().is_none(), "the probe is out");
    feature.outcome(None, probe);
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_readiness_fails_fails_at_its_call_and_frees_the_slot_if_dropped() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let mut gate = Gate::new(Unready { broken: false }, feature.clone());
    // Off by one failure (counted as a gate's call would count it).
    let ticket = feature.admit().unwrap();
    feature.outcome(
        Some(palisade_core::Class::new(Category::ServerError)),
        ticket,
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    // The probe's readiness fails: ready all the same, the probe slot kept for its call.
    gate.get_mut().broken = true;
    ServiceExt::<u32>::ready(&mut gate).await.unwrap();
    let mut other = Gate::new(Unready { broken: false }, feature.clone());
    ServiceExt::<u32>::ready(&mut other).await.unwrap();
    let err = tower::Service::call(&mut other, 0).await.unwrap_err();
    assert!(err.is::<FeatureOff>(), "the probe is out: {err}");
    // Its call fails with the readiness's error, a failed probe: the cool-down starts over.
    let err = tower::Service::call(&mut gate, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "not ready");
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    // A gate dropped after its readiness failed, before its call, frees the slot without a
    // verdict: another gate of the feature probes.
    tokio::time::advance(Duration::from_secs(30)).await;
    ServiceExt::<u32>::ready(&mut gate).await.unwrap();
    drop(gate);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::ZERO
        }
    );
    ServiceExt::<u32>::ready(&mut other).await.unwrap();
    assert_eq!(
        tower::Service::call(&mut other, 2).await.unwrap(),
        "summary 2"
    );
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn a_feature_whose_service_cannot_get_ready_is_answered_and_turns_itself_off() {
    let board = Switchboard::new();
    let feature = board.feature("search");
    let refused = Refused::default();
    let svc =
        FeatureLayer::new(feature.clone(), Constant("sorry".to_owned())).layer(refused.clone());
    // Five readiness failures within the window, each answered and counted as a call's
    // failure would be: the feature turns itself off (at 4 s, until 34 s).
    for n in 0..5 {
        assert_eq!(feature.state(), FeatureState::On);
        let answer = svc.clone().oneshot(n).await.unwrap();
        assert_eq!(answer.degraded().unwrap().class.category, Category::Network);
        assert_eq!(answer.into_inner(), "sorry");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(29)
        }
    );
    assert_eq!(board.snapshot()[0].recent_failures, 5);
    // Off: refused at once.
    let answer = svc.clone().oneshot(5).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    // The probe after the cool-down cannot get ready either: a failed probe, answered.
    tokio::time::advance(Duration::from_secs(29)).await;
    let answer = svc.clone().oneshot(6).await.unwrap();
    assert_eq!(answer.degraded().unwrap().class.category, Category::Network);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    assert_eq!(
        refused.calls.load(Ordering::SeqCst),
        0,
        "never called without its readiness"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_slot_taken_before_an_operator_acts_is_given_back_at_the_call() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: Arc::new(AtomicBool::new(false)),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // Readied as the probe, then the operator turns the feature on: the call is an ordinary
    // one of the new epoch, and its failure counts (limit 1: off again).
    let mut readied = svc.clone();
    ServiceExt::<u32>::ready(&mut readied).await.unwrap();
    feature.turn_on();
    let _ = tower::Service::call(&mut readied, 1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    // Readied as the probe, then turned off by hand: refused, the inner service not called,
    // and the slot given back (turned on and off again, the next probe is let through).
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut readied = svc.clone();
    ServiceExt::<u32>::ready(&mut readied).await.unwrap();
    feature.turn_off();
    let answer = tower::Service::call(&mut readied, 2).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    feature.turn_on();
    let _ = svc.clone().oneshot(3).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = svc.clone().oneshot(4).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the probe was let through");
}

/// Off after one failure, a probe after 30 s given 10 s to answer.
fn probe_timeout_10s() -> FeatureConfig {
    FeatureConfig {
        probe_timeout: Duration::from_secs(10),
        ..limit(1)
    }
}

/// Answers each request with what it names: `"hang"` never answers, `"503"` fails, anything
/// else succeeds. Counts its calls.
fn hanging(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<&'static str, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |kind: &'static str| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match kind {
                "hang" => std::future::pending().await,
                "503" => Err::<String, BoxError>("503 overloaded".into()),
                _ => Ok("fine".to_owned()),
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_holds_the_slot_only_for_the_probe_timeout() {
    let events = palisade_test::Events::start();
    let (feature, svc, calls) = turned_off_before_a_hanging_primary().await;
    // The probe goes out and never answers (no timeout below the gate); it is being awaited.
    let mut probe = Box::pin(svc.clone().oneshot("hang"));
    let soon = Duration::from_millis(1);
    assert!(tokio::time::timeout(soon, &mut probe).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Just before its hold ends, it holds the slot: the others are refused.
    tokio::time::advance(Duration::from_secs(10) - 2 * soon).await;
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Its hold over, it has failed: the cool-down starts over from the end of its hold, as
    // the state says before any call finds out.
    tokio::time::advance(soon).await;
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(warned(&events, "probe timed out"), 1);
    tokio::time::advance(Duration::from_secs(30) - soon).await;
    let _ = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "still cooling down");
    // Then a new probe goes out, and the primary, recovered, turns the feature back on.
    tokio::time::advance(soon).await;
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(feature.state(), FeatureState::On);
    // The hung probe, dropped at last, changes nothing.
    drop(probe);
    assert_eq!(feature.state(), FeatureState::On);
    assert_eq!(warned(&events, "probe timed out"), 0, "no second warning");
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_ends_after_its_hold_counts_as_failed_however_it_ends() {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(after());
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // A success after 15 s, with nobody calling meanwhile: too late, the probe failed at the
    // end of its hold, 5 s ago.
    let answer = svc.clone().oneshot((15, true)).await.unwrap();
    assert_eq!(answer, Answer::Primary("fine".to_owned()));
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(25)
        }
    );
    // One that answers within its hold turns it back on.
    tokio::time::advance(Duration::from_secs(25)).await;
    let _ = svc.clone().oneshot((9, true)).await.unwrap();
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_after_its_hold_counts_as_failed() {
    let (feature, svc, calls) = turned_off_before_a_hanging_primary().await;
    let probe = start_with(&svc, "hang").await;
    tokio::time::advance(Duration::from_secs(12)).await;
    drop(probe);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(28)
        }
    );
    // Dropped within its hold, a probe gives no verdict: the next call probes.
    tokio::time::advance(Duration::from_secs(28)).await;
    let probe = start_with(&svc, "hang").await;
    tokio::time::advance(Duration::from_secs(9)).await;
    drop(probe);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::ZERO
        }
    );
    let _ = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(feature.state(), FeatureState::On);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_probe_waiting_for_readiness_past_the_probe_timeout_loses_the_slot() {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let (wedged, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // A gate takes the probe slot, then waits for a wedged service's readiness for good.
    wedged.store(true, Ordering::SeqCst);
    let mut stuck = svc.clone();
    let soon = Duration::from_millis(1);
    assert!(
        tokio::time::timeout(soon, ServiceExt::<u32>::ready(&mut stuck))
            .await
            .is_err()
    );
    // Past the probe timeout the slot is taken back, the probe counted as failed; after the
    // cool-down that follows, another call is the probe.
    tokio::time::advance(Duration::from_secs(10)).await;
    wedged.store(false, Ordering::SeqCst);
    let _ = svc.clone().oneshot(1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = svc.clone().oneshot(2).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a new probe went out");
    // The stuck gate, ready at last, no longer holds the slot: its call is refused.
    tokio::time::advance(Duration::from_secs(1)).await;
    ServiceExt::<u32>::ready(&mut stuck).await.unwrap();
    let answer = tower::Service::call(&mut stuck, 3).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_times_out_in_a_later_epoch_too() {
    let events = palisade_test::Events::start();
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    // Turned off and on by hand: the feature is in its second epoch.
    feature.turn_off();
    feature.turn_on();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(hanging(calls.clone()));
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = start_with(&svc, "hang").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Its hold over, it has failed in this epoch as in the first: the cool-down starts over.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no new probe");
    assert_eq!(warned(&events, "probe timed out"), 1);
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_call_after_a_hung_probes_hold_and_the_cool_down_after_it_is_the_next_probe() {
    let (feature, svc, calls) = turned_off_before_a_hanging_primary().await;
    let probe = start_with(&svc, "hang").await;
    // Nobody calls until 45 s after the hold ended (at 40 s): the cool-down that restarted
    // then is over too.
    tokio::time::advance(Duration::from_secs(45)).await;
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::ZERO
        }
    );
    // The call that takes the slot back (counting the hung probe as failed) is the next
    // probe itself, and turns the feature back on.
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(feature.state(), FeatureState::On);
    drop(probe);
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn a_probe_counted_as_failed_at_the_end_of_its_hold_keeps_a_later_off_period() {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(after());
    // A call let through while on, to fail later.
    let late = start_with(&svc, (0, false)).await;
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = start_with(&svc, (1000, true)).await;
    // The late call fails 5 s after the probe's hold ended (at 40 s): off until 75 s.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(late.await.unwrap().is_degraded());
    let until_75 = FeatureState::AutoOff {
        retry_after: Duration::from_secs(30),
    };
    assert_eq!(feature.state(), until_75);
    // The probe, dropped now, failed at the end of its hold: off until 70 s by itself, which
    // does not shorten the off period already set.
    drop(probe);
    assert_eq!(feature.state(), until_75);
}

/// Answers `(secs, ok)` as [`after`] does, but is not ready while `wedged` (without waking
/// its caller). Counts its calls.
#[derive(Clone)]
struct SlowToReady {
    wedged: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<(u64, bool)> for SlowToReady {
    type Response = String;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.wedged.load(Ordering::SeqCst) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, (secs, ok): (u64, bool)) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(answer_after(secs, ok))
    }
}

/// A feature with a 10 s probe timeout gating a [`SlowToReady`] primary, turned off by one
/// failure, 30 s later: its cool-down just over, the next call a probe. Returns the feature,
/// the gated service, the switch that wedges the primary's readiness, and its call count.
async fn turned_off_behind_slow_readiness() -> (
    Feature,
    Fallback<Gate<SlowToReady>, Constant<String>>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
) {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let (wedged, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(SlowToReady {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot((0, false)).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    (feature, svc, wedged, calls)
}

/// Polls `svc`'s readiness once, without letting the clock move.
async fn poll_ready_once<S: tower::Service<(u64, bool)>>(
    svc: &mut S,
) -> std::task::Poll<Result<(), S::Error>> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(svc.poll_ready(cx))).await
}

#[tokio::test(start_paused = true)]
async fn a_probes_hold_counts_from_its_readiness_not_its_call() {
    let (feature, svc, wedged, calls) = turned_off_behind_slow_readiness().await;
    // A gate takes the probe slot (held until 40 s), then waits 6 s for readiness.
    wedged.store(true, Ordering::SeqCst);
    let mut probe = svc.clone();
    assert!(poll_ready_once(&mut probe).await.is_pending());
    tokio::time::advance(Duration::from_secs(6)).await;
    wedged.store(false, Ordering::SeqCst);
    ServiceExt::<(u64, bool)>::ready(&mut probe).await.unwrap();
    // Its call succeeds 5 s later, at 41 s: within 10 s of the call, but past the hold, so
    // it counts as failed, the cool-down starting over from the end of the hold (40 s).
    let answer = tower::Service::call(&mut probe, (5, true)).await.unwrap();
    assert_eq!(answer, Answer::Primary("fine".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(29)
        }
    );
    // At 70 s, the same wait for readiness and a success 3 s after the call: within the hold,
    // so the feature is back on.
    tokio::time::advance(Duration::from_secs(29)).await;
    wedged.store(true, Ordering::SeqCst);
    let mut probe = svc.clone();
    assert!(poll_ready_once(&mut probe).await.is_pending());
    tokio::time::advance(Duration::from_secs(6)).await;
    wedged.store(false, Ordering::SeqCst);
    ServiceExt::<(u64, bool)>::ready(&mut probe).await.unwrap();
    let answer = tower::Service::call(&mut probe, (3, true)).await.unwrap();
    assert_eq!(answer, Answer::Primary("fine".to_owned()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(feature.state(), FeatureState::On);
}

#[tokio::test(start_paused = true)]
async fn a_probe_ready_only_at_the_end_of_its_hold_is_refused_and_counted_as_failed() {
    let events = palisade_test::Events::start();
    let (feature, svc, wedged, calls) = turned_off_behind_slow_readiness().await;
    wedged.store(true, Ordering::SeqCst);
    let mut probe = svc.clone();
    assert!(poll_ready_once(&mut probe).await.is_pending());
    // Ready at the very end of its hold (a hold is over at its end): its call is refused,
    // the primary not called, and the probe counted as failed there and then.
    tokio::time::advance(Duration::from_secs(10)).await;
    wedged.store(false, Ordering::SeqCst);
    ServiceExt::<(u64, bool)>::ready(&mut probe).await.unwrap();
    let answer = tower::Service::call(&mut probe, (0, true)).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(warned(&events, "probe timed out"), 1);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::from_secs(30)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_of_an_earlier_epoch_still_out_does_not_block_the_next_probe() {
    let events = palisade_test::Events::start();
    // A probe timeout (60 s) longer than the cool-down (10 s): a hung probe's hold outlasts
    // the next off period's cool-down.
    let config = FeatureConfig {
        cooldown: Duration::from_secs(10),
        ..limit(1)
    };
    let feature = Switchboard::new().feature_with("f", config).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(hanging(calls.clone()));
    let _ = svc.clone().oneshot("503").await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    // The probe of the first off period goes out and hangs, its hold 60 s.
    let mut stale = Box::pin(svc.clone().oneshot("hang"));
    let soon = Duration::from_millis(1);
    assert!(tokio::time::timeout(soon, &mut stale).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // An operator turns it back on; it fails again at once and turns itself off.
    feature.turn_on();
    let _ = svc.clone().oneshot("503").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Its cool-down over (the hung probe's hold is not), the state says a probe may go.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::ZERO
        }
    );
    // And one does: the hung probe of the earlier epoch holds no slot in this one, and is
    // not counted as failed.
    let mut probe = Box::pin(svc.clone().oneshot("hang"));
    assert!(tokio::time::timeout(soon, &mut probe).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the probe went out");
    assert_eq!(warned(&events, "probe timed out"), 0);
    // The stale probe, dropped now, neither frees the new probe's slot nor judges it.
    drop(stale);
    assert_eq!(
        feature.state(),
        FeatureState::AutoOff {
            retry_after: Duration::ZERO
        }
    );
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the new probe still holds the slot"
    );
    // The new probe is the one that decides: dropped within its hold it gives no verdict,
    // and the next call probes and turns the feature back on.
    drop(probe);
    assert_eq!(
        svc.clone().oneshot("ok").await.unwrap(),
        Answer::Primary("fine".to_owned())
    );
    assert_eq!(feature.state(), FeatureState::On);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

/// A feature stays off for its whole cool-down, also when it turned off between two
/// milliseconds: no probe (and no `retry_after` of zero) before `cooldown` has passed. The
/// start was rounded down to the millisecond, and a probe went out up to 1 ms early.
#[tokio::test(start_paused = true)]
async fn the_cool_down_is_never_cut_short_by_rounding() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned()))
        .layer(hanging(calls.clone()));
    // Off at 0.9 ms after the feature's registration.
    tokio::time::advance(Duration::from_micros(900)).await;
    let _ = svc.clone().oneshot("503").await.unwrap();
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    // 29.9995 s later: the 30 s cool-down is not over.
    tokio::time::advance(Duration::from_micros(29_999_500)).await;
    let state = feature.state();
    let answer = svc.clone().oneshot("ok").await.unwrap();
    assert_eq!(
        (state, calls.load(Ordering::SeqCst), answer.is_degraded()),
        (
            FeatureState::AutoOff {
                retry_after: Duration::from_millis(1)
            },
            1,
            true
        ),
        "0.5 ms before the cool-down ends: (state, calls, degraded)"
    );
    // Once it is over, the next call is the probe.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!svc.clone().oneshot("ok").await.unwrap().is_degraded());
}

/// Callers already waiting for a wedged dependency's readiness when the feature goes off are
/// woken and answered by the fallback: by hand, and by its failures (another caller's). Nothing
/// woke them, and they waited for the dependency as if the feature were still on.
#[tokio::test(start_paused = true)]
async fn turning_a_feature_off_answers_the_callers_waiting_for_readiness() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let wedged = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    // Two callers, on tasks of their own, wait for the wedged dependency while it is on.
    let waiting = [
        tokio::spawn(svc.clone().oneshot(1)),
        tokio::spawn(svc.clone().oneshot(2)),
    ];
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()));
    feature.turn_off();
    for w in waiting {
        let answer = tokio::time::timeout(Duration::from_secs(1), w)
            .await
            .expect("answered once the feature is off")
            .unwrap()
            .unwrap();
        assert!(answer.is_degraded());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // On again; a caller waits, and a failure elsewhere (another service behind the same
    // feature) turns it off by itself.
    feature.turn_on();
    let waiting = tokio::spawn(svc.clone().oneshot(3));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    let failing = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(
        tower::service_fn(|_: u32| async { Err::<String, BoxError>("503 overloaded".into()) }),
    );
    let _ = failing.oneshot(4).await.unwrap();
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    let answer = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("answered once the feature turned itself off")
        .unwrap()
        .unwrap();
    assert!(answer.is_degraded());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Gates dropped while they waited for readiness (their callers gave up) are forgotten by the
/// next gate that waits: the list of waiters does not grow with every caller that ever
/// waited.
#[tokio::test(start_paused = true)]
async fn gates_dropped_while_waiting_are_forgotten() {
    let feature = Switchboard::new().feature_with("f", limit(1)).unwrap();
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: Arc::new(AtomicBool::new(true)),
        calls: Arc::new(AtomicUsize::new(0)),
    });
    let waiting: Vec<_> = (0..3)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(feature.waiters_listed(), 3);
    for w in &waiting {
        w.abort();
    }
    for w in waiting {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    let last = tokio::spawn(svc.clone().oneshot(9));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        feature.waiters_listed(),
        1,
        "the three dropped gates are forgotten"
    );
    feature.turn_off();
    let answer = tokio::time::timeout(Duration::from_secs(1), last)
        .await
        .expect("the gate still listed is woken")
        .unwrap()
        .unwrap();
    assert!(answer.is_degraded());
}

/// A probe waiting, on a task of its own, for a wedged dependency's readiness when an operator
/// turns the feature off by hand is woken and answered by the fallback at once, as every other
/// caller waiting for readiness is (the crate's *Readiness* docs). It was not woken: only a gate
/// waiting with the feature on left its waker for a switch off, so the probe's caller waited
/// for the end of the probe's hold (10 s here, 60 s by default).
#[tokio::test(start_paused = true)]
async fn turning_a_feature_off_by_hand_answers_a_probe_waiting_for_readiness() {
    let feature = Switchboard::new()
        .feature_with("f", probe_timeout_10s())
        .unwrap();
    let (wedged, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = FeatureLayer::new(feature.clone(), Constant("off".to_owned())).layer(Wedged {
        wedged: wedged.clone(),
        calls: calls.clone(),
    });
    let _ = svc.clone().oneshot(0).await.unwrap();
    assert!(matches!(feature.state(), FeatureState::AutoOff { .. }));
    wedged.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert!(!probe.is_finished(), "the probe waits for readiness");
    let start = tokio::time::Instant::now();
    feature.turn_off();
    let answer = tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .expect("answered once the feature is turned off")
        .unwrap()
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Rejected
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the probe never reached it"
    );
    assert_eq!(feature.state(), FeatureState::TurnedOff);
}
