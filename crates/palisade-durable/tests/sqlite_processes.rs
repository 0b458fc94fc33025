//! `Store::review_put_if` on SQLite across processes: children (this test binary re-invoked
//! with `PALISADE_CAS_DB` set, running only `cas_child`) open the same file and race
//! compare-and-sets of the same item from the same expected value, round after round.
//!
//! The rounds are lined up with pipes, not sleeps: each child reads the round's item, says
//! `ready` on its stdout and blocks on its stdin; once every child is ready, the parent
//! writes `go` to each, and every child writes at once. Then each says whether it wrote.
//! Of the children, exactly one must have written, and the item stored must be its own.
//! A store whose comparison and write are not one step (`IMMEDIATE` taking the write lock
//! before the read) lets a second child through, or fails it with a busy error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use palisade_durable::store::{SqliteStore, Store, StoredReview};
use serde_json::json;

/// Processes racing in each round.
const CHILDREN: u64 = 4;
/// Rounds, each on an item of its own.
const ROUNDS: u64 = 24;

/// Round `round`'s item as `by` writes it (0: the parent, which puts it `open`).
fn item(round: u64, status: &str, by: u64) -> StoredReview {
    StoredReview {
        id: format!("r{round}"),
        workflow_id: "w".into(),
        status: status.into(),
        updated_ms: by,
        body: json!({ "round": round, "by": by }),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A child: in each round, reads the item, waits for `go`, writes it as its own over the one
/// read, and says whether it wrote.
#[test]
fn cas_child() {
    let Ok(db) = std::env::var("PALISADE_CAS_DB") else {
        return; // Not a child: nothing to do.
    };
    let me: u64 = std::env::var("PALISADE_CAS_CHILD")
        .unwrap()
        .parse()
        .unwrap();
    let rt = runtime();
    let store = SqliteStore::open(db).unwrap();
    let mut stdin = std::io::stdin().lock().lines();
    for round in 0..ROUNDS {
        let read = rt.block_on(store.review_get(&format!("r{round}"))).unwrap();
        assert_eq!(read, Some(item(round, "open", 0)), "the parent's item");
        println!("[cas] ready {round}");
        assert_eq!(stdin.next().unwrap().unwrap(), "go");
        let wrote = rt
            .block_on(store.review_put_if(read, item(round, "retried", me)))
            .unwrap();
        println!("[cas] {} {round}", if wrote { "wrote" } else { "refused" });
    }
}

/// A child process, its pipes, and its number (from 1).
struct Racer {
    n: u64,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Racer {
    fn spawn(db: &Path, n: u64) -> Racer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["cas_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("PALISADE_CAS_DB", db)
            .env("PALISADE_CAS_CHILD", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Racer {
            n,
            child,
            stdin,
            stdout,
        }
    }

    /// What the child says next: the rest of its next line holding `[cas] ` (the test
    /// harness's own lines are skipped; its `test cas_child ... ` ends with no newline, so
    /// the child's first line follows it). Blocks until the child writes it; if it exits
    /// first, fails with what the child wrote to stderr.
    fn next(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!(
                    "child {} exited: {}\n{err}",
                    self.n,
                    self.child.wait().unwrap()
                );
            }
            if let Some((_, said)) = line.trim_end().split_once("[cas] ") {
                return said.to_owned();
            }
        }
    }
}

#[test]
fn of_processes_racing_a_review_item_s_compare_and_set_exactly_one_writes() {
    if std::env::var_os("PALISADE_CAS_DB").is_some() {
        return; // A child runs only `cas_child`.
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let rt = runtime();
    let store = SqliteStore::open(&db).unwrap();
    for round in 0..ROUNDS {
        rt.block_on(store.review_put(item(round, "open", 0)))
            .unwrap();
    }
    let mut racers: Vec<Racer> = (1..=CHILDREN).map(|n| Racer::spawn(&db, n)).collect();
    for round in 0..ROUNDS {
        for r in &mut racers {
            assert_eq!(r.next(), format!("ready {round}"), "child {}", r.n);
        }
        for r in &mut racers {
            writeln!(r.stdin, "go").unwrap();
        }
        let mut wrote = Vec::new();
        for r in &mut racers {
            let said = r.next();
            if said == format!("wrote {round}") {
                wrote.push(r.n);
            } else {
                assert_eq!(said, format!("refused {round}"), "child {}", r.n);
            }
        }
        let [winner] = wrote[..] else {
            panic!("round {round}: children that wrote: {wrote:?}");
        };
        let stored = rt.block_on(store.review_get(&format!("r{round}"))).unwrap();
        assert_eq!(
            stored,
            Some(item(round, "retried", winner)),
            "round {round}"
        );
    }
    for mut r in racers {
        drop(r.stdin);
        let status = r.child.wait().unwrap();
        assert!(status.success(), "child {}: {status}", r.n);
    }
}
