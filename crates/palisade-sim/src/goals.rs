//! The goals palisade's stack must meet in each scenario, judged from the figures.
//!
//! A goal whose subject the run does not hold — decided from the scenario's parameters, not
//! from what palisade did: no fault (`--fault-len 0`), a fault that lasts to the end of the
//! run (no recovery to time), no brownout ramp, a rate limit at or above the request rate or
//! one that allows no call (a capacity of 0), a window of the run (the fault, the ramp) in
//! which the traffic's rate sent no request — is listed as `n/a` with the reason and counted neither as met nor as missed, so that a
//! "what if" run does not report misses of things that never happened.
//!
//! Where several palisade stacks run side by side (the built-in one and stacks from
//! configuration files, `--stack FILE.toml`), each is judged on its own, against the goals'
//! bounds and against the stacks that are not palisade's (none, naive, tower); palisade's
//! stacks are not compared with one another. Each goal names the stack it judged.
//!
//! A miss of another stack's success that no stack could close without more upstream load
//! than tower's (which every scenario also caps palisade at) says so after its measure, with
//! the least load it would take: in `degraded`, whose faults strike each call on its own, an
//! answer costs calls at a price `none`'s run measures (see `least_load`).

use serde::Serialize;

use crate::metrics::Figures;
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

/// One goal and whether the run met it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goal {
    /// The scenario it belongs to.
    pub scenario: ScenarioKind,
    /// The palisade stack it judged: the built-in one or a file's.
    pub stack: StackKind,
    /// What is asked, in words.
    pub goal: String,
    /// What was measured: palisade's figure against the bound or the other stack's; a
    /// missed comparison of success also gives both stacks' upstream calls per request.
    pub measured: String,
    /// Whether the measure meets the goal; `None` where the run holds nothing to judge it
    /// on (no fault to detect or recover from, a limit that never binds, a ramp of no
    /// length), decided from the scenario's parameters, with the reason in `measured`. Such
    /// a goal counts neither as met nor as missed.
    pub met: Option<bool>,
}

/// Collects the goals of one scenario.
struct Judged {
    scenario: ScenarioKind,
    stack: StackKind,
    goals: Vec<Goal>,
}

impl Judged {
    /// A goal judged: `met` says whether `measured` meets it.
    fn check(&mut self, goal: String, measured: String, met: bool) {
        self.push(goal, measured, Some(met));
    }

    /// A goal `check`ed where `applies`, and otherwise listed as not applicable, `why`.
    fn check_if(&mut self, applies: bool, why: &str, goal: String, measured: String, met: bool) {
        if applies {
            self.check(goal, measured, met);
        } else {
            self.push(goal, why.to_owned(), None);
        }
    }

    fn push(&mut self, goal: String, measured: String, met: Option<bool>) {
        self.goals.push(Goal {
            scenario: self.scenario,
            stack: self.stack,
            goal,
            measured,
            met,
        });
    }
}

/// Judges each palisade stack's figures in `scenario` (the built-in stack's and each file's,
/// in the order of `runs`) against its goals and against the stacks that are not palisade's
/// (`runs` holds every stack's figures for this scenario). Nothing is judged when no palisade
/// stack's figures are among them.
pub fn judge(scenario: &Scenario, runs: &[Figures]) -> Vec<Goal> {
    let others: Vec<&Figures> = runs.iter().filter(|f| !f.stack.is_palisade()).collect();
    runs.iter()
        .filter(|f| f.stack.is_palisade())
        .flat_map(|pal| judge_one(scenario, pal, &others))
        .collect()
}

