//! Loom models of the breaker's concurrent paths.
//!
//! `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom cargo test -p palisade-breaker --lib --release loom`

use super::*;
use loom::sync::Arc as LoomArc;
use loom::sync::atomic::AtomicUsize;
use loom::thread;

fn cfg(probes: u32, success_threshold: u32, failures: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(failures),
        jitter_ratio: 0.0,
        half_open_probes: probes,
        success_threshold,
        ..BreakerConfig::classic()
    }
}

/// Opens the breaker (one thread, before the model's threads start).
fn open(c: &Core, failures: u32) {
    for _ in 0..failures {
        let t = c.admit(|| 0).unwrap();
        c.record(t, Outcome::Failure(None), false, 0, || 0);
    }
    assert_eq!(c.state(), State::Open);
}

struct Count(LoomArc<AtomicUsize>);

impl Listener for Count {
    fn on_event(&self, _: &str, event: Event) {
        if let Event::Transition {
            to: State::Open, ..
        } = event
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn loom_racing_failures_open_it_exactly_once() {
    loom::model(|| {
        let opened = LoomArc::new(AtomicUsize::new(0));
        let c = LoomArc::new(Core::new(
            "l".into(),
            cfg(1, 1, 2),
            vec![Arc::new(Count(opened.clone()))],
        ));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || {
                    let t = c.admit(|| 0).unwrap();
                    c.record(t, Outcome::Failure(None), false, 0, || 0);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.state(), State::Open);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    });
}

/// Two failures that each trip the breaker at the same instant compute the same end of the
/// open period (no jitter): whichever loses the race must not undo the winner's end, which
/// would leave it open for 0 ms, its next call a probe at once (a review's finding).
#[test]
fn loom_two_trips_with_the_same_end_leave_it_open_for_its_period() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), cfg(1, 1, 1), Vec::new()));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || {
                    if let Ok(t) = c.admit(|| 0) {
                        c.record(t, Outcome::Failure(None), false, 0, || 0);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.observed(|| 0), (State::Open, Some(30_000)));
    });
}

/// A trip by hand racing a trip with a server's hint: the one that opens the breaker keeps its
/// end of the period; the other's end does not stay behind (the hint was lost to the trip by
/// hand's plain store, a review found).
#[test]
fn loom_a_trip_by_hand_does_not_overwrite_the_end_of_a_trip_that_won() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), cfg(1, 1, 1), Vec::new()));
        let t = c.admit(|| 0).unwrap();
        let hinted = {
            let c = c.clone();
            thread::spawn(move || {
                c.record(
                    t,
                    Outcome::Failure(Some(Duration::from_secs(50))),
                    false,
                    0,
                    || 0,
                );
            })
        };
        let by_hand = {
            let c = c.clone();
            thread::spawn(move || c.trip_now(10))
        };
        hinted.join().unwrap();
        by_hand.join().unwrap();
        // Either opened it, and its end stands: the hint's 50 s from 0, or the hand's 30 s
        // from 10; never the loser's end under the winner's state.
        let winner_at = c.entered.load(Ordering::Acquire);
        let expected = if winner_at == 0 { 49_990 } else { 30_000 };
        assert_eq!(
            c.observed(|| 10),
            (State::Open, Some(expected)),
            "opened at {winner_at}"
        );
    });
}

#[test]
fn loom_half_open_never_admits_more_probes_than_configured_and_loses_none() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), cfg(1, 5, 1), Vec::new()));
        open(&c, 1);
        let in_flight = LoomArc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (c, in_flight) = (c.clone(), in_flight.clone());
                thread::spawn(move || {
                    if let Ok(t) = c.admit(|| 30_000) {
                        assert!(t.probe());
                        assert_eq!(
                            in_flight.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two probes at once"
                        );
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        c.record(t, Outcome::Neutral, false, 0, || 30_000);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Every slot came back: one probe fits again, a second does not.
        assert_eq!(c.state(), State::HalfOpen);
        let t = c.admit(|| 30_000).unwrap();
        assert!(c.admit(|| 30_000).is_err());
        c.record(t, Outcome::Neutral, false, 0, || 30_000);
    });
}

