//! The state machine alone, with explicit times (milliseconds since origin).

use super::*;
use crate::config::{Rate, Throttle};
use proptest::prelude::*;

fn core(cfg: BreakerConfig) -> Core {
    cfg.validate().unwrap();
    Core::new("test".into(), cfg, Vec::new())
}

fn no_jitter() -> BreakerConfig {
    BreakerConfig {
        jitter_ratio: 0.0,
        ..BreakerConfig::classic()
    }
}

fn fail(c: &Core, now: u64) -> bool {
    match c.admit(|| now) {
        Ok(t) => {
            c.record(t, Outcome::Failure(None), false, 0, || now);
            true
        }
        Err(_) => false,
    }
}

fn succeed(c: &Core, now: u64) -> bool {
    match c.admit(|| now) {
        Ok(t) => {
            c.record(t, Outcome::Success, false, 0, || now);
            true
        }
        Err(_) => false,
    }
}

#[test]
fn opens_after_five_consecutive_failures_and_probes_after_thirty_seconds() {
    let c = core(no_jitter());
    for _ in 0..4 {
        assert!(fail(&c, 0));
    }
    assert!(succeed(&c, 0)); // a success breaks the streak
    for _ in 0..4 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.state(), State::Closed);
    assert!(fail(&c, 0));
    assert_eq!(c.state(), State::Open);
    let refused = c.admit(|| 29_999).unwrap_err();
    assert_eq!(refused.retry_after_ms, Some(1));
    // At 30 s exactly: half-open, three probes at once and no more.
    let probes: Vec<_> = (0..3).map(|_| c.admit(|| 30_000).unwrap()).collect();
    assert!(probes.iter().all(|t| t.probe()));
    assert_eq!(c.state(), State::HalfOpen);
    assert!(c.admit(|| 30_000).is_err());
    // Three successes close it.
    for t in probes {
        c.record(t, Outcome::Success, false, 0, || 30_001);
    }
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn a_reader_sees_half_open_once_the_open_period_is_over_and_moves_nothing() {
    let c = core(no_jitter());
    // Not open: read as it is, without the clock.
    let no_clock = || -> u64 { unreachable!("the clock is read only while open") };
    assert_eq!(c.observed(no_clock), (State::Closed, None));
    for _ in 0..5 {
        assert!(fail(&c, 0));
    }
    // During the open period: Open, with the time left (never zero).
    assert_eq!(c.observed(|| 0), (State::Open, Some(30_000)));
    assert_eq!(c.observed(|| 29_999), (State::Open, Some(1)));
    let n = c.numbers(29_999);
    assert_eq!((n.state, n.open_for_ms), (State::Open, Some(1)));
    // Over, with no call: HalfOpen, what the next call meets, with no time left to wait...
    assert_eq!(c.observed(|| 30_000), (State::HalfOpen, None));
    let n = c.numbers(600_000);
    assert_eq!(
        (n.state, n.open_for_ms, n.in_state_ms),
        (State::HalfOpen, None, 600_000)
    );
    assert_eq!(c.rejecting_for(600_000), None);
    // ... but reading moved nothing: the word is still Open, as admission reads it.
    assert_eq!(c.state(), State::Open);
    // The next call is the probe, and the breaker moves with it.
    let probe = c.admit(|| 600_000).unwrap();
    assert!(probe.probe());
    assert_eq!(c.state(), State::HalfOpen);
    assert_eq!(c.observed(no_clock), (State::HalfOpen, None));
    assert_eq!(c.numbers(600_000).in_state_ms, 0);
    // It fails: open again, for longer, read as Open with the time left.
    c.record(probe, Outcome::Failure(None), false, 0, || 600_000);
    assert_eq!(c.observed(|| 600_000), (State::Open, Some(60_000)));
    assert_eq!(c.observed(|| 660_000), (State::HalfOpen, None));
    // Isolated reads Isolated however long ago it was forced.
    c.force(State::Isolated, 700_000);
    assert_eq!(c.observed(no_clock), (State::Isolated, None));
}

#[test]
fn a_failed_probe_reopens_for_longer_and_a_dropped_probe_frees_its_slot() {
    let c = core(no_jitter());
    for _ in 0..5 {
        fail(&c, 0);
    }
    let t1 = c.admit(|| 30_000).unwrap();
    let t2 = c.admit(|| 30_000).unwrap();
    let t3 = c.admit(|| 30_000).unwrap();
    assert!(c.admit(|| 30_000).is_err());
    // A cancelled probe (neutral) gives its slot back.
    c.record(t1, Outcome::Neutral, false, 0, || 30_000);
    let t4 = c.admit(|| 30_000).unwrap();
    // A failure reopens, for twice as long.
    c.record(t2, Outcome::Failure(None), false, 0, || 30_000);
    assert_eq!(c.state(), State::Open);
    assert_eq!(c.admit(|| 30_000).unwrap_err().retry_after_ms, Some(60_000));
    // The other probes of the old half-open period are out of date: ignored.
    c.record(t3, Outcome::Success, false, 0, || 30_001);
    c.record(t4, Outcome::Success, false, 0, || 30_001);
    assert_eq!(c.state(), State::Open);
    // Probing again after 60 s: a fresh set of slots.
    for _ in 0..3 {
        assert!(c.admit(|| 90_000).unwrap().probe());
    }
}

#[test]
fn the_open_period_honours_the_hint_and_the_cap() {
    let c = core(no_jitter());
    for _ in 0..4 {
        fail(&c, 0);
    }
    let t = c.admit(|| 0).unwrap();
    c.record(
        t,
        Outcome::Failure(Some(Duration::from_secs(45))),
        false,
        0,
        || 0,
    );
    assert_eq!(c.admit(|| 0).unwrap_err().retry_after_ms, Some(45_000));
    // Re-opening doubles until the 5-minute cap.
    let c = core(no_jitter());
    for _ in 0..5 {
        fail(&c, 0);
    }
    let mut now = 0;
    let mut periods = Vec::new();
    for _ in 0..6 {
        let wait = c.admit(|| now).unwrap_err().retry_after_ms.unwrap();
        periods.push(wait / 1000);
        now += wait;
        let t = c.admit(|| now).unwrap();
        c.record(t, Outcome::Failure(None), false, 0, || now);
    }
    assert_eq!(periods, [30, 60, 120, 240, 300, 300]);
}

#[test]
fn jitter_stays_within_its_spread_and_is_reproducible() {
    let run = || {
        let c = core(BreakerConfig::classic());
        for _ in 0..5 {
            fail(&c, 0);
        }
        c.admit(|| 0).unwrap_err().retry_after_ms.unwrap()
    };
    let a = run();
    assert!((27_000..=33_000).contains(&a), "{a}");
    assert_eq!(a, run());
}

#[test]
fn jitter_spreads_the_open_period_evenly_over_its_range() {
    // Over many seeds, the first open period (30 s ± 10 %) covers the whole range, evenly.
    let periods: Vec<u64> = (0..400u64)
        .map(|seed| {
            let c = core(BreakerConfig {
                seed,
                ..BreakerConfig::classic()
            });
            c.trip_now(0);
            c.numbers(0).open_for_ms.unwrap()
        })
        .collect();
    assert!(
        periods.iter().all(|p| (27_000..=33_000).contains(p)),
        "{periods:?}"
    );
    let below = periods.iter().filter(|&&p| p < 28_500).count();
    let above = periods.iter().filter(|&&p| p > 31_500).count();
    // A quarter of the range each: about 100 of 400.
    assert!((70..=130).contains(&below), "{below}");
    assert!((70..=130).contains(&above), "{above}");
    let mean = periods.iter().sum::<u64>() / 400;
    assert!((29_700..=30_300).contains(&mean), "{mean}");
}

