//! Loom models of a feature's state transitions: the automatic off (a failure crossing the
//! limit, a failed probe) and a successful probe, each racing an operator's turn on or off.
//!
//! `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=/work/target-fallback-loom cargo test -p palisade-fallback --lib --release loom`

use std::time::Duration;

use loom::thread;
use palisade_core::{Category, Class};
use tokio::time::Instant;

use super::*;

const COOLDOWN: Duration = Duration::from_secs(30);

/// Every interleaving with up to two preemptions: each race these models check needs at most
/// two (checked by reintroducing each bug they guard against), and the unbounded search of the
/// failure window's buckets takes minutes.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(2);
    builder.check(f);
}

fn failure() -> Option<Class> {
    Some(Class::new(Category::ServerError))
}

/// A feature that turns itself off after `limit` failures, built at `now`. Its failure window
/// has one bucket rather than ten: the window's own concurrency is modelled in
/// palisade-core, and the feature's transitions do not depend on the bucket count.
fn feature(limit: u32, now: Instant) -> Feature {
    let config = FeatureConfig {
        failures_to_turn_off: Some(limit),
        cooldown: COOLDOWN,
        ..FeatureConfig::default()
    };
    let failures = ErrorStats::builder()
        .window(config.window)
        .buckets(1)
        .build(now)
        .unwrap();
    Feature::new("f", config, now, failures)
}

/// Turns `f` off by `limit` failures of calls let through at `now`; the ticket they had.
fn turn_off_by_failures(f: &Feature, limit: u32, now: Instant) -> Ticket {
    let ticket = f.admit().unwrap();
    for _ in 0..limit {
        f.outcome_at(failure(), ticket, now);
    }
    assert!(matches!(f.state_at(now), FeatureState::AutoOff { .. }));
    ticket
}

/// The probe's ticket, once the cool-down is over.
fn probe(f: &Feature, now: Instant) -> Ticket {
    let ticket = f.admit_probe(f.inner.load(), now + COOLDOWN).unwrap();
    assert!(ticket.is_probe());
    ticket
}

/// A failure of a call let through before the operator turned the feature back on, racing
/// the turn on: the feature ends on, with at most that one failure counted.
#[test]
fn loom_a_late_failure_racing_a_turn_on_leaves_it_on() {
    model(|| {
        let now = Instant::now();
        let f = feature(2, now);
        let ticket = turn_off_by_failures(&f, 2, now);
        let late = f.clone();
        let th = thread::spawn(move || late.outcome_at(failure(), ticket, now));
        f.turn_on();
        th.join().unwrap();
        assert_eq!(f.state_at(now), FeatureState::On);
        assert!(f.inner.failures.total(now) <= 1);
    });
}

/// A call let through as soon as the operator turns the feature back on fails: it counts
/// alone, so it cannot turn the feature off again with the failures from before.
#[test]
fn loom_a_call_after_a_turn_on_sees_a_clean_record() {
    model(|| {
        let now = Instant::now();
        let f = feature(2, now);
        turn_off_by_failures(&f, 2, now);
        let caller = f.clone();
        let th = thread::spawn(move || {
            if let Some(ticket) = caller.admit() {
                caller.outcome_at(failure(), ticket, now);
            }
        });
        f.turn_on();
        th.join().unwrap();
        assert_eq!(f.state_at(now), FeatureState::On);
        assert!(f.inner.failures.total(now) <= 1);
    });
}

/// A failure that crosses the limit, racing an operator's turn off: the manual off stays.
#[test]
fn loom_the_automatic_off_never_overrides_a_manual_off() {
    model(|| {
        let now = Instant::now();
        let f = feature(2, now);
        let ticket = f.admit().unwrap();
        f.outcome_at(failure(), ticket, now);
        let failing = f.clone();
        let th = thread::spawn(move || failing.outcome_at(failure(), ticket, now));
        f.turn_off();
        th.join().unwrap();
        assert_eq!(f.state_at(now), FeatureState::TurnedOff);
    });
}

/// A failed probe racing a turn on: the feature ends on, and the probe slot is free.
#[test]
fn loom_a_failed_probe_racing_a_turn_on_leaves_it_on() {
    model(|| {
        let now = Instant::now();
        let f = feature(1, now);
        turn_off_by_failures(&f, 1, now);
        let ticket = probe(&f, now);
        let prober = f.clone();
        let th = thread::spawn(move || prober.outcome_at(failure(), ticket, now + COOLDOWN));
        f.turn_on();
        th.join().unwrap();
        assert_eq!(f.state_at(now), FeatureState::On);
        assert_eq!(f.inner.probing.load(Ordering::Acquire), 0);
    });
}

/// A successful probe racing a turn on: on once (one new epoch), with a clean record.
#[test]
fn loom_a_successful_probe_racing_a_turn_on_turns_it_on_once() {
    model(|| {
        let now = Instant::now();
        let f = feature(1, now);
        let before = turn_off_by_failures(&f, 1, now).epoch;
        let ticket = probe(&f, now);
        let prober = f.clone();
        let th = thread::spawn(move || prober.outcome_at(None, ticket, now + COOLDOWN));
        f.turn_on();
        th.join().unwrap();
        let word = f.inner.load();
        assert_eq!((word.state(), word.epoch()), (ON, before + 1));
        assert_eq!(f.inner.failures.total(now), 0);
        assert_eq!(f.inner.probing.load(Ordering::Acquire), 0);
    });
}

/// Two calls after the cool-down: exactly one is the probe.
#[test]
fn loom_one_probe_at_a_time() {
    model(|| {
        let now = Instant::now();
        let f = feature(1, now);
        turn_off_by_failures(&f, 1, now);
        let other = f.clone();
        let th = thread::spawn(move || {
            other
                .admit_probe(other.inner.load(), now + COOLDOWN)
                .is_some()
        });
        let mine = f.admit_probe(f.inner.load(), now + COOLDOWN).is_some();
        let theirs = th.join().unwrap();
        assert!(mine ^ theirs, "mine {mine}, theirs {theirs}");
    });
}

/// A probe ending after its hold (60 s, the default), racing a call that finds the hold over:
/// the probe is counted as failed exactly once, the cool-down runs from the end of its hold,
/// and the slot is free unless that call took it as the next probe (possible when it read
/// the state before the failure was counted, as after any failed probe).
#[test]
fn loom_a_timed_out_probe_is_counted_once() {
    model(|| {
        let now = Instant::now();
        let f = feature(1, now);
        turn_off_by_failures(&f, 1, now);
        let ticket = probe(&f, now);
        let late = now + COOLDOWN + FeatureConfig::default().probe_timeout;
        let prober = f.clone();
        let th = thread::spawn(move || prober.outcome_at(None, ticket, late));
        let next = f.admit_probe(f.inner.load(), late);
        th.join().unwrap();
        // The failure that turned it off is out of the window by now: this one is the probe's.
        assert_eq!(f.inner.failures.total(late), 1);
        assert_eq!(
            f.state_at(late),
            FeatureState::AutoOff {
                retry_after: COOLDOWN
            }
        );
        assert_eq!(
            f.inner.probing.load(Ordering::Acquire),
            next.and_then(|t| t.hold).map_or(0, Hold::bits)
        );
    });
}
