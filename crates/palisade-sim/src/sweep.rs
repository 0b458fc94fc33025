//! Whether palisade's goals hold off the defaults: each scenario run again with other seeds
//! and with its rate, its fault's length and its capacity moved by half again either way.
//!
//! A default that meets its goals at one seed and one set of parameters may only have been
//! tuned to them. [`sweep`] runs every scenario in each of its [`variants`] on every stack,
//! judges palisade's [goals] in each, and counts, goal by goal, the variants in
//! which it held, naming those in which it did not.
//! [`sweep_crossed`] does the same over the [`crossed`] variants, every setting at several
//! seeds (`--sweep --seeds N`).
//!
//! ```
//! use palisade_sim::scenario::{Scenario, ScenarioKind};
//! use palisade_sim::stack::StackKind;
//! use palisade_sim::sweep;
//!
//! let mut failover = Scenario::new(ScenarioKind::Failover);
//! failover.params.duration = std::time::Duration::from_secs(35);
//! let labels: Vec<_> = sweep::variants(&failover).into_iter().map(|v| v.label).collect();
//! assert_eq!(
//!     labels,
//!     [
//!         "as given", "seed 2", "seed 3", "seed 4", "rate 66.7/s", "rate 150.0/s",
//!         "fault 13.3 s", "fault 30.0 s",
//!     ]
//! );
//! let swept = sweep::sweep(&[failover], &[StackKind::None, StackKind::Palisade], |_, _| {})?;
//! // "≥ 99 % success" held in all eight.
//! let first = &swept.goals[0];
//! assert_eq!((first.goal.as_str(), first.held, first.runs), ("≥ 99 % success", 8, 8));
//! # Ok::<(), palisade::BoxError>(())
//! ```

use std::fmt::Write as _;

use palisade::classify::BoxError;
use serde::Serialize;

use crate::goals::{self, Goal, Outdone};
use crate::metrics::Figures;
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

/// How far the rate, the fault's length and the capacity move: by half again, either way.
pub const FACTORS: [f64; 2] = [2.0 / 3.0, 1.5];

/// How many other seeds each scenario runs with: the given seed plus 1, 2 and 3.
pub const OTHER_SEEDS: u64 = 3;

/// A scenario moved off the parameters given.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variant {
    /// What was moved, in words: "as given", "seed 2", "rate 66.7/s", "fault 6.7 s",
    /// "capacity 33.3/s".
    pub label: String,
    /// The scenario to run.
    pub scenario: Scenario,
}

/// The variants of `base`: itself ("as given"), then [`OTHER_SEEDS`] other seeds, then its
/// rate, its fault's length and its capacity each multiplied by each of [`FACTORS`].
///
/// The fault's length is not moved in `rate-limit`: its limit is the fault, which by default
/// lasts the whole run, and its goals judge the limit, not what follows it; its capacity is
/// moved instead. The capacity is moved only where there is one (`rate-limit`, `brownout`).
/// A fault made longer makes the run as much longer, so that the time left after the fault
/// stays what it was (the recovery figures need it). A moved value equal to the given one (a
/// fault of no length, a capacity of 0, times anything) or to one already moved is left out:
/// it would run the same variant again and count its goals twice.
pub fn variants(base: &Scenario) -> Vec<Variant> {
    let mut settings = settings(base).into_iter();
    let mut out: Vec<Variant> = settings.next().into_iter().collect();
    for more in 1..=OTHER_SEEDS {
        let seed = base.params.seed.wrapping_add(more);
        let mut scenario = base.clone();
        scenario.params.seed = seed;
        out.push(Variant {
            label: format!("seed {seed}"),
            scenario,
        });
    }
    out.extend(settings);
    out
}

