use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class, Classified};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

/// A service that takes `latency` ms and fails while `failing` is set.
fn upstream(
    latency: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: ()| {
        let ms = latency.load(Ordering::Relaxed);
        let fail = failing.load(Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if fail {
                Err::<(), BoxError>(Box::new(Classified::new(
                    Class::new(Category::ServerError),
                    "503",
                )))
            } else {
                Ok(())
            }
        }
    })
}

/// `total` calls, the first `failures` of them failing (through the `failing` switch of
/// [`upstream`]).
async fn calls_failing<S>(svc: &S, failing: &AtomicBool, failures: usize, total: usize)
where
    S: Service<(), Response = (), Error = BoxError> + Clone,
{
    failing.store(true, Ordering::Relaxed);
    calls(svc, failures).await;
    failing.store(false, Ordering::Relaxed);
    calls(svc, total - failures).await;
}

async fn calls<S>(svc: &S, n: usize)
where
    S: Service<(), Response = (), Error = BoxError> + Clone,
{
    for _ in 0..n {
        let _ = svc.clone().oneshot(()).await;
    }
}

#[test]
fn the_trend_rule_at_its_boundaries() {
    assert_eq!(Status::of(0, 0), Status::Unknown);
    assert_eq!(Status::of(95, 100), Status::Healthy);
    assert_eq!(Status::of(94, 100), Status::Degrading);
    assert_eq!(Status::of(70, 100), Status::Degrading);
    assert_eq!(Status::of(69, 100), Status::Unhealthy);
    assert_eq!(Status::of(19, 20), Status::Healthy);
    assert_eq!(Status::of(0, 1), Status::Unhealthy);
    assert_eq!(Status::Degrading.to_string(), "degrading");
}

#[tokio::test(start_paused = true)]
async fn a_latency_spike_is_an_anomaly_then_the_trend_degrades_and_recovers() {
    let latency = Arc::new(AtomicU64::new(20));
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::builder().window(20).build().unwrap();
    let svc = monitor
        .watch("tool")
        .layer(upstream(latency.clone(), failing.clone()));

    for _ in 0..30 {
        calls(&svc, 20).await;
        let snap = monitor.check();
        let dep = snap.dependency("tool").unwrap();
        assert!(dep.healthy_now, "{dep:?}");
        assert_eq!(dep.latency_ms, Some(20.0));
    }
    assert_eq!(monitor.check().status, Status::Healthy);
    assert_eq!(monitor.check().dependency("tool").unwrap().alerts, 0);

    latency.store(200, Ordering::Relaxed);
    calls(&svc, 20).await;
    let snap = monitor.check();
    let dep = snap.dependency("tool").unwrap();
    assert!(dep.latency_anomaly, "{dep:?}");
    assert!(!dep.healthy_now);
    assert_eq!(dep.alerts, 1, "one alert at the anomaly's start");
    // Two more slow checks: 3 unhealthy of 20 → degrading (85 %).
    for _ in 0..2 {
        calls(&svc, 20).await;
        monitor.check();
    }
    let snap = monitor.check();
    let dep = snap.dependency("tool").unwrap();
    assert_eq!(dep.status, Status::Degrading, "{dep:?}");

    latency.store(20, Ordering::Relaxed);
    for _ in 0..25 {
        calls(&svc, 20).await;
        monitor.check();
    }
    let snap = monitor.check();
    assert_eq!(snap.dependency("tool").unwrap().status, Status::Healthy);
}

#[tokio::test(start_paused = true)]
async fn failing_from_the_start_is_unhealthy_by_the_error_ceiling() {
    let monitor = HealthMonitor::builder().window(10).build().unwrap();
    let svc = monitor.watch("llm").layer(upstream(
        Arc::new(AtomicU64::new(1)),
        Arc::new(AtomicBool::new(true)),
    ));
    for _ in 0..9 {
        calls(&svc, 10).await;
        monitor.check();
    }
    calls(&svc, 10).await;
    let snap = monitor.check();
    let dep = snap.dependency("llm").unwrap();
    assert_eq!(dep.error_ratio, Some(1.0));
    assert!(!dep.error_anomaly, "never learned anything else");
    assert_eq!(dep.status, Status::Unhealthy);
    assert_eq!(snap.status, Status::Unhealthy);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_errors_after_a_clean_run_is_an_error_anomaly() {
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let watch = monitor.watch("agent");
    // A second watch on the same dependency shares the counts.
    let again = monitor.watch("agent");
    let svc = watch.layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    let svc2 = again.layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    for _ in 0..20 {
        calls(&svc, 10).await;
        calls(&svc2, 10).await;
        assert_eq!(
            monitor.check().dependency("agent").unwrap().error_ratio,
            Some(0.0)
        );
    }
    failing.store(true, Ordering::Relaxed);
    calls(&svc, 3).await;
    failing.store(false, Ordering::Relaxed);
    calls(&svc, 17).await;
    let snap = monitor.check();
    let dep = snap.dependency("agent").unwrap();
    assert_eq!(dep.error_ratio, Some(0.15));
    assert!(dep.error_anomaly, "{dep:?}");
    // Too few calls: no sample, judged by its components alone.
    calls(&svc, 3).await;
    let snap = monitor.check();
    let dep = snap.dependency("agent").unwrap();
    assert_eq!(dep.error_ratio, None);
    assert!(dep.healthy_now);
}

#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn an_open_breaker_makes_its_dependency_unhealthy_and_the_snapshot_serialises() {
    use palisade_breaker::BreakerLayer;
    let monitor = HealthMonitor::builder().window(4).build().unwrap();
    let breaker = BreakerLayer::new("llm");
    let handle = breaker.handle();
    monitor.add("llm", handle.clone());
    monitor.add(
        "llm",
        component_fn("feature", "summaries", || Reading::new(true, "on")),
    );
    assert_eq!(
        monitor.check().dependency("llm").unwrap().status,
        Status::Healthy
    );
    handle.isolate();
    let mut snap = monitor.check();
    for _ in 0..3 {
        snap = monitor.check();
    }
    let dep = snap.dependency("llm").unwrap();
    assert_eq!(dep.status, Status::Unhealthy);
    assert_eq!(dep.components[0].reading, Reading::new(false, "isolated"));
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(json["dependencies"][0]["components"][0]["kind"], "breaker");
    assert_eq!(
        json["dependencies"][0]["components"][0]["detail"],
        "isolated"
    );
    assert_eq!(json["dependencies"][0]["components"][1]["healthy"], true);
}

