//! `palisade-sim`: every scenario, every stack, one table.
//!
//! ```text
//! cargo run --release -p palisade-sim                       # everything, as a table
//! cargo run --release -p palisade-sim -- -s outage --fault-len 15 --rate 150
//! cargo run --release -p palisade-sim -- -s degraded --endings # how the failures ended
//! cargo run --release -p palisade-sim -- --json > report.json
//! cargo run --release -p palisade-sim -- --svg charts/
//! cargo run --release -p palisade-sim -- --sweep           # the goals off the defaults
//! cargo run --release -p palisade-sim -- --sweep --seeds 10 # ... every setting at ten seeds
//! ```

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use palisade_sim::scenario::{Scenario, ScenarioKind};
use palisade_sim::stack::{StackFile, StackKind};

/// Runs resilience stacks through faults in virtual time and prints what each did.
#[derive(Debug, Parser)]
#[command(name = "palisade-sim", version, allow_negative_numbers = true)]
struct Args {
    /// Scenarios to run (default: all): outage, bad-replica, rate-limit, latency-spike,
    /// flapping, brownout, failover, degraded. A scenario named twice runs once.
    #[arg(short, long = "scenario", value_parser = parse_scenario)]
    scenarios: Vec<ScenarioKind>,
    /// Stacks to run (default: all): none, naive, tower, palisade. A path to a TOML file
    /// (`--stack my.toml`, any case of `.toml`; see `palisade::config`) runs palisade's
    /// preset built from that file, beside the others and printed under the file's name
    /// without `.toml` (`my`; the path as given where that name is taken); `PALISADE_…`
    /// environment variables override the file. A file's `[route]` settings apply where a
    /// scenario has replicas (which stand for its `[[endpoints]]`). Several files can run side
    /// by side; palisade's goals are then judged for each palisade stack (the built-in one
    /// and each file's) on its own, against the stacks that are not palisade's.
    #[arg(long = "stack")]
    stacks: Vec<String>,
    /// Requests per second (each scenario's default otherwise).
    #[arg(long)]
    rate: Option<f64>,
    /// Length of the fault, in seconds.
    #[arg(long)]
    fault_len: Option<f64>,
    /// Length of the run, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Number of replicas.
    #[arg(long)]
    replicas: Option<usize>,
    /// Calls per second each replica serves (rate-limit) or returns to (brownout).
    #[arg(long)]
    capacity: Option<f64>,
    /// How long capacity takes to return (brownout), in seconds.
    #[arg(long)]
    ramp: Option<f64>,
    /// The server's retry hint on a 429, in seconds.
    #[arg(long)]
    hint: Option<f64>,
    /// Each request's deadline, in seconds.
    #[arg(long)]
    deadline: Option<f64>,
    /// The per-attempt timeout, in seconds.
    #[arg(long)]
    attempt_timeout: Option<f64>,
    /// The seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Closed-loop traffic: this many clients, each sending its next request once its previous
    /// one has its answer (no sooner than `clients / rate` seconds after it), as agents that
    /// call from a loop do; the table then gives the requests each stack got to send.
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Print the whole report as JSON instead of the table (with `--health`, the monitor's
    /// rows too, under `health`).
    #[arg(long)]
    json: bool,
    /// Also run `palisade::health`'s monitor over an hour of steady traffic (six seeded
    /// 10-minute runs with 1 % background errors) and over every scenario, and print its false
    /// alarms and detection delays (with `--json`, in the JSON).
    #[arg(long)]
    health: bool,
    /// Also print, after the table, how the requests that were not answered ended in each
    /// run (and how many of them were sent during the fault): cut off at the caller's
    /// deadline, or the class of the error the stack returned, with the attempts each sent and
    /// their mean latency (always in `--json`, as `unanswered`).
    #[arg(long, conflicts_with = "sweep")]
    endings: bool,
    /// Write one SVG chart per scenario into this directory.
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
    /// Instead of the table: run each scenario again with three more seeds and with its rate,
    /// fault length and capacity moved by half again either way (× 2/3, × 3/2), and print, for
    /// each of palisade's goals, in how many of these variants it held and what was measured
    /// where it did not (with `--json`, as JSON).
    #[arg(long, conflicts_with_all = ["svg", "health"])]
    sweep: bool,
    /// With `--sweep`: run every setting (as given, and each rate, fault length and capacity
    /// moved) at this many seeds (the given `--seed` and the ones after it), instead of the
    /// three more seeds of the given setting alone.
    #[arg(long, value_name = "N", requires = "sweep", value_parser = clap::value_parser!(u64).range(1..=1000))]
    seeds: Option<u64>,
}

fn parse_scenario(s: &str) -> Result<ScenarioKind, String> {
    ScenarioKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = ScenarioKind::ALL.iter().map(|k| k.name()).collect();
        format!("no scenario {s:?}; the scenarios are {}", names.join(", "))
    })
}

