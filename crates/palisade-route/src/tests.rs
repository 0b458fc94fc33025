//! The router on the paused clock.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::attempt::{self, Attempt};
use palisade_core::{BoxError, Category, Class, class_of};
use tokio::sync::mpsc;
use tower::discover::Change;
use tower::{Service, ServiceExt, service_fn};

use crate::*;

type Svc = tower::util::BoxCloneService<(), &'static str, BoxError>;

/// An endpoint that answers its name while `up`, and fails with `error` otherwise.
fn endpoint(name: &'static str, up: Arc<AtomicBool>, error: &'static str) -> Svc {
    tower::util::BoxCloneService::new(service_fn(move |_: ()| {
        let up = up.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(name)
            } else {
                Err::<_, BoxError>(error.into())
            }
        }
    }))
}

fn flags(n: usize) -> Vec<Arc<AtomicBool>> {
    (0..n).map(|_| Arc::new(AtomicBool::new(true))).collect()
}

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const NAMES_7: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

fn route_of(cfg: RouteConfig, up: &[Arc<AtomicBool>]) -> Route<Static<Svc>> {
    Route::builder(
        up.iter()
            .enumerate()
            .map(|(i, f)| endpoint(NAMES[i], f.clone(), "503 service unavailable")),
    )
    .config(cfg)
    .build()
    .unwrap()
}

async fn call<D>(route: &mut Route<D>) -> Result<&'static str, BoxError>
where
    D: tower::discover::Discover<Key = usize, Service = Svc> + Unpin,
    D::Error: Into<BoxError>,
{
    route.ready().await?.call(()).await
}

/// An endpoint that is always up.
fn up(name: &'static str) -> Svc {
    endpoint(
        name,
        Arc::new(AtomicBool::new(true)),
        "503 service unavailable",
    )
}

/// An endpoint that answers "slow" after a second.
fn slow() -> Svc {
    tower::util::BoxCloneService::new(service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>("slow")
    }))
}

/// The defaults without panic mode.
fn no_panic() -> RouteConfig {
    RouteConfig {
        panic_ratio: None,
        ..RouteConfig::default()
    }
}

fn no_slow_start() -> RouteConfig {
    RouteConfig {
        slow_start: false,
        ..RouteConfig::default()
    }
}

/// An active check that finds the endpoint with key `key` down and the others healthy.
fn down(key: usize) -> impl HealthCheck<usize> {
    down_where(move |k| *k == key)
}

/// An active check that finds the endpoints whose keys `dead` picks down, the others healthy.
fn down_where(dead: impl Fn(&usize) -> bool + Send + Sync + 'static) -> impl HealthCheck<usize> {
    check_fn(move |k: &usize| {
        let down = dead(k);
        async move {
            if down {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_the_ejection_ends() {
    let events = palisade_test::Events::start();
    let up = flags(3);
    up[1].store(false, Ordering::SeqCst);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    let mut failures = 0;
    for _ in 0..200 {
        if call(&mut route).await.is_err() {
            failures += 1;
        }
    }
    // Exactly the five failures that ejected it.
    assert_eq!(failures, 5);
    let st = handle.status();
    assert!(st[1].ejected);
    assert_eq!(st[1].ejections, 1);
    assert_eq!(st[1].last_error, Some(Category::ServerError));
    // The ejection lasts 30 s: at 29.999 s still out, at 30 s back.
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert!(handle.status()[1].ejected);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!handle.status()[1].ejected);
    // Still failing: the second ejection lasts twice as long.
    for _ in 0..200 {
        let _ = call(&mut route).await;
    }
    let st = handle.status();
    assert!(st[1].ejected);
    assert_eq!(st[1].ejections, 2);
    // Each ejection is logged with its count and length.
    let logged: Vec<_> = events
        .with_message("endpoint ejected")
        .iter()
        .map(|e| {
            (
                e.level,
                e.field("ejections").unwrap().to_owned(),
                e.field("for_ms").unwrap().to_owned(),
            )
        })
        .collect();
    let warn = tracing::Level::WARN;
    assert_eq!(
        logged,
        [
            (warn, "1".to_owned(), "30000".to_owned()),
            (warn, "2".to_owned(), "60000".to_owned())
        ]
    );
    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert!(handle.status()[1].ejected);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!handle.status()[1].ejected);
}

#[tokio::test(start_paused = true)]
async fn the_ejection_cap_always_allows_one_and_no_more() {
    let up = flags(4);
    for f in &up {
        f.store(false, Ordering::SeqCst);
    }
    let cfg = no_panic();
    let mut route = route_of(cfg, &up);
    for _ in 0..100 {
        let _ = call(&mut route).await;
    }
    // 10 % of 4 rounds down to 0, but one is always allowed.
    let ejected = route.handle().status().iter().filter(|s| s.ejected).count();
    assert_eq!(ejected, 1);
}

#[tokio::test(start_paused = true)]
async fn nothing_eligible_fails_fast_with_the_soonest_return() {
    let up = flags(1);
    up[0].store(false, Ordering::SeqCst);
    let cfg = no_panic();
    let mut route = route_of(cfg, &up);
    for _ in 0..5 {
        assert_eq!(
            call(&mut route).await.unwrap_err().to_string(),
            "503 service unavailable"
        );
    }
    // The fifth failure ejects it at the next pick, for 30 s.
    let err = call(&mut route).await.unwrap_err();
    let none = err.downcast_ref::<NoHealthyEndpoint>().unwrap();
    assert_eq!(none.retry_after, Some(Duration::from_secs(30)));
    tokio::time::advance(Duration::from_secs(10)).await;
    let err = call(&mut route).await.unwrap_err();
    let class = class_of(&err);
    assert_eq!(class.category, Category::ServerError);
    assert_eq!(class.retry_after, Some(Duration::from_secs(20)));
    assert!(!route.handle().is_ready());
}

#[tokio::test(start_paused = true)]
async fn panic_mode_spreads_over_all_rather_than_fail() {
    let events = palisade_test::Events::start();
    let up = flags(4);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    // Active checks fail three of four endpoints ten times: Failed, no traffic.
    let sick = check_fn(|k: &usize| {
        let k = *k;
        async move {
            if k == 0 {
                Ok(())
            } else {
                Err::<(), BoxError>("down".into())
            }
        }
    });
    for _ in 0..10 {
        handle.check_once(&sick, Duration::from_secs(1)).await;
    }
    let st = handle.status();
    assert_eq!(st[0].state, HealthState::Healthy);
    assert!(st[1..].iter().all(|s| s.state == HealthState::Failed));
    // 1 of 4 can take traffic: below the 50 % panic threshold, so the first calls spread over
    // all four. Their successes are healthy signals: the failed ones turn Recovering and ramp.
    let mut seen = [0; 4];
    for _ in 0..8 {
        let name = call(&mut route).await.unwrap();
        seen[NAMES.iter().position(|n| *n == name).unwrap()] += 1;
    }
    assert!(seen[1..].iter().sum::<i32>() >= 4, "{seen:?}");
    // Each pick in panic mode says so (at DEBUG).
    let said = events.with_message("panic mode: ignoring health");
    assert!(!said.is_empty());
    assert_eq!(said[0].field("endpoints"), Some("4"));
    for _ in 0..400 {
        let name = call(&mut route).await.unwrap();
        seen[NAMES.iter().position(|n| *n == name).unwrap()] += 1;
    }
    assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    assert!(
        handle.status()[1..]
            .iter()
            .all(|s| s.state == HealthState::Recovering)
    );

    // Without panic mode only the healthy one is used.
    let mut strict = route_of(no_panic(), &up);
    let h = strict.handle();
    for _ in 0..10 {
        h.check_once(&sick, Duration::from_secs(1)).await;
    }
    for _ in 0..100 {
        assert_eq!(call(&mut strict).await.unwrap(), "a");
    }
}

#[tokio::test(start_paused = true)]
async fn recovery_ramps_traffic_back_in_steps() {
    let up = flags(2);
    let cfg = no_panic();
    let mut route = route_of(cfg, &up);
    let handle = route.handle();
    let b_down = Arc::new(AtomicBool::new(true));
    let flag = b_down.clone();
    let check = check_fn(move |k: &usize| {
        let fail = *k == 1 && flag.load(Ordering::SeqCst);
        async move {
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    });
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    assert_eq!(handle.status()[1].state, HealthState::Failed);
    b_down.store(false, Ordering::SeqCst);
    handle.check_once(&check, Duration::from_secs(1)).await;
    handle.check_once(&check, Duration::from_secs(1)).await;
    assert_eq!(handle.status()[1].state, HealthState::Recovering);
    assert_eq!(handle.status()[1].traffic_ratio, 0.0);
    for _ in 0..50 {
        assert_eq!(call(&mut route).await.unwrap(), "a");
    }
    handle.check_once(&check, Duration::from_secs(1)).await;
    assert_eq!(handle.status()[1].traffic_ratio, 0.2);
    // At 20 % against a's 100 %, b gets about a sixth of the traffic.
    let mut b = 0;
    for _ in 0..1200 {
        if call(&mut route).await.unwrap() == "b" {
            b += 1;
        }
    }
    assert!((120..=280).contains(&b), "{b}");
    tokio::time::advance(Duration::from_secs(120)).await;
    let st = handle.status();
    assert_eq!(st[1].state, HealthState::Healthy);
    assert_eq!(st[1].traffic_ratio, 1.0);
    assert_eq!(st[1].trend, Trend::Unhealthy); // 3 good of 13 checks in the window
}

#[tokio::test(start_paused = true)]
async fn tiers_spill_over_as_the_first_degrades() {
    let up = flags(3);
    let cfg = no_panic();
    let ep = |i: usize| endpoint(NAMES[i], up[i].clone(), "503");
    let mut route = Route::builder([ep(0), ep(1)])
        .tier(1, [ep(2)])
        .config(cfg)
        .build()
        .unwrap();
    let handle = route.handle();
    for _ in 0..200 {
        assert_ne!(
            call(&mut route).await.unwrap(),
            "c",
            "tier 1 idles while tier 0 is healthy"
        );
    }
    let check = down(1);
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    // Tier 0 has half its capacity: 0.5 × 1.4 = 70 % stays, 30 % spills to tier 1.
    let mut c = 0;
    for _ in 0..2000 {
        if call(&mut route).await.unwrap() == "c" {
            c += 1;
        }
    }
    assert!((500..=700).contains(&c), "{c}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_avoids_the_endpoint_that_just_failed() {
    let up = flags(3);
    let mut route = route_of(RouteConfig::default(), &up);
    let tokens: Vec<u64> = route.handle().status().iter().map(|s| s.token).collect();
    for _ in 0..200 {
        let mut state = Attempt {
            number: 2,
            avoid: Some(tokens[0]),
        };
        let name = attempt::scope(&mut state, || {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(route.poll_ready(&mut cx).is_ready());
            let mut fut = std::pin::pin!(route.call(()));
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => unreachable!("endpoints answer at once"),
            }
        });
        assert_ne!(name, "a");
    }
    // A failure inside the scope is reported back for the next attempt.
    up[1].store(false, Ordering::SeqCst);
    up[2].store(false, Ordering::SeqCst);
    let mut reported = None;
    for _ in 0..20 {
        let mut state = Attempt::default();
        let failed = attempt::scope(&mut state, || {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = route.poll_ready(&mut cx);
            let mut fut = std::pin::pin!(route.call(()));
            matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Err(_)))
        });
        if failed {
            reported = state.avoid;
            break;
        }
    }
    assert!(
        reported == Some(tokens[1]) || reported == Some(tokens[2]),
        "{reported:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limits_cool_down_without_ejecting() {
    let up = flags(2);
    let mut eps = vec![endpoint("a", up[0].clone(), "503")];
    eps.push(endpoint(
        "b",
        Arc::new(AtomicBool::new(false)),
        "429 rate limit, retry after 2",
    ));
    let mut route = Route::new(eps);
    let handle = route.handle();
    let mut b_errors = 0;
    for _ in 0..100 {
        if call(&mut route).await.is_err() {
            b_errors += 1;
        }
    }
    // One 429 cools b for 2 s; nothing ejects it and a serves the rest.
    assert_eq!(b_errors, 1);
    let st = handle.status();
    assert!(st[1].cooling_down && !st[1].ejected);
    assert_eq!(st[1].state, HealthState::Healthy);
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert!(handle.status()[1].cooling_down);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!handle.status()[1].cooling_down);
}

#[tokio::test(start_paused = true)]
async fn when_every_endpoint_cools_down_calls_still_reach_them() {
    // Two endpoints behind limits that refuse every other call (as a limiter refilling at
    // half the rate sent does), each refusal hinting 2 s.
    let limited = |name: &'static str| {
        let turn = Arc::new(AtomicUsize::new(0));
        tower::util::BoxCloneService::new(service_fn(move |_: ()| {
            let refused = turn.fetch_add(1, Ordering::SeqCst) % 2 == 1;
            async move {
                if refused {
                    Err::<&'static str, BoxError>("429 rate limit, retry after 2".into())
                } else {
                    Ok(name)
                }
            }
        }))
    };
    let mut route = Route::new([limited("a"), limited("b")]);
    let handle = route.handle();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..100 {
        match call(&mut route).await {
            Ok(_) => served += 1,
            Err(e) => {
                // Each failure is a server's refusal, none the router's own.
                assert!(e.downcast_ref::<NoHealthyEndpoint>().is_none(), "{e}");
                refused += 1;
            }
        }
    }
    // Both cool down from their first refusals on, and the limiters still serve half.
    assert!(handle.status().iter().all(|s| s.cooling_down));
    assert_eq!((served, refused), (50, 50));
}

#[tokio::test(start_paused = true)]
async fn after_every_endpoint_was_out_panic_mode_lasts_until_enough_traffic_is_let_through() {
    // Both endpoints fail until health takes them out (held, without active checks), then
    // both are back. Panic mode sends calls to both; the first to recover must not take all
    // the traffic at its ramp's first step while the other, held out, gets none.
    let up = flags(2);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    for f in &up {
        f.store(false, Ordering::SeqCst);
    }
    for _ in 0..40 {
        let _ = call(&mut route).await;
    }
    assert!(handle.status().iter().all(|s| s.traffic_ratio == 0.0));
    for f in &up {
        f.store(true, Ordering::SeqCst);
    }
    let mut seen = [0; 2];
    for _ in 0..200 {
        let name = call(&mut route).await.unwrap();
        seen[usize::from(name == "b")] += 1;
    }
    assert!(seen.iter().all(|n| *n >= 50), "{seen:?}");
}

/// Discovery through a channel.
struct Channel<K = usize>(mpsc::UnboundedReceiver<Change<K, Svc>>);

impl<K> futures_core::Stream for Channel<K> {
    type Item = Result<Change<K, Svc>, BoxError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_changes_while_calls_are_in_flight() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, slow())).unwrap();
    let cfg = no_slow_start();
    let mut route = Route::discover_builder(Channel(rx))
        .config(cfg)
        .build()
        .unwrap();
    let handle = route.handle();
    let in_flight = route.ready().await.unwrap().call(());
    assert_eq!(handle.status()[0].in_flight, 1);
    // Replace the endpoint set while the call runs.
    tx.send(Change::Remove(1)).unwrap();
    tx.send(Change::Insert(2, up("new"))).unwrap();
    assert_eq!(call(&mut route).await.unwrap(), "new");
    assert_eq!(route.keys().copied().collect::<Vec<_>>(), vec![2]);
    // The call to the removed endpoint still completes.
    assert_eq!(in_flight.await.unwrap(), "slow");
    assert_eq!(handle.status().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn new_endpoints_slow_start() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, up("old"))).unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let _ = call(&mut route).await.unwrap();
    let mut route2 = {
        let (tx2, rx2) = mpsc::unbounded_channel();
        tx2.send(Change::Insert(1, up("fresh"))).unwrap();
        Route::discover(Channel(rx2))
    };
    let _ = call(&mut route2).await.unwrap();
    let st = route2.handle().status();
    assert_eq!(st[0].state, HealthState::Recovering);
    assert_eq!(st[0].traffic_ratio, 0.2);
    drop(tx);
}