#[test]
fn loom_a_probe_success_racing_a_probe_failure_never_leaves_it_stuck() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), cfg(2, 1, 1), Vec::new()));
        open(&c, 1);
        let a = c.admit(|| 30_000).unwrap();
        let b = c.admit(|| 30_000).unwrap();
        let c1 = c.clone();
        let t1 = thread::spawn(move || c1.record(a, Outcome::Success, false, 0, || 30_000));
        let c2 = c.clone();
        let t2 = thread::spawn(move || c2.record(b, Outcome::Failure(None), false, 1, || 30_000));
        t1.join().unwrap();
        t2.join().unwrap();
        // Whichever came first decided; the breaker is closed or open, never half-open.
        let state = c.state();
        assert!(matches!(state, State::Closed | State::Open), "{state:?}");
    });
}

#[test]
fn loom_a_failure_the_moment_a_probe_closes_it_starts_a_new_streak() {
    loom::model(|| {
        // Two failures in a row trip it; one probe, whose success closes it.
        let c = LoomArc::new(Core::new("l".into(), cfg(1, 1, 2), Vec::new()));
        open(&c, 2);
        let probe = c.admit(|| 30_000).unwrap();
        let c1 = c.clone();
        let other = thread::spawn(move || {
            // Refused while the probe holds the slot; a probe itself (answering nothing) in
            // the moment between the slot given back and the close; a call, failing, once the
            // probe closed it.
            if let Ok(t) = c1.admit(|| 30_000) {
                let outcome = if t.probe() {
                    Outcome::Neutral
                } else {
                    Outcome::Failure(None)
                };
                c1.record(t, outcome, false, 1, || 30_000);
            }
        });
        c.record(probe, Outcome::Success, false, 0, || 30_000);
        other.join().unwrap();
        // However soon after the close that failure came, it is the first of a new streak,
        // not the third of the one that tripped it.
        assert_eq!(c.state(), State::Closed);
        assert!(c.consecutive.load(Ordering::SeqCst) <= 1);
    });
}

#[test]
fn loom_a_second_probe_reaching_the_threshold_clears_nothing_after_the_close() {
    loom::model(|| {
        // Two probes, one success closes it.
        let c = LoomArc::new(Core::new("l".into(), cfg(2, 1, 2), Vec::new()));
        open(&c, 2);
        let a = c.admit(|| 30_000).unwrap();
        let b = c.admit(|| 30_000).unwrap();
        let c1 = c.clone();
        let first = thread::spawn(move || {
            c1.record(a, Outcome::Success, false, 0, || 30_000);
            // A call admitted after the close fails (one admitted as a probe, before it,
            // answers nothing).
            let t = c1.admit(|| 30_000).ok()?;
            if t.probe() {
                c1.record(t, Outcome::Neutral, false, 0, || 30_000);
                return None;
            }
            c1.record(t, Outcome::Failure(None), false, 0, || 30_000);
            Some(())
        });
        let c2 = c.clone();
        let second = thread::spawn(move || c2.record(b, Outcome::Success, false, 1, || 30_000));
        let failed = first.join().unwrap().is_some();
        second.join().unwrap();
        assert_eq!(c.state(), State::Closed);
        // The other probe's success, however late, never wiped the failure that came after
        // the close.
        assert_eq!(c.consecutive.load(Ordering::SeqCst), u32::from(failed));
    });
}

#[test]
fn loom_a_probe_being_admitted_is_never_mistaken_for_a_hung_one() {
    loom::model(|| {
        // One probe at a time, two successes to close, a probe timeout of 60 s.
        let c = LoomArc::new(Core::new("l".into(), cfg(1, 2, 1), Vec::new()));
        open(&c, 1);
        // A first probe at 30 s succeeds; the slot is free, the last admission long ago.
        let first = c.admit(|| 30_000).unwrap();
        c.record(first, Outcome::Success, false, 0, || 30_000);
        // At 100 s two callers race: one takes the slot, the other must see that probe as
        // just admitted, not as one holding the slot since 30 s.
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                thread::spawn(move || c.admit(|| 100_000).is_ok())
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(admitted, 1);
        assert_eq!(c.state(), State::HalfOpen);
        assert_eq!(c.reopens.load(Ordering::SeqCst), 0);
    });
}