fn parse_stack(s: &str) -> Result<StackKind, String> {
    StackKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = StackKind::ALL.iter().map(|k| k.name()).collect();
        let names = names.join(", ");
        if looks_like_a_path(s) {
            format!(
                "no stack {s:?}: a stack file's name must end in .toml (it is read as TOML); \
                 the built-in stacks are {names}"
            )
        } else {
            format!("no stack {s:?}; the stacks are {names}")
        }
    })
}

/// Whether `--stack`'s argument names a stack file: its name ends in `.toml`, in any case.
fn is_stack_file(s: &str) -> bool {
    Path::new(s)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Whether `--stack`'s argument looks like a path rather than a stack's name: it has a path
/// separator or an extension.
fn looks_like_a_path(s: &str) -> bool {
    s.contains(['/', std::path::MAIN_SEPARATOR]) || Path::new(s).extension().is_some()
}

/// The label a stack file's rows are printed under: the file's name without its extension,
/// or, where a built-in stack or an earlier file has that name, the path as given (numbered
/// if even that is taken).
fn file_label(path: &str, taken: &[StackKind]) -> String {
    let free = |label: &str| taken.iter().all(|k| k.name() != label);
    let stem = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && StackKind::from_name(s).is_none());
    if let Some(stem) = stem.filter(|s| free(s)) {
        return stem;
    }
    if free(path) {
        return path.to_owned();
    }
    (2..)
        .map(|n| format!("{path} ({n})"))
        .find(|label| free(label))
        .unwrap_or_else(|| path.to_owned())
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        if s > 0.0 {
            // Finite or not, more seconds than a `Duration` holds; the scenario's own
            // rules allow at most an hour.
            format!("--{name} is too long: at most an hour (3600 s)")
        } else {
            format!("--{name} must be a number of seconds, at least 0")
        }
    })
}

impl Args {
    /// The stacks named, in the order first given: the built-in ones, and each configuration
    /// file's stack, with its path. A name or a path given twice runs once.
    fn stacks(&self) -> Result<Vec<(StackKind, Option<&str>)>, String> {
        if self.stacks.is_empty() {
            return Ok(StackKind::ALL.iter().map(|&k| (k, None)).collect());
        }
        let mut stacks: Vec<(StackKind, Option<&str>)> = Vec::with_capacity(self.stacks.len());
        for (i, name) in self.stacks.iter().enumerate() {
            if self.stacks[..i].contains(name) {
                continue;
            }
            let stack = if is_stack_file(name) {
                let text = std::fs::read_to_string(name)
                    .map_err(|e| format!("cannot read the stack file {name}: {e}"))?;
                // `vars_os`, not `vars`, which panics on any variable that is not UTF-8.
                let config = palisade::config::env_vars()
                    .and_then(|vars| {
                        palisade::config::PresetConfig::from_toml_with_env(&text, vars)
                    })
                    .map_err(|e| format!("{name}: {e}"))?;
                let taken: Vec<StackKind> = stacks.iter().map(|&(k, _)| k).collect();
                let label = file_label(name, &taken);
                (
                    StackKind::File(StackFile::new(label, config)),
                    Some(name.as_str()),
                )
            } else {
                (parse_stack(name)?, None)
            };
            stacks.push(stack);
        }
        Ok(stacks)
    }