/// A fleet that discovery announces at once is all new, every endpoint in slow start: that is
/// healthy capacity, not an outage, so panic mode stays off and an endpoint that fails every
/// call is ejected and kept out as with slow start off. Counted by their ramps (20 % each,
/// below the panic ratio of 50 %), the router panicked for the ramp's first minute and sent
/// the ejected endpoint a third of the calls, every one failing.
#[tokio::test(start_paused = true)]
async fn a_fleet_discovered_at_once_is_not_in_panic_while_it_slow_starts() {
    let (tx, rx) = mpsc::unbounded_channel();
    let bad = Arc::new(AtomicBool::new(false));
    tx.send(Change::Insert(0, up("a"))).unwrap();
    tx.send(Change::Insert(
        1,
        endpoint("b", bad, "503 service unavailable"),
    ))
    .unwrap();
    tx.send(Change::Insert(2, up("c"))).unwrap();
    let mut route = Route::discover(Channel(rx));
    let mut failed = 0;
    for _ in 0..1_000 {
        if call(&mut route).await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Five failures in a row take it out for 30 s; its trial after that fails at once.
    assert!(failed <= 10, "{failed} of 1000 calls failed");
    let st = route.handle().status();
    assert_eq!(st[1].traffic_ratio, 0.0, "{st:?}");
    assert_eq!(st[0].state, HealthState::Recovering, "still slow-starting");
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn success_rate_outliers_are_ejected_by_the_checker() {
    let up = flags(6);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    // Endpoint f fails 40 % of its calls; the others never.
    let mut n = 0u32;
    let flaky = up[5].clone();
    for _ in 0..2400 {
        n += 1;
        flaky.store(n % 5 >= 2, Ordering::SeqCst);
        let _ = call(&mut route).await;
    }
    let ok = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
    handle.check_once(&ok, Duration::from_secs(1)).await;
    let st = handle.status();
    assert!(st[5].ejected, "{st:?}");
    assert!(st[..5].iter().all(|s| !s.ejected));
}

#[test]
fn bad_configuration_names_the_field() {
    let up = flags(1);
    let builder = || Route::builder(up.iter().map(|f| endpoint("a", f.clone(), "503")));
    let field = |r: Result<Route<Static<Svc>>, palisade_core::ConfigError>| {
        r.unwrap_err().field().to_owned()
    };
    assert_eq!(
        field(builder().panic_ratio(Some(1.5)).build()),
        "panic_ratio"
    );
    assert_eq!(
        field(builder().overprovisioning(0.5).build()),
        "overprovisioning"
    );
    assert_eq!(
        field(builder().cooldown(Duration::from_secs(61)).build()),
        "max_cooldown"
    );
    assert_eq!(
        field(builder().trend_window(Duration::from_millis(9)).build()),
        "trend_window"
    );
    let o = OutlierConfig {
        max_ejection: Duration::from_secs(1),
        ..OutlierConfig::default()
    };
    assert_eq!(field(builder().outlier(o).build()), "outlier.max_ejection");
    let h = HealthConfig {
        failed_after: 1,
        ..HealthConfig::default()
    };
    assert_eq!(field(builder().health(h).build()), "health.failed_after");
    let h = HealthConfig {
        ramp: Ramp::Steps {
            steps: 0,
            interval: Duration::from_secs(1),
        },
        ..HealthConfig::default()
    };
    assert_eq!(field(builder().health(h).build()), "health.ramp.steps");
    let r = builder().configure(|c| c.outlier.consecutive_failures = Some(0));
    assert_eq!(field(r.build()), "outlier.consecutive_failures");
    // The last of config and the setters wins.
    let cfg = RouteConfig {
        panic_ratio: Some(2.0),
        ..RouteConfig::default()
    };
    assert!(builder().config(cfg).panic_ratio(None).build().is_ok());
    assert!(builder().panic_ratio(None).config(cfg).build().is_err());
}

#[test]
fn the_builder_sets_each_field() {
    let up = flags(1);
    let outlier = OutlierConfig {
        min_hosts: 3,
        ..OutlierConfig::default()
    };
    let health = HealthConfig {
        degraded_after: 2,
        ..HealthConfig::default()
    };
    let route = Route::builder(up.iter().map(|f| endpoint("a", f.clone(), "503")))
        .health(health)
        .outlier(outlier)
        .panic_ratio(Some(0.25))
        .overprovisioning(2.0)
        .cooldown(Duration::from_secs(2))
        .max_cooldown(Duration::from_secs(3))
        .slow_start(false)
        .trend_window(Duration::from_secs(4))
        .seed(5)
        .build()
        .unwrap();
    let want = RouteConfig {
        health,
        outlier,
        panic_ratio: Some(0.25),
        overprovisioning: 2.0,
        cooldown: Duration::from_secs(2),
        max_cooldown: Duration::from_secs(3),
        slow_start: false,
        trend_window: Duration::from_secs(4),
        seed: 5,
    };
    assert_eq!(route.config(), &want);
    assert_eq!(
        Route::new(Vec::<Svc>::new()).config(),
        &RouteConfig::default()
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_health_and_pick_differently() {
    let up = flags(4);
    let route = route_of(RouteConfig::default(), &up);
    // One clone per request (as a caller that clones per connection or per task makes them):
    // the first picks must spread.
    let mut firsts = [0; 4];
    for _ in 0..400 {
        let mut clone = route.clone();
        let name = call(&mut clone).await.unwrap();
        firsts[NAMES.iter().position(|n| *n == name).unwrap()] += 1;
    }
    assert!(firsts.iter().all(|n| *n > 60), "{firsts:?}");
    // Health seen through one clone is seen by all.
    up[2].store(false, Ordering::SeqCst);
    let mut failing = route.clone();
    for _ in 0..200 {
        let _ = call(&mut failing).await;
    }
    assert!(route.handle().status()[2].ejected);
    let mut other = route.clone();
    for _ in 0..100 {
        assert_ne!(call(&mut other).await.unwrap(), "c");
    }
}

#[tokio::test(start_paused = true)]
async fn the_checker_runs_a_suite_on_an_interval_that_the_user_spawns() {
    let up = flags(2);
    let route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    let db_ok = Arc::new(AtomicBool::new(true));
    let flag = db_ok.clone();
    // Two checks; endpoint 1's second check fails while `db_ok` is false.
    let suite = Suite::new()
        .with(check_fn(|_: &usize| async { Ok::<(), BoxError>(()) }))
        .with(check_fn(move |k: &usize| {
            let fail = *k == 1 && !flag.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err::<(), BoxError>("db down".into())
                } else {
                    Ok(())
                }
            }
        }));
    db_ok.store(false, Ordering::SeqCst);
    let checker = tokio::spawn(handle.health_checker(suite, Duration::from_secs(10)));
    // Ticks at 0, 10, 20 s: three failures make endpoint 1 degraded.
    tokio::time::sleep(Duration::from_millis(20_001)).await;
    let st = handle.status();
    assert_eq!(st[0].state, HealthState::Healthy);
    assert_eq!(st[1].state, HealthState::Degraded);
    assert_eq!(st[1].consecutive_unhealthy, 3);
    assert_eq!(st[1].last_check, Some(Duration::from_millis(1)));
    // Ten failures: failed.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(handle.status()[1].state, HealthState::Failed);
    db_ok.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let st = handle.status();
    assert_eq!(st[1].state, HealthState::Recovering);
    assert_eq!(st[1].traffic_ratio, 0.2);
    assert_eq!(st[0].trend, Trend::Healthy);
    assert_eq!(st[0].healthy_ratio, Some(1.0));
    checker.abort();
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_outliers_are_ejected_by_the_checker() {
    // Success-rate ejection off, so only the failure-percentage rule can act.
    let mut cfg = RouteConfig::default();
    cfg.outlier.success_rate_stdev_factor = None;
    cfg.outlier.consecutive_failures = None;
    cfg.outlier.failure_ratio = Some(0.85);
    cfg.outlier.max_ejection_ratio = 0.5;
    // Keep the health state machine out of the way (it would take e out first).
    cfg.health.degraded_after = 255;
    cfg.health.failed_after = 255;
    let up = flags(5);
    let mut route = route_of(cfg, &up);
    let handle = route.handle();
    // Endpoint e fails about 9 calls in 10 (≥ 85 %); d about 7 in 10 (below).
    let (d, e) = (up[3].clone(), up[4].clone());
    for n in 0..3000u32 {
        d.store(n % 10 >= 7, Ordering::SeqCst);
        e.store(n % 10 == 9, Ordering::SeqCst);
        let _ = call(&mut route).await;
    }
    let ok = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
    handle.check_once(&ok, Duration::from_secs(1)).await;
    let st = handle.status();
    assert!(st[4].ejected, "{:?}", st[4]);
    assert!(!st[3].ejected, "{:?}", st[3]);
}

#[tokio::test(start_paused = true)]
async fn calls_clone_no_service_and_a_failed_readiness_gets_a_fresh_one() {
    let endpoint = Scripted::new("ok", READY);
    let (clones, mode) = (endpoint.clones.clone(), endpoint.mode.clone());
    let mut route = Route::new([endpoint]);
    let made = clones.load(Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(route.ready().await.unwrap().call(()).await.unwrap(), "ok");
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        made,
        "a call cloned a service"
    );

    // A readiness failure spends the instance: the router takes a fresh clone, which works.
    // The one endpoint failed its readiness, so this call fails; the router itself is ready.
    mode.store(REFUSED_ONCE, Ordering::SeqCst);
    let err = route.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    assert_eq!(clones.load(Ordering::SeqCst), made + 1);
    assert_eq!(route.ready().await.unwrap().call(()).await.unwrap(), "ok");

    // A clone of the router has its own services.
    let mut other = route.clone();
    assert_eq!(clones.load(Ordering::SeqCst), made + 2);
    assert_eq!(other.ready().await.unwrap().call(()).await.unwrap(), "ok");
}

/// What a [`Scripted`] endpoint's readiness is: ready, not ready yet, failing, or failing
/// once and then ready.
const READY: usize = 0;
const NOT_READY: usize = 1;
const REFUSED: usize = 2;
const REFUSED_ONCE: usize = 3;

/// An endpoint whose readiness is what `mode` says (see [`READY`]), that counts its clones and
/// must be made ready on the very instance that is called (as a semaphore-backed client must).
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    mode: Arc<AtomicUsize>,
    clones: Arc<AtomicUsize>,
    ready: bool,
}

impl Scripted {
    fn new(name: &'static str, mode: usize) -> Self {
        Scripted {
            name,
            mode: Arc::new(AtomicUsize::new(mode)),
            clones: Arc::new(AtomicUsize::new(0)),
            ready: false,
        }
    }

    fn clones(&self) -> usize {
        self.clones.load(Ordering::SeqCst)
    }
}

impl Clone for Scripted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Scripted {
            name: self.name,
            mode: self.mode.clone(),
            clones: self.clones.clone(),
            ready: false,
        }
    }
}

impl Service<()> for Scripted {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.mode.load(Ordering::SeqCst) {
            READY => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            NOT_READY => Poll::Pending,
            REFUSED_ONCE => {
                self.mode.store(READY, Ordering::SeqCst);
                Poll::Ready(Err("connection refused".into()))
            }
            _ => Poll::Ready(Err("connection refused".into())),
        }
    }

    fn call(&mut self, _: ()) -> Self::Future {
        assert!(self.ready, "called without poll_ready on this instance");
        self.ready = false;
        std::future::ready(Ok(self.name))
    }
}

/// A service queued for its readiness (not ready at an earlier pass) whose readiness then
/// fails is replaced by one fresh clone, and that clone is not queued (`Route::unqueue`): the
/// pass that ends ready later lets go of nothing of it, so it is not replaced a second time.
/// The endpoint is the second one, so that its mark is not in bit 0.
#[tokio::test(start_paused = true)]
async fn a_queued_service_whose_readiness_fails_is_replaced_once() {
    let (a, b) = (Scripted::new("a", NOT_READY), Scripted::new("b", NOT_READY));
    let mut route = Route::new([a.clone(), b.clone()]);
    let made = b.clones();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Neither is ready: the router waits, queued at both.
    assert!(route.poll_ready(&mut cx).is_pending());
    assert_eq!(b.clones(), made);
    // b's readiness fails: a fresh clone replaces it. a is still not ready.
    b.mode.store(REFUSED, Ordering::SeqCst);
    assert!(route.poll_ready(&mut cx).is_pending());
    assert_eq!(b.clones(), made + 1);
    // a gets ready: the pass ends ready, and b's fresh clone, queued for nothing, is kept.
    a.mode.store(READY, Ordering::SeqCst);
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(poll_now(route.call(())), "a");
    assert_eq!(b.clones(), made + 1, "b's fresh clone was replaced again");
}

/// A discovery change keeps this instance's services of the endpoints that stayed
/// (`Route::refresh`), with what `poll_ready` reserved: the reserved service is still the one
/// made ready for the call, not a fresh clone.
#[tokio::test(start_paused = true)]
async fn a_discovery_change_keeps_the_services_of_the_endpoints_that_stayed() {
    let (a, b) = (Scripted::new("a", READY), Scripted::new("b", READY));
    let (tx, rx) = mpsc::unbounded_channel();
    for (key, svc) in [(0, &a), (1, &b)] {
        let svc = tower::util::BoxCloneService::new(svc.clone());
        tx.send(Change::Insert(key, svc)).unwrap();
    }
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(route.poll_ready(&mut cx).is_ready());
    let reserved = route.reserved().expect("an endpoint is reserved");
    tx.send(Change::Insert(2, up("c"))).unwrap();
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(keys(&route), [0, 1, 2]);
    assert_eq!(route.reserved(), Some(reserved));
    let answer = poll_now(route.call(()));
    let status = route.handle().status();
    let at = status.iter().position(|s| s.token == reserved).unwrap();
    assert_eq!(answer, ["a", "b"][at]);
}

/// An endpoint that answers its name and fails its readiness while `refusals`, shared by
/// every endpoint made with it, is above zero (each failure takes one off).
#[derive(Clone)]
struct Refusing {
    name: &'static str,
    refusals: Arc<AtomicUsize>,
}

impl Service<()> for Refusing {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let refuse = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            Poll::Ready(Err("connection refused".into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(self.name))
    }
}

fn refusing(name: &'static str, refusals: &Arc<AtomicUsize>) -> Svc {
    tower::util::BoxCloneService::new(Refusing {
        name,
        refusals: refusals.clone(),
    })
}