/// Judges one palisade stack's figures, `pal`, against its goals and against `others`.
fn judge_one(scenario: &Scenario, pal: &Figures, others: &[&Figures]) -> Vec<Goal> {
    let other = |k: StackKind| others.iter().copied().find(|f| f.stack == k);
    let p = &scenario.params;
    let mut j = Judged {
        scenario: scenario.kind,
        stack: pal.stack,
        goals: Vec::new(),
    };
    // What the scenario's parameters leave to judge: a fault inside the run, an end to it
    // inside the run (the scenarios whose goals time a recovery have none past the run's
    // end), a ramp inside the run.
    let fault = scenario.has_fault();
    // A fault in which requests were sent (at a rate too low for its length, none is), and why
    // there is nothing to judge when not.
    let sent_in_fault = fault && pal.success_fault.is_some();
    let not_sent = if fault { NO_REQUEST } else { NO_FAULT };
    let ends = fault && scenario.fault_window().1 < p.duration;
    let recovers = fault && scenario.recovery_at().is_some();
    // A recovery inside the run with no request sent from it on has nothing to time
    // (`recovered` is `None` then, and only then, for such a recovery).
    let timed = recovers && pal.recovered.is_some();
    let (ramp_start, ramp_end) = scenario.ramp();
    let ramp = ramp_start < ramp_end.min(p.duration);
    let no_end = if fault {
        "the fault lasts to the end of the run"
    } else {
        NO_FAULT
    };
    let no_recovery = if recovers {
        NO_REQUEST
    } else if ends {
        "the run ends within a second of the fault's end"
    } else {
        no_end
    };
    let opt_ms = |x: Option<f64>| x.map_or("never".to_owned(), |v| format!("{v:.0} ms"));
    // A miss of another stack's success that no stack could close within tower's load, which
    // every scenario also asks palisade to stay under: said after the measure.
    let out_of_reach = |o: &Figures, ok: bool| -> String {
        let (Some(none), Some(tower)) = (other(StackKind::None), other(StackKind::Tower)) else {
            return String::new();
        };
        match least_load(scenario, none, o.success * o.requests as f64) {
            Some((load, p)) if !ok && load > tower.load => format!(
                "; out of reach at tower's load: {}'s answers need ≥ {load:.2} calls/req \
                 (p = {p:.3} per call in the fault)",
                o.stack
            ),
            _ => String::new(),
        }
    };

    match scenario.kind {
        ScenarioKind::Outage => {
            let load = pal.load_fault.unwrap_or(f64::INFINITY);
            j.check_if(
                sent_in_fault && pal.load_fault.is_some(),
                not_sent,
                "≤ 0.10 upstream calls per request during the outage".into(),
                format!("{load:.3}"),
                load <= 0.10,
            );
            j.check_if(
                timed,
                no_recovery,
                "≥ 99 % success in every 1 s window from 1 s after the recovery".into(),
                opt_ms(pal.recover_ms),
                pal.recover_ms.is_some_and(|r| r <= 1000.0),
            );
            j.check(
                "no request waits past its deadline".into(),
                format!("{} cut off", pal.cut_off),
                pal.cut_off == 0,
            );
        }
        ScenarioKind::Brownout => {
            let served = pal.served.unwrap_or(0.0);
            let load = pal.load_ramp.unwrap_or(f64::INFINITY);
            let (applies, why) = match pal.served {
                _ if !ramp => (false, NO_RAMP),
                None => (false, "the ramp is too short to allow one call"),
                Some(_) => (true, ""),
            };
            j.check_if(
                applies,
                why,
                "≥ 95 % of what the returning capacity allowed is served".into(),
                pct(served),
                served >= 0.95,
            );
            let (applies, why) = match pal.load_ramp {
                _ if !ramp => (false, NO_RAMP),
                None => (false, NO_REQUEST),
                Some(_) => (true, ""),
            };
            j.check_if(
                applies,
                why,
                "≤ 1.1 upstream calls per request during the ramp".into(),
                format!("{load:.3}"),
                load <= 1.1,
            );
        }
        ScenarioKind::BadReplica => {
            j.check(
                "≥ 99.9 % success".into(),
                pct(pal.success),
                pal.success >= 0.999,
            );
            // Detected, and no attempt at all until the fault's end: none to the bad replica.
            let (share, measured) = match (pal.bad_share, pal.detect_ms) {
                (Some(share), _) => (share, pct(share)),
                (None, Some(_)) => (0.0, "no attempt after detection".to_owned()),
                (None, None) => (1.0, "not detected".to_owned()),
            };
            j.check_if(
                sent_in_fault,
                not_sent,
                "≤ 1 % of attempts to the bad replica after detection".into(),
                measured,
                share <= 0.01,
            );
            j.check_if(
                ends,
                no_end,
                "the replica gets traffic back once healthy, with no active checks".into(),
                opt_ms(pal.returned_ms),
                pal.returned_ms.is_some(),
            );
        }
        ScenarioKind::RateLimit => {
            // Without a limit there is no 429 and no hint to retry early against.
            j.check_if(
                fault,
                NO_FAULT,
                "no retry before its hint".into(),
                pal.early_retries.to_string(),
                pal.early_retries == 0,
            );
            let served = pal.served.unwrap_or(0.0);
            // A limit of 0 calls a second allows none: nothing to serve a share of.
            let (applies, why) = if !fault {
                (false, NO_FAULT)
            } else if p.capacity <= 0.0 {
                (false, "the limit allows no call (a capacity of 0)")
            } else {
                (true, "")
            };
            j.check_if(
                applies,
                why,
                "≥ 98 % of what the limit allows is served".into(),
                pct(served),
                served >= 0.98,
            );
            let hint = p.hint.as_secs_f64() * 1000.0;
            // A limit at or above the request rate may still refuse a burst; with no retry
            // waiting for a hint as well, there is nothing to judge. Nor with a hint as long
            // as the deadline: a retry that waited it would come too late, so none should.
            let (applies, why) = if !fault {
                (false, NO_FAULT)
            } else if p.hint >= p.deadline {
                (
                    pal.hint_wait_ms.is_some(),
                    "the hint is as long as the deadline, and no retry waited for it",
                )
            } else {
                (
                    scenario.total_capacity() < p.rate || pal.hint_wait_ms.is_some(),
                    "the limit is at or above the request rate, and no retry waited for a hint",
                )
            };
            j.check_if(
                applies,
                why,
                format!("retries wait their hint: mean wait within 10 % of it ({hint:.0} ms)"),
                opt_ms(pal.hint_wait_ms),
                pal.hint_wait_ms
                    .is_some_and(|m| (m - hint).abs() <= 0.1 * hint),
            );
            j.check(
                "≤ 1.2 upstream calls per request".into(),
                format!("{:.3}", pal.load),
                pal.load <= 1.2,
            );
            j.check_if(
                fault,
                NO_FAULT,
                "429s never open the breaker (no request rejected locally)".into(),
                pal.local.to_string(),
                pal.local == 0,
            );
        }
        ScenarioKind::LatencySpike => {
            j.check(
                "≥ 99 % success".into(),
                pct(pal.success),
                pal.success >= 0.99,
            );
            // The attempt timeout of the stack judged: the scenario's for the built-in stack,
            // the file's own for a stack file (which ignores the scenario's).
            let timeout = match pal.stack {
                StackKind::File(file) => file.config().attempt_timeout.limit,
                _ => p.attempt_timeout,
            };
            let limit = 2.0 * timeout.as_secs_f64() * 1000.0;
            j.check(
                format!("p99 under twice the attempt timeout ({limit:.0} ms)"),
                format!("{:.0} ms", pal.p99_ms),
                pal.p99_ms < limit,
            );
        }
        ScenarioKind::Flapping => {
            let down = scenario.flapping_down().as_secs_f64();
            let up = 1.0 - down / p.duration.as_secs_f64();
            j.check(
                format!("success ≥ the up-time share ({})", pct(up)),
                pct(pal.success),
                pal.success >= up,
            );
        }
        ScenarioKind::Failover => {
            j.check(
                "≥ 99 % success".into(),
                pct(pal.success),
                pal.success >= 0.99,
            );
            j.check_if(
                sent_in_fault,
                not_sent,
                "traffic on the standby within 1 s of the primary failing".into(),
                opt_ms(pal.standby_ms),
                pal.standby_ms.is_some_and(|d| d <= 1000.0),
            );
        }
        ScenarioKind::Degraded => {
            // Without a degradation every stack answers every request with one call: nothing
            // to tell them apart by.
            for k in [StackKind::None, StackKind::Naive] {
                if let Some(o) = other(k) {
                    let ok = pal.success > o.success;
                    j.check_if(
                        fault,
                        NO_FAULT,
                        format!("more real answers than {k}"),
                        versus(pal, o, ok) + &out_of_reach(o, ok),
                        ok,
                    );
                }
            }
            if let Some(naive) = other(StackKind::Naive) {
                j.check_if(
                    fault,
                    NO_FAULT,
                    "no more upstream load than naive".into(),
                    format!("{:.3} against {:.3}", pal.load, naive.load),
                    pal.load <= naive.load,
                );
            }
        }
    }
    for o in others {
        let ok = pal.success >= o.success;
        j.check(
            format!("success at least {}'s", o.stack),
            versus(pal, o, ok) + &out_of_reach(o, ok),
            ok,
        );
    }
    if let Some(tower) = other(StackKind::Tower) {
        j.check(
            "no more upstream load than tower".into(),
            format!("{:.3} against {:.3}", pal.load, tower.load),
            pal.load <= tower.load,
        );
    }
    j.goals
}

