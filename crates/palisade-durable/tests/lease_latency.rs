//! A claim's heartbeat against a store that takes its time: renewals and journal reads that
//! answer seconds after they were sent neither cost a long step its claim nor let a process
//! act on a claim past the half lease it relies on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::Edgy;
use palisade_core::BoxError;
use palisade_durable::saga::StepRequest;
use palisade_durable::twopc::{
    Coordinator, Participant, Phase, PhaseRequest, TransactionDefinition, TxState, Vote,
};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde_json::json;
use tokio::time::Instant;
use tower::service_fn;

/// Every renewal succeeds and answers in 6 s (a tenth of the 60 s lease): a 100 s step keeps
/// its claim. The next renewal is due a third of a lease after the previous one was *sent*,
/// as the deadline counts from then; scheduled from its answer, each round's latency came off
/// the margin and the step was dropped with `LeaseLost` at 50 s.
#[tokio::test(start_paused = true)]
async fn renewals_that_all_succeed_in_a_tenth_of_the_lease_keep_a_long_step() {
    let store = Arc::new(Edgy::default());
    store.slow_renewals_ms.store(6_000, Ordering::SeqCst);
    let long = Step::new(
        "long",
        service_fn(|_: StepRequest| async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            Ok::<_, BoxError>(json!(1))
        }),
    );
    let sagas = Sagas::builder(store.clone())
        .lease(Duration::from_secs(60))
        .define(SagaDefinition::new("d", vec![long]).unwrap())
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = sagas.run("d", "s1", json!({})).await;
    let renewals: Vec<(Duration, bool)> = (store.renewals_sent.lock().unwrap().iter())
        .map(|(at, ok)| (at.duration_since(t0), *ok))
        .collect();
    assert!(renewals.iter().all(|(_, ok)| *ok), "{renewals:?}");
    let state = r.map(|i| i.state).map_err(|e| e.to_string());
    assert_eq!(
        state,
        Ok(SagaState::Completed),
        "after {:?}, renewals (sent at, ok): {renewals:?}",
        t0.elapsed()
    );
    // Sent every third of a lease from the sending of the one before.
    let sent: Vec<u64> = renewals.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(sent, [20, 40, 60, 80]);
}

/// A coordinator that recovers a decided transaction renews its claim, then reads the
/// journal (slow: 3 s of a 12 s lease), then delivers the decision under the heartbeat. Its
/// renewals fail from then on: it must let go half a lease after the renewal was *sent* (6 s),
/// before another engine of the same owner may take the transaction over (7 s). Counting from
/// after the read, it kept its call in flight until 9 s, and both delivered the decision at
/// once.
#[tokio::test(start_paused = true)]
async fn a_recovering_coordinator_does_not_outlive_its_claim_after_a_slow_journal_read() {
    const LEASE: Duration = Duration::from_secs(12);
    let store = Arc::new(Edgy::default());
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_in_flight = Arc::new(AtomicU32::new(0));
    let fail_commits = Arc::new(AtomicBool::new(true));
    let def = || {
        let (in_flight, max_in_flight, fail) = (
            in_flight.clone(),
            max_in_flight.clone(),
            fail_commits.clone(),
        );
        let p = Participant::new(
            "p",
            service_fn(move |r: PhaseRequest| {
                let (in_flight, max_in_flight, fail) =
                    (in_flight.clone(), max_in_flight.clone(), fail.clone());
                async move {
                    if r.phase != Phase::Commit {
                        return Ok::<_, BoxError>(Vote::Yes);
                    }
                    if fail.load(Ordering::SeqCst) {
                        return Err::<Vote, BoxError>("unreachable".into());
                    }
                    let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(n, Ordering::SeqCst);
                    struct Done(Arc<AtomicU32>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _done = Done(in_flight);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(Vote::Yes)
                }
            }),
        );
        TransactionDefinition::new("t", vec![p]).unwrap()
    };
    let coordinator = || {
        Coordinator::builder(store.clone())
            .owner("c")
            .lease(LEASE)
            .delivery_attempts(1)
            .define(def())
            .build()
            .unwrap()
    };
    // The first coordinator decides to commit but cannot deliver; it keeps the claim (and
    // then dies).
    let first = coordinator();
    let tx = first.run("t", "tx1", json!({})).await.unwrap();
    assert_eq!(tx.state, TxState::Committing);
    drop(first);
    fail_commits.store(false, Ordering::SeqCst);
    // Its heartbeat has visibly stopped: a restarted engine (same owner) may take it.
    tokio::time::sleep(LEASE * 7 / 12 + Duration::from_secs(1)).await;
    let a = coordinator();
    let b = coordinator();
    // a's journal read takes 3 s; from then on, a cannot renew.
    store.slow_journal_ms.store(3_000, Ordering::SeqCst);
    store.cut_after_journal.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let (ra, rb) = tokio::join!(
        async {
            let r = a.recover().await;
            (r, t0.elapsed())
        },
        async {
            // b (another live engine of owner c) recovers once a's claim has visibly missed
            // its heartbeat: 7/12 of the lease after a's renewal at t0.
            tokio::time::sleep(LEASE * 7 / 12 + Duration::from_millis(500)).await;
            let r = b.recover().await.unwrap();
            (r, t0.elapsed())
        }
    );
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        1,
        "two engines delivered the decision at the same time: a after {:?}, b after {:?}",
        ra.1,
        rb.1
    );
    // b delivered it; a let go at half a lease after its renewal was sent.
    let b_states: Vec<TxState> = rb.0.finished.iter().map(|t| t.state).collect();
    assert_eq!(
        b_states,
        [TxState::Committed],
        "{:?} after {:?}; a: {:?}",
        rb.0,
        rb.1,
        ra.0
    );
    assert_eq!(ra.1, LEASE / 2, "{:?}", ra.0.map(|r| r.failed.len()));
}