/// The variants of `base` with each setting at several seeds: `base` itself and its rate,
/// fault length and capacity moved as in [`variants`], each run at `seeds` seeds (the given
/// one and the next `seeds − 1`), so that a goal is judged off the defaults at more than one
/// seed. Labels name the setting and the seed ("rate 66.7/s, seed 5"); the given setting at
/// another seed is "seed 5", as in [`variants`]. `seeds` of 0 counts as 1.
///
/// ```
/// use palisade_sim::scenario::{Scenario, ScenarioKind};
/// use palisade_sim::sweep;
///
/// let outage = Scenario::new(ScenarioKind::Outage);
/// let crossed = sweep::crossed(&outage, 3);
/// // As given, two rates, two fault lengths: five settings, three seeds each.
/// assert_eq!(crossed.len(), 15);
/// assert_eq!(crossed[1].label, "seed 2");
/// assert_eq!(crossed[4].label, "rate 66.7/s, seed 2");
/// assert_eq!(crossed[4].scenario.params.seed, 2);
/// ```
pub fn crossed(base: &Scenario, seeds: u64) -> Vec<Variant> {
    let mut out = Vec::new();
    for (i, setting) in settings(base).into_iter().enumerate() {
        for more in 0..seeds.max(1) {
            let seed = base.params.seed.wrapping_add(more);
            let label = match (i, more) {
                (_, 0) => setting.label.clone(),
                (0, _) => format!("seed {seed}"),
                _ => format!("{}, seed {seed}", setting.label),
            };
            let mut scenario = setting.scenario.clone();
            scenario.params.seed = seed;
            out.push(Variant { label, scenario });
        }
    }
    out
}

/// `base` as given, then its rate, its fault's length and its capacity each multiplied by
/// each of [`FACTORS`] (see [`variants`] for which move where).
fn settings(base: &Scenario) -> Vec<Variant> {
    let p = &base.params;
    let mut out = vec![Variant {
        label: "as given".to_owned(),
        scenario: base.clone(),
    }];
    let mut moved = |label: String, change: &dyn Fn(&mut Scenario)| {
        let mut scenario = base.clone();
        change(&mut scenario);
        // The same parameters as a variant already there: the same run, not another one.
        if out.iter().all(|v| v.scenario != scenario) {
            out.push(Variant { label, scenario });
        }
    };
    for f in FACTORS {
        let rate = p.rate * f;
        moved(format!("rate {rate:.1}/s"), &|s| s.params.rate = rate);
    }
    if base.kind != ScenarioKind::RateLimit {
        for f in FACTORS {
            let len = p.fault_len.mul_f64(f);
            let longer = len.saturating_sub(p.fault_len);
            moved(
                format!("fault {:.1} s", len.as_secs_f64()),
                &|s: &mut Scenario| {
                    s.params.fault_len = len;
                    s.params.duration += longer;
                },
            );
        }
    }
    if matches!(base.kind, ScenarioKind::RateLimit | ScenarioKind::Brownout) {
        for f in FACTORS {
            let capacity = p.capacity * f;
            moved(format!("capacity {capacity:.1}/s"), &|s| {
                s.params.capacity = capacity;
            });
        }
    }
    out
}

/// One of palisade's goals across the variants of its scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoalSweep {
    /// The scenario it belongs to.
    pub scenario: ScenarioKind,
    /// The palisade stack it judged (see [`goals`] for how several are judged).
    pub stack: StackKind,
    /// What is asked, in the words of the first variant ("as given").
    pub goal: String,
    /// The variants in which it held.
    pub held: usize,
    /// The variants judged (those with something to judge the goal on: a goal about the
    /// fault's end is not judged in a variant whose fault lasts to the end of the run).
    pub runs: usize,
    /// The variants that left nothing to judge it on.
    pub unjudged: usize,
    /// The variants in which it did not hold, with what was measured there.
    pub misses: Vec<Miss>,
}

/// A variant in which a goal did not hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Miss {
    /// The variant's [`label`](Variant::label).
    pub variant: String,
    /// What was measured in it.
    pub measured: String,
}

/// A variant in which a stack that is not palisade's outdid palisade's ([`goals::outdone`]:
/// more requests answered at no more upstream load).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutdoneIn {
    /// The variant's [`label`](Variant::label).
    pub variant: String,
    /// The scenario, the stacks and what was measured.
    #[serde(flatten)]
    pub outdone: Outdone,
}