#[cfg(feature = "fallback")]
#[test]
fn a_feature_turned_off_is_unhealthy() {
    let board = palisade_fallback::Switchboard::new();
    let summaries = board.feature("summaries");
    let monitor = HealthMonitor::new();
    monitor.add("llm", summaries.clone());
    let reading = |m: &HealthMonitor| m.check().dependency("llm").unwrap().components[0].clone();
    assert_eq!(reading(&monitor).reading, Reading::new(true, "on"));
    summaries.turn_off();
    let c = reading(&monitor);
    assert_eq!((c.kind, c.name.as_str()), ("feature", "summaries"));
    assert_eq!(c.reading, Reading::new(false, "turned off"));
}

#[tokio::test(start_paused = true)]
async fn run_checks_on_the_interval() {
    let monitor = HealthMonitor::new();
    let flips = Arc::new(AtomicU64::new(0));
    let seen = flips.clone();
    monitor.add(
        "x",
        component_fn("probe", "p", move || {
            seen.fetch_add(1, Ordering::Relaxed);
            Reading::new(true, "")
        }),
    );
    let task = tokio::spawn(monitor.clone().run(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(flips.load(Ordering::Relaxed), 3);
    task.abort();
}

#[test]
fn bad_settings_name_the_field() {
    let field = |b: HealthMonitorBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(HealthMonitor::builder().window(0)), "window");
    assert_eq!(
        field(HealthMonitor::builder().max_error_ratio(1.5)),
        "max_error_ratio"
    );
    assert_eq!(
        field(HealthMonitor::builder().max_error_ratio(f64::NAN)),
        "max_error_ratio"
    );
    assert!(
        HealthMonitor::builder()
            .max_error_ratio(1.0)
            .min_calls(0)
            .build()
            .is_ok()
    );
    assert_eq!(
        monitor_debug(),
        "HealthMonitor { window: 60, min_calls: 10, max_error_ratio: 0.5, .. }"
    );
}

fn monitor_debug() -> String {
    format!("{:?}", HealthMonitor::new())
}

#[cfg(feature = "timeout")]
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_by_its_timeout_is_a_failure_one_the_caller_drops_is_nothing() {
    use palisade_timeout::TimeoutLayer;
    let monitor = HealthMonitor::builder().min_calls(1).build().unwrap();
    let hanging = upstream(
        Arc::new(AtomicU64::new(10_000)),
        Arc::new(AtomicBool::new(false)),
    );
    let timed = TimeoutLayer::new(Duration::from_millis(100))
        .layer(monitor.watch("tool").layer(hanging.clone()));
    assert!(timed.oneshot(()).await.is_err());
    let dep = monitor.check().dependency("tool").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(1.0), "{dep:?}");
    assert_eq!(dep.latency_ms, Some(100.0));

    // The caller gives up: not the dependency's verdict.
    let plain = monitor.watch("tool").layer(hanging);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), plain.oneshot(())).await;
    assert!(gave_up.is_err());
    assert_eq!(
        monitor.check().dependency("tool").unwrap().error_ratio,
        None
    );
}

/// Above a layer that refuses calls (an open breaker, a shed), a refusal is a failure for the
/// error rate, as the caller got none, and no latency sample: it took no time at the
/// dependency. The caller's own cancellation counts for nothing, as a dropped call does.
#[tokio::test(start_paused = true)]
async fn a_refusal_is_a_failure_without_latency_and_a_cancellation_is_nothing() {
    let outcome = Arc::new(AtomicU64::new(0));
    let monitor = HealthMonitor::builder().min_calls(4).build().unwrap();
    let svc = monitor.watch("llm").layer(service_fn({
        let outcome = outcome.clone();
        move |_: ()| {
            let outcome = outcome.load(Ordering::Relaxed);
            async move {
                let category = match outcome {
                    0 => {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        return Ok(());
                    }
                    1 => Category::Rejected,
                    _ => Category::Cancelled,
                };
                Err::<(), BoxError>(Box::new(Classified::new(Class::new(category), "no")))
            }
        }
    }));
    calls(&svc, 4).await;
    outcome.store(1, Ordering::Relaxed);
    calls(&svc, 4).await;
    let snap = monitor.check();
    let dep = snap.dependency("llm").unwrap();
    assert_eq!(dep.error_ratio, Some(0.5), "{dep:?}");
    assert_eq!(dep.latency_ms, Some(40.0), "the refusals' 0 ms left out");
    // Refusals only: a failure rate, and too few answered calls for a latency sample.
    calls(&svc, 4).await;
    let snap = monitor.check();
    let dep = snap.dependency("llm").unwrap();
    assert_eq!((dep.error_ratio, dep.latency_ms), (Some(1.0), None));
    assert!(!dep.healthy_now, "above max_error_ratio");
    // Cancelled by the caller: not counted at all.
    outcome.store(2, Ordering::Relaxed);
    calls(&svc, 10).await;
    let snap = monitor.check();
    let dep = snap.dependency("llm").unwrap();
    assert_eq!((dep.error_ratio, dep.latency_ms), (None, None), "{dep:?}");
}

