//! A deterministic simulator: what a resilience stack does under a fault, before it ships.
//!
//! Each [scenario](scenario::ScenarioKind) sends open-loop traffic (every request at its time,
//! whatever happened to the others, each on its own task with its own clone of the stack and
//! its own deadline) to one or more upstream replicas whose faults are injected with
//! [`palisade::chaos`]: an outage, a bad replica, a rate limit, a latency spike, flapping, a
//! brownout, a failover, a degraded upstream. The same traffic goes through several
//! [stacks](stack::StackKind): none, a naive retry loop, tower's own layers, and palisade's
//! preset. With [`Params::clients`](scenario::Params::clients) (`--clients N`) the traffic is
//! closed loop instead: N clients, each sending its next request once the last is answered, as
//! agents calling from a loop do. Runs take place on tokio's paused clock with seeded randomness, so a 40 s scenario
//! takes a fraction of a second of real time and the same seed gives the same figures, byte for
//! byte.
//!
//! `cargo run --release -p palisade-sim` runs every scenario on every stack and prints one
//! table, then palisade's goals, judged ([`goals`]), and whether another stack outdid palisade
//! anywhere by answering more requests at no more upstream load ([`goals::outdone`]); `--json`
//! prints the whole report as JSON and `--svg DIR` draws a chart per scenario. `--sweep` runs
//! every scenario again with other seeds and with its rate, fault length and capacity moved by
//! half again either way, and says of each goal in how many of these variants it held, and of
//! palisade in how many another stack outdid it ([`sweep`]).
//!
//! # Example
//!
//! ```
//! use palisade_sim::scenario::{Scenario, ScenarioKind};
//! use palisade_sim::stack::StackKind;
//!
//! let mut outage = Scenario::new(ScenarioKind::Outage);
//! outage.params.duration = std::time::Duration::from_secs(20);
//! let none = palisade_sim::run(&outage, StackKind::None)?;
//! // Without protection, every request sent during the outage fails...
//! assert_eq!(none.success_fault, Some(0.0));
//! // ...and each of them reached the upstream once.
//! assert!(none.load_fault.is_some_and(|load| (load - 1.0).abs() < 0.01));
//! # Ok::<(), palisade::BoxError>(())
//! ```
//!
//! # What is measured
//!
//! See [`metrics::Figures`]: success overall, during the fault and after it; upstream calls per
//! request; latency percentiles; time to detect the fault and to recover from it; the share of
//! attempts that still went to a bad replica; retries sent before the server's hint; calls
//! served against the capacity the upstream had; and, in the JSON, how the requests that were
//! not answered ended ([`metrics::Unanswered`]: cut off at the deadline, or the class of the
//! error the stack returned, with the attempts each sent and their mean latency).

pub mod goals;
pub mod health;
pub mod metrics;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stack;
pub mod sweep;

pub use run::run;

/// A request of the simulated traffic: its number, which the upstream sees. It is `Clone`
/// but not `Copy`, as real requests are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Req {
    /// The request's number, from 0 in the order sent.
    pub id: u64,
}

/// The upstream's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply;

use palisade::classify::BoxError;
use report::Report;
use scenario::Scenario;
use stack::StackKind;

/// Runs every scenario on every stack, calling `progress` after each run with how many are
/// done of how many, and judges palisade's goals. The runs are spread over the machine's
/// cores; the report is the same whatever order they finish in.
///
/// # Errors
/// The first run that fails to start (invalid parameters or configuration).
pub fn run_all(
    scenarios: &[Scenario],
    stacks: &[StackKind],
    mut progress: impl FnMut(usize, usize),
) -> Result<Report, BoxError> {
    let jobs: Vec<(&Scenario, StackKind)> = scenarios
        .iter()
        .flat_map(|s| stacks.iter().map(move |&stack| (s, stack)))
        .collect();
    let runs = run::run_each(&jobs, &mut progress)?;
    let goals = scenarios
        .iter()
        .zip(runs.chunks(stacks.len().max(1)))
        .flat_map(|(scenario, these)| goals::judge(scenario, these))
        .collect();
    Ok(Report {
        scenarios: scenarios.to_vec(),
        runs,
        goals,
        health: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scenario::ScenarioKind;

    #[test]
    fn run_all_reports_progress_and_keeps_scenario_order() {
        let short = |kind| {
            let mut s = Scenario::new(kind);
            s.params.duration = std::time::Duration::from_secs(15);
            s
        };
        // Three scenarios on two stacks: the total is a product (3 × 2, not 3 + 2).
        let scenarios = [
            short(ScenarioKind::Outage),
            short(ScenarioKind::Flapping),
            short(ScenarioKind::Degraded),
        ];
        let mut seen = Vec::new();
        let report = run_all(
            &scenarios,
            &[StackKind::None, StackKind::Palisade],
            |d, t| {
                seen.push((d, t));
            },
        )
        .unwrap();
        assert_eq!(seen, [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]);
        let order: Vec<_> = report.runs.iter().map(|f| (f.scenario, f.stack)).collect();
        assert_eq!(
            order,
            [
                (ScenarioKind::Outage, StackKind::None),
                (ScenarioKind::Outage, StackKind::Palisade),
                (ScenarioKind::Flapping, StackKind::None),
                (ScenarioKind::Flapping, StackKind::Palisade),
                (ScenarioKind::Degraded, StackKind::None),
                (ScenarioKind::Degraded, StackKind::Palisade),
            ]
        );
        assert_eq!(report.scenarios, scenarios);
        // palisade's goals, judged for each scenario in turn.
        assert_eq!(
            report.goals.first().map(|g| g.scenario),
            Some(ScenarioKind::Outage)
        );
        assert_eq!(
            report.goals.last().map(|g| g.scenario),
            Some(ScenarioKind::Degraded)
        );
    }
}
