//! `--stack FILE.toml` with a `[route]` section: the router over a scenario's replicas takes the
//! file's settings.

use palisade::config::PresetConfig;
use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::{StackFile, StackKind};

#[test]
fn a_router_without_ejection_from_a_file_keeps_the_bad_replica_in_traffic() {
    let text = include_str!("../../../examples/stacks/no_ejection.toml");
    let config = PresetConfig::from_toml(text).unwrap();
    let route = config.route.unwrap();
    assert_eq!(route.outlier.consecutive_failures, None);
    assert_eq!(route.health.failed_after, 255);
    let bad_replica = Scenario::new(ScenarioKind::BadReplica);
    let defaults = palisade_sim::run(&bad_replica, StackKind::Palisade).unwrap();

    let file = StackKind::File(StackFile::new("no_ejection", config));
    let from_file = palisade_sim::run(&bad_replica, file).unwrap();

    // The defaults take the bad replica out of traffic at its first failures: every request
    // succeeds at once. The file's router keeps giving it its share while it fails, so
    // requests wait for retries (past the budget's allowance, for the budget), a few still
    // fail (0.2 % at the default seed), and the retries cost load.
    assert_eq!(defaults.success_fault, Some(1.0), "{defaults:?}");
    assert!(
        from_file.success_fault.is_some_and(|s| s < 1.0),
        "{from_file:?}"
    );
    assert!(
        from_file.p99_ms > 10.0 * defaults.p99_ms,
        "{from_file:?} {defaults:?}"
    );
    assert!(
        from_file.load_fault.unwrap() > defaults.load_fault.unwrap() + 0.03,
        "{from_file:?}"
    );
    let detect = |f: &palisade_sim::metrics::Figures| f.detect_ms.unwrap();
    assert!(
        detect(&from_file) > 10.0 * detect(&defaults),
        "{from_file:?}"
    );
}