#[test]
fn the_random_numbers_are_uniform_in_zero_to_one() {
    let c = core(BreakerConfig::default());
    let draws: Vec<f64> = (0..10_000).map(|_| c.next_random()).collect();
    assert!(draws.iter().all(|r| (0.0..1.0).contains(r)));
    let mut deciles = [0u32; 10];
    for r in &draws {
        deciles[(r * 10.0) as usize] += 1;
    }
    assert!(
        deciles.iter().all(|n| (850..=1150).contains(n)),
        "{deciles:?}"
    );
    // No drift from one draw to the next: about half the draws exceed the one before.
    let rising = draws.windows(2).filter(|w| w[1] > w[0]).count();
    assert!((4_800..=5_200).contains(&rising), "{rising}");
    // Reproducible from the seed.
    let again = core(BreakerConfig::default());
    assert_eq!(again.next_random(), draws[0]);
}

#[test]
fn failure_rate_over_a_sliding_count_window_with_a_minimum() {
    let c = core(BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(10),
        failure_rate: Some(Rate::new(0.5, 4)),
        ..no_jitter()
    });
    // Below the minimum, even 3 failures of 3 do not trip it.
    for _ in 0..3 {
        fail(&c, 0);
    }
    assert_eq!(c.state(), State::Closed);
    // A fresh start: 1000 successes, then the window slides: 5 failures of the last 10 trip it
    // (tower-resilience's non-sliding window needed 1000).
    c.reset(0);
    for _ in 0..1000 {
        succeed(&c, 0);
    }
    for i in 1..=5 {
        fail(&c, 0);
        assert_eq!(
            c.state() == State::Open,
            i == 5,
            "after {i} failures: {:?}",
            c.numbers(0).window
        );
    }
}

/// The default window at 10 calls a second: the last 30 calls reach back 3 s, so the last
/// second's (at least 10) decide, and 2 s of failures open it; the count window alone needs
/// 3 s. At 100 a second it is the count window, and a breaker just closed is not re-opened
/// by 10 failures in a row.
#[test]
fn the_default_window_opens_on_the_last_second_where_30_calls_reach_back_further() {
    let defaults = || BreakerConfig {
        throttle: None,
        jitter_ratio: 0.0,
        ..BreakerConfig::default()
    };
    let count = core(BreakerConfig {
        window: Window::Count(30),
        ..defaults()
    });
    let recent = core(defaults());
    // Ten seconds of successes, every 100 ms, then failures: the recent window opens on the
    // last second's 10 failures (the ring still holds 20 older successes); the count
    // window does not before 29 of its 30 failed.
    let mut opened = [None, None];
    for (i, c) in [&count, &recent].into_iter().enumerate() {
        for t in (0..10_000).step_by(100) {
            succeed(c, t);
        }
        for t in (10_000..14_000).step_by(100) {
            fail(c, t);
            if opened[i].is_none() && c.state() == State::Open {
                opened[i] = Some(t);
            }
        }
    }
    // The successes before 10 s count as seen at the first failure (the breaker records none
    // while its window holds only successes), so the last second is all failures at 11.0 s.
    assert_eq!(opened, [Some(12_800), Some(11_000)]);

    // Nine failures in ten, at 10 a second for 5 s: 90 % of the last second's, under 95 %;
    // closed. Then every call fails: open within the second.
    let c = core(defaults());
    for t in (0..5_000).step_by(100) {
        if t % 1_000 == 0 {
            succeed(&c, t);
        } else {
            fail(&c, t);
        }
    }
    assert_eq!(c.state(), State::Closed, "{:?}", c.numbers(5_000).window);
    // The success at 4.0 s is a second old at 5.0 s: the last second is all failures.
    let opened = (5_000..8_000).step_by(100).find(|&t| {
        fail(&c, t);
        c.state() == State::Open
    });
    assert_eq!(opened, Some(5_000));

    // 100 calls a second: closed afresh, 10 failures in a row among the first calls do not
    // re-open it (a rate still needs 30 outcomes), as with the count window.
    let c = core(defaults());
    for t in 0..9 {
        succeed(&c, t * 10);
    }
    for t in 9..19 {
        fail(&c, t * 10);
    }
    assert_eq!(c.state(), State::Closed, "{:?}", c.numbers(190).window);
    for t in 19..40 {
        fail(&c, t * 10);
    }
    assert_eq!(c.state(), State::Open);
}

#[test]
fn slow_call_rate_over_a_time_window() {
    let c = core(BreakerConfig {
        consecutive_failures: None,
        window: Window::Time {
            span: Duration::from_secs(10),
            buckets: 10,
        },
        slow_call_duration: Some(Duration::from_secs(2)),
        slow_call_rate: Some(Rate::new(0.8, 5)),
        ..no_jitter()
    });
    let slow = |now| {
        let t = c.admit(|| now).unwrap();
        c.record(t, Outcome::Success, true, 0, || now);
    };
    for i in 0..4 {
        slow(i * 1000);
    }
    // 4 of 4 slow, but below the minimum of 5 calls.
    assert_eq!(c.state(), State::Closed);
    // The fifth call reaches the minimum: 4 slow of 5 is 80 %.
    succeed(&c, 4_000);
    assert_eq!(c.state(), State::Open);
}

#[test]
fn slow_calls_count_in_a_count_window_full_of_fast_successes_and_slide_out_of_it() {
    let c = core(BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(10),
        slow_call_duration: Some(Duration::from_secs(1)),
        slow_call_rate: Some(Rate::new(0.5, 10)),
        ..no_jitter()
    });
    let call = |slow: bool| {
        let t = c.admit(|| 0).unwrap();
        c.record(t, Outcome::Success, slow, 0, || 0);
    };
    let window = || c.numbers(0).window.unwrap();
    for _ in 0..10 {
        call(false);
    }
    // Full of fast successes: slow ones still count.
    for _ in 0..4 {
        call(true);
    }
    assert_eq!((window().calls, window().slow), (10, 4));
    // Fast successes push them out again, one by one, once the six older fast ones are out.
    for _ in 0..6 {
        call(false);
    }
    assert_eq!(window().slow, 4);
    for slow in (0..4).rev() {
        call(false);
        assert_eq!(window().slow, slow);
    }
    for _ in 0..5 {
        call(true);
    }
    assert_eq!(c.state(), State::Open);
}

#[test]
fn neutral_outcomes_neither_help_nor_hurt() {
    let c = core(no_jitter());
    for _ in 0..4 {
        fail(&c, 0);
    }
    for _ in 0..10 {
        let t = c.admit(|| 0).unwrap();
        c.record(t, Outcome::Neutral, false, 0, || 0);
    }
    assert!(fail(&c, 0));
    assert_eq!(c.state(), State::Open);
}

#[test]
fn a_success_breaks_the_streak_while_a_rate_window_holds_failures() {
    // A streak rule beside a failure rate: a success is recorded in the window (it holds
    // failures) and still ends the streak.
    let c = core(BreakerConfig {
        consecutive_failures: Some(3),
        throttle: None,
        ..BreakerConfig::default()
    });
    for _ in 0..2 {
        assert!(fail(&c, 0));
    }
    assert!(succeed(&c, 0));
    assert_eq!(c.numbers(0).consecutive_failures, 0);
    for _ in 0..2 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.state(), State::Closed);
    assert!(fail(&c, 0));
    assert_eq!(c.state(), State::Open);
}

