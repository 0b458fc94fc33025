//! The figures of one run, computed from its [`Log`].
//!
//! Requests are placed in time by when they were **sent**; attempts by when they reached the
//! upstream. Time is cut into 100 ms bins for the figures that look for a moment.

use std::collections::BTreeMap;
use std::time::Duration;

use palisade::classify::Category;
use serde::Serialize;

use crate::record::{AttemptOutcome, AttemptRecord, Log};
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

const BIN: Duration = Duration::from_millis(100);
/// Bins in one second.
const SECOND: usize = 10;

/// What one stack did in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// The scenario.
    pub scenario: ScenarioKind,
    /// The stack.
    pub stack: StackKind,
    /// Requests sent.
    pub requests: usize,
    /// Share of requests answered by the upstream.
    pub success: f64,
    /// The same, for requests sent during the fault (`None`: none was, as in a run without a
    /// fault or at a rate too low to send one in it).
    pub success_fault: Option<f64>,
    /// The same, for requests sent after the fault (`None`: none was).
    pub success_after: Option<f64>,
    /// Upstream calls made during the fault, per request sent during it: the load the stack
    /// put on the upstream while it failed, whichever requests the calls were for (`None`: no
    /// request was sent in it). Calls held through the fault and sent after it count after
    /// it, where the series shows them (palisade's requests held through an outage go out
    /// when it ends, metered by its adaptive throttle to what the upstream answers).
    pub load_fault: Option<f64>,
    /// Upstream calls per request over the whole run (the measured requests' attempts).
    pub load: f64,
    /// Median latency of all requests, answered or not, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Longest latency, in milliseconds.
    pub max_ms: f64,
    /// From the fault's start until traffic to the faulty replica fell to a tenth of its usual
    /// share for a whole second, from a 100 ms bin of the fault that holds no more than that
    /// itself. The second is a whole one even where the fault ends within it (it may run past
    /// the fault's end, into what the stack does next, but not past the run's): a stack is not
    /// credited for a moment of quiet that the fault's end cut short, and a fault shorter than
    /// a second is detected only if the traffic stays away that long. `None`: it never did,
    /// or the scenario has no faulty replica.
    pub detect_ms: Option<f64>,
    /// From the upstream's recovery until every 1 s window of requests succeeds at ≥ 99 %
    /// (`None`: never within the run, or no recovery in this scenario; see `recovered`).
    pub recover_ms: Option<f64>,
    /// Whether every 1 s window succeeded at ≥ 99 % by the end of the run (`None`: the
    /// scenario has no recovery).
    pub recovered: Option<bool>,
    /// Share of attempts that went to the faulty replica after detection, until the fault ended
    /// (`None`: not detected, no attempt at all in that time, or every replica is faulty, as
    /// in `outage`, where there is nowhere else to go).
    pub bad_share: Option<f64>,
    /// From the fault's start until the replicas that did not fail took, over a whole second,
    /// at least 90 % as many attempts as requests were sent: the traffic is on them (`None`:
    /// never within the run, or no replica stays up in this scenario; see `detect_ms` for
    /// when the faulty one was left alone).
    pub standby_ms: Option<f64>,
    /// Requests whose caller gave up at its deadline before the stack answered.
    pub cut_off: usize,
    /// Requests the stack answered without sending a single attempt upstream (an open
    /// breaker, no eligible endpoint, a spent budget).
    pub local: usize,
    /// Retries that reached the upstream before the server's retry hint allowed them.
    pub early_retries: u64,
    /// Calls served against what the upstream's capacity allowed (`brownout`: during the ramp,
    /// against the capacity up to the request rate, so that retries of requests held from the
    /// outage, which use capacity above that rate, can take it past 100 %; `rate-limit`: while
    /// the limit lasts, which is the fault's window, by default the whole run, against the
    /// burst its buckets start with and the calls their rate refills before the window ends,
    /// as far as the requests sent ask for them; `None` in a run without a fault, which has
    /// no limit, with a limit that allows no call (a capacity of 0), or with a ramp too short
    /// to allow one call).
    pub served: Option<f64>,
    /// Upstream calls per request while capacity returns (`brownout`; `None` where no request
    /// was sent during the ramp).
    pub load_ramp: Option<f64>,
    /// Mean latency of the requests that succeeded after a retry, in milliseconds.
    pub retried_ms: Option<f64>,
    /// Mean time from a failure that carried a server's retry hint to the retry that followed
    /// it, in milliseconds (`None`: no such retry).
    pub hint_wait_ms: Option<f64>,
    /// The mean of those hints, in milliseconds.
    pub hint_ms: Option<f64>,
    /// `bad-replica`: from the replica's recovery until it served a call again, seen also in
    /// the traffic that goes on for a deadline past the run's end (sent so that the run's last
    /// requests meet the same load as the others, and not measured otherwise): a return that
    /// the run's end cut short is not a miss.
    pub returned_ms: Option<f64>,
    /// How the requests that were not answered ended, in groups of the same ending and the
    /// same number of attempts, most requests first: where a stack's failures come from (a
    /// budget that held retries to the deadline, attempts spent on a failing upstream, an
    /// open breaker's refusals).
    pub unanswered: Vec<Unanswered>,
    /// Per second: requests sent, answered, and attempts at the upstream.
    pub series: Vec<Second>,
}

/// A group of requests that were not answered, all ending the same way after the same number
/// of attempts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unanswered {
    /// How they ended: `cut_off` where the caller gave up at its deadline before the stack
    /// answered, otherwise the category of the error the stack returned (`server_error`,
    /// `rate_limited`, `timeout` for an attempt's or the deadline's timeout, `rejected` for a
    /// local refusal such as an open breaker's, ...).
    pub ending: &'static str,
    /// Attempts each sent to the upstream.
    pub attempts: u32,
    /// How many requests.
    pub requests: usize,
    /// How many of them were sent during the fault.
    pub in_fault: usize,
    /// Their mean latency, in milliseconds: near the deadline where they waited for it (held
    /// for a budget or a breaker).
    pub mean_ms: f64,
}

/// One second of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u32,
    /// Requests sent in this second.
    pub sent: u32,
    /// Of those, answered by the upstream.
    pub ok: u32,
    /// Attempts that reached the upstream in this second (within the run: none of the
    /// traffic past its end).
    pub attempts: u32,
}

