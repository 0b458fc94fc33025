//! Leases with a heartbeat: work longer than a lease keeps its claim; a process that stops
//! renewing loses it after the lease, and drops its work before then.
//!
//! On the paused clock a pending timer fires while a networked store's query is on the wire,
//! so virtual time may jump to it and leases run out that would not in real time. The tests
//! therefore reach the store through [`Faulty`], which holds the clock still while an
//! operation runs, and start their clocks only once the slow work has begun.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::error::SagaError;
use palisade_durable::journal::{Event, SagaState};
use palisade_durable::store::Store;
use palisade_durable::twopc::{
    Coordinator, Participant, PhaseRequest, TransactionDefinition, TxEvent, TxState, Vote,
};
use palisade_durable::{SagaDefinition, SagaInfo, Sagas, Step};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep};
use tower::service_fn;

use super::faults::Faulty;
use super::sagas::{Act, Calls, crash, saga, step, undoable};

type Log = Arc<Calls>;

pub(crate) const LEASE: Duration = Duration::from_secs(10);

/// `store`, with the paused clock held still while its operations run.
pub(crate) fn still(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(Faulty::new(store))
}

pub(crate) fn engine(store: &Arc<dyn Store>, owner: &str, def: SagaDefinition) -> Sagas {
    Sagas::builder(store.clone())
        .owner(owner)
        .lease(LEASE)
        .define(def)
        .build()
        .unwrap()
}

/// Once `a`'s slow work has begun, lets `b` try to recover every quarter of a lease, for
/// `leases` leases, checking each time that `a` still holds saga `id`; returns how many sagas
/// `b` resumed.
async fn watch(log: &Log, store: &Arc<dyn Store>, b: &Sagas, id: &str, leases: u32) -> usize {
    log.hung().await;
    let mut resumed = 0;
    for _ in 0..leases * 4 {
        sleep(LEASE / 4).await;
        resumed += b.recover().await.unwrap().resumed.len();
        let w = store.workflow(id).await.unwrap().unwrap();
        assert_eq!(w.owner.as_deref(), Some("a"), "{id} was taken over");
    }
    resumed
}

