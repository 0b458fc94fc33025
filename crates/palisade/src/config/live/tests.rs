//! Reconfiguring a running preset, on the paused clock.

use std::time::Duration;

use palisade_breaker::{Reset, State, Window};
use palisade_core::{BoxError, Category, Class};
use palisade_retry::budget::Budget;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::config::PresetConfig;

const BASE: &str = r#"
    name = "llm"
    [breaker]
    consecutive_failures = 3
    [retry]
    max_attempts = 1
"#;

fn config(extra: &str) -> PresetConfig {
    PresetConfig::from_toml(&format!("{BASE}{extra}")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_and_the_budgets_counts_survive_a_new_file() {
    let (preset, handle) = config("[retry.budget]\nfloor_per_second = 0\n")
        .build_with_handle()
        .unwrap();
    let mut svc = preset.layer(service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("503 overloaded".into())
        }
    }));
    for _ in 0..20 {
        svc.ready().await.unwrap().call(true).await.unwrap();
    }
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(false).await;
    }
    assert_eq!(handle.breaker().state(), State::Open);
    let open_for = handle.breaker().metrics().retry_after;
    let balance = handle.budget().budget().balance();
    // 23 requests × 0.12 + 1/s × 10 s (no floor).
    assert_eq!(balance, 12);
    // A new file.
    let next = PresetConfig::from_toml(
        r#"
        name = "llm"
        [breaker]
        consecutive_failures = 3
        open_duration = "3s"
        max_open_duration = "9s"
        [retry]
        max_attempts = 4
        wait_for_breaker = false
        wait_for_budget = false
        min_attempt_time = "50ms"
        [retry.budget]
        ratio = 0.5
        floor_per_second = 3
        max_tokens = 4
        ttl = "20s"
        [attempt_timeout]
        limit = "2s"
    "#,
    )
    .unwrap();
    let done = handle.reconfigure(next.clone()).unwrap();
    assert_eq!(done.breaker.state, State::Open);
    assert!(done.breaker.is_lossless());
    assert_eq!(handle.breaker().metrics().retry_after, open_for);
    // 23 requests × 0.5 + 10 reserve is 21, under the new floor of 3 a second × 10 s.
    assert_eq!(
        (done.budget.balance_before, done.budget.balance_after),
        (12, 30)
    );
    // 10 tokens, 3 failures: 7, cut to 4.
    assert_eq!(done.throttle.clamped, Some((7_000, 4_000)));
    assert_eq!(
        done.needs_rebuild,
        [
            "attempt_timeout",
            "retry.max_attempts",
            "retry.wait_for_breaker",
            "retry.wait_for_budget",
            "retry.min_attempt_time",
            "retry.budget.ttl"
        ]
    );
    let said = done.to_string();
    assert!(
        said.contains(
            "needs a rebuild: attempt_timeout, retry.max_attempts, retry.wait_for_breaker, \
             retry.wait_for_budget, retry.min_attempt_time, retry.budget.ttl"
        ),
        "{said}"
    );
    // config(): the live parts as reconfigured, the others as built.
    let now = handle.config();
    assert_eq!(now.breaker, next.breaker);
    assert_eq!(now.retry.budget.ratio, 0.5);
    assert_eq!(now.retry.budget.floor_per_second, 3);
    assert_eq!(now.retry.budget.ttl, Duration::from_secs(10));
    assert_eq!(now.retry.max_attempts, 1);
    assert!(now.retry.wait_for_breaker);
    assert!(now.retry.wait_for_budget);
    assert_eq!(now.retry.min_attempt_time, Duration::from_millis(10));
    // Reconfiguring to what runs now changes nothing and needs no rebuild.
    let again = handle.reconfigure(now).unwrap();
    assert!(again.needs_rebuild.is_empty());
    assert!(again.breaker.is_lossless());
    assert_eq!(again.throttle.clamped, None);
}