#[tokio::test(start_paused = true)]
async fn a_buffer_in_front_outlives_a_pass_in_which_every_endpoint_fails_its_readiness() {
    let refusals = Arc::new(AtomicUsize::new(0));
    let route = Route::builder(NAMES[..3].iter().map(|n| refusing(n, &refusals)))
        .build()
        .unwrap();
    let handle = route.handle();
    let mut buffered = tower::buffer::Buffer::new(route, 8);
    assert!(buffered.ready().await.unwrap().call(()).await.is_ok());

    // Every readiness poll of the next pass fails (a pass picks as often as there are
    // endpoints): that call fails with the router's typed error ...
    refusals.store(3, Ordering::SeqCst);
    let err = buffered.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    assert_eq!(
        refusals.load(Ordering::SeqCst),
        0,
        "one pass tried three times"
    );
    // ... each failure counted against the endpoint it came from, as a failed call would ...
    let st = handle.status();
    let counted: u32 = st.iter().map(|s| u32::from(s.consecutive_unhealthy)).sum();
    assert_eq!(counted, 3, "{st:?}");
    assert!(
        st.iter()
            .filter(|s| s.consecutive_unhealthy > 0)
            .all(|s| s.last_error.is_some()),
        "{st:?}"
    );
    // ... and the router lives on: once the endpoints are ready again, calls through the same
    // Buffer succeed.
    for _ in 0..30 {
        let name = buffered.ready().await.unwrap().call(()).await.unwrap();
        assert!(NAMES[..3].contains(&name));
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_readiness_keeps_failing_is_ejected_and_poll_ready_never_fails() {
    let ok = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(AtomicUsize::new(usize::MAX));
    let mut route = Route::builder([refusing("a", &ok), refusing("b", &never)])
        .build()
        .unwrap();
    let handle = route.handle();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut failed = 0;
    for _ in 0..200 {
        assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        match route.call(()).await {
            Ok(name) => assert_eq!(name, "a"),
            Err(err) => {
                assert!(err.is::<NoHealthyEndpoint>(), "{err}");
                failed += 1;
            }
        }
    }
    // b's readiness failures ejected it, as five failed calls in a row would have.
    let st = handle.status();
    assert!(st[1].ejected, "{st:?}");
    assert_eq!(st[1].ejections, 1);
    assert_eq!(st[1].last_error, Some(Category::Network));
    assert!(!st[0].ejected);
    assert!(failed < 5, "{failed} calls failed");
}

#[tokio::test(start_paused = true)]
async fn a_pass_tries_every_eligible_endpoint_before_one_whose_readiness_failed() {
    // Three endpoints, two failing their readiness every time, one always ready, the
    // defaults (seed included). Once the failing two are out, the one left is a third of the
    // traffic: panic mode ignores health and spreads the picks over all three. A pass (as many
    // picks as endpoints) whose picks could land on the failing two again and again failed
    // about 30 % of calls.
    let ok = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(AtomicUsize::new(usize::MAX));
    let eps = [
        refusing("a", &never),
        refusing("b", &ok),
        refusing("c", &never),
    ];
    let mut route = Route::new(eps);
    let handle = route.handle();
    let b = handle.status()[1].token;
    let mut failed = 0;
    for n in 0..3_000 {
        // Every tenth call is a retry that avoids b, the only ready endpoint: it goes back to b
        // rather than to an endpoint whose readiness failed.
        let answer = if n % 10 == 9 {
            let mut state = Attempt {
                number: 2,
                avoid: Some(b),
            };
            attempt_in(&mut route, &mut state)
        } else {
            call(&mut route).await
        };
        match answer {
            Ok(name) => assert_eq!(name, "b"),
            Err(err) => {
                assert!(err.is::<NoHealthyEndpoint>(), "{err}");
                failed += 1;
            }
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // a and c are out (one ejected, one failed by the health machine), so panic mode was on.
    let st = handle.status();
    for i in [0, 2] {
        assert!(
            st[i].ejected || st[i].state == HealthState::Failed,
            "{st:?}"
        );
    }
    assert_eq!(failed, 0, "{failed} of 3000 calls failed with b ready");
}

#[tokio::test(start_paused = true)]
async fn a_primary_whose_readiness_fails_leaves_the_call_to_the_standby() {
    // A single primary whose readiness fails every time: the pass picks it first (a healthy
    // tier keeps its calls), then, since it may not pick it again while the standby is
    // eligible, the standby. Picks that could repeat it failed every call until its failures
    // ejected it.
    let ok = Arc::new(AtomicUsize::new(0));
    let never = Arc::new(AtomicUsize::new(usize::MAX));
    let mut route = Route::builder([refusing("a", &never)])
        .tier(1, [refusing("b", &ok)])
        .build()
        .unwrap();
    for _ in 0..100 {
        assert_eq!(call(&mut route).await.unwrap(), "b");
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let st = route.handle().status();
    assert!(st[0].ejected, "{st:?}");
}

/// An endpoint like [`endpoint`] that also logs when each call reaches it (ms since made).
fn logged(name: &'static str, up: Arc<AtomicBool>, log: Arc<std::sync::Mutex<Vec<u64>>>) -> Svc {
    let start = tokio::time::Instant::now();
    tower::util::BoxCloneService::new(service_fn(move |_: ()| {
        log.lock().unwrap().push(start.elapsed().as_millis() as u64);
        let up = up.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(name)
            } else {
                Err::<_, BoxError>("503 service unavailable".into())
            }
        }
    }))
}

/// Three replicas without active checks; b (index 1) logs its calls.
fn three_with_b_logged(
    cfg: RouteConfig,
    b_up: &Arc<AtomicBool>,
) -> (Route<Static<Svc>>, Arc<std::sync::Mutex<Vec<u64>>>) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let up = Arc::new(AtomicBool::new(true));
    let eps = [
        endpoint("a", up.clone(), "503"),
        logged("b", b_up.clone(), log.clone()),
        endpoint("c", up, "503"),
    ];
    (Route::builder(eps).config(cfg).build().unwrap(), log)
}

/// One call every 100 ms for `ms` of paused time; returns the number of calls.
async fn drive(route: &mut Route<Static<Svc>>, ms: u64) -> usize {
    for _ in 0..ms / 100 {
        let _ = call(route).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (ms / 100) as usize
}

/// The calls of a log grouped into bursts: calls less than 5 s apart belong together.
fn bursts(log: &[u64]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    for &t in log {
        match out.last_mut() {
            Some(b) if t - b[b.len() - 1] < 5_000 => b.push(t),
            _ => out.push(vec![t]),
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_gets_trials_spaced_by_growing_ejections() {
    let b_up = Arc::new(AtomicBool::new(false));
    let (mut route, log) = three_with_b_logged(RouteConfig::default(), &b_up);
    let handle = route.handle();
    let calls = drive(&mut route, 500_000).await;
    let log = log.lock().unwrap().clone();
    let bursts = bursts(&log);
    // Detection: five failures eject it. Then it returns after each exclusion and is taken out
    // again, for base × strikes: 30 s, 60 s, 90 s, 120 s, 150 s.
    assert!(bursts.len() >= 6, "{bursts:?}");
    assert_eq!(bursts[0].len(), 5, "{bursts:?}");
    // Back from the first ejection it is still degraded (50 %): five more failures.
    assert_eq!(bursts[1].len(), 5, "{bursts:?}");
    for (k, pair) in bursts.windows(2).enumerate() {
        let gap = pair[1][0] - pair[0][pair[0].len() - 1];
        let exclusion = 30_000 * (k as u64 + 1);
        // No call during the exclusion, and a trial soon after it.
        assert!(
            (exclusion..exclusion + 10_000).contains(&gap),
            "exclusion {k}: {gap} ms, {bursts:?}"
        );
        // Each trial of a failed endpoint costs one call.
        if k >= 1 {
            assert_eq!(pair[1].len(), 1, "{bursts:?}");
        }
    }
    // After detection, at most 1 % of the calls reach the bad replica.
    let after = log.len() - bursts[0].len();
    assert!(
        after * 100 <= calls - 50,
        "{after} of {calls} calls after detection"
    );
    let st = &handle.status()[1];
    assert_eq!(st.state, HealthState::Failed);
    assert_eq!(st.traffic_ratio, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_comes_back_without_checks_and_ramps_to_its_share() {
    let b_up = Arc::new(AtomicBool::new(false));
    let (mut route, log) = three_with_b_logged(RouteConfig::default(), &b_up);
    let handle = route.handle();
    // Ejected after 5 failures (30 s), back degraded, 5 more failures: failed, out for 60 s.
    drive(&mut route, 40_000).await;
    let last_failure = *log.lock().unwrap().last().unwrap();
    let st = &handle.status()[1];
    assert_eq!(
        (st.state, st.traffic_ratio, st.ejections),
        (HealthState::Failed, 0.0, 2)
    );
    let back = last_failure + 60_000;
    // The replica is fine again; nothing tells the router until the hold ends.
    b_up.store(true, Ordering::SeqCst);
    let made = log.lock().unwrap().len();
    let now = 40_000;
    drive(&mut route, back - now - 100).await;
    assert_eq!(log.lock().unwrap().len(), made, "no call while held");
    assert_eq!(handle.status()[1].state, HealthState::Failed);
    // Its trial: recovering at the first ramp step, and it gets calls again.
    drive(&mut route, 200).await;
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Recovering, 0.2));
    drive(&mut route, 10_000).await;
    assert!(log.lock().unwrap().len() > made + 3);
    let st = &handle.status()[1];
    assert_eq!(st.state, HealthState::Recovering);
    assert!(st.traffic_ratio >= 0.2, "{st:?}");
    // A healthy streak ramped it: full share within the ramp (120 s), and about a third of
    // the calls.
    drive(&mut route, 120_000).await;
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Healthy, 1.0));
    let before = log.lock().unwrap().len();
    let calls = drive(&mut route, 300_000).await;
    let b = log.lock().unwrap().len() - before;
    assert!(
        (calls * 28 / 100..=calls * 38 / 100).contains(&b),
        "{b} of {calls}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failed_by_the_health_machine_alone_comes_back() {
    // No consecutive-failure ejection: only the health state machine acts.
    let mut cfg = RouteConfig::default();
    cfg.outlier.consecutive_failures = None;
    let b_up = Arc::new(AtomicBool::new(false));
    let (mut route, log) = three_with_b_logged(cfg, &b_up);
    let handle = route.handle();
    drive(&mut route, 10_000).await;
    // Ten failures: failed; three went to it at full share, seven at the degraded half.
    let failed_at = *log.lock().unwrap().last().unwrap();
    assert_eq!(log.lock().unwrap().len(), 10);
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Failed, 0.0));
    assert!(!st.ejected && st.ejections == 0);
    b_up.store(true, Ordering::SeqCst);
    // Held for the first ejection time (30 s), then on trial.
    drive(&mut route, failed_at + 30_000 - 10_000 - 100).await;
    assert_eq!(log.lock().unwrap().len(), 10, "no call while held");
    drive(&mut route, 10_000).await;
    assert!(log.lock().unwrap().len() > 13);
    drive(&mut route, 120_000).await;
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Healthy, 1.0));
}

/// A zero `degraded_ratio` takes a degraded endpoint out "as a failed one": on trial, its
/// successes bring it back through recovering and the ramp, as a failed one's do, not straight
/// to its full share (which is for a degraded endpoint that kept its traffic throughout).
#[tokio::test(start_paused = true)]
async fn with_a_zero_degraded_ratio_a_degraded_endpoint_back_on_trial_ramps_up() {
    let mut cfg = RouteConfig::default();
    cfg.health.degraded_ratio = 0.0;
    let b_up = Arc::new(AtomicBool::new(false));
    let (mut route, log) = three_with_b_logged(cfg, &b_up);
    let handle = route.handle();
    drive(&mut route, 10_000).await;
    // Three failures: degraded, with no traffic, held for the first ejection time.
    assert_eq!(log.lock().unwrap().len(), 3);
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Degraded, 0.0));
    b_up.store(true, Ordering::SeqCst);
    // On trial once the hold is over: three successes in a row, and it ramps from the first
    // step.
    let mut waited = 0;
    while log.lock().unwrap().len() < 6 {
        drive(&mut route, 100).await;
        waited += 100;
        assert!(waited < 60_000, "no trial calls: {:?}", log.lock().unwrap());
    }
    let st = &handle.status()[1];
    assert_eq!(
        (st.state, st.traffic_ratio),
        (HealthState::Recovering, 0.2),
        "{st:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_endpoint_is_the_retry_after_of_no_healthy_endpoint() {
    let mut cfg = no_panic();
    cfg.outlier.consecutive_failures = None;
    let up = flags(1);
    up[0].store(false, Ordering::SeqCst);
    let mut route = route_of(cfg, &up);
    for _ in 0..10 {
        assert!(call(&mut route).await.is_err());
    }
    let err = call(&mut route).await.unwrap_err();
    let none = err.downcast_ref::<NoHealthyEndpoint>().unwrap();
    assert_eq!(none.retry_after, Some(Duration::from_secs(30)));
    // On trial at 30 s: the call reaches it, fails, and holds it for 60 s.
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert!(
        call(&mut route)
            .await
            .unwrap_err()
            .is::<NoHealthyEndpoint>()
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        call(&mut route).await.unwrap_err().to_string(),
        "503 service unavailable"
    );
    let err = call(&mut route).await.unwrap_err();
    let none = err.downcast_ref::<NoHealthyEndpoint>().unwrap();
    assert_eq!(none.retry_after, Some(Duration::from_secs(60)));
}

/// Under active checks an endpoint they found failed comes back through them alone: its
/// cool-down or ejection ending is no return, so `NoHealthyEndpoint` gives no `retry_after` for
/// it (when the soonest endpoint comes back by itself, if any will), rather than "one returns
/// in 1 s", which a retry (or a breaker's open time) would wait for in vain.
#[tokio::test(start_paused = true)]
async fn endpoints_out_by_their_checks_give_no_retry_after() {
    let up = flags(2);
    let mut route = route_of(no_panic(), &up);
    let handle = route.handle();
    let all_down = down_where(|_| true);
    for _ in 0..10 {
        handle.check_once(&all_down, Duration::from_secs(1)).await;
    }
    // A rate limit reported for one (a streamed body's 429, say), the other ejected.
    handle.report_failure(&0, Class::new(Category::RateLimited));
    let cfg = handle.config();
    let states = handle.endpoints();
    states[1].1.eject(&cfg, states[1].1.now_ms());
    let err = call(&mut route).await.unwrap_err();
    let none = err.downcast_ref::<NoHealthyEndpoint>().unwrap();
    assert_eq!(none.retry_after, None, "{none}");
    // Indeed, with the cool-down and the ejection over, still none is back.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        call(&mut route)
            .await
            .unwrap_err()
            .is::<NoHealthyEndpoint>()
    );
    // An endpoint the checks find healthy does come back when its ejection ends.
    let mut route = route_of(no_panic(), &flags(2));
    let handle = route.handle();
    for _ in 0..10 {
        handle.check_once(&down(0), Duration::from_secs(1)).await;
    }
    let states = handle.endpoints();
    states[1].1.eject(&cfg, states[1].1.now_ms());
    let err = call(&mut route).await.unwrap_err();
    let none = err.downcast_ref::<NoHealthyEndpoint>().unwrap();
    assert_eq!(none.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn with_active_checks_the_checks_decide_the_return() {
    let up = flags(3);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    let sick = down(1);
    for _ in 0..10 {
        handle.check_once(&sick, Duration::from_secs(1)).await;
    }
    // Long after any ejection time, failing checks still keep it out: no trial.
    tokio::time::advance(Duration::from_secs(600)).await;
    for _ in 0..300 {
        assert_ne!(call(&mut route).await.unwrap(), "b");
    }
    let st = &handle.status()[1];
    assert_eq!((st.state, st.traffic_ratio), (HealthState::Failed, 0.0));
}

// Timed-out attempts: palisade's `Timeout` above the router drops the attempt marked, and the
// router counts it against the endpoint; every other drop is neutral.

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An endpoint that never answers while `hang`, and answers its name otherwise.
fn hanging(name: &'static str, hang: Arc<AtomicBool>) -> Svc {
    tower::util::BoxCloneService::new(service_fn(move |_: ()| {
        let hang = hang.load(Ordering::SeqCst);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(name)
        }
    }))
}