#[test]
fn the_snapshot_s_status_is_the_worst_dependency_s() {
    assert_eq!(HealthMonitor::new().check().status, Status::Unknown);
    let monitor = HealthMonitor::builder().window(4).build().unwrap();
    let mid_up = Arc::new(AtomicBool::new(true));
    let up = mid_up.clone();
    // Added first: unhealthy from the start. Then one healthy 3 checks of 4 (degrading), then
    // one always healthy.
    monitor.add(
        "bad",
        component_fn("probe", "bad", || Reading::new(false, "down")),
    );
    monitor.add(
        "mid",
        component_fn("probe", "mid", move || {
            Reading::new(up.load(Ordering::Relaxed), "")
        }),
    );
    monitor.add(
        "good",
        component_fn("probe", "good", || Reading::new(true, "")),
    );
    for _ in 0..3 {
        monitor.check();
    }
    mid_up.store(false, Ordering::Relaxed);
    let snap = monitor.check();
    let status = |name: &str| snap.dependency(name).unwrap().status;
    assert_eq!(
        (status("bad"), status("mid"), status("good")),
        (Status::Unhealthy, Status::Degrading, Status::Healthy)
    );
    assert_eq!(snap.status, Status::Unhealthy);

    // Without the unhealthy one, the degrading one (added before the healthy one) decides.
    let monitor = HealthMonitor::builder().window(4).build().unwrap();
    let mid_up = Arc::new(AtomicBool::new(true));
    let up = mid_up.clone();
    monitor.add(
        "mid",
        component_fn("probe", "mid", move || {
            Reading::new(up.load(Ordering::Relaxed), "")
        }),
    );
    monitor.add(
        "good",
        component_fn("probe", "good", || Reading::new(true, "")),
    );
    for _ in 0..3 {
        monitor.check();
    }
    mid_up.store(false, Ordering::Relaxed);
    assert_eq!(monitor.check().status, Status::Degrading);
}

#[test]
fn a_component_from_a_closure_shows_its_kind_and_name() {
    let monitor = HealthMonitor::new();
    monitor.add(
        "search",
        component_fn("queue", "search-jobs", || {
            Reading::new(false, "backlog 9000")
        }),
    );
    let snap = monitor.check();
    assert_eq!(
        snap.dependency("search").unwrap().components,
        [ComponentSnapshot {
            kind: "queue",
            name: "search-jobs".into(),
            reading: Reading::new(false, "backlog 9000"),
        }]
    );
}

#[cfg(feature = "breaker")]
#[test]
fn a_breaker_shows_as_a_breaker_under_its_own_name() {
    let monitor = HealthMonitor::new();
    monitor.add(
        "llm",
        palisade_breaker::BreakerLayer::new("llm-api").handle(),
    );
    let snap = monitor.check();
    assert_eq!(
        snap.dependency("llm").unwrap().components,
        [ComponentSnapshot {
            kind: "breaker",
            name: "llm-api".into(),
            reading: Reading::new(true, "closed"),
        }]
    );
}

#[cfg(feature = "route")]
#[tokio::test(start_paused = true)]
async fn a_router_is_healthy_while_more_than_half_its_endpoints_serve() {
    use palisade_route::{HealthState, Route};
    let endpoint = service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
    let route = Route::new([endpoint, endpoint, endpoint]);
    let handle = route.handle();
    let monitor = HealthMonitor::new();
    monitor.add("tools", handle.clone());
    let reading = |m: &HealthMonitor| {
        let component = m.check().dependency("tools").unwrap().components[0].clone();
        assert_eq!(
            (component.kind, component.name.as_str()),
            ("route", "endpoints")
        );
        component.reading
    };
    assert_eq!(
        reading(&monitor),
        Reading::new(true, "3 of 3 endpoints serving")
    );
    // Endpoint 0 fails until its health allows it no traffic: one bad replica of three.
    let fail = |key: usize| {
        while handle.status()[key].traffic_ratio > 0.0 {
            assert!(handle.report_failure(&key, Class::new(Category::ServerError)));
        }
    };
    fail(0);
    assert_eq!(handle.status()[0].state, HealthState::Failed);
    assert_eq!(
        reading(&monitor),
        Reading::new(true, "2 of 3 endpoints serving")
    );
    // A second: the fleet has lost more than half.
    fail(1);
    assert_eq!(
        reading(&monitor),
        Reading::new(false, "1 of 3 endpoints serving")
    );
    // Exactly half serving is not more than half (2 of 4), nor is 1 of 2.
    for (endpoints, failed, healthy) in [(4, 2, false), (4, 1, true), (2, 1, false)] {
        let route = Route::new(vec![endpoint; endpoints]);
        let handle = route.handle();
        let monitor = HealthMonitor::new();
        monitor.add("tools", handle.clone());
        for key in 0..failed {
            while handle.status()[key].traffic_ratio > 0.0 {
                assert!(handle.report_failure(&key, Class::new(Category::ServerError)));
            }
        }
        let serving = endpoints - failed;
        assert_eq!(
            reading(&monitor),
            Reading::new(
                healthy,
                format!("{serving} of {endpoints} endpoints serving")
            ),
            "{failed} of {endpoints} failed"
        );
    }
    // A rate limit on every endpoint of a fresh router: the server paces its callers, and
    // every endpoint still serves.
    let route = Route::new([endpoint, endpoint, endpoint]);
    let handle = route.handle();
    let monitor = HealthMonitor::new();
    monitor.add("tools", handle.clone());
    for key in 0..3 {
        let paced = Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2));
        assert!(handle.report_failure(&key, paced));
    }
    assert!(handle.status().iter().all(|e| e.cooling_down));
    assert_eq!(
        reading(&monitor),
        Reading::new(
            true,
            "3 of 3 endpoints serving, 3 cooling down after a rate limit"
        )
    );
}

/// An endpoint the router ejected (five failures in a row) is counted in the reading's detail,
/// and does not serve.
#[cfg(feature = "route")]
#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_is_counted_in_the_router_s_reading() {
    use palisade_route::Route;
    let endpoint = |up: bool| {
        tower::util::BoxCloneService::new(service_fn(move |_: ()| async move {
            if up {
                Ok(())
            } else {
                Err::<(), BoxError>(Box::new(Classified::new(
                    Class::new(Category::ServerError),
                    "503",
                )))
            }
        }))
    };
    let mut route = Route::new([endpoint(true), endpoint(false), endpoint(true)]);
    let handle = route.handle();
    let monitor = HealthMonitor::new();
    monitor.add("tools", handle.clone());
    for _ in 0..100 {
        let _ = route.ready().await.unwrap().call(()).await;
    }
    assert!(handle.status()[1].ejected, "{:?}", handle.status());
    let snap = monitor.check();
    assert_eq!(
        snap.dependency("tools").unwrap().components[0].reading,
        Reading::new(true, "2 of 3 endpoints serving, 1 ejected")
    );
}

