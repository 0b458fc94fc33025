//! `examples/stacks/low_rate.toml`: a breaker window of the last second's calls, for a
//! dependency called a few times a second. Its own test binary, because the file's
//! configuration holds for the rest of the process.

use palisade::breaker::Window;
use palisade::config::PresetConfig;
use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::{StackKind, use_palisade_config};
use std::time::Duration;

#[test]
fn at_ten_requests_a_second_the_recent_window_opens_within_a_short_fault() {
    let text = include_str!("../../../examples/stacks/low_rate.toml");
    let config = PresetConfig::from_toml(text).unwrap();
    assert_eq!(
        config.breaker.window,
        Window::Recent {
            calls: 30,
            within: Duration::from_secs(1)
        }
    );
    let slow = |kind| {
        let mut s = Scenario::new(kind);
        s.params.rate = 10.0;
        s
    };
    let (flapping, outage) = (slow(ScenarioKind::Flapping), slow(ScenarioKind::Outage));
    let defaults = [
        palisade_sim::run(&flapping, StackKind::Palisade).unwrap(),
        palisade_sim::run(&outage, StackKind::Palisade).unwrap(),
    ];
    use_palisade_config(config).unwrap();
    let from_file = [
        palisade_sim::run(&flapping, StackKind::Palisade).unwrap(),
        palisade_sim::run(&outage, StackKind::Palisade).unwrap(),
    ];
    // Down 2 s of every 4: the last 30 calls span 3 s, never 95 % failed, and each failed
    // request needs a retry the budget rarely has; the last second's calls do, and requests
    // wait for the breaker's probe instead (76.8 % and 91.8 % when measured).
    assert!(defaults[0].success < 0.80, "{:?}", defaults[0]);
    assert!(from_file[0].success > 0.90, "{:?}", from_file[0]);
    // The outage: open after 1 s instead of 3, so fewer calls reach the dead upstream (0.38
    // and 0.22 per request when measured), and no fewer answers.
    assert!(
        from_file[1].load_fault < defaults[1].load_fault - 0.1,
        "{} against {}",
        from_file[1].load_fault,
        defaults[1].load_fault
    );
    assert!(from_file[1].success >= defaults[1].success);
}
