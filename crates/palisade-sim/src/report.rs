//! The simulator's output: a table for the terminal, JSON, and SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::goals::{self, Goal, Outdone};
use crate::health::HealthRow;
use crate::metrics::Figures;
use crate::scenario::{Scenario, ScenarioKind};
use crate::stack::StackKind;

/// The lines saying whether palisade was outdone ([`goals::outdone`]) in the `judged` runs
/// (`of` names them: scenarios, variants), each outdone run with the stack that outdid it.
pub(crate) fn outdone_lines(outdone: &[(&str, &Outdone)], judged: usize, of: &str) -> String {
    let mut out = String::new();
    // `of` is a plural; one run is "the one scenario".
    let one = format!("the one {}", of.strip_suffix('s').unwrap_or(of));
    if outdone.is_empty() {
        let all = if judged == 1 {
            one
        } else {
            format!("any of the {judged} {of}")
        };
        let _ = writeln!(
            out,
            "\nnot outdone in {all}: no other stack answered more requests at no more upstream load"
        );
        return out;
    }
    // A scenario (or variant) counts once, whichever stacks were outdone in it and by whom.
    let mut runs: Vec<(&str, ScenarioKind)> = Vec::new();
    for &(label, o) in outdone {
        let run = (label, o.scenario);
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    let some = if judged == 1 {
        one
    } else {
        format!("{} of the {judged} {of}", runs.len())
    };
    let _ = writeln!(
        out,
        "\noutdone in {some}: another stack answered more requests at no more upstream load"
    );
    for &(label, o) in outdone {
        let at = if label.is_empty() {
            String::new()
        } else {
            format!("{label}: ")
        };
        let _ = writeln!(
            out,
            "  {:<13} {at}{} by {}: {}",
            o.scenario.to_string(),
            o.stack,
            o.by,
            o.measured
        );
    }
    out
}

/// Everything one invocation measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The scenarios, with their parameters.
    pub scenarios: Vec<Scenario>,
    /// Every stack's figures in every scenario, scenario by scenario.
    pub runs: Vec<Figures>,
    /// palisade's goals, judged.
    pub goals: Vec<Goal>,
    /// What `palisade::health`'s monitor saw ([`health::evaluate`](crate::health::evaluate)),
    /// when asked for (`--health`); left out of the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<HealthRow>>,
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "-".to_owned(), f)
}