/// What [`sweep`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sweep {
    /// How many variants were run, over every scenario.
    pub variants: usize,
    /// The seeds each setting ran at, when the variants were [`crossed`] ([`sweep_crossed`]);
    /// `None` for [`variants`] ([`sweep`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<u64>,
    /// Each goal of palisade's, in the order [`goals::judge`] gives them, scenario by scenario.
    pub goals: Vec<GoalSweep>,
    /// The variants in which palisade ran beside another stack.
    pub judged: usize,
    /// Where palisade was outdone: another stack answered more at no more upstream load.
    pub outdone: Vec<OutdoneIn>,
}

/// Runs every scenario's [`variants`] on every stack, judges palisade's goals in each, and
/// counts where each goal held. `progress` is called after each run with how many are done of
/// how many.
///
/// The runs are spread over the machine's cores ([`run_all`](crate::run_all) does the same);
/// the result does not depend on their order.
///
/// # Errors
/// The first run that fails to start (invalid parameters or configuration).
pub fn sweep(
    scenarios: &[Scenario],
    stacks: &[StackKind],
    progress: impl FnMut(usize, usize),
) -> Result<Sweep, BoxError> {
    sweep_these(
        scenarios.iter().map(variants).collect(),
        stacks,
        None,
        progress,
    )
}

/// As [`sweep`], over the [`crossed`] variants: every setting at `seeds` seeds. With 10 seeds
/// and every scenario that is 420 variants and 1 680 runs on the four built-in stacks, about
/// 20 s on two cores in a release build.
///
/// # Errors
/// The first run that fails to start (invalid parameters or configuration).
pub fn sweep_crossed(
    scenarios: &[Scenario],
    stacks: &[StackKind],
    seeds: u64,
    progress: impl FnMut(usize, usize),
) -> Result<Sweep, BoxError> {
    let all = scenarios.iter().map(|s| crossed(s, seeds)).collect();
    sweep_these(all, stacks, Some(seeds.max(1)), progress)
}