    /// The scenarios named, in the order first given (all of them when none is), each with
    /// the parameters given. A scenario named twice runs once: its goals are counted once.
    fn scenarios(&self) -> Result<Vec<Scenario>, String> {
        let kinds = if self.scenarios.is_empty() {
            ScenarioKind::ALL.to_vec()
        } else {
            let mut kinds: Vec<ScenarioKind> = Vec::with_capacity(self.scenarios.len());
            for &kind in &self.scenarios {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            kinds
        };
        kinds
            .into_iter()
            .map(|kind| {
                let mut s = Scenario::new(kind);
                let p = &mut s.params;
                if let Some(v) = self.rate {
                    p.rate = v;
                }
                if let Some(v) = self.fault_len {
                    p.fault_len = seconds("fault-len", v)?;
                }
                if let Some(v) = self.duration {
                    p.duration = seconds("duration", v)?;
                }
                if let Some(v) = self.replicas {
                    p.replicas = v;
                }
                if let Some(v) = self.capacity {
                    p.capacity = v;
                }
                if let Some(v) = self.ramp {
                    p.ramp = seconds("ramp", v)?;
                }
                if let Some(v) = self.hint {
                    p.hint = seconds("hint", v)?;
                }
                if let Some(v) = self.deadline {
                    p.deadline = seconds("deadline", v)?;
                }
                if let Some(v) = self.attempt_timeout {
                    p.attempt_timeout = seconds("attempt-timeout", v)?;
                }
                if let Some(v) = self.seed {
                    p.seed = v;
                }
                if self.clients.is_some() {
                    p.clients = self.clients;
                }
                s.validate().map_err(|e| format!("scenario {kind}: {e}"))?;
                Ok(s)
            })
            .collect()
    }
}

/// How long a run would show what follows a fault that ends at `end`: 10 s more, within the
/// longest run there is; a fault that ends in the longest run's last second leaves none.
fn longer_run(end: Duration) -> String {
    let longest = palisade_sim::scenario::MAX_LENGTH;
    let want = (end + Duration::from_secs(10)).min(longest);
    if want < end + Duration::from_secs(1) {
        return format!(
            "no run can show what follows it (a run lasts at most {} s)",
            longest.as_secs()
        );
    }
    format!(
        "`--duration {}` shows what follows it",
        want.as_secs_f64().ceil()
    )
}

/// The progress bar on stderr: drawn only on a terminal, and only once the run has taken more
/// than a second (most invocations finish sooner, and print nothing but the table).
#[derive(Debug)]
struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    const WIDTH: usize = 30;

    fn new(tty: bool) -> Self {
        Progress { tty, shown: false }
    }

    /// What to print after `done` of `total` runs, `elapsed` since the start: the bar, redrawn
    /// over itself, then wiped when the last run is done.
    fn update(&mut self, done: usize, total: usize, elapsed: Duration) -> Option<String> {
        if !self.tty || !(self.shown || elapsed > Duration::from_secs(1)) {
            return None;
        }
        self.shown = true;
        let filled = done * Self::WIDTH / total.max(1);
        let mut line = format!(
            "\r[{}{}] {done}/{total} runs",
            "#".repeat(filled),
            " ".repeat(Self::WIDTH - filled)
        );
        if done == total {
            line.push('\r');
            line.push_str(&" ".repeat(Self::WIDTH + 20));
            line.push('\r');
        }
        Some(line)
    }
}

/// Why the program stops short: its arguments (exit code 2) or a run, a report or a chart
/// that failed (exit code 1); or whoever read its output stopped (`| head`), which ends it
/// quietly, as other command-line tools end.
#[derive(Debug, PartialEq)]
enum Failure {
    Usage(String),
    Run(String),
    Closed,
}

/// Writes `text` to standard output: a write that fails is the program's failure, not a
/// panic as with `print!`, and a closed pipe ends it quietly ([`Failure::Closed`]).
fn write_out(text: std::fmt::Arguments<'_>) -> Result<(), Failure> {
    std::io::stdout().lock().write_fmt(text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Run(format!("writing the output: {e}"))
        }
    })
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))?
    };
}