/// Neither failed nor ejected, nothing in flight.
fn untouched(st: &EndpointStatus<usize>) {
    assert!(!st.ejected, "{st:?}");
    assert_eq!(st.state, HealthState::Healthy, "{st:?}");
    assert_eq!(st.consecutive_unhealthy, 0, "{st:?}");
    assert_eq!(st.last_error, None, "{st:?}");
    assert_eq!(st.in_flight, 0, "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn timed_out_attempts_eject_a_hanging_endpoint() {
    use palisade_timeout::TimeoutLayer;
    use palisade_timeout::error::Elapsed;
    use tower::Layer;

    let hang = Arc::new(AtomicBool::new(true));
    let up = Arc::new(AtomicBool::new(true));
    let route = Route::new([hanging("a", hang), endpoint("b", up, "503")]);
    let handle = route.handle();
    let mut svc = TimeoutLayer::new(ms(1000)).layer(route);
    let mut timeouts = 0;
    for i in 0..200 {
        let start = tokio::time::Instant::now();
        match svc.ready().await.unwrap().call(()).await {
            Ok(name) => {
                assert_eq!(name, "b");
                assert_eq!(start.elapsed(), Duration::ZERO);
            }
            Err(e) => {
                assert!(e.is::<Elapsed>(), "{e}");
                assert_eq!(start.elapsed(), ms(1000));
                timeouts += 1;
                let st = &handle.status()[0];
                assert_eq!(st.consecutive_unhealthy, timeouts, "call {i}");
                assert_eq!(st.last_error, Some(Category::Timeout));
                assert_eq!(st.in_flight, 0);
            }
        }
    }
    // Exactly the five timed-out attempts that ejected it (`consecutive_failures`); the
    // health machine counted them too (Degraded after three).
    assert_eq!(timeouts, 5);
    let st = handle.status();
    assert!(st[0].ejected, "{:?}", st[0]);
    assert_eq!(st[0].ejections, 1);
    assert_eq!(st[0].state, HealthState::Degraded);
    untouched(&st[1]);
    // While it is ejected (30 s), every call goes to b at once.
    for _ in 0..50 {
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "b");
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_reported_to_the_retry() {
    use palisade_timeout::TimeoutLayer;
    use tower::Layer;

    let route = Route::new([hanging("a", Arc::new(AtomicBool::new(true)))]);
    let token = route.handle().status()[0].token;
    let mut svc = TimeoutLayer::new(ms(1000)).layer(route);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut state = Attempt {
        number: 1,
        avoid: None,
    };
    assert!(svc.poll_ready(&mut cx).is_ready());
    // Called and polled in the attempt, as a retry does.
    let mut fut = std::pin::pin!(attempt::scope(&mut state, || svc.call(())));
    let first = attempt::scope(&mut state, || fut.as_mut().poll(&mut cx));
    assert!(first.is_pending());
    tokio::time::advance(ms(1000)).await;
    let second = attempt::scope(&mut state, || fut.as_mut().poll(&mut cx));
    assert!(matches!(second, Poll::Ready(Err(_))));
    // The next attempt avoids it; nothing leaks out of the poll.
    assert_eq!(state.avoid, Some(token));
    assert!(!attempt::timing_out());
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropping_the_call_does_not_count_against_the_endpoint() {
    let mut route = Route::new([hanging("a", Arc::new(AtomicBool::new(true)))]);
    let handle = route.handle();
    for _ in 0..20 {
        // Gives up after a second (tokio's timeout, which says nothing about the endpoint).
        let gave_up = tokio::time::timeout(ms(1000), call(&mut route)).await;
        assert!(gave_up.is_err());
        // Cancelled inside a retry's attempt scope: not reported for the next attempt either.
        let mut state = Attempt::default();
        attempt::scope(&mut state, || {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(route.poll_ready(&mut cx).is_ready());
            let mut fut = Box::pin(route.call(()));
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            drop(fut);
        });
        assert_eq!(state.avoid, None);
    }
    untouched(&handle.status()[0]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_firing_does_not_count_against_the_endpoint() {
    use palisade_timeout::error::{DeadlineExceeded, Elapsed};
    use palisade_timeout::{DeadlineLayer, TimeoutLayer};
    use tower::Layer;

    let route = || Route::new([hanging("a", Arc::new(AtomicBool::new(true)))]);
    // The designed order: a whole-call deadline above the per-attempt timeout, firing first.
    let r = route();
    let handle = r.handle();
    let mut svc = DeadlineLayer::new(ms(500)).layer(TimeoutLayer::new(ms(1000)).layer(r));
    for _ in 0..20 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
    }
    untouched(&handle.status()[0]);
    // A deadline right above the router, or below the timeout, fires first: neutral too.
    let r = route();
    let handle = r.handle();
    let mut svc = TimeoutLayer::new(ms(1000)).layer(DeadlineLayer::new(ms(500)).layer(r));
    for _ in 0..20 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
    }
    untouched(&handle.status()[0]);
    // The control: the same stack with the timeout firing first counts.
    let r = route();
    let handle = r.handle();
    let mut svc = DeadlineLayer::new(ms(2000)).layer(TimeoutLayer::new(ms(1000)).layer(r));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    let st = &handle.status()[0];
    assert_eq!(st.consecutive_unhealthy, 1);
    assert_eq!(st.last_error, Some(Category::Timeout));
}

// Discovery feeding clones: one shared endpoint set.

/// The names `n` calls through `route` reached.
async fn names<D>(route: &mut Route<D>, n: usize) -> Vec<&'static str>
where
    D: tower::discover::Discover<Key = usize, Service = Svc> + Unpin,
    D::Error: Into<BoxError>,
{
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(call(route).await.unwrap());
    }
    seen.sort_unstable();
    seen.dedup();
    seen
}

fn keys<D>(route: &Route<D>) -> Vec<usize>
where
    D: tower::discover::Discover<Key = usize>,
    D::Service: Clone,
{
    let mut keys: Vec<usize> = route.keys().copied().collect();
    keys.sort_unstable();
    keys
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_discovered_router_see_changes_made_after_cloning() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let mut first = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    assert_eq!(names(&mut first, 20).await, ["a"]);
    let mut second = first.clone();
    assert_eq!(names(&mut second, 20).await, ["a"]);

    // An insert after cloning reaches both, whichever polls discovery.
    tx.send(Change::Insert(2, up("b"))).unwrap();
    assert_eq!(names(&mut second, 100).await, ["a", "b"]);
    assert_eq!(names(&mut first, 100).await, ["a", "b"]);
    assert_eq!(keys(&first), [1, 2]);
    assert_eq!(keys(&second), [1, 2]);

    // So does a removal, and a clone of a clone.
    let mut third = second.clone();
    tx.send(Change::Remove(1)).unwrap();
    assert_eq!(names(&mut first, 100).await, ["b"]);
    assert_eq!(names(&mut second, 100).await, ["b"]);
    assert_eq!(names(&mut third, 100).await, ["b"]);
    assert_eq!(keys(&second), [2]);
    assert_eq!(first.handle().status().len(), 1);

    // Replacing an endpoint under the same key reaches every clone too.
    tx.send(Change::Insert(2, up("b2"))).unwrap();
    assert_eq!(names(&mut third, 20).await, ["b2"]);
    assert_eq!(names(&mut first, 20).await, ["b2"]);
}

#[tokio::test(start_paused = true)]
async fn a_clone_made_before_any_change_sees_later_changes() {
    let (tx, rx) = mpsc::unbounded_channel();
    let route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    // Made before the router ever polled discovery, and the original never polls it.
    let mut clone = route.clone();
    let err = call(&mut clone).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoint>(), "{err}");
    tx.send(Change::Insert(7, up("a"))).unwrap();
    assert_eq!(names(&mut clone, 10).await, ["a"]);
    // The original, never polled, catches up on its first call.
    let mut route = route;
    assert_eq!(keys(&route), Vec::<usize>::new());
    assert_eq!(names(&mut route, 10).await, ["a"]);
    assert_eq!(keys(&route), [7]);
}

#[tokio::test(start_paused = true)]
async fn a_router_over_a_discover_that_is_not_clone_is_clone_and_send() {
    fn clone_and_send<T: Clone + Send + 'static>(_: &T) {}
    let (tx, rx) = mpsc::unbounded_channel();
    // `Channel` is neither `Clone` nor `Sync`.
    let route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    clone_and_send(&route);
    tx.send(Change::Insert(1, up("a"))).unwrap();
    // Clones on other tasks: they share the set the caller's changes go to.
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let mut clone = route.clone();
            tokio::spawn(async move { names(&mut clone, 10).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), ["a"]);
    }
    tx.send(Change::Insert(2, up("b"))).unwrap();
    let mut late = route.clone();
    let task = tokio::spawn(async move { names(&mut late, 100).await });
    assert_eq!(task.await.unwrap(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_removal_seen_by_one_clone_lets_the_other_clones_call_finish() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, slow())).unwrap();
    let mut first = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = first.handle();
    let mut second = first.clone();
    let in_flight = first.ready().await.unwrap().call(());
    assert_eq!(handle.status()[0].in_flight, 1);
    tx.send(Change::Remove(1)).unwrap();
    tx.send(Change::Insert(2, up("new"))).unwrap();
    // The other clone applies the removal; the first one's call still completes.
    assert_eq!(call(&mut second).await.unwrap(), "new");
    assert_eq!(handle.status().len(), 1);
    assert_eq!(in_flight.await.unwrap(), "slow");
    assert_eq!(call(&mut first).await.unwrap(), "new");
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_discovered_router_share_endpoint_health() {
    let (tx, rx) = mpsc::unbounded_channel();
    let route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = route.handle();
    let mut failing = route.clone();
    let mut other = route.clone();
    let b_up = Arc::new(AtomicBool::new(true));
    tx.send(Change::Insert(1, up("a"))).unwrap();
    tx.send(Change::Insert(2, endpoint("b", b_up.clone(), "503")))
        .unwrap();
    assert_eq!(names(&mut other, 100).await, ["a", "b"]);
    // b fails calls made through one clone: it is ejected for all of them.
    b_up.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        let _ = call(&mut failing).await;
    }
    let st = handle.status();
    assert!(st.iter().find(|s| s.key == 2).unwrap().ejected, "{st:?}");
    assert_eq!(names(&mut other, 100).await, ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_discovery_change_seen_by_a_second_poll_ready_keeps_or_renews_the_reservation() {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Nothing to route to: ready, to fail the call at once ...
    assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(route.reserved(), None);
    // ... unless an endpoint arrives before the call and poll_ready is asked again.
    tx.send(Change::Insert(1, up("a"))).unwrap();
    assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let a = route.handle().status()[0].token;
    assert_eq!(route.reserved(), Some(a));
    // Changes that keep the reserved endpoint keep the reservation, in the new list.
    tx.send(Change::Insert(0, up("z"))).unwrap();
    for key in 2..12 {
        tx.send(Change::Insert(key, up("b"))).unwrap();
        assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(route.reserved(), Some(a));
    }
    assert_eq!(keys(&route), (0..12).collect::<Vec<_>>());
    assert_eq!(poll_now(route.call(())), "a");

    // A removal before it moves the reserved endpoint in the list: the reservation follows.
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(0, up("z"))).unwrap();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    assert!(route.poll_ready(&mut cx).is_ready());
    let a = route.handle().status()[1].token;
    while route.reserved() != Some(a) {
        assert_eq!(poll_now(route.call(())), "z");
        assert!(route.poll_ready(&mut cx).is_ready());
    }
    tx.send(Change::Remove(0)).unwrap();
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(route.reserved(), Some(a));
    assert_eq!(poll_now(route.call(())), "a");
}

/// Discovery that can fail: a channel of results.
struct Fallible(mpsc::UnboundedReceiver<Result<Change<usize, Svc>, BoxError>>);

impl futures_core::Stream for Fallible {
    type Item = Result<Change<usize, Svc>, BoxError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_discovery_error_is_logged_and_the_endpoints_kept() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Ok(Change::Insert(1, up("a")))).unwrap();
    tx.send(Err("resolver unreachable".into())).unwrap();
    tx.send(Ok(Change::Insert(2, up("b")))).unwrap();
    let mut route = Route::discover_builder(Fallible(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let mut clone = route.clone();
    let warnings = palisade_test::Warnings::start();
    // The first poll applies the insert before the error, logs the error, and is ready.
    assert_eq!(call(&mut route).await.unwrap(), "a");
    assert_eq!(route.discovery_errors(), 1);
    assert_eq!(warnings.count(), 1);
    assert_eq!(keys(&route), [1]);
    // The next poll, of any clone, reads on past the error.
    assert_eq!(names(&mut clone, 100).await, ["a", "b"]);
    assert_eq!(names(&mut route, 100).await, ["a", "b"]);
    assert_eq!(clone.discovery_errors(), 1);
    assert_eq!(warnings.count(), 1);
    // Discovery ending keeps the last set.
    drop(tx);
    assert_eq!(names(&mut route, 100).await, ["a", "b"]);
    assert_eq!(names(&mut clone, 100).await, ["a", "b"]);
    assert_eq!(route.handle().status().len(), 2);
}

/// An endpoint that answers its name, ready only while `open`.
#[derive(Clone)]
struct Gate {
    name: &'static str,
    open: Arc<AtomicBool>,
}

impl Service<()> for Gate {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(self.name))
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_on_a_removed_endpoint_is_woken_by_discovery() {
    let (tx, rx) = mpsc::unbounded_channel();
    let stuck = Gate {
        name: "stuck",
        open: Arc::new(AtomicBool::new(false)),
    };
    tx.send(Change::Insert(1, tower::util::BoxCloneService::new(stuck)))
        .unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        // Bounded, so that a router nobody wakes fails the test rather than hangs it.
        let answer = tokio::time::timeout(Duration::from_secs(1), call(&mut route)).await;
        (answer, start.elapsed())
    });
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "waits for the endpoint to be ready");
    tx.send(Change::Remove(1)).unwrap();
    tx.send(Change::Insert(2, up("b"))).unwrap();
    let (answer, waited) = task.await.unwrap();
    assert_eq!(answer.expect("woken by the change").unwrap(), "b");
    assert_eq!(
        waited,
        Duration::ZERO,
        "woken by the change, not by the timer"
    );
}

/// Every clone waiting on a removed endpoint is woken, not only the one that drove discovery
/// (whose task the channel wakes): the others used to stay parked until the removed
/// service got ready, maybe never.
#[tokio::test(start_paused = true)]
async fn every_clone_waiting_on_a_removed_endpoint_is_woken() {
    let (tx, rx) = mpsc::unbounded_channel();
    let stuck = Gate {
        name: "stuck",
        open: Arc::new(AtomicBool::new(false)),
    };
    tx.send(Change::Insert(1, tower::util::BoxCloneService::new(stuck)))
        .unwrap();
    let route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let mut route = route.clone();
            tokio::spawn(async move {
                let answer = tokio::time::timeout(Duration::from_secs(1), call(&mut route)).await;
                (answer, start.elapsed())
            })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert!(tasks.iter().all(|t| !t.is_finished()), "both wait");
    tx.send(Change::Remove(1)).unwrap();
    tx.send(Change::Insert(2, up("b"))).unwrap();
    for task in tasks {
        let (answer, waited) = task.await.unwrap();
        assert_eq!(answer.expect("woken by the change").unwrap(), "b");
        assert_eq!(
            waited,
            Duration::ZERO,
            "woken by the change, not by the timer"
        );
    }
}

// The avoid hint at call time: poll_ready ran outside the attempt scope (behind a boundary),
// call inside it.

/// Polls `route` ready outside any attempt scope; returns the reserved endpoint's token.
fn reserve<D>(route: &mut Route<D>) -> u64
where
    D: tower::discover::Discover<Key = usize, Service = Svc> + Unpin,
    D::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    route.reserved().expect("an endpoint is reserved")
}

