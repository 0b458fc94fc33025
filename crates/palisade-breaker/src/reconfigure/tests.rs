//! Live reconfiguration, on the paused clock: what is kept, what is reset and said.

use std::time::Duration;

use palisade_core::{BoxError, Category, Class};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::tests::classic;
use crate::*;
use palisade_test::Events;

fn handle(f: impl FnOnce(&mut BreakerConfig)) -> BreakerHandle {
    BreakerLayer::builder("r")
        .config(classic(f))
        .build()
        .unwrap()
        .handle()
}

fn fail(h: &BreakerHandle) {
    let mut p = h.try_acquire().unwrap();
    p.start();
    p.failure(Class::new(Category::Network));
}

fn succeed(h: &BreakerHandle) {
    let mut p = h.try_acquire().unwrap();
    p.start();
    p.success();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stays_open_for_the_period_it_had_and_keeps_its_back_off() {
    // 5 failures open it for 30 s, ×2 per failed probe.
    let h = handle(|_| {});
    for _ in 0..5 {
        fail(&h);
    }
    advance(Duration::from_secs(30)).await;
    fail(&h); // the probe fails: open for 60 s, one re-open
    assert_eq!(h.metrics().reopens, 1);
    advance(Duration::from_secs(10)).await;
    let mut c = h.config();
    c.open_duration = Duration::from_secs(1);
    c.max_open_duration = Duration::from_secs(100);
    c.open_backoff = 3.0;
    let done = h.reconfigure(c).unwrap();
    assert_eq!(done.state, State::Open);
    assert!(done.is_lossless(), "{done}");
    assert_eq!(done.to_string(), "nothing reset");
    let m = h.metrics();
    assert_eq!((m.state, m.reopens), (State::Open, 1));
    assert_eq!(m.retry_after, Some(Duration::from_secs(50)));
    // Still rejecting until the old period ends, then probing.
    advance(Duration::from_millis(49_999)).await;
    assert_eq!(h.try_acquire().unwrap_err().state, State::Open);
    advance(Duration::from_millis(1)).await;
    // The next failed probe uses the new rule and the kept back-off: 1 s × 3² = 9 s.
    fail(&h);
    assert_eq!(h.metrics().reopens, 2);
    assert_eq!(h.metrics().retry_after, Some(Duration::from_secs(9)));
}

#[tokio::test(start_paused = true)]
async fn a_half_full_window_keeps_its_outcomes() {
    let h = handle(|c| {
        c.consecutive_failures = None;
        c.window = Window::Count(20);
        c.failure_rate = Some(Rate::new(0.5, 10));
    });
    for _ in 0..4 {
        fail(&h);
        succeed(&h);
    }
    assert_eq!(h.metrics().window_calls, Some(8));
    let mut c = h.config();
    c.failure_rate = Some(Rate::new(0.5, 10));
    c.open_duration = Duration::from_secs(5);
    c.max_open_duration = Duration::from_secs(5);
    assert!(h.reconfigure(c).unwrap().is_lossless());
    assert_eq!(h.metrics().window_calls, Some(8));
    assert_eq!(h.metrics().failure_ratio, Some(0.5));
    // 9 calls, 5 failures: not yet 10 calls.
    fail(&h);
    assert_eq!(h.state(), State::Closed);
    // The 10th call trips it, counting the outcomes from before the change.
    fail(&h);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.metrics().retry_after, Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn a_changed_window_starts_empty_and_the_event_says_why() {
    let capture = Events::start();
    let h = handle(|c| {
        c.window = Window::Count(20);
        c.failure_rate = Some(Rate::new(0.5, 10));
    });
    for _ in 0..3 {
        fail(&h);
    }
    succeed(&h);
    let mut c = h.config();
    c.window = Window::Time {
        span: Duration::from_secs(10),
        buckets: 10,
    };
    let done = h.reconfigure(c).unwrap();
    let reset = Reset::Window {
        from: Some(Window::Count(20)),
        to: Some(c.window),
        dropped: 4,
    };
    assert_eq!(done.resets, [reset]);
    assert_eq!(h.metrics().window_calls, Some(0));
    // The streak is not the window's: kept.
    assert_eq!(h.metrics().consecutive_failures, 0);
    let events = capture.take();
    let event = events
        .iter()
        .find(|e| e.message() == "breaker reconfigured")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(event.field("breaker"), Some("r"));
    assert_eq!(event.field("state"), Some("closed"));
    let said = event.field("reset").unwrap();
    assert_eq!(said, reset.to_string());
    assert!(said.contains("4 outcomes dropped"), "{said}");
    // No rate rule any more: the window goes too.
    c.failure_rate = None;
    let done = h.reconfigure(c).unwrap();
    assert!(
        matches!(done.resets[..], [Reset::Window { to: None, .. }]),
        "{done:?}"
    );
    assert_eq!(h.metrics().window_calls, None);
    assert!(done.to_string().contains("no rate rule any more"));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_configuration_changes_nothing() {
    let capture = Events::start();
    let h = handle(|_| {});
    for _ in 0..5 {
        fail(&h);
    }
    let before = (h.config(), h.metrics());
    let mut c = h.config();
    c.window = Window::Count(7);
    c.failure_rate = Some(Rate::new(1.5, 5));
    let err = h.reconfigure(c).unwrap_err();
    assert_eq!(err.field(), "failure_rate.ratio");
    assert_eq!((h.config(), h.metrics()), before);
    assert!(
        !capture
            .take()
            .iter()
            .any(|e| e.message() == "breaker reconfigured")
    );
}

#[tokio::test(start_paused = true)]
async fn the_streak_is_kept_and_a_lower_threshold_trips_on_the_next_failure() {
    let h = handle(|c| c.consecutive_failures = Some(10));
    for _ in 0..4 {
        fail(&h);
    }
    let mut c = h.config();
    c.consecutive_failures = Some(3);
    h.reconfigure(c).unwrap();
    // Not on the change itself: on the next failure.
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.metrics().consecutive_failures, 4);
    fail(&h);
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn probes_over_a_lowered_limit_finish_as_they_are() {
    let h = handle(|c| {
        c.half_open_probes = 3;
        c.success_threshold = 3;
    });
    for _ in 0..5 {
        fail(&h);
    }
    advance(Duration::from_secs(30)).await;
    let probes: Vec<_> = (0..3).map(|_| h.try_acquire().unwrap()).collect();
    assert_eq!(h.state(), State::HalfOpen);
    let mut c = h.config();
    c.half_open_probes = 1;
    c.success_threshold = 2;
    let done = h.reconfigure(c).unwrap();
    assert_eq!(done.state, State::HalfOpen);
    assert_eq!(
        done.resets,
        [Reset::ProbesOverLimit {
            in_flight: 3,
            limit: 1
        }]
    );
    assert!(done.to_string().contains("finish as they are"));
    let mut probes = probes.into_iter();
    // Two still in flight: no new probe.
    probes.next().unwrap().success();
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.try_acquire().unwrap_err().state, State::HalfOpen);
    // The second success reaches the new threshold of 2 and closes it.
    probes.next().unwrap().success();
    assert_eq!(h.state(), State::Closed);
    drop(probes);
    // Raising the limit while probing admits more at once.
    for _ in 0..5 {
        fail(&h);
    }
    advance(Duration::from_secs(30)).await;
    let first = h.try_acquire().unwrap();
    assert!(h.try_acquire().is_err());
    c.half_open_probes = 2;
    assert!(h.reconfigure(c).unwrap().is_lossless());
    let second = h.try_acquire().unwrap();
    assert!(h.try_acquire().is_err());
    drop((first, second));
}

#[tokio::test(start_paused = true)]
async fn a_new_window_records_every_success_until_it_is_full() {
    // A window full of successes is quiet: a success then only counts. A new, bigger window
    // is not full, so successes must reach it again.
    let h = handle(|c| {
        c.consecutive_failures = None;
        c.window = Window::Count(4);
        c.failure_rate = Some(Rate::new(0.5, 4));
    });
    for _ in 0..10 {
        succeed(&h);
    }
    assert_eq!(h.metrics().window_calls, Some(4));
    let mut c = h.config();
    c.window = Window::Count(8);
    c.failure_rate = Some(Rate::new(0.5, 8));
    assert_eq!(h.reconfigure(c).unwrap().resets.len(), 1);
    for i in 1..=8 {
        succeed(&h);
        assert_eq!(h.metrics().window_calls, Some(i));
    }
    // Full again; 4 failures of 8 trip it (the successes were all counted).
    for _ in 0..3 {
        fail(&h);
    }
    assert_eq!(h.state(), State::Closed);
    fail(&h);
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_throttle_window_is_kept_resized_or_dropped_and_said() {
    let h = handle(|c| c.throttle = Some(Throttle::new(2.0, 100)));
    for _ in 0..3 {
        fail(&h);
    }
    let mut c = h.config();
    c.throttle = Some(Throttle::new(1.5, 100));
    assert!(h.reconfigure(c).unwrap().is_lossless());
    c.throttle = Some(Throttle::new(1.5, 200));
    assert_eq!(
        h.reconfigure(c).unwrap().resets,
        [Reset::Throttle {
            from: Some(100),
            to: Some(200),
            dropped: 3
        }]
    );
    c.throttle = None;
    let done = h.reconfigure(c).unwrap();
    assert_eq!(
        done.resets,
        [Reset::Throttle {
            from: Some(200),
            to: None,
            dropped: 0
        }]
    );
    assert!(done.to_string().contains("throttle turned off"));
    // Turned on again: a new window, nothing to drop.
    c.throttle = Some(Throttle::new(1.5, 200));
    assert!(h.reconfigure(c).unwrap().is_lossless());
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_rule_added_while_a_call_runs_does_not_judge_that_call() {
    let l = BreakerLayer::builder("slow")
        .config(classic(|c| {
            c.consecutive_failures = None;
            c.window = Window::Count(2);
            c.failure_rate = Some(Rate::new(1.0, 2));
        }))
        .build()
        .unwrap();
    let h = l.handle();
    let mut svc = l.layer(service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_secs(d)).await;
        Ok::<_, BoxError>(())
    }));
    let running = tokio::spawn(svc.ready().await.unwrap().call(5));
    tokio::task::yield_now().await;
    let mut c = h.config();
    c.slow_call_duration = Some(Duration::from_secs(1));
    c.slow_call_rate = Some(Rate::new(1.0, 2));
    h.reconfigure(c).unwrap();
    advance(Duration::from_secs(6)).await;
    running.await.unwrap().unwrap();
    // Started before the rule: its start was not timed, so it is not slow.
    assert_eq!(h.metrics().slow_call_ratio, Some(0.0));
    // Calls started after it are timed.
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(h.metrics().slow_call_ratio, Some(0.5));
    svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(h.metrics().slow_call_ratio, Some(0.5));
}

#[tokio::test(start_paused = true)]
async fn listeners_and_the_name_survive_and_a_new_seed_restarts_the_draws() {
    use std::sync::Mutex;
    struct Log(std::sync::Arc<Mutex<Vec<Event>>>);
    impl Listener for Log {
        fn on_event(&self, _: &str, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    let jittered = |seed| {
        classic(|c| {
            c.consecutive_failures = Some(1);
            c.jitter_ratio = 0.5;
            c.seed = seed;
        })
    };
    let h = BreakerLayer::builder("l")
        .config(jittered(1))
        .listener(Log(log.clone()))
        .build()
        .unwrap()
        .handle();
    h.reconfigure(jittered(7)).unwrap();
    fail(&h);
    let first = h.metrics().retry_after;
    assert_eq!(
        log.lock().unwrap()[..],
        [Event::Transition {
            from: State::Closed,
            to: State::Open
        }]
    );
    // The same seed from a new breaker draws the same period.
    let fresh = handle(|c| *c = jittered(7));
    fail(&fresh);
    assert_eq!(fresh.metrics().retry_after, first);
    assert_eq!(h.name(), "l");
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_reconfigured_now_and_for_keys_that_come_later() {
    let layer = KeyedBreakerLayer::builder("model", |m: &&'static str| *m)
        .config(classic(|_| {}))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: &'static str| async {
        Err::<(), BoxError>("503".into())
    }));
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call("a").await;
    }
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call("b").await;
    }
    let mut c = handle.config();
    c.consecutive_failures = Some(3);
    let err = handle
        .reconfigure(BreakerConfig {
            half_open_probes: 0,
            ..c
        })
        .unwrap_err();
    assert_eq!(err.field(), "half_open_probes");
    assert_eq!(handle.config().consecutive_failures, Some(5));
    let mut done = handle.reconfigure(c).unwrap();
    done.sort_by_key(|(k, _)| *k);
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].0, done[0].1.state), ("a", State::Open));
    assert_eq!((done[1].0, done[1].1.state), ("b", State::Closed));
    // b keeps its streak of 2: the third failure opens it under the new rule.
    let _ = svc.ready().await.unwrap().call("b").await;
    assert_eq!(handle.get(&"b").unwrap().state(), State::Open);
    // A new key starts with the new configuration.
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call("c").await;
    }
    let c_handle = handle.get(&"c").unwrap();
    assert_eq!(c_handle.state(), State::Open);
    assert_eq!(c_handle.config().consecutive_failures, Some(3));
}