fn bin_of(t: Duration) -> usize {
    (t.as_nanos() / BIN.as_nanos()) as usize
}

/// `a / b`; `None` over nothing (`b` of 0): a window with no request in it has no share and
/// no rate, not one of 0.
fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measures a run.
pub fn measure(scenario: &Scenario, stack: StackKind, log: &Log) -> Figures {
    let p = &scenario.params;
    let (fault_start, fault_end) = scenario.fault_window();
    let in_fault = |t: Duration| t >= fault_start && t < fault_end;
    let bins = bin_of(p.duration) + 1;
    let bad = scenario.bad_replicas();
    let is_bad = |a: &AttemptRecord| bad.contains(&usize::from(a.replica));

    // Per bin: requests sent, answered; attempts, attempts to a faulty replica.
    let mut sent = vec![0usize; bins];
    let mut ok = vec![0usize; bins];
    let mut attempts = vec![0usize; bins + 1];
    let mut to_bad = vec![0usize; bins + 1];
    let mut to_good = vec![0usize; bins + 1];
    for r in &log.requests {
        let b = bin_of(r.sent).min(bins - 1);
        sent[b] += 1;
        ok[b] += usize::from(r.ok);
    }
    for a in &log.attempts {
        let b = bin_of(a.at).min(bins);
        // The series counts the run's attempts only: the last bin may run past its end.
        attempts[b] += usize::from(a.at < p.duration);
        to_bad[b] += usize::from(is_bad(a));
        to_good[b] += usize::from(!is_bad(a) && a.at < p.duration);
    }

    let n = log.requests.len();
    let answered = log.requests.iter().filter(|r| r.ok).count();
    let fault_requests: Vec<_> = log.requests.iter().filter(|r| in_fault(r.sent)).collect();
    let after: Vec<_> = log
        .requests
        .iter()
        .filter(|r| r.sent >= fault_end)
        .collect();
    let fault_attempts = log.attempts.iter().filter(|a| in_fault(a.at)).count();

    let mut latencies: Vec<Duration> = log.requests.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .map_or(0.0, ms)
    };

    // Detection: the first bin of the fault from which, for a whole second, the faulty
    // replicas got at most a tenth of their share before the fault, and in that bin too: a
    // bin that still sends them their share is not "after detection" (with a 1 s fault, the
    // attempts that tripped the router's ejection counted against it as sent after). The
    // second is a whole one, inside the run: cut at the fault's end, a few quiet bins at its
    // end (a plain round robin over many replicas sends one of them nothing for a while)
    // read as detection.
    let detect = (!bad.is_empty())
        .then(|| {
            let (b0, b1) = (bin_of(fault_start), bin_of(fault_end).min(bins));
            // The first bin that starts at or after the run's end: a window ends by it.
            let last = bin_of(p.duration);
            // The faulty replicas' share before the fault; with no past (a fault from the
            // run's start) or none sent in it, their static share.
            let before = b0.saturating_sub(5 * SECOND)..b0;
            let usual = ratio(
                to_bad[before.clone()].iter().sum(),
                sent[before].iter().sum(),
            )
            .unwrap_or(bad.len() as f64 / p.replicas as f64);
            let quiet = |from: usize, end: usize| {
                let bad_sum: usize = to_bad[from..end].iter().sum();
                let sent_sum: usize = sent[from..end].iter().sum();
                sent_sum > 0 && (bad_sum as f64) <= 0.1 * usual * sent_sum as f64
            };
            (b0..b1)
                .take_while(|&b| b + SECOND <= last)
                .find(|&b| quiet(b, b + 1) && quiet(b, b + SECOND))
        })
        .flatten();
    let detect_at = detect.map(|b| BIN * b as u32);
    // With every replica faulty, every attempt goes to a faulty one: no share to tell.
    let everywhere = bad.len() >= p.replicas;
    let bad_share = detect_at.filter(|_| !everywhere).and_then(|d| {
        let window = log
            .attempts
            .iter()
            .filter(|a| a.at >= d && a.at < fault_end);
        let (all, to) = window.fold((0, 0), |(all, to), a| {
            (all + 1, to + usize::from(is_bad(a)))
        });
        ratio(to, all)
    });

    // The standby: the first bin of the fault from which, for a whole second inside the run,
    // the replicas that stayed up took at least 90 % as many attempts as requests were sent.
    let standby = (!bad.is_empty() && !everywhere)
        .then(|| {
            let (b0, b1) = (bin_of(fault_start), bin_of(fault_end).min(bins));
            let last = bin_of(p.duration);
            (b0..b1).take_while(|&b| b + SECOND <= last).find(|&b| {
                let good: usize = to_good[b..b + SECOND].iter().sum();
                let sent_sum: usize = sent[b..b + SECOND].iter().sum();
                sent_sum > 0 && good as f64 >= 0.9 * sent_sum as f64
            })
        })
        .flatten();

    // Recovery: from the recovery on, the last 1 s window below 99 % ends it. Without a fault
    // there is nothing to recover from, and without a request sent from the recovery on
    // nothing to time it over: no figure either way, not "recovered at once".
    let recovery = scenario
        .recovery_at()
        .filter(|&at| scenario.has_fault() && sent[bin_of(at).min(bins)..].iter().any(|&s| s > 0));
    let (recover, recovered) = match recovery {
        Some(at) => {
            let first = bin_of(at);
            let last_start = bins.saturating_sub(SECOND + 1);
            let failing = (first..=last_start).rev().find(|&b| {
                let s: usize = sent[b..b + SECOND].iter().sum();
                let o: usize = ok[b..b + SECOND].iter().sum();
                s > 0 && (o as f64) < 0.99 * s as f64
            });
            match failing {
                None => (Some(0.0), Some(true)),
                Some(b) if b == last_start => (None, Some(false)),
                Some(b) => (
                    Some(ms((BIN * (b as u32 + 1)).saturating_sub(at))),
                    Some(true),
                ),
            }
        }
        None => (None, None),
    };

    // Served against capacity.
    let (served, load_ramp) = match scenario.kind {
        ScenarioKind::Brownout => {
            // The part of the ramp inside the run: after it, the traffic is not measured.
            let (ramp_start, ramp_end) = scenario.ramp();
            let ramp_end = ramp_end.min(p.duration);
            let possible = possible(scenario, ramp_start, ramp_end);
            let in_ramp = |t: Duration| t >= ramp_start && t < ramp_end;
            let done = log
                .attempts
                .iter()
                .filter(|a| in_ramp(a.at) && a.outcome == AttemptOutcome::Ok)
                .count();
            let calls = log.attempts.iter().filter(|a| in_ramp(a.at)).count();
            let requests = log.requests.iter().filter(|r| in_ramp(r.sent)).count();
            // A ramp too short to allow one call has nothing to serve against.
            (
                (possible >= 1.0).then(|| done as f64 / possible),
                ratio(calls, requests),
            )
        }
        // A run without a fault has no limit to serve against.
        ScenarioKind::RateLimit if !scenario.has_fault() => (None, None),
        ScenarioKind::RateLimit => {
            // While the limit holds (the fault, within the run; by default the whole run):
            // after it, calls are unlimited and there is no limit to serve against. The
            // limit's buckets start full: they admit their burst on top of the rate, as far
            // as the requests sent ask for it.
            let during = |t: Duration| t >= fault_start && t < fault_end;
            // Each replica's bucket admits its burst at once, then each call its rate refills
            // before the window ends: one refilled at the end itself is a call of the next
            // window (at 0.5 calls a second for 40 s, 1 + 19 calls, not 1 + 20).
            let replicas = p.replicas as f64;
            let each = possible(scenario, fault_start, fault_end) / replicas;
            let refilled = ((each - 1e-6).ceil() - 1.0).max(0.0) * replicas;
            let allowed = refilled + scenario.limit_burst();
            let possible = allowed.min(p.rate * (fault_end - fault_start).as_secs_f64());
            let done = log
                .attempts
                .iter()
                .filter(|a| during(a.at) && a.outcome == AttemptOutcome::Ok)
                .count();
            // A limit that allows no call at all (a capacity of 0; above 0, its buckets
            // start with one call at least) has nothing to serve against: no share, not 0 %.
            (
                (allowed >= 1.0).then(|| done as f64 / possible.max(1.0)),
                None,
            )
        }
        _ => (None, None),
    };

    let retried: Vec<_> = log
        .requests
        .iter()
        .filter(|r| r.ok && r.attempts > 1)
        .collect();
    let retried_ms = (!retried.is_empty())
        .then(|| retried.iter().map(|r| ms(r.latency)).sum::<f64>() / retried.len() as f64);

    let waits = &log.hinted_waits;
    let mean = |f: fn(&(Duration, Duration)) -> Duration| {
        (!waits.is_empty())
            .then(|| waits.iter().map(|w| ms(f(w))).sum::<f64>() / waits.len() as f64)
    };
    let hint_wait_ms = mean(|w| w.0);
    let hint_ms = mean(|w| w.1);

    let returned_ms = match scenario.kind {
        ScenarioKind::BadReplica => log
            .attempts
            .iter()
            .find(|a| is_bad(a) && a.at >= fault_end && a.outcome == AttemptOutcome::Ok)
            .map(|a| ms(a.at - fault_end)),
        _ => None,
    };

    let seconds = (p.duration.as_secs_f64().ceil() as usize).max(1);
    let series = (0..seconds)
        .map(|s| {
            let range = (s * SECOND).min(bins)..((s + 1) * SECOND).min(bins);
            Second {
                t: s as u32,
                sent: sent[range.clone()].iter().sum::<usize>() as u32,
                ok: ok[range.clone()].iter().sum::<usize>() as u32,
                attempts: attempts[range].iter().sum::<usize>() as u32,
            }
        })
        .collect();

    Figures {
        scenario: scenario.kind,
        stack,
        requests: n,
        // Over the whole run there is always a request to measure: a run that would send none
        // is refused (`Params::validate`).
        success: ratio(answered, n).unwrap_or(0.0),
        success_fault: ratio(
            fault_requests.iter().filter(|r| r.ok).count(),
            fault_requests.len(),
        ),
        success_after: ratio(after.iter().filter(|r| r.ok).count(), after.len()),
        load_fault: ratio(fault_attempts, fault_requests.len()),
        load: ratio(log.attempts.iter().filter(|a| a.req < n as u64).count(), n).unwrap_or(0.0),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        detect_ms: detect_at.map(|d| ms(d.saturating_sub(fault_start))),
        standby_ms: standby.map(|b| ms((BIN * b as u32).saturating_sub(fault_start))),
        recover_ms: recover,
        recovered,
        bad_share,
        cut_off: log.requests.iter().filter(|r| r.cut_off).count(),
        local: log.requests.iter().filter(|r| r.attempts == 0).count(),
        early_retries: log.early_retries,
        served,
        load_ramp,
        retried_ms,
        hint_wait_ms,
        hint_ms,
        returned_ms,
        unanswered: unanswered(log, in_fault),
        series,
    }
}

