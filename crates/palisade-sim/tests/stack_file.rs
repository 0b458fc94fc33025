//! `--stack FILE.toml`: the palisade stack built from a configuration file, beside the built-in
//! one.

use palisade::config::PresetConfig;
use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::{StackFile, StackKind};

#[test]
fn the_classic_breaker_from_a_file_stays_open_past_the_outage() {
    let text = include_str!("../../../examples/stacks/classic.toml");
    let config = PresetConfig::from_toml(text).unwrap();
    assert_eq!(config.breaker.consecutive_failures, Some(5));
    let outage = Scenario::new(ScenarioKind::Outage);
    let defaults = palisade_sim::run(&outage, StackKind::Palisade).unwrap();

    let file = StackKind::File(StackFile::new("classic", config));
    let from_file = palisade_sim::run(&outage, file).unwrap();
    assert_eq!(from_file.stack, file);
    // The built-in stack is still the defaults.
    assert_eq!(
        palisade_sim::run(&outage, StackKind::Palisade).unwrap(),
        defaults
    );

    // The defaults recover after the outage; a 30 s open period, doubling after each failed
    // probe, does not before the run ends: no request sent in the 10 s after the outage is
    // answered, and only some sent later, which wait for the breaker's probe at about 40 s.
    let after = |f: &palisade_sim::metrics::Figures| f.success_after.unwrap();
    assert!(after(&defaults) > 0.9, "{defaults:?}");
    assert_eq!(defaults.recovered, Some(true), "{defaults:?}");
    assert_eq!(from_file.recovered, Some(false), "{from_file:?}");
    assert!(after(&from_file) < 0.5, "{from_file:?}");
    let answered_just_after = from_file.series[20..30].iter().map(|s| s.ok).sum::<u32>();
    assert_eq!(answered_just_after, 0, "{from_file:?}");
    // It spends almost nothing on the upstream during the outage.
    assert!(
        from_file.load_fault.is_some_and(|l| l < 0.05),
        "{from_file:?}"
    );
}
