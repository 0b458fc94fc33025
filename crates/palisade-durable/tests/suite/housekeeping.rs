//! Giving claims back ([`Store::release`]) during a rolling deploy, and deleting finished
//! workflows ([`Store::purge`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::error::{SagaError, StoreError};
use palisade_durable::journal::SagaState;
use palisade_durable::review::ReviewStatus;
use palisade_durable::store::{Append, Claim, Purge, Store, StoredReview};
use palisade_durable::twopc::{
    Coordinator, Participant, PhaseRequest, TransactionDefinition, TxState, Vote,
};
use palisade_durable::{SagaDefinition, Sagas};
use serde_json::json;
use tokio::time::sleep;
use tower::service_fn;

use super::entry;
use super::faults::Faulty;
use super::sagas::{Act, Calls, crash, saga, step, undoable};

type Log = Arc<Calls>;

const LEASE: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);

fn engine(store: &Arc<dyn Store>, owner: &str, defs: Vec<SagaDefinition>) -> Sagas {
    let mut b = Sagas::builder(store.clone()).owner(owner).lease(LEASE);
    for d in defs {
        b = b.define(d);
    }
    b.build().unwrap()
}

fn claim(owner: &str, now: u64) -> Claim {
    Claim::new("saga", &["running"], owner, now, now + 500, 10)
}

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

/// Only the holder gives a claim back; then any other process may claim the workflow at once,
/// the one that gave it back only once the lease it held has ended, and it can no longer
/// write, renew or release.
pub(crate) async fn release_gives_a_claim_back(store: Arc<dyn Store>) {
    // a: held by w1 until 10 000.
    store.append(entry("a", 0, "w1", "running")).await.unwrap();
    assert!(conflict(store.release("a", "w2").await), "not w2's");
    assert!(
        conflict(store.release("zz", "w1").await),
        "no such workflow"
    );
    let a = store.workflow("a").await.unwrap().unwrap();
    assert_eq!(
        a.owner.as_deref(),
        Some("w1"),
        "a refused release changes nothing"
    );

    store.release("a", "w1").await.unwrap();
    let a = store.workflow("a").await.unwrap().unwrap();
    assert_eq!(
        (a.owner, a.state.as_str(), a.entries, a.lease_until_ms),
        (None, "running", 1, 10_000),
        "only the owner changed"
    );
    assert_eq!(store.journal("a").await.unwrap().len(), 1);
    // w1 holds it no more.
    assert!(conflict(store.release("a", "w1").await));
    assert!(conflict(store.renew("a", "w1", 20_000).await));
    assert!(conflict(store.append(entry("a", 1, "w1", "running")).await));
    // w1 does not take it straight back: not before the lease it held has ended (a lease
    // ends only after its last millisecond)...
    for now in [5_000, 10_000] {
        assert!(
            store.claim(claim("w1", now)).await.unwrap().is_empty(),
            "{now}"
        );
    }
    // ... but any other process does, at once.
    assert_eq!(store.claim(claim("w2", 5_000)).await.unwrap(), ["a"]);
    let a = store.workflow("a").await.unwrap().unwrap();
    assert_eq!((a.owner.as_deref(), a.lease_until_ms), (Some("w2"), 5_500));
    // Given back by w2, it is w1 that may take it at once, w2 that waits.
    store.release("a", "w2").await.unwrap();
    assert!(store.claim(claim("w2", 5_000)).await.unwrap().is_empty());
    assert_eq!(store.claim(claim("w1", 5_000)).await.unwrap(), ["a"]);
    store.append(entry("a", 1, "w1", "running")).await.unwrap();
    // If no other process takes it, the one that gave it back does after its lease.
    store.release("a", "w1").await.unwrap();
    assert!(store.claim(claim("w1", 10_000)).await.unwrap().is_empty());
    assert_eq!(store.claim(claim("w1", 10_001)).await.unwrap(), ["a"]);
    store.append(entry("a", 2, "w1", "running")).await.unwrap();
    assert_eq!(store.workflow("a").await.unwrap().unwrap().entries, 3);
    // A workflow given back by one process and then released by an append of another (here:
    // escalated, waiting for a person) is anyone's again, the first process's too.
    store
        .append(entry("e", 0, "w1", "compensating"))
        .await
        .unwrap();
    store.release("e", "w1").await.unwrap();
    let esc = |owner: &str| Claim::new("saga", &["compensating", "escalated"], owner, 1, 2, 1);
    assert_eq!(store.claim(esc("w2")).await.unwrap(), ["e"]);
    store
        .append(entry("e", 1, "w2", "escalated").with_release(true))
        .await
        .unwrap();
    assert_eq!(store.claim(esc("w1").only("e")).await.unwrap(), ["e"]);
}