#[cfg(feature = "fallback")]
#[tokio::test(start_paused = true)]
async fn a_feature_that_turned_itself_off_says_when_it_probes_again() {
    use palisade_fallback::{Constant, FeatureConfig, FeatureLayer, Switchboard};
    let board = Switchboard::new();
    let mut config = FeatureConfig::default();
    config.failures_to_turn_off = Some(1);
    let feature = board.feature_with("summaries", config).unwrap();
    let monitor = HealthMonitor::new();
    monitor.add("llm", feature.clone());
    let svc = FeatureLayer::new(feature, Constant("no summary")).layer(service_fn(|_: ()| async {
        Err::<&str, BoxError>(Box::new(Classified::new(
            Class::new(Category::ServerError),
            "503",
        )))
    }));
    let _ = svc.oneshot(()).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let snap = monitor.check();
    assert_eq!(
        snap.dependency("llm").unwrap().components[0].reading,
        Reading::new(false, "off after failures, probe in 20000 ms")
    );
}

/// The latency detector's band is at least a quarter of the mean latency (at least 1 ms): after
/// a perfectly steady 100 ms, 120 ms is within it and 130 ms is not.
#[tokio::test(start_paused = true)]
async fn the_latency_band_is_a_quarter_of_the_mean() {
    for (spike, flagged) in [(120, false), (126, true), (130, true)] {
        let latency = Arc::new(AtomicU64::new(100));
        let monitor = HealthMonitor::builder().min_calls(1).build().unwrap();
        let svc = monitor
            .watch("tool")
            .layer(upstream(latency.clone(), Arc::new(AtomicBool::new(false))));
        for _ in 0..10 {
            calls(&svc, 1).await;
            let dep = monitor.check().dependency("tool").unwrap().clone();
            assert_eq!((dep.latency_ms, dep.latency_anomaly), (Some(100.0), false));
        }
        latency.store(spike, Ordering::Relaxed);
        calls(&svc, 1).await;
        let dep = monitor.check().dependency("tool").unwrap().clone();
        assert_eq!(dep.latency_ms, Some(spike as f64));
        assert_eq!(dep.latency_anomaly, flagged, "{spike} ms after 100 ms");
    }
    // At 2 ms a quarter is 0.5 ms: the band is 1 ms wide, so 3.5 ms stands out.
    for (spike, flagged) in [(3, false), (4, true)] {
        let latency = Arc::new(AtomicU64::new(2));
        let monitor = HealthMonitor::builder().min_calls(1).build().unwrap();
        let svc = monitor
            .watch("tool")
            .layer(upstream(latency.clone(), Arc::new(AtomicBool::new(false))));
        for _ in 0..10 {
            calls(&svc, 1).await;
            monitor.check();
        }
        latency.store(spike, Ordering::Relaxed);
        calls(&svc, 1).await;
        let dep = monitor.check().dependency("tool").unwrap().clone();
        assert_eq!(dep.latency_anomaly, flagged, "{spike} ms after 2 ms");
    }
}

/// However many instances a watch has (one per connection or worker), every call is counted.
#[tokio::test(start_paused = true)]
async fn every_instance_of_a_watch_counts_into_the_same_totals() {
    let monitor = HealthMonitor::builder().min_calls(1).build().unwrap();
    let layer = monitor.watch("tool");
    let svc = layer.layer(upstream(
        Arc::new(AtomicU64::new(5)),
        Arc::new(AtomicBool::new(false)),
    ));
    // Clones, and services from the layer itself and from a second `watch` of the same name.
    for _ in 0..40 {
        svc.clone().oneshot(()).await.unwrap();
    }
    let again = monitor.watch("tool");
    for _ in 0..40 {
        let svc = again.layer(upstream(
            Arc::new(AtomicU64::new(5)),
            Arc::new(AtomicBool::new(true)),
        ));
        assert!(svc.oneshot(()).await.is_err());
    }
    let dep = monitor.check().dependency("tool").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.5));
    assert_eq!(dep.latency_ms, Some(5.0));
}