#[test]
fn a_call_admitted_before_the_breaker_opened_changes_nothing_when_it_ends() {
    let c = core(no_jitter());
    let late = c.admit(|| 0).unwrap();
    for _ in 0..5 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.state(), State::Open);
    c.record(late, Outcome::Success, false, 0, || 0);
    let n = c.numbers(0);
    // Counted as a success, but out of date for the state machine: the streak that opened
    // the breaker stays as it was.
    assert_eq!(
        (n.state, n.successes, n.consecutive_failures),
        (State::Open, 1, 5)
    );
}

#[test]
fn isolate_bypass_close_and_reset() {
    let c = core(no_jitter());
    c.force(State::Isolated, 0);
    assert_eq!(c.admit(|| 1_000_000).unwrap_err().state, State::Isolated);
    c.force(State::Bypassed, 0);
    for _ in 0..100 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.state(), State::Bypassed);
    c.force(State::Closed, 0);
    assert!(succeed(&c, 0));
    for _ in 0..5 {
        fail(&c, 0);
    }
    assert_eq!(c.state(), State::Open);
    c.reset(0);
    assert_eq!(c.state(), State::Closed);
    let n = c.numbers(0);
    assert_eq!((n.successes, n.failures, n.rejections), (0, 0, 0));
}

#[test]
fn closing_by_hand_clears_the_streak_and_the_back_off_and_isolating_does_not() {
    let c = core(no_jitter());
    for _ in 0..4 {
        fail(&c, 0);
    }
    c.force(State::Isolated, 0);
    assert_eq!(c.numbers(0).consecutive_failures, 4);
    c.force(State::Closed, 0);
    assert_eq!(c.numbers(0).consecutive_failures, 0);
    // A failed probe doubles the next open period; closing by hand starts over at 30 s.
    for _ in 0..5 {
        fail(&c, 0);
    }
    let probe = c.admit(|| 30_000).unwrap();
    c.record(probe, Outcome::Failure(None), false, 0, || 30_000);
    assert_eq!(c.numbers(30_000).reopens, 1);
    c.force(State::Closed, 30_000);
    assert_eq!(c.numbers(30_000).reopens, 0);
    for _ in 0..5 {
        fail(&c, 30_000);
    }
    assert_eq!(c.admit(|| 30_000).unwrap_err().retry_after_ms, Some(30_000));
}

#[test]
fn listeners_hear_transitions_and_a_panicking_one_is_contained() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Log(Mutex<Vec<Event>>);
    impl Listener for Arc<Log> {
        fn on_event(&self, _: &str, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }
    struct Panics;
    impl Listener for Panics {
        fn on_event(&self, _: &str, _: Event) {
            panic!("listener bug");
        }
    }
    let log = Arc::new(Log::default());
    let c = Core::new(
        "l".into(),
        no_jitter(),
        vec![Arc::new(Panics), Arc::new(log.clone())],
    );
    for _ in 0..5 {
        fail(&c, 0);
    }
    assert!(c.admit(|| 1).is_err());
    assert_eq!(c.state(), State::Open);
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            Event::Transition {
                from: State::Closed,
                to: State::Open
            },
            Event::Rejected { state: State::Open },
        ]
    );
}

/// The reference model: what the breaker should do, written plainly.
#[derive(Debug)]
struct Model {
    state: State,
    streak: u32,
    until: u64,
    reopens: u32,
    probes: u32,
    successes: u32,
}

impl Model {
    fn admit(&mut self, now: u64) -> bool {
        if self.state == State::Open && now >= self.until {
            self.state = State::HalfOpen;
            self.probes = 0;
            self.successes = 0;
        }
        match self.state {
            State::Closed => true,
            State::HalfOpen if self.probes < 3 => {
                self.probes += 1;
                true
            }
            _ => false,
        }
    }

    fn record(&mut self, failure: bool, probe: bool, now: u64) {
        if probe {
            self.probes -= 1;
        }
        match self.state {
            State::Closed if failure => {
                self.streak += 1;
                if self.streak >= 5 {
                    self.open(now);
                }
            }
            State::Closed => self.streak = 0,
            State::HalfOpen if failure => {
                self.reopens += 1;
                self.open(now);
            }
            State::HalfOpen => {
                self.successes += 1;
                if self.successes >= 3 {
                    self.state = State::Closed;
                    self.streak = 0;
                    self.reopens = 0;
                }
            }
            _ => {}
        }
    }

    fn open(&mut self, now: u64) {
        self.state = State::Open;
        let period = (30_000u64 << self.reopens.min(10)).min(300_000);
        self.until = now + period;
    }
}

proptest! {
    /// Random outcomes and clock steps, one call at a time: the breaker and the model agree on
    /// every admission and every state.
    #[test]
    fn agrees_with_the_model(steps in proptest::collection::vec((any::<bool>(), 0u64..20_000), 1..400)) {
        let c = core(no_jitter());
        let mut m = Model { state: State::Closed, streak: 0, until: 0, reopens: 0, probes: 0, successes: 0 };
        let mut now = 0;
        for (failure, dt) in steps {
            now += dt;
            let admitted = c.admit(|| now);
            prop_assert_eq!(admitted.is_ok(), m.admit(now), "admission at {}", now);
            if let Ok(t) = admitted {
                let outcome = if failure { Outcome::Failure(None) } else { Outcome::Success };
                c.record(t, outcome, false, 0, || now);
                m.record(failure, t.probe(), now);
            }
            prop_assert_eq!(c.state(), m.state, "state at {}", now);
        }
    }

    /// Concurrent-looking interleavings: several probes admitted before any completes never
    /// exceed the limit, and completing them in any order leaves no slot behind.
    #[test]
    fn probes_never_exceed_the_limit(order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(), successes in any::<[bool; 6]>()) {
        let c = core(BreakerConfig { success_threshold: 10, ..no_jitter() });
        for _ in 0..5 {
            fail(&c, 0);
        }
        let tickets: Vec<_> = (0..6).filter_map(|_| c.admit(|| 30_000).ok()).collect();
        prop_assert_eq!(tickets.len(), 3);
        for &i in order.iter().filter(|&&i| i < 3) {
            let outcome = if successes[i] { Outcome::Success } else { Outcome::Neutral };
            c.record(tickets[i], outcome, false, 0, || 30_000);
        }
        // Every slot came back: three new probes fit, a fourth does not.
        let again: Vec<_> = (0..4).filter_map(|_| c.admit(|| 30_000).ok()).collect();
        prop_assert_eq!(again.len(), 3);
    }
}

#[test]
fn the_default_opens_on_ninety_percent_of_thirty_calls() {
    let cfg = BreakerConfig {
        throttle: None,
        ..BreakerConfig::default()
    };
    let c = core(cfg);
    for _ in 0..30 {
        assert!(succeed(&c, 0));
    }
    // 28 failures of the last 30: under 95 %, still closed.
    for _ in 0..28 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.state(), State::Closed);
    // The 29th makes 96.7 %: open, for about 500 ms.
    assert!(fail(&c, 0));
    assert_eq!(c.state(), State::Open);
    let open = c.numbers(0).open_for_ms.unwrap();
    assert!((450..=550).contains(&open), "{open}");
    // Streaks of eight failures, 80 % of all calls, never open it.
    let c = core(cfg);
    for i in 0..1000 {
        assert!(if i % 10 >= 8 {
            succeed(&c, 0)
        } else {
            fail(&c, 0)
        });
    }
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn successes_still_slide_a_window_that_holds_a_failure() {
    let c = core(BreakerConfig {
        throttle: None,
        ..BreakerConfig::default()
    });
    let window = |c: &Core| c.numbers(0).window.unwrap();
    for _ in 0..30 {
        succeed(&c, 0);
    }
    // Full of successes: one more changes nothing (and is not recorded).
    succeed(&c, 0);
    assert_eq!(window(&c).calls, 30);
    assert_eq!(window(&c).failures, 0);
    assert!(fail(&c, 0));
    assert_eq!(window(&c).failures, 1);
    // 29 successes later the failure is still among the last 30; the 30th pushes it out.
    for _ in 0..29 {
        succeed(&c, 0);
    }
    assert_eq!(window(&c).failures, 1);
    succeed(&c, 0);
    assert_eq!(window(&c).failures, 0);
    assert_eq!(window(&c).calls, 30);
}