/// `println!` through [`write_out`].
macro_rules! outln {
    () => {
        write_out(format_args!("\n"))?
    };
    ($($arg:tt)*) => {{
        write_out(format_args!($($arg)*))?;
        write_out(format_args!("\n"))?;
    }};
}

impl Failure {
    fn run(e: impl std::fmt::Display) -> Self {
        Failure::Run(e.to_string())
    }
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("palisade-sim: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("palisade-sim: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Closed) => ExitCode::SUCCESS,
    }
}

// The progress bar measures real time on purpose: it shows how long the run takes a person.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn run(args: &Args) -> Result<(), Failure> {
    let scenarios = args.scenarios().map_err(Failure::Usage)?;
    let named = args.stacks().map_err(Failure::Usage)?;
    let stacks: Vec<StackKind> = named.iter().map(|&(k, _)| k).collect();
    if let Some(dir) = &args.svg {
        // Before the run, not after it: a place the charts cannot go fails at once.
        let cannot =
            |why: String| Failure::Run(format!("writing charts to {}: {why}", dir.display()));
        if dir.exists() && !dir.is_dir() {
            return Err(cannot("it is not a directory".to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|e| cannot(e.to_string()))?;
        // A directory that exists but cannot be written to (read-only, a pseudo file system)
        // fails here too: a file made and removed again.
        let probe = dir.join(".palisade-sim-probe");
        std::fs::write(&probe, b"").map_err(|e| cannot(e.to_string()))?;
        std::fs::remove_file(&probe).map_err(|e| cannot(e.to_string()))?;
    }
    let started = std::time::Instant::now();
    let mut bar = Progress::new(std::io::stderr().is_terminal());
    let progress = |done: usize, total: usize| {
        if let Some(line) = bar.update(done, total, started.elapsed()) {
            eprint!("{line}");
            let _ = std::io::stderr().flush();
        }
    };
    // Real time goes to stderr, so the same seed prints the same output, byte for byte.
    let real_time = || eprintln!("\n({:.1} s of real time)", started.elapsed().as_secs_f64());
    if args.sweep {
        // Every variant within the scenarios' limits before any runs: a value the plain run
        // takes may be moved past one (a fault of 40 minutes, by half again, lasts an hour).
        for s in &scenarios {
            let variants = match args.seeds {
                None => palisade_sim::sweep::variants(s),
                Some(seeds) => palisade_sim::sweep::crossed(s, seeds),
            };
            for v in variants {
                v.scenario.validate().map_err(|e| {
                    Failure::Usage(format!(
                        "--sweep: scenario {}, variant \"{}\": {e} (the sweep moves the rate, \
                         the fault's length, with the run, and the capacity by half again \
                         either way: give values that stay within their limits so moved)",
                        s.kind, v.label
                    ))
                })?;
            }
        }
        let swept = match args.seeds {
            None => palisade_sim::sweep::sweep(&scenarios, &stacks, progress),
            Some(seeds) => palisade_sim::sweep::sweep_crossed(&scenarios, &stacks, seeds, progress),
        }
        .map_err(Failure::run)?;
        if args.json {
            outln!("{}", swept.json().map_err(Failure::run)?);
        } else {
            out!("{}", swept.table());
            real_time();
        }
        return Ok(());
    }
    // A fault that runs past the run's end leaves the figures after it empty: say why, and how
    // long a run would show them (on stderr, so that the output stays the report alone).
    for s in &scenarios {
        if let Some(end) = s.fault_outlasts_run() {
            eprintln!(
                "palisade-sim: {}: its fault ends at {} s, after the {} s run: nothing after it \
                 is measured (`-` in the table, null in the JSON); {}",
                s.kind,
                end.as_secs_f64(),
                s.params.duration.as_secs_f64(),
                longer_run(end),
            );
        }
    }
    let mut report = palisade_sim::run_all(&scenarios, &stacks, progress).map_err(Failure::run)?;
    // The health monitor's runs, when asked for: in the JSON, or printed after the table.
    let health = || palisade_sim::health::evaluate(&scenarios, 10, 6).map_err(Failure::run);
    if args.json {
        if args.health {
            report.health = Some(health()?);
        }
        outln!("{}", report.json().map_err(Failure::run)?);
    } else {
        let traffic = match args.clients {
            None => "open-loop traffic".to_owned(),
            Some(n) => format!("closed-loop traffic from {n} clients"),
        };
        outln!(
            "palisade-sim: {} scenarios × {} stacks in virtual time, {traffic}, seeded\n",
            scenarios.len(),
            stacks.len(),
        );
        for &(stack, path) in &named {
            let (StackKind::File(file), Some(path)) = (stack, path) else {
                continue;
            };
            let config = file.config();
            outln!(
                "(stack {stack} is palisade's, built from {path}: dependency {:?}, deadline {:?}, attempt timeout {:?})",
                config.name,
                config.deadline,
                config.attempt_timeout.limit
            );
            // The scenarios' callers give up at their own deadline; a stack whose deadline is
            // longer keeps retrying for a caller that has gone, which the table counts as
            // requests cut off. Say so, rather than leave a miss to puzzle over.
            let callers = scenarios
                .iter()
                .map(|s| s.params.deadline)
                .min()
                .unwrap_or_default();
            if config.deadline > callers {
                outln!(
                    "(its deadline is longer than the {callers:?} each request's caller waits: where the stack would still \
                     retry, the caller gives up first and the request counts as cut off; set `deadline` in the file to the caller's)"
                );
            }
        }
        if named.iter().any(|(_, path)| path.is_some()) {
            outln!();
        }
        out!("{}", report.table());
        if args.endings {
            out!("\n{}", report.endings(4));
        }
        if args.health {
            out!("\n{}", palisade_sim::health::table(&health()?));
        }
        real_time();
    }
    if let Some(dir) = &args.svg {
        let files = report
            .svg(dir)
            .map_err(|e| Failure::Run(format!("writing charts to {}: {e}", dir.display())))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("palisade-sim").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn without_arguments_every_scenario_on_every_stack_with_its_defaults() {
        let a = args(&[]);
        let scenarios = a.scenarios().unwrap();
        let kinds: Vec<_> = scenarios.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ScenarioKind::ALL);
        for s in &scenarios {
            assert_eq!(s.params, s.kind.defaults(), "{}", s.kind);
        }
        let stacks: Vec<_> = a.stacks().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(stacks, StackKind::ALL);
    }

    #[test]
    fn each_parameter_reaches_every_scenario_named() {
        let a = args(&[
            "-s",
            "outage",
            "-s",
            "brownout",
            "--rate",
            "50",
            "--fault-len",
            "5",
            "--duration",
            "20",
            "--replicas",
            "2",
            "--capacity",
            "10",
            "--ramp",
            "3",
            "--hint",
            "0.5",
            "--deadline",
            "4",
            "--attempt-timeout",
            "0.25",
            "--seed",
            "9",
        ]);
        let scenarios = a.scenarios().unwrap();
        let kinds: Vec<_> = scenarios.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [ScenarioKind::Outage, ScenarioKind::Brownout]);
        let ms = Duration::from_millis;
        for s in &scenarios {
            let p = &s.params;
            assert_eq!(p.rate, 50.0);
            assert_eq!(p.fault_len, ms(5_000));
            assert_eq!(p.duration, ms(20_000));
            assert_eq!(p.replicas, 2);
            assert_eq!(p.capacity, 10.0);
            assert_eq!(p.ramp, ms(3_000));
            assert_eq!(p.hint, ms(500));
            assert_eq!(p.deadline, ms(4_000));
            assert_eq!(p.attempt_timeout, ms(250));
            assert_eq!(p.seed, 9);
            // What was not given keeps the scenario's default.
            assert_eq!(p.fault_start, s.kind.defaults().fault_start);
            assert_eq!(p.latency, s.kind.defaults().latency);
        }
    }

    #[test]
    fn a_stack_named_twice_runs_once_in_the_order_first_given() {
        let a = args(&["--stack", "tower", "--stack", "none", "--stack", "tower"]);
        assert_eq!(
            a.stacks().unwrap(),
            [(StackKind::Tower, None), (StackKind::None, None)]
        );
    }

    #[test]
    fn a_scenario_named_twice_runs_once_in_the_order_first_given() {
        let a = args(&[
            "-s", "flapping", "-s", "outage", "-s", "flapping", "-s", "outage",
        ]);
        let kinds: Vec<_> = a.scenarios().unwrap().iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [ScenarioKind::Flapping, ScenarioKind::Outage]);
    }

    #[test]
    fn bad_values_are_refused_naming_the_option_and_the_rule() {
        for option in [
            "--fault-len",
            "--duration",
            "--ramp",
            "--hint",
            "--deadline",
            "--attempt-timeout",
        ] {
            let err = args(&[option, "-1"]).scenarios().unwrap_err();
            assert_eq!(
                err,
                format!("{option} must be a number of seconds, at least 0")
            );
        }
        for option in ["--hint", "--deadline", "--fault-len"] {
            let err = args(&[option, "1e30"]).scenarios().unwrap_err();
            assert_eq!(
                err,
                format!("{option} is too long: at most an hour (3600 s)")
            );
        }
        let err = args(&["--deadline", "3601"]).scenarios().unwrap_err();
        assert!(
            err.starts_with("scenario outage: ")
                && err.contains("`deadline` must be above 0 and at most an hour"),
            "{err}"
        );
        let err = args(&["--attempt-timeout", "11"]).scenarios().unwrap_err();
        assert!(
            err.contains("`attempt_timeout` must be at most the deadline"),
            "{err}"
        );
        let err = args(&["--rate", "0"]).scenarios().unwrap_err();
        assert!(
            err.starts_with("scenario outage: ") && err.contains("rate"),
            "{err}"
        );
        let err = args(&["--stack", "nope"]).stacks().unwrap_err();
        assert_eq!(
            err,
            "no stack \"nope\"; the stacks are none, naive, tower, palisade"
        );
        let err = Args::try_parse_from(["palisade-sim", "-s", "nope"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no scenario \"nope\"; the scenarios are outage, bad-replica, rate-limit"),
            "{err}"
        );
        let err = args(&["--stack", "no/such/stack.toml"])
            .stacks()
            .unwrap_err();
        assert!(
            err.starts_with("cannot read the stack file no/such/stack.toml: "),
            "{err}"
        );
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(
            file.path(),
            "name = \"llm\"\n[breaker]\nfailure_rate = { ratio = 1.5, min_calls = 20 }\n",
        )
        .unwrap();
        let name = file.path().to_str().unwrap();
        let err = args(&["--stack", name]).stacks().unwrap_err();
        assert!(err.starts_with(&format!("{name}: ")), "{err}");
        assert!(err.contains("breaker.failure_rate.ratio"), "{err}");
    }

    #[test]
    fn a_stack_file_is_any_case_of_toml_and_a_path_that_is_not_one_is_told_so() {
        for name in ["a.toml", "A.TOML", "dir/x.Toml", ".toml.toml"] {
            assert!(is_stack_file(name), "{name}");
        }
        for name in ["toml", "a.tom", "a.toml.bak", "a.yaml", "dir/toml", ".toml"] {
            assert!(!is_stack_file(name), "{name}");
        }
        for name in ["a.yaml", "dir/stack", "stack.", "x.toml.bak"] {
            assert!(looks_like_a_path(name), "{name}");
        }
        for name in ["nope", "Tower", "palisade"] {
            assert!(!looks_like_a_path(name), "{name}");
        }
        let says = |name: &str| {
            format!(
                "no stack {name:?}: a stack file's name must end in .toml (it is read as TOML); \
                 the built-in stacks are none, naive, tower, palisade"
            )
        };
        for name in ["stacks/classic", "classic.yaml"] {
            assert_eq!(args(&["--stack", name]).stacks().unwrap_err(), says(name));
        }
        // Any case of `.toml` is a file, read as one.
        let err = args(&["--stack", "NOPE.TOML"]).stacks().unwrap_err();
        assert!(
            err.starts_with("cannot read the stack file NOPE.TOML: "),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("Classic.TOML");
        std::fs::write(&upper, "name = \"llm\"\n").unwrap();
        let upper = upper.to_str().unwrap();
        let a = args(&["--stack", upper]);
        let stacks = a.stacks().unwrap();
        assert_eq!(stacks.len(), 1);
        assert_eq!(stacks[0].0.name(), "Classic");
        assert_eq!(stacks[0].1, Some(upper));
    }

    #[test]
    fn a_stack_file_runs_beside_the_built_in_palisade_under_its_own_label() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, "name = \"llm\"\n").unwrap();
            path.to_str().unwrap().to_owned()
        };
        let classic = write("classic.toml");
        let other = write("other/classic.toml");
        let named_palisade = write("palisade.toml");
        let a = args(&[
            "--stack",
            "palisade",
            "--stack",
            &classic,
            "--stack",
            &other,
            "--stack",
            &named_palisade,
            "--stack",
            &classic,
        ]);
        let stacks = a.stacks().unwrap();
        let labels: Vec<_> = stacks.iter().map(|(k, _)| k.name()).collect();
        // The file's name; the path where a built-in stack or an earlier file has it; a path
        // given twice runs once.
        assert_eq!(
            labels,
            [
                "palisade",
                "classic",
                other.as_str(),
                named_palisade.as_str()
            ]
        );
        assert_eq!(stacks[0], (StackKind::Palisade, None));
        assert!(stacks[1..].iter().all(|(k, _)| k.is_palisade()));
        let paths: Vec<_> = stacks.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            paths,
            [
                None,
                Some(classic.as_str()),
                Some(other.as_str()),
                Some(named_palisade.as_str())
            ]
        );
        // Where the path is taken too, it is numbered.
        let config = palisade::config::PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let file = |label: &str| StackKind::File(StackFile::new(label, config.clone()));
        let taken = [
            StackKind::Tower,
            file("x"),
            file("d/x.toml"),
            file("d/x.toml (2)"),
        ];
        assert_eq!(file_label("d/x.toml", &taken[..1]), "x");
        assert_eq!(file_label("d/x.toml", &taken[..2]), "d/x.toml");
        assert_eq!(file_label("d/x.toml", &taken[..3]), "d/x.toml (2)");
        assert_eq!(file_label("d/x.toml", &taken), "d/x.toml (3)");
        assert_eq!(file_label("d/tower.toml", &taken[..1]), "d/tower.toml");
        // A built-in stack's name is never a file's label, even when that stack is not run.
        assert_eq!(file_label("d/palisade.toml", &[]), "d/palisade.toml");
    }

    #[test]
    fn the_progress_bar_is_drawn_on_a_terminal_after_a_second() {
        let secs = Duration::from_secs_f64;
        let mut off = Progress::new(false);
        assert_eq!(off.update(1, 4, secs(5.0)), None, "not a terminal");
        let mut bar = Progress::new(true);
        assert_eq!(
            bar.update(1, 4, secs(0.5)),
            None,
            "a quick run prints nothing"
        );
        assert_eq!(
            bar.update(1, 4, secs(1.0)),
            None,
            "only after more than a second"
        );
        let line = bar.update(1, 4, secs(1.5)).unwrap();
        assert_eq!(
            line,
            format!("\r[{}{}] 1/4 runs", "#".repeat(7), " ".repeat(23))
        );
        // Once shown, every update redraws it, however quick.
        let line = bar.update(3, 4, secs(0.0)).unwrap();
        assert_eq!(
            line,
            format!("\r[{}{}] 3/4 runs", "#".repeat(22), " ".repeat(8))
        );
        // The last one wipes it.
        let line = bar.update(4, 4, secs(0.0)).unwrap();
        assert_eq!(
            line,
            format!("\r[{}] 4/4 runs\r{}\r", "#".repeat(30), " ".repeat(50))
        );
    }
}