/// The unanswered requests grouped by ending and attempts, largest group first (ties by
/// ending, then attempts, so that the order is the same on every run).
fn unanswered(log: &Log, in_fault: impl Fn(Duration) -> bool) -> Vec<Unanswered> {
    // Per ending and attempts: requests, those in the fault, their total latency.
    let mut groups: BTreeMap<(&'static str, u32), (usize, usize, Duration)> = BTreeMap::new();
    for r in log.requests.iter().filter(|r| !r.ok) {
        let ending = r.error.map_or("cut_off", Category::as_str);
        let group = groups.entry((ending, r.attempts)).or_default();
        group.0 += 1;
        group.1 += usize::from(in_fault(r.sent));
        group.2 += r.latency;
    }
    let mut groups: Vec<Unanswered> = groups
        .into_iter()
        .map(
            |((ending, attempts), (requests, in_fault, total))| Unanswered {
                ending,
                attempts,
                requests,
                in_fault,
                mean_ms: ms(total) / requests as f64,
            },
        )
        .collect();
    // Stable: equal counts keep the map's order, by ending, then attempts.
    groups.sort_by_key(|g| std::cmp::Reverse(g.requests));
    groups
}

/// Calls the upstream could have served in `[from, to)`: the capacity, or the request rate
/// where that is lower, integrated in 10 ms steps, each at its middle (exact where the
/// capacity is linear, as a ramp is); the last step ends at `to`, however short that leaves
/// it.
fn possible(scenario: &Scenario, from: Duration, to: Duration) -> f64 {
    let step = Duration::from_millis(10);
    let rate = scenario.params.rate;
    let mut t = from;
    let mut sum = 0.0;
    while t < to {
        let end = (t + step).min(to);
        let cap = scenario
            .capacity_at(t + (end - t) / 2)
            .unwrap_or(f64::INFINITY);
        sum += cap.min(rate) * (end - t).as_secs_f64();
        t = end;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RequestRecord;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An outage scenario of 10 s, fault from 2 s to 4 s, 10 requests/s.
    fn scenario() -> Scenario {
        let mut s = Scenario::new(ScenarioKind::Outage);
        s.params.rate = 10.0;
        s.params.duration = Duration::from_secs(10);
        s.params.fault_start = Duration::from_secs(2);
        s.params.fault_len = Duration::from_secs(2);
        s
    }

    /// Every 100 ms a request; `ok(t)` says whether it succeeded; one attempt each, to
    /// replica 0, except where `local(t)` (refused without an attempt).
    fn log(ok: impl Fn(u64) -> bool, local: impl Fn(u64) -> bool) -> Log {
        let mut log = Log::default();
        for i in 0..100u64 {
            let t = i * 100;
            log.requests.push(RequestRecord {
                sent: ms(t),
                latency: ms(50),
                ok: ok(t),
                attempts: u32::from(!local(t)),
                cut_off: false,
                error: None,
            });
            if !local(t) {
                log.attempts.push(AttemptRecord {
                    at: ms(t),
                    replica: 0,
                    req: i,
                    outcome: if ok(t) {
                        AttemptOutcome::Ok
                    } else {
                        AttemptOutcome::Failed(Category::ServerError)
                    },
                });
            }
        }
        log
    }

    #[test]
    fn success_load_and_windows() {
        let s = scenario();
        let in_fault = |t: u64| (2_000..4_000).contains(&t);
        let f = measure(&s, StackKind::None, &log(|t| !in_fault(t), |_| false));
        assert_eq!(f.requests, 100);
        assert!((f.success - 0.8).abs() < 1e-9);
        assert_eq!(f.success_fault, Some(0.0));
        assert_eq!(f.success_after, Some(1.0));
        assert_eq!(f.load_fault, Some(1.0));
        assert_eq!(
            f.detect_ms, None,
            "every request still reaches the upstream"
        );
        assert_eq!(f.recover_ms, Some(0.0));
        assert_eq!(f.p50_ms, 50.0);
        assert_eq!(f.series.len(), 10);
        assert_eq!(
            f.series[2],
            Second {
                t: 2,
                sent: 10,
                ok: 0,
                attempts: 10
            }
        );
    }

    #[test]
    fn unanswered_requests_are_grouped_by_ending_and_attempts() {
        let s = scenario();
        let failed =
            |sent: u64, latency: u64, attempts: u32, error: Option<Category>| RequestRecord {
                cut_off: error.is_none(),
                error,
                ..request(sent, latency, false, attempts)
            };
        let mut log = Log::default();
        log.requests = vec![
            request(0, 50, true, 1),
            // In the fault (2 s to 4 s): two held to the deadline after one attempt, one
            // refused locally, one cut off.
            failed(2_000, 9_900, 1, Some(Category::ServerError)),
            failed(2_100, 9_700, 1, Some(Category::ServerError)),
            failed(2_200, 10, 0, Some(Category::Rejected)),
            failed(3_000, 10_000, 2, None),
            // After it: the same ending with another number of attempts, and one with the
            // same as two in the fault.
            failed(5_000, 3_000, 3, Some(Category::ServerError)),
            failed(6_000, 100, 1, Some(Category::ServerError)),
        ];
        let f = measure(&s, StackKind::Palisade, &log);
        let groups: Vec<_> = f
            .unanswered
            .iter()
            .map(|g| (g.ending, g.attempts, g.requests, g.in_fault, g.mean_ms))
            .collect();
        // Most requests first; ties in the order of the ending's name, then of attempts.
        assert_eq!(
            groups,
            [
                ("server_error", 1, 3, 2, (9_900.0 + 9_700.0 + 100.0) / 3.0),
                ("cut_off", 2, 1, 1, 10_000.0),
                ("rejected", 0, 1, 1, 10.0),
                ("server_error", 3, 1, 0, 3_000.0),
            ]
        );
        // Every request answered: nothing to group.
        log.requests.retain(|r| r.ok);
        assert!(measure(&s, StackKind::Palisade, &log).unanswered.is_empty());
    }

    #[test]
    fn detection_and_recovery_are_timed() {
        let s = scenario();
        // Failing from 2 s; refused locally from 2.5 s to 4 s; failing again until 5 s,
        // although the upstream recovered at 4 s.
        let fails = |t: u64| (2_000..5_000).contains(&t);
        let local = |t: u64| (2_500..4_000).contains(&t);
        let f = measure(&s, StackKind::Palisade, &log(|t| !fails(t), local));
        // From 2.4 s, the next second holds 1 attempt of 10 requests, a tenth of the usual
        // share, but that bin's request still went to it; from 2.5 s none does: detected
        // 500 ms after the start (2.3 s would hold 2).
        assert_eq!(f.detect_ms, Some(500.0));
        // The last 1 s window below 99 % starts at 4.9 s: recovered 1 s after 4 s.
        assert_eq!(f.recover_ms, Some(1_000.0));
        assert_eq!(f.recovered, Some(true));
        assert_eq!(f.local, 15);
        // One replica, and no attempt from detection to the fault's end: no share of
        // attempts to tell (not 0 % of none).
        assert_eq!(f.bad_share, None);
        // Recovered at 9.5 s, in the run's last second: no whole 1 s window left to time the
        // recovery over, and nothing to time (not "recovered at once").
        let mut late = s.clone();
        late.params.fault_len = ms(7_500);
        let f = measure(&late, StackKind::Palisade, &log(|t| t < 2_000, |_| false));
        assert_eq!((f.recover_ms, f.recovered), (None, None));
        // Still failing in the last window of the run: never recovered.
        let f = measure(&s, StackKind::Palisade, &log(|t| t < 2_000, |_| false));
        assert_eq!(f.recover_ms, None);
        assert_eq!(f.recovered, Some(false));
    }

    fn request(sent: u64, latency: u64, ok: bool, attempts: u32) -> RequestRecord {
        RequestRecord {
            sent: ms(sent),
            latency: ms(latency),
            ok,
            attempts,
            cut_off: false,
            error: None,
        }
    }

    fn attempt(at: u64, replica: u16, req: u64, ok: bool) -> AttemptRecord {
        AttemptRecord {
            at: ms(at),
            replica,
            req,
            outcome: if ok {
                AttemptOutcome::Ok
            } else {
                AttemptOutcome::Failed(Category::ServerError)
            },
        }
    }

    #[test]
    fn retried_latency_hints_and_load_of_the_measured_requests() {
        let s = scenario();
        let mut log = Log::default();
        log.requests = vec![
            request(0, 300, true, 2),
            request(100, 100, true, 1),
            request(200, 500, true, 3),
            request(300, 900, false, 2),
            // Sent at the end of the run or after it: counted in the totals, in no second.
            request(10_000, 100, true, 1),
            request(12_000, 100, true, 1),
        ];
        for (at, req) in [(0, 0), (200, 0), (100, 1), (200, 2), (400, 2), (900, 2)] {
            log.attempts.push(attempt(at, 0, req, true));
        }
        log.attempts.push(attempt(300, 0, 3, false));
        log.attempts.push(attempt(1_300, 0, 3, false));
        log.attempts.push(attempt(10_000, 0, 4, true));
        log.attempts.push(attempt(12_000, 0, 5, true));
        // Trailing traffic, numbered after the measured requests.
        log.attempts.push(attempt(9_000, 0, 6, true));
        log.attempts.push(attempt(9_100, 0, 7, true));
        log.hinted_waits = vec![(ms(100), ms(200)), (ms(300), ms(400))];
        let f = measure(&s, StackKind::Palisade, &log);
        // The successful requests that took more than one attempt: 300 and 500 ms.
        assert_eq!(f.retried_ms, Some(400.0));
        assert_eq!(f.hint_wait_ms, Some(200.0));
        assert_eq!(f.hint_ms, Some(300.0));
        // 10 attempts of the 6 measured requests; the trailing ones are not theirs.
        assert!((f.load - 10.0 / 6.0).abs() < 1e-9, "{}", f.load);
        let sent: u32 = f.series.iter().map(|x| x.sent).sum();
        assert_eq!((f.series.len(), sent), (10, 4));
        // The trailing attempts at 9 s and 9.1 s; none of those at or after the end.
        assert_eq!(f.series[9].attempts, 2);

        // None of either.
        log.requests.retain(|r| r.attempts < 2);
        log.hinted_waits.clear();
        let f = measure(&s, StackKind::Palisade, &log);
        assert_eq!(
            (f.retried_ms, f.hint_wait_ms, f.hint_ms),
            (None, None, None)
        );
    }

    #[test]
    fn brownout_served_against_the_returning_capacity() {
        // Out 2 s to 4 s, then capacity from 0 to 20/s over 4 s to 6 s, offered 10/s: the
        // upstream could serve 10 (t - 4) calls/s in the first second of the ramp and 10/s
        // in the second, 5 + 10 calls (as the chaos layer's bucket integrates its rate; a
        // sum of the capacity at each 10 ms step's start would miss 0.05 of them).
        let mut s = Scenario::new(ScenarioKind::Brownout);
        s.params.rate = 10.0;
        s.params.duration = Duration::from_secs(10);
        s.params.fault_start = Duration::from_secs(2);
        s.params.fault_len = Duration::from_secs(2);
        s.params.ramp = Duration::from_secs(2);
        s.params.capacity = 20.0;
        let possible = possible(&s, ms(4_000), ms(6_000));
        assert!((possible - 15.0).abs() < 1e-9, "{possible}");

        let mut log = Log::default();
        for i in 0..20u64 {
            let t = 4_000 + 100 * i;
            log.requests.push(request(t, 50, i < 12, 1));
            log.attempts.push(attempt(t, 0, i, i < 12));
        }
        // Five retries in the ramp; successes just before and at its end do not count.
        for i in 0..5u64 {
            log.attempts
                .push(attempt(4_050 + 100 * i, 0, 12 + i, false));
        }
        log.requests.push(request(3_990, 50, true, 1));
        log.attempts.push(attempt(3_990, 0, 20, true));
        log.requests.push(request(6_000, 50, true, 1));
        log.attempts.push(attempt(6_000, 0, 21, true));
        let f = measure(&s, StackKind::Palisade, &log);
        let served = f.served.unwrap();
        assert!((served - 12.0 / 15.0).abs() < 1e-9, "{served}");
        assert_eq!(f.load_ramp, Some(25.0 / 20.0));

        // A run that ends in the middle of the ramp, at 5 s, is measured up to its end: not
        // over the unmeasured traffic that goes on after it (10 attempts from 5 s, answered).
        s.params.duration = Duration::from_secs(5);
        let mut log = Log::default();
        for i in 0..10u64 {
            let t = 4_000 + 100 * i;
            log.requests.push(request(t, 50, i < 4, 1));
            log.attempts.push(attempt(t, 0, i, i < 4));
            log.attempts.push(attempt(t + 1_000, 0, 10 + i, true));
        }
        let f = measure(&s, StackKind::Palisade, &log);
        // 4 served of the 5 the first second of the ramp allowed; 10 calls for 10 requests.
        let served = f.served.unwrap();
        assert!((served - 4.0 / 5.0).abs() < 1e-9, "{served}");
        assert_eq!(f.load_ramp, Some(1.0));
    }

    #[test]
    fn rate_limit_served_against_the_limit() {
        let mut s = Scenario::new(ScenarioKind::RateLimit);
        s.params.rate = 10.0;
        s.params.duration = Duration::from_secs(10);
        s.params.capacity = 5.0;
        // 5/s for 10 s, and the one call (a tenth of a second of them, rounded up) the
        // limit's bucket holds at the start: 1 + 49 calls, the 50th refilled at 10 s, too
        // late for the window.
        assert!((possible(&s, Duration::ZERO, s.params.duration) - 50.0).abs() < 1e-9);
        assert_eq!(s.limit_burst(), 1.0);
        let mut log = Log::default();
        for i in 0..40u64 {
            log.requests.push(request(250 * i, 50, i % 4 != 3, 1));
            log.attempts.push(attempt(250 * i, 0, i, i % 4 != 3));
        }
        // After the run: not counted.
        log.attempts.push(attempt(10_000, 0, 40, true));
        let f = measure(&s, StackKind::Palisade, &log);
        let served = f.served.unwrap();
        assert!((served - 30.0 / 50.0).abs() < 1e-9, "{served}");
        assert_eq!(f.load_ramp, None);
        // Three replicas of 25 calls a second start with 3 × 3 calls; and a limit above the
        // request rate allows what was asked, no more.
        s.params.replicas = 3;
        s.params.capacity = 25.0;
        assert_eq!(s.limit_burst(), 9.0);
        let served = measure(&s, StackKind::Palisade, &log).served.unwrap();
        assert!((served - 30.0 / 100.0).abs() < 1e-9, "{served}");
        s.params.capacity = 0.0;
        assert_eq!(s.limit_burst(), 0.0);
        // Other scenarios measure neither.
        let f = measure(&scenario(), StackKind::Palisade, &log);
        assert_eq!((f.served, f.load_ramp), (None, None));
    }

    /// A limit of 0 calls a second allows no call at all: what it served is a share of
    /// nothing, with no figure (`-` in the table, `null` in the JSON), not 0 %.
    #[test]
    fn a_limit_that_allows_no_call_has_no_served_share() {
        let mut s = Scenario::new(ScenarioKind::RateLimit);
        s.params.rate = 10.0;
        s.params.duration = Duration::from_secs(10);
        s.params.capacity = 0.0;
        assert!(s.has_fault());
        let mut log = Log::default();
        for i in 0..100u64 {
            log.requests.push(request(100 * i, 0, false, 1));
            log.attempts.push(attempt(100 * i, 0, i, false));
        }
        let f = measure(&s, StackKind::Palisade, &log);
        assert_eq!(f.served, None, "{:?}", f.served);
        // The slowest limit above 0 still admits its bucket's one call, and is measured.
        s.params.capacity = 0.01;
        assert_eq!(measure(&s, StackKind::Palisade, &log).served, Some(0.0));
    }

    /// What a limit allows over its window is its buckets' burst and each call its rate
    /// refills before the window ends: at 0.5 calls a second for the whole 40 s run, the
    /// call at the start and one every 2 s from 2 s to 38 s, 20; the one refilled at 40 s
    /// comes too late. Every stack is served all 20 (none of them could be served more),
    /// which read 95.24 % of 21 and missed palisade's "≥ 98 % of what the limit allows".
    #[test]
    fn a_limit_allows_the_calls_it_refills_before_its_end() {
        let mut s = Scenario::new(ScenarioKind::RateLimit);
        s.params.capacity = 0.5;
        let log = crate::run::record(&s, StackKind::None).unwrap();
        let during = log
            .attempts
            .iter()
            .filter(|a| a.at < s.params.duration && a.outcome == AttemptOutcome::Ok)
            .count();
        assert_eq!(during, 20);
        assert_eq!(measure(&s, StackKind::None, &log).served, Some(1.0));
        // Three replicas of 0.5 a second each: 3 × 20.
        s.params.replicas = 3;
        let log = crate::run::record(&s, StackKind::None).unwrap();
        assert_eq!(measure(&s, StackKind::None, &log).served, Some(1.0));
    }

    /// What the capacity allowed is integrated over its window and no further: a window that
    /// is not a whole number of 10 ms steps ends within its last step. A brownout whose ramp
    /// lasts 1 ns allows no call (none to serve against, the goal not judged); it counted
    /// the whole 10 ms step past it, a call at 100 requests a second, and read 0 % served.
    #[test]
    fn what_a_capacity_allowed_stops_at_its_window_s_end() {
        let mut s = Scenario::new(ScenarioKind::Brownout);
        s.params.ramp = Duration::from_nanos(1);
        let (start, end) = s.ramp();
        let allowed = possible(&s, start, end);
        assert!(allowed < 1e-6, "{allowed}");
        // Half a step of a capacity above the request rate: half a step of requests.
        let half = possible(&s, ms(1_000), ms(1_005));
        assert!((half - 0.5).abs() < 1e-9, "{half}");
        let log = crate::run::record(&s, StackKind::None).unwrap();
        assert_eq!(measure(&s, StackKind::None, &log).served, None);
    }

    #[test]
    fn a_bad_replica_returns_at_its_first_success_after_the_fault() {
        let mut s = Scenario::new(ScenarioKind::BadReplica);
        s.params.duration = Duration::from_secs(10);
        s.params.fault_start = Duration::from_secs(2);
        s.params.fault_len = Duration::from_secs(2);
        let mut log = Log::default();
        log.requests.push(request(0, 50, true, 4));
        log.attempts.push(attempt(3_900, 0, 0, true));
        log.attempts.push(attempt(4_000, 1, 0, true));
        log.attempts.push(attempt(4_100, 0, 0, false));
        log.attempts.push(attempt(4_250, 0, 0, true));
        let f = measure(&s, StackKind::Palisade, &log);
        assert_eq!(f.returned_ms, Some(250.0));
        // Only `bad-replica` has a replica coming back.
        assert_eq!(
            measure(&scenario(), StackKind::Palisade, &log).returned_ms,
            None
        );
    }

    /// The standby's traffic: the first whole second from which the replicas that stayed up
    /// took at least 90 % as many attempts as requests were sent. A stack that leaves the
    /// faulty replica alone by refusing every call itself never puts traffic on the standby.
    #[test]
    fn the_standby_takes_the_traffic_when_it_gets_nine_attempts_in_ten() {
        let mut s = Scenario::new(ScenarioKind::Failover);
        s.params.duration = Duration::from_secs(10);
        s.params.fault_start = Duration::from_secs(2);
        s.params.fault_len = Duration::from_secs(4);
        // Ten requests a second; to the primary until 2.3 s, then to the standby; or, for
        // the second log, refused without an attempt from 2.3 s to the fault's end.
        let run = |moved: bool| {
            let mut log = Log::default();
            for i in 0..100u64 {
                let t = i * 100;
                let away = (2_300..6_000).contains(&t);
                let attempt_made = moved || !away;
                log.requests.push(request(
                    t,
                    50,
                    !(2_000..2_300).contains(&t) && attempt_made,
                    u32::from(attempt_made),
                ));
                if attempt_made {
                    let replica = u16::from(away);
                    log.attempts
                        .push(attempt(t, replica, i, !(2_000..2_300).contains(&t)));
                }
            }
            measure(&s, StackKind::Palisade, &log)
        };
        let f = run(true);
        // From 2.2 s: 2.2 s still to the primary, then nine bins to the standby: 9 of 10.
        assert_eq!(f.standby_ms, Some(200.0));
        let f = run(false);
        assert_eq!(f.detect_ms, Some(300.0), "the primary is left alone");
        assert_eq!(f.standby_ms, None, "but nothing reaches the standby");
        // With every replica faulty there is no standby, and no share to the faulty one.
        let f = measure(
            &scenario(),
            StackKind::Palisade,
            &log(|t| t < 2_000, |t| (2_500..4_000).contains(&t)),
        );
        assert_eq!(f.standby_ms, None);
        let mut two = scenario();
        two.params.replicas = 2;
        let mut spread = log(
            |t| !(2_000..4_000).contains(&t),
            |t| (2_500..4_000).contains(&t),
        );
        spread.attempts.push(attempt(3_000, 1, 30, false));
        let f = measure(&two, StackKind::Palisade, &spread);
        assert!(f.detect_ms.is_some(), "{f:?}");
        assert_eq!(f.bad_share, None, "both replicas fail in an outage");
    }

    /// The series counts the run's attempts only: with a run that ends within a 100 ms bin,
    /// the attempts after its end (of the traffic that goes on past it) are not in its last
    /// second.
    #[test]
    fn the_series_stops_at_the_run_s_end() {
        let mut s = scenario();
        s.params.duration = ms(9_550);
        let mut log = log(|_| true, |_| false);
        log.requests.truncate(96);
        log.attempts.truncate(96);
        log.attempts.push(attempt(9_560, 0, 95, true));
        let f = measure(&s, StackKind::None, &log);
        assert_eq!(f.series.len(), 10);
        assert_eq!(
            f.series[9],
            Second {
                t: 9,
                sent: 6,
                ok: 6,
                attempts: 6
            }
        );
    }

    /// A `bad-replica` run over two replicas, fault from `start` for 4 s, in a 20 s run: ten
    /// requests every 100 ms, one attempt each, at 10 ms steps. `bad(t)` says how many of a
    /// bin's ten attempts go to the faulty replica 0 (the rest to replica 1); `ok(t)` whether
    /// a request sent at `t` ms succeeded. No request is sent in `quiet`.
    fn two_replicas(
        start: u64,
        bad: impl Fn(u64) -> u64,
        ok: impl Fn(u64) -> bool,
        quiet: std::ops::Range<u64>,
    ) -> (Scenario, Log) {
        let mut s = Scenario::new(ScenarioKind::BadReplica);
        s.params.replicas = 2;
        s.params.duration = Duration::from_secs(20);
        s.params.fault_start = ms(start);
        s.params.fault_len = Duration::from_secs(4);
        let mut log = Log::default();
        for bin in (0..=20_000).step_by(100) {
            if quiet.contains(&bin) {
                continue;
            }
            for j in 0..10 {
                let t = bin + j * 10;
                let req = log.requests.len() as u64;
                log.requests.push(request(t, 50, ok(t), 1));
                let replica = u16::from(j >= bad(bin));
                log.attempts.push(attempt(t, replica, req, ok(t)));
            }
        }
        (s, log)
    }

    /// How many of a bin's ten attempts reach the faulty replica, in the three phases of the
    /// detection tests: 8, then 4, then 2 in each second (`from` is the first phase's start).
    fn fading(from: u64, bin: u64) -> u64 {
        const A: [u64; 10] = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
        const B: [u64; 10] = [1, 0, 1, 0, 1, 0, 1, 0, 0, 0];
        const C: [u64; 10] = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        match bin
            .checked_sub(from)
            .map(|d| (d / 1_000, (d % 1_000 / 100) as usize))
        {
            Some((0, k)) => A[k],
            Some((1, k)) => B[k],
            Some((2, k)) => C[k],
            Some(_) => 0,
            None => 10,
        }
    }

    /// Detection needs a whole second of quiet from its bin: one the fault's end cuts short
    /// (the traffic comes back at once) is not detection; one that runs on past the fault's
    /// end is, and then the share to the faulty replica counts the attempts until the end.
    #[test]
    fn detection_needs_a_whole_second_of_quiet() {
        // Fault from 8 s to 12 s: replica 0 gets its half of the traffic, but for the fault's
        // last half second, and all of it again at once after it.
        let bad = |bin: u64| {
            if (11_500..12_000).contains(&bin) {
                0
            } else {
                5
            }
        };
        let (s, log) = two_replicas(8_000, bad, |_| true, 0..0);
        let f = measure(&s, StackKind::None, &log);
        assert_eq!((f.detect_ms, f.bad_share), (None, None), "{f:?}");
        // Quiet from 11.5 s to 12.5 s: a whole second, from 3.5 s into the fault.
        let bad = |bin: u64| {
            if (11_500..12_500).contains(&bin) {
                0
            } else {
                5
            }
        };
        let (s, log) = two_replicas(8_000, bad, |_| true, 0..0);
        let f = measure(&s, StackKind::Palisade, &log);
        assert_eq!((f.detect_ms, f.bad_share), (Some(3_500.0), Some(0.0)));
        // A second of quiet that the run's end cuts short is not one either: the fault lasts
        // to the end of the 20 s run, quiet only in its last half second.
        let mut late = s;
        late.params.fault_len = Duration::from_secs(12);
        let bad = |bin: u64| if bin >= 19_500 { 0 } else { 5 };
        let (_, log) = two_replicas(8_000, bad, |_| true, 0..0);
        let f = measure(&late, StackKind::None, &log);
        assert_eq!(f.detect_ms, None, "{f:?}");
    }

    /// A recovery with nothing to time it over has no figure, in the table (`-`) and the
    /// JSON (`null`): with no fault (`--fault-len 0`) there is nothing to recover from, and
    /// with no request sent from the recovery on nothing was measured. Both read "0 ms,
    /// recovered" once.
    #[test]
    fn a_recovery_with_nothing_to_time_has_no_figure() {
        let mut quiet = scenario();
        quiet.params.fault_len = Duration::ZERO;
        assert!(!quiet.has_fault());
        let f = measure(&quiet, StackKind::None, &log(|_| true, |_| true));
        assert_eq!((f.recover_ms, f.recovered), (None, None), "no fault");

        // A fault from 2 s to 4 s, and no request sent after 1.5 s.
        let s = scenario();
        let mut early = log(|_| true, |_| false);
        early.requests.retain(|r| r.sent < ms(1_500));
        early.attempts.retain(|a| a.at < ms(1_500));
        let f = measure(&s, StackKind::None, &early);
        assert_eq!(f.success_after, None, "nothing sent after the fault");
        assert_eq!(
            (f.recover_ms, f.recovered),
            (None, None),
            "nothing sent after the recovery"
        );
        // One request after it is enough to time the recovery over.
        let mut one = log(|_| true, |_| false);
        one.requests
            .retain(|r| r.sent < ms(1_500) || r.sent == ms(4_500));
        let f = measure(&s, StackKind::None, &one);
        assert_eq!((f.recover_ms, f.recovered), (Some(0.0), Some(true)));
    }

    /// Above 1 000 requests a second tokio's millisecond timer sends the last measured
    /// request at the run's very end (at 1 500/s, request 22 499 is due at 14.9993 s and
    /// sent at 15 s). It is measured when it was due, inside the run: a fault that outlasts
    /// the run has no "after" figure (it once had one, of that request alone), and every
    /// measured request is in a second of the series.
    #[test]
    fn a_request_the_timer_sends_at_the_run_s_end_is_measured_when_it_was_due() {
        let mut s = Scenario::new(ScenarioKind::Outage);
        s.params.rate = 1_500.0;
        s.params.duration = Duration::from_secs(15);
        assert!(s.fault_outlasts_run().is_some());
        let log = crate::run::record(&s, StackKind::None).unwrap();
        let late = log
            .requests
            .iter()
            .filter(|r| r.sent >= s.params.duration)
            .count();
        let f = measure(&s, StackKind::None, &log);
        assert_eq!((late, f.success_after), (0, None));
        let in_series: usize = f.series.iter().map(|b| b.sent as usize).sum();
        assert_eq!(in_series, f.requests);
    }

    /// A window with no request in it has no figures: not 0 % and 0 calls per request.
    #[test]
    fn a_window_without_requests_has_no_figures() {
        let s = scenario();
        // Nothing sent from 1.5 s to 4.5 s, around the fault (2 s to 4 s).
        let quiet = |t: u64| (1_500..4_500).contains(&t);
        let mut log = log(|_| true, |_| false);
        log.requests.retain(|r| !quiet(r.sent.as_millis() as u64));
        log.attempts.retain(|a| !quiet(a.at.as_millis() as u64));
        for (i, r) in log.attempts.iter_mut().enumerate() {
            r.req = i as u64;
        }
        let f = measure(&s, StackKind::None, &log);
        assert_eq!((f.success_fault, f.load_fault), (None, None));
        assert_eq!(f.success_after, Some(1.0));
        assert_eq!(f.success, 1.0);
        // A brownout's ramp with no request in it has no load.
        let mut brownout = Scenario::new(ScenarioKind::Brownout);
        brownout.params.duration = Duration::from_secs(10);
        brownout.params.fault_start = Duration::from_secs(1);
        brownout.params.fault_len = Duration::from_millis(500);
        brownout.params.ramp = Duration::from_secs(2);
        let f = measure(&brownout, StackKind::None, &log);
        assert_eq!(f.load_ramp, None);
    }

    /// Detection compares the faulty replica's share in each 1 s window of the fault, and in
    /// the window's first 100 ms bin, with its share over the 5 s before the fault (a tenth
    /// of it or less), not a shorter past and not its static share; a window with no request
    /// detects nothing. The share to it after
    /// detection counts the attempts from detection to the fault's end, that end excluded.
    #[test]
    fn detection_reads_the_five_seconds_before_the_fault() {
        // Before the fault (8 s): replica 0 gets nothing from 3 s to 6.5 s and everything from
        // 6.5 s, so its share over the last 5 s is 15/50 = 0.3 (over the last 1.5 s it would
        // be 1, and its static share is 0.5). No request from 8 s to 9 s; then it gets 8, 4
        // and 2 of each second's 100 attempts, and all of them again from 12 s.
        let bad = |bin: u64| match bin {
            0..3_000 => 5,
            3_000..6_500 => 0,
            6_500..8_000 => 10,
            12_000.. => 10,
            _ => fading(9_000, bin),
        };
        // Everything succeeds but one request at 15 s (99 of its windows' 100: still at the
        // 99 % the recovery asks for) and the last bin's, from 20 s (the last whole 1 s window
        // of the run ends before it).
        let ok = |t: u64| t != 15_000 && t < 20_000;
        let (s, log) = two_replicas(8_000, bad, ok, 8_000..9_000);
        let f = measure(&s, StackKind::Palisade, &log);
        // The first 1 s window with at most 0.1 × 0.3 × 100 = 3 attempts to replica 0 starts
        // at 10.3 s (2 of the B bins left, 1 of C's): 2.3 s after the fault's start.
        assert_eq!(f.detect_ms, Some(2_300.0));
        // From 10.3 s to 12 s: 2 + 2 of 170 attempts; the ones at 12 s not counted.
        assert_eq!(f.bad_share, Some(4.0 / 170.0));
        assert_eq!(f.recover_ms, Some(0.0));
        assert_eq!(f.recovered, Some(true));

        // A fault from the run's start has no past: the static share (0.5) stands in. The
        // first window with at most 5 attempts to it starts at 0.6 s, but that bin still
        // sends it 1 of its 10 (more than 0.5): the first quiet bin is at 0.8 s.
        let (s, log) = two_replicas(0, |bin| fading(0, bin), |_| true, 0..0);
        let f = measure(&s, StackKind::Palisade, &log);
        assert_eq!(f.detect_ms, Some(800.0));
    }
}
