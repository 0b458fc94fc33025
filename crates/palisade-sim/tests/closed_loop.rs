//! Closed-loop traffic (`Params::clients`): each client sends its next request once the last
//! one has its answer, as an agent calling from a loop does.

use std::time::Duration;

use palisade_sim::record::Log;
use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::StackKind;

fn closed(kind: ScenarioKind, clients: usize, rate: f64) -> Scenario {
    let mut s = Scenario::new(kind);
    s.params.clients = Some(clients);
    s.params.rate = rate;
    s
}

/// The most requests in flight at once.
fn most_at_once(log: &Log) -> usize {
    let mut edges: Vec<(Duration, i32)> = log
        .requests
        .iter()
        .flat_map(|r| [(r.sent, 1), (r.sent + r.latency, -1)])
        .collect();
    // At the same instant an answer comes before the next request it lets go.
    edges.sort();
    edges
        .iter()
        .scan(0, |n, &(_, d)| {
            *n += d;
            Some(*n)
        })
        .max()
        .unwrap_or(0) as usize
}

#[test]
fn each_client_has_one_request_at_a_time_and_keeps_to_the_rate() {
    for clients in [1, 3, 20] {
        let s = closed(ScenarioKind::Outage, clients, 10.0);
        let none = palisade_sim::run::record(&s, StackKind::None).unwrap();
        // No protection answers at once, failed or not: the clients send at the rate.
        assert_eq!(none.requests.len(), 400, "{clients} clients");
        assert!(most_at_once(&none) <= clients, "{clients} clients");
        // naive holds a client through its retries: fewer requests, never more at once.
        let naive = palisade_sim::run::record(&s, StackKind::Naive).unwrap();
        assert!(naive.requests.len() < 400, "{clients} clients");
        assert_eq!(most_at_once(&naive), clients, "{clients} clients");
    }
}

#[test]
fn closed_loop_runs_are_reproducible() {
    let scenarios = [closed(ScenarioKind::Flapping, 4, 10.0)];
    let run = || {
        palisade_sim::run_all(&scenarios, &StackKind::ALL, |_, _| {})
            .unwrap()
            .json()
            .unwrap()
    };
    let first = run();
    assert!(first.contains("\"clients\": 4"), "the parameters say so");
    assert_eq!(first, run());
}

/// One caller sending its next request only once the last is answered, through a 10 s
/// outage: the request held when the upstream recovers is answered soon after, not at its
/// deadline. The retry budget's throttle, refilled only by successes, would hold it to its
/// deadline without the probe it lets through every 250 ms.
#[test]
fn a_lone_caller_held_through_an_outage_is_answered_soon_after_the_recovery() {
    let s = closed(ScenarioKind::Outage, 1, 10.0);
    let (_, recovery) = s.fault_window();
    let log = palisade_sim::run::record(&s, StackKind::Palisade).unwrap();
    let held = log
        .requests
        .iter()
        .find(|r| r.sent < recovery && r.sent + r.latency >= recovery)
        .expect("a request is in flight when the upstream recovers");
    assert!(held.ok, "{held:?}");
    let answered = held.sent + held.latency - recovery;
    assert!(answered < Duration::from_secs(1), "{held:?}");
    let figures = palisade_sim::metrics::measure(&s, StackKind::Palisade, &log);
    assert!(figures.max_ms < 5_000.0, "{}", figures.max_ms);
}