/// Every event the health monitor logs on this thread while `f` runs: level and message.
fn logged<R>(f: impl FnOnce() -> R) -> (R, Vec<(tracing::Level, String)>) {
    use std::sync::Mutex;
    use tracing::span::{Attributes, Id, Record};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if event.metadata().target() == "palisade::health" {
                let mut message = Message(String::new());
                event.record(&mut message);
                self.0
                    .lock()
                    .unwrap()
                    .push((*event.metadata().level(), message.0));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let capture = Capture::default();
    let out = tracing::subscriber::with_default(capture.clone(), f);
    let events = capture.0.lock().unwrap().clone();
    (out, events)
}

/// A change of status is an alert: a warning when it gets worse, an info when it recovers; the
/// healthy first verdict is not a change; a status that stays is no alert.
#[test]
fn status_changes_are_alerts_logged_by_direction() {
    use tracing::Level;
    let monitor = HealthMonitor::builder().window(4).build().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let reading = up.clone();
    monitor.add(
        "db",
        component_fn("probe", "db", move || {
            Reading::new(reading.load(Ordering::Relaxed), "")
        }),
    );
    let check = |m: &HealthMonitor| {
        let (snap, events) = logged(|| m.check());
        let dep = snap.dependency("db").unwrap().clone();
        (dep.status, dep.alerts, events)
    };
    let changed = |level| vec![(level, "dependency health changed".to_owned())];
    assert_eq!(check(&monitor), (Status::Healthy, 0, vec![]));
    up.store(false, Ordering::Relaxed);
    // 1 healthy of 2: unhealthy, worse.
    assert_eq!(
        check(&monitor),
        (Status::Unhealthy, 1, changed(Level::WARN))
    );
    assert_eq!(check(&monitor), (Status::Unhealthy, 1, vec![]));
    up.store(true, Ordering::Relaxed);
    // [H U U H] 50 %, [U U H H] 50 %, [U H H H] 75 %: degrading, better.
    assert_eq!(check(&monitor), (Status::Unhealthy, 1, vec![]));
    assert_eq!(check(&monitor), (Status::Unhealthy, 1, vec![]));
    assert_eq!(
        check(&monitor),
        (Status::Degrading, 2, changed(Level::INFO))
    );
    assert_eq!(check(&monitor), (Status::Healthy, 3, changed(Level::INFO)));
    // And worse again from healthy to degrading: [H H H U] 75 %.
    up.store(false, Ordering::Relaxed);
    assert_eq!(
        check(&monitor),
        (Status::Degrading, 4, changed(Level::WARN))
    );
}

/// The start of an error-rate anomaly is one alert, however long the anomaly lasts.
#[tokio::test(start_paused = true)]
async fn an_error_anomaly_alerts_at_its_start_only() {
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("agent")
        .layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    for _ in 0..40 {
        calls(&svc, 20).await;
        monitor.check();
    }
    let burst = |n| {
        let (svc, failing) = (svc.clone(), failing.clone());
        async move {
            failing.store(true, Ordering::Relaxed);
            calls(&svc, n).await;
            failing.store(false, Ordering::Relaxed);
            calls(&svc, 20 - n).await;
        }
    };
    burst(3).await;
    let (snap, events) = logged(|| monitor.check());
    let dep = snap.dependency("agent").unwrap();
    assert!(dep.error_anomaly, "{dep:?}");
    assert_eq!((dep.status, dep.alerts), (Status::Healthy, 1));
    assert_eq!(
        events,
        [(tracing::Level::WARN, "error rate anomaly".to_owned())]
    );
    burst(3).await;
    let (snap, events) = logged(|| monitor.check());
    let dep = snap.dependency("agent").unwrap();
    assert!(dep.error_anomaly, "still anomalous: {dep:?}");
    assert_eq!((dep.status, dep.alerts), (Status::Healthy, 1));
    assert_eq!(events, []);
}

/// A watch forwards its inner service's readiness, errors included.
#[tokio::test]
async fn a_watch_forwards_readiness() {
    #[derive(Clone)]
    struct Refuses;
    impl Service<()> for Refuses {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("not ready".into()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let monitor = HealthMonitor::new();
    let err = monitor.watch("x").layer(Refuses).ready().await.err();
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
}

/// A window as long as a user likes is not allocated up front: the trend grows with the
/// checks (a window of `usize::MAX` used to abort with "capacity overflow" at the first
/// `add`).
#[test]
fn a_huge_window_is_not_allocated_up_front() {
    let monitor = HealthMonitor::builder().window(usize::MAX).build().unwrap();
    monitor.add("db", component_fn("probe", "db", || Reading::new(true, "")));
    let _watch = monitor.watch("llm");
    for _ in 0..3 {
        monitor.check();
    }
    let dep = monitor.check().dependency("db").unwrap().clone();
    assert_eq!((dep.status, dep.checks), (Status::Healthy, 4));
}

/// The trend rule is exact for any counts, however large (`healthy × 100` used to overflow).
#[test]
fn the_trend_rule_does_not_overflow() {
    assert_eq!(Status::of(usize::MAX, usize::MAX), Status::Healthy);
    assert_eq!(
        Status::of(usize::MAX / 100 * 95, usize::MAX),
        Status::Degrading
    );
    assert_eq!(Status::of(usize::MAX / 2, usize::MAX), Status::Unhealthy);
}

/// `run` with a zero interval checks at tokio's timer resolution, 1 ms, instead of panicking
/// inside the spawned task (which stopped every check, silently).
#[tokio::test(start_paused = true)]
async fn run_with_a_zero_interval_checks_every_millisecond() {
    let monitor = HealthMonitor::new();
    let checks = Arc::new(AtomicU64::new(0));
    let seen = checks.clone();
    monitor.add(
        "x",
        component_fn("probe", "p", move || {
            seen.fetch_add(1, Ordering::Relaxed);
            Reading::new(true, "")
        }),
    );
    let task = tokio::spawn(monitor.clone().run(Duration::ZERO));
    tokio::time::sleep(Duration::from_micros(10_500)).await;
    assert!(!task.is_finished(), "the task died: {:?}", task.await);
    assert_eq!(checks.load(Ordering::Relaxed), 10);
    task.abort();
}

/// A dependency that is down from the very first check is an alert (a service restarted
/// during an outage used to raise none for the whole outage); one healthy from the start is
/// not.
#[test]
fn a_dependency_down_from_the_first_check_is_an_alert() {
    use tracing::Level;
    let monitor = HealthMonitor::new();
    monitor.add(
        "db",
        component_fn("probe", "db", || Reading::new(false, "")),
    );
    monitor.add(
        "llm",
        component_fn("probe", "llm", || Reading::new(true, "")),
    );
    let (snap, events) = logged(|| monitor.check());
    let db = snap.dependency("db").unwrap();
    assert_eq!((db.status, db.alerts), (Status::Unhealthy, 1));
    assert_eq!(
        events,
        [(Level::WARN, "dependency health changed".to_owned())]
    );
    let llm = snap.dependency("llm").unwrap();
    assert_eq!((llm.status, llm.alerts), (Status::Healthy, 0));
    // Staying down is no new alert.
    let (snap, events) = logged(|| monitor.check());
    assert_eq!(snap.dependency("db").unwrap().alerts, 1);
    assert_eq!(events, []);
}

/// Steady background errors at the default `min_calls` (10 calls a check, one failure in
/// some of them: about 1 % of calls) are no anomaly: one failure among ten calls is 0.1, above
/// the 0.05 floor, and used to be flagged after every run of clean checks, keeping the
/// dependency degrading with an alert every few checks. A real rise is still flagged.
#[tokio::test(start_paused = true)]
async fn steady_background_errors_at_few_calls_per_check_are_no_anomaly() {
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("llm")
        .layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    let check_with = |failures: usize| {
        let (svc, failing) = (svc.clone(), failing.clone());
        async move { calls_failing(&svc, &failing, failures, 10).await }
    };
    // One failure in every 9th check, then in every 13th: about 1 % of the calls.
    for i in 0..240 {
        let gap = if i < 120 { 9 } else { 13 };
        check_with(usize::from(i % gap == gap - 1)).await;
        let snap = monitor.check();
        let dep = snap.dependency("llm").unwrap();
        assert!(!dep.error_anomaly, "check {i}: {dep:?}");
        assert_eq!(dep.status, Status::Healthy, "check {i}: {dep:?}");
    }
    assert_eq!(monitor.check().dependency("llm").unwrap().alerts, 0);
    // Three failures in ten calls stand out.
    check_with(3).await;
    let dep = monitor.check().dependency("llm").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.3));
    assert!(dep.error_anomaly, "{dep:?}");
    assert!(!dep.healthy_now);
}

/// The error detector's own floor holds at many calls a check, where `1 / calls` is below it:
/// with a floor of 0.2 and 100 calls a check, 15 % failures after a clean run are within the
/// band, 25 % are not.
#[tokio::test(start_paused = true)]
async fn the_error_detector_s_floor_holds_above_one_failure_a_check() {
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::builder()
        .error_detector(Detector::builder().floor(0.2).build().unwrap())
        .build()
        .unwrap();
    let svc = monitor
        .watch("llm")
        .layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    let check_with = |failures: usize| {
        let (svc, failing) = (svc.clone(), failing.clone());
        async move { calls_failing(&svc, &failing, failures, 100).await }
    };
    for _ in 0..10 {
        check_with(0).await;
        assert!(!monitor.check().dependency("llm").unwrap().error_anomaly);
    }
    check_with(15).await;
    let dep = monitor.check().dependency("llm").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.15));
    assert!(!dep.error_anomaly, "{dep:?}");
    check_with(25).await;
    let dep = monitor.check().dependency("llm").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.25));
    assert!(dep.error_anomaly, "{dep:?}");
}