/// A purge deletes, with their journals, only the workflows of its kind in its states that
/// nobody holds and were last written before its time; oldest first, at most its limit.
pub(crate) async fn purge_deletes_only_old_finished_unheld_workflows(store: Arc<dyn Store>) {
    let put = |id: &str, kind: &str, state: &str, at: u64, release: bool| {
        let mut a = entry(id, 0, "w1", state).with_release(release);
        a.kind = kind.into();
        a.at_ms = at;
        a
    };
    // done: two entries, finished at 100.
    let mut first = entry("done", 0, "w1", "running");
    first.at_ms = 50;
    store.append(first).await.unwrap();
    let mut last = entry("done", 1, "w1", "completed").with_release(true);
    last.at_ms = 100;
    store.append(last).await.unwrap();
    for (id, kind, state, at, release) in [
        ("undone", "saga", "compensated", 100, true),
        ("held", "saga", "completed", 100, false),
        ("waits", "saga", "escalated", 100, true),
        ("free", "saga", "running", 100, true),
        ("failed", "saga", "failed", 200, true),
        ("edge", "saga", "completed", 1_000, true),
        ("new", "saga", "completed", 5_000, true),
        ("tx", "2pc", "completed", 100, true),
    ] {
        store
            .append(put(id, kind, state, at, release))
            .await
            .unwrap();
    }
    // A released, running workflow (given back by its owner) is not finished either.
    store
        .append(put("given", "saga", "running", 100, false))
        .await
        .unwrap();
    store.release("given", "w1").await.unwrap();

    assert_eq!(store.purge(purge(2)).await.unwrap(), 2, "the limit");
    let left = || async {
        store
            .workflows(None)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        left().await,
        [
            "held", "waits", "free", "failed", "edge", "new", "tx", "given"
        ],
        "the oldest two went"
    );
    assert_eq!(store.purge(purge(10)).await.unwrap(), 1);
    assert_eq!(store.purge(purge(10)).await.unwrap(), 0);
    assert_eq!(
        left().await,
        ["held", "waits", "free", "edge", "new", "tx", "given"]
    );
    for gone in ["done", "undone", "failed"] {
        assert!(store.workflow(gone).await.unwrap().is_none(), "{gone}");
        assert!(store.journal(gone).await.unwrap().is_empty(), "{gone}");
    }
    for kept in ["held", "waits", "free", "edge", "new", "tx", "given"] {
        assert_eq!(store.journal(kept).await.unwrap().len(), 1, "{kept}");
    }
    // The id is free again: a new workflow, with a journal of its own.
    store
        .append(entry("done", 0, "w2", "running"))
        .await
        .unwrap();
    assert_eq!(store.journal("done").await.unwrap().len(), 1);
    assert_eq!(
        store
            .workflow("done")
            .await
            .unwrap()
            .unwrap()
            .owner
            .as_deref(),
        Some("w2")
    );
    // Everything of the kind, at any age: still only the finished ones nobody holds.
    let all = Purge::new("2pc", &["completed"], u64::MAX, 10);
    assert_eq!(store.purge(all).await.unwrap(), 1);
    assert!(store.workflow("tx").await.unwrap().is_none());
    let all = Purge::new("saga", &["completed"], u64::MAX, 10);
    assert_eq!(store.purge(all).await.unwrap(), 2, "edge and new");
    assert_eq!(left().await, ["held", "waits", "free", "given", "done"]);
    // A claim lists the id used again once, in its new place (the newest).
    let got = store.claim(claim("w2", 1_000)).await.unwrap();
    assert_eq!(got, ["free", "given", "done"]);
    // Used again straight after the purge that deleted it: listed once too.
    store
        .append(put("again", "saga", "completed", 100, true))
        .await
        .unwrap();
    let completed = Purge::new("saga", &["completed"], u64::MAX, 10);
    assert_eq!(store.purge(completed).await.unwrap(), 1);
    store
        .append(entry("again", 0, "w2", "running"))
        .await
        .unwrap();
    let got = store.claim(claim("w2", 2_000)).await.unwrap();
    assert_eq!(got, ["free", "given", "done", "again"]);
}