/// Offers `n` requests to `c`. The dependency accepts calls either at random, one in `every`
/// of those that reach it (`capacity` false), or up to a capacity of one per `every` requests
/// offered so far (`capacity` true), failing the rest. Returns how many reached it.
fn offer(c: &Core, n: u32, every: u32, capacity: bool) -> u32 {
    let (mut sent, mut accepted) = (0, 0);
    for i in 1..=n {
        if let Ok(t) = c.admit(|| 0) {
            sent += 1;
            let accept = if capacity {
                accepted < i / every
            } else {
                sent % every == 0
            };
            accepted += u32::from(accept);
            let outcome = if accept {
                Outcome::Success
            } else {
                Outcome::Failure(None)
            };
            c.record(t, outcome, false, 0, || 0);
        }
    }
    sent
}

#[test]
fn the_throttle_sends_about_k_times_what_is_accepted() {
    // No trip rule, so only the throttle acts.
    let cfg = BreakerConfig {
        failure_rate: None,
        ..BreakerConfig::default()
    };
    // A healthy dependency is never throttled.
    let c = core(cfg);
    assert_eq!(offer(&c, 10_000, 1, false), 10_000);
    // Capacity for one request in ten: the throttle sends about k = 3 times that, and refuses
    // the rest locally, so the dependency is offered 30 % of the traffic, not all of it.
    let c = core(cfg);
    let sent = offer(&c, 10_000, 10, true);
    assert!((2_500..=3_500).contains(&sent), "{sent}");
    assert!(c.numbers(0).rejections > 6_000);
    // Half accepted at random: 3 × 50 % is more than all, so nothing is refused.
    let c = core(cfg);
    assert_eq!(offer(&c, 10_000, 2, false), 10_000);
    // k = 2, the SRE book's value, throttles a dependency that fails two calls in three at
    // random; 3 does not.
    let c = core(BreakerConfig {
        throttle: Some(Throttle {
            k: 2.0,
            window: 100,
        }),
        ..cfg
    });
    assert!(offer(&c, 10_000, 3, false) < 9_000);
    let c = core(cfg);
    assert_eq!(offer(&c, 10_000, 2, false), 10_000);
}

#[test]
fn a_breaker_that_closes_forgets_what_the_throttle_saw() {
    let c = core(BreakerConfig::default());
    // An outage: every call fails until the failure rate opens the breaker.
    while c.state() == State::Closed {
        fail(&c, 0);
    }
    // Two probes succeed after the open period: closed, and nothing is throttled.
    assert!(succeed(&c, 1_000));
    assert!(succeed(&c, 1_000));
    assert_eq!(c.state(), State::Closed);
    for _ in 0..100 {
        assert!(
            succeed(&c, 1_000),
            "a closed breaker that just closed throttles nothing"
        );
    }
}

#[test]
fn a_throttled_call_is_a_retryable_rejection_without_hint() {
    let c = core(BreakerConfig {
        failure_rate: None,
        ..BreakerConfig::default()
    });
    offer(&c, 1_000, 100, true);
    let refused = loop {
        match c.admit(|| 0) {
            Err(r) => break r,
            Ok(t) => c.record(t, Outcome::Failure(None), false, 0, || 0),
        }
    };
    assert_eq!(refused.state, State::Closed);
    assert_eq!(refused.retry_after_ms, None);
}

/// A breaker under `cfg` whose dependency has answered: opened, then closed by its probes, so
/// its windows are empty and the throttle may act on the next failures.
fn answered(cfg: BreakerConfig) -> Core {
    let c = core(cfg);
    c.trip_now(0);
    assert!(succeed(&c, 10_000));
    assert!(succeed(&c, 10_000));
    assert_eq!(c.state(), State::Closed);
    c
}

#[test]
fn the_throttle_waits_for_a_fifth_of_its_window() {
    let c = answered(BreakerConfig {
        failure_rate: None,
        ..BreakerConfig::default()
    });
    // 19 failures in a row: too few requests to judge, nothing refused.
    for _ in 0..19 {
        assert!(fail(&c, 0));
    }
    assert_eq!(c.numbers(0).rejections, 0);
    // From the 20th on, a dependency that accepts nothing gets almost nothing.
    let refused = (0..100).filter(|_| !fail(&c, 0)).count();
    assert!(refused > 80, "{refused}");
}

#[test]
fn a_dependency_that_never_answered_is_left_to_the_failure_rate() {
    // A breaker made while its dependency is down, called one request at a time: the
    // throttle refuses nothing before the dependency has answered once, so the failure rate
    // sees every call and opens the breaker: on the last 30 calls, or on the last second's
    // once those reach back further and it holds at least 10 (20 and 10 calls a second; at 5
    // a second it never does). Had the throttle acted from its 20th request, it
    // would have refused 95 % and more of them, and the rate would have waited hundreds of
    // requests for its 30 outcomes.
    for (gap, opened_at) in [(0, 30), (10, 30), (50, 21), (100, 11), (200, 30)] {
        let c = core(BreakerConfig::default());
        let mut calls = 0;
        while c.state() == State::Closed {
            assert!(fail(&c, calls * gap), "gap {gap} ms: refused while closed");
            calls += 1;
            assert!(
                calls <= 100,
                "gap {gap} ms: still closed after 100 failures"
            );
        }
        assert_eq!((calls, c.state()), (opened_at, State::Open), "gap {gap} ms");
        assert_eq!(c.numbers(0).rejections, 0, "gap {gap} ms");
    }
}

#[test]
fn a_breaker_made_during_an_outage_closes_soon_after_its_recovery() {
    // Twenty requests a second, the dependency down for the first 10 s: the breaker opens and
    // probes on its open period's clock, so the first call after the recovery that finds the
    // period over is a probe, and two successful probes close it, within a second.
    let c = core(BreakerConfig::default());
    let mut now = 0;
    while now < 10_000 {
        fail(&c, now);
        now += 50;
    }
    assert_ne!(c.state(), State::Closed);
    let recovered = now;
    while c.state() != State::Closed {
        succeed(&c, now);
        now += 50;
        assert!(
            now - recovered <= 1_000,
            "still {:?} at {now} ms",
            c.state()
        );
    }
    // And, the dependency having answered, the throttle is back: an outage now is shed.
    for _ in 0..20 {
        assert!(fail(&c, now));
    }
    assert!((0..50).filter(|_| !fail(&c, now)).count() > 0);
}

#[test]
fn a_dependency_that_fails_everything_again_after_a_close_is_probed_on_the_clock() {
    // The probes closed the breaker, then every call fails again, one request at a time. The
    // throttle acts from its 20th request, and once its window has held no accepted request
    // for the longest open period (750 ms) the breaker opens: before, it stayed closed for
    // 700 to 1 300 requests (8 s at 100 a second, minutes at 5), refusing 95 % and more and
    // letting one in a hundred through as its only probe.
    for gap in [10, 50, 200] {
        for seed in 0..10 {
            let c = answered(BreakerConfig {
                seed,
                ..BreakerConfig::default()
            });
            let mut now = 10_000;
            while c.state() == State::Closed {
                fail(&c, now);
                now += gap;
                assert!(
                    now - 10_000 <= 22 * gap + 750,
                    "gap {gap} ms, seed {seed}: still closed at {now} ms"
                );
            }
            assert_eq!(c.state(), State::Open, "gap {gap} ms, seed {seed}");
            assert!(c.admit(|| now).unwrap_err().retry_after_ms.is_some());
        }
    }
}

