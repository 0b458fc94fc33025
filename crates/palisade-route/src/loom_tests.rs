//! Loom models of an endpoint's health: the compare-and-swap on its packed health word, racing
//! failures, successes, checks and ejections, and the epoch that tells picks a change happened.
//!
//! `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom cargo test -p palisade-route --lib --release loom`
//!
//! Every update of the health word is one `fetch_update` of a pure function of the old value
//! ([`Health`]), so concurrent signals must leave exactly the health of one of their
//! sequential orders: nothing lost, nothing applied twice.

use std::sync::Arc;

use loom::sync::Arc as LoomArc;
use loom::thread;
use palisade_core::sync::atomic::{AtomicU64, Ordering};
use palisade_core::{Category, Class};
use tokio::time::Instant;

use crate::endpoint::EndpointState;
use crate::health::Health;
use crate::{HealthConfig, HealthState, RouteConfig};

/// Degraded after 2 unhealthy signals, failed after 3, back after 2 healthy ones: small enough
/// that a few racing signals cross every threshold.
fn cfg() -> RouteConfig {
    RouteConfig {
        health: HealthConfig {
            degraded_after: 2,
            failed_after: 3,
            min_healthy_checks: 2,
            ..HealthConfig::default()
        },
        ..RouteConfig::default()
    }
}

fn endpoint(health: Health) -> (LoomArc<EndpointState>, Arc<AtomicU64>) {
    let epoch = Arc::new(AtomicU64::new(0));
    let state = EndpointState::new(
        0,
        "e".into(),
        health,
        crate::endpoint::live(cfg()),
        Instant::now(),
        epoch.clone(),
    );
    (LoomArc::new(state), epoch)
}

fn failure() -> Class {
    Class::new(Category::ServerError)
}

/// One signal, as the router applies it.
#[derive(Clone, Copy, Debug)]
enum Signal {
    /// A call failed (`on_failure`).
    Failure,
    /// A call succeeded (`on_success`: no write while settled healthy).
    Success,
    /// An active check passed (`on_check`).
    Check,
    /// Outlier ejection (`eject`).
    Eject,
}

impl Signal {
    /// Applies it to the endpoint, at instant `NOW`.
    fn apply(self, s: &EndpointState) {
        let cfg = cfg();
        match self {
            Signal::Failure => s.on_failure(failure(), &cfg, NOW),
            Signal::Success => s.on_success(0, || NOW),
            Signal::Check => s.on_check(true, &cfg, NOW, 1_000),
            Signal::Eject => {
                s.eject(&cfg, NOW);
            }
        }
    }

    /// What it does to a health value alone: the sequential reference.
    fn next(self, h: Health) -> Health {
        let cfg = cfg();
        match self {
            Signal::Failure => h.on_outcome(false, &cfg, NOW),
            Signal::Success if h.is_settled_healthy() => h,
            Signal::Success => h.on_outcome(true, &cfg, NOW),
            Signal::Check => h.on_check(true, &cfg, NOW),
            Signal::Eject => h.eject(&cfg, NOW).0,
        }
    }
}

const NOW: u64 = 1_000;

