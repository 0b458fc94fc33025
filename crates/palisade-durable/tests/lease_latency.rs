//! A claim's heartbeat against a store that takes its time: renewals and journal reads that
//! answer seconds after they were sent neither cost a long step its claim nor let a process
//! act on a claim past the half lease it relies on.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::error::StoreError;
use palisade_durable::saga::StepRequest;
use palisade_durable::store::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, MemoryStore, Purge, Store,
    StoredCheckpoint, StoredReview, WorkflowRecord,
};
use palisade_durable::twopc::{
    Coordinator, Participant, Phase, PhaseRequest, TransactionDefinition, TxState, Vote,
};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde_json::json;
use tokio::time::Instant;
use tower::service_fn;

/// A memory store whose renewals answer `renew_ms` after they took effect, whose journal
/// reads take `journal_ms` (once, then 0), and whose renewals fail while `partitioned`; the
/// `cut` instance's claims, renewals and releases fail.
#[derive(Default)]
struct Slow {
    inner: MemoryStore,
    renew_ms: AtomicU64,
    journal_ms: AtomicU64,
    /// Set `partitioned` once the next slow journal read is done.
    partition_after_journal: AtomicBool,
    partitioned: AtomicBool,
    /// The instance of the latest renewal; `cut`: the instance partitioned.
    last_instance: Mutex<String>,
    cut: Mutex<Option<String>>,
    renewals: Mutex<Vec<(Duration, bool)>>,
    t0: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slow")
    }
}

impl Slow {
    fn elapsed(&self) -> Duration {
        self.t0
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now)
            .elapsed()
    }
}

impl Store for Slow {
    fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.append(a)
    }
    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        Box::pin(async move {
            let ms = self.journal_ms.swap(0, Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if self.partition_after_journal.swap(false, Ordering::SeqCst) {
                    *self.cut.lock().unwrap() = Some(self.last_instance.lock().unwrap().clone());
                }
            }
            self.inner.journal(id).await
        })
    }
    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
        self.inner.workflows(kind)
    }
    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
        self.inner.workflow(id)
    }
    fn claim(&self, c: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        if self.cut.lock().unwrap().as_deref() == Some(c.instance.as_str()) {
            return Box::pin(async { Err(StoreError::backend("network down")) });
        }
        self.inner.claim(c)
    }
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.renew(id, owner, until)
    }
    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let at = self.elapsed();
            let cut = self.cut.lock().unwrap().as_deref() == Some(instance);
            *self.last_instance.lock().unwrap() = instance.to_owned();
            if cut || self.partitioned.load(Ordering::SeqCst) {
                self.renewals.lock().unwrap().push((at, false));
                return Err(StoreError::backend("network down"));
            }
            let r = self
                .inner
                .renew_instance(id, owner, instance, now_ms, until)
                .await;
            self.renewals.lock().unwrap().push((at, r.is_ok()));
            let ms = self.renew_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            r
        })
    }
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        // Only the cut instance releases without naming itself in these tests.
        if self.cut.lock().unwrap().is_some() {
            return Box::pin(async { Err(StoreError::backend("network down")) });
        }
        self.inner.release(id, owner)
    }
    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.cut.lock().unwrap().as_deref() == Some(instance) {
            return Box::pin(async { Err(StoreError::backend("network down")) });
        }
        self.inner.release_instance(id, owner, instance)
    }
    fn purge(&self, p: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge(p)
    }
    fn review_put(&self, r: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.review_put(r)
    }
    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        self.inner.review_get(id)
    }
    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        self.inner.review_list()
    }
    fn checkpoint_put(&self, c: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.checkpoint_put(c)
    }
    fn checkpoint_put_next(&self, c: StoredCheckpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.checkpoint_put_next(c)
    }
    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
        self.inner.checkpoint_get(agent, version)
    }
    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
        self.inner.checkpoint_versions(agent)
    }
    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.checkpoint_prune(agent, keep)
    }
}

/// Every renewal succeeds and answers in 6 s (a tenth of the 60 s lease): a 100 s step keeps
/// its claim. The next renewal is due a third of a lease after the previous one was *sent*,
/// as the deadline counts from then; scheduled from its answer, each round's latency came off
/// the margin and the step was dropped with `LeaseLost` at 50 s.
#[tokio::test(start_paused = true)]
async fn renewals_that_all_succeed_in_a_tenth_of_the_lease_keep_a_long_step() {
    let store = Arc::new(Slow::default());
    store.renew_ms.store(6_000, Ordering::SeqCst);
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
    let _ = store.elapsed();
    let t0 = Instant::now();
    let r = sagas.run("d", "s1", json!({})).await;
    let renewals = store.renewals.lock().unwrap().clone();
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
    let store = Arc::new(Slow::default());
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
    store.journal_ms.store(3_000, Ordering::SeqCst);
    store.partition_after_journal.store(true, Ordering::SeqCst);
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