/// A saga started by one version of the binary whose process died, during a rolling deploy:
/// a process of the new version, which lacks its definition, recovers every second; one of
/// the old version, which has it, recovers every 25 s (more than twice the lease). The first
/// gives the saga back each time it takes it (about once per lease, not every second), so the
/// second gets it and finishes it. Without `release`, the first re-claimed it (its own) on
/// every recovery, renewing the lease, and the second never got it.
pub(crate) async fn a_process_without_the_definition_gives_the_saga_back(store: Arc<dyn Store>) {
    let faulty = Arc::new(Faulty::new(store));
    let store: Arc<dyn Store> = faulty.clone();
    let log = Log::default();
    let t = || {
        saga(
            "t",
            vec![
                step("a", &log, Act::HangFirst(1)).idempotent(),
                step("b", &log, Act::Ok),
            ],
        )
    };
    crash(&engine(&store, "x", vec![t()]), &log, "t", "r1").await;
    sleep(LEASE + SECOND).await;
    let new = engine(
        &store,
        "new",
        vec![saga("other", vec![step("o", &log, Act::Ok)])],
    );
    let old = engine(&store, "old", vec![t()]);
    let (mut failed, mut done) = (0, Vec::new());
    for second in 1..=40 {
        sleep(SECOND).await;
        let r = new.recover().await.unwrap();
        assert!(r.resumed.is_empty(), "{:?}", r.resumed);
        for (id, e) in &r.failed {
            assert_eq!(id, "r1");
            assert!(
                matches!(e, SagaError::UnknownDefinition(n) if n == "t"),
                "{e:?}"
            );
        }
        failed += r.failed.len();
        if second % 25 == 0 {
            done.extend(old.recover().await.unwrap().resumed);
        }
    }
    assert_eq!(
        done.len(),
        1,
        "the process with the definition got the saga"
    );
    assert_eq!(
        (done[0].id.as_str(), done[0].state),
        ("r1", SagaState::Completed)
    );
    // Taken and given back at 1 s, then once its lease ran out, at 12 s and 23 s; at 25 s
    // the other process had it.
    assert_eq!(failed, 3);
    assert_eq!(faulty.releases.load(Ordering::Relaxed), 3);
    let w = store.workflow("r1").await.unwrap().unwrap();
    assert_eq!((w.state.as_str(), w.owner), ("completed", None));
    assert!(new.recover().await.unwrap().failed.is_empty());
}