#[tokio::test(start_paused = true)]
async fn a_changed_breaker_window_is_reset_and_said() {
    let (_preset, handle) = config("").build_with_handle().unwrap();
    let mut next = handle.config();
    next.breaker.window = Window::Count(60);
    next.breaker.failure_rate = Some(palisade_breaker::Rate::new(0.9, 60));
    let events = palisade_test::Events::start();
    let done = handle.reconfigure(next).unwrap();
    // The breaker says what it reset, and the preset says it all in one event.
    let breaker = events.take();
    let preset: Vec<_> = breaker
        .iter()
        .filter(|e| e.message() == "preset reconfigured")
        .collect();
    assert_eq!(preset.len(), 1, "{breaker:?}");
    assert_eq!(preset[0].target, "palisade");
    assert_eq!(preset[0].field("reset"), Some(done.to_string().as_str()));
    assert!(
        breaker
            .iter()
            .any(|e| e.message() == "breaker reconfigured" && e.target == "palisade_breaker"),
        "{breaker:?}"
    );
    assert!(matches!(
        done.breaker.resets[..],
        [Reset::Window {
            from: Some(Window::Recent { calls: 30, .. }),
            to: Some(Window::Count(60)),
            ..
        }]
    ));
    assert!(done.to_string().contains("rate window"), "{done}");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_file_changes_no_part() {
    let (_preset, handle) = config("").build_with_handle().unwrap();
    let before = handle.config();
    // A valid breaker change beside an invalid budget: neither is applied.
    let mut next = handle.config();
    next.breaker.open_duration = Duration::from_secs(2);
    next.breaker.max_open_duration = Duration::from_secs(2);
    next.retry.budget.ratio = -1.0;
    let err = handle.reconfigure(next).unwrap_err();
    assert_eq!(err.field(), "retry.budget.ratio");
    assert_eq!(handle.config(), before);
    assert_eq!(handle.breaker().config(), before.breaker);
    assert_eq!(handle.budget().budget().ratio(), 0.12);
    let mut next = handle.config();
    next.breaker.half_open_probes = 0;
    assert_eq!(
        handle.reconfigure(next).unwrap_err().field(),
        "breaker.half_open_probes"
    );
    assert_eq!(handle.config(), before);
}

#[tokio::test(start_paused = true)]
async fn the_router_is_reconfigured_when_given_and_listed_otherwise() {
    let file = r#"
        name = "llm"
        [route]
        cooldown = "1s"
        [[endpoints]]
        address = "east"
        [[endpoints]]
        address = "west"
    "#;
    let config = PresetConfig::from_toml(file).unwrap();
    let route = config
        .route(|_| service_fn(|_: ()| async { Ok::<_, BoxError>(()) }))
        .unwrap()
        .unwrap();
    let (_preset, handle) = config.build_with_handle().unwrap();
    let mut next = config.clone();
    next.route.as_mut().unwrap().cooldown = Duration::from_secs(7);
    // Without the router's handle: listed, not applied.
    let done = handle.reconfigure(next.clone()).unwrap();
    assert_eq!(done.needs_rebuild, ["route"]);
    assert_eq!(done.route, None);
    assert_eq!(route.handle().config().cooldown, Duration::from_secs(1));
    // With it: applied, the endpoints' health kept.
    let router = route.handle();
    assert!(router.report_failure(&0, Class::new(Category::ServerError)));
    assert_eq!(
        format!("{handle:?}"),
        r#"PresetHandle { breaker: "llm", route: false, .. }"#
    );
    let handle = handle.with_route(router.clone());
    assert_eq!(
        format!("{handle:?}"),
        r#"PresetHandle { breaker: "llm", route: true, .. }"#
    );
    let done = handle.reconfigure(next).unwrap();
    assert!(done.needs_rebuild.is_empty());
    assert_eq!(done.route.unwrap().endpoints, 2);
    assert_eq!(router.config().cooldown, Duration::from_secs(7));
    assert_eq!(router.status()[0].consecutive_unhealthy, 1);
    assert_eq!(
        handle.config().route.unwrap().cooldown,
        Duration::from_secs(7)
    );
    assert_eq!(done_changed(&handle, |_| {}), Vec::<&str>::new());
    // The keys a running router does not take are listed for a rebuild, the others applied.
    let mut next = handle.config();
    let route = next.route.as_mut().unwrap();
    route.seed += 1;
    route.slow_start = !route.slow_start;
    route.cooldown = Duration::from_secs(3);
    let done = handle.reconfigure(next.clone()).unwrap();
    assert_eq!(done.needs_rebuild, ["route.seed", "route.slow_start"]);
    assert_eq!(done.changed, ["route"]);
    assert_eq!(router.config().cooldown, Duration::from_secs(3));
    // They stay as built, and in force: the handle says so, and the same file read again
    // still lists them, changing nothing.
    let built = config.route.unwrap();
    let in_force = handle.config().route.unwrap();
    assert_eq!(
        (in_force.seed, in_force.slow_start, in_force.cooldown),
        (built.seed, built.slow_start, Duration::from_secs(3))
    );
    let again = handle.reconfigure(next.clone()).unwrap();
    assert_eq!(again.needs_rebuild, ["route.seed", "route.slow_start"]);
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    // The seed alone changes nothing the router takes.
    let mut seed_only = handle.config();
    seed_only.route.as_mut().unwrap().seed += 5;
    let done = handle.reconfigure(seed_only).unwrap();
    assert!(done.changed.is_empty(), "{:?}", done.changed);
    assert_eq!(done.needs_rebuild, ["route.seed"]);
}

/// A stack built without `[route]` reads a file that writes the route's defaults as the same:
/// nothing to rebuild.
#[tokio::test(start_paused = true)]
async fn a_route_section_of_defaults_is_no_change() {
    let (_preset, handle) = config("").build_with_handle().unwrap();
    let mut next = handle.config();
    next.route = Some(palisade_route::RouteConfig::default());
    let done = handle.reconfigure(next).unwrap();
    assert!(done.needs_rebuild.is_empty(), "{:?}", done.needs_rebuild);
    let mut next = handle.config();
    let mut route = palisade_route::RouteConfig::default();
    route.panic_ratio = None;
    next.route = Some(route);
    assert_eq!(handle.reconfigure(next).unwrap().needs_rebuild, ["route"]);
}

/// The keys a reconfigure with `change` applied to the running stack.
fn done_changed(
    handle: &super::PresetHandle,
    change: impl FnOnce(&mut PresetConfig),
) -> Vec<&'static str> {
    let mut next = handle.config();
    change(&mut next);
    handle.reconfigure(next).unwrap().changed
}

/// The result and the event say which live keys changed; a file that changes none says so.
#[tokio::test(start_paused = true)]
async fn a_reconfigure_says_what_changed() {
    let (_preset, handle) = config("").build_with_handle().unwrap();
    let events = palisade_test::Events::start();
    let changed = done_changed(&handle, |c| {
        c.breaker.open_duration = Duration::from_secs(2);
        c.breaker.max_open_duration = Duration::from_secs(2);
        c.retry.budget.ratio = 0.05;
    });
    assert_eq!(changed, ["breaker", "retry.budget.ratio"]);
    let event = events.with_message("preset reconfigured");
    assert_eq!(
        event[0].field("changed"),
        Some("breaker, retry.budget.ratio")
    );
    assert!(
        event[0]
            .field("reset")
            .unwrap()
            .starts_with("changed: breaker, retry.budget.ratio; "),
        "{:?}",
        event[0]
    );
    // The same file again: nothing live changed.
    let done = handle.reconfigure(handle.config()).unwrap();
    assert!(done.changed.is_empty());
    assert!(
        done.to_string().starts_with("nothing live changed; "),
        "{done}"
    );
}