/// The counters are read one by one while calls run, so a check may see failures and
/// refusals whose calls it has not counted yet: the error ratio stays within 1, and the
/// refusals never wrap the count of timed calls into a huge one with a latency of 0 ms.
#[test]
fn counts_read_while_calls_run_stay_within_their_bounds() {
    let monitor = HealthMonitor::new();
    let watch = monitor.watch("db");
    watch.watched.add(12, 15, 14);
    let dep = monitor.check().dependency("db").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(1.0));
    assert_eq!(dep.latency_ms, None, "no call was timed");
    // The next check has the calls.
    watch.watched.add(10, 0, 0);
    let dep = monitor.check().dependency("db").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.0));
}

/// The alert gives the threshold the value crossed, read before the value moved the band.
#[tokio::test(start_paused = true)]
async fn an_anomaly_alert_gives_the_threshold_its_value_crossed() {
    let events = palisade_test::Events::start();
    let latency = Arc::new(AtomicU64::new(100));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("tool")
        .layer(upstream(latency.clone(), Arc::new(AtomicBool::new(false))));
    for i in 0..30 {
        // 98 to 102 ms, so that the band has a width.
        latency.store(98 + i % 5, Ordering::Relaxed);
        calls(&svc, 10).await;
        monitor.check();
    }
    latency.store(130, Ordering::Relaxed);
    calls(&svc, 10).await;
    let dep = monitor.check().dependency("tool").unwrap().clone();
    assert!(dep.latency_anomaly, "{dep:?}");
    let alerts = events.with_message("latency anomaly");
    assert_eq!(alerts.len(), 1);
    let value: f64 = alerts[0].field("latency_ms").unwrap()["Some(".len()..]
        .trim_end_matches(')')
        .parse()
        .unwrap();
    let threshold: f64 = alerts[0].field("threshold_ms").unwrap().parse().unwrap();
    assert_eq!(value, 130.0);
    assert!(threshold < value, "{threshold} is the band it crossed");
}

/// Checks that see too few calls to judge (callers held by an open breaker complete none)
/// do not end an anomaly: it is alerted once.
#[tokio::test(start_paused = true)]
async fn an_anomaly_that_goes_on_after_checks_without_calls_is_alerted_once() {
    let events = palisade_test::Events::start();
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("llm")
        .layer(upstream(Arc::new(AtomicU64::new(5)), failing.clone()));
    for _ in 0..20 {
        calls(&svc, 10).await;
        monitor.check();
    }
    failing.store(true, Ordering::Relaxed);
    let mut anomalies = Vec::new();
    for n in [10, 0, 10, 10] {
        calls(&svc, n).await;
        let snap = monitor.check();
        anomalies.push(snap.dependency("llm").unwrap().error_anomaly);
    }
    // No sample, no verdict "now"; but the anomaly that resumes is the same one.
    assert_eq!(anomalies, [true, false, true, true]);
    assert_eq!(events.with_message("error rate anomaly").len(), 1);
}

/// Steady traffic with a latency tail: 99 in 100 calls answer in 50 ms and 1 in 100 in 2 s (a
/// p99 of 2 s, as an LLM API's), at the default `min_calls` (10 calls a check, so one check in
/// ten holds the slow call). Nothing changes over time, so after the warm-up nothing is an
/// anomaly and the trend stays healthy. Judged on the whole mean, every check with the slow
/// call was flagged (its mean five times the level), and the dependency was never healthy.
#[tokio::test(start_paused = true)]
async fn a_steady_latency_tail_is_no_anomaly() {
    let n = Arc::new(AtomicU64::new(0));
    let monitor = HealthMonitor::new();
    let counter = n.clone();
    let svc = monitor.watch("llm").layer(service_fn(move |_: ()| {
        let i = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let ms = if i % 100 == 57 { 2_000 } else { 50 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }
    }));
    // Warm-up: 100 checks (ten of them with the slow call).
    for _ in 0..100 {
        calls(&svc, 10).await;
        monitor.check();
    }
    let (mut anomalies, mut not_healthy) = (0, 0);
    for _ in 0..600 {
        calls(&svc, 10).await;
        let snap = monitor.check();
        let dep = snap.dependency("llm").unwrap();
        anomalies += usize::from(dep.latency_anomaly);
        not_healthy += usize::from(dep.status != Status::Healthy);
    }
    let alerts_after_warmup = monitor.check().dependency("llm").unwrap().alerts;
    assert_eq!(
        (anomalies, not_healthy),
        (0, 0),
        "steady traffic: {anomalies} latency anomalies and {not_healthy} checks not healthy in \
         600, {alerts_after_warmup} alerts"
    );
}

