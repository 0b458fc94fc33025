//! The goals off the defaults: every scenario's variants (three more seeds; rate, fault length
//! and capacity × 2/3 and × 3/2) on every stack, pinned byte for byte. A change to a default
//! that helps at the default seed but hurts elsewhere shows here as a diff; accept a
//! deliberate one with `UPDATE_EXPECT=1 cargo test -p palisade-sim --test sweep`.

use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::StackKind;

#[test]
fn the_sweep_is_the_checked_in_one() {
    let scenarios: Vec<_> = ScenarioKind::ALL.into_iter().map(Scenario::new).collect();
    let mut calls = 0;
    let sweep = palisade_sim::sweep::sweep(&scenarios, &StackKind::ALL, |done, total| {
        calls += 1;
        assert_eq!(done, calls);
        assert_eq!(total, 66 * 4);
    })
    .unwrap();
    assert_eq!(calls, 66 * 4);
    assert_eq!(sweep.variants, 66);
    // Every goal judged in every variant of its scenario.
    for g in &sweep.goals {
        let variants = if g.scenario == ScenarioKind::Brownout {
            10
        } else {
            8
        };
        assert_eq!(g.runs, variants, "{}: {}", g.scenario, g.goal);
        assert_eq!(g.held + g.misses.len(), g.runs);
    }
    expect_test::expect_file!["golden/sweep.txt"].assert_eq(&sweep.table());
    // The README quotes the count.
    let readme = include_str!("../../../README.md");
    let (held, of) = sweep.held_everywhere();
    let line = format!("goals held in every variant: {held} of {of}");
    assert!(readme.contains(&line), "README.md should say {line:?}");
}