/// A stack that is not palisade's and did better than a palisade stack on both counts in one
/// scenario: it answered more requests, at no more upstream load (calls per request).
///
/// This is not one of the goals (each of which palisade meets or misses on its own terms):
/// it says whether a miss of "success at least X's" was bought with load. A stack that
/// answers more only by calling more is a different trade, not a better stack; one that
/// answers more for the same load or less outdoes palisade outright.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outdone {
    /// The scenario.
    pub scenario: ScenarioKind,
    /// The palisade stack outdone.
    pub stack: StackKind,
    /// The stack that outdid it.
    pub by: StackKind,
    /// Both stacks' success and upstream calls per request.
    pub measured: String,
}

/// Each palisade stack's runs in `scenario` (among `runs`, every stack's figures for it)
/// outdone by a stack that is not palisade's: one with more requests answered at no more
/// upstream load. Empty where none was, or where no palisade stack ran.
pub fn outdone(scenario: &Scenario, runs: &[Figures]) -> Vec<Outdone> {
    let (pal, others): (Vec<&Figures>, Vec<&Figures>) =
        runs.iter().partition(|f| f.stack.is_palisade());
    pal.iter()
        .flat_map(|p| {
            others
                .iter()
                .filter(|o| o.success > p.success && o.load <= p.load)
                .map(|o| Outdone {
                    scenario: scenario.kind,
                    stack: p.stack,
                    by: o.stack,
                    measured: versus(p, o, false),
                })
        })
        .collect()
}

/// The fewest upstream calls per request with which any stack could answer `answers` of the
/// run's requests, and the chance `p` of an answer per call it is priced at; `None` unless
/// the fault strikes each call on its own ([`Scenario::faults_each_call_alone`]) and the
/// `none` stack's run (`none`: one call per request) measured that chance.
///
/// The requests whose whole deadline lies inside the fault (those sent in the whole seconds
/// from the fault's start to its end less the deadline) can be answered only by calls made
/// during it, each answering with the chance `p` that `none`'s answers to them measure, so in
/// expectation each of their answers costs `1 / p` calls. Every other request costs at
/// least the one call that answers it, and they are counted first: a lower bound. For
/// `degraded` at the defaults, `p` is 0.44 (0.98 × 0.9 × 0.5: no hang, no 429, no 503).
fn least_load(scenario: &Scenario, none: &Figures, answers: f64) -> Option<(f64, f64)> {
    if !scenario.faults_each_call_alone() || none.requests == 0 {
        return None;
    }
    let (start, end) = scenario.fault_window();
    let last = end.checked_sub(scenario.params.deadline)?.as_secs_f64();
    let first = start.as_secs_f64().ceil();
    let (sent, ok) = none
        .series
        .iter()
        .filter(|s| f64::from(s.t) >= first && f64::from(s.t) + 1.0 <= last)
        .fold((0_usize, 0_usize), |(sent, ok), s| {
            (sent + s.sent as usize, ok + s.ok as usize)
        });
    if ok == 0 {
        return None;
    }
    let p = ok as f64 / sent as f64;
    let rest = none.requests.saturating_sub(sent) as f64;
    let calls = answers.min(rest) + (answers - rest).max(0.0) / p;
    Some((calls / none.requests as f64, p))
}

/// Why a goal about the fault has nothing to judge.
const NO_FAULT: &str = "no fault in this run";
/// Why a goal about the brownout's ramp has nothing to judge.
const NO_RAMP: &str = "no ramp in this run";
/// Why a goal about a window of the run has nothing to judge: no request was sent in it.
const NO_REQUEST: &str = "no request was sent in it (too low a rate)";

