//! Reconfiguring a running router, on the paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class};
use tokio::time::advance;
use tower::{Service, ServiceExt, service_fn};

use crate::*;

type Svc = tower::util::BoxCloneService<(), usize, BoxError>;

fn endpoints(n: usize) -> Vec<Svc> {
    (0..n)
        .map(|i| {
            tower::util::BoxCloneService::new(service_fn(move |_: ()| async move {
                Ok::<_, BoxError>(i)
            }))
        })
        .collect()
}

fn quick_health() -> RouteConfig {
    let mut c = RouteConfig::default();
    c.health.degraded_after = 1;
    c.health.failed_after = 2;
    c.health.min_healthy_checks = 1;
    c
}

fn fail(handle: &RouteHandle<usize>, key: usize) {
    assert!(handle.report_failure(&key, Class::new(Category::ServerError)));
}

#[tokio::test(start_paused = true)]
async fn an_ejection_ends_when_it_was_going_to_and_the_next_one_follows_the_new_rule() {
    let route = Route::builder(endpoints(3)).build().unwrap();
    let handle = route.handle();
    // Five failures in a row eject endpoint 0 for 30 s (Envoy's defaults), at the next pick.
    for _ in 0..5 {
        fail(&handle, 0);
    }
    let mut route = route;
    route.ready().await.unwrap().call(()).await.unwrap();
    assert!(handle.status()[0].ejected);
    advance(Duration::from_secs(10)).await;
    let mut c = handle.config();
    c.outlier.base_ejection = Duration::from_secs(2);
    c.outlier.max_ejection = Duration::from_secs(4);
    let done = handle.reconfigure(c).unwrap();
    assert_eq!(done.endpoints, 3);
    assert_eq!(
        done.to_string(),
        "kept the health, ejections and ramps of 3 endpoints"
    );
    let s = &handle.status()[0];
    assert!(s.ejected);
    assert_eq!((s.ejections, s.state), (1, HealthState::Degraded));
    // Still out until 30 s, as decided before the change.
    advance(Duration::from_millis(19_999)).await;
    assert!(handle.status()[0].ejected);
    advance(Duration::from_millis(1)).await;
    assert!(!handle.status()[0].ejected);
    assert_eq!(handle.status()[0].state, HealthState::Degraded);
    // The next ejection is timed by the new rule: 2 s × 2 strikes, within the new cap of 4 s
    // (under the old one it would have been 60 s).
    c.health.failed_after = 20;
    handle.reconfigure(c).unwrap();
    for _ in 0..5 {
        fail(&handle, 0);
    }
    route.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(handle.status()[0].ejections, 2);
    advance(Duration::from_millis(3_999)).await;
    assert!(handle.status()[0].ejected);
    advance(Duration::from_millis(1)).await;
    assert!(!handle.status()[0].ejected);
}

