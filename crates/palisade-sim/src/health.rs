//! How `palisade::health`'s monitor reads the scenarios: its false alarms on steady traffic
//! and how soon it sees each fault.
//!
//! The monitor watches the upstream itself (every attempt that reaches a replica, whichever
//! stack sent it) with its default settings and checks once a second of virtual time. A *false
//! alarm* is an anomaly alert (error rate or latency) or an unhealthy check before a fault
//! begins; *detected after* is the time from the fault's start to the first unhealthy check.

use std::fmt::Write as _;
use std::time::Duration;

use palisade::classify::BoxError;
use palisade::health::{DependencySnapshot, HealthMonitor, Status};
use serde::Serialize;

use crate::run::record_with_health;
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

/// How often the monitor checks, in virtual time.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the monitor saw in one run (in JSON, durations in milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthRow {
    /// The run: a scenario's name, or the steady runs' description.
    pub name: String,
    /// Checks made before the fault began (all of them on steady traffic).
    pub steady_checks: usize,
    /// Anomaly alerts raised before the fault began.
    pub false_alarms: usize,
    /// Unhealthy checks before the fault began.
    pub unhealthy_steady: usize,
    /// From the fault's start to the first unhealthy check, if any (none for steady runs);
    /// `detected_after_ms` in JSON.
    #[serde(rename = "detected_after_ms", serialize_with = "opt_ms")]
    pub detected_after: Option<Duration>,
    /// The worst trend status from the fault's start to the run's end.
    pub worst: Status,
}

/// An optional duration in milliseconds, as the rest of the report has them.
fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

impl HealthRow {
    /// Adds a steady run's checks, false alarms and unhealthy checks to this total.
    fn add_steady(&mut self, run: &HealthRow) {
        self.steady_checks += run.steady_checks;
        self.false_alarms += run.false_alarms;
        self.unhealthy_steady += run.unhealthy_steady;
    }
}

/// Measures one run's checks against the fault starting at `fault_start` (`None`: no fault).
pub fn judge(
    name: String,
    checks: &[(Duration, DependencySnapshot)],
    fault_start: Option<Duration>,
) -> HealthRow {
    let steady_end = fault_start.unwrap_or(Duration::MAX);
    let steady: Vec<_> = checks.iter().filter(|(at, _)| *at < steady_end).collect();
    let mut false_alarms = 0;
    let (mut was_error, mut was_latency) = (false, false);
    for (_, c) in &steady {
        false_alarms += usize::from(c.error_anomaly && !was_error);
        false_alarms += usize::from(c.latency_anomaly && !was_latency);
        (was_error, was_latency) = (c.error_anomaly, c.latency_anomaly);
    }
    let unhealthy_steady = steady.iter().filter(|(_, c)| !c.healthy_now).count();
    let during = || checks.iter().filter(|(at, _)| *at >= steady_end);
    let detected_after = fault_start.and_then(|start| {
        during()
            .find(|(_, c)| !c.healthy_now)
            .map(|(at, _)| *at - start)
    });
    let worst = during()
        .map(|(_, c)| c.status)
        .max_by_key(|s| match s {
            Status::Unhealthy => 2,
            Status::Degrading => 1,
            _ => 0,
        })
        .unwrap_or(Status::Unknown);
    HealthRow {
        name,
        steady_checks: steady.len(),
        false_alarms,
        unhealthy_steady,
        detected_after,
        worst: if fault_start.is_some() {
            worst
        } else {
            Status::Unknown
        },
    }
}

/// Steady traffic: 100 requests a second through the palisade stack, latency 40–60 ms, a
/// background failure rate of `noise`, no fault, for `minutes`, seeded with `seed`.
pub fn steady(minutes: u64, noise: f64, seed: u64) -> Scenario {
    let mut s = Scenario::new(ScenarioKind::Outage);
    s.params.duration = Duration::from_secs(minutes * 60);
    s.params.fault_start = s.params.duration;
    s.params.fault_len = Duration::ZERO;
    s.params.noise = noise;
    s.params.seed = seed;
    s
}