fn sweep_these(
    all: Vec<Vec<Variant>>,
    stacks: &[StackKind],
    seeds: Option<u64>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Sweep, BoxError> {
    let jobs: Vec<(&Scenario, StackKind)> = all
        .iter()
        .flatten()
        .flat_map(|v| stacks.iter().map(move |&stack| (&v.scenario, stack)))
        .collect();
    let mut figures = crate::run::run_each(&jobs, &mut progress)?.into_iter();
    let mut goals = Vec::new();
    let mut outdone = Vec::new();
    let side_by_side =
        stacks.iter().any(|s| s.is_palisade()) && stacks.iter().any(|s| !s.is_palisade());
    for these in &all {
        let judged = these
            .iter()
            .map(|variant| {
                let runs: Vec<Figures> = figures.by_ref().take(stacks.len()).collect();
                outdone.extend(
                    goals::outdone(&variant.scenario, &runs)
                        .into_iter()
                        .map(|o| OutdoneIn {
                            variant: variant.label.clone(),
                            outdone: o,
                        }),
                );
                (
                    variant.label.clone(),
                    goals::judge(&variant.scenario, &runs),
                )
            })
            .collect();
        goals.extend(tally(judged));
    }
    let variants = all.iter().map(Vec::len).sum();
    Ok(Sweep {
        variants,
        seeds,
        goals,
        judged: if side_by_side { variants } else { 0 },
        outdone,
    })
}

/// Counts, goal by goal, the variants of one scenario in which each held. The goals of every
/// variant come in the same order (the same scenario on the same stacks), so they are matched
/// by position.
fn tally(judged: Vec<(String, Vec<Goal>)>) -> Vec<GoalSweep> {
    let mut rows: Vec<GoalSweep> = Vec::new();
    for (label, goals) in judged {
        if rows.is_empty() {
            rows = goals
                .iter()
                .map(|g| GoalSweep {
                    scenario: g.scenario,
                    stack: g.stack,
                    goal: g.goal.clone(),
                    held: 0,
                    runs: 0,
                    unjudged: 0,
                    misses: Vec::new(),
                })
                .collect();
        }
        debug_assert_eq!(rows.len(), goals.len(), "the same goals in every variant");
        for (row, goal) in rows.iter_mut().zip(goals) {
            match goal.met {
                Some(true) => {
                    row.runs += 1;
                    row.held += 1;
                }
                Some(false) => {
                    row.runs += 1;
                    row.misses.push(Miss {
                        variant: label.clone(),
                        measured: goal.measured,
                    });
                }
                // Nothing to judge in this variant (no fault in it, say): neither.
                None => row.unjudged += 1,
            }
        }
    }
    rows
}

impl Sweep {
    /// The goals held in every variant that judged them, of the goals judged in any.
    pub fn held_everywhere(&self) -> (usize, usize) {
        let judged = self.goals.iter().filter(|g| g.runs > 0);
        let held = judged.clone().filter(|g| g.held == g.runs).count();
        (held, judged.count())
    }

    /// A readable table: each goal with the variants it held in, and where it missed, what was
    /// measured; then how many goals held in every variant.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = match self.seeds {
            None => writeln!(
                out,
                "palisade's goals off the defaults: {} variants (each scenario as given, with {} \
                 more seeds, and with its rate, fault length and capacity × 2/3 and × 3/2)",
                self.variants, OTHER_SEEDS
            ),
            Some(seeds) => writeln!(
                out,
                "palisade's goals off the defaults: {} variants (each scenario as given and with \
                 its rate, fault length and capacity × 2/3 and × 3/2, each at {seeds} seeds)",
                self.variants
            ),
        };
        let width = self
            .goals
            .iter()
            .map(|g| g.scenario.name().len())
            .max()
            .unwrap_or(0);
        // With more than one palisade stack, each goal names the stack it judged.
        let several = self.goals.iter().any(|g| g.stack != self.goals[0].stack);
        for g in &self.goals {
            let stack = if several {
                format!("{}: ", g.stack)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "  {:>2}/{:<2} {:width$} {stack}{}",
                g.held,
                g.runs,
                g.scenario.name(),
                g.goal
            );
            if !g.misses.is_empty() {
                let misses: Vec<String> = g
                    .misses
                    .iter()
                    .map(|m| format!("{} ({})", m.variant, m.measured))
                    .collect();
                let _ = write!(out, " — missed: {}", misses.join(", "));
            }
            if g.unjudged > 0 {
                let _ = write!(out, " — nothing to judge in {}", g.unjudged);
            }
            out.push('\n');
        }
        let (held, of) = self.held_everywhere();
        let _ = writeln!(out, "goals held in every variant: {held} of {of}");
        if self.judged > 0 {
            let outdone: Vec<_> = self
                .outdone
                .iter()
                .map(|o| (o.variant.as_str(), &o.outdone))
                .collect();
            out.push_str(&crate::report::outdone_lines(
                &outdone,
                self.judged,
                "variants",
            ));
        }
        out
    }

    /// The whole sweep as JSON.
    ///
    /// # Errors
    /// Serialisation errors (none are expected: every field is plain data).
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn each_scenario_moves_what_it_has() {
        let labels = |kind| -> Vec<String> {
            variants(&Scenario::new(kind))
                .into_iter()
                .map(|v| v.label)
                .collect()
        };
        assert_eq!(
            labels(ScenarioKind::Outage),
            [
                "as given",
                "seed 2",
                "seed 3",
                "seed 4",
                "rate 66.7/s",
                "rate 150.0/s",
                "fault 6.7 s",
                "fault 15.0 s"
            ]
        );
        // The limit is the fault and lasts the whole run: its capacity moves, not its length.
        assert_eq!(
            labels(ScenarioKind::RateLimit),
            [
                "as given",
                "seed 2",
                "seed 3",
                "seed 4",
                "rate 53.3/s",
                "rate 120.0/s",
                "capacity 33.3/s",
                "capacity 75.0/s"
            ]
        );
        // The brownout moves all three.
        assert_eq!(labels(ScenarioKind::Brownout).len(), 10);
        for kind in ScenarioKind::ALL {
            let n = labels(kind).len();
            // As given, 3 seeds, 2 rates, and 2 fault lengths or 2 capacities (both for
            // the brownout).
            let expected = if kind == ScenarioKind::Brownout {
                10
            } else {
                8
            };
            assert_eq!(n, expected, "{kind}");
        }
    }

    /// A moved value equal to the given one runs the given variant again: left out, so that
    /// its goals are not counted twice. A fault of no length stays of none at × 2/3 and × 3/2;
    /// so does a capacity of 0.
    #[test]
    fn a_value_that_does_not_move_makes_no_variant() {
        let labels =
            |s: &Scenario| -> Vec<String> { variants(s).into_iter().map(|v| v.label).collect() };
        let mut quiet = Scenario::new(ScenarioKind::Outage);
        quiet.params.fault_len = Duration::ZERO;
        assert_eq!(
            labels(&quiet),
            [
                "as given",
                "seed 2",
                "seed 3",
                "seed 4",
                "rate 66.7/s",
                "rate 150.0/s"
            ]
        );
        let mut brownout = Scenario::new(ScenarioKind::Brownout);
        brownout.params.capacity = 0.0;
        assert!(
            !labels(&brownout).iter().any(|l| l.starts_with("capacity")),
            "{:?}",
            labels(&brownout)
        );
        // The crossed variants too: three settings at two seeds.
        assert_eq!(crossed(&quiet, 2).len(), 6);
    }

    #[test]
    fn each_variant_moves_one_parameter_and_a_longer_fault_a_longer_run() {
        let base = Scenario::new(ScenarioKind::Brownout);
        let vs = variants(&base);
        assert_eq!(vs[0].scenario, base);
        let p = |i: usize| &vs[i].scenario.params;
        let b = &base.params;
        for (i, seed) in [(1, 2), (2, 3), (3, 4)] {
            assert_eq!(p(i).seed, seed);
            assert_eq!((p(i).rate, p(i).fault_len), (b.rate, b.fault_len));
        }
        assert!((p(4).rate - 100.0 * 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(p(5).rate, 150.0);
        assert_eq!((p(4).seed, p(5).seed), (1, 1));
        // A shorter fault keeps the run's length; a longer one lengthens the run as much.
        assert_eq!(p(6).fault_len, b.fault_len.mul_f64(2.0 / 3.0));
        assert_eq!(p(6).duration, b.duration);
        assert_eq!(p(7).fault_len, secs(15.0));
        assert_eq!(p(7).duration, b.duration + secs(5.0));
        assert!((p(8).capacity - 100.0).abs() < 1e-9);
        assert_eq!(p(9).capacity, 225.0);
        assert_eq!((p(8).rate, p(9).fault_len), (b.rate, b.fault_len));
        // Seeds wrap rather than overflow.
        let mut last = Scenario::new(ScenarioKind::Outage);
        last.params.seed = u64::MAX;
        assert_eq!(variants(&last)[1].label, "seed 0");
    }

    fn goal(text: &str, met: bool, measured: &str) -> Goal {
        Goal {
            scenario: ScenarioKind::Degraded,
            stack: StackKind::Palisade,
            goal: text.to_owned(),
            measured: measured.to_owned(),
            met: Some(met),
        }
    }

    #[test]
    fn tally_counts_each_goal_by_position_and_names_its_misses() {
        let judged = vec![
            (
                "as given".to_owned(),
                vec![goal("a (1 ms)", true, "1"), goal("b", false, "2")],
            ),
            (
                "seed 2".to_owned(),
                // The words may differ with the parameters; the position decides.
                vec![goal("a (2 ms)", false, "3"), goal("b", false, "4")],
            ),
            (
                "rate 1.0/s".to_owned(),
                vec![goal("a (3 ms)", true, "5"), goal("b", true, "6")],
            ),
            (
                "fault 0.0 s".to_owned(),
                // Nothing to judge "b" on: neither held nor missed.
                vec![goal("a (4 ms)", true, "7"), {
                    let mut g = goal("b", false, "no fault in this run");
                    g.met = None;
                    g
                }],
            ),
        ];
        let rows = tally(judged);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].goal.as_str(), rows[0].held, rows[0].runs),
            ("a (1 ms)", 3, 4)
        );
        assert_eq!(rows[0].unjudged, 0);
        assert_eq!(
            rows[0].misses,
            [Miss {
                variant: "seed 2".into(),
                measured: "3".into()
            }]
        );
        assert_eq!((rows[1].held, rows[1].runs, rows[1].unjudged), (1, 3, 1));
        let missed: Vec<_> = rows[1].misses.iter().map(|m| m.variant.as_str()).collect();
        assert_eq!(missed, ["as given", "seed 2"]);
        assert!(tally(Vec::new()).is_empty());
    }

    #[test]
    fn the_table_and_the_count_of_goals_held_everywhere() {
        let mut sweep = Sweep {
            variants: 9,
            seeds: None,
            goals: vec![
                GoalSweep {
                    scenario: ScenarioKind::Outage,
                    stack: StackKind::Palisade,
                    goal: "held".into(),
                    held: 9,
                    runs: 9,
                    unjudged: 0,
                    misses: Vec::new(),
                },
                GoalSweep {
                    scenario: ScenarioKind::RateLimit,
                    stack: StackKind::Palisade,
                    goal: "missed".into(),
                    held: 7,
                    runs: 9,
                    unjudged: 0,
                    misses: vec![
                        Miss {
                            variant: "seed 2".into(),
                            measured: "1.3".into(),
                        },
                        Miss {
                            variant: "rate 1.0/s".into(),
                            measured: "1.4".into(),
                        },
                    ],
                },
            ],
            judged: 0,
            outdone: Vec::new(),
        };
        assert_eq!(sweep.held_everywhere(), (1, 2));
        let table = sweep.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("palisade's goals off the defaults: 9 variants"));
        assert_eq!(lines[1], "   9/9  outage     held");
        assert_eq!(
            lines[2],
            "   7/9  rate-limit missed — missed: seed 2 (1.3), rate 1.0/s (1.4)"
        );
        assert_eq!(lines[3], "goals held in every variant: 1 of 2");
        let json: serde_json::Value = serde_json::from_str(&sweep.json().unwrap()).unwrap();
        assert_eq!(json["variants"], 9);
        assert_eq!(json["goals"][1]["misses"][1]["variant"], "rate 1.0/s");
        // The plain sweep's JSON has no seeds; a crossed one says how many.
        assert!(json.get("seeds").is_none(), "{json}");
        sweep.seeds = Some(3);
        let table = sweep.table();
        assert!(
            table.starts_with(
                "palisade's goals off the defaults: 9 variants (each scenario as given and with \
                 its rate, fault length and capacity × 2/3 and × 3/2, each at 3 seeds)\n"
            ),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&sweep.json().unwrap()).unwrap();
        assert_eq!(json["seeds"], 3);
        // Where palisade ran beside other stacks, whether one outdid it: none did, then tower
        // and naive both did in one variant, and tower outdid a file's stack there too (the
        // variant counted once), listed in the order found.
        sweep.judged = 9;
        assert!(
            sweep.table().ends_with(
                "goals held in every variant: 1 of 2\n\nnot outdone in any of the 9 variants: \
                 no other stack answered more requests at no more upstream load\n"
            ),
            "{}",
            sweep.table()
        );
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("mine", config));
        for (stack, by) in [
            (StackKind::Palisade, StackKind::Tower),
            (StackKind::Palisade, StackKind::Naive),
            (file, StackKind::Tower),
        ] {
            sweep.outdone.push(OutdoneIn {
                variant: "seed 2".into(),
                outdone: Outdone {
                    scenario: ScenarioKind::Degraded,
                    stack,
                    by,
                    measured: format!("{by} measured"),
                },
            });
        }
        let table = sweep.table();
        assert!(
            table.ends_with(
                "\noutdone in 1 of the 9 variants: another stack answered more requests at no more \
                 upstream load\n  \
                 degraded      seed 2: palisade by tower: tower measured\n  \
                 degraded      seed 2: palisade by naive: naive measured\n  \
                 degraded      seed 2: mine by tower: tower measured\n"
            ),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&sweep.json().unwrap()).unwrap();
        assert_eq!(json["judged"], 9);
        assert_eq!(json["outdone"][1]["variant"], "seed 2");
        assert_eq!(json["outdone"][1]["by"], "naive");
        sweep.outdone.clear();
        sweep.judged = 0;
        // A goal judged in some variants counts by those; one judged in none counts not at
        // all.
        sweep.goals[0].runs = 6;
        sweep.goals[0].held = 6;
        sweep.goals[0].unjudged = 3;
        sweep.goals.push(GoalSweep {
            scenario: ScenarioKind::Failover,
            stack: StackKind::Palisade,
            goal: "idle".into(),
            held: 0,
            runs: 0,
            unjudged: 9,
            misses: Vec::new(),
        });
        assert_eq!(sweep.held_everywhere(), (1, 2));
        let mut also = sweep.goals[0].clone();
        also.unjudged = 0;
        sweep.goals.push(also);
        assert_eq!(sweep.held_everywhere(), (2, 3));
        sweep.goals.pop();
        let table = sweep.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1], "   6/6  outage     held — nothing to judge in 3");
        assert_eq!(lines[3], "   0/0  failover   idle — nothing to judge in 9");
        assert_eq!(json["goals"][0]["stack"], "palisade");
        // With a second palisade stack, each goal names the one it judged.
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("classic", config));
        sweep.goals[1].stack = file;
        let table = sweep.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "   6/6  outage     palisade: held — nothing to judge in 3"
        );
        assert!(
            lines[2].starts_with("   7/9  rate-limit classic: missed — "),
            "{table}"
        );
    }

    #[test]
    fn crossed_runs_every_setting_at_every_seed() {
        let mut brownout = Scenario::new(ScenarioKind::Brownout);
        brownout.params.seed = 7;
        let crossed = crossed(&brownout, 2);
        let labels: Vec<&str> = crossed.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "as given",
                "seed 8",
                "rate 66.7/s",
                "rate 66.7/s, seed 8",
                "rate 150.0/s",
                "rate 150.0/s, seed 8",
                "fault 6.7 s",
                "fault 6.7 s, seed 8",
                "fault 15.0 s",
                "fault 15.0 s, seed 8",
                "capacity 100.0/s",
                "capacity 100.0/s, seed 8",
                "capacity 225.0/s",
                "capacity 225.0/s, seed 8",
            ]
        );
        // Each keeps its setting and takes its seed.
        let seeds: Vec<u64> = crossed.iter().map(|v| v.scenario.params.seed).collect();
        assert_eq!(seeds, [7, 8].repeat(7));
        assert_eq!(
            crossed[3].scenario.params.rate,
            brownout.params.rate * FACTORS[0]
        );
        assert_eq!(crossed[13].scenario.params.capacity, 225.0);
        // The same variants as the sweep's, where they meet.
        let plain = variants(&brownout);
        assert_eq!(crossed[0], plain[0]);
        assert_eq!(crossed[1], plain[1]);
        assert_eq!(crossed[2], plain[4]);
        assert_eq!(crossed[12], plain[9]);
        // No seeds is one seed.
        assert_eq!(super::crossed(&brownout, 0), super::crossed(&brownout, 1));
        assert_eq!(super::crossed(&brownout, 1).len(), 7);
    }

    #[test]
    fn a_crossed_sweep_judges_every_crossed_variant() {
        let mut failover = Scenario::new(ScenarioKind::Failover);
        failover.params.duration = Duration::from_secs(35);
        let swept = sweep_crossed(
            std::slice::from_ref(&failover),
            &[StackKind::None, StackKind::Palisade],
            2,
            |_, _| {},
        )
        .unwrap();
        // As given, two rates, two fault lengths, at two seeds each.
        assert_eq!((swept.variants, swept.seeds), (10, Some(2)));
        assert!(swept.goals.iter().all(|g| g.runs == 10), "{swept:?}");
        assert_eq!(swept.goals[0].held, 10);
        // Palisade beside another stack in every variant, and never outdone by none.
        assert_eq!(swept.judged, 10);
        assert!(swept.outdone.is_empty(), "{:?}", swept.outdone);
        // With palisade alone, or without it, no variant is judged for being outdone.
        for alone in [StackKind::Palisade, StackKind::None] {
            let swept =
                sweep_crossed(std::slice::from_ref(&failover), &[alone], 1, |_, _| {}).unwrap();
            assert_eq!((swept.variants, swept.judged), (5, 0), "{alone}");
            assert!(!swept.table().contains("outdone"), "{alone}");
        }
    }
}