/// Calls `route` inside an attempt scope that avoids `avoid`; returns the answer.
fn call_avoiding<D>(route: &mut Route<D>, avoid: u64) -> &'static str
where
    D: tower::discover::Discover<Key = usize, Service = Svc> + Unpin,
    D::Error: Into<BoxError>,
{
    let mut state = Attempt {
        number: 2,
        avoid: Some(avoid),
    };
    let mut fut = attempt::scope(&mut state, || Box::pin(route.call(())));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match attempt::scope(&mut state, || fut.as_mut().poll(&mut cx)) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => unreachable!("endpoints answer at once"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_avoid_hint_read_at_call_time_diverts_to_another_ready_endpoint() {
    // Two endpoints are enough to divert.
    let mut two = route_of(RouteConfig::default(), &flags(2));
    for _ in 0..20 {
        let reserved = reserve(&mut two);
        let answer = call_avoiding(&mut two, reserved);
        let st = two.handle().status();
        let other = NAMES[st.iter().position(|s| s.token != reserved).unwrap()];
        assert_eq!(answer, other);
        drop(two.call(()));
    }
    let flags = flags(3);
    let mut route = route_of(RouteConfig::default(), &flags);
    let name_of = |route: &Route<Static<Svc>>, token: u64| {
        let st = route.handle().status();
        NAMES[st.iter().position(|s| s.token == token).unwrap()]
    };
    for _ in 0..100 {
        let reserved = reserve(&mut route);
        let answer = call_avoiding(&mut route, reserved);
        assert_ne!(answer, name_of(&route, reserved));
        // The reserved service stays ready for the next call of this instance.
        assert_eq!(route.reserved(), Some(reserved));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_eq!(route.reserved(), Some(reserved));
        let next = poll_now(route.call(()));
        assert_eq!(next, name_of(&route, reserved));
    }
    // Avoiding an endpoint that is not the reserved one changes nothing.
    let reserved = reserve(&mut route);
    let st = route.handle().status();
    let other = st.iter().find(|s| s.token != reserved).unwrap().token;
    assert_eq!(call_avoiding(&mut route, other), name_of(&route, reserved));
    assert_eq!(route.reserved(), None);
}

fn poll_now<F: std::future::Future<Output = Result<&'static str, BoxError>>>(
    fut: F,
) -> &'static str {
    let mut fut = std::pin::pin!(fut);
    match fut
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => unreachable!("endpoints answer at once"),
    }
}

#[tokio::test(start_paused = true)]
async fn with_one_eligible_endpoint_the_call_goes_to_the_reserved_one() {
    // One endpoint.
    let mut single = route_of(RouteConfig::default(), &flags(1));
    for _ in 0..10 {
        let reserved = reserve(&mut single);
        assert_eq!(call_avoiding(&mut single, reserved), "a");
    }
    // Two, one of them ejected.
    let up = flags(2);
    let cfg = no_panic();
    let mut route = route_of(cfg, &up);
    up[1].store(false, Ordering::SeqCst);
    for _ in 0..100 {
        let _ = call(&mut route).await;
    }
    up[1].store(true, Ordering::SeqCst);
    assert!(route.handle().status()[1].ejected);
    for _ in 0..20 {
        let reserved = reserve(&mut route);
        assert_eq!(call_avoiding(&mut route, reserved), "a");
    }
}

