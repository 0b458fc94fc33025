//! Kill -9 at random instants: a child process (this test binary, re-invoked with
//! `PALISADE_CRASH_DIR` set) runs sagas against a journal, in SQLite or (feature `postgres`,
//! with `TEST_PALISADE_PG_URL` set, in a schema of its own) in PostgreSQL; the steps record their
//! side effects in a SQLite file, keyed by idempotency key. The parent kills the child with
//! SIGKILL at seeded random points (after a seeded number of its sagas started, then a few
//! milliseconds), 20 times, restarting it each time (each start runs
//! recovery first), then lets a last child recover everything and checks, from the journal
//! and the side-effect records:
//!
//! * no saga is stuck: every one ended `completed`, `compensated` or `failed`, or is
//!   `escalated` with an open review item for it (some undos can never work);
//! * no completed step was lost: each step the journal says completed has its effect;
//! * a step that is not idempotent was never called twice;
//! * every effect of a saga that did not complete was undone;
//! * no compensation ran after its success was journaled, none completed twice, and each
//!   compensation call was journaled before it was made.

// A real child process is killed at real instants: this test reads the real clock and sleeps
// (bounded, a few ms at a time) while it waits for the child.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_core::BoxError;
use palisade_durable::journal::{Event, Journal, SagaState, StepStatus};
use palisade_durable::review::ReviewStatus;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{SqliteOptions, SqliteStore, Store};
use palisade_durable::{ReviewQueue, SagaDefinition, Sagas, Step};
use palisade_retry::{Backoff, Jitter};
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tower::service_fn;

const KILLS: usize = 20;
const SAGAS_PER_RUN: usize = 60;
const STEPS: [&str; 4] = ["reserve", "fetch", "charge", "notify"];

type Effects = Arc<Mutex<Connection>>;

fn open_effects(dir: &Path) -> Connection {
    let c = Connection::open(dir.join("effects.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS calls (n INTEGER PRIMARY KEY, key TEXT NOT NULL,
             kind TEXT NOT NULL, applied INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, kind TEXT NOT NULL);",
    )
    .unwrap();
    c
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The saga's number within its run, which decides how its steps behave.
fn k(input: &Value) -> u64 {
    input["k"].as_u64().unwrap_or(0)
}

/// Records one call and, once per key, its effect: what a tool that deduplicates by
/// idempotency key does.
async fn effect(db: &Effects, key: String, kind: &'static str) -> Result<(), BoxError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = db.lock().unwrap();
        let tx = c.transaction()?;
        let applied = tx.execute(
            "INSERT OR IGNORE INTO effects (key, kind) VALUES (?1, ?2)",
            params![key, kind],
        )?;
        tx.execute(
            "INSERT INTO calls (key, kind, applied) VALUES (?1, ?2, ?3)",
            params![key, kind, applied as i64],
        )?;
        tx.commit()?;
        Ok::<_, BoxError>(())
    })
    .await?
}

fn definition(db: &Effects) -> SagaDefinition {
    let steps = STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let db1 = db.clone();
            let step = Step::new(
                *name,
                service_fn(move |req: StepRequest| {
                    let db = db1.clone();
                    async move {
                        // Some work before and after the effect, so kills land everywhere.
                        tokio::time::sleep(Duration::from_millis(hash(&req.idempotency_key) % 3))
                            .await;
                        if req.step == 3 && k(&req.input).is_multiple_of(3) {
                            return Err::<Value, BoxError>("HTTP 503: notifier down".into());
                        }
                        effect(&db, req.idempotency_key.clone(), "do").await?;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok(json!({ "step": req.step }))
                    }
                }),
            );
            match i {
                // fetch and notify are idempotent and need no undo; reserve and charge are
                // neither idempotent nor harmless: they have compensations.
                1 | 3 => step.idempotent(),
                _ => {
                    let db2 = db.clone();
                    step.compensate(service_fn(move |req: CompensationRequest| {
                        let db = db2.clone();
                        async move {
                            // A flaky undo on first attempts of some sagas.
                            if req.attempt == 1 && k(&req.input) % 4 == 1 {
                                return Err::<(), BoxError>("connection reset".into());
                            }
                            // An undo that can never work for others: escalated to a person.
                            if req.step == 2 && k(&req.input) % 7 == 3 {
                                return Err("422 unprocessable: charge already settled".into());
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            effect(&db, req.idempotency_key.clone(), "undo").await
                        }
                    }))
                }
            }
        })
        .collect();
    SagaDefinition::new("crash", steps).unwrap()
}