#[test]
fn the_breaker_opens_after_the_longest_open_period_without_an_accept_not_before() {
    // 100 requests a second after a close, every call failing: the throttle acts from the
    // 20th request (200 ms), finds no accepted request in its window, and the breaker opens
    // 750 ms later, its open period (500 ms, no jitter here) starting then.
    let c = answered(BreakerConfig {
        jitter_ratio: 0.0,
        ..BreakerConfig::default()
    });
    let mut now = 10_000;
    while c.state() == State::Closed {
        fail(&c, now);
        now += 10;
        assert!(now <= 12_000, "still closed at {now} ms");
    }
    let opened = now - 10;
    assert_eq!(opened, 10_000 + 200 + 750, "opened at {opened} ms");
    assert_eq!(c.admit(|| opened).unwrap_err().retry_after_ms, Some(500));

    // An accepted request in the window ends the silence: it starts again, in full, only
    // once that request has left the window (100 requests later).
    let c = answered(BreakerConfig::default());
    let mut now = 10_000;
    for _ in 0..60 {
        fail(&c, now);
        now += 10;
    }
    // Silent since about 10 200; at 10 600, before the breaker would open, one call is let
    // through and accepted.
    while !succeed(&c, now) {}
    let accepted = now;
    while c.state() == State::Closed {
        fail(&c, now);
        now += 10;
        assert!(now <= 14_000, "still closed at {now} ms");
    }
    assert!(
        now - 10 >= accepted + 700 + 750,
        "opened at {} ms, {} ms after the accepted request",
        now - 10,
        now - 10 - accepted
    );
}

#[test]
fn a_dependency_that_accepts_a_little_stays_throttled_not_open() {
    // Capacity for one request in ten, at 100 requests a second for 10 s: the window always
    // holds an accepted request, so the throttle sheds the rest and the breaker stays closed.
    let c = answered(BreakerConfig::default());
    let (mut accepted, mut sent) = (0, 0);
    for i in 1..=1_000u64 {
        let now = 10_000 + i * 10;
        if let Ok(t) = c.admit(|| now) {
            sent += 1;
            let accept = accepted < i / 10;
            accepted += u64::from(accept);
            let outcome = if accept {
                Outcome::Success
            } else {
                Outcome::Failure(None)
            };
            c.record(t, outcome, false, 0, || now);
        }
        assert_eq!(c.state(), State::Closed, "at request {i}");
    }
    assert!((200..=450).contains(&sent), "{sent}");
}

#[test]
fn the_throttle_acts_from_exactly_a_fifth_of_its_window() {
    // With 19 requests in its window (of 100) the throttle refuses nothing; with 20, a call
    // that finds only failures there is refused with probability 20/21: seen for some seeds.
    let refused = (0..20u64)
        .filter(|&seed| {
            let c = answered(BreakerConfig {
                failure_rate: None,
                seed,
                ..BreakerConfig::default()
            });
            for _ in 0..20 {
                assert!(fail(&c, 0), "seed {seed}");
            }
            c.admit(|| 0).is_err()
        })
        .count();
    assert!(refused > 10, "{refused}");
}

#[test]
fn the_throttle_draws_a_random_number_only_when_it_may_refuse() {
    // Two breakers with one seed: one checks the throttle five more times while its window
    // says refuse with probability 0 (30 requests, 10 accepted, k = 3). Had those checks drawn
    // random numbers, the jitter of the open period both then get would differ.
    let run = |extra: u32| {
        let c = core(BreakerConfig {
            failure_rate: None,
            ..BreakerConfig::default()
        });
        for _ in 0..10 {
            assert!(succeed(&c, 0));
        }
        for _ in 0..20 {
            assert!(fail(&c, 0));
        }
        for _ in 0..extra {
            let t = c.admit(|| 0).unwrap();
            c.record(t, Outcome::Neutral, false, 0, || 0);
        }
        c.trip_now(0);
        c.numbers(0).open_for_ms.unwrap()
    };
    assert_eq!(run(5), run(0));
}

#[test]
fn a_probe_from_an_earlier_half_open_period_frees_no_slot_of_this_one() {
    let c = core(BreakerConfig {
        half_open_probes: 2,
        ..no_jitter()
    });
    for _ in 0..5 {
        fail(&c, 0);
    }
    // First half-open period: two probes; one fails, the breaker re-opens for 60 s.
    let old = c.admit(|| 30_000).unwrap();
    let failed = c.admit(|| 30_000).unwrap();
    c.record(failed, Outcome::Failure(None), false, 0, || 30_000);
    assert_eq!(c.state(), State::Open);
    // Second half-open period: both slots taken.
    let a = c.admit(|| 90_000).unwrap();
    let b = c.admit(|| 90_000).unwrap();
    assert!(a.probe() && b.probe());
    assert!(c.admit(|| 90_000).is_err());
    // The old probe ends now: its slot belonged to the first period, nothing is freed.
    c.record(old, Outcome::Neutral, false, 0, || 90_000);
    assert_eq!(c.admit(|| 90_000).unwrap_err().state, State::HalfOpen);
    c.record(a, Outcome::Neutral, false, 0, || 90_000);
    assert!(c.admit(|| 90_000).unwrap().probe());
}

#[test]
fn busy_probes_refuse_with_a_spread_time_to_come_back() {
    let c = core(BreakerConfig::default());
    while c.state() == State::Closed {
        fail(&c, 0);
    }
    // After the open period one probe goes out; the calls behind it are refused and told to
    // come back in about one open period (250 to 750 ms), not all at the same moment.
    let probe = c.admit(|| 1_000).unwrap();
    assert!(probe.probe());
    let hints: Vec<u64> = (0..20)
        .map(|_| c.admit(|| 1_000).unwrap_err())
        .inspect(|r| assert_eq!(r.state, State::HalfOpen))
        .map(|r| r.retry_after_ms.unwrap())
        .collect();
    assert!(hints.iter().all(|h| (250..=750).contains(h)), "{hints:?}");
    assert!(hints.iter().any(|h| *h != hints[0]), "{hints:?}");
}

#[test]
fn a_hint_shorter_than_the_open_period_leaves_the_open_period() {
    let c = core(no_jitter());
    for _ in 0..4 {
        fail(&c, 0);
    }
    let t = c.admit(|| 0).unwrap();
    c.record(
        t,
        Outcome::Failure(Some(Duration::from_secs(5))),
        false,
        0,
        || 0,
    );
    // The server would take calls again in 5 s; the breaker still waits its 30 s.
    assert_eq!(c.admit(|| 0).unwrap_err().retry_after_ms, Some(30_000));
    assert_eq!(c.admit(|| 29_999).unwrap_err().state, State::Open);
    assert!(c.admit(|| 30_000).unwrap().probe());
}

/// Opens the default breaker at 0 and admits its one probe at 1 s (after the open period).
fn default_with_a_probe_in_flight() -> (Core, Ticket) {
    let c = core(BreakerConfig::default());
    while c.state() == State::Closed {
        fail(&c, 0);
    }
    let probe = c.admit(|| 1_000).unwrap();
    assert!(probe.probe());
    (c, probe)
}