/// A count window of 2 outcomes with a failure-rate rule: the quiet flag is in play.
fn windowed() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        window: Window::Count(2),
        failure_rate: Some(crate::Rate::new(1.0, 2)),
        throttle: None,
        jitter_ratio: 0.0,
        ..BreakerConfig::classic()
    }
}

/// Whether the quiet flag claims what the windows do not hold.
fn quiet_lies(c: &Core) -> bool {
    let live = c.live();
    c.quiet.load(Ordering::SeqCst) & QUIET_RECORD != 0 && !live.rates.all_successes()
}

#[test]
fn loom_a_failure_racing_a_success_is_never_hidden_by_the_quiet_flag() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), windowed(), Vec::new()));
        // One success: the window is not full, so not quiet, and both calls below take the
        // slow path.
        let t = c.admit(|| 0).unwrap();
        c.record(t, Outcome::Success, false, 0, || 0);
        let handles: Vec<_> = [Outcome::Failure(None), Outcome::Success]
            .into_iter()
            .map(|outcome| {
                let c = c.clone();
                thread::spawn(move || {
                    let t = c.admit(|| 0).unwrap();
                    c.record(t, outcome, false, 0, || 0);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // The window holds the failure: never claimed quiet.
        assert!(!quiet_lies(&c));
        assert_eq!(c.numbers(0).window.unwrap().failures, 1);
    });
}

#[test]
fn loom_a_reconfiguration_racing_a_failure_never_leaves_a_false_quiet() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), windowed(), Vec::new()));
        for _ in 0..2 {
            let t = c.admit(|| 0).unwrap();
            c.record(t, Outcome::Success, false, 0, || 0);
        }
        // Full of successes: quiet.
        assert_ne!(c.quiet.load(Ordering::SeqCst) & QUIET_RECORD, 0);
        let c1 = c.clone();
        let failing = thread::spawn(move || {
            let t = c1.admit(|| 0).unwrap();
            c1.record(t, Outcome::Failure(None), false, 0, || 0);
        });
        let c2 = c.clone();
        let reconfiguring = thread::spawn(move || {
            // Same window: kept, and the flag re-derived from it.
            let done = c2.reconfigure(
                BreakerConfig {
                    open_duration: Duration::from_secs(1),
                    ..windowed()
                },
                0,
            );
            assert!(done.is_lossless());
        });
        failing.join().unwrap();
        reconfiguring.join().unwrap();
        assert!(!quiet_lies(&c));
        assert_eq!(c.numbers(0).window.unwrap().failures, 1);
    });
}

#[test]
fn loom_a_reconfiguration_racing_a_probe_loses_no_slot() {
    loom::model(|| {
        let c = LoomArc::new(Core::new("l".into(), cfg(2, 5, 1), Vec::new()));
        open(&c, 1);
        let c1 = c.clone();
        let probing = thread::spawn(move || {
            if let Ok(t) = c1.admit(|| 30_000) {
                c1.record(t, Outcome::Neutral, false, 0, || 30_000);
            }
        });
        let c2 = c.clone();
        let reconfiguring = thread::spawn(move || {
            c2.reconfigure(cfg(1, 5, 1), 30_000);
        });
        probing.join().unwrap();
        reconfiguring.join().unwrap();
        // Every slot came back: one probe fits under the new limit, a second does not.
        assert_eq!(c.state(), State::HalfOpen);
        let t = c.admit(|| 30_000).unwrap();
        assert!(c.admit(|| 30_000).is_err());
        c.record(t, Outcome::Neutral, false, 0, || 30_000);
    });
}