/// Where the journal is.
#[derive(Clone, Debug)]
enum Backend {
    /// `journal.db` in the test's directory.
    Sqlite,
    /// A schema of its own in the database at `TEST_PALISADE_PG_URL`.
    #[cfg(feature = "postgres")]
    Postgres { url: String, schema: String },
}

impl Backend {
    /// The child's backend, as its parent set it.
    fn from_env() -> Self {
        #[cfg(feature = "postgres")]
        if let Ok(schema) = std::env::var("PALISADE_CRASH_PG_SCHEMA") {
            let url = std::env::var("TEST_PALISADE_PG_URL").unwrap();
            return Backend::Postgres { url, schema };
        }
        Backend::Sqlite
    }

    /// Where a child is killed: after how many of its sagas started, then how much later.
    fn kill_point(&self, rng: &mut impl Rng) -> (usize, Duration) {
        let sagas = rng.random_range(0..=10);
        let extra = match self {
            Backend::Sqlite => rng.random_range(0..20),
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => rng.random_range(0..40),
        };
        (sagas, Duration::from_millis(extra))
    }

    /// What the summary line calls it.
    fn label(&self) -> String {
        match self {
            Backend::Sqlite => "SQLite".into(),
            #[cfg(feature = "postgres")]
            Backend::Postgres { schema, .. } => format!("PostgreSQL (schema {schema})"),
        }
    }

    /// Passes the backend to a child.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    fn export(&self, cmd: &mut Command) {
        match self {
            Backend::Sqlite => {}
            #[cfg(feature = "postgres")]
            Backend::Postgres { schema, .. } => {
                cmd.env("PALISADE_CRASH_PG_SCHEMA", schema);
            }
        }
    }

    async fn open(&self, dir: &Path) -> Arc<dyn Store> {
        match self {
            // NORMAL sync: survives the process being killed (not a power cut), which is what
            // this test does.
            Backend::Sqlite => Arc::new(
                SqliteStore::open_with(
                    dir.join("journal.db"),
                    SqliteOptions::default().durable(false),
                )
                .unwrap(),
            ),
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                palisade_durable::store::PostgresStore::connect_with(url, Some(schema), 4)
                    .await
                    .unwrap()
            }
        }
    }
}

/// The children's lease. Each child is a new engine instance under the same owner name, so
/// it takes over its killed predecessor's sagas once their claims were last renewed more than
/// seven twelfths of a lease ago (not at once): a short lease keeps the test short.
const LEASE: Duration = Duration::from_secs(3);

fn engine(store: Arc<dyn Store>, effects: &Effects) -> Sagas {
    Sagas::builder(store)
        .owner("worker")
        .lease(LEASE)
        .define(definition(effects))
        .compensation_backoff(
            Backoff::exponential(Duration::from_millis(2), 2.0),
            Jitter::Full,
        )
        .seed(11)
        .build()
        .unwrap()
}