/// A share as a percentage with two decimals.
fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// palisade's success against `other`'s; where palisade's is lower (`ok` false), with both
/// loads too (upstream calls per request), so that a miss shows what the other stack spent
/// on its lead.
fn versus(pal: &Figures, other: &Figures, ok: bool) -> String {
    let success = format!("{} against {}", pct(pal.success), pct(other.success));
    if ok {
        success
    } else {
        format!(
            "{success}, at {:.2} against {:.2} calls/req",
            pal.load, other.load
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Figures of `stack` in `kind` that meet no goal by accident: everything zero or `None`.
    pub(crate) fn figures(kind: ScenarioKind, stack: StackKind) -> Figures {
        Figures {
            scenario: kind,
            stack,
            requests: 0,
            success: 0.0,
            success_fault: Some(0.0),
            success_after: None,
            load_fault: Some(0.0),
            load: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            detect_ms: None,
            standby_ms: None,
            recover_ms: None,
            recovered: None,
            bad_share: None,
            cut_off: 0,
            local: 0,
            early_retries: 0,
            served: None,
            load_ramp: None,
            retried_ms: None,
            hint_wait_ms: None,
            hint_ms: None,
            returned_ms: None,
            unanswered: Vec::new(),
            series: Vec::new(),
        }
    }

    #[test]
    fn palisade_is_outdone_only_by_more_success_at_no_more_load() {
        let k = ScenarioKind::Degraded;
        let run = |stack: StackKind, success: f64, load: f64| Figures {
            success,
            load,
            ..figures(k, stack)
        };
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("mine", config));
        let runs = [
            run(StackKind::None, 0.5, 1.0),
            run(StackKind::Naive, 0.9, 1.7),
            run(StackKind::Tower, 0.7, 1.2),
            run(StackKind::Palisade, 0.6, 1.2),
            run(file, 0.65, 1.19),
        ];
        let found: Vec<_> = outdone(&Scenario::new(k), &runs)
            .into_iter()
            .map(|o| (o.stack, o.by, o.measured))
            .collect();
        // Tower answered more at the same load: palisade is outdone. Naive's lead was bought
        // with load and none answered less; the file's stack is judged on its own, its load
        // under tower's, and palisade's stacks are not compared with each other.
        assert_eq!(
            found,
            [(
                StackKind::Palisade,
                StackKind::Tower,
                "60.00 % against 70.00 %, at 1.20 against 1.20 calls/req".to_owned()
            )]
        );
        // Equal success is not more.
        let tie = [
            run(StackKind::Tower, 0.6, 1.0),
            run(StackKind::Palisade, 0.6, 1.2),
        ];
        assert!(outdone(&Scenario::new(k), &tie).is_empty());
        // Without palisade, nothing to judge.
        assert!(outdone(&Scenario::new(k), &runs[..3]).is_empty());
    }

    /// Palisade's goals in `kind`, judged on `pal` alone: (measured, met) per goal.
    fn judged(kind: ScenarioKind, pal: &Figures) -> Vec<(String, bool)> {
        judge(&Scenario::new(kind), std::slice::from_ref(pal))
            .into_iter()
            .map(|g| {
                assert_eq!(g.scenario, kind);
                let met = g
                    .met
                    .expect("the default parameters leave every goal to judge");
                (g.measured, met)
            })
            .collect()
    }

    fn met(kind: ScenarioKind, pal: &Figures) -> Vec<bool> {
        judged(kind, pal).into_iter().map(|(_, m)| m).collect()
    }

    fn names(kind: ScenarioKind, runs: &[Figures]) -> Vec<String> {
        judge(&Scenario::new(kind), runs)
            .into_iter()
            .map(|g| g.goal)
            .collect()
    }

    /// (goal, measured, met) of palisade's goals in `s`, judged on `pal` alone.
    fn verdicts(s: &Scenario, pal: &Figures) -> Vec<(String, String, Option<bool>)> {
        judge(s, std::slice::from_ref(pal))
            .into_iter()
            .map(|g| (g.goal, g.measured, g.met))
            .collect()
    }

    #[test]
    fn a_goal_with_nothing_to_judge_in_the_run_is_neither_met_nor_missed() {
        let no_fault = |kind| {
            let mut s = Scenario::new(kind);
            s.params.fault_len = Duration::ZERO;
            s
        };
        let na = |v: &(String, String, Option<bool>), why: &str| {
            assert_eq!((v.1.as_str(), v.2), (why, None), "{}", v.0);
        };
        // Outage: no outage, nothing to measure during it or to recover from; the deadline
        // is judged still.
        let k = ScenarioKind::Outage;
        let v = verdicts(&no_fault(k), &figures(k, StackKind::Palisade));
        na(&v[0], "no fault in this run");
        na(&v[1], "no fault in this run");
        assert_eq!(v[2].2, Some(true));
        // An outage that lasts to the end: measured during it, no recovery to judge.
        let mut s = Scenario::new(k);
        s.params.fault_len = s.params.duration;
        let v = verdicts(&s, &figures(k, StackKind::Palisade));
        assert_eq!(v[0].2, Some(true), "0 calls during the outage");
        na(&v[1], "the fault lasts to the end of the run");
        // An outage that ends in the run's last second: no 1 s window left to time the
        // recovery over.
        s.params.fault_len = s.params.duration - s.params.fault_start - Duration::from_millis(500);
        let v = verdicts(&s, &figures(k, StackKind::Palisade));
        na(&v[1], "the run ends within a second of the fault's end");
        // A bad replica's return is still judged there.
        let k = ScenarioKind::BadReplica;
        let mut s = Scenario::new(k);
        s.params.fault_len = s.params.duration - s.params.fault_start - Duration::from_millis(500);
        let v = verdicts(&s, &figures(k, StackKind::Palisade));
        assert_eq!(v[2].2, Some(false));
        // Bad replica, failover: nothing fails, nothing to detect.
        let k = ScenarioKind::BadReplica;
        let v = verdicts(&no_fault(k), &figures(k, StackKind::Palisade));
        assert_eq!(v[0].2, Some(false), "success is judged");
        na(&v[1], "no fault in this run");
        na(&v[2], "no fault in this run");
        let k = ScenarioKind::Failover;
        let v = verdicts(&no_fault(k), &figures(k, StackKind::Palisade));
        assert_eq!(v[0].2, Some(false));
        na(&v[1], "no fault in this run");
        // Brownout: no ramp, no capacity returning.
        let k = ScenarioKind::Brownout;
        let mut s = no_fault(k);
        s.params.ramp = Duration::ZERO;
        let v = verdicts(&s, &figures(k, StackKind::Palisade));
        na(&v[0], "no ramp in this run");
        na(&v[1], "no ramp in this run");
        // With a ramp and no outage before it, the ramp is judged.
        let mut pal = figures(k, StackKind::Palisade);
        pal.load_ramp = Some(1.5);
        pal.served = Some(0.5);
        let v = verdicts(&no_fault(k), &pal);
        assert_eq!((v[0].2, v[1].2), (Some(false), Some(false)));
        // A ramp too short to allow one call has nothing to serve against.
        pal.served = None;
        let v = verdicts(&no_fault(k), &pal);
        na(&v[0], "the ramp is too short to allow one call");
        assert_eq!(v[1].2, Some(false));
        pal.served = Some(0.5);
        // A ramp in which no request was sent (too low a rate) has no load to judge.
        pal.load_ramp = None;
        let v = verdicts(&no_fault(k), &pal);
        assert_eq!(v[0].2, Some(false));
        na(&v[1], "no request was sent in it (too low a rate)");
        // Rate limit without a limit: no 429, no hint, nothing to open the breaker; only the
        // load is judged.
        let k = ScenarioKind::RateLimit;
        let v = verdicts(&no_fault(k), &figures(k, StackKind::Palisade));
        for i in [0, 1, 2, 4] {
            na(&v[i], "no fault in this run");
        }
        assert_eq!(v[3].2, Some(true), "{v:?}");
        // Rate limit: a limit at the request rate and no hinted retry leave the hint
        // unjudged; one hinted retry, or a limit below the rate, and it is judged.
        let mut s = Scenario::new(k);
        s.params.capacity = s.params.rate;
        let mut pal = figures(k, StackKind::Palisade);
        let v = verdicts(&s, &pal);
        na(
            &v[2],
            "the limit is at or above the request rate, and no retry waited for a hint",
        );
        pal.hint_wait_ms = Some(2000.0);
        assert_eq!(verdicts(&s, &pal)[2].2, Some(false));
        pal.hint_wait_ms = None;
        s.params.capacity = s.params.rate - 0.1;
        assert_eq!(verdicts(&s, &pal)[2].2, Some(false));
        // A hint as long as the deadline: no retry can wait it and still be answered, so
        // none waiting is nothing to judge; one that waited is judged.
        s.params.hint = s.params.deadline;
        na(
            &verdicts(&s, &pal)[2],
            "the hint is as long as the deadline, and no retry waited for it",
        );
        s.params.hint = s.params.deadline - Duration::from_millis(1);
        assert_eq!(verdicts(&s, &pal)[2].2, Some(false));
        s.params.hint = s.params.deadline;
        pal.hint_wait_ms = Some(10_000.0);
        assert_eq!(verdicts(&s, &pal)[2].2, Some(true));
    }

    /// A limit of 0 calls a second allows nothing: "≥ 98 % of what the limit allows is
    /// served" has nothing to judge (it read a miss of 0.00 %); the goals that do not
    /// depend on what was allowed are still judged.
    #[test]
    fn a_limit_that_allows_no_call_leaves_its_share_unjudged() {
        let k = ScenarioKind::RateLimit;
        let mut s = Scenario::new(k);
        s.params.capacity = 0.0;
        let mut pal = figures(k, StackKind::Palisade);
        pal.served = None;
        pal.load = 1.1;
        let v = verdicts(&s, &pal);
        assert_eq!(v[1].0, "≥ 98 % of what the limit allows is served");
        assert_eq!(
            (v[1].1.as_str(), v[1].2),
            ("the limit allows no call (a capacity of 0)", None)
        );
        assert_eq!(v[0].2, Some(true), "no retry before its hint");
        assert_eq!(v[3].2, Some(true), "the load");
    }

    #[test]
    fn nothing_is_judged_without_palisade() {
        let kind = ScenarioKind::Outage;
        let runs = [
            figures(kind, StackKind::None),
            figures(kind, StackKind::Tower),
        ];
        assert!(judge(&Scenario::new(kind), &runs).is_empty());
    }

    /// Each palisade stack, built-in or from a file, is judged on its own against the stacks
    /// that are not palisade's, never against another palisade stack; each goal names its
    /// stack, in the order of the runs.
    #[test]
    fn several_palisade_stacks_are_each_judged_against_the_others() {
        let kind = ScenarioKind::Outage;
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("classic", config));
        let mut none = figures(kind, StackKind::None);
        none.success = 0.5;
        let mut pal = figures(kind, StackKind::Palisade);
        pal.success = 0.6;
        let mut from_file = figures(kind, file);
        from_file.success = 0.4;
        let runs = [none, from_file, pal];
        let goals = judge(&Scenario::new(kind), &runs);
        let stacks: Vec<_> = goals.iter().map(|g| g.stack).collect();
        let half = goals.len() / 2;
        assert!(half > 0);
        assert_eq!(stacks[..half], vec![file; half][..]);
        assert_eq!(stacks[half..], vec![StackKind::Palisade; half][..]);
        let versus: Vec<_> = goals
            .iter()
            .filter(|g| g.goal.starts_with("success at least"))
            .map(|g| (g.stack, g.goal.as_str(), g.met))
            .collect();
        assert_eq!(
            versus,
            [
                (file, "success at least none's", Some(false)),
                (StackKind::Palisade, "success at least none's", Some(true)),
            ]
        );
        // The same goals, in the same order, for each.
        let words = |s: StackKind| -> Vec<_> {
            goals
                .iter()
                .filter(|g| g.stack == s)
                .map(|g| g.goal.clone())
                .collect()
        };
        assert_eq!(words(file), words(StackKind::Palisade));
    }

    #[test]
    fn outage_goals_and_their_edges() {
        let k = ScenarioKind::Outage;
        let mut pal = figures(k, StackKind::Palisade);
        pal.load_fault = Some(0.1);
        (pal.recover_ms, pal.recovered) = (Some(1000.0), Some(true));
        assert_eq!(
            judged(k, &pal),
            [
                ("0.100".to_owned(), true),
                ("1000 ms".to_owned(), true),
                ("0 cut off".to_owned(), true),
            ]
        );
        pal.load_fault = Some(0.1001);
        pal.recover_ms = Some(1000.5);
        pal.cut_off = 2;
        assert_eq!(
            judged(k, &pal),
            [
                ("0.100".to_owned(), false),
                ("1000 ms".to_owned(), false),
                ("2 cut off".to_owned(), false),
            ]
        );
        (pal.recover_ms, pal.recovered) = (None, Some(false));
        assert_eq!(judged(k, &pal)[1], ("never".to_owned(), false));
        // No request sent from the recovery on: nothing to time, not "never".
        pal.recovered = None;
        let goals = judge(&Scenario::new(k), std::slice::from_ref(&pal));
        assert_eq!(
            (goals[1].measured.as_str(), goals[1].met),
            (NO_REQUEST, None)
        );
    }

    #[test]
    fn brownout_goals_and_their_edges() {
        let k = ScenarioKind::Brownout;
        let mut pal = figures(k, StackKind::Palisade);
        // Nothing served.
        pal.served = Some(0.0);
        pal.load_ramp = Some(f64::INFINITY);
        assert_eq!(
            judged(k, &pal),
            [("0.00 %".to_owned(), false), ("inf".to_owned(), false)]
        );
        pal.served = Some(0.95);
        pal.load_ramp = Some(1.1);
        assert_eq!(
            judged(k, &pal),
            [("95.00 %".to_owned(), true), ("1.100".to_owned(), true)]
        );
        pal.served = Some(0.9499);
        pal.load_ramp = Some(1.1001);
        assert_eq!(met(k, &pal), [false, false]);
    }

    #[test]
    fn bad_replica_goals_and_their_edges() {
        let k = ScenarioKind::BadReplica;
        let mut pal = figures(k, StackKind::Palisade);
        pal.success = 0.999;
        pal.bad_share = Some(0.01);
        pal.returned_ms = Some(1234.4);
        assert_eq!(
            judged(k, &pal),
            [
                ("99.90 %".to_owned(), true),
                ("1.00 %".to_owned(), true),
                ("1234 ms".to_owned(), true),
            ]
        );
        pal.success = 0.9989;
        pal.bad_share = Some(0.0101);
        pal.returned_ms = None;
        assert_eq!(met(k, &pal), [false, false, false]);
        // Never detected: every attempt may have gone to it.
        pal.bad_share = None;
        assert_eq!(judged(k, &pal)[1], ("not detected".to_owned(), false));
    }

    #[test]
    fn rate_limit_goals_and_their_edges() {
        let k = ScenarioKind::RateLimit;
        assert_eq!(Scenario::new(k).params.hint.as_millis(), 1000);
        let mut pal = figures(k, StackKind::Palisade);
        pal.served = Some(0.98);
        pal.hint_wait_ms = Some(1100.0);
        pal.load = 1.2;
        assert_eq!(
            judged(k, &pal),
            [
                ("0".to_owned(), true),
                ("98.00 %".to_owned(), true),
                ("1100 ms".to_owned(), true),
                ("1.200".to_owned(), true),
                ("0".to_owned(), true),
            ]
        );
        assert_eq!(
            names(k, std::slice::from_ref(&pal))[2],
            "retries wait their hint: mean wait within 10 % of it (1000 ms)"
        );
        pal.hint_wait_ms = Some(900.0);
        assert!(met(k, &pal)[2]);
        for wait in [Some(899.9), Some(1100.1), None] {
            pal.hint_wait_ms = wait;
            assert!(!met(k, &pal)[2], "{wait:?}");
        }
        pal.early_retries = 1;
        pal.served = Some(0.9799);
        pal.load = 1.2001;
        pal.local = 3;
        assert_eq!(
            judged(k, &pal),
            [
                ("1".to_owned(), false),
                ("97.99 %".to_owned(), false),
                ("never".to_owned(), false),
                ("1.200".to_owned(), false),
                ("3".to_owned(), false),
            ]
        );
        pal.served = None;
        assert_eq!(judged(k, &pal)[1], ("0.00 %".to_owned(), false));
    }

    #[test]
    fn latency_spike_goals_and_their_edges() {
        let k = ScenarioKind::LatencySpike;
        assert_eq!(Scenario::new(k).params.attempt_timeout.as_millis(), 1000);
        let mut pal = figures(k, StackKind::Palisade);
        pal.success = 0.99;
        pal.p99_ms = 1999.9;
        assert_eq!(
            judged(k, &pal),
            [("99.00 %".to_owned(), true), ("2000 ms".to_owned(), true)]
        );
        assert_eq!(
            names(k, std::slice::from_ref(&pal))[1],
            "p99 under twice the attempt timeout (2000 ms)"
        );
        pal.success = 0.9899;
        pal.p99_ms = 2000.0;
        assert_eq!(met(k, &pal), [false, false]);
        // The limit follows the attempt timeout.
        let mut s = Scenario::new(k);
        s.params.attempt_timeout = Duration::from_millis(1_500);
        pal.p99_ms = 2999.0;
        let p99 = &judge(&s, std::slice::from_ref(&pal))[1];
        assert_eq!(p99.goal, "p99 under twice the attempt timeout (3000 ms)");
        assert_eq!(p99.met, Some(true));
    }

    #[test]
    fn flapping_asks_for_the_up_time_share() {
        let k = ScenarioKind::Flapping;
        let s = Scenario::new(k);
        // Down 16 s of the 30 s of flapping (eight down phases, seven up), in a 40 s run: up
        // 60 % of the time.
        assert_eq!(
            s.fault_window(),
            (Duration::from_secs(5), Duration::from_secs(35))
        );
        assert_eq!(s.params.duration, Duration::from_secs(40));
        let mut pal = figures(k, StackKind::Palisade);
        pal.success = 0.6;
        assert_eq!(judged(k, &pal), [("60.00 %".to_owned(), true)]);
        assert_eq!(
            names(k, std::slice::from_ref(&pal)),
            ["success ≥ the up-time share (60.00 %)"]
        );
        pal.success = 0.5999;
        assert_eq!(met(k, &pal), [false]);
    }

    /// The up-time share is the run's time outside the upstream's down phases, as the chaos
    /// layer's schedule has them: a fault that ends in a down phase (30 s is seven and a half
    /// periods of 4 s) is down 16 s of 30, not half of it; so is one cut by the run's end.
    #[test]
    fn the_up_time_share_is_the_schedules() {
        use palisade::chaos::Schedule;
        let share = |s: &Scenario| {
            let g = &judge(s, &[figures(ScenarioKind::Flapping, StackKind::Palisade)])[0];
            g.goal.clone()
        };
        for (len, duration) in [
            (30_000, 40_000),
            (20_000, 40_000),
            (45_000, 55_000),
            (31_500, 40_000),
            (40_000, 20_000),
        ] {
            let mut s = Scenario::new(ScenarioKind::Flapping);
            s.params.fault_len = Duration::from_millis(len);
            s.params.duration = Duration::from_millis(duration);
            let p = &s.params;
            let flapping = Schedule::flapping(
                p.fault_start,
                p.fault_start + p.fault_len,
                Duration::from_secs(2),
                Duration::from_secs(2),
            );
            let up = (0..duration)
                .filter(|&t| !flapping.contains(Duration::from_millis(t)))
                .count() as f64
                / duration as f64;
            assert_eq!(
                share(&s),
                format!("success ≥ the up-time share ({})", pct(up)),
                "{len} ms of {duration}"
            );
        }
    }

    #[test]
    fn failover_goals_and_their_edges() {
        let k = ScenarioKind::Failover;
        let mut pal = figures(k, StackKind::Palisade);
        pal.success = 0.99;
        pal.standby_ms = Some(1000.0);
        // Leaving the primary alone is not enough: the traffic must reach the standby.
        pal.detect_ms = Some(100.0);
        assert_eq!(
            judged(k, &pal),
            [("99.00 %".to_owned(), true), ("1000 ms".to_owned(), true)]
        );
        pal.success = 0.9899;
        pal.standby_ms = Some(1000.1);
        assert_eq!(met(k, &pal), [false, false]);
        pal.standby_ms = None;
        assert_eq!(judged(k, &pal)[1], ("never".to_owned(), false));
    }

    #[test]
    fn degraded_compares_with_none_and_naive() {
        let k = ScenarioKind::Degraded;
        let mut pal = figures(k, StackKind::Palisade);
        // Alone, there is nothing to compare with.
        assert!(met(k, &pal).is_empty());
        let mut none = figures(k, StackKind::None);
        let mut naive = figures(k, StackKind::Naive);
        none.success = 0.5;
        naive.success = 0.7;
        naive.load = 2.0;
        pal.success = 0.7;
        pal.load = 2.0;
        let goals = judge(&Scenario::new(k), &[none, naive.clone(), pal.clone()]);
        let summary: Vec<(&str, &str, bool)> = goals
            .iter()
            .map(|g| (g.goal.as_str(), g.measured.as_str(), g.met.unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "more real answers than none",
                    "70.00 % against 50.00 %",
                    true
                ),
                // Strictly more: as many is not better.
                (
                    "more real answers than naive",
                    "70.00 % against 70.00 %, at 2.00 against 2.00 calls/req",
                    false
                ),
                (
                    "no more upstream load than naive",
                    "2.000 against 2.000",
                    true
                ),
                ("success at least none's", "70.00 % against 50.00 %", true),
                ("success at least naive's", "70.00 % against 70.00 %", true),
            ]
        );
        pal.load = 2.001;
        pal.success = 0.7001;
        let met: Vec<bool> = judge(&Scenario::new(k), &[naive, pal])
            .iter()
            .map(|g| g.met.unwrap())
            .collect();
        assert_eq!(met, [true, false, true]);
    }

    /// In `degraded`, a miss of another stack's success says when no stack could have met it
    /// within tower's load: the answers of the requests whose deadline lies inside the fault
    /// cost `1 / p` calls each, `p` measured from `none`'s answers to them.
    #[test]
    fn a_degraded_miss_says_when_no_stack_could_close_it_within_tower_s_load() {
        let k = ScenarioKind::Degraded;
        // The fault is [5 s, 35 s) and the deadline 10 s: requests sent from 5 s to 25 s see
        // only the fault. `none` answers half of them; the seconds either side (4 s, 25 s)
        // answer nothing, and would lower `p` if they were counted.
        let mut none = figures(k, StackKind::None);
        none.requests = 4000;
        none.series = (0..40)
            .map(|t| crate::metrics::Second {
                t,
                sent: 100,
                ok: match t {
                    5..25 => 50,
                    4 | 25 => 0,
                    _ => 100,
                },
                attempts: 100,
            })
            .collect();
        let run = |stack, success, load| Figures {
            requests: 4000,
            success,
            load,
            ..figures(k, stack)
        };
        // Naive's 3800 answers: 2000 from the requests outside, 1800 inside at 2 calls each.
        let naive = run(StackKind::Naive, 0.95, 1.9);
        let pal = run(StackKind::Palisade, 0.7, 1.1);
        let measured = |runs: &[Figures], goal: &str| {
            judge(&Scenario::new(k), runs)
                .into_iter()
                .find(|g| g.goal == goal)
                .map(|g| g.measured)
                .unwrap()
        };
        let beyond = "70.00 % against 95.00 %, at 1.10 against 1.90 calls/req; out of reach at \
                      tower's load: naive's answers need ≥ 1.40 calls/req (p = 0.500 per call \
                      in the fault)";
        let tower = run(StackKind::Tower, 0.75, 1.2);
        let runs = [none.clone(), naive.clone(), tower, pal.clone()];
        assert_eq!(measured(&runs, "success at least naive's"), beyond);
        assert_eq!(measured(&runs, "more real answers than naive"), beyond);
        // Tower's own answers need 2000 + 1000 / 0.5 = 4000 calls, 1.00 per request: a miss
        // within reach says nothing more.
        assert_eq!(
            measured(&runs, "success at least tower's"),
            "70.00 % against 75.00 %, at 1.10 against 1.20 calls/req"
        );
        // Within reach of a tower that spends 1.40 calls per request (to the call: not
        // beyond it), and unjudged without a `none` run to price a call or a tower to bound
        // the load.
        let plain = "70.00 % against 95.00 %, at 1.10 against 1.90 calls/req";
        let tower = run(StackKind::Tower, 0.75, 1.4);
        let runs = [none.clone(), naive.clone(), tower.clone(), pal.clone()];
        assert_eq!(measured(&runs, "success at least naive's"), plain);
        let runs = [naive.clone(), tower, pal.clone()];
        assert_eq!(measured(&runs, "success at least naive's"), plain);
        let runs = [none.clone(), naive.clone(), pal.clone()];
        assert_eq!(measured(&runs, "success at least naive's"), plain);
        // A goal met says nothing of reach.
        let tower = run(StackKind::Tower, 0.75, 1.2);
        let ahead = run(StackKind::Palisade, 0.96, 1.1);
        let runs = [none.clone(), naive.clone(), tower.clone(), ahead];
        assert_eq!(
            measured(&runs, "success at least naive's"),
            "96.00 % against 95.00 %"
        );
        // Flapping's faults do not strike each call alone (its down phases fail every call),
        // although its fault lasts as long as degraded's: no price to bound with.
        let flapping = |f: &Figures| Figures {
            scenario: ScenarioKind::Flapping,
            ..f.clone()
        };
        let runs: Vec<_> = [none, naive, tower, pal].iter().map(flapping).collect();
        let s = Scenario::new(ScenarioKind::Flapping);
        assert_eq!(s.fault_window(), Scenario::new(k).fault_window());
        let goal = judge(&s, &runs)
            .into_iter()
            .find(|g| g.goal == "success at least naive's")
            .unwrap();
        assert_eq!(goal.measured, plain);
    }

    /// Without a degradation every stack answers everything with one call: "more real
    /// answers" than another has nothing to judge (it read "MISS 100.00 % against 100.00 %").
    #[test]
    fn a_degraded_run_without_a_fault_compares_no_answers() {
        let k = ScenarioKind::Degraded;
        let mut s = Scenario::new(k);
        s.params.fault_len = Duration::ZERO;
        let all = |stack| {
            let mut f = figures(k, stack);
            (f.success, f.load) = (1.0, 1.0);
            f
        };
        let runs = [
            all(StackKind::None),
            all(StackKind::Naive),
            all(StackKind::Palisade),
        ];
        let summary: Vec<(String, String, Option<bool>)> = judge(&s, &runs)
            .into_iter()
            .map(|g| (g.goal, g.measured, g.met))
            .collect();
        let na = |goal: &str| (goal.to_owned(), NO_FAULT.to_owned(), None);
        let met = |goal: &str| {
            (
                goal.to_owned(),
                "100.00 % against 100.00 %".to_owned(),
                Some(true),
            )
        };
        assert_eq!(
            summary,
            [
                na("more real answers than none"),
                na("more real answers than naive"),
                na("no more upstream load than naive"),
                met("success at least none's"),
                met("success at least naive's"),
            ]
        );
    }

    /// A stack file's attempt timeout is its own, not the scenario's: the latency spike's
    /// p99 bound follows the file's.
    #[test]
    fn a_stack_files_p99_bound_is_twice_its_own_attempt_timeout() {
        let k = ScenarioKind::LatencySpike;
        let config = palisade::config::PresetConfig::from_toml(
            "name = \"llm\"\nattempt_timeout = { limit = \"1500ms\" }\n",
        )
        .unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("slow", config));
        let mut pal = figures(k, file);
        pal.p99_ms = 2_500.0;
        let s = Scenario::new(k);
        assert_eq!(s.params.attempt_timeout, Duration::from_secs(1));
        let p99 = &judge(&s, std::slice::from_ref(&pal))[1];
        assert_eq!(p99.goal, "p99 under twice the attempt timeout (3000 ms)");
        assert_eq!(p99.met, Some(true));
        // The built-in stack keeps the scenario's.
        pal.stack = StackKind::Palisade;
        let p99 = &judge(&s, std::slice::from_ref(&pal))[1];
        assert_eq!(p99.goal, "p99 under twice the attempt timeout (2000 ms)");
        assert_eq!(p99.met, Some(false));
    }

    /// Detected, with no attempt at all from detection to the fault's end: none went to the
    /// bad replica (the figure has no share to give; "not detected" would be wrong).
    #[test]
    fn no_attempt_after_detection_sends_none_to_the_bad_replica() {
        let k = ScenarioKind::BadReplica;
        let mut pal = figures(k, StackKind::Palisade);
        pal.detect_ms = Some(200.0);
        pal.bad_share = None;
        let v = verdicts(&Scenario::new(k), &pal);
        assert_eq!(
            (v[1].1.as_str(), v[1].2),
            ("no attempt after detection", Some(true))
        );
        pal.detect_ms = None;
        let v = verdicts(&Scenario::new(k), &pal);
        assert_eq!((v[1].1.as_str(), v[1].2), ("not detected", Some(false)));
    }

    #[test]
    fn palisade_is_compared_with_every_other_stack_and_tower_on_load() {
        let k = ScenarioKind::Outage;
        let mut pal = figures(k, StackKind::Palisade);
        pal.success = 0.8;
        pal.load = 1.5;
        let mut none = figures(k, StackKind::None);
        none.success = 0.8;
        let mut tower = figures(k, StackKind::Tower);
        tower.success = 0.8001;
        tower.load = 1.5;
        let goals = judge(&Scenario::new(k), &[none, pal.clone(), tower.clone()]);
        let tail: Vec<(&str, &str, bool)> = goals[3..]
            .iter()
            .map(|g| (g.goal.as_str(), g.measured.as_str(), g.met.unwrap()))
            .collect();
        assert_eq!(
            tail,
            [
                ("success at least none's", "80.00 % against 80.00 %", true),
                (
                    "success at least tower's",
                    "80.00 % against 80.01 %, at 1.50 against 1.50 calls/req",
                    false
                ),
                (
                    "no more upstream load than tower",
                    "1.500 against 1.500",
                    true
                ),
            ]
        );
        tower.load = 1.4999;
        let goals = judge(&Scenario::new(k), &[pal, tower]);
        assert_eq!(goals.last().unwrap().met, Some(false));
    }
}