/// One attempt of a request in the attempt scope `state`, as a retry layer runs it:
/// `poll_ready`, `call` and the response future, each inside the scope; a failure the router
/// reports lands in `state.avoid`.
fn attempt_in<D>(route: &mut Route<D>, state: &mut Attempt) -> Result<&'static str, BoxError>
where
    D: tower::discover::Discover<Key = usize, Service = Svc> + Unpin,
    D::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    attempt::scope(state, || {
        assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let mut fut = std::pin::pin!(route.call(()));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => unreachable!("endpoints answer at once"),
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_retry_of_a_single_primary_goes_to_the_standby() {
    // One primary that fails every call and a healthy standby; the caller sends one request
    // at a time and retries each once. Until its failures eject it, the primary takes (most)
    // first attempts; every retry of a request it failed goes to the standby, not back to it.
    let alive = flags(2);
    let ep = |i: usize| endpoint(NAMES[i], alive[i].clone(), "503 service unavailable");
    let mut route = Route::builder([ep(0)]).tier(1, [ep(1)]).build().unwrap();
    let handle = route.handle();
    let primary = handle.status()[0].token;
    alive[0].store(false, Ordering::SeqCst);
    let mut retried = 0;
    while !handle.status()[0].ejected {
        let mut state = Attempt {
            number: 1,
            avoid: None,
        };
        if let Ok(name) = attempt_in(&mut route, &mut state) {
            // Spilled to the standby, once the primary is degraded.
            assert_eq!(name, "b");
            continue;
        }
        assert_eq!(state.avoid, Some(primary));
        state.number = 2;
        assert_eq!(attempt_in(&mut route, &mut state).unwrap(), "b");
        retried += 1;
    }
    assert_eq!(retried, 5, "five failures in a row eject the primary");

    // Behind a boundary: `poll_ready` outside the scope reserves the healthy primary, and a
    // retry that avoids it, read at `call`, goes to the standby.
    let mut route = Route::builder([up("a")])
        .tier(1, [up("b")])
        .build()
        .unwrap();
    let primary = route.handle().status()[0].token;
    for _ in 0..20 {
        assert_eq!(reserve(&mut route), primary);
        assert_eq!(call_avoiding(&mut route, primary), "b");
        // The primary stays reserved; the next first attempt goes to it.
        assert_eq!(poll_now(route.call(())), "a");
    }
}

#[tokio::test(start_paused = true)]
async fn when_the_other_endpoint_is_not_ready_the_call_goes_to_the_reserved_one() {
    let open = Arc::new(AtomicBool::new(true));
    let gate = |name, open: &Arc<AtomicBool>| {
        tower::util::BoxCloneService::new(Gate {
            name,
            open: open.clone(),
        })
    };
    let mut route = Route::new([
        gate("a", &Arc::new(AtomicBool::new(true))),
        gate("b", &open),
    ]);
    let a = route.handle().status()[0].token;
    let mut checked = 0;
    for _ in 0..100 {
        open.store(true, Ordering::SeqCst);
        let reserved = reserve(&mut route);
        if reserved != a {
            assert_eq!(poll_now(route.call(())), "b");
            continue;
        }
        // b was ready when polled, but is not now: the call keeps to a.
        open.store(false, Ordering::SeqCst);
        assert_eq!(call_avoiding(&mut route, a), "a");
        assert_eq!(route.reserved(), None);
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

#[tokio::test(start_paused = true)]
async fn a_call_made_outside_the_attempt_scope_and_polled_inside_is_noticed() {
    use crate::future::CONTEXT_LOST_SEEN;
    // Each time it is noticed (on this thread) ...
    let seen = || CONTEXT_LOST_SEEN.with(std::cell::Cell::get);
    // ... and the warning, given once per process (no other test of this crate loses it).
    let warnings = palisade_test::Warnings::start();
    let mut route = route_of(RouteConfig::default(), &flags(2));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut state = Attempt::default();
    let before = seen();
    // All in the scope: nothing lost.
    attempt::scope(&mut state, || {
        assert!(route.poll_ready(&mut cx).is_ready());
        let _ = poll_now(route.call(()));
    });
    // No scope at all (no retry above): nothing lost.
    let _ = call(&mut route).await.unwrap();
    assert_eq!(seen(), before);
    // Called outside, polled inside: noticed, on the first poll only.
    let hang = Arc::new(AtomicBool::new(true));
    let mut slow = Route::new([hanging("h", hang)]);
    assert!(slow.poll_ready(&mut cx).is_ready());
    let mut fut = Box::pin(slow.call(()));
    for _ in 0..3 {
        assert!(attempt::scope(&mut state, || fut.as_mut().poll(&mut cx)).is_pending());
    }
    assert_eq!(seen(), before + 1);
    assert_eq!(warnings.count(), 1);

    // Behind a Buffer, the router's poll_ready and call run on the buffer's worker task,
    // outside the caller's scope; the response future is polled inside it.
    let mut buffered = tower::buffer::Buffer::new(route_of(RouteConfig::default(), &flags(2)), 8);
    let before = seen();
    buffered.ready().await.unwrap();
    let fut = buffered.call(());
    let mut fut = std::pin::pin!(fut);
    let answer = std::future::poll_fn(|cx| attempt::scope(&mut state, || fut.as_mut().poll(cx)))
        .await
        .unwrap();
    assert!(["a", "b"].contains(&answer));
    assert_eq!(seen(), before + 1);
    assert_eq!(warnings.count(), 1, "once per process");
}

/// The misuse contract (see `Route`'s `# Panics`).
mod misuse {
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    /// Polls `route` ready once, which must succeed at once.
    fn ready(route: &mut Route<Static<Svc>>) {
        let poll = Service::<()>::poll_ready(route, &mut cx());
        assert!(matches!(poll, Poll::Ready(Ok(()))), "ready");
    }

    #[test]
    #[should_panic(expected = "`Route::call` without a successful `poll_ready`")]
    fn a_call_without_poll_ready_panics() {
        let mut route = route_of(RouteConfig::default(), &flags(2));
        drop(route.call(()));
    }

    #[test]
    #[should_panic(expected = "`Route::call` without a successful `poll_ready`")]
    fn a_second_call_on_one_poll_ready_panics() {
        let mut route = route_of(RouteConfig::default(), &flags(2));
        ready(&mut route);
        drop(route.call(()));
        drop(route.call(()));
    }

    #[test]
    #[should_panic(expected = "`Route::call` without a successful `poll_ready`")]
    fn a_call_after_a_pending_poll_ready_panics() {
        let closed = Gate {
            name: "closed",
            open: Arc::new(AtomicBool::new(false)),
        };
        let mut route = Route::new([closed]);
        assert!(route.poll_ready(&mut cx()).is_pending());
        drop(route.call(()));
    }

    #[test]
    #[should_panic(expected = "`Route::call` without a successful `poll_ready`")]
    fn a_clone_of_a_ready_router_reserves_nothing() {
        let mut route = route_of(RouteConfig::default(), &flags(2));
        ready(&mut route);
        let mut clone = route.clone();
        drop(clone.call(()));
    }

    #[test]
    fn a_call_after_the_no_endpoint_verdict_needs_no_endpoint() {
        let mut route = Route::new(Vec::<Svc>::new());
        ready(&mut route);
        let mut answer = std::pin::pin!(route.call(()));
        let Poll::Ready(Err(e)) = answer.as_mut().poll(&mut cx()) else {
            panic!("an error at once");
        };
        assert!(e.is::<NoHealthyEndpoint>());
    }

    /// A call's future, polled until it completes, then polled once more.
    fn poll_twice(route: &mut Route<Static<Svc>>) {
        ready(route);
        let mut answer = std::pin::pin!(route.call(()));
        assert!(answer.as_mut().poll(&mut cx()).is_ready());
        let _ = answer.as_mut().poll(&mut cx());
    }

    #[test]
    #[should_panic(expected = "`Route` response future polled after completion")]
    fn a_future_polled_after_its_answer_panics() {
        poll_twice(&mut route_of(RouteConfig::default(), &flags(1)));
    }

    #[test]
    #[should_panic(expected = "`Route` response future polled after completion")]
    fn a_future_polled_after_its_error_panics() {
        let down = flags(1);
        down[0].store(false, Ordering::SeqCst);
        poll_twice(&mut route_of(RouteConfig::default(), &down));
    }

    #[test]
    #[should_panic(expected = "`Route` response future polled after completion")]
    fn a_future_polled_after_no_healthy_endpoint_panics() {
        poll_twice(&mut Route::new(Vec::<Svc>::new()));
    }
}

#[test]
fn debug_output_names_what_it_shows() {
    let up = flags(2);
    let builder = Route::builder(up.iter().map(|f| endpoint("a", f.clone(), "503"))).seed(9);
    let text = format!("{builder:?}");
    assert!(text.starts_with("RouteBuilder {"), "{text}");
    assert!(
        text.contains("seed: 9") && text.contains("endpoints: [(0, 0), (0, 1)]"),
        "{text}"
    );
    assert!(text.contains("discover: false"), "{text}");
    let route = builder.build().unwrap();
    let text = format!("{route:?}");
    assert!(text.starts_with("Route { endpoints: [0, 1]"), "{text}");
    assert_eq!(
        format!("{:?}", Static::<Svc>(std::marker::PhantomData).clone()),
        "Static"
    );
    assert_eq!(
        format!(
            "{:?}",
            check_fn(|_: &usize| async { Ok::<(), BoxError>(()) })
        ),
        "CheckFn"
    );
    let suite = Suite::<usize>::new().with(down(0)).with(down(1));
    assert_eq!(format!("{suite:?}"), "Suite { checks: 2 }");
    assert_eq!(format!("{:?}", route.handle()), "RouteHandle { .. }");
}

#[tokio::test(start_paused = true)]
async fn discovery_replacing_an_endpoint_keeps_the_others() {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    tx.send(Change::Insert(2, up("b"))).unwrap();
    let _ = call(&mut route).await;
    let handle = route.handle();
    let before: Vec<_> = handle.status().iter().map(|s| (s.key, s.token)).collect();
    assert_eq!(before.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 2]);
    tx.send(Change::Insert(1, up("c"))).unwrap();
    let _ = call(&mut route).await;
    let after: Vec<_> = handle.status().iter().map(|s| (s.key, s.token)).collect();
    // Both keys stay as they were, in their places: key 1 is the same endpoint (its token and
    // state) with a new service, listed once.
    assert_eq!(after, before);
    assert_eq!(keys(&route), [1, 2]);
    assert_eq!(names(&mut route, 100).await, ["b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_inserted_again_is_called_through_its_new_service_even_if_reserved() {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let mut other = route.clone();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let a = route.handle().status()[0].token;
    assert_eq!(route.reserved(), Some(a));
    // The same key again, with another service: the reservation was made on the old service,
    // so the instance drops it with that service and reserves the new one.
    tx.send(Change::Insert(1, up("a2"))).unwrap();
    assert!(matches!(route.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(route.reserved(), Some(a), "the same endpoint");
    assert_eq!(poll_now(route.call(())), "a2");
    assert_eq!(names(&mut route, 10).await, ["a2"]);
    // A clone that never saw the old list's change takes the new service too.
    assert_eq!(names(&mut other, 10).await, ["a2"]);
}

/// Discovery that announces `(key, service)` pairs again, as a resync does.
fn announce(tx: &mpsc::UnboundedSender<Change<usize, Svc>>, endpoints: &[(usize, Svc)]) {
    for (key, svc) in endpoints {
        tx.send(Change::Insert(*key, svc.clone())).unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn discovery_announcing_an_ejected_endpoint_again_keeps_its_ejection() {
    let b_up = Arc::new(AtomicBool::new(true));
    let all = [
        (1, up("a")),
        (2, endpoint("b", b_up.clone(), "503 service unavailable")),
    ];
    let (tx, rx) = mpsc::unbounded_channel();
    announce(&tx, &all);
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = route.handle();
    let b = |handle: &RouteHandle<usize>| handle.status()[1].clone();
    assert_eq!(names(&mut route, 100).await, ["a", "b"]);
    let token = b(&handle).token;

    // b fails every call: ejected after five in a row, for 30 s.
    b_up.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        let _ = call(&mut route).await;
    }
    assert!(b(&handle).ejected);
    assert_eq!(b(&handle).ejections, 1);
    // Discovery resyncs every 10 s, announcing both endpoints again: b stays ejected until
    // its 30 s are over, and stays the same endpoint.
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(10)).await;
        announce(&tx, &all);
        assert_eq!(names(&mut route, 50).await, ["a"]);
        let st = b(&handle);
        assert!(st.ejected, "{st:?}");
        assert_eq!((st.ejections, st.token), (1, token));
    }
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(b(&handle).ejected);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!b(&handle).ejected);

    // Still failing: ejected again, for twice as long, as its count was kept.
    for _ in 0..200 {
        let _ = call(&mut route).await;
    }
    assert!(b(&handle).ejected);
    assert_eq!(b(&handle).ejections, 2);
    announce(&tx, &all);
    assert_eq!(names(&mut route, 50).await, ["a"]);
    tokio::time::advance(Duration::from_millis(59_999)).await;
    announce(&tx, &all);
    assert_eq!(names(&mut route, 50).await, ["a"]);
    assert!(b(&handle).ejected);
    assert_eq!(b(&handle).ejections, 2);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!b(&handle).ejected);
}

#[tokio::test(start_paused = true)]
async fn discovery_announcing_an_endpoint_again_keeps_its_ramp_and_removal_forgets_it() {
    // Slow start on (the default): a new endpoint ramps up over 120 s.
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let mut route = Route::discover(Channel(rx));
    let handle = route.handle();
    let _ = names(&mut route, 10).await;
    assert_eq!(handle.status()[0].state, HealthState::Recovering);
    // Half-way through its ramp, announced again: it carries on with its ramp.
    tokio::time::advance(Duration::from_secs(60)).await;
    let _ = names(&mut route, 10).await;
    let halfway = handle.status()[0].traffic_ratio;
    assert!(halfway > 0.2, "{halfway}");
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let _ = names(&mut route, 10).await;
    assert_eq!(handle.status()[0].traffic_ratio, halfway);
    // And once fully healthy, it stays so when announced again.
    tokio::time::advance(Duration::from_secs(61)).await;
    let _ = names(&mut route, 10).await;
    assert_eq!(handle.status()[0].state, HealthState::Healthy);
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let _ = names(&mut route, 10).await;
    assert_eq!(handle.status()[0].state, HealthState::Healthy);
    assert_eq!(handle.status()[0].traffic_ratio, 1.0);
    // A removal and an insert: a new endpoint, which ramps up from the start again.
    let token = handle.status()[0].token;
    tx.send(Change::Remove(1)).unwrap();
    tx.send(Change::Insert(1, up("a"))).unwrap();
    let _ = names(&mut route, 10).await;
    let st = handle.status();
    assert_eq!(st.len(), 1);
    assert_ne!(st[0].token, token);
    assert_eq!(st[0].state, HealthState::Recovering);
    assert_eq!(st[0].traffic_ratio, 0.2);
}

/// A discovery key that names a pod and carries its address: the same pod (equal keys)
/// wherever it runs, as a pod keeps its name when it gets a new address.
#[derive(Clone, Debug)]
struct Pod {
    name: &'static str,
    addr: &'static str,
}

impl PartialEq for Pod {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Pod {}

#[tokio::test(start_paused = true)]
async fn an_endpoint_announced_again_under_an_equal_key_takes_the_new_key_and_keeps_its_state() {
    let pod = |addr| Pod { name: "a", addr };
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(pod("10.0.0.1"), up("a"))).unwrap();
    tx.send(Change::Insert(
        Pod {
            name: "b",
            addr: "10.0.0.9",
        },
        up("b"),
    ))
    .unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = route.handle();
    route.ready().await.unwrap().call(()).await.unwrap();
    // Pod a fails three calls in a row: degraded.
    for _ in 0..3 {
        assert!(handle.report_failure(&pod("any"), Class::new(Category::ServerError)));
    }
    let before = handle.status()[0].clone();
    assert_eq!(before.state, HealthState::Degraded);

    // It is announced again at a new address (same name: the same endpoint).
    tx.send(Change::Insert(pod("10.0.0.2"), up("a2"))).unwrap();
    route.ready().await.unwrap();
    let st = handle.status();
    assert_eq!(st.len(), 2, "{st:?}");
    // It keeps its state and its place ...
    assert_eq!(
        (st[0].token, st[0].state, st[0].consecutive_unhealthy),
        (before.token, HealthState::Degraded, 3)
    );
    // ... and takes the key it was announced with: the status, the router's keys, the health
    // checks and the logs all see the new address.
    assert_eq!(st[0].key.addr, "10.0.0.2", "{st:?}");
    let addrs: Vec<_> = route.keys().map(|k| k.addr).collect();
    assert_eq!(addrs, ["10.0.0.2", "10.0.0.9"]);
    // Calls reach the new service (still degraded: half its share).
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.push(route.ready().await.unwrap().call(()).await.unwrap());
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, ["a2", "b"]);
    let probed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let check = check_fn({
        let probed = probed.clone();
        move |k: &Pod| {
            probed.lock().unwrap().push(k.addr);
            async { Ok::<(), BoxError>(()) }
        }
    });
    handle.check_once(&check, Duration::from_secs(1)).await;
    assert_eq!(*probed.lock().unwrap(), ["10.0.0.2", "10.0.0.9"]);
    let label = handle.endpoints()[0].1.label();
    assert_eq!(*label, format!("{:?}", pod("10.0.0.2")));
}

#[tokio::test(start_paused = true)]
async fn a_healthy_standby_tier_takes_the_calls_of_a_dead_primary_tier() {
    // Two primaries and one standby, the defaults (panic mode below half the traffic). Both
    // primaries go down: the standby alone can take every call, so nothing panics (Envoy
    // disregards panic thresholds while the priorities together have enough healthy hosts).
    let up = flags(3);
    let ep = |i: usize| endpoint(NAMES[i], up[i].clone(), "503 service unavailable");
    let mut route = Route::builder([ep(0), ep(1)])
        .tier(1, [ep(2)])
        .build()
        .unwrap();
    let handle = route.handle();
    up[0].store(false, Ordering::SeqCst);
    up[1].store(false, Ordering::SeqCst);
    let mut failed = 0;
    for _ in 0..2_000 {
        if call(&mut route).await.is_err() {
            failed += 1;
        }
    }
    // Both primaries out (one ejected, one failed by the health machine; 3 endpoints allow
    // one ejection) after their first failures: every later call reached the standby.
    let st = handle.status();
    assert!(st[0].ejected, "{st:?}");
    assert_eq!(st[1].state, HealthState::Failed, "{st:?}");
    assert!(
        failed <= 20,
        "{failed} of 2000 calls failed with a healthy standby"
    );
    // Under active checks alike: the checks fail both primaries, the standby takes it all.
    let up = flags(3);
    let ep = |i: usize| endpoint(NAMES[i], up[i].clone(), "503 service unavailable");
    let mut route = Route::builder([ep(0), ep(1)])
        .tier(1, [ep(2)])
        .build()
        .unwrap();
    let handle = route.handle();
    up[0].store(false, Ordering::SeqCst);
    up[1].store(false, Ordering::SeqCst);
    let check = down_where(|k| *k != 2);
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    for _ in 0..1_000 {
        assert_eq!(call(&mut route).await.unwrap(), "c");
    }
}

#[tokio::test(start_paused = true)]
async fn a_tier_panics_only_when_the_tiers_together_lack_healthy_capacity() {
    // Tier 0: four endpoints, one healthy (a quarter of its traffic, below half: it would
    // panic alone); tier 1: one endpoint. Checks judge them.
    let up = flags(5);
    let ep = |i: usize| endpoint(NAMES[i], up[i].clone(), "503 service unavailable");
    let mut route = Route::builder([ep(0), ep(1), ep(2), ep(3)])
        .tier(1, [ep(4)])
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = route.handle();
    for flag in &up[1..4] {
        flag.store(false, Ordering::SeqCst);
    }
    let check = down_where(|k| (1..4).contains(k));
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    // Tier 0 keeps 0.25 × 1.4 = 35 % on its healthy endpoint; tier 1 takes the rest: the
    // healthy capacity is enough, so no tier panics and no call reaches a dead endpoint.
    let mut a = 0;
    for _ in 0..2_000 {
        match call(&mut route).await.unwrap() {
            "a" => a += 1,
            other => assert_eq!(other, "e"),
        }
    }
    assert!((600..800).contains(&a), "{a}");
    // The standby fails too: nothing healthy enough anywhere, tier 0 panics and spreads its
    // calls over all four of its endpoints.
    up[4].store(false, Ordering::SeqCst);
    let check = down_where(|k| *k != 0);
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    let mut a = 0;
    for _ in 0..2_000 {
        if call(&mut route).await.is_ok_and(|n| n == "a") {
            a += 1;
        }
    }
    assert!((350..650).contains(&a), "{a}");
}

/// A primary tier in panic is worth only its healthy endpoints: a standby with healthy
/// capacity takes its share, as Envoy shares load among priorities by health (panic changes
/// only which endpoints a priority picks among). Tier 0: one healthy of five (0.2 × 1.4 =
/// 0.28), below half of what the tiers need together, so it panics; tier 1: one healthy of
/// two (0.7). Their capacities add up to 0.98: tier 0 takes 0.28 / 0.98 of the calls, tier 1
/// the rest. It used to take them all, four in five failing, the standby idle.
#[tokio::test(start_paused = true)]
async fn a_primary_tier_in_panic_leaves_a_healthy_standby_its_share() {
    let up = flags(7);
    let ep = |i: usize| endpoint(NAMES_7[i], up[i].clone(), "503 service unavailable");
    let mut route = Route::builder([ep(0), ep(1), ep(2), ep(3), ep(4)])
        .tier(1, [ep(5), ep(6)])
        .config(no_slow_start())
        .build()
        .unwrap();
    let handle = route.handle();
    let dead = |k: &usize| (1..5).contains(k) || *k == 6;
    for (i, flag) in up.iter().enumerate() {
        flag.store(!dead(&i), Ordering::SeqCst);
    }
    let check = down_where(dead);
    for _ in 0..10 {
        handle.check_once(&check, Duration::from_secs(1)).await;
    }
    let (mut primary, mut standby, mut failed) = (0, 0, 0);
    for _ in 0..2_000 {
        match call(&mut route).await {
            Ok("a") => primary += 1,
            Ok("f") => standby += 1,
            Ok(other) => panic!("{other} is down"),
            Err(_) => failed += 1,
        }
    }
    // Tier 0's 28.6 % spread over its five (one in five answers), tier 1's 71.4 % on its
    // healthy one.
    assert!(
        (1_300..1_550).contains(&standby),
        "{primary} {standby} {failed}"
    );
    assert!((350..800).contains(&failed), "{primary} {standby} {failed}");
}

#[tokio::test(start_paused = true)]
async fn durations_up_to_duration_max_mean_forever_and_never_overflow() {
    // "Eject for good" and "cool down for good", written as Duration::MAX.
    let mut cfg = no_panic();
    cfg.outlier.base_ejection = Duration::MAX;
    cfg.outlier.max_ejection = Duration::MAX;
    cfg.cooldown = Duration::MAX;
    cfg.max_cooldown = Duration::MAX;
    cfg.trend_window = Duration::MAX;
    cfg.health.ramp = Ramp::Steps {
        steps: 2,
        interval: Duration::from_secs(u64::MAX / 3),
    };
    let up = flags(3);
    up[1].store(false, Ordering::SeqCst);
    let mut route = route_of(cfg, &up);
    let handle = route.handle();
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..100 {
        let _ = call(&mut route).await;
    }
    let st = handle.status();
    assert!(st[1].ejected, "{:?}", st[1]);
    // A rate limit without a hint, and with the longest hint there is.
    handle.report_failure(&0, palisade_core::Class::new(Category::RateLimited));
    let mut limited = palisade_core::Class::new(Category::RateLimited);
    limited.retry_after = Some(Duration::MAX);
    handle.report_failure(&2, limited);
    let pass = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
    handle.check_once(&pass, Duration::MAX).await;
    // Ten years later, still out and still cooling down: nothing wrapped round to the past.
    tokio::time::advance(Duration::from_secs(10 * 365 * 86_400)).await;
    let st = handle.status();
    assert!(st[1].ejected, "{:?}", st[1]);
    assert!(st[0].cooling_down && st[2].cooling_down, "{st:?}");
    assert_eq!(st[0].trend, Trend::Healthy);
    // Every endpoint that could take a call cools down: the last resort, never the ejected one.
    for _ in 0..20 {
        assert_ne!(call(&mut route).await.unwrap(), "b");
    }
    // The checker on an interval of Duration::MAX checks once, then waits.
    let mut checker = std::pin::pin!(handle.health_checker(pass, Duration::MAX));
    assert!(futures_poll(checker.as_mut()).is_pending());
}

/// Polls `f` once with a no-op waker.
fn futures_poll<F: std::future::Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_does_not_delay_the_checks_of_the_other_endpoints() {
    // Endpoints 0 and 1 are blackholed: their checks never answer. Endpoint 2's check fails
    // at once, every second.
    let route = Route::new([up("a"), up("b"), up("c")]);
    let handle = route.handle();
    let check = check_fn(|k: &usize| {
        let hangs = *k < 2;
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            Err::<(), BoxError>("down".into())
        }
    });
    let checker = tokio::spawn(handle.health_checker(check, Duration::from_secs(1)));
    // Rounds at 0 s, 1 s and 2 s: endpoint 2 has had three failed checks (degraded), and each
    // blackholed one three timed-out checks, as the interval promises.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let st = handle.status();
    assert_eq!(
        st.iter()
            .map(|s| s.consecutive_unhealthy)
            .collect::<Vec<_>>(),
        [2, 2, 3],
        "{st:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = handle.status();
    assert_eq!(
        st.iter()
            .map(|s| s.consecutive_unhealthy)
            .collect::<Vec<_>>(),
        [3, 3, 4],
        "{st:?}"
    );
    assert_eq!(st[2].state, HealthState::Degraded);
    checker.abort();
}

#[tokio::test(start_paused = true)]
async fn a_check_that_panics_is_an_unhealthy_verdict_and_the_checker_goes_on() {
    let route = Route::new([up("a"), up("b")]);
    let handle = route.handle();
    // Endpoint 0's check panics while making its future, endpoint 1's while it runs.
    let check = check_fn(|k: &usize| {
        assert_ne!(*k, 0, "a bug in the check");
        async {
            tokio::task::yield_now().await;
            panic!("a bug in the check's future");
        }
    });
    let checker = tokio::spawn(handle.health_checker(check, Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(!checker.is_finished(), "the checker died with the check");
    let st = handle.status();
    assert_eq!(
        st.iter()
            .map(|s| (s.state, s.consecutive_unhealthy))
            .collect::<Vec<_>>(),
        [(HealthState::Degraded, 3), (HealthState::Degraded, 3)],
        "{st:?}"
    );
    checker.abort();
}

/// An endpoint that answers its name, allowed one call at a time, and a call to it that holds
/// that one place until `release` is sent `true`.
fn one_at_a_time(name: &'static str) -> (Svc, tokio::sync::watch::Sender<bool>) {
    let (release, gate) = tokio::sync::watch::channel(false);
    let svc = tower::limit::ConcurrencyLimitLayer::new(1).layer(service_fn(move |(): ()| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok::<_, BoxError>(name)
        }
    }));
    (tower::util::BoxCloneService::new(svc), release)
}

use tower::Layer as _;

#[tokio::test(start_paused = true)]
async fn a_busy_endpoint_does_not_hold_up_the_router_while_another_is_ready() {
    let (a, release) = one_at_a_time("a");
    // Another caller of endpoint a holds its only place.
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::new([a, up("b")]);
    // Whichever endpoint each pick draws first, every call is answered at once, by b.
    for _ in 0..64 {
        let answer = tokio::time::timeout(ms(1), call(&mut route)).await;
        assert_eq!(
            answer
                .expect("the router waited for a busy endpoint")
                .unwrap(),
            "b"
        );
    }
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn the_router_waits_only_when_no_endpoint_is_ready_and_wakes_when_one_is() {
    let (a, release_a) = one_at_a_time("a");
    let (b, release_b) = one_at_a_time("b");
    let held_a = tokio::spawn(a.clone().oneshot(()));
    let held_b = tokio::spawn(b.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::new([a, b]);
    let waiter = tokio::spawn(async move { call(&mut route).await });
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished());
    // Either endpoint freeing its place wakes the waiting router, which takes that one.
    release_b.send(true).unwrap();
    assert_eq!(held_b.await.unwrap().unwrap(), "b");
    let answer = tokio::time::timeout(ms(1), waiter).await;
    assert_eq!(
        answer.expect("the router was not woken").unwrap().unwrap(),
        "b"
    );
    release_a.send(true).unwrap();
    assert_eq!(held_a.await.unwrap().unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn a_busy_primary_keeps_its_calls_rather_than_spilling_them_to_the_standby() {
    let (a, release) = one_at_a_time("a");
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::builder([a]).tier(1, [up("b")]).build().unwrap();
    // Not ready is not unhealthy: the call waits for the primary.
    let mut ready = std::pin::pin!(route.ready());
    assert!(futures_poll(ready.as_mut()).is_pending());
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
    let svc = ready.await.unwrap();
    assert_eq!(svc.call(()).await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_waited_for_keeps_its_place_in_its_queue() {
    let (a, release) = one_at_a_time("a");
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::builder([a.clone()])
        .tier(1, [up("b")])
        .build()
        .unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The router queues for a's one place, then another caller does.
    assert!(route.poll_ready(&mut cx).is_pending());
    let other = tokio::spawn(a.oneshot(()));
    tokio::task::yield_now().await;
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
    // The place went to the router, first in line: it is ready at once.
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(route.call(()).await.unwrap(), "a");
    assert_eq!(other.await.unwrap().unwrap(), "a");
}

/// A discovery change while the router waits for a busy endpoint keeps that endpoint's
/// service, and with it the place it queued for (`Route::refresh` lets go of the other
/// queued services, not of the one waited for): the place freed meanwhile is the router's.
#[tokio::test(start_paused = true)]
async fn an_endpoint_waited_for_keeps_its_place_in_its_queue_across_a_discovery_change() {
    let (a, release) = one_at_a_time("a");
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Change::Insert(0, a.clone())).unwrap();
    let mut route = Route::discover_builder(Channel(rx))
        .config(no_slow_start())
        .build()
        .unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The router queues for a's one place, then another caller does.
    assert!(route.poll_ready(&mut cx).is_pending());
    let other = tokio::spawn(a.oneshot(()));
    tokio::task::yield_now().await;
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
    // The place went to the router, first in line. Discovery adds a ready endpoint before the
    // router polls again: the router still has a's place, so it takes a, at once.
    tx.send(Change::Insert(1, up("b"))).unwrap();
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(keys(&route), [0, 1]);
    assert_eq!(
        route.call(()).await.unwrap(),
        "a",
        "the discovery change gave a's place away"
    );
    assert_eq!(other.await.unwrap().unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_no_longer_picked_is_not_waited_for_and_its_place_is_let_go() {
    let (a, release) = one_at_a_time("a");
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::builder([a.clone()])
        .tier(1, [up("b")])
        .build()
        .unwrap();
    let handle = route.handle();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(route.poll_ready(&mut cx).is_pending());
    // a is taken out of traffic while the router waits for it: the router stops waiting and
    // the standby takes the call.
    for _ in 0..10 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(route.call(()).await.unwrap(), "b");
    // And it gave up its place in a's queue: a's next caller gets a's place once free.
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
    let next = tokio::time::timeout(ms(1), a.oneshot(())).await;
    assert_eq!(next.expect("the router kept a's place").unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn the_router_stops_waiting_for_an_endpoint_once_it_is_ejected() {
    for seed in 0..8 {
        let (a, release_a) = one_at_a_time("a");
        let (b, release_b) = one_at_a_time("b");
        let held_a = tokio::spawn(a.clone().oneshot(()));
        let held_b = tokio::spawn(b.clone().oneshot(()));
        tokio::task::yield_now().await;
        let original = Route::new([a, b]);
        let handle = original.handle();
        // Each clone draws differently: some wait for a first, some for b.
        for _ in 0..seed {
            drop(original.clone());
        }
        let mut route = original.clone();
        let waiter = tokio::spawn(async move { call(&mut route).await });
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        for _ in 0..10 {
            handle.report_failure(&0, Class::new(Category::ServerError));
        }
        assert_eq!(handle.status()[0].traffic_ratio, 0.0);
        // a frees its place first, but it is out of traffic now: the call waits for b.
        release_a.send(true).unwrap();
        assert_eq!(held_a.await.unwrap().unwrap(), "a");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiter.is_finished(),
            "seed {seed}: the call went to the ejected endpoint"
        );
        release_b.send(true).unwrap();
        assert_eq!(held_b.await.unwrap().unwrap(), "b");
        assert_eq!(waiter.await.unwrap().unwrap(), "b", "seed {seed}");
    }
}

/// Counts the wake-ups of a task.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Wakes {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An endpoint that answers `name`, allowed one call at a time, and another client of that
/// limit holding its one place until dropped.
fn held(name: &'static str) -> (Svc, Svc) {
    let limited = tower::util::BoxCloneService::new(tower::limit::ConcurrencyLimit::new(
        service_fn(move |(): ()| async move { Ok::<_, BoxError>(name) }),
        1,
    ));
    let mut holder = limited.clone();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(holder.poll_ready(&mut cx).is_ready());
    (limited, holder)
}

/// Polls each of `routes` whenever its task was woken, until one is ready (its index) or none
/// is woken any more (`None`); at most 100 rounds.
fn poll_woken(routes: &mut [Route<Static<Svc>>], wakes: &[Arc<Wakes>]) -> Option<usize> {
    let mut seen: Vec<usize> = vec![0; routes.len()];
    for _ in 0..100 {
        let mut woken = false;
        for (k, route) in routes.iter_mut().enumerate() {
            let n = wakes[k].count();
            if n == seen[k] {
                continue;
            }
            seen[k] = n;
            woken = true;
            let waker = std::task::Waker::from(wakes[k].clone());
            if route
                .poll_ready(&mut Context::from_waker(&waker))
                .is_ready()
            {
                return Some(k);
            }
        }
        if !woken {
            return None;
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn clones_waiting_for_an_endpoint_that_cools_down_keep_their_places_in_its_queue() {
    // The only endpoint answered 429: it cools down, and calls still go to it, the last
    // resort, for its limiter to decide. Two clones wait for its one place.
    let (a, holder) = held("a");
    let route = Route::new([a]);
    let limited = Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(60));
    assert!(route.handle().report_failure(&0, limited));
    let mut routes = [route.clone(), route];
    let wakes = [Arc::new(Wakes::default()), Arc::new(Wakes::default())];
    for (route, wakes) in routes.iter_mut().zip(&wakes) {
        let waker = std::task::Waker::from(wakes.clone());
        assert!(
            route
                .poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    // The place goes to the first in line, which keeps it: a clone that gave its place up at
    // each poll_ready, to queue again with a fresh service, would hand it to the other for good.
    drop(holder);
    assert_eq!(poll_woken(&mut routes, &wakes), Some(0));
    assert_eq!(poll_now(routes[0].call(())), "a");
}

#[tokio::test(start_paused = true)]
async fn a_router_waiting_for_a_held_out_endpoint_in_panic_mode_keeps_its_place() {
    let (a, holder) = held("a");
    let mut route = Route::new([a.clone()]);
    let handle = route.handle();
    // Failed and held out; alone, it is below the panic ratio, so panic mode still picks it.
    for _ in 0..10 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    let wakes = Arc::new(Wakes::default());
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(route.poll_ready(&mut cx).is_pending());
    // Another client queues behind the router; the place goes to the router, first in line.
    let mut other = a;
    assert!(other.poll_ready(&mut cx).is_pending());
    drop(holder);
    assert!(wakes.count() > 0);
    assert!(
        route.poll_ready(&mut cx).is_ready(),
        "the router gave its place away"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_standby_a_call_spilled_to_does_not_hold_it_up_while_the_primary_is_ready() {
    let gate = |name, open: &Arc<AtomicBool>| {
        tower::util::BoxCloneService::new(Gate {
            name,
            open: open.clone(),
        })
    };
    let (primary_open, standby_open) = (flags(1).remove(0), Arc::new(AtomicBool::new(false)));
    let route = Route::builder([gate("a", &primary_open)])
        .tier(1, [gate("b", &standby_open)])
        .build()
        .unwrap();
    let handle = route.handle();
    // Degraded (3 failures in a row, not ejected): its tier keeps 70 % of the calls and
    // spills 30 % to the standby, which is at its limit.
    for _ in 0..3 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    let primary = handle.status()[0].token;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Whatever each clone draws first, it is ready at once, on the primary.
    for _ in 0..100 {
        let mut clone = route.clone();
        assert!(clone.poll_ready(&mut cx).is_ready());
        assert_eq!(clone.reserved(), Some(primary));
    }
    // Both busy: a clone waits, for whichever it drew. Once the primary is ready, so is the
    // clone, even one that was waiting for the standby.
    for _ in 0..100 {
        let mut clone = route.clone();
        primary_open.store(false, Ordering::SeqCst);
        assert!(clone.poll_ready(&mut cx).is_pending());
        primary_open.store(true, Ordering::SeqCst);
        assert!(clone.poll_ready(&mut cx).is_ready());
        assert_eq!(clone.reserved(), Some(primary));
    }
}

/// An endpoint whose readiness never completes, or fails after running `hook` once.
#[derive(Clone)]
struct Hooked {
    pending: bool,
    hook: Arc<std::sync::Mutex<Option<Box<dyn FnMut() + Send>>>>,
}

impl Service<()> for Hooked {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.pending {
            return Poll::Pending;
        }
        let hook = self.hook.lock().unwrap().take();
        if let Some(mut hook) = hook {
            hook();
        }
        Poll::Ready(Err("connection refused".into()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok("hooked"))
    }
}

// Not in a tokio task: its cooperative budget would make the channel of a later seed look
// empty.
#[test]
fn a_discovery_change_during_a_pass_waits_for_the_next_poll_ready() {
    // Over [pending, pending, failing]: while the failing endpoint's readiness runs, another
    // clone (another thread, in production) applies a removal of the first two. The pass goes
    // on over the list it has, whatever it drew first; the next poll_ready takes the new one.
    for seed in 0..40 {
        let (tx, rx) = mpsc::unbounded_channel();
        let hook = Arc::new(std::sync::Mutex::new(None));
        for (key, pending) in [(0, true), (1, true), (2, false)] {
            let hooked = Hooked {
                pending,
                hook: hook.clone(),
            };
            tx.send(Change::Insert(
                key,
                tower::util::BoxCloneService::new(hooked),
            ))
            .unwrap();
        }
        let mut route = Route::discover_builder(Channel(rx))
            .config(no_slow_start())
            .seed(seed)
            .build()
            .unwrap();
        let mut other = route.clone();
        let change: Box<dyn FnMut() + Send> = Box::new(move || {
            tx.send(Change::Remove(0)).unwrap();
            tx.send(Change::Remove(1)).unwrap();
            let _ = other.poll_ready(&mut Context::from_waker(std::task::Waker::noop()));
        });
        *hook.lock().unwrap() = Some(change);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = route.poll_ready(&mut cx);
        assert!(
            hook.lock().unwrap().is_none(),
            "seed {seed}: the change was made"
        );
        let _ = route.poll_ready(&mut cx);
        assert_eq!(keys(&route), [2], "seed {seed}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_diverted_at_call_time_leaves_no_place_in_the_other_endpoint_s_queue() {
    let (b, holder) = held("b");
    let mut route = Route::builder([up("a")])
        .tier(1, [b.clone()])
        .build()
        .unwrap();
    let primary = route.handle().status()[0].token;
    // A retry avoiding the primary, read at `call`: the standby is at its limit, so the call
    // goes to the reserved primary.
    assert_eq!(reserve(&mut route), primary);
    assert_eq!(call_avoiding(&mut route, primary), "a");
    // The standby's place is free again: the router, which polled it with a no-op waker,
    // holds no place in its queue (it would get the place and wake nobody).
    drop(holder);
    for _ in 0..5 {
        assert_eq!(reserve(&mut route), primary);
        assert_eq!(poll_now(route.call(())), "a");
    }
    let mut other = b;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        other.poll_ready(&mut cx).is_ready(),
        "the standby's place is stranded in the router"
    );
}

#[tokio::test(start_paused = true)]
async fn a_router_waiting_for_an_endpoint_is_woken_when_it_is_taken_out() {
    let mut route = stuck_primary();
    let handle = route.handle();
    let wakes = Arc::new(Wakes::default());
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    // Not ready is not unhealthy: the router waits for the primary.
    assert!(route.poll_ready(&mut cx).is_pending());
    // Failures of its calls elsewhere (another clone's) degrade it: still one to wait for, so
    // nobody is woken for nothing ...
    for _ in 0..3 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(wakes.count(), 0);
    // ... until they take it out of traffic: then the waiting task is woken, and goes to the
    // standby.
    for _ in 0..7 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    assert_eq!(wakes.count(), 1);
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(poll_now(route.call(())), "b");
    // An ejection and a cool-down wake it alike.
    for class in [Category::ServerError, Category::RateLimited] {
        let mut route = stuck_primary();
        let handle = route.handle();
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(route.poll_ready(&mut cx).is_pending());
        if class == Category::ServerError {
            // Five failures in a row: another clone's next pick ejects it.
            for _ in 0..5 {
                handle.report_failure(&0, Class::new(class));
            }
            let mut other = route.clone();
            let _ = other.poll_ready(&mut Context::from_waker(std::task::Waker::noop()));
            assert!(handle.status()[0].ejected);
        } else {
            handle.report_failure(&0, Class::new(class));
        }
        assert!(wakes.count() > 0, "{class:?}");
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_eq!(poll_now(route.call(())), "b");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reservation_on_an_endpoint_taken_out_since_is_let_go() {
    for target in 0..2 {
        let (a, holder_a) = held("a");
        let (b, holder_b) = held("b");
        drop((holder_a, holder_b));
        let limits = [a.clone(), b.clone()];
        let mut route = Route::new([a, b]);
        let handle = route.handle();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Reserve the target (the limit's one place is the router's now).
        while route.reserved() != Some(handle.status()[target].token) {
            if route.reserved().is_some() {
                assert_eq!(poll_now(route.call(())), NAMES[1 - target]);
            }
            assert!(route.poll_ready(&mut cx).is_ready());
        }
        // Other clones' calls fail it: Failed, held out.
        for _ in 0..10 {
            handle.report_failure(&target, Class::new(Category::ServerError));
        }
        // A later poll_ready (a `Buffer` worker's, say) lets the reservation go and picks
        // again: the call goes to the other endpoint ...
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_eq!(poll_now(route.call(())), NAMES[1 - target]);
        // ... and the target's place is free for its other clients.
        let mut other = limits[target].clone();
        assert!(other.poll_ready(&mut cx).is_ready(), "target {target}");
    }
}

/// A router with a primary that is never ready and a standby that is always ready.
fn stuck_primary() -> Route<Static<Svc>> {
    let stuck = Gate {
        name: "stuck",
        open: Arc::new(AtomicBool::new(false)),
    };
    Route::builder([tower::util::BoxCloneService::new(stuck)])
        .tier(1, [up("b")])
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_router_polled_again_from_another_task_wakes_that_task_when_its_endpoint_is_taken_out() {
    let mut route = stuck_primary();
    let handle = route.handle();
    // Polled on one task, then on another (a router moved to another task, say): each time
    // it waits for the primary.
    let (first, second) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
    for wakes in [&first, &second] {
        let waker = std::task::Waker::from(wakes.clone());
        assert!(
            route
                .poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    // Taken out of traffic: the task that polled last is the one woken.
    for _ in 0..10 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    assert_eq!(second.count(), 1, "the task waiting now was not woken");
    assert_eq!(first.count(), 0);
    let waker = std::task::Waker::from(second);
    assert!(
        route
            .poll_ready(&mut Context::from_waker(&waker))
            .is_ready()
    );
    assert_eq!(poll_now(route.call(())), "b");
}

#[tokio::test(start_paused = true)]
async fn every_clone_waiting_for_an_endpoint_is_woken_when_it_is_taken_out() {
    let route = stuck_primary();
    let handle = route.handle();
    let mut routes = [route.clone(), route.clone(), route];
    let wakes: Vec<_> = (0..routes.len())
        .map(|_| Arc::new(Wakes::default()))
        .collect();
    // Each clone waits for the primary, on its own task; the first twice.
    for k in [0, 1, 2, 0] {
        let waker = std::task::Waker::from(wakes[k].clone());
        assert!(
            routes[k]
                .poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    for _ in 0..10 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    // Every one is woken, once, and goes to the standby.
    let counts: Vec<_> = wakes.iter().map(|w| w.count()).collect();
    assert_eq!(counts, [1, 1, 1]);
    for (route, wakes) in routes.iter_mut().zip(&wakes) {
        let waker = std::task::Waker::from(wakes.clone());
        assert!(
            route
                .poll_ready(&mut Context::from_waker(&waker))
                .is_ready()
        );
        assert_eq!(poll_now(route.call(())), "b");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pass_waits_rather_than_poll_again_an_endpoint_it_polled_whatever_its_position() {
    // Over [c, a, b]: c is held out, a is never ready, b's readiness fails once and would
    // succeed the second time. Whichever of a and b a pass polls first, it polls the other
    // next; then the pick has only those two left, and the pass waits rather than poll either
    // again (b, at position 2, would be ready).
    for seed in 0..20 {
        let refusals = Arc::new(AtomicUsize::new(0));
        let stuck = Gate {
            name: "a",
            open: Arc::new(AtomicBool::new(false)),
        };
        let mut route = Route::builder([
            up("c"),
            tower::util::BoxCloneService::new(stuck),
            refusing("b", &refusals),
        ])
        .seed(seed)
        .build()
        .unwrap();
        let handle = route.handle();
        for _ in 0..10 {
            handle.report_failure(&0, Class::new(Category::ServerError));
        }
        assert_eq!(handle.status()[0].traffic_ratio, 0.0);
        refusals.store(1, Ordering::SeqCst);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(route.poll_ready(&mut cx).is_pending(), "seed {seed}");
        assert_eq!(
            refusals.load(Ordering::SeqCst),
            0,
            "seed {seed}: b was polled"
        );
        assert_eq!(route.reserved(), None, "seed {seed}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reservation_on_an_endpoint_taken_out_while_the_others_cool_down_goes_to_the_last_resort()
{
    for target in 0..2 {
        let mut route = route_of(no_panic(), &flags(2));
        let handle = route.handle();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while route.reserved() != Some(handle.status()[target].token) {
            if route.reserved().is_some() {
                assert_eq!(poll_now(route.call(())), NAMES[1 - target]);
            }
            assert!(route.poll_ready(&mut cx).is_ready());
        }
        // The other endpoint cools down after a rate limit, the target is taken out (Failed,
        // held): the call's last resort is the one cooling down, not the target.
        let limited = Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(60));
        assert!(handle.report_failure(&(1 - target), limited));
        for _ in 0..10 {
            handle.report_failure(&target, Class::new(Category::ServerError));
        }
        assert_eq!(handle.status()[target].traffic_ratio, 0.0);
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_eq!(
            route.reserved(),
            Some(handle.status()[1 - target].token),
            "target {target}"
        );
        assert_eq!(poll_now(route.call(())), NAMES[1 - target]);
    }
}

// Not in a tokio task: its cooperative budget would make the channel of a later seed look
// empty.
#[test]
fn a_pass_marks_no_epoch_plainly_healthy_from_a_list_older_than_the_epoch() {
    // Over [failing, b]: while the failing endpoint's readiness runs, another clone applies the
    // insertion of c, which is then taken out (Failed, held). The pass goes on over its list
    // without c, all plainly healthy, and must not mark the epoch as plainly healthy: the next
    // poll_ready, over the list with c, would then skip its scan and could pick c.
    let mut changed = 0;
    for seed in 0..40 {
        let (tx, rx) = mpsc::unbounded_channel();
        let hook = Arc::new(std::sync::Mutex::new(None));
        let failing = Hooked {
            pending: false,
            hook: hook.clone(),
        };
        tx.send(Change::Insert(
            0,
            tower::util::BoxCloneService::new(failing),
        ))
        .unwrap();
        tx.send(Change::Insert(1, up("b"))).unwrap();
        let mut route = Route::discover_builder(Channel(rx))
            .config(no_slow_start())
            .seed(seed)
            .build()
            .unwrap();
        let handle = route.handle();
        let (mut other, inserts, reports) = (route.clone(), tx.clone(), handle.clone());
        let change: Box<dyn FnMut() + Send> = Box::new(move || {
            inserts.send(Change::Insert(2, up("c"))).unwrap();
            let _ = other.poll_ready(&mut Context::from_waker(std::task::Waker::noop()));
            for _ in 0..10 {
                reports.report_failure(&2, Class::new(Category::ServerError));
            }
        });
        *hook.lock().unwrap() = Some(change);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_eq!(poll_now(route.call(())), "b", "seed {seed}");
        if hook.lock().unwrap().is_some() {
            // b was drawn first: the failing endpoint was not polled.
            continue;
        }
        changed += 1;
        let c = handle.status()[2].token;
        assert_eq!(handle.status()[2].traffic_ratio, 0.0);
        assert!(route.poll_ready(&mut cx).is_ready());
        assert_ne!(route.reserved(), Some(c), "seed {seed}: the held-out c");
        drop(tx);
    }
    assert!(changed > 0);
}

/// A 429 with a one-minute hint, as an endpoint answers it.
fn rate_limited_for_a_minute() -> Class {
    Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(60))
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_on_a_healthy_endpoint_does_not_send_calls_to_an_ejected_one() {
    let mut route = Route::new([up("a"), up("b"), up("c")]);
    let handle = route.handle();
    // a fails five calls in a row: ejected at the next pick.
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    // b, healthy, answers one 429: it cools down, and c takes the calls. Health still lets
    // two thirds of the traffic through (b's share counts): no panic mode, a gets nothing.
    handle.report_failure(&1, rate_limited_for_a_minute());
    let answers = names(&mut route, 40).await;
    let st = handle.status();
    assert!(st[0].ejected && st[1].cooling_down, "{st:?}");
    assert!(answers.iter().all(|n| *n == "c"), "{answers:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_on_a_healthy_endpoint_makes_no_calls_fail_on_an_ejected_one() {
    let up = flags(3);
    up[0].store(false, Ordering::SeqCst);
    let mut route = route_of(RouteConfig::default(), &up);
    let handle = route.handle();
    // a fails until ejected (five errors).
    for _ in 0..40 {
        let _ = call(&mut route).await;
    }
    assert!(handle.status()[0].ejected);
    handle.report_failure(&1, rate_limited_for_a_minute());
    let mut errors = 0;
    for _ in 0..100 {
        if call(&mut route).await.is_err() {
            errors += 1;
        }
        tokio::time::advance(ms(100)).await;
    }
    assert_eq!(
        errors, 0,
        "calls failed on the ejected endpoint while c was healthy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pass_that_moves_on_from_a_busy_endpoint_lets_its_place_go() {
    let (a, release) = one_at_a_time("a");
    // Another caller of endpoint a holds its only place.
    let held = tokio::spawn(a.clone().oneshot(()));
    tokio::task::yield_now().await;
    let mut route = Route::new([a.clone(), up("b")]);
    // Passes that poll a (queued for its place) go on to b.
    for _ in 0..16 {
        let answer = tokio::time::timeout(ms(1), call(&mut route)).await;
        assert_eq!(answer.expect("waited for a busy endpoint").unwrap(), "b");
    }
    // a's place is freed while the router is idle (still alive): it must not go to a queue
    // entry of the router's that nobody will use.
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "a");
    let next = tokio::time::timeout(Duration::from_secs(60), a.oneshot(())).await;
    assert_eq!(next.expect("the idle router kept a's place").unwrap(), "a");
    drop(route);
}

/// The same past the first 64 endpoints (the second word of the router's bitsets): 64 ready
/// endpoints, then 4 busy ones that passes poll now and then; every busy one's place freed
/// while the router is idle, each must then serve another caller.
#[tokio::test(start_paused = true)]
async fn a_pass_lets_go_of_busy_endpoints_past_the_first_64() {
    let mut busy = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let (svc, release) = one_at_a_time("busy");
        held.push(tokio::spawn(svc.clone().oneshot(())));
        busy.push((svc, release));
    }
    tokio::task::yield_now().await;
    let endpoints = (0..64)
        .map(|_| up("ready"))
        .chain(busy.iter().map(|(svc, _)| svc.clone()));
    let mut route = Route::new(endpoints);
    for _ in 0..400 {
        let answer = tokio::time::timeout(ms(1), call(&mut route)).await;
        assert_eq!(
            answer.expect("waited for a busy endpoint").unwrap(),
            "ready"
        );
    }
    for (_, release) in &busy {
        release.send(true).unwrap();
    }
    for h in held {
        assert_eq!(h.await.unwrap().unwrap(), "busy");
    }
    for (i, (svc, _)) in busy.iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(60), svc.clone().oneshot(())).await;
        assert!(
            next.is_ok(),
            "the idle router kept endpoint {}'s place",
            64 + i
        );
    }
    drop(route);
}

#[tokio::test(start_paused = true)]
async fn a_router_that_waited_for_two_busy_endpoints_lets_the_other_place_go() {
    for seed in 0..8 {
        let (a, release_a) = one_at_a_time("a");
        let (b, release_b) = one_at_a_time("b");
        let held_a = tokio::spawn(a.clone().oneshot(()));
        let held_b = tokio::spawn(b.clone().oneshot(()));
        tokio::task::yield_now().await;
        let original = Route::new([a, b.clone()]);
        // Each clone draws differently: some wait for a first, some for b.
        for _ in 0..seed {
            drop(original.clone());
        }
        let mut route = original.clone();
        drop(original);
        let waiter = tokio::spawn(async move {
            let answer = call(&mut route).await;
            (answer, route)
        });
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        // a frees its place first: the call goes to a, and the router, idle but alive, must
        // not keep its queue entry for b.
        release_a.send(true).unwrap();
        assert_eq!(held_a.await.unwrap().unwrap(), "a");
        let (answer, route) = tokio::time::timeout(ms(1), waiter).await.unwrap().unwrap();
        assert_eq!(answer.unwrap(), "a", "seed {seed}");
        release_b.send(true).unwrap();
        assert_eq!(held_b.await.unwrap().unwrap(), "b");
        let next = tokio::time::timeout(Duration::from_secs(60), b.oneshot(())).await;
        assert_eq!(
            next.unwrap_or_else(|_| panic!("seed {seed}: the idle router kept b's place"))
                .unwrap(),
            "b"
        );
        drop(route);
    }
}

#[tokio::test(start_paused = true)]
async fn a_no_endpoint_verdict_is_looked_at_again_by_the_next_poll_ready() {
    let mut route = Route::builder([up("a")]).panic_ratio(None).build().unwrap();
    let handle = route.handle();
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(route.poll_ready(&mut cx).is_ready());
    assert!(handle.status()[0].ejected);
    // The ejection ends; the caller polls ready again (ahead of its next request), then calls.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(handle.is_ready());
    assert!(route.poll_ready(&mut cx).is_ready());
    assert_eq!(poll_now(route.call(())), "a");
    // And the other way: a verdict of one endpoint, while a new pass finds none either.
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    assert!(route.poll_ready(&mut cx).is_ready());
    assert!(route.poll_ready(&mut cx).is_ready());
    let e = route.call(()).await.unwrap_err();
    assert!(e.is::<NoHealthyEndpoint>(), "{e}");
}

#[tokio::test(start_paused = true)]
async fn the_trend_sees_the_checks_after_2_pow_32_buckets() {
    // Buckets of 1 ms: 2^32 of them are 49.7 days.
    let route = Route::builder([up("a")])
        .trend_window(ms(10))
        .build()
        .unwrap();
    let handle = route.handle();
    let pass = check_fn(|_: &usize| async { Ok::<(), BoxError>(()) });
    handle.check_once(&pass, Duration::from_secs(1)).await;
    assert_eq!(handle.status()[0].healthy_ratio, Some(1.0), "day 0");
    for day in [50, 100, 1_000] {
        tokio::time::advance(Duration::from_secs(50 * 86_400)).await;
        handle.check_once(&pass, Duration::from_secs(1)).await;
        assert_eq!(handle.status()[0].healthy_ratio, Some(1.0), "day {day}");
    }
}

#[test]
fn a_zero_cooldown_is_refused_not_an_off_switch() {
    let built = Route::builder([up("a"), up("b")])
        .cooldown(Duration::ZERO)
        .max_cooldown(Duration::ZERO)
        .build();
    assert_eq!(built.unwrap_err().field(), "cooldown");
    let built = Route::builder([up("a")]).cooldown(Duration::ZERO).build();
    assert_eq!(built.unwrap_err().field(), "cooldown");
}

#[tokio::test(start_paused = true)]
async fn failures_of_calls_in_flight_while_ejected_do_not_eject_it_again_at_once() {
    let mut route = Route::new([up("a"), up("b"), up("c")]);
    let handle = route.handle();
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    let _ = names(&mut route, 1).await;
    assert_eq!(handle.status()[0].ejections, 1);
    // Calls that were in flight when it was ejected fail afterwards.
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    // When the ejection ends, the endpoint gets its trial, not a second ejection at once.
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = names(&mut route, 1).await;
    let st = &handle.status()[0];
    assert!(!st.ejected, "{st:?}");
    assert_eq!(st.ejections, 1, "{st:?}");
}

/// An endpoint whose readiness is always pending (a concurrency limit that never frees up).
#[derive(Clone)]
struct Busy;

impl Service<()> for Busy {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _: ()) -> Self::Future {
        unreachable!("never ready")
    }
}

/// Past the first 64 endpoints (the bitsets' first word), a pass still tries every eligible
/// endpoint before it waits: `busy` endpoints always pending and one always ready, at the
/// start, at the word boundary or last; no pass may wait.
#[tokio::test(start_paused = true)]
async fn a_pass_past_64_busy_endpoints_finds_the_ready_one() {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for busy in [63, 64, 65, 69, 128] {
        for at in [0, 63, 64, busy].into_iter().filter(|&at| at <= busy) {
            let mut endpoints: Vec<Svc> = (0..busy)
                .map(|_| tower::util::BoxCloneService::new(Busy))
                .collect();
            endpoints.insert(at, up("ready"));
            for seed in [0x5eed, 1] {
                let mut route = Route::builder(endpoints.clone())
                    .seed(seed)
                    .build()
                    .unwrap();
                for round in 0..100 {
                    assert!(
                        route.poll_ready(&mut cx).is_ready(),
                        "{busy} busy, the ready one at {at}, seed {seed}: pass {round} waited"
                    );
                    assert_eq!(poll_now(route.call(())), "ready");
                }
            }
        }
    }
}

/// Calls in flight when an endpoint was ejected that fail afterwards took its health to
/// Failed, which held it out with a second strike of the same bad spell: until 60 s while its
/// ejection ended at 30 s. An ejection and a hold of one bad spell are one strike ("so one bad
/// spell lengthens the next one once"), and when the ejection ends the endpoint gets its
/// trial.
#[tokio::test(start_paused = true)]
async fn failures_in_flight_while_ejected_do_not_hold_it_past_its_ejection() {
    let mut route = Route::new([up("a"), up("b"), up("c")]);
    let handle = route.handle();
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    let _ = names(&mut route, 1).await;
    assert_eq!(handle.status()[0].ejections, 1);
    // Calls that were in flight when it was ejected fail afterwards.
    for _ in 0..5 {
        handle.report_failure(&0, Class::new(Category::ServerError));
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let _ = names(&mut route, 1).await;
    let st = &handle.status()[0];
    assert!(!st.ejected, "{st:?}");
    assert!(
        st.traffic_ratio > 0.0,
        "its ejection is over, yet it gets no traffic: {st:?}"
    );
    // Its trial fails: the bad spell's second strike holds it 60 s (not a third's 90 s).
    handle.report_failure(&0, Class::new(Category::ServerError));
    let _ = names(&mut route, 1).await;
    assert_eq!(handle.status()[0].traffic_ratio, 0.0);
    tokio::time::advance(Duration::from_secs(59)).await;
    let _ = names(&mut route, 1).await;
    assert_eq!(handle.status()[0].traffic_ratio, 0.0, "held 60 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    let _ = names(&mut route, 1).await;
    let st = &handle.status()[0];
    assert!(st.traffic_ratio > 0.0, "on trial again after 60 s: {st:?}");
}
