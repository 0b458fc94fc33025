//! The goals palisade's stack must meet in each scenario, judged from the figures.

use serde::Serialize;

use crate::metrics::Figures;
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

/// One goal and whether the run met it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goal {
    /// The scenario it belongs to.
    pub scenario: ScenarioKind,
    /// What is asked, in words.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Whether the measure meets the goal.
    pub met: bool,
}

/// Judges palisade's figures in `scenario` against its goals and against the other stacks
/// (`runs` holds every stack's figures for this scenario). Nothing is judged when palisade's
/// figures are not among them.
pub fn judge(scenario: &Scenario, runs: &[Figures]) -> Vec<Goal> {
    let Some(pal) = runs.iter().find(|f| f.stack == StackKind::Palisade) else {
        return Vec::new();
    };
    let other = |k: StackKind| runs.iter().find(|f| f.stack == k);
    let p = &scenario.params;
    let mut goals = Vec::new();
    let mut check = |goal: String, measured: String, met: bool| {
        goals.push(Goal {
            scenario: scenario.kind,
            goal,
            measured,
            met,
        });
    };
    let pct = |x: f64| format!("{:.2} %", x * 100.0);
    let opt_ms = |x: Option<f64>| x.map_or("never".to_owned(), |v| format!("{v:.0} ms"));

    match scenario.kind {
        ScenarioKind::Outage => {
            check(
                "≤ 0.10 upstream calls per request during the outage".into(),
                format!("{:.3}", pal.load_fault),
                pal.load_fault <= 0.10,
            );
            check(
                "≥ 99 % success in every 1 s window from 1 s after the recovery".into(),
                opt_ms(pal.recover_ms),
                pal.recover_ms.is_some_and(|r| r <= 1000.0),
            );
            check(
                "no request waits past its deadline".into(),
                format!("{} cut off", pal.cut_off),
                pal.cut_off == 0,
            );
        }
        ScenarioKind::Brownout => {
            let served = pal.served.unwrap_or(0.0);
            let load = pal.load_ramp.unwrap_or(f64::INFINITY);
            check(
                "≥ 95 % of what the returning capacity allowed is served".into(),
                pct(served),
                served >= 0.95,
            );
            check(
                "≤ 1.1 upstream calls per request during the ramp".into(),
                format!("{load:.3}"),
                load <= 1.1,
            );
        }
        ScenarioKind::BadReplica => {
            check(
                "≥ 99.9 % success".into(),
                pct(pal.success),
                pal.success >= 0.999,
            );
            let share = pal.bad_share.unwrap_or(1.0);
            check(
                "≤ 1 % of attempts to the bad replica after detection".into(),
                pal.bad_share.map_or("not detected".to_owned(), pct),
                share <= 0.01,
            );
            check(
                "the replica gets traffic back once healthy, with no active checks".into(),
                opt_ms(pal.returned_ms),
                pal.returned_ms.is_some(),
            );
        }
        ScenarioKind::RateLimit => {
            check(
                "no retry before its hint".into(),
                pal.early_retries.to_string(),
                pal.early_retries == 0,
            );
            let served = pal.served.unwrap_or(0.0);
            check(
                "≥ 98 % of what the limit allows is served".into(),
                pct(served),
                served >= 0.98,
            );
            let hint = p.hint.as_secs_f64() * 1000.0;
            check(
                format!("retries wait their hint: mean wait within 10 % of it ({hint:.0} ms)"),
                opt_ms(pal.hint_wait_ms),
                pal.hint_wait_ms
                    .is_some_and(|m| (m - hint).abs() <= 0.1 * hint),
            );
            check(
                "≤ 1.2 upstream calls per request".into(),
                format!("{:.3}", pal.load),
                pal.load <= 1.2,
            );
            check(
                "429s never open the breaker (no request rejected locally)".into(),
                pal.local.to_string(),
                pal.local == 0,
            );
        }
        ScenarioKind::LatencySpike => {
            check(
                "≥ 99 % success".into(),
                pct(pal.success),
                pal.success >= 0.99,
            );
            let limit = 2.0 * p.attempt_timeout.as_secs_f64() * 1000.0;
            check(
                format!("p99 under twice the attempt timeout ({limit:.0} ms)"),
                format!("{:.0} ms", pal.p99_ms),
                pal.p99_ms < limit,
            );
        }
        ScenarioKind::Flapping => {
            let (start, end) = scenario.fault_window();
            let down = (end - start).as_secs_f64() / 2.0;
            let up = 1.0 - down / p.duration.as_secs_f64();
            check(
                format!("success ≥ the up-time share ({})", pct(up)),
                pct(pal.success),
                pal.success >= up,
            );
        }
        ScenarioKind::Failover => {
            check(
                "≥ 99 % success".into(),
                pct(pal.success),
                pal.success >= 0.99,
            );
            check(
                "traffic on the standby within 1 s of the primary failing".into(),
                opt_ms(pal.detect_ms),
                pal.detect_ms.is_some_and(|d| d <= 1000.0),
            );
        }
        ScenarioKind::Degraded => {
            for k in [StackKind::None, StackKind::Naive] {
                if let Some(o) = other(k) {
                    check(
                        format!("more real answers than {k}"),
                        format!("{} against {}", pct(pal.success), pct(o.success)),
                        pal.success > o.success,
                    );
                }
            }
            if let Some(naive) = other(StackKind::Naive) {
                check(
                    "no more upstream load than naive".into(),
                    format!("{:.3} against {:.3}", pal.load, naive.load),
                    pal.load <= naive.load,
                );
            }
        }
    }
    for o in runs.iter().filter(|f| f.stack != StackKind::Palisade) {
        check(
            format!("success at least {}'s", o.stack),
            format!("{} against {}", pct(pal.success), pct(o.success)),
            pal.success >= o.success,
        );
    }
    if let Some(tower) = other(StackKind::Tower) {
        check(
            "no more upstream load than tower".into(),
            format!("{:.3} against {:.3}", pal.load, tower.load),
            pal.load <= tower.load,
        );
    }
    goals
}