/// Runs `seeds` steady runs of `minutes` each (noise 1 %) and every scenario, through the
/// palisade stack, with the monitor watching; one row per scenario and one for all the steady
/// runs together.
///
/// # Errors
/// A run that fails to start.
pub fn evaluate(
    scenarios: &[Scenario],
    minutes: u64,
    seeds: u64,
) -> Result<Vec<HealthRow>, BoxError> {
    let mut rows = Vec::with_capacity(scenarios.len() + 1);
    let mut all = HealthRow {
        name: format!("steady, 1 % errors ({seeds} × {minutes} min)"),
        steady_checks: 0,
        false_alarms: 0,
        unhealthy_steady: 0,
        detected_after: None,
        worst: Status::Unknown,
    };
    for seed in 1..=seeds {
        let scenario = steady(minutes, 0.01, seed);
        let (_, checks) = record_with_health(
            &scenario,
            StackKind::Palisade,
            &HealthMonitor::new(),
            CHECK_EVERY,
        )?;
        all.add_steady(&judge(String::new(), &checks, None));
    }
    rows.push(all);
    for scenario in scenarios {
        let (_, checks) = record_with_health(
            scenario,
            StackKind::Palisade,
            &HealthMonitor::new(),
            CHECK_EVERY,
        )?;
        // The checks of the run itself, the one at its end included (it reads the run's last
        // second): after it, only the trailing traffic's last retries reach the upstream, and
        // what the monitor makes of them is not the fault's doing.
        let end = scenario.params.duration;
        let checks: Vec<_> = checks.into_iter().filter(|(at, _)| *at <= end).collect();
        // A run without a fault (`--fault-len 0`) has nothing to detect.
        let fault = scenario.has_fault().then_some(scenario.fault_window().0);
        rows.push(judge(scenario.kind.name().to_owned(), &checks, fault));
    }
    Ok(rows)
}