/// With a store that cannot give claims back (one of another crate, written before
/// `release`: the trait's default), recovery keeps the claim, as it did before: the process
/// without the definition reports the saga on every recovery and holds it while it keeps
/// recovering; once it stops for a lease, the process with the definition gets it. Recovery
/// itself does not fail.
pub(crate) async fn a_store_that_cannot_release_keeps_the_claim(store: Arc<dyn Store>) {
    let faulty = Arc::new(Faulty::new(store));
    faulty.legacy.store(true, Ordering::Relaxed);
    let store: Arc<dyn Store> = faulty.clone();
    let log = Log::default();
    let t = || saga("t", vec![step("a", &log, Act::HangFirst(1)).idempotent()]);
    crash(&engine(&store, "x", vec![t()]), &log, "t", "r2").await;
    sleep(LEASE + SECOND).await;
    let new = engine(&store, "new", vec![]);
    let old = engine(&store, "old", vec![t()]);
    let mut failed = 0;
    for second in 1..=30 {
        sleep(SECOND).await;
        failed += new.recover().await.unwrap().failed.len();
        if second % 10 == 0 {
            assert!(old.recover().await.unwrap().resumed.is_empty());
        }
    }
    assert_eq!(failed, 30);
    assert!(
        faulty.releases.load(Ordering::Relaxed) > 0,
        "release was asked"
    );
    sleep(LEASE + SECOND).await;
    let r = old.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Completed);
    // And purging is reported as unsupported, with nothing deleted.
    let r = old.purge_finished(Duration::ZERO).await;
    assert!(
        matches!(r, Err(SagaError::Store(StoreError::Unsupported("purge")))),
        "{r:?}"
    );
    assert!(store.workflow("r2").await.unwrap().is_some());
}

/// The same for a two-phase commit: a coordinator without the transaction's definition gives
/// it back, and one with it, recovering right after, presumes the abort at once.
pub(crate) async fn tx_a_coordinator_without_the_definition_gives_it_back(store: Arc<dyn Store>) {
    let log = Log::default();
    let hangs = {
        let log = log.clone();
        Participant::new(
            "p",
            service_fn(move |req: PhaseRequest| {
                let log = log.clone();
                async move {
                    if req.phase == palisade_durable::twopc::Phase::Prepare {
                        log.hang().await;
                    }
                    Ok::<_, BoxError>(Vote::Yes)
                }
            }),
        )
    };
    let yes = || {
        Participant::new(
            "p",
            service_fn(|_r: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) }),
        )
    };
    let coordinator = |owner: &str, def: Option<Participant>| {
        let mut b = Coordinator::builder(store.clone())
            .owner(owner)
            .lease(LEASE);
        if let Some(p) = def {
            b = b.define(TransactionDefinition::new("order", vec![p]).unwrap());
        }
        b.build().unwrap()
    };
    let dying = coordinator("x", Some(hangs));
    tokio::select! {
        r = dying.run("order", "t1", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    sleep(LEASE + SECOND).await;
    let r = coordinator("new", None).recover().await.unwrap();
    assert_eq!(r.failed.len(), 1);
    assert!(matches!(&r.failed[0].1, SagaError::UnknownDefinition(n) if n == "order"));
    assert_eq!(store.workflow("t1").await.unwrap().unwrap().owner, None);
    let r = coordinator("old", Some(yes())).recover().await.unwrap();
    assert_eq!(r.finished.len(), 1);
    assert_eq!(r.finished[0].state, TxState::Aborted);
}

/// `purge_finished` deletes the sagas that are over and old, and nothing else: not a saga
/// escalated to a person, nor one running (held, or claimable), nor a recent one, nor a
/// transaction; the coordinator's deletes the old finished transactions.
pub(crate) async fn purge_finished_deletes_old_finished_workflows_only(store: Arc<dyn Store>) {
    let log = Log::default();
    let defs = || {
        vec![
            saga("ok", vec![step("a", &log, Act::Ok)]),
            saga(
                "undo",
                vec![
                    undoable("a", &log, Act::Ok, Act::Ok),
                    step("b", &log, Act::Fail("HTTP 502")),
                ],
            ),
            saga("fail", vec![step("a", &log, Act::Fail("HTTP 502"))]),
            saga(
                "esc",
                vec![
                    undoable("a", &log, Act::Ok, Act::Fail("400 bad request")),
                    step("b", &log, Act::Fail("HTTP 502")),
                ],
            ),
            saga(
                "hang",
                vec![step("h", &log, Act::HangFirst(1)).idempotent()],
            ),
        ]
    };
    let sagas = engine(&store, "w1", defs());
    let mut states = Vec::new();
    for (name, id) in [("ok", "s1"), ("undo", "s2"), ("fail", "s3"), ("esc", "s4")] {
        states.push(sagas.run(name, id, json!(1)).await.unwrap().state);
    }
    assert_eq!(
        states,
        [
            SagaState::Completed,
            SagaState::Compensated,
            SagaState::Failed,
            SagaState::Escalated
        ]
    );
    crash(&sagas, &log, "hang", "s5").await;
    let yes = Participant::new(
        "p",
        service_fn(|_r: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) }),
    );
    let coordinator = Coordinator::builder(store.clone())
        .owner("w1")
        .define(TransactionDefinition::new("order", vec![yes]).unwrap())
        .build()
        .unwrap();
    let tx = coordinator.run("order", "x1", json!(null)).await.unwrap();
    assert_eq!(tx.state, TxState::Committed);
    sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(
        sagas.run("ok", "s6", json!(1)).await.unwrap().state,
        SagaState::Completed
    );

    let hour = Duration::from_secs(3600);
    assert_eq!(sagas.purge_finished(hour).await.unwrap(), 3);
    assert_eq!(sagas.purge_finished(hour).await.unwrap(), 0);
    let ids = |list: Vec<palisade_durable::journal::SagaSummary>| {
        list.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(sagas.list().await.unwrap()), ["s4", "s5", "s6"]);
    for gone in ["s1", "s2", "s3"] {
        assert!(store.journal(gone).await.unwrap().is_empty(), "{gone}");
        assert!(
            matches!(sagas.inspect(gone).await, Err(SagaError::NotFound(_))),
            "{gone}"
        );
    }
    assert!(store.workflow("x1").await.unwrap().is_some(), "not a saga");
    assert_eq!(coordinator.purge_finished(hour).await.unwrap(), 1);
    assert!(store.workflow("x1").await.unwrap().is_none());
    assert!(store.journal("x1").await.unwrap().is_empty());
    // The escalated saga still has its review item and can be retried.
    assert_eq!(
        sagas.review_queue().inspect("s4/0").await.unwrap().saga_id,
        "s4"
    );
    // The crashed saga is still claimable, and resumed.
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Completed);
    // A deleted saga's id is free again.
    assert_eq!(
        sagas.run("ok", "s1", json!(2)).await.unwrap().state,
        SagaState::Completed
    );
    // Every finished saga, at any age (the recent ones are a millisecond old).
    sleep(Duration::from_millis(1)).await;
    assert_eq!(sagas.purge_finished(Duration::ZERO).await.unwrap(), 3);
    assert_eq!(ids(sagas.list().await.unwrap()), ["s4"]);
}