#[tokio::test(start_paused = true)]
async fn a_ramp_in_progress_keeps_its_start_and_follows_the_new_shape() {
    let route = Route::builder(endpoints(2))
        .config(quick_health())
        .build()
        .unwrap();
    let handle = route.handle();
    let sick = Arc::new(AtomicBool::new(true));
    let s2 = sick.clone();
    let check = check_fn(move |k: &usize| {
        let down = *k == 0 && s2.load(Ordering::SeqCst);
        async move {
            if down {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    });
    for _ in 0..2 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    assert_eq!(handle.status()[0].state, HealthState::Failed);
    sick.store(false, Ordering::SeqCst);
    handle.check_once(&check, Duration::from_secs(1)).await;
    handle.check_once(&check, Duration::from_secs(1)).await;
    let s = &handle.status()[0];
    assert_eq!((s.state, s.traffic_ratio), (HealthState::Recovering, 0.2));
    advance(Duration::from_secs(30)).await;
    assert_eq!(handle.status()[0].traffic_ratio, 0.4);
    // The same ramp: nothing moves.
    let mut c = handle.config();
    c.cooldown = Duration::from_secs(3);
    handle.reconfigure(c).unwrap();
    assert_eq!(handle.status()[0].traffic_ratio, 0.4);
    assert_eq!(handle.status()[0].state, HealthState::Recovering);
    // Two steps of 20 s: 30 s after its start, the ramp is done.
    c.health.ramp = Ramp::Steps {
        steps: 2,
        interval: Duration::from_secs(20),
    };
    handle.reconfigure(c).unwrap();
    assert_eq!(handle.status()[0].traffic_ratio, 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_new_trend_window_drops_the_trend_history_and_says_so() {
    let route = Route::builder(endpoints(2)).build().unwrap();
    let handle = route.handle();
    let ok = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
    handle.check_once(&ok, Duration::from_secs(1)).await;
    assert_eq!(handle.status()[0].trend, Trend::Healthy);
    let mut c = handle.config();
    c.cooldown = Duration::from_secs(2);
    assert_eq!(handle.reconfigure(c).unwrap().trend_reset, None);
    assert_eq!(handle.status()[0].trend, Trend::Healthy);
    let before = c.trend_window;
    c.trend_window = before * 2;
    let events = palisade_test::Events::start();
    let done = handle.reconfigure(c).unwrap();
    assert_eq!(done.trend_reset, Some((before, before * 2)));
    // The event says what was dropped, and for how many endpoints.
    let said = events.with_message("route reconfigured");
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].level, tracing::Level::INFO);
    assert_eq!(said[0].target, "palisade_route::reconfigure");
    assert_eq!(said[0].field("endpoints"), Some("2"));
    assert_eq!(said[0].field("reset"), Some(done.to_string().as_str()));
    assert!(done.to_string().contains("trend history dropped"), "{done}");
    assert_eq!(handle.status()[0].trend, Trend::Unknown);
    // And it counts again under the new window.
    handle.check_once(&ok, Duration::from_secs(1)).await;
    assert_eq!(handle.status()[0].trend, Trend::Healthy);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_route_configuration_changes_nothing() {
    let route = Route::builder(endpoints(2)).build().unwrap();
    let handle = route.handle();
    fail(&handle, 1);
    let before = (handle.config(), handle.status());
    let mut c = handle.config();
    c.outlier.max_ejection_ratio = 2.0;
    assert_eq!(
        handle.reconfigure(c).unwrap_err().field(),
        "outlier.max_ejection_ratio"
    );
    assert_eq!((handle.config(), handle.status()), before);
    assert_eq!(route.config(), &before.0);
}

#[tokio::test(start_paused = true)]
async fn every_clone_routes_with_the_new_configuration_from_its_next_poll_ready() {
    let mut route = Route::builder(endpoints(2)).build().unwrap();
    let mut clone = route.clone();
    let handle = route.handle();
    // Endpoint 0 is rate limited for 1 s (the default cool-down).
    let limited = Class::new(Category::RateLimited);
    assert!(handle.report_failure(&0, limited));
    let mut c = handle.config();
    c.cooldown = Duration::from_secs(60);
    c.max_cooldown = Duration::from_secs(60);
    handle.reconfigure(c).unwrap();
    assert_eq!(route.config().cooldown, Duration::from_secs(1));
    route.ready().await.unwrap();
    clone.ready().await.unwrap();
    assert_eq!(route.config().cooldown, Duration::from_secs(60));
    assert_eq!(clone.config().cooldown, Duration::from_secs(60));
    // The next rate limit cools endpoint 1 down for the new 60 s.
    assert!(handle.report_failure(&1, limited));
    advance(Duration::from_secs(30)).await;
    assert!(handle.status()[1].cooling_down);
    assert!(!handle.status()[0].cooling_down);
}

#[tokio::test(start_paused = true)]
async fn calls_in_flight_across_a_reconfiguration_keep_their_count() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let slow: Svc = tower::util::BoxCloneService::new(service_fn(move |_: ()| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok::<_, BoxError>(0)
        }
    }));
    let mut route = Route::builder(vec![slow]).build().unwrap();
    let handle = route.handle();
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(tokio::spawn(route.ready().await.unwrap().call(())));
    }
    tokio::task::yield_now().await;
    assert_eq!(handle.status()[0].in_flight, 3);
    let mut c = handle.config();
    c.panic_ratio = None;
    handle.reconfigure(c).unwrap();
    route.ready().await.unwrap();
    assert_eq!(handle.status()[0].in_flight, 3);
    gate.notify_waiters();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(handle.status()[0].in_flight, 0);
}

/// The handle reads back the configuration in force: the builder's, then each one put in force.
#[test]
fn the_handle_reads_back_the_configuration_in_force() {
    let built = quick_health();
    let route = Route::builder(endpoints(2)).config(built).build().unwrap();
    let handle = route.handle();
    assert_eq!(handle.config(), built);
    assert_ne!(handle.config(), RouteConfig::default());
    let mut next = built;
    next.panic_ratio = None;
    next.health.failed_after = 7;
    handle.reconfigure(next).unwrap();
    assert_eq!(handle.config(), next);
}