/// The healths that the signals, applied one after the other in some order, leave.
fn sequential(start: Health, signals: &[Signal]) -> Vec<Health> {
    let mut out = Vec::new();
    let n = signals.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Every permutation (Heap's algorithm, iteratively).
    let mut c = vec![0; n];
    let mut i = 0;
    let run = |order: &[usize]| order.iter().fold(start, |h, &k| signals[k].next(h));
    out.push(run(&order));
    while i < n {
        if c[i] < i {
            order.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
            out.push(run(&order));
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    out
}

/// Races `signals`, one thread each, from `start`; asserts the health left is that of one of
/// their sequential orders, and returns the endpoint for more checks.
fn race(start: Health, signals: &[Signal]) -> (LoomArc<EndpointState>, Arc<AtomicU64>) {
    let (state, epoch) = endpoint(start);
    let handles: Vec<_> = signals
        .iter()
        .map(|&signal| {
            let state = state.clone();
            thread::spawn(move || signal.apply(&state))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let end = state.health();
    let allowed = sequential(start, signals);
    assert!(
        allowed.contains(&end),
        "{signals:?} from {start:?} left {end:?}, not one of {allowed:?}"
    );
    (state, epoch)
}

/// A healthy endpoint failed `n` times in a row.
fn failed(n: usize) -> Health {
    let cfg = cfg();
    (0..n).fold(Health::HEALTHY, |h, _| h.on_outcome(false, &cfg, 0))
}

#[test]
fn loom_racing_failures_are_all_counted() {
    loom::model(|| {
        let (state, epoch) = race(Health::HEALTHY, &[Signal::Failure, Signal::Failure]);
        let cfg = cfg();
        // Both counted: degraded (2 in a row), both in the interval and in a row, and each
        // told the picks (the epoch).
        assert_eq!(state.health().consecutive(), (0, 2));
        assert_eq!(
            state.health().state(&cfg.health, NOW, true),
            HealthState::Degraded
        );
        assert_eq!(state.consecutive_failures(), 2);
        assert_eq!(state.take_interval(), (0, 2));
        assert_eq!(epoch.load(Ordering::Acquire), 2);
    });
}

#[test]
fn loom_a_recovery_racing_a_failure_is_one_of_the_two_orders() {
    loom::model(|| {
        // Failed (three in a row): a passing check starts its recovery while a call that was
        // in flight fails.
        let start = failed(3);
        let (state, epoch) = race(start, &[Signal::Check, Signal::Failure]);
        assert_eq!(epoch.load(Ordering::Acquire), 2);
        assert_eq!(state.last_check(), Some(NOW));
    });
}

#[test]
fn loom_a_success_racing_two_failures_is_one_of_their_orders() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        // Degraded after one failure more: the success may skip its write (settled) or not.
        let (state, _) = race(
            Health::HEALTHY,
            &[Signal::Success, Signal::Failure, Signal::Failure],
        );
        // The failure counter is reset by a success without a compare-and-swap: a failure
        // racing that reset may be forgotten (it delays an ejection by one failure at most),
        // never counted twice.
        assert!(state.consecutive_failures() <= 2);
        assert_eq!(state.take_interval(), (1, 2));
    });
}

#[test]
fn loom_an_ejection_racing_a_failure_is_one_of_the_two_orders() {
    loom::model(|| {
        let (state, _) = race(failed(1), &[Signal::Eject, Signal::Failure]);
        assert_eq!(state.ejections(), 1);
        assert_eq!(state.ejected_until(), NOW + 30_000);
    });
}

#[test]
fn loom_a_pick_that_sees_the_new_epoch_sees_the_new_health() {
    loom::model(|| {
        let (state, epoch) = endpoint(failed(1));
        let writer = {
            let state = state.clone();
            thread::spawn(move || Signal::Failure.apply(&state))
        };
        // A pick loads the epoch, then reads health (as `sync` and the scan do).
        let seen = epoch.load(Ordering::Acquire);
        let health = state.health();
        if seen == 1 {
            assert_eq!(health, Signal::Failure.next(failed(1)));
        }
        writer.join().unwrap();
    });
}

/// An endpoint as the pick sees it, for `eject_due`.
struct Listed(LoomArc<EndpointState>);

impl AsRef<EndpointState> for Listed {
    fn as_ref(&self) -> &EndpointState {
        &self.0
    }
}

#[test]
fn loom_two_clones_ejecting_at_once_keep_to_the_cap() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        // Two endpoints, each due for ejection (five failures in a row), and a cap of one:
        // two router clones picking on two threads eject one at most, never both, and never
        // one twice.
        let cfg = RouteConfig::default();
        let endpoints: LoomArc<[Listed; 2]> = LoomArc::new([
            Listed(endpoint(Health::HEALTHY).0),
            Listed(endpoint(Health::HEALTHY).0),
        ]);
        for e in endpoints.iter() {
            for _ in 0..5 {
                e.0.on_failure(failure(), &cfg, NOW);
            }
        }
        let clones: Vec<_> = (0..2)
            .map(|_| {
                let endpoints = endpoints.clone();
                thread::spawn(move || {
                    crate::pick::eject_due(&endpoints[..], &RouteConfig::default(), NOW)
                })
            })
            .collect();
        for clone in clones {
            clone.join().unwrap();
        }
        let ejected = endpoints.iter().filter(|e| e.0.ejected_at(NOW)).count();
        assert!(ejected <= 1, "{ejected} ejected, over the cap of one");
        assert!(endpoints.iter().all(|e| e.0.ejections() <= 1));
    });
}