impl Report {
    /// The table, one row per scenario and stack, then the goals.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let header = [
            "scenario",
            "stack",
            "ok %",
            "fault %",
            "after %",
            "calls/req",
            "fault c/r",
            "p50 ms",
            "p99 ms",
            "max ms",
            "detect ms",
            "recover ms",
            "to bad %",
            "early",
            "served %",
            "retried ms",
            "hint wait ms",
        ];
        // Closed loop: how many requests a stack got to send depends on how fast it answered.
        let closed = self.scenarios.iter().any(|s| s.params.clients.is_some());
        let mut header = header.map(str::to_owned).to_vec();
        if closed {
            header.insert(2, "sent".to_owned());
        }
        let columns = header.len();
        let mut rows = vec![header];
        for f in &self.runs {
            // A run with no fault in it (`--fault-len 0`) has no figures "during the fault" and
            // nothing to detect: "-", not 0 % or "never".
            let fault = self
                .scenarios
                .iter()
                .find(|s| s.kind == f.scenario)
                .is_none_or(Scenario::has_fault);
            let during = |cell: String| if fault { cell } else { "-".to_owned() };
            let recover = match (f.recover_ms, f.recovered) {
                (Some(ms), _) => format!("{ms:.0}"),
                (None, Some(false)) => "never".to_owned(),
                _ => "-".to_owned(),
            };
            // Nothing sent during the fault: nothing could be detected either.
            let watched = fault && f.success_fault.is_some();
            let detect = match (
                f.detect_ms,
                watched && !f.scenario.bad_replicas().is_empty(),
            ) {
                (Some(ms), _) => format!("{ms:.0}"),
                (None, true) => "never".to_owned(),
                (None, false) => "-".to_owned(),
            };
            let mut row = vec![
                f.scenario.to_string(),
                f.stack.to_string(),
                pct(f.success),
                during(opt(f.success_fault, pct)),
                opt(f.success_after, pct),
                format!("{:.2}", f.load),
                during(opt(f.load_fault, |v| format!("{v:.2}"))),
                format!("{:.0}", f.p50_ms),
                format!("{:.0}", f.p99_ms),
                format!("{:.0}", f.max_ms),
                detect,
                recover,
                opt(f.bad_share, pct),
                f.early_retries.to_string(),
                opt(f.served, pct),
                opt(f.retried_ms, |v| format!("{v:.0}")),
                opt(f.hint_wait_ms, |v| format!("{v:.0}")),
            ];
            if closed {
                row.insert(2, f.requests.to_string());
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut last_scenario = String::new();
        for (i, row) in rows.iter().enumerate() {
            if i > 1 && row[0] != last_scenario {
                out.push('\n');
            }
            last_scenario.clone_from(&row[0]);
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c < 2 {
                    let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        }
        if !self.goals.is_empty() {
            // The palisade stacks judged, in the order their goals come: with more than one,
            // each gets its own count, and each goal names its stack.
            let mut stacks: Vec<StackKind> = Vec::new();
            for g in &self.goals {
                if !stacks.contains(&g.stack) {
                    stacks.push(g.stack);
                }
            }
            let count = |stack: Option<StackKind>| {
                let goals = || {
                    self.goals
                        .iter()
                        .filter(move |g| stack.is_none_or(|s| g.stack == s))
                };
                let met = goals().filter(|g| g.met == Some(true)).count();
                let judged = goals().filter(|g| g.met.is_some()).count();
                let mut line = format!("{met} of {judged} met");
                let idle = goals().count() - judged;
                if idle > 0 {
                    let _ = write!(line, " ({idle} with nothing to judge in this run)");
                }
                line
            };
            let several = stacks.len() > 1;
            if several {
                out.push_str("\npalisade's goals, each palisade stack judged on its own:\n");
                let width = stacks.iter().map(|s| s.name().chars().count()).max();
                for &stack in &stacks {
                    let _ = writeln!(
                        out,
                        "  {:<width$}  {}",
                        stack.name(),
                        count(Some(stack)),
                        width = width.unwrap_or(0)
                    );
                }
            } else {
                let _ = writeln!(out, "\npalisade's goals: {}", count(None));
            }
            for g in &self.goals {
                let stack = if several {
                    format!("{}: ", g.stack)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {} {:<13} {stack}{} — {}",
                    match g.met {
                        Some(true) => "ok  ",
                        Some(false) => "MISS",
                        None => "n/a ",
                    },
                    g.scenario.to_string(),
                    g.goal,
                    g.measured
                );
            }
            let (outdone, judged) = self.outdone();
            if judged > 0 {
                let outdone: Vec<_> = outdone.iter().map(|o| ("", o)).collect();
                out.push_str(&outdone_lines(&outdone, judged, "scenarios"));
            }
        }
        out
    }

    /// The palisade runs outdone by another stack ([`goals::outdone`]: more requests answered
    /// at no more upstream load), and in how many scenarios palisade ran beside another stack.
    pub fn outdone(&self) -> (Vec<Outdone>, usize) {
        let mut outdone = Vec::new();
        let mut judged = 0;
        for runs in self.runs.chunk_by(|a, b| a.scenario == b.scenario) {
            let Some(scenario) = self.scenarios.iter().find(|s| s.kind == runs[0].scenario) else {
                continue;
            };
            if runs.iter().any(|f| f.stack.is_palisade())
                && runs.iter().any(|f| !f.stack.is_palisade())
            {
                judged += 1;
                outdone.extend(goals::outdone(scenario, runs));
            }
        }
        (outdone, judged)
    }

    /// How the requests that were not answered ended, a line per scenario and stack: how many
    /// there were and how many of them were sent during the fault, then their most common
    /// endings ([`Figures::unanswered`]), each as the
    /// ending, the attempts each request sent (`×N`), how many requests and their mean
    /// latency; at most `most` endings a line, and how many more there were.
    pub fn endings(&self, most: usize) -> String {
        let mut out = String::from(
            "how the requests not answered ended (how many were sent during the fault; the \
             error's class, or cut_off at the caller's deadline; ×N: attempts sent; mean \
             latency):\n",
        );
        let width = |f: fn(&Figures) -> String| {
            self.runs
                .iter()
                .map(|r| f(r).chars().count())
                .max()
                .unwrap_or(0)
        };
        let (w_scenario, w_stack) = (
            width(|r| r.scenario.to_string()),
            width(|r| r.stack.to_string()),
        );
        for f in &self.runs {
            let unanswered: usize = f.unanswered.iter().map(|g| g.requests).sum();
            let _ = write!(
                out,
                "{:<w_scenario$}  {:<w_stack$}  {unanswered:>5} of {}",
                f.scenario.to_string(),
                f.stack.to_string(),
                f.requests,
            );
            if unanswered > 0 {
                let in_fault: usize = f.unanswered.iter().map(|g| g.in_fault).sum();
                let _ = write!(out, " ({in_fault} sent in the fault)");
            }
            let mut sep = ": ";
            for g in f.unanswered.iter().take(most) {
                let _ = write!(
                    out,
                    "{sep}{} ×{} {} ({:.0} ms)",
                    g.ending, g.attempts, g.requests, g.mean_ms
                );
                sep = ", ";
            }
            if let Some(rest) = f.unanswered.get(most..).filter(|r| !r.is_empty()) {
                let requests: usize = rest.iter().map(|g| g.requests).sum();
                let _ = write!(out, ", and {requests} more in {} other ways", rest.len());
            }
            out.push('\n');
        }
        out
    }

    /// The report as pretty-printed JSON, with the runs in which another stack outdid
    /// palisade ([`Report::outdone`]) as `outdone` (empty where none did).
    ///
    /// # Errors
    /// Never in practice: every figure is a plain number or string.
    pub fn json(&self) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a Report,
            outdone: Vec<Outdone>,
        }
        serde_json::to_string_pretty(&Json {
            report: self,
            outdone: self.outdone().0,
        })
    }

    /// One SVG chart per scenario in `dir` (created if missing), `<scenario>.svg`: success rate
    /// and upstream load per second, a line per stack, the fault window shaded.
    ///
    /// # Errors
    /// The directory or a file cannot be written.
    pub fn svg(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for scenario in &self.scenarios {
            let runs: Vec<&Figures> = self
                .runs
                .iter()
                .filter(|f| f.scenario == scenario.kind)
                .collect();
            let path = dir.join(format!("{}.svg", scenario.kind));
            chart(&path, scenario, &runs)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The stacks' colours, in the order they run: ten that read apart on white (the first five
/// are those of the built-in stacks and a first stack file).
const COLOURS: [RGBColor; 10] = [
    RGBColor(150, 150, 150),
    RGBColor(230, 120, 30),
    RGBColor(40, 110, 200),
    RGBColor(20, 160, 80),
    RGBColor(180, 40, 160),
    RGBColor(210, 40, 40),
    RGBColor(0, 150, 160),
    RGBColor(140, 86, 40),
    RGBColor(150, 150, 20),
    RGBColor(30, 30, 110),
];

/// The `i`th stack's line: its colour, and whether it is dashed (beyond the ten colours, the
/// same colours again, dashed, so that no two of the first twenty stacks look alike).
fn line(i: usize) -> (RGBColor, bool) {
    (COLOURS[i % COLOURS.len()], i >= COLOURS.len())
}

/// Draws `points` as the `i`th stack's line, solid or dashed (see [`line`]).
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    i: usize,
    points: Vec<(f64, f64)>,
    label: Option<String>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (colour, dashed) = line(i);
    let style = colour.stroke_width(2);
    let series = if dashed {
        chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?
    } else {
        chart.draw_series(LineSeries::new(points, style))?
    };
    if let Some(label) = label {
        let series = series.label(label);
        if dashed {
            series.legend(move |(x, y)| {
                plotters::element::DashedPathElement::new(
                    vec![(x, y), (x + 18, y)],
                    4,
                    3,
                    colour.stroke_width(2),
                )
            });
        } else {
            series.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
    }
    Ok(())
}

fn chart(
    path: &Path,
    scenario: &Scenario,
    runs: &[&Figures],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} — {} requests/s, seed {}",
        scenario.kind, scenario.params.rate, scenario.params.seed
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(300);
    let seconds = runs.iter().map(|f| f.series.len()).max().unwrap_or(1) as f64;
    let (fs, fe) = scenario.fault_window();
    let (fs, fe) = (fs.as_secs_f64(), fe.as_secs_f64());
    let max_load = runs
        .iter()
        .flat_map(|f| f.series.iter().map(|s| s.attempts))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;

    let mut success = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .caption(
            "answered, % of requests sent each second",
            ("sans-serif", 15),
        )
        .build_cartesian_2d(0.0..seconds, 0.0..105.0)?;
    success.configure_mesh().x_desc("s").draw()?;
    success.draw_series(std::iter::once(Rectangle::new(
        [(fs, 0.0), (fe, 105.0)],
        RGBColor(250, 215, 215).filled(),
    )))?;
    for (i, f) in runs.iter().enumerate() {
        let points = f.series.iter().filter(|s| s.sent > 0).map(|s| {
            (
                f64::from(s.t) + 0.5,
                100.0 * f64::from(s.ok) / f64::from(s.sent),
            )
        });
        draw_line(&mut success, i, points.collect(), Some(f.stack.to_string()))?;
    }
    success
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let mut load = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .caption("upstream calls each second", ("sans-serif", 15))
        .build_cartesian_2d(0.0..seconds, 0.0..max_load)?;
    load.configure_mesh().x_desc("s").draw()?;
    load.draw_series(std::iter::once(Rectangle::new(
        [(fs, 0.0), (fe, max_load)],
        RGBColor(250, 215, 215).filled(),
    )))?;
    for (i, f) in runs.iter().enumerate() {
        let points = f
            .series
            .iter()
            .map(|s| (f64::from(s.t) + 0.5, f64::from(s.attempts)));
        draw_line(&mut load, i, points.collect(), None)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioKind;

    /// A goal with nothing to judge in the run reads "n/a" with its reason, and the count
    /// leaves it out.
    #[test]
    fn the_goals_count_only_what_the_run_could_judge() {
        let goal = |text: &str, measured: &str, met| crate::goals::Goal {
            scenario: ScenarioKind::Outage,
            stack: StackKind::Palisade,
            goal: text.to_owned(),
            measured: measured.to_owned(),
            met,
        };
        let mut report = Report {
            scenarios: Vec::new(),
            runs: Vec::new(),
            goals: vec![
                goal("judged", "1", Some(true)),
                goal("missed", "2", Some(false)),
                goal("idle", "no fault in this run", None),
            ],
            health: None,
        };
        let table = report.table();
        let goals = &table[table.find('\n').unwrap()..];
        assert_eq!(
            goals,
            "\n\npalisade's goals: 1 of 2 met (1 with nothing to judge in this run)\n  \
             ok   outage        judged — 1\n  \
             MISS outage        missed — 2\n  \
             n/a  outage        idle — no fault in this run\n"
        );
        report.goals.pop();
        assert!(
            report
                .table()
                .contains("\n\npalisade's goals: 1 of 2 met\n")
        );
    }

    /// After the goals, whether another stack answered more at no more load, scenario by
    /// scenario, counting only those where palisade ran beside another stack.
    #[test]
    fn the_table_says_where_another_stack_outdid_palisade() {
        let run = |kind, stack, success, load| Figures {
            success,
            load,
            ..crate::goals::tests::figures(kind, stack)
        };
        let (outage, degraded) = (ScenarioKind::Outage, ScenarioKind::Degraded);
        let mut report = Report {
            scenarios: vec![Scenario::new(outage), Scenario::new(degraded)],
            runs: vec![
                run(outage, StackKind::Tower, 0.75, 1.07),
                run(outage, StackKind::Palisade, 0.98, 0.99),
                run(degraded, StackKind::Naive, 0.93, 1.73),
                run(degraded, StackKind::Tower, 0.68, 1.22),
                run(degraded, StackKind::Palisade, 0.66, 1.13),
            ],
            goals: Vec::new(),
            health: None,
        };
        report.goals = report
            .scenarios
            .iter()
            .flat_map(|s| {
                let runs: Vec<Figures> = report
                    .runs
                    .iter()
                    .filter(|f| f.scenario == s.kind)
                    .cloned()
                    .collect();
                crate::goals::judge(s, &runs)
            })
            .collect();
        assert!(
            report.table().ends_with(
                "\nnot outdone in any of the 2 scenarios: no other stack answered more requests \
                 at no more upstream load\n"
            ),
            "{}",
            report.table()
        );
        let json: serde_json::Value = serde_json::from_str(&report.json().unwrap()).unwrap();
        assert_eq!(json["outdone"], serde_json::json!([]));
        // Tower's 68 % at palisade's load or less: outdone there.
        report.runs[3].load = 1.13;
        assert!(
            report.table().ends_with(
                "\noutdone in 1 of the 2 scenarios: another stack answered more requests at no \
                 more upstream load\n  \
                 degraded      palisade by tower: 66.00 % against 68.00 %, at 1.13 against 1.13 \
                 calls/req\n"
            ),
            "{}",
            report.table()
        );
        let json: serde_json::Value = serde_json::from_str(&report.json().unwrap()).unwrap();
        assert_eq!(json["outdone"][0]["scenario"], "degraded");
        assert_eq!(json["outdone"][0]["by"], "tower");
        assert_eq!(json["runs"].as_array().unwrap().len(), 5);
        // A scenario palisade ran in alone is not counted.
        report.runs.remove(0);
        assert!(
            report
                .table()
                .contains("\noutdone in the one scenario: another stack")
        );
        report.runs[2].load = 1.14;
        assert!(report.table().ends_with("\nnot outdone in the one scenario: no other stack answered more requests at no more upstream load\n"));
    }

    /// With more than one palisade stack, each has its own count and each goal its stack.
    #[test]
    fn the_goals_of_several_palisade_stacks_are_counted_apart() {
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = StackKind::File(crate::stack::StackFile::new("classic", config));
        let goal = |stack, text: &str, met| crate::goals::Goal {
            scenario: ScenarioKind::Outage,
            stack,
            goal: text.to_owned(),
            measured: "m".to_owned(),
            met,
        };
        let report = Report {
            scenarios: Vec::new(),
            runs: Vec::new(),
            goals: vec![
                goal(StackKind::Palisade, "a", Some(true)),
                goal(StackKind::Palisade, "b", Some(true)),
                goal(file, "a", Some(true)),
                goal(file, "b", Some(false)),
                goal(file, "c", None),
            ],
            health: None,
        };
        let table = report.table();
        let goals = &table[table.find('\n').unwrap()..];
        assert_eq!(
            goals,
            "\n\npalisade's goals, each palisade stack judged on its own:\n  \
             palisade  2 of 2 met\n  \
             classic   1 of 2 met (1 with nothing to judge in this run)\n  \
             ok   outage        palisade: a — m\n  \
             ok   outage        palisade: b — m\n  \
             ok   outage        classic: a — m\n  \
             MISS outage        classic: b — m\n  \
             n/a  outage        classic: c — m\n"
        );
    }

    /// Each stack of a chart has its own line: with more stacks than the built-in four (stack
    /// files beside them), no two share a colour (with six, two were grey), and beyond the
    /// palette the colours come again dashed.
    #[test]
    fn every_stack_of_a_chart_has_its_own_line() {
        let mut outage = Scenario::new(ScenarioKind::Outage);
        outage.params.duration = std::time::Duration::from_secs(15);
        let base = crate::run(&outage, StackKind::None).unwrap();
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let stacks: Vec<StackKind> = StackKind::ALL
            .into_iter()
            .chain((0..8).map(|i| {
                StackKind::File(crate::stack::StackFile::new(
                    format!("f{i}"),
                    config.clone(),
                ))
            }))
            .collect();
        let runs: Vec<Figures> = stacks
            .iter()
            .map(|&stack| Figures {
                stack,
                ..base.clone()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        // The success lines of the first `n` stacks: their colours, and the dashed ones'.
        let lines = |n: usize| {
            let report = Report {
                scenarios: vec![outage.clone()],
                runs: runs[..n].to_vec(),
                goals: Vec::new(),
                health: None,
            };
            let svg = std::fs::read_to_string(&report.svg(dir.path()).unwrap()[0]).unwrap();
            let stroke = |l: &str| {
                l.split("stroke=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .map(str::to_owned)
            };
            let solid: std::collections::BTreeSet<String> = svg
                .lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(r#"stroke-width="2""#))
                .filter_map(stroke)
                .collect();
            (solid, svg)
        };
        let (six, _) = lines(6);
        assert_eq!(six.len(), 6, "{six:?}");
        let (ten, _) = lines(10);
        assert_eq!(ten.len(), 10, "{ten:?}");
        // The eleventh and twelfth take the first colours again, dashed.
        assert_eq!(line(10), (COLOURS[0], true));
        assert_eq!(line(9), (COLOURS[9], false));
        let (twelve, svg) = lines(12);
        assert_eq!(twelve, ten);
        assert!(svg.contains("f7"), "every stack in the legend");
    }

    /// Each run's line of endings gives how many requests were not answered and how many of
    /// them were sent during the fault, then the most common endings, then how many more there
    /// were.
    #[test]
    fn the_endings_list_the_most_common_first_and_count_the_rest() {
        use crate::metrics::Unanswered;
        let mut outage = Scenario::new(ScenarioKind::Outage);
        outage.params.duration = std::time::Duration::from_secs(15);
        let base = crate::run(&outage, StackKind::None).unwrap();
        let group = |ending, attempts, requests, mean_ms| Unanswered {
            ending,
            attempts,
            requests,
            in_fault: requests,
            mean_ms,
        };
        let palisade = Figures {
            stack: StackKind::Palisade,
            requests: 1_500,
            unanswered: vec![
                group("rejected", 0, 30, 9_560.4),
                group("server_error", 1, 20, 9_868.0),
                group("cut_off", 2, 3, 10_000.0),
                Unanswered {
                    in_fault: 0,
                    ..group("timeout", 1, 2, 1_000.0)
                },
            ],
            ..base.clone()
        };
        let answered = Figures {
            stack: StackKind::Tower,
            requests: 1_500,
            unanswered: Vec::new(),
            ..base
        };
        let report = Report {
            scenarios: vec![outage],
            runs: vec![palisade, answered],
            goals: Vec::new(),
            health: None,
        };
        let text = report.endings(2);
        let lines: Vec<_> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "outage  palisade     55 of 1500 (53 sent in the fault): rejected ×0 30 (9560 \
                 ms), server_error ×1 20 (9868 ms), and 5 more in 2 other ways",
                "outage  tower         0 of 1500",
            ]
        );
        // Room for every ending: none left to count.
        assert!(!report.endings(4).contains("more in"));
    }

    /// The detection and recovery columns tell "never happened" from "does not apply".
    #[test]
    fn never_and_not_applicable_read_differently() {
        let mut outage = Scenario::new(ScenarioKind::Outage);
        outage.params.duration = std::time::Duration::from_secs(15);
        let base = crate::run(&outage, StackKind::None).unwrap();
        let cell = |f: &Figures, column: &str| {
            let report = Report {
                scenarios: vec![outage.clone()],
                runs: vec![f.clone()],
                goals: Vec::new(),
                health: None,
            };
            let table = report.table();
            let mut lines = table.lines();
            let header = lines.next().unwrap();
            let row = lines.next().unwrap();
            // Columns are right-aligned under their headers, two spaces apart.
            let end = header.find(column).unwrap() + column.len();
            let start = row[..end].rfind("  ").map_or(0, |i| i + 2);
            row[start..end].trim().to_owned()
        };
        let mut f = base;
        (f.detect_ms, f.recover_ms, f.recovered) = (Some(1234.4), Some(56.6), Some(true));
        assert_eq!(cell(&f, "detect ms"), "1234");
        assert_eq!(cell(&f, "recover ms"), "57");
        (f.detect_ms, f.recover_ms, f.recovered) = (None, None, Some(false));
        assert_eq!(
            cell(&f, "detect ms"),
            "never",
            "the outage has a bad replica"
        );
        assert_eq!(cell(&f, "recover ms"), "never");
        f.recovered = None;
        assert_eq!(cell(&f, "recover ms"), "-");
        // A scenario whose fault is not in one place has nothing to detect.
        let mut flapping = f.clone();
        flapping.scenario = ScenarioKind::Flapping;
        assert_eq!(cell(&flapping, "detect ms"), "-");
        // A run without a fault has no "during the fault" and nothing to detect.
        let mut quiet = outage.clone();
        quiet.params.fault_len = std::time::Duration::ZERO;
        let table = Report {
            scenarios: vec![quiet],
            runs: vec![f.clone()],
            goals: Vec::new(),
            health: None,
        }
        .table();
        let mut lines = table.lines();
        let (header, row) = (lines.next().unwrap(), lines.next().unwrap());
        for column in ["fault %", "fault c/r", "detect ms"] {
            let end = header.find(column).unwrap() + column.len();
            let start = row[..end].rfind("  ").map_or(0, |i| i + 2);
            assert_eq!(row[start..end].trim(), "-", "{column}: {row}");
        }
        // No goals judged: no goals line.
        assert!(
            !Report {
                scenarios: vec![],
                runs: vec![f],
                goals: vec![],
                health: None,
            }
            .table()
            .contains("goals")
        );
    }
}