/// One slow call among a check's calls is judged noise; two are a latency anomaly, and so is
/// a slowdown of every call. The check still reports the mean of all its calls.
#[tokio::test(start_paused = true)]
async fn one_slow_call_is_noise_two_are_an_anomaly() {
    let latency = Arc::new(AtomicU64::new(50));
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("llm")
        .layer(upstream(latency.clone(), failing.clone()));
    let steady = async |monitor: &HealthMonitor| {
        for _ in 0..30 {
            calls(&svc, 10).await;
            assert!(!monitor.check().dependency("llm").unwrap().latency_anomaly);
        }
    };
    // A check of 10 calls with `slow` of them at 2 s.
    let with_slow = async |slow: usize| {
        latency.store(2_000, Ordering::Relaxed);
        calls(&svc, slow).await;
        latency.store(50, Ordering::Relaxed);
        calls(&svc, 10 - slow).await;
        let snap = monitor.check();
        let dep = snap.dependency("llm").unwrap();
        (dep.latency_anomaly, dep.latency_ms.unwrap())
    };
    steady(&monitor).await;
    assert_eq!(with_slow(1).await, (false, 245.0));
    steady(&monitor).await;
    assert_eq!(with_slow(2).await, (true, 440.0));
    steady(&monitor).await;
    assert_eq!(with_slow(10).await, (true, 2_000.0));
}

/// The latency judged is the mean of a check's calls without its slowest, exactly: at the
/// band's floor of 1 ms above a level of 2 ms, a check of ten calls of 3.05 ms each is an
/// anomaly (judged 3.05 ms), one of 2.95 ms is not. A judged mean off by a call (dividing
/// the other nine calls' time by ten or eleven) would put both below the band.
#[tokio::test(start_paused = true)]
async fn the_latency_judged_is_the_mean_of_the_other_calls() {
    for (micros, anomaly) in [(3_050, true), (2_950, false)] {
        let monitor = HealthMonitor::new();
        let watch = monitor.watch("llm");
        for _ in 0..30 {
            watch.watched.add_timed(10, 2_000);
            assert!(!monitor.check().dependency("llm").unwrap().latency_anomaly);
        }
        watch.watched.add_timed(10, micros);
        let snap = monitor.check();
        let dep = snap.dependency("llm").unwrap();
        assert_eq!(dep.latency_anomaly, anomaly, "{micros} us: {dep:?}");
        assert_eq!(dep.latency_ms, Some(micros as f64 / 1000.0));
    }
}

/// A breaker that opened, then saw no traffic (a load balancer took the instance out, the
/// night came): once its open period is over it reads half-open, waiting for a call to probe
/// with. No call comes, so nothing is probing; palisade-http's `/ready` says ready then
/// (`readiness_recovers_once_the_open_period_ends_with_no_calls`), so that traffic comes
/// back to probe. The monitor, whose snapshot is "what a readiness endpoint serves", called
/// that dependency unhealthy for ever.
#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn a_breaker_waiting_for_its_first_probe_is_not_unhealthy_for_ever() {
    use palisade_breaker::{BreakerLayer, State};
    let monitor = HealthMonitor::builder().window(10).build().unwrap();
    let breaker = BreakerLayer::builder("llm")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    monitor.add("llm", handle.clone());
    let mut svc = breaker.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>(Box::new(Classified::new(
            Class::new(Category::ServerError),
            "503",
        )))
    }));
    let _ = svc.ready().await.unwrap().call(()).await;
    assert_eq!(handle.state(), State::Open);
    // Ten minutes without a call, checked every second.
    let mut snap = monitor.check();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        snap = monitor.check();
    }
    assert_eq!(handle.state(), State::HalfOpen, "no probe was ever sent");
    assert_eq!(handle.metrics().reopens, 0);
    let dep = snap.dependency("llm").unwrap();
    assert!(
        dep.healthy_now && dep.status != Status::Unhealthy,
        "{:?}: {} of {} checks healthy, breaker {:?}",
        dep.status,
        dep.healthy_checks,
        dep.checks,
        dep.components[0].reading
    );
}

/// A steady 1 % of failures at 20 to 30 calls a check is sampling noise, not an anomaly: two
/// failures among 25 calls (8 %) happen in about one check in 40 at that rate, and were
/// flagged, one alert every few minutes at a check every 10 s. The band is at least four
/// binomial standard deviations of the learned rate at the check's calls. A real rise stands
/// out: 5 failures in 25 calls (20 %).
#[tokio::test(start_paused = true)]
async fn a_steady_one_percent_at_tens_of_calls_a_check_is_no_anomaly() {
    /// splitmix64: a seeded stream of draws, the same on every run.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    for (n, seed) in [(20usize, 1u64), (25, 2), (30, 3)] {
        let failing = Arc::new(AtomicBool::new(false));
        let monitor = HealthMonitor::new();
        let svc = monitor
            .watch("llm")
            .layer(upstream(Arc::new(AtomicU64::new(0)), failing.clone()));
        let mut rng = seed;
        let (mut failures, mut checks_with_two) = (0, 0);
        for i in 0..2000 {
            let mut in_check = 0;
            for _ in 0..n {
                let fail = next(&mut rng).is_multiple_of(100);
                in_check += usize::from(fail);
                failing.store(fail, Ordering::Relaxed);
                calls(&svc, 1).await;
            }
            failures += in_check;
            checks_with_two += usize::from(in_check >= 2);
            let snap = monitor.check();
            let dep = snap.dependency("llm").unwrap();
            assert!(
                !dep.error_anomaly,
                "{n} calls a check, check {i}: {in_check} failures flagged: {dep:?}"
            );
        }
        // The draws were what the test says: about 1 %, and checks with two failures or more
        // among them (the case that was flagged).
        let rate = failures as f64 / (2000 * n) as f64;
        assert!((0.008..0.012).contains(&rate), "{n}: {rate}");
        assert!(checks_with_two >= 20, "{n}: {checks_with_two}");
        failing.store(true, Ordering::Relaxed);
        calls(&svc, 5).await;
        failing.store(false, Ordering::Relaxed);
        calls(&svc, 20).await;
        let dep = monitor.check().dependency("llm").unwrap().clone();
        assert!(dep.error_anomaly, "{n}: 5 failures in 25 calls: {dep:?}");
    }
}

