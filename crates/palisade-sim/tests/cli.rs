//! The `palisade-sim` binary as a user runs it: what it prints, where, and its exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade-sim"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs the binary and checks that it exits with `code`.
fn exits(code: i32, args: &[&str]) -> Output {
    let out = sim(args);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
    out
}

/// The stack column of `scenario`'s rows in a table.
fn stacks_of<'a>(scenario: &str, table: &'a str) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(scenario))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// A short outage, so each run takes a fraction of a second even unoptimised.
const SHORT: [&str; 4] = ["-s", "outage", "--duration", "20"];

#[test]
fn json_goes_to_stdout_and_nothing_else() {
    let out = sim(&[&SHORT[..], &["--stack", "none", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["stack"], "none");
    assert_eq!(runs[0]["scenario"], "outage");
    assert_eq!(json["scenarios"][0]["params"]["duration"], 20_000.0);
    assert_eq!(text(&out.stderr), "", "no real time, no progress");
}

#[test]
fn the_table_goes_to_stdout_and_real_time_to_stderr() {
    let out = sim(&[&SHORT[..], &["--stack", "none", "--stack", "palisade"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "palisade-sim: 1 scenarios × 2 stacks in virtual time, open-loop traffic, seeded\n\nscenario "
        ),
        "{stdout}"
    );
    let rows = stacks_of("outage", stdout);
    assert_eq!(rows, ["none", "palisade"]);
    assert!(stdout.contains("palisade's goals: "), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("\n(") && stderr.ends_with(" s of real time)\n"),
        "{stderr:?}"
    );
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let out = exits(2, &["--rate", "0"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("palisade-sim: scenario outage: "),
        "{stderr}"
    );
    assert!(stderr.contains("rate"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = exits(2, &["--stack", "nope"]);
    assert_eq!(
        text(&out.stderr),
        "palisade-sim: no stack \"nope\"; the stacks are none, naive, tower, palisade\n"
    );

    let out = exits(2, &["--hint", "-1"]);
    assert_eq!(
        text(&out.stderr),
        "palisade-sim: --hint must be a number of seconds, at least 0\n"
    );

    // Values that once ran out of memory (a deadline's worth of trailing requests), looped
    // for ever (a ramp integrated in 10 ms steps) or failed inside the preset's own
    // configuration now stop at the argument, naming the rule.
    for (args, says) in [
        (
            &["--deadline", "1e15"][..],
            "`deadline` must be above 0 and at most an hour",
        ),
        (
            &["-s", "brownout", "--ramp", "1e15"][..],
            "`ramp` must be at most an hour",
        ),
        (
            &["--attempt-timeout", "100"][..],
            "`attempt_timeout` must be at most the deadline",
        ),
        (
            &["--rate", "100000", "--duration", "100"][..],
            "at most 5000000 requests",
        ),
        (
            &["--clients", "0"][..],
            "`clients` must be between 1 and 10000",
        ),
    ] {
        let out = exits(2, args);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

fn classic() -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/stacks/classic.toml");
    file.to_str().unwrap().to_owned()
}

#[test]
fn a_stack_file_builds_a_palisade_stack_and_says_so() {
    let file = classic();
    let out = sim(&[&SHORT[..], &["--stack", &file]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "(stack classic is palisade's, built from {file}: dependency "
        )),
        "{stdout}"
    );
    assert!(stdout.contains("\noutage    classic "), "{stdout}");
    // Its deadline is the scenario's 10 s: nothing to warn about.
    assert!(!stdout.contains("(its deadline is longer"), "{stdout}");
    // One palisade stack: the goals read as they do without a file.
    assert!(stdout.contains("\npalisade's goals: "), "{stdout}");
    assert!(!stdout.contains("classic: "), "{stdout}");
}

/// A variable that is not UTF-8, however unrelated, does not stop a stack file from being read
/// (`std::env::vars` panicked on it); a `PALISADE_…` one is refused, named, as a usage error.
#[cfg(unix)]
#[test]
fn a_variable_that_is_not_utf8_is_left_out_of_a_stack_files_overrides_unless_it_is_ours() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let file = classic();
    let args = [&SHORT[..], &["--stack", &file]].concat();
    let run = |name: &str, value: &[u8]| {
        Command::new(env!("CARGO_BIN_EXE_palisade-sim"))
            .args(&args)
            .env(name, OsStr::from_bytes(value))
            .output()
            .expect("the binary runs")
    };
    let out = run("UNRELATED", b"caf\xe9");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("PALISADE_DEADLINE", b"5\xffs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(
            "has a variable whose value is not UTF-8, `PALISADE_DEADLINE`: a `PALISADE_` \
             variable is read as text"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// `--stack palisade --stack FILE.toml` runs both, the file's under its own name, in the
/// table, the goals and the JSON; each is judged on its own.
#[test]
fn a_stack_file_runs_beside_the_built_in_palisade_stack() {
    let file = classic();
    let both = [&SHORT[..], &["--stack", "palisade", "--stack", &file]].concat();
    let out = sim(&both);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("palisade-sim: 1 scenarios × 2 stacks in virtual time"),
        "{stdout}"
    );
    let rows = stacks_of("outage", stdout);
    assert_eq!(rows, ["palisade", "classic"]);
    assert!(
        stdout.contains(
            "\npalisade's goals, each palisade stack judged on its own:\n  \
             palisade  "
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\n  classic   "), "{stdout}");
    let goals = |stack: &str| {
        stdout
            .lines()
            .filter(|l| l.contains(&format!(" outage        {stack}: ")))
            .count()
    };
    assert!(goals("palisade") > 0, "{stdout}");
    assert_eq!(goals("palisade"), goals("classic"), "{stdout}");

    let out = sim(&[&both[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stacks: Vec<_> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stack"].as_str().unwrap())
        .collect();
    assert_eq!(stacks, ["palisade", "classic"]);
    let judged = |stack: &str| {
        json["goals"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["stack"] == stack)
            .count()
    };
    assert!(judged("palisade") > 0, "{json}");
    assert_eq!(judged("palisade"), judged("classic"), "{json}");
    // The two stacks differ: the file's breaker stays open past the outage.
    assert_ne!(json["runs"][0]["success"], json["runs"][1]["success"]);
}

#[test]
fn a_stack_argument_that_is_a_path_but_not_toml_says_so() {
    let out = exits(2, &["--stack", "stacks/classic.yaml"]);
    assert_eq!(
        text(&out.stderr),
        "palisade-sim: no stack \"stacks/classic.yaml\": a stack file's name must end in .toml \
         (it is read as TOML); the built-in stacks are none, naive, tower, palisade\n"
    );
    let out = exits(2, &["--stack", "NOPE.TOML"]);
    assert!(
        text(&out.stderr).starts_with("palisade-sim: cannot read the stack file NOPE.TOML: "),
        "{}",
        text(&out.stderr)
    );
    // Any case of `.toml` runs.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Classic.TOML");
    std::fs::copy(classic(), &file).unwrap();
    let out = sim(&[&SHORT[..], &["--stack", file.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\noutage    Classic "),
        "{}",
        text(&out.stdout)
    );
}

/// `--health --json` puts the monitor's rows in the JSON; without `--health` there are none.
#[test]
fn health_with_json_is_in_the_json() {
    let args = [&SHORT[..], &["--stack", "none", "--json"]].concat();
    let out = sim(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json.get("health").is_none(), "{json}");

    let out = sim(&[&args[..], &["--health"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["health"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "the steady runs and the outage: {json}");
    assert_eq!(rows[0]["name"], "steady, 1 % errors (6 × 10 min)");
    // An hour of checks, and those of each run's trailing traffic.
    assert!(rows[0]["steady_checks"].as_u64().unwrap() >= 3600, "{json}");
    assert!(rows[0]["detected_after_ms"].is_null(), "{json}");
    assert_eq!(rows[1]["name"], "outage");
    assert!(
        rows[1]["detected_after_ms"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    // The worst status during the fault, as the table words it.
    assert_eq!(rows[1]["worst"], "degrading");
    assert_eq!(text(&out.stderr), "", "nothing but JSON");
}

/// A file that leaves `deadline` out keeps the preset's 30 s, longer than the 10 s each
/// scenario's caller waits: the run says why requests count as cut off.
#[test]
fn a_stack_file_whose_deadline_outlasts_the_caller_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.toml");
    std::fs::write(&file, "name = \"llm\"\n").unwrap();
    let out = sim(&[&SHORT[..], &["--stack", file.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "(its deadline is longer than the 10s each request's caller waits: where the stack \
             would still retry, the caller gives up first and the request counts as cut off; \
             set `deadline` in the file to the caller's)"
        ),
        "{stdout}"
    );
}

#[test]
fn charts_are_written_where_asked_and_a_bad_place_fails() {
    let dir = tempfile::tempdir().unwrap();
    let charts = dir.path().join("charts");
    let out = sim(&[
        &SHORT[..],
        &["--stack", "none", "--json", "--svg"],
        &[charts.to_str().unwrap()],
    ]
    .concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = charts.join("outage.svg");
    assert!(
        std::fs::read_to_string(&written)
            .unwrap()
            .starts_with("<svg")
    );
    assert_eq!(text(&out.stderr), format!("wrote {}\n", written.display()));

    // A directory that cannot be made: under a file.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let under = blocked.join("charts");
    let out = exits(
        1,
        &[
            &SHORT[..],
            &["--stack", "none", "--json", "--svg"],
            &[under.to_str().unwrap()],
        ]
        .concat(),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "palisade-sim: writing charts to {}: ",
            under.display()
        )),
        "{stderr}"
    );
    // ... and before the run: nothing on stdout.
    assert!(out.stdout.is_empty());

    // A file where the directory should be.
    let out = exits(
        1,
        &[&SHORT[..], &["--svg"], &[blocked.to_str().unwrap()]].concat(),
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "palisade-sim: writing charts to {}: it is not a directory\n",
            blocked.display()
        )
    );
    assert!(out.stdout.is_empty());

    // A directory that exists but cannot be written to fails before the run too (Linux's
    // /proc: root, which CI may run as, can write to a directory that is only read-only by
    // its mode).
    if Path::new("/proc/self").is_dir() {
        let out = exits(1, &[&SHORT[..], &["--svg", "/proc"]].concat());
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("palisade-sim: writing charts to /proc: "),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// A sweep whose moved values break a scenario's limit is a usage error naming the variant,
/// before anything runs: an hour's fault is a valid run, but the sweep lengthens it by half
/// again, past the hour.
#[test]
fn a_sweep_variant_past_a_limit_is_named() {
    let out = exits(
        2,
        &[
            "-s",
            "outage",
            "--fault-len",
            "3600",
            "--stack",
            "none",
            "--sweep",
        ],
    );
    assert_eq!(
        text(&out.stderr).lines().next().unwrap(),
        "palisade-sim: --sweep: scenario outage, variant \"fault 5400.0 s\": invalid \
         configuration: `fault_len` must be at most an hour (the sweep moves the \
         rate, the fault's length, with the run, and the capacity by half again either way: \
         give values that stay within their limits so moved)"
    );
    assert!(out.stdout.is_empty());
}

/// A fault that outlasts the run: stderr says how long a run would show what follows it, never
/// longer than a run may be.
#[test]
fn the_run_suggested_for_a_fault_past_the_end_is_one_that_can_run() {
    let said = |fault: &str| {
        let out = exits(
            0,
            &[&SHORT[..], &["--stack", "none", "--fault-len", fault]].concat(),
        );
        text(&out.stderr).lines().next().unwrap().to_owned()
    };
    // From 10 s: ends at 25 s, shown by a 35 s run.
    assert!(
        said("15").ends_with("`--duration 35` shows what follows it"),
        "{}",
        said("15")
    );
    // Ends at 3595 s: the longest run, an hour, shows it.
    assert!(said("3585").ends_with("`--duration 3600` shows what follows it"));
    // Ends at 3599 s: an hour's run has the second after it that a recovery needs; at
    // 3600 s, none has.
    assert!(said("3589").ends_with("`--duration 3600` shows what follows it"));
    assert!(said("3590").ends_with("no run can show what follows it (a run lasts at most 3600 s)"));
    // Ends at 3605 s: nothing can.
    assert!(said("3595").ends_with("no run can show what follows it (a run lasts at most 3600 s)"));
}

#[test]
fn the_sweep_prints_each_goal_across_the_variants() {
    let out = exits(
        0,
        &[
            &SHORT[..],
            &["--stack", "none", "--stack", "palisade", "--sweep"],
        ]
        .concat(),
    );
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("palisade's goals off the defaults: 8 variants"),
        "{stdout}"
    );
    // The outage's own three goals and the one against none, each judged in 8 variants but
    // the recovery: a 20 s run ends with its fault, so there is no recovery to judge, except
    // where the fault is shorter (6.7 s), and the variants with none are counted apart; then
    // whether none outdid palisade in any of the 8 variants.
    assert_eq!(lines.len(), 1 + 4 + 1 + 2, "{stdout}");
    assert!(
        lines[1].starts_with("   8/8  outage ≤ 0.10 upstream calls"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("   1/1  outage ≥ 99 % success in every 1 s window")
            && lines[2].ends_with(" — nothing to judge in 7"),
        "{stdout}"
    );
    assert_eq!(lines[5], "goals held in every variant: 4 of 4", "{stdout}");
    assert_eq!(
        lines[7],
        "not outdone in any of the 8 variants: no other stack answered more requests at no more \
         upstream load",
        "{stdout}"
    );
    assert!(text(&out.stderr).ends_with(" s of real time)\n"));

    let out = exits(
        0,
        &[&SHORT[..], &["--stack", "palisade", "--sweep", "--json"]].concat(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["variants"], 8);
    assert_eq!(json["goals"][0]["runs"], 8);
    assert_eq!(text(&out.stderr), "");

    // Charts and the health monitor belong to the single run, not to the sweep.
    for args in [
        &["--sweep", "--svg", "charts"][..],
        &["--sweep", "--health"],
    ] {
        let out = exits(2, args);
        let stderr = text(&out.stderr);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

#[test]
fn seeds_cross_every_setting_of_the_sweep() {
    // The outage's five settings (as given, two rates, two fault lengths) at two seeds each.
    let out = exits(
        0,
        &[
            &SHORT[..],
            &["--stack", "palisade", "--sweep", "--seeds", "2", "--json"],
        ]
        .concat(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&json["variants"], &json["seeds"]), (&10.into(), &2.into()));
    assert_eq!(json["goals"][0]["runs"], 10);
    // The recovery goal is judged only where the fault ends inside the 20 s run (6.7 s at
    // both seeds); the 8 others are counted apart.
    let recovery = &json["goals"][1];
    assert_eq!(
        (&recovery["held"], &recovery["runs"], &recovery["unjudged"]),
        (&2.into(), &2.into(), &8.into()),
        "{recovery}"
    );

    // Without the sweep, or with no seed at all, it is a usage error.
    for (args, says) in [
        (&["--seeds", "2"][..], "--sweep"),
        (&["--sweep", "--seeds", "0"], "0"),
        (&["--sweep", "--seeds", "ten"], "ten"),
    ] {
        let out = exits(2, args);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// A reader that stops early (`palisade-sim --json | head`) closes the pipe: the program ends
/// quietly and successfully, as other command-line tools do, rather than panic on the write.
#[test]
fn a_closed_output_pipe_ends_the_program_quietly() {
    for args in [&["-s", "outage", "--json"][..], &["-s", "outage"]] {
        // The reading end is closed before the program starts: its first write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-sim"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
}

#[test]
fn closed_loop_traffic_says_so_and_counts_what_each_stack_sent() {
    let mut args = SHORT.to_vec();
    args.extend(["--clients", "2", "--rate", "10"]);
    let out = exits(0, &args);
    let table = text(&out.stdout);
    assert!(
        table.starts_with(
            "palisade-sim: 1 scenarios × 4 stacks in virtual time, closed-loop traffic from 2 clients, seeded"
        ),
        "{table}"
    );
    let header = table.lines().nth(2).unwrap();
    assert!(
        header.starts_with("scenario  stack     sent  ok %"),
        "{header}"
    );
    // `none` answers every request at once, failed or not: its clients send at the rate,
    // 10 a second for 20 s; naive holds its callers through the outage with its retries.
    let sent = |stack: &str| -> usize {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(stack))
            .unwrap();
        row.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(sent("none"), 200);
    assert!(sent("naive") < 200, "{table}");
    // Open loop, the default, has no such column.
    let out = exits(0, &SHORT);
    let header = text(&out.stdout).lines().nth(2).unwrap().to_owned();
    assert!(header.starts_with("scenario  stack     ok %"), "{header}");
}

/// A run that would send no measured request is refused, naming the options and the rule
/// (`--rate 0.01` sent none in 40 s, and printed "7 of 7 met").
#[test]
fn a_run_that_sends_nothing_is_refused() {
    let out = exits(2, &["-s", "outage", "--rate", "0.01"]);
    assert_eq!(
        text(&out.stderr),
        "palisade-sim: scenario outage: invalid configuration: `rate` times the run's duration \
         must be at least 1 (--rate × --duration ≥ 1): the run must send at least one measured \
         request\n"
    );
    assert!(out.stdout.is_empty());
    // One request is enough.
    exits(0, &["-s", "outage", "--rate", "0.025", "--stack", "none"]);
}

/// A scenario named twice runs once, and its goals are counted once.
#[test]
fn a_scenario_named_twice_runs_once() {
    let out = exits(
        0,
        &[
            &SHORT[..],
            &SHORT[..2],
            &["--stack", "none", "--stack", "palisade"],
        ]
        .concat(),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("palisade-sim: 1 scenarios × 2 stacks"),
        "{stdout}"
    );
    assert_eq!(stacks_of("outage", stdout), ["none", "palisade"]);
    // Palisade's three outage goals and "success at least none's", once each.
    let goals = stdout.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(goals, 4, "{stdout}");
}

#[test]
fn endings_follow_the_table_when_asked_for() {
    let args = [
        &SHORT[..],
        &["--stack", "none", "--stack", "palisade", "--endings"],
    ]
    .concat();
    let out = exits(0, &args);
    let stdout = text(&out.stdout);
    let (table, endings) = stdout
        .split_once("how the requests not answered ended")
        .expect("the endings follow the table");
    assert!(table.contains("palisade's goals"), "{stdout}");
    let line = |stack: &str| {
        endings
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.starts_with(&format!("outage {stack} ")))
            .unwrap_or_else(|| panic!("no line for {stack}: {endings}"))
    };
    // Without a retry, every request of the 10 s outage fails once, fast.
    assert_eq!(
        line("none"),
        "outage none 1000 of 2000 (1000 sent in the fault): server_error ×1 1000 (50 ms)"
    );
    assert!(line("palisade").contains(" of 2000"), "{endings}");
    // Not asked for: not printed.
    let out = exits(0, &[&SHORT[..], &["--stack", "none"]].concat());
    assert!(!text(&out.stdout).contains("how the requests not answered ended"));
}