/// The child: recover, then start this run's sagas, 4 at a time.
#[test]
fn crash_worker() {
    let Ok(dir) = std::env::var("PALISADE_CRASH_DIR") else {
        return; // Not a child: nothing to do.
    };
    let dir = PathBuf::from(dir);
    let run: usize = std::env::var("PALISADE_CRASH_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let quota: usize = std::env::var("PALISADE_CRASH_SAGAS")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    rt.block_on(async move {
        let effects: Effects = Arc::new(Mutex::new(open_effects(&dir)));
        let sagas = engine(Backend::from_env().open(&dir).await, &effects);
        let r = sagas.recover().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        println!("recovered {}", r.resumed.len());
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..4 {
            let sagas = sagas.clone();
            tasks.spawn(async move {
                for k in (lane..quota).step_by(4) {
                    let id = format!("r{run:02}-s{k:03}");
                    println!("saga {id}");
                    sagas.run("crash", &id, json!({ "k": k })).await.unwrap();
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
        // Once more at the end: a saga whose row a killed predecessor's transaction still
        // locked when this child started (PostgreSQL notices the dead connection soon, not at
        // once) was skipped by the first recovery; and the sagas the predecessor was running
        // are this child's only once their claims look abandoned, which the last child waits
        // for (a whole lease from its start, when the predecessor was dead already).
        if run == KILLS {
            tokio::time::sleep_until(started + LEASE).await;
        }
        let r = sagas.recover().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
    });
}

/// Blocks until the child has printed `sagas` "saga …" lines (one per saga it starts), or
/// exited, or 60 s passed.
fn wait_for_sagas(child: &mut std::process::Child, sagas: usize) {
    use std::io::Read;
    let out = child.stdout.as_mut().expect("the child's stdout is piped");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut seen, mut line) = (0, Vec::new());
    let mut byte = [0u8; 1];
    while seen < sagas {
        // `read` blocks until the child writes or exits: no spinning.
        match out.read(&mut byte) {
            Ok(0) => return,
            Ok(_) if byte[0] == b'\n' => {
                seen += usize::from(line.starts_with(b"saga "));
                line.clear();
            }
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading the child's output: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the child made no progress in 60 s"
        );
    }
}

fn spawn_child(backend: &Backend, dir: &Path, run: usize, quota: usize) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["crash_worker", "--exact", "--nocapture", "--test-threads=1"])
        .env("PALISADE_CRASH_DIR", dir)
        .env("PALISADE_CRASH_RUN", run.to_string())
        .env("PALISADE_CRASH_SAGAS", quota.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    backend.export(&mut cmd);
    cmd.spawn().unwrap()
}

#[test]
fn sigkill_at_random_instants_loses_nothing_and_undoes_once() {
    if std::env::var("PALISADE_CRASH_DIR").is_ok() {
        return; // A child runs only the worker.
    }
    crash_and_check(&Backend::Sqlite);
}

/// The same against PostgreSQL, in a fresh schema; skipped with a message without
/// `TEST_PALISADE_PG_URL`, unless `CI` is set: then it fails.
#[cfg(feature = "postgres")]
#[test]
fn sigkill_at_random_instants_on_postgres() {
    if std::env::var("PALISADE_CRASH_DIR").is_ok() {
        return;
    }
    let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_PALISADE_PG_URL is not: run the PostgreSQL tests under scripts/pg.sh"
        );
        eprintln!("skipping the PostgreSQL crash test: TEST_PALISADE_PG_URL is not set");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("crash_{}_{nanos}", std::process::id());
    crash_and_check(&Backend::Postgres { url, schema });
}