/// The noise threshold against exact binomial tails (computed apart, in log space): the
/// ratio halfway below the smallest count a steady rate reaches in fewer than one check in
/// 10 000, on both sides of the switch to the skew-corrected normal approximation.
#[test]
fn the_noise_threshold_is_the_binomial_tail_s() {
    for (p, calls, critical) in [
        (0.01, 25, 5),
        (0.01, 20, 4),
        (0.01, 10, 4),
        (0.05, 100, 16),
        (0.01, 10_000, 140),
        (0.01, 100_000, 1120),
        (0.001, 1_000_000, 1121),
        (0.5, 20_000, 10_264),
        // Where the skew's correction decides the count (a correction of (z² + 1) or z²
        // instead of (z² − 1) gives 761 and 1901).
        (0.34, 2_000, 760),
        (0.93, 2_000, 1_902),
    ] {
        let want = (critical as f64 - 0.5) / calls as f64;
        let got = binomial_threshold(p, calls);
        assert!(
            (got - want).abs() < 1e-12,
            "p {p}, {calls} calls: {got} against {want}"
        );
    }
    // No count is that rare: never flagged by noise.
    assert_eq!(binomial_threshold(0.99, 700), 1.0);
    assert_eq!(binomial_threshold(0.5, 3), 1.0);
    // No rate, no calls: no noise band.
    assert_eq!(binomial_threshold(0.0, 25), 0.0);
    assert_eq!(binomial_threshold(f64::NAN, 25), 0.0);
    assert_eq!(binomial_threshold(0.01, 0), 0.0);
    assert_eq!(binomial_threshold(1.0, 25), 1.0);
}

/// The base rate is the ratio of two averages over about the last 50 checks (each check
/// weighs 2 %), none before a check with calls: the noise band of a clean dependency that
/// starts failing is judged on its clean past, not on the failures themselves.
#[test]
fn the_base_rate_averages_failures_and_calls_over_checks() {
    let mut base = BaseRate::default();
    assert_eq!(base.rate(), None, "no check yet");
    base.add(0, 0);
    assert_eq!(base.rate(), None, "a check without calls says nothing");
    base.add(1, 20);
    assert_eq!(base.rate(), Some(0.05), "the first check is the average");
    base.add(21, 40);
    // failures 1 + 0.02 × (21 − 1) = 1.4, calls 20 + 0.02 × (40 − 20) = 20.4.
    let rate = base.rate().unwrap();
    assert!((rate - 1.4 / 20.4).abs() < 1e-12, "{rate}");
}

/// The base rate the noise band is judged at is the dependency's usual noise: an outage (every
/// call failing, over the error ceiling) does not teach it. Taught by one (20 checks of
/// failures), it held a third of the calls failing below the band for 100 checks after the
/// outage; now the error detector's own memory decides, as before the base rate: 50.
#[tokio::test(start_paused = true)]
async fn an_outage_does_not_teach_the_base_rate() {
    let failing = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::new();
    let svc = monitor
        .watch("llm")
        .layer(upstream(Arc::new(AtomicU64::new(0)), failing.clone()));
    let check_with = |failures: usize| {
        let (svc, failing) = (svc.clone(), failing.clone());
        async move { calls_failing(&svc, &failing, failures, 25).await }
    };
    for (failures, checks) in [(0, 30), (25, 20), (0, 60)] {
        for _ in 0..checks {
            check_with(failures).await;
            monitor.check();
        }
    }
    check_with(8).await;
    let dep = monitor.check().dependency("llm").unwrap().clone();
    assert!(
        dep.error_anomaly,
        "8 failures in 25 calls, 60 checks after an outage: {dep:?}"
    );
}

/// The exact binomial tail where `(1 − p)^calls`, the chance of no failure at all, is below
/// what an `f64` holds (about 1e-308, and nothing at all below 5e-324), though `calls × p` is
/// within 600: at 40 % and 1 480 calls it is 1e-328. The sum that started from it was 0, and
/// the threshold 1 (no rise ever above the noise); a little above, in the subnormal range, it
/// had a few bits of precision (at 37 % and 1 610 calls, a critical count of 619 for 669). The counts
/// here are the exact tails, computed apart in log space.
#[test]
fn the_noise_threshold_holds_where_no_failure_at_all_is_too_rare_for_an_f64() {
    for (p, calls, critical) in [
        (0.4, 1_480, 663),
        (0.45, 1_300, 653),
        (0.5, 1_100, 613),
        (0.6, 1_000, 658),
        (0.9, 600, 566),
        (0.37, 1_610, 669),
        // Just inside an f64's normal range, as before.
        (0.5, 1_000, 560),
    ] {
        assert!(calls as f64 * p <= 600.0, "the exact branch");
        let want = (critical as f64 - 0.5) / calls as f64;
        let got = binomial_threshold(p, calls);
        assert!(
            (got - want).abs() < 1e-12,
            "p {p}, {calls} calls: {got} against {want}"
        );
    }
}

/// A dependency whose usual failure rate is high (40 %, under the default error ceiling of
/// 50 %) at 1 480 calls a check: a rise to 50 % is far above its sampling noise (one check in
/// 10 000 reaches 44.8 %), and is an anomaly. The noise band was 1 here (the binomial tail
/// underflowed), so no rise below the ceiling was ever flagged.
#[test]
fn a_rise_from_a_high_steady_failure_rate_at_many_calls_is_an_anomaly() {
    let monitor = HealthMonitor::new();
    let watch = monitor.watch("scraper");
    for i in 0..30 {
        watch.watched.add(1_480, 592, 0);
        let dep = monitor.check().dependency("scraper").unwrap().clone();
        assert!(!dep.error_anomaly, "check {i}, a steady 40 %: {dep:?}");
        assert!(dep.healthy_now, "check {i}: {dep:?}");
    }
    watch.watched.add(1_480, 740, 0);
    let dep = monitor.check().dependency("scraper").unwrap().clone();
    assert_eq!(dep.error_ratio, Some(0.5));
    assert!(dep.error_anomaly, "40 % to 50 % at 1 480 calls: {dep:?}");
    assert!(!dep.healthy_now, "{dep:?}");
}