pub(crate) fn lines_starting(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

/// Runs saga `id` of `steps` (one of which waits for the gate on its first call) on engine
/// `a` while engine `b` tries to recover it every quarter of a lease for 3 leases once the
/// slow work began, then opens the gate; returns how the saga ended and what the services
/// did, after checking that `b` never took it over.
async fn outlast_three_leases(
    store: Arc<dyn Store>,
    id: &str,
    steps: impl Fn(&Log, &Arc<Semaphore>) -> Vec<Step>,
) -> (SagaInfo, Vec<String>) {
    outlast_three_leases_against(store, id, "b", steps).await
}

/// [`outlast_three_leases`], with engine `b` under owner name `b_owner` (`"a"`: two engines
/// under one name).
pub(crate) async fn outlast_three_leases_against(
    store: Arc<dyn Store>,
    id: &str,
    b_owner: &str,
    steps: impl Fn(&Log, &Arc<Semaphore>) -> Vec<Step>,
) -> (SagaInfo, Vec<String>) {
    let store = still(store);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let def = || saga("t", steps(&log, &gate));
    let (a, b) = (engine(&store, "a", def()), engine(&store, b_owner, def()));
    let t0 = Instant::now();
    let (info, resumed) = tokio::join!(a.run("t", id, json!(0)), async {
        let resumed = watch(&log, &store, &b, id, 3).await;
        gate.add_permits(1);
        resumed
    });
    assert_eq!(resumed, 0, "b took the saga over");
    assert!(t0.elapsed() >= 3 * LEASE, "{:?}", t0.elapsed());
    assert_eq!(store.workflow(id).await.unwrap().unwrap().owner, None);
    (info.unwrap(), log.take())
}

pub(crate) async fn a_step_longer_than_the_lease_keeps_its_claim(store: Arc<dyn Store>) {
    let (info, lines) = outlast_three_leases(store, "h1", |log, gate| {
        vec![
            undoable("a", log, Act::Ok, Act::Ok),
            step("slow", log, Act::WaitFirst(1, gate.clone())),
        ]
    })
    .await;
    assert_eq!(info.state, SagaState::Completed);
    assert_eq!(lines_starting(&lines, "do slow"), 1, "{lines:?}");
    assert_eq!(lines_starting(&lines, "undo"), 0, "{lines:?}");
}

pub(crate) async fn a_compensation_longer_than_the_lease_keeps_its_claim(store: Arc<dyn Store>) {
    let (info, lines) = outlast_three_leases(store, "h2", |log, gate| {
        vec![
            undoable("a", log, Act::Ok, Act::WaitFirst(1, gate.clone())),
            step("b", log, Act::Fail("HTTP 503")),
        ]
    })
    .await;
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(info.steps[0].compensation_attempts, 1);
    assert_eq!(lines_starting(&lines, "undo a"), 1, "{lines:?}");
}

pub(crate) async fn a_partitioned_process_loses_the_saga_and_drops_its_step(store: Arc<dyn Store>) {
    let store = still(store);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let faulty = Arc::new(Faulty::new(store.clone()));
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                step("slow", &log, Act::WaitFirst(1, gate.clone())).idempotent(),
            ],
        )
    };
    let a = engine(&(faulty.clone() as Arc<dyn Store>), "a", def());
    let b = engine(&store, "b", def());
    // From the start, a cannot reach the store to renew its claim (its appends still work:
    // the partition begins after the step started).
    faulty.partitioned.store(true, Ordering::Relaxed);
    let a_done = AtomicBool::new(false);
    let run = async {
        let r = a.run("t", "p1", json!(0)).await;
        a_done.store(true, Ordering::Relaxed);
        r
    };
    let (lost, r) = tokio::join!(run, async {
        log.hung().await;
        sleep(LEASE + Duration::from_secs(1)).await;
        // a could not renew its claim, so it dropped its step before its lease ran out
        // (half a lease after it last secured it), without hearing from the store that the
        // claim was lost.
        assert!(a_done.load(Ordering::Relaxed), "a still runs its step");
        // a's lease ran out: b takes the saga over and finishes it (the step is idempotent,
        // so b repeats it).
        let r = b.recover().await.unwrap();
        faulty.partitioned.store(false, Ordering::Relaxed);
        // Should a's step still run, it is let through after two leases, so that the test
        // fails rather than hangs.
        for _ in 0..8 {
            if a_done.load(Ordering::Relaxed) {
                break;
            }
            sleep(LEASE / 4).await;
        }
        gate.add_permits(1);
        r
    });
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Completed);
    // a gave up on its claim: a typed error.
    assert!(
        matches!(&lost, Err(SagaError::LeaseLost(id)) if id == "p1"),
        "{lost:?}"
    );
    assert_eq!(
        faulty.renewals.load(Ordering::Relaxed),
        2,
        "two renewals failed within half the lease, then a gave up"
    );
    // a's step was dropped unfinished: the gate opened after that let nothing through.
    tokio::task::yield_now().await;
    let lines = log.take();
    assert_eq!(lines_starting(&lines, "passed gate"), 0, "{lines:?}");
    assert_eq!(lines_starting(&lines, "do slow"), 2, "{lines:?}");
    // Only b's outcome of the step is in the journal.
    let info = b.inspect("p1").await.unwrap();
    let completed = info
        .journal
        .iter()
        .filter(|r| matches!(r.event, Event::StepCompleted { step: 1, .. }))
        .count();
    assert_eq!(completed, 1);
    assert_eq!(info.steps[1].attempts, 2);
    assert_eq!(info.state, SagaState::Completed);
}