#[test]
fn a_hung_probe_is_counted_as_failed_after_the_probe_timeout() {
    let (c, hung) = default_with_a_probe_in_flight();
    // For a minute the probe holds the one slot: the others are refused, half-open.
    for now in [1_000, 30_000, 60_999] {
        assert_eq!(c.admit(|| now).unwrap_err().state, State::HalfOpen, "{now}");
    }
    assert_eq!(c.numbers(60_999).reopens, 0);
    // At 61 s the probe has held it for 60 s: it counts as a failed probe, the breaker
    // re-opens (for 750 ms, the grown period, less its jitter) and this call is refused open.
    let refused = c.admit(|| 61_000).unwrap_err();
    assert_eq!(refused.state, State::Open);
    assert!(
        (675..=750).contains(&refused.retry_after_ms.unwrap()),
        "{refused:?}"
    );
    assert_eq!(c.numbers(61_000).reopens, 1);
    // Then it probes again, with a fresh slot; the hung probe's late end changes nothing.
    let probe = c.admit(|| 62_000).unwrap();
    assert!(probe.probe());
    c.record(hung, Outcome::Success, false, 0, || 62_000);
    assert_eq!(c.state(), State::HalfOpen);
    assert!(c.admit(|| 62_000).is_err(), "one probe at a time");
    c.record(probe, Outcome::Success, false, 0, || 62_001);
    assert!(succeed(&c, 62_002));
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn the_probe_timeout_runs_from_the_latest_probe_not_from_half_open() {
    let (c, first) = default_with_a_probe_in_flight();
    // The first probe succeeds (one of two needed); the second is admitted 61 s after the
    // breaker went half-open, and has its own minute.
    c.record(first, Outcome::Success, false, 0, || 1_500);
    let second = c.admit(|| 62_000).unwrap();
    assert!(second.probe());
    assert_eq!(c.admit(|| 62_000).unwrap_err().state, State::HalfOpen);
    assert_eq!(c.admit(|| 121_999).unwrap_err().state, State::HalfOpen);
    assert_eq!(c.admit(|| 122_000).unwrap_err().state, State::Open);
}

#[test]
fn with_several_probes_it_waits_until_every_slot_has_been_held_that_long() {
    let c = core(BreakerConfig {
        probe_timeout: Duration::from_secs(10),
        ..no_jitter()
    });
    for _ in 0..5 {
        fail(&c, 0);
    }
    // Three probes, admitted at 30, 32 and 34 s; they all hang.
    for now in [30_000, 32_000, 34_000] {
        assert!(c.admit(|| now).unwrap().probe());
    }
    assert_eq!(c.admit(|| 43_999).unwrap_err().state, State::HalfOpen);
    // 10 s after the latest: counted as a failed probe, the open period doubles.
    let refused = c.admit(|| 44_000).unwrap_err();
    assert_eq!(refused.state, State::Open);
    assert_eq!(refused.retry_after_ms, Some(60_000));
}

#[test]
fn a_refused_call_names_its_breaker() {
    let c = Core::new("llm".into(), no_jitter(), Vec::new());
    c.force(State::Isolated, 0);
    assert_eq!(&*c.admit(|| 0).unwrap_err().breaker, "llm");
}

/// Real threads record outcomes while another swaps the window's size back and forth: the
/// quiet flags never claim quiet for windows that hold a failure or are not full, and once
/// the dust settles, a window full of successes is quiet again.
#[test]
fn the_quiet_flags_stay_true_under_threads_and_reconfigurations() {
    let windowed = |n: u32| BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(n),
        failure_rate: Some(Rate::new(1.0, n)),
        throttle: Some(Throttle::new(1000.0, 16)),
        ..no_jitter()
    };
    let c = std::sync::Arc::new(core(windowed(8)));
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..3_000u64 {
                    // One failure in 50, spread differently per thread.
                    if (i + w * 17) % 50 == 0 {
                        fail(&c, 0);
                    } else {
                        succeed(&c, 0);
                    }
                }
            })
        })
        .collect();
    for i in 0..300u32 {
        c.reconfigure(windowed(if i % 2 == 0 { 16 } else { 8 }), 0);
    }
    for w in workers {
        w.join().unwrap();
    }
    let live = c.live();
    let q = c.quiet.load(Ordering::SeqCst);
    assert!(
        q & QUIET_RECORD == 0 || live.quiet() & QUIET_RECORD != 0,
        "quiet claimed for {:?}",
        c.numbers(0).window
    );
    assert!(q & QUIET_ADMIT == 0 || live.quiet() & QUIET_ADMIT != 0);
    assert_eq!(c.state(), State::Closed);
    // Fill whatever window is in force with successes: quiet again, and the happy path
    // counts a success without touching the window.
    for _ in 0..32 {
        succeed(&c, 0);
    }
    assert_eq!(
        c.quiet.load(Ordering::SeqCst) & (QUIET_RECORD | QUIET_ADMIT),
        3
    );
    let calls = c.numbers(0).window.unwrap().calls;
    succeed(&c, 0);
    assert_eq!(c.numbers(0).window.unwrap().calls, calls);
}

/// The quiet flags, step by step on one thread: set exactly when every window is full of
/// plain successes, cleared (with a new version) by whatever ends that, one flag at a time.
#[test]
fn the_quiet_flags_follow_the_windows_exactly() {
    let flags = |c: &Core| c.quiet.load(Ordering::SeqCst) & (QUIET_RECORD | QUIET_ADMIT);
    let version = |c: &Core| c.quiet.load(Ordering::SeqCst) / VERSION;
    let cfg = |n: u32| BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(n),
        failure_rate: Some(Rate::new(1.0, n)),
        slow_call_duration: Some(Duration::from_secs(1)),
        throttle: Some(Throttle::new(1000.0, 4)),
        ..no_jitter()
    };
    let c = core(cfg(4));
    assert_eq!(flags(&c), 0);
    for _ in 0..3 {
        succeed(&c, 0);
        assert_eq!(flags(&c), 0, "windows not full yet");
    }
    succeed(&c, 0);
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    // Quiet: a success changes no window.
    let v = version(&c);
    succeed(&c, 0);
    assert_eq!((flags(&c), version(&c)), (QUIET_RECORD | QUIET_ADMIT, v));
    // A failure ends both, with one new version.
    fail(&c, 0);
    assert_eq!((flags(&c), version(&c)), (0, v + 1));
    for _ in 0..3 {
        succeed(&c, 0);
        assert_eq!(flags(&c), 0, "the failure is still in the windows");
    }
    succeed(&c, 0);
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    // A slow success ends only the rate window's quiet (the throttle does not judge
    // slowness): the admit flag stays.
    let v = version(&c);
    let t = c.admit(|| 0).unwrap();
    c.record(t, Outcome::Success, true, 0, || 0);
    assert_eq!((flags(&c), version(&c)), (QUIET_ADMIT, v + 1));
    for _ in 0..4 {
        succeed(&c, 0);
    }
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    // The same windows: still quiet after a reconfiguration.
    c.reconfigure(cfg(4), 0);
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    // A bigger rate window starts empty: the throttle's, kept, is still quiet.
    c.reconfigure(cfg(8), 0);
    assert_eq!(flags(&c), QUIET_ADMIT);
    // A time window is never quiet to record into; the throttle's flag is unaffected.
    let timed = BreakerConfig {
        window: Window::Time {
            span: Duration::from_secs(10),
            buckets: 10,
        },
        ..cfg(8)
    };
    c.reconfigure(timed, 0);
    for _ in 0..10 {
        succeed(&c, 0);
    }
    assert_eq!(flags(&c), QUIET_ADMIT);
    // A rate rule added to a breaker that had none gets a window, which counts.
    let c = core(no_jitter());
    assert_eq!(c.numbers(0).window, None);
    let done = c.reconfigure(cfg(4), 0);
    assert!(done.is_lossless());
    succeed(&c, 0);
    assert_eq!(c.numbers(0).window.map(|w| w.calls), Some(1));
}