fn crash_and_check(backend: &Backend) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EED);
    let mut killed_mid_run = 0;
    for run in 0..KILLS {
        let mut child = spawn_child(backend, dir, run, SAGAS_PER_RUN);
        // The kill lands after a seeded number of this child's sagas have started (0: during
        // its start or its recovery), then a seeded few milliseconds more: progress, not
        // wall time since the spawn, so that a loaded machine (where starting a process alone
        // can take longer than a lifetime) still sees kills inside steps.
        let (sagas, extra) = backend.kill_point(&mut rng);
        wait_for_sagas(&mut child, sagas);
        // Real time, bounded: the child is a real process.
        let deadline = Instant::now() + extra;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                child.kill().unwrap(); // SIGKILL
                killed_mid_run += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = child.wait().unwrap();
        if status.success() || status.code().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "child failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // A last child, left alone, recovers everything and runs 8 sagas of its own (among them
    // k = 3: its notify fails and its charge cannot be undone), within 60 s or it is stuck.
    let mut last = spawn_child(backend, dir, KILLS, 8);
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            last.kill().unwrap();
            panic!("recovery did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = last.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        killed_mid_run >= KILLS / 2,
        "only {killed_mid_run} kills landed mid-run"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let effects = open_effects(dir);
    let fx: HashMap<String, String> = effects
        .prepare("SELECT key, kind FROM effects")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut calls: HashMap<String, u32> = HashMap::new();
    for key in effects
        .prepare("SELECT key FROM calls")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
    {
        *calls.entry(key.unwrap()).or_default() += 1;
    }

    let (mut completed, mut compensated, mut uncertain, mut resumed_comp, mut repeated) =
        (0, 0, 0, 0, 0);
    let mut escalated = 0;
    rt.block_on(async {
        let store = backend.open(dir).await;
        let journal = Journal::new(store.clone());
        let queue = ReviewQueue::new(store);
        let list = journal.list().await.unwrap();
        assert!(list.len() > 40, "only {} sagas ran", list.len());
        for s in &list {
            let info = journal.inspect(&s.id).await.unwrap();
            assert!(
                matches!(
                    info.state,
                    SagaState::Completed
                        | SagaState::Compensated
                        | SagaState::Failed
                        | SagaState::Escalated
                ),
                "saga {} is stuck: {}",
                s.id,
                info.state
            );
            if info.state == SagaState::Escalated {
                let review = info
                    .review
                    .clone()
                    .expect("an escalated saga names its item");
                let item = queue.inspect(&review).await.unwrap();
                assert_eq!(item.status, ReviewStatus::Open, "{review}");
                assert_eq!(item.saga_id, s.id);
                // The undo of charge that can never work, or notify (idempotent, no undo)
                // interrupted by a kill and then failing when repeated: the interrupted
                // attempt may have notified, and nothing can undo it.
                let notify = &info.steps[3];
                assert!(
                    item.step == 2
                        || (item.step == 3
                            && notify.status == StepStatus::Uncertain
                            && notify.attempts > 1),
                    "{review}: {:?}",
                    item.reason
                );
                escalated += 1;
            }
            let mut comp_done = HashMap::<usize, u32>::new();
            let mut comp_started = HashMap::<usize, u32>::new();
            let mut in_flight = std::collections::HashSet::new();
            for r in &info.journal {
                match r.event {
                    Event::CompensationFailed { step, .. } => {
                        in_flight.remove(&step);
                    }
                    Event::CompensationStarted { step, .. } => {
                        if !in_flight.insert(step) {
                            // Started again with no outcome in between: a crash interrupted it.
                            resumed_comp += 1;
                        }
                        assert!(
                            !comp_done.contains_key(&step),
                            "{}: compensation {step} started after it completed",
                            s.id
                        );
                        *comp_started.entry(step).or_default() += 1;
                    }
                    Event::CompensationCompleted { step } => {
                        in_flight.remove(&step);
                        *comp_done.entry(step).or_default() += 1;
                    }
                    _ => {}
                }
            }
            for (i, step) in info.steps.iter().enumerate() {
                let key = format!("{}/{i}", s.id);
                let undo = format!("{key}/undo");
                if step.status == StepStatus::Completed {
                    assert_eq!(fx.get(&key).map(String::as_str), Some("do"), "{key} lost");
                }
                if step.status == StepStatus::Uncertain {
                    uncertain += 1;
                }
                if step.attempts > 1 {
                    repeated += 1;
                }
                if i == 0 || i == 2 {
                    assert!(
                        calls.get(&key).copied().unwrap_or(0) <= 1,
                        "{key} ran twice"
                    );
                }
                assert!(comp_done.get(&i).copied().unwrap_or(0) <= 1, "{undo} twice");
                let undo_calls = calls.get(&undo).copied().unwrap_or(0);
                assert!(
                    undo_calls <= comp_started.get(&i).copied().unwrap_or(0),
                    "{undo}: {undo_calls} calls, fewer journaled starts"
                );
                match info.state {
                    SagaState::Completed => {
                        assert!(fx.contains_key(&key), "{key}: completed saga, no effect");
                        assert!(!fx.contains_key(&undo), "{undo}: completed saga undone");
                    }
                    SagaState::Escalated => {
                        // The chain stopped at the escalated undo: nothing below it ran.
                        if i < 2 {
                            assert!(!fx.contains_key(&undo), "{undo} ran past an escalation");
                        }
                    }
                    _ => {
                        // Every effect left by a compensable step was undone, once.
                        if (i == 0 || i == 2) && fx.contains_key(&key) {
                            assert!(fx.contains_key(&undo), "{key} was never undone");
                            assert_eq!(comp_done.get(&i), Some(&1), "{undo} not journaled");
                        }
                    }
                }
            }
            match info.state {
                SagaState::Completed => completed += 1,
                SagaState::Escalated => {}
                _ => compensated += 1,
            }
        }
    });
    println!(
        "{}: {KILLS} kills ({killed_mid_run} mid-run): {completed} completed, {compensated} \
         compensated or failed, {uncertain} interrupted steps settled by compensation, \
         {repeated} idempotent steps repeated, {resumed_comp} compensations re-run after a \
         crash, {escalated} escalated; {:?}",
        backend.label(),
        started.elapsed()
    );
    assert!(compensated > 0 && completed > 0 && escalated > 0);
    assert!(uncertain + repeated > 0, "no kill landed inside a step");
}