pub(crate) async fn a_saga_taken_over_while_waiting_its_turn_is_left_alone(store: Arc<dyn Store>) {
    let store = still(store);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    // x dies in both sagas' slow step; a resumes s1 first, and s1's step takes 3 leases.
    let def = || {
        saga(
            "t",
            vec![step("slow", &log, Act::WaitFirst(3, gate.clone())).idempotent()],
        )
    };
    let x = engine(&store, "x", def());
    crash(&x, &log, "t", "s1").await;
    crash(&x, &log, "t", "s2").await;
    sleep(LEASE + Duration::from_secs(1)).await;
    let (a, b) = (engine(&store, "a", def()), engine(&store, "b", def()));
    let (ra, taken) = tokio::join!(a.recover(), async {
        log.hung().await; // a claimed both and resumed s1
        let mut taken = Vec::new();
        for _ in 0..12 {
            sleep(LEASE / 4).await;
            let r = b.recover().await.unwrap();
            taken.extend(r.resumed.into_iter().map(|i| (i.id, i.state)));
        }
        gate.add_permits(3);
        taken
    });
    // b took s2 once a's claim on it ran out, and finished it; a never touched it.
    assert_eq!(taken, [("s2".to_owned(), SagaState::Completed)]);
    let ra = ra.unwrap();
    assert!(ra.failed.is_empty(), "{:?}", ra.failed);
    assert_eq!(
        ra.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("s1", SagaState::Completed)]
    );
    assert_eq!(b.inspect("s2").await.unwrap().steps[0].attempts, 2);
}

/// A participant that, on its first prepare, signals the test and waits for the gate.
fn gated_participant(name: &'static str, log: &Log, gate: &Arc<Semaphore>) -> Participant {
    let (log, gate) = (log.clone(), gate.clone());
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    Participant::new(
        name,
        service_fn(move |req: PhaseRequest| {
            let (log, gate, first) = (log.clone(), gate.clone(), first.clone());
            async move {
                if req.phase == palisade_durable::twopc::Phase::Prepare
                    && first.swap(false, Ordering::Relaxed)
                {
                    log.signal_hung();
                    gate.acquire().await?.forget();
                }
                Ok::<_, BoxError>(Vote::Yes)
            }
        }),
    )
}

pub(crate) async fn a_participant_slower_than_the_lease_keeps_the_claim(store: Arc<dyn Store>) {
    let store = still(store);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let coordinator = |owner: &str| {
        let def = TransactionDefinition::new(
            "order",
            vec![
                gated_participant("slow", &log, &gate),
                Participant::new(
                    "fast",
                    service_fn(|_r: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) }),
                ),
            ],
        )
        .unwrap();
        Coordinator::builder(store.clone())
            .owner(owner)
            .lease(LEASE)
            .define(def)
            .build()
            .unwrap()
    };
    let (a, b) = (coordinator("a"), coordinator("b"));
    let (tx, finished) = tokio::join!(a.run("order", "x1", json!(null)), async {
        log.hung().await;
        let mut finished = 0;
        for _ in 0..12 {
            sleep(LEASE / 4).await;
            finished += b.recover().await.unwrap().finished.len();
        }
        gate.add_permits(1);
        finished
    });
    assert_eq!(finished, 0, "b presumed an abort of a live transaction");
    let tx = tx.unwrap();
    assert_eq!(tx.state, TxState::Committed);
    assert!(
        !tx.journal
            .iter()
            .any(|e| matches!(e, TxEvent::Decided { presumed: true, .. }))
    );
}

/// A process that recovers from time to time (as a fleet's should) while it runs transactions
/// itself: recovery claims its own transactions back at once, so it must leave alone the one
/// this very process is preparing, not presume it aborted.
pub(crate) async fn recovery_leaves_this_process_s_live_transaction_alone(store: Arc<dyn Store>) {
    let store = still(store);
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let def = TransactionDefinition::new(
        "order",
        vec![
            Participant::new(
                "fast",
                service_fn(|_r: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) }),
            ),
            gated_participant("slow", &log, &gate),
        ],
    )
    .unwrap();
    let c = Coordinator::builder(store.clone())
        .owner("a")
        .lease(LEASE)
        .define(def)
        .build()
        .unwrap();
    let (tx, finished) = tokio::join!(c.run("order", "x2", json!(null)), async {
        log.hung().await;
        let r = c.recover().await.unwrap();
        gate.add_permits(1);
        (r.finished.len(), r.failed.len())
    });
    assert_eq!(finished, (0, 0), "recovery touched a live transaction");
    let tx = tx.unwrap();
    assert_eq!(tx.state, TxState::Committed);
    assert!(
        !tx.journal
            .iter()
            .any(|e| matches!(e, TxEvent::Decided { presumed: true, .. }))
    );
    // Once it is over, a recovery finds nothing.
    assert!(c.recover().await.unwrap().finished.is_empty());
}