/// A reset empties the windows, so it ends their quiet: both flags are cleared, and the next
/// success is counted in the window again (not taken by the happy path as if the window were
/// still full of successes), and so is the throttle's next request.
#[test]
fn a_reset_ends_the_quiet_of_the_windows_it_empties() {
    let flags = |c: &Core| c.quiet.load(Ordering::SeqCst) & (QUIET_RECORD | QUIET_ADMIT);
    let c = core(BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(4),
        failure_rate: Some(Rate::new(1.0, 4)),
        throttle: Some(Throttle::new(1000.0, 4)),
        ..no_jitter()
    });
    for _ in 0..4 {
        succeed(&c, 0);
    }
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    c.reset(0);
    assert_eq!(flags(&c), 0);
    assert_eq!(c.numbers(0).window.map(|w| w.calls), Some(0));
    succeed(&c, 0);
    assert_eq!(c.numbers(0).window.map(|w| w.calls), Some(1));
    assert_eq!(
        c.live().throttle.as_ref().map(|w| w.counts().calls),
        Some(1)
    );
    // Closing by hand (here from bypassed, which keeps the windows as they are) resets them
    // the same way.
    for _ in 0..3 {
        succeed(&c, 0);
    }
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    c.force(State::Bypassed, 0);
    assert_eq!(flags(&c), QUIET_RECORD | QUIET_ADMIT);
    c.force(State::Closed, 0);
    assert_eq!(flags(&c), 0);
    succeed(&c, 0);
    assert_eq!(c.numbers(0).window.map(|w| w.calls), Some(1));
}

/// The probes in flight are over the new limit only when there are more of them than it
/// allows: as many as the limit is not a reset.
#[test]
fn probes_exactly_at_a_new_limit_are_not_over_it() {
    let (c, probe) = default_with_a_probe_in_flight();
    assert_eq!(c.live().cfg.half_open_probes, 1);
    let done = c.reconfigure(BreakerConfig::default(), 1_000);
    assert_eq!(done.state, State::HalfOpen);
    assert!(done.is_lossless(), "{done}");
    c.record(probe, Outcome::Success, false, 0, || 1_000);
}

/// The slow-call threshold reads back as configured, through a reconfiguration too; one
/// beyond what `u64` nanoseconds hold (584 years) stays the longest threshold, not none.
#[test]
fn the_slow_call_threshold_reads_back_as_configured() {
    let with = |d: Option<Duration>| BreakerConfig {
        slow_call_duration: d,
        ..no_jitter()
    };
    let c = core(with(None));
    assert_eq!(c.slow_call_duration(), None);
    c.reconfigure(with(Some(Duration::from_millis(250))), 0);
    assert_eq!(c.slow_call_duration(), Some(Duration::from_millis(250)));
    c.reconfigure(with(None), 0);
    assert_eq!(c.slow_call_duration(), None);
    let c = core(with(Some(Duration::MAX)));
    assert_eq!(
        c.slow_call_duration(),
        Some(Duration::from_nanos(u64::MAX - 1))
    );
}

/// A duration whose milliseconds do not fit in a `u64`, and whose milliseconds cast to one
/// (`as u64`, wrapping) are 384: about 585 million years.
const WRAPS_TO_384_MS: Duration = Duration::from_secs(18_446_744_073_709_552);

#[test]
fn an_open_period_of_any_length_saturates_instead_of_panicking_or_wrapping() {
    // "Stay open until an operator closes it": the longest durations there are.
    let c = core(BreakerConfig {
        consecutive_failures: Some(1),
        open_duration: Duration::MAX,
        max_open_duration: Duration::MAX,
        ..no_jitter()
    });
    assert!(fail(&c, 5));
    assert_eq!(c.state(), State::Open);
    assert_eq!(
        c.admit(|| 10).unwrap_err().retry_after_ms,
        Some(u64::MAX - 10)
    );
    assert!(c.admit(|| u64::MAX - 1).is_err());
    // Tripped by hand, the same.
    c.force(State::Closed, 20);
    c.trip_now(20);
    assert_eq!(
        c.admit(|| 30).unwrap_err().retry_after_ms,
        Some(u64::MAX - 30)
    );
    // With jitter and a back-off, the same.
    let c = core(BreakerConfig {
        consecutive_failures: Some(1),
        open_duration: WRAPS_TO_384_MS,
        max_open_duration: Duration::MAX,
        jitter_ratio: 0.5,
        ..no_jitter()
    });
    assert!(fail(&c, 0));
    assert_eq!(c.admit(|| 1_000).unwrap_err().state, State::Open);
}

#[test]
fn a_server_hint_keeps_the_breaker_open_up_to_max_hint() {
    let open_for = |max_hint: Duration, hint: Duration| {
        let c = core(BreakerConfig {
            consecutive_failures: Some(1),
            max_hint,
            ..no_jitter()
        });
        let t = c.admit(|| 0).unwrap();
        c.record(t, Outcome::Failure(Some(hint)), false, 0, || 0);
        c.admit(|| 0).unwrap_err().retry_after_ms.unwrap()
    };
    let default = BreakerConfig::default().max_hint;
    assert_eq!(default, Duration::from_secs(60));
    // The open period here is 30 s: a shorter hint leaves it, a longer one lengthens it up to
    // max_hint, and a longer one than that is cut to it.
    assert_eq!(open_for(default, Duration::from_secs(10)), 30_000);
    assert_eq!(open_for(default, Duration::from_secs(45)), 45_000);
    assert_eq!(open_for(default, Duration::from_secs(60)), 60_000);
    assert_eq!(open_for(default, Duration::from_secs(86_400)), 60_000);
    assert_eq!(open_for(default, Duration::MAX), 60_000);
    assert_eq!(open_for(default, WRAPS_TO_384_MS), 60_000);
    // No hint is heeded with zero; any, with Duration::MAX (below).
    assert_eq!(open_for(Duration::ZERO, Duration::from_secs(45)), 30_000);
    assert_eq!(
        open_for(Duration::MAX, Duration::from_secs(86_400)),
        86_400_000
    );
}

#[test]
fn a_server_hint_of_any_length_keeps_the_breaker_open_that_long_without_a_cap() {
    for (hint, now) in [(Duration::MAX, 5), (WRAPS_TO_384_MS, 0)] {
        let c = core(BreakerConfig {
            consecutive_failures: Some(1),
            max_hint: Duration::MAX,
            ..no_jitter()
        });
        let t = c.admit(|| now).unwrap();
        c.record(t, Outcome::Failure(Some(hint)), false, 0, || now);
        assert_eq!(
            c.admit(|| now + 1_000).unwrap_err().retry_after_ms,
            Some(u64::MAX - now - 1_000),
            "{hint:?}"
        );
    }
}

#[test]
fn busy_probes_refuse_without_panicking_whatever_the_open_period() {
    let c = core(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        ..no_jitter()
    });
    assert!(fail(&c, 0));
    let _probe = c.admit(|| 30_000).unwrap();
    // The open period made as long as it gets while the probe runs: the next call is told to
    // come back after it (saturated), and nothing panics.
    let mut cfg = c.live().cfg;
    cfg.open_duration = Duration::MAX;
    cfg.max_open_duration = Duration::MAX;
    c.reconfigure(cfg, 30_000);
    for now in 30_001..30_020 {
        let refused = c.admit(|| now).unwrap_err();
        assert_eq!(refused.state, State::HalfOpen);
        assert_eq!(refused.retry_after_ms, Some(u64::MAX));
    }
}

#[test]
fn a_probe_timeout_of_any_length_is_not_cut_short() {
    let c = core(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_probes: 1,
        probe_timeout: WRAPS_TO_384_MS,
        ..no_jitter()
    });
    assert!(fail(&c, 0));
    let _probe = c.admit(|| 30_000).unwrap();
    // Held for an hour: far from its timeout, the probe keeps its slot.
    let refused = c.admit(|| 30_000 + 3_600_000).unwrap_err();
    assert_eq!(refused.state, State::HalfOpen);
    assert_eq!(c.state(), State::HalfOpen);
}