/// A finished saga that some process still holds (a claim taken at the store level; the
/// engines release finished ones) is not purged, whatever its age.
pub(crate) async fn purge_leaves_a_held_workflow(store: Arc<dyn Store>) {
    let mut a = Append::new(
        "h",
        "saga",
        "ok",
        0,
        1,
        json!({}),
        "completed",
        "w1",
        u64::MAX,
    );
    a.release = false;
    store.append(a).await.unwrap();
    let sagas = Sagas::builder(store.clone()).build().unwrap();
    assert_eq!(sagas.purge_finished(Duration::ZERO).await.unwrap(), 0);
    assert!(store.workflow("h").await.unwrap().is_some());
}

/// `purge_finished` goes on past a full batch (500 workflows per store transaction): 501
/// finished sagas all go in one call.
pub(crate) async fn purge_finished_goes_on_past_a_full_batch(store: Arc<dyn Store>) {
    let log = Log::default();
    let sagas = engine(
        &store,
        "w1",
        vec![saga("ok", vec![step("a", &log, Act::Ok)])],
    );
    for i in 0..501 {
        let id = format!("s{i}");
        assert_eq!(
            sagas.run("ok", &id, json!(1)).await.unwrap().state,
            SagaState::Completed
        );
    }
    sleep(Duration::from_secs(2 * 3600)).await;
    let hour = Duration::from_secs(3600);
    assert_eq!(sagas.purge_finished(hour).await.unwrap(), 501);
    assert_eq!(sagas.purge_finished(hour).await.unwrap(), 0);
}