#[tokio::test(start_paused = true)]
async fn services_made_before_the_change_use_the_new_rules() {
    let l = BreakerLayer::builder("svc")
        .config(classic(|c| c.consecutive_failures = Some(10)))
        .build()
        .unwrap();
    let h = l.handle();
    let mut svc = l.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>("503".into())
    }));
    let mut clone = svc.clone();
    let mut c = h.config();
    c.consecutive_failures = Some(2);
    h.reconfigure(c).unwrap();
    let _ = svc.ready().await.unwrap().call(()).await;
    let _ = clone.ready().await.unwrap().call(()).await;
    assert_eq!(h.state(), State::Open);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_rule_added_while_a_call_runs_does_not_judge_that_call() {
    let h = handle(|c| c.consecutive_failures = Some(1));
    let mut running = h.try_acquire().unwrap();
    running.start(); // no rule reads durations: its start is not timed
    let mut c = h.config();
    c.cancel = CancelPolicy::FailureAfter(Duration::ZERO);
    h.reconfigure(c).unwrap();
    advance(Duration::from_secs(1)).await;
    // Dropped: under the new rule a cancellation after 0 s is a failure, but this call's
    // duration is unknown, so it is neutral.
    drop(running);
    assert_eq!(h.state(), State::Closed);
    // A call started under the rule is judged by it.
    let mut timed = h.try_acquire().unwrap();
    timed.start();
    drop(timed);
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn several_resets_are_listed_in_order_and_none_is_lossless() {
    let h = handle(|c| {
        c.throttle = Some(Throttle::new(2.0, 100));
        c.failure_rate = Some(Rate::new(0.5, 10));
    });
    fail(&h);
    let mut c = h.config();
    c.window = Window::Count(50);
    c.throttle = Some(Throttle::new(2.0, 50));
    let done = h.reconfigure(c).unwrap();
    assert!(!done.is_lossless());
    assert_eq!(done.resets.len(), 2);
    assert_eq!(
        done.to_string(),
        format!("{}; {}", done.resets[0], done.resets[1])
    );
    assert!(matches!(done.resets[0], Reset::Window { .. }), "{done}");
    assert!(matches!(done.resets[1], Reset::Throttle { .. }), "{done}");
}

#[tokio::test(start_paused = true)]
async fn a_recent_window_keeps_its_outcomes_when_only_its_span_or_minimum_changes() {
    let h = BreakerLayer::new("r").handle();
    // A success, then 2 s later five failures: the last second holds them alone, five of the
    // ten the recent window needs.
    succeed(&h);
    advance(Duration::from_secs(2)).await;
    for _ in 0..5 {
        fail(&h);
    }
    assert_eq!(h.state(), State::Closed);
    let mut c = h.config();
    c.window = Window::Recent {
        calls: 30,
        within: Duration::from_secs(1),
        min_calls: 5,
    };
    let done = h.reconfigure(c).unwrap();
    assert!(done.is_lossless(), "{done}");
    assert_eq!(h.metrics().window_calls, Some(6));
    // Judged with the new minimum: six failures in the last second open it.
    fail(&h);
    assert_eq!(h.state(), State::Open);
    // Another size still starts afresh, and says so.
    c.window = Window::Recent {
        calls: 40,
        within: Duration::from_secs(2),
        min_calls: 5,
    };
    let done = h.reconfigure(c).unwrap();
    assert!(matches!(
        done.resets[..],
        [Reset::Window { dropped: 7, .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_new_throttle_window_starts_its_silence_afresh() {
    let h = BreakerLayer::builder("r")
        .failure_rate(None)
        .throttle(Throttle::new(3.0, 5))
        .build()
        .unwrap()
        .handle();
    succeed(&h);
    let fail_until_not_closed = || {
        for _ in 0..50 {
            if let Ok(mut p) = h.try_acquire() {
                p.start();
                p.failure(Class::new(Category::Network));
            }
            if h.state() != State::Closed {
                break;
            }
        }
    };
    // The throttle's window holds no accepted request: its silence timer starts.
    fail_until_not_closed();
    assert_eq!(h.state(), State::Closed);
    advance(Duration::from_secs(10)).await;
    let mut c = h.config();
    c.throttle = Some(Throttle::new(3.0, 10));
    h.reconfigure(c).unwrap();
    // The new window has been silent for no time at all: it refuses, it does not open.
    fail_until_not_closed();
    assert_eq!(h.state(), State::Closed);
}