/// The rows as a text table, with the false-alarm rate per hour of steady checks.
pub fn table(rows: &[HealthRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "health monitor (palisade::health, default settings, checks every {} s on the upstream's attempts, palisade stack)\n",
        CHECK_EVERY.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<36} {:>13} {:>12} {:>10} {:>14} {:>12}",
        "run", "steady checks", "false alarms", "per hour", "detected after", "worst"
    );
    for r in rows {
        let hours = r.steady_checks as f64 * CHECK_EVERY.as_secs_f64() / 3600.0;
        let per_hour = if hours > 0.0 {
            format!("{:.2}", r.false_alarms as f64 / hours)
        } else {
            "-".to_owned()
        };
        let detected = match (r.detected_after, r.worst) {
            (Some(d), _) => format!("{:.0} s", d.as_secs_f64()),
            (None, Status::Unknown) => "-".to_owned(),
            (None, _) => "never".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<36} {:>13} {:>12} {:>10} {:>14} {:>12}",
            r.name,
            r.steady_checks,
            format!("{} ({} unh.)", r.false_alarms, r.unhealthy_steady),
            per_hour,
            detected,
            if r.worst == Status::Unknown {
                "-".to_owned()
            } else {
                r.worst.to_string()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In JSON a row's delay is in milliseconds, as the rest of the report's durations are;
    /// none is `null`.
    #[test]
    fn a_row_in_json_has_its_delay_in_milliseconds() {
        let mut row = HealthRow {
            name: "outage".to_owned(),
            steady_checks: 10,
            false_alarms: 1,
            unhealthy_steady: 2,
            detected_after: Some(Duration::from_millis(1500)),
            worst: Status::Unhealthy,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({
                "name": "outage",
                "steady_checks": 10,
                "false_alarms": 1,
                "unhealthy_steady": 2,
                "detected_after_ms": 1500.0,
                "worst": "unhealthy",
            })
        );
        row.detected_after = None;
        assert!(serde_json::to_value(&row).unwrap()["detected_after_ms"].is_null());
    }

    /// Two minutes of steady traffic with 1 % errors raise no alarm, and an outage is seen
    /// within two checks of its start.
    #[test]
    fn steady_traffic_is_quiet_and_an_outage_is_seen_at_once() {
        let (_, checks) = record_with_health(
            &steady(2, 0.01, 7),
            StackKind::Palisade,
            &HealthMonitor::new(),
            CHECK_EVERY,
        )
        .unwrap();
        let row = judge("steady".into(), &checks, None);
        assert_eq!(
            row.steady_checks,
            120 + 10,
            "two minutes and the trailing deadline"
        );
        assert_eq!((row.false_alarms, row.unhealthy_steady), (0, 0), "{row:?}");

        let outage = Scenario::new(ScenarioKind::Outage);
        let (_, checks) = record_with_health(
            &outage,
            StackKind::Palisade,
            &HealthMonitor::new(),
            CHECK_EVERY,
        )
        .unwrap();
        let row = judge("outage".into(), &checks, Some(outage.fault_window().0));
        assert_eq!(row.false_alarms, 0, "{row:?}");
        let seen = row.detected_after.expect("the outage is detected");
        assert!(seen <= 2 * CHECK_EVERY, "{seen:?}");
        assert_ne!(row.worst, Status::Healthy);
        assert!(table(&[row]).contains("outage"));
    }

    #[test]
    fn evaluation_sums_the_steady_runs_and_judges_each_scenario() {
        let mut outage = Scenario::new(ScenarioKind::Outage);
        outage.params.duration = Duration::from_secs(20);
        let rows = evaluate(&[outage], 1, 2).unwrap();
        assert_eq!(rows.len(), 2);
        let steady = &rows[0];
        assert_eq!(steady.name, "steady, 1 % errors (2 × 1 min)");
        assert_eq!(
            steady.steady_checks,
            2 * (60 + 10),
            "two runs of a minute and a deadline"
        );
        assert_eq!((steady.false_alarms, steady.unhealthy_steady), (0, 0));
        assert_eq!(
            (steady.detected_after, steady.worst),
            (None, Status::Unknown)
        );
        let outage = &rows[1];
        assert_eq!(outage.name, "outage");
        assert_eq!(
            outage.steady_checks, 9,
            "the checks at 1 s to 9 s, before the fault"
        );
        assert!(outage.detected_after.is_some_and(|d| d <= 2 * CHECK_EVERY));
        assert!(
            matches!(outage.worst, Status::Degrading | Status::Unhealthy),
            "{outage:?}"
        );
    }

    #[test]
    fn a_scenario_is_judged_on_its_own_run_and_a_run_without_a_fault_on_nothing() {
        // The rate limit, its fault, lasts the whole run by default (and the trailing traffic
        // after it); only the last retries of the trailing traffic, after the run, were ever
        // flagged ("detected after 51 s" of a 40 s run, worst "healthy").
        let limited = Scenario::new(ScenarioKind::RateLimit);
        let mut quiet = Scenario::new(ScenarioKind::Degraded);
        quiet.params.fault_len = Duration::ZERO;
        let rows = evaluate(&[limited.clone(), quiet], 1, 1).unwrap();
        let limit = &rows[1];
        assert!(
            limit
                .detected_after
                .is_none_or(|d| d < limited.params.duration),
            "{limit:?}"
        );
        let quiet = &rows[2];
        assert_eq!((quiet.detected_after, quiet.worst), (None, Status::Unknown));
        let table = table(&rows);
        let line = table.lines().find(|l| l.starts_with("degraded")).unwrap();
        assert!(line.ends_with("-            -"), "{line}");
        // The check at the run's very end is the run's: an outage in its last second is seen.
        let mut late = Scenario::new(ScenarioKind::Outage);
        late.params.duration = late.params.fault_start + CHECK_EVERY;
        let late = evaluate(&[late], 1, 1).unwrap();
        assert_eq!(late[1].detected_after, Some(CHECK_EVERY), "{:?}", late[1]);
    }

    #[test]
    fn steady_totals_add_every_count() {
        let row = |steady_checks, false_alarms, unhealthy_steady| HealthRow {
            name: String::new(),
            steady_checks,
            false_alarms,
            unhealthy_steady,
            detected_after: None,
            worst: Status::Unknown,
        };
        let mut all = row(10, 2, 3);
        all.add_steady(&row(5, 3, 4));
        assert_eq!(all, row(15, 5, 7));
    }

    #[test]
    fn the_table_gives_false_alarms_per_hour_and_when_each_fault_was_seen() {
        let row = |name: &str, steady_checks, detected_after, worst| HealthRow {
            name: name.to_owned(),
            steady_checks,
            false_alarms: 3,
            unhealthy_steady: 1,
            detected_after,
            worst,
        };
        let rows = [
            row("steady", 7_200, None, Status::Unknown),
            row(
                "outage",
                0,
                Some(Duration::from_millis(2_400)),
                Status::Unhealthy,
            ),
            row("missed", 30, None, Status::Degrading),
        ];
        expect_test::expect![[r#"
            health monitor (palisade::health, default settings, checks every 1 s on the upstream's attempts, palisade stack)

            run                                  steady checks false alarms   per hour detected after        worst
            steady                                        7200   3 (1 unh.)       1.50              -            -
            outage                                           0   3 (1 unh.)          -            2 s    unhealthy
            missed                                          30   3 (1 unh.)     360.00          never    degrading
        "#]]
        .assert_eq(&table(&rows));
    }

    #[test]
    fn judging_reads_each_kind_of_alarm_and_the_worst_status() {
        let snap = |healthy_now: bool, error: bool, latency: bool, status: Status| {
            let monitor = HealthMonitor::new();
            let _ = monitor.watch("x");
            let mut s = monitor.check().dependency("x").unwrap().clone();
            s.healthy_now = healthy_now;
            s.error_anomaly = error;
            s.latency_anomaly = latency;
            s.status = status;
            s
        };
        let s = |n: u64| Duration::from_secs(n);
        let checks = vec![
            // Before the fault: an error anomaly from the first check, a latency anomaly for
            // one check, one unhealthy check of three.
            (s(1), snap(true, true, false, Status::Healthy)),
            (s(2), snap(false, false, true, Status::Healthy)),
            (s(3), snap(true, false, false, Status::Healthy)),
            // The fault from 10 s: seen unhealthy at 12 s; the worst status is the unhealthy
            // one, though a degrading one comes after it.
            (s(10), snap(true, false, false, Status::Healthy)),
            (s(12), snap(false, false, false, Status::Unhealthy)),
            (s(13), snap(false, false, false, Status::Degrading)),
        ];
        let row = judge("x".into(), &checks, Some(s(10)));
        assert_eq!(row.steady_checks, 3);
        assert_eq!(row.false_alarms, 2, "one error and one latency anomaly");
        assert_eq!(row.unhealthy_steady, 1);
        assert_eq!(row.detected_after, Some(s(2)));
        assert_eq!(row.worst, Status::Unhealthy);
        // Without a fault, nothing is "during" it.
        let row = judge("x".into(), &checks, None);
        assert_eq!((row.steady_checks, row.unhealthy_steady), (6, 3));
        assert_eq!((row.detected_after, row.worst), (None, Status::Unknown));
    }

    #[test]
    fn judging_counts_alarm_starts_not_checks() {
        let snap = |healthy_now: bool, error_anomaly: bool| {
            let monitor = HealthMonitor::new();
            let _ = monitor.watch("x");
            let mut s = monitor.check().dependency("x").unwrap().clone();
            s.healthy_now = healthy_now;
            s.error_anomaly = error_anomaly;
            s
        };
        let s = |n: u64| Duration::from_secs(n);
        let checks = vec![
            (s(1), snap(true, false)),
            (s(2), snap(false, true)),
            (s(3), snap(false, true)),
            (s(4), snap(true, false)),
            (s(5), snap(false, false)),
            (s(6), snap(false, true)),
        ];
        let row = judge("x".into(), &checks, Some(s(5)));
        assert_eq!(row.steady_checks, 4);
        assert_eq!(row.false_alarms, 1, "one anomaly that lasted two checks");
        assert_eq!(row.unhealthy_steady, 2);
        assert_eq!(row.detected_after, Some(Duration::ZERO));
    }
}