/// A purge deletes the review items of the workflows it deletes, whatever their status, in
/// the same transaction: the closed ones (their history is the journal, which goes too) and
/// the pending ones a crash left on a finished saga (the journal overrules them, and without
/// it nothing could close them). The items of the workflows it keeps (escalated, held,
/// recent, beyond its limit) stay, and so do items of no workflow it deletes. An item id used
/// again after the purge is a new item, listed last.
pub(crate) async fn purge_deletes_the_review_items_of_the_workflows_it_deletes(
    store: Arc<dyn Store>,
) {
    for (id, state, at, release) in [
        ("done", "completed", 100, true),
        ("undone", "compensated", 100, true),
        ("failed", "failed", 100, true),
        ("waits", "escalated", 100, true),
        ("held", "completed", 100, false),
        ("new", "completed", 5_000, true),
    ] {
        let mut a = entry(id, 0, "w1", state).with_release(release);
        a.at_ms = at;
        store.append(a).await.unwrap();
    }
    let item = |id: &str, workflow: &str, status: &str| StoredReview {
        id: id.into(),
        workflow_id: workflow.into(),
        status: status.into(),
        updated_ms: 100,
        body: json!({ "id": id }),
    };
    for (id, workflow, status) in [
        ("done/0", "done", "retried"),
        ("waits/0", "waits", "open"),
        ("done/1", "done", "discarded"),
        ("undone/0", "undone", "open"),
        ("held/0", "held", "retried"),
        ("undone/1", "undone", "retry_requested"),
        ("failed/0", "failed", "discarded"),
        ("new/0", "new", "retried"),
        ("ghost/0", "ghost", "open"),
    ] {
        store.review_put(item(id, workflow, status)).await.unwrap();
    }
    let items = || async {
        store
            .review_list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(store.purge(purge(2)).await.unwrap(), 2);
    assert_eq!(
        items().await,
        ["waits/0", "held/0", "failed/0", "new/0", "ghost/0"],
        "done's and undone's items went with them; failed's, beyond the limit, stayed"
    );
    for gone in ["done/0", "done/1", "undone/0", "undone/1"] {
        assert!(store.review_get(gone).await.unwrap().is_none(), "{gone}");
    }
    assert_eq!(store.purge(purge(10)).await.unwrap(), 1);
    assert_eq!(items().await, ["waits/0", "held/0", "new/0", "ghost/0"]);
    // Another kind's purge deletes no saga's items.
    assert_eq!(
        store
            .purge(Purge::new("2pc", &["completed"], u64::MAX, 10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(items().await.len(), 4);
    // An id used again: a new item, in the newest place, with nothing of the old one.
    store
        .review_put(item("done/0", "done", "open"))
        .await
        .unwrap();
    assert_eq!(
        items().await,
        ["waits/0", "held/0", "new/0", "ghost/0", "done/0"]
    );
    let again = store.review_get("done/0").await.unwrap().unwrap();
    assert_eq!(again.status, "open");
}

/// A saga's retry ran and it finished compensated, but the service died before closing the
/// review item (it still says `retry_requested`); later the saga is purged and its id used
/// again by a new saga that escalates the same step. The new escalation is open for a person:
/// the old request, made for the purged saga, does not run the new saga's compensation.
/// Before purges deleted review items, the old item outlived its saga, the new escalation
/// took it as its own (the same id, the same escalation count) with its request, and the
/// next recovery ran the compensation nobody had looked at.
pub(crate) async fn a_purged_saga_s_retry_request_does_not_retry_its_id_s_next_saga(
    store: Arc<dyn Store>,
) {
    let log = Log::default();
    let faulty = Arc::new(Faulty::new(store.clone()));
    let def = |undo_a: Act| {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, undo_a),
                step("b", &log, Act::Fail("HTTP 502")),
            ],
        )
    };
    let store_f: Arc<dyn Store> = faulty.clone();
    let sagas = engine(
        &store_f,
        "w1",
        vec![def(Act::FailFirst(1, "400 bad request"))],
    );
    let queue = sagas.review_queue();
    assert_eq!(
        sagas.run("t", "p1", json!(1)).await.unwrap().state,
        SagaState::Escalated
    );
    queue.request_retry("p1/0").await.unwrap();
    *faulty.fail_review.lock().unwrap() = Some("retried");
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(
        sagas.inspect("p1").await.unwrap().state,
        SagaState::Compensated
    );
    let stale = queue.inspect("p1/0").await.unwrap();
    assert_eq!(
        (stale.status, stale.escalations),
        (ReviewStatus::RetryRequested, 1),
        "the crash left the item pending"
    );

    sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(
        sagas
            .purge_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(queue.list().await.unwrap().is_empty());

    // The id used again, by a saga whose compensation of a always refuses.
    let sagas = engine(&store_f, "w1", vec![def(Act::Fail("400 bad request"))]);
    assert_eq!(
        sagas.run("t", "p1", json!(2)).await.unwrap().state,
        SagaState::Escalated
    );
    let item = queue.inspect("p1/0").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 1));
    assert_eq!(item.input, json!(2));
    assert!(item.created_ms > stale.created_ms, "a new item");
    log.take();
    let r = sagas.recover().await.unwrap();
    assert!(r.resumed.is_empty() && r.failed.is_empty(), "{r:?}");
    assert!(
        !log.take().iter().any(|l| l.starts_with("undo a")),
        "nobody asked to retry the new saga's compensation"
    );
    assert_eq!(
        sagas.inspect("p1").await.unwrap().state,
        SagaState::Escalated
    );
}