#[test]
fn a_rate_trips_at_exactly_its_ratio() {
    // Fractions whose product with the number of calls rounds up in floating point
    // (0.07 × 100 = 7.000000000000001): "at least 7 % of 100 calls" is 7 failures, not 8.
    for (ratio, calls, failures) in [
        (0.07, 100, 7),
        (0.14, 50, 7),
        (0.28, 100, 28),
        (0.55, 100, 55),
        (0.56, 50, 28),
    ] {
        for slow_rule in [false, true] {
            let rate = Some(Rate::new(ratio, calls));
            let c = core(BreakerConfig {
                consecutive_failures: None,
                window: Window::Count(calls),
                failure_rate: if slow_rule { None } else { rate },
                slow_call_duration: Some(Duration::from_secs(1)),
                slow_call_rate: if slow_rule { rate } else { None },
                ..no_jitter()
            });
            let call = |bad: bool| {
                let t = c.admit(|| 0).unwrap();
                let outcome = if bad && !slow_rule {
                    Outcome::Failure(None)
                } else {
                    Outcome::Success
                };
                c.record(t, outcome, bad && slow_rule, 0, || 0);
            };
            for _ in 0..calls - failures {
                call(false);
            }
            for _ in 1..failures {
                call(true);
            }
            assert_eq!(c.state(), State::Closed, "{ratio} of {calls}");
            call(true);
            assert_eq!(
                c.state(),
                State::Open,
                "{ratio} of {calls}, slow: {slow_rule}"
            );
        }
    }
}

#[test]
fn a_streak_and_the_re_open_count_stop_at_their_largest_rather_than_overflow() {
    // No rule that a streak trips: failures may come in a row for as long as they like.
    let c = core(BreakerConfig {
        consecutive_failures: None,
        failure_rate: None,
        ..BreakerConfig::default()
    });
    c.consecutive.store(u32::MAX - 1, Ordering::Relaxed);
    assert!(fail(&c, 0));
    assert!(fail(&c, 0));
    assert_eq!(c.numbers(0).consecutive_failures, u32::MAX);
    assert_eq!(c.state(), State::Closed);
    // A probe failing after as many re-openings as a count holds: one more is still that.
    let c = core(no_jitter());
    c.trip_now(0);
    c.reopens.store(u32::MAX, Ordering::Relaxed);
    let t = u64::MAX / 4;
    assert!(fail(&c, t));
    let n = c.numbers(t);
    assert_eq!((n.state, n.reopens), (State::Open, u32::MAX));
}

/// The end of an open period carries its trip's number below it: consecutive trips with the
/// same end write different values (so a trip that lost the race can tell its own write from
/// the winner's), the end reads back unchanged for the whole range of trip numbers (the tag
/// wraps within its 16 bits, never into the end), and an end from 2^48 ms on is "never".
#[test]
fn an_open_period_s_end_is_tagged_with_its_trip() {
    let c = core(no_jitter());
    let end = 30_000;
    let (a, b) = (c.tag_until(end), c.tag_until(end));
    assert_ne!(a, b);
    assert_eq!((until_of(a), until_of(b)), (end, end));
    for trips in [0xffff, 0x1_0000, 0x1_ffff, u64::MAX] {
        c.trips.store(trips, Ordering::Relaxed);
        let tagged = c.tag_until(end);
        assert_eq!(until_of(tagged), end, "after {trips:#x} trips");
        assert_eq!(tagged & 0xffff, trips & 0xffff, "after {trips:#x} trips");
    }
    let last = (1 << 48) - 1;
    assert_eq!(until_of(c.tag_until(last)), last);
    assert_eq!(c.tag_until(1 << 48), FOREVER);
    assert_eq!(until_of(FOREVER), FOREVER);
}

/// A trip that lost the race undoes its own write of the end, and only its own: not a value
/// another trip wrote since (the same end with another tag), and not "never", which carries no
/// tag to tell whose it is.
#[test]
fn a_losing_trip_undoes_only_its_own_end() {
    let c = core(no_jitter());
    let previous = c.tag_until(10_000);
    c.open_until.store(previous, Ordering::Relaxed);
    let ours = c.tag_until(30_000);
    c.open_until.store(ours, Ordering::Relaxed);
    c.undo_until(ours, previous);
    assert_eq!(c.open_until.load(Ordering::Relaxed), previous);

    let theirs = c.tag_until(30_000);
    c.open_until.store(theirs, Ordering::Relaxed);
    c.undo_until(ours, previous);
    assert_eq!(c.open_until.load(Ordering::Relaxed), theirs);

    c.open_until.store(FOREVER, Ordering::Relaxed);
    c.undo_until(FOREVER, previous);
    assert_eq!(c.open_until.load(Ordering::Relaxed), FOREVER);
}

/// At the cap, the jitter still spreads the open period, over the upper half of its range
/// below the cap (keeping the mean of the capped draws), rather than piling every draw that
/// would have gone above it (half of them) onto the cap itself. The defaults reach the cap
/// with the first failed probe (500 ms × 1.5 = 750 ms): every re-opening after it is at the
/// cap, and breakers re-opened together would otherwise probe in the same millisecond half
/// the time.
#[test]
fn jitter_still_spreads_an_open_period_at_its_cap() {
    let periods: Vec<u64> = (0..400u64)
        .map(|seed| {
            let c = core(BreakerConfig {
                seed,
                ..BreakerConfig::default()
            });
            c.trip_now(0);
            let until = c.numbers(0).open_for_ms.unwrap();
            // The probe fails: re-opened for 750 ms, ±10 %, at most 750 ms: 712.5 to 750 ms.
            let t = c.admit(|| until).unwrap();
            assert!(t.probe());
            c.record(t, Outcome::Failure(None), false, 0, || until);
            c.numbers(until).open_for_ms.unwrap()
        })
        .collect();
    assert!(
        periods.iter().all(|p| (712..=750).contains(p)),
        "{periods:?}"
    );
    let at_cap = periods.iter().filter(|&&p| p == 750).count();
    assert!(at_cap <= 20, "{at_cap} of 400 periods exactly at the cap");
    // Spread evenly below it: about a quarter in each quarter of the range, and the mean
    // the capped draws had (731.25 ms), within about 5 standard errors.
    let low = periods.iter().filter(|&&p| p < 722).count();
    assert!((70..=130).contains(&low), "{low}");
    let mean = periods.iter().sum::<u64>() as f64 / 400.0;
    assert!((728.0..=734.5).contains(&mean), "{mean}");
}

/// A spread that just reaches the cap (500 ms ± 50 % with a cap of 750 ms) is the plain
/// jitter, its whole range from 250 ms: only a spread past the cap is drawn from its upper
/// half below the cap.
#[test]
fn a_spread_that_just_reaches_the_cap_keeps_its_whole_range() {
    let periods: Vec<u64> = (0..200u64)
        .map(|seed| {
            let c = core(BreakerConfig {
                seed,
                jitter_ratio: 0.5,
                open_duration: Duration::from_millis(500),
                max_open_duration: Duration::from_millis(750),
                ..BreakerConfig::default()
            });
            c.trip_now(0);
            c.numbers(0).open_for_ms.unwrap()
        })
        .collect();
    assert!(
        periods.iter().all(|p| (250..=750).contains(p)),
        "{periods:?}"
    );
    let below_half = periods.iter().filter(|&&p| p < 500).count();
    assert!(
        (70..=130).contains(&below_half),
        "{below_half} of 200 below 500 ms"
    );
}