/// A purge of the sagas finished before 1 000 ms, at most `limit` of them.
fn purge(limit: usize) -> Purge {
    Purge::new(
        "saga",
        &["completed", "compensated", "failed"],
        1_000,
        limit,
    )
}

/// Two handles of one agent (a resumed process next to the one it replaced, two resumes in
/// one process): the stale one's transition is refused, whatever its own phase allows, and
/// nothing is saved, so a completed agent stays completed; with `keep_last` too, where the
/// version after the stale handle's was pruned. `start` of an agent that exists is refused
/// and keeps its state.
pub(crate) async fn a_stale_lifecycle_handle_is_refused(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::error::LifecycleError;
    use palisade_durable::lifecycle::{AgentState, Lifecycle, Phase};
    let cps = Checkpoints::new(store.clone());
    let phases = |cps: Checkpoints, agent: &'static str| async move {
        let mut v = Vec::new();
        for m in cps.versions(agent).await.unwrap().iter().rev() {
            let s = cps
                .load_version::<AgentState>(agent, m.version)
                .await
                .unwrap();
            v.push(s.state.phase);
        }
        v
    };
    let mut a = Lifecycle::start(cps.clone(), "crawler").await.unwrap();
    let mut stale = Lifecycle::resume(cps.clone(), "crawler").await.unwrap();
    a.transition(Phase::Waiting, json!(null)).await.unwrap();
    a.transition(Phase::Processing, json!(null)).await.unwrap();
    a.transition(Phase::Completed, json!({"pages": 10}))
        .await
        .unwrap();
    let err = stale
        .transition(Phase::Waiting, json!(null))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Stale { ref agent, known: 1 } if agent == "crawler"),
        "{err:?}"
    );
    assert!(err.to_string().contains("stale"), "{err}");
    assert_eq!((stale.phase(), stale.version()), (Phase::Initialized, 1));
    use Phase::*;
    assert_eq!(
        phases(cps.clone(), "crawler").await,
        [Initialized, Waiting, Processing, Completed]
    );
    let resumed = Lifecycle::resume(cps.clone(), "crawler").await.unwrap();
    assert_eq!((resumed.phase(), resumed.version()), (Completed, 4));

    // The version after the stale handle's was pruned: refused all the same.
    let kept = Checkpoints::new(store.clone()).keep_last(1).unwrap();
    let mut a = Lifecycle::start(kept.clone(), "mailer").await.unwrap();
    let mut stale = Lifecycle::resume(kept.clone(), "mailer").await.unwrap();
    a.transition(Phase::Waiting, json!(null)).await.unwrap();
    a.transition(Phase::Processing, json!({"page": 42}))
        .await
        .unwrap();
    let err = stale
        .transition(Phase::Waiting, json!(null))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Stale { known: 1, .. }),
        "{err:?}"
    );
    assert_eq!(phases(kept.clone(), "mailer").await, [Processing]);
    // A fresh handle goes on.
    let mut b = Lifecycle::resume(kept.clone(), "mailer").await.unwrap();
    assert_eq!(
        b.transition(Phase::Completed, json!(1))
            .await
            .unwrap()
            .version,
        4
    );
    // And the first handle, now stale in turn, cannot reopen it.
    assert!(matches!(
        a.transition(Phase::Waiting, json!(null)).await,
        Err(LifecycleError::Stale { known: 3, .. })
    ));

    // Starting an agent that exists is refused; its state is kept (keep_last(1) would have
    // pruned it behind a new `initialized` version).
    let mut c = Lifecycle::start(kept.clone(), "reporter").await.unwrap();
    c.transition(Phase::Waiting, json!(null)).await.unwrap();
    c.transition(Phase::Processing, json!({"page": 42}))
        .await
        .unwrap();
    let err = Lifecycle::start(kept.clone(), "reporter")
        .await
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Exists(ref agent) if agent == "reporter"),
        "{err:?}"
    );
    assert!(err.to_string().contains("resume"), "{err}");
    let resumed = Lifecycle::resume(kept, "reporter").await.unwrap();
    assert_eq!(
        (resumed.phase(), &resumed.state().data),
        (Processing, &json!({"page": 42}))
    );
}

/// An id or agent name with a NUL character, which PostgreSQL cannot store, is refused the
/// same way on every store, with a typed error naming the rule, and nothing is written.
pub(crate) async fn ids_with_a_nul_character_are_refused(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::error::{CheckpointError, SagaError};
    use palisade_durable::twopc::{
        Coordinator, Participant, PhaseRequest, TransactionDefinition, Vote,
    };
    let sagas = palisade_durable::Sagas::builder(store.clone())
        .define(
            palisade_durable::SagaDefinition::new(
                "d",
                vec![palisade_durable::Step::new(
                    "a",
                    tower::service_fn(|_r: palisade_durable::saga::StepRequest| async {
                        Ok::<_, palisade_core::BoxError>(json!(1))
                    }),
                )],
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let err = sagas.run("d", "crawl-\0-1", json!({})).await.unwrap_err();
    assert!(
        matches!(err, SagaError::InvalidId(ref id) if id == "crawl-\0-1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("without a NUL character"), "{err}");
    let participant = Participant::new(
        "p",
        tower::service_fn(|_r: PhaseRequest| async { Ok::<_, palisade_core::BoxError>(Vote::Yes) }),
    );
    let coordinator = Coordinator::builder(store.clone())
        .define(TransactionDefinition::new("t", vec![participant]).unwrap())
        .build()
        .unwrap();
    let err = coordinator.run("t", "tx\0", json!({})).await.unwrap_err();
    assert!(matches!(err, SagaError::InvalidId(_)), "{err:?}");
    let cps = Checkpoints::new(store.clone());
    let err = cps.save("agent\0x", &1u32).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidAgent(ref a) if a == "agent\0x"),
        "{err:?}"
    );
    assert!(err.to_string().contains("NUL character"), "{err}");
    assert!(matches!(
        cps.save_bytes("\0", vec![1]).await,
        Err(CheckpointError::InvalidAgent(_))
    ));
    assert!(store.workflows(None).await.unwrap().is_empty());
}
