//! A store that fails once, at the worst moments: the engine must report a typed error and
//! leave a saga that recovery (or a repeated request) finishes correctly.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use palisade_durable::error::{SagaError, StoreError};
use palisade_durable::journal::SagaState;
use palisade_durable::review::ReviewStatus;
use palisade_durable::store::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, Purge, Store, StoredCheckpoint,
    StoredReview, WorkflowRecord,
};
use palisade_durable::{SagaDefinition, Sagas};
use serde_json::json;

use super::sagas::{Act, Calls, saga, step, undoable};

/// Delegates to a store, with the paused clock held still while an operation runs (see
/// `Faulty::still`), failing the next append of an event of type `fail_append`, the next
/// review update (`review_put` or `review_put_if`) to status `fail_review`, and every lease renewal while `partitioned` (the
/// process cannot reach the store to send its heartbeat).
#[derive(Debug)]
pub(crate) struct Faulty {
    inner: Arc<dyn Store>,
    pub(crate) fail_append: Mutex<Option<&'static str>>,
    pub(crate) fail_review: Mutex<Option<&'static str>>,
    pub(crate) partitioned: AtomicBool,
    /// Fail every checkpoint prune while set.
    pub(crate) fail_prune: AtomicBool,
    /// Behave as a store of another crate written before `release` and `purge` (the trait's
    /// default implementations) while set.
    pub(crate) legacy: AtomicBool,
    /// Releases asked, failed or not.
    pub(crate) releases: AtomicU32,
    /// Renewals asked, failed or not.
    pub(crate) renewals: AtomicU32,
    /// Every claim asked, in order.
    pub(crate) claims: Mutex<Vec<Claim>>,
    /// Run once, just before the next claim of one named saga (`Claim::only`: a discard's, a
    /// review retry's) reaches the store: another process's work between a caller's first
    /// read and its claim. Recovery's claims of whatever is stale go by.
    pub(crate) before_claim: BeforeClaim,
    /// Run once, just before the next exact checkpoint write (`Store::checkpoint_put`, a
    /// lifecycle's fenced write) reaches the store: another handle's work between the
    /// writer's check of the stored versions and its write.
    pub(crate) before_checkpoint_put: BeforeClaim,
    /// Run once, just after the next read of a review item (`Store::review_get`) answers,
    /// before its caller sees it: another process's work between a caller's read of an item
    /// and its write.
    pub(crate) after_review_get: BeforeClaim,
    /// Run once, just before the next conditional write of a review item
    /// (`Store::review_put_if`) reaches the store: another process's work between a caller's
    /// last read of an item and its write, when no read comes between them.
    pub(crate) before_review_put_if: BeforeClaim,
}

/// A future [`Faulty`] runs once, before the next claim.
#[derive(Default)]
pub(crate) struct BeforeClaim(pub(crate) Mutex<Option<BoxFuture<'static, ()>>>);

impl std::fmt::Debug for BeforeClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().unwrap().is_some();
        f.debug_tuple("BeforeClaim").field(&set).finish()
    }
}

impl Faulty {
    /// A store that fails nothing yet.
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Faulty {
            inner,
            fail_append: Mutex::new(None),
            fail_review: Mutex::new(None),
            partitioned: AtomicBool::new(false),
            fail_prune: AtomicBool::new(false),
            legacy: AtomicBool::new(false),
            releases: AtomicU32::new(0),
            renewals: AtomicU32::new(0),
            claims: Mutex::new(Vec::new()),
            before_claim: BeforeClaim::default(),
            before_checkpoint_put: BeforeClaim::default(),
            after_review_get: BeforeClaim::default(),
            before_review_put_if: BeforeClaim::default(),
        }
    }
}

fn injected() -> StoreError {
    StoreError::backend("injected fault: disk full")
}

impl Faulty {
    /// Runs `op` on the inner store on tokio's blocking pool. While a blocking task runs, the
    /// paused clock stands still, so the operation takes no virtual time on any store; on a
    /// networked store the clock would otherwise jump to the test's next timer while a query
    /// is on the wire, and leases would run out in tests that time them.
    fn still<'a, T, F>(&self, op: F) -> BoxFuture<'a, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: for<'s> FnOnce(&'s dyn Store) -> BoxFuture<'s, Result<T, StoreError>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let rt = tokio::runtime::Handle::current();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || rt.block_on(op(&*inner)))
                .await
                .map_err(|_| StoreError::Closed)?
        })
    }
}

impl Store for Faulty {
    fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut f = self.fail_append.lock().unwrap();
        if f.is_some_and(|t| a.event["type"] == t) {
            *f = None;
            return Box::pin(async { Err(injected()) });
        }
        self.still(move |s| s.append(a))
    }
    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let id = id.to_owned();
        self.still(move |s| Box::pin(async move { s.journal(&id).await }))
    }
    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
        let kind = kind.map(str::to_owned);
        self.still(move |s| Box::pin(async move { s.workflows(kind.as_deref()).await }))
    }
    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
        let id = id.to_owned();
        self.still(move |s| Box::pin(async move { s.workflow(&id).await }))
    }
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.claims.lock().unwrap().push(claim.clone());
        let before = claim
            .only
            .is_some()
            .then(|| self.before_claim.0.lock().unwrap().take())
            .flatten();
        let claimed = self.still(move |s| s.claim(claim));
        Box::pin(async move {
            if let Some(before) = before {
                before.await;
            }
            claimed.await
        })
    }
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.renewals.fetch_add(1, Ordering::Relaxed);
        if self.partitioned.load(Ordering::Relaxed) {
            return Box::pin(async { Err(StoreError::backend("injected fault: network down")) });
        }
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.still(move |s| Box::pin(async move { s.renew(&id, &owner, lease_until_ms).await }))
    }
    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.legacy.load(Ordering::Relaxed) {
            // The trait's default, as a store written before instances has it.
            return self.renew(id, owner, lease_until_ms);
        }
        self.renewals.fetch_add(1, Ordering::Relaxed);
        if self.partitioned.load(Ordering::Relaxed) {
            return Box::pin(async { Err(StoreError::backend("injected fault: network down")) });
        }
        let (id, owner, instance) = (id.to_owned(), owner.to_owned(), instance.to_owned());
        self.still(move |s| {
            Box::pin(async move {
                s.renew_instance(&id, &owner, &instance, now_ms, lease_until_ms)
                    .await
            })
        })
    }
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.releases.fetch_add(1, Ordering::Relaxed);
        if self.legacy.load(Ordering::Relaxed) {
            return Box::pin(async { Err(StoreError::Unsupported("release")) });
        }
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.still(move |s| Box::pin(async move { s.release(&id, &owner).await }))
    }
    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.legacy.load(Ordering::Relaxed) {
            return self.release(id, owner);
        }
        self.releases.fetch_add(1, Ordering::Relaxed);
        let (id, owner, instance) = (id.to_owned(), owner.to_owned(), instance.to_owned());
        self.still(move |s| {
            Box::pin(async move { s.release_instance(&id, &owner, &instance).await })
        })
    }
    fn purge(&self, purge: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        if self.legacy.load(Ordering::Relaxed) {
            return Box::pin(async { Err(StoreError::Unsupported("purge")) });
        }
        self.still(move |s| s.purge(purge))
    }
    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut f = self.fail_review.lock().unwrap();
        if f.is_some_and(|s| item.status == s) {
            *f = None;
            return Box::pin(async { Err(injected()) });
        }
        self.still(move |s| s.review_put(item))
    }
    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut f = self.fail_review.lock().unwrap();
        if f.is_some_and(|s| item.status == s) {
            *f = None;
            return Box::pin(async { Err(injected()) });
        }
        let before = self.before_review_put_if.0.lock().unwrap().take();
        let put = self.still(move |s| s.review_put_if(expected, item));
        Box::pin(async move {
            if let Some(before) = before {
                before.await;
            }
            put.await
        })
    }
    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        let id = id.to_owned();
        let after = self.after_review_get.0.lock().unwrap().take();
        let read = self.still(move |s| Box::pin(async move { s.review_get(&id).await }));
        Box::pin(async move {
            let read = read.await;
            if let Some(after) = after {
                after.await;
            }
            read
        })
    }
    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        self.still(|s| s.review_list())
    }
    fn checkpoint_put(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
        let before = self.before_checkpoint_put.0.lock().unwrap().take();
        let put = self.still(move |s| s.checkpoint_put(cp));
        Box::pin(async move {
            if let Some(before) = before {
                before.await;
            }
            put.await
        })
    }
    fn checkpoint_put_next(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.still(move |s| s.checkpoint_put_next(cp))
    }
    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
        let agent = agent.to_owned();
        self.still(move |s| Box::pin(async move { s.checkpoint_get(&agent, version).await }))
    }
    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
        let agent = agent.to_owned();
        self.still(move |s| Box::pin(async move { s.checkpoint_versions(&agent).await }))
    }
    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        if self.fail_prune.load(Ordering::Relaxed) {
            return Box::pin(async { Err(injected()) });
        }
        let agent = agent.to_owned();
        self.still(move |s| Box::pin(async move { s.checkpoint_prune(&agent, keep).await }))
    }
}

fn definition(log: &Arc<Calls>, undo_b: Act) -> SagaDefinition {
    saga(
        "t",
        vec![
            undoable("a", log, Act::Ok, Act::Ok),
            undoable("b", log, Act::Ok, undo_b),
            step("c", log, Act::Fail("HTTP 503")),
        ],
    )
}

pub(crate) async fn store_faults_leave_recoverable_sagas(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    *faulty.fail_append.lock().unwrap() = Some("escalated");
    let sagas = Sagas::builder(faulty.clone())
        .define(definition(&log, Act::FailFirst(1, "400 bad")))
        .build()
        .unwrap();
    // The disk fills up just as the saga is to be parked: a typed error, and the item exists.
    let err = sagas.run("t", "f1", json!(1)).await.unwrap_err();
    assert!(
        matches!(err, SagaError::Store(StoreError::Backend(_))),
        "{err}"
    );
    assert_eq!(
        sagas.inspect("f1").await.unwrap().state,
        SagaState::Compensating
    );
    let queue = sagas.review_queue();
    assert_eq!(
        queue.inspect("f1/1").await.unwrap().status,
        ReviewStatus::Open
    );
    // Recovery parks it properly, on the same item.
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed[0].state, SagaState::Escalated);
    let item = queue.inspect("f1/1").await.unwrap();
    assert_eq!((item.status, item.errors.len()), (ReviewStatus::Open, 1));

    // The retry works, but the item's update fails after the saga finished.
    *faulty.fail_review.lock().unwrap() = Some("retried");
    let err = sagas.retry_review("f1/1").await.unwrap_err();
    assert!(matches!(err, SagaError::Store(_)), "{err}");
    assert_eq!(
        sagas.inspect("f1").await.unwrap().state,
        SagaState::Compensated
    );
    assert_eq!(
        queue.inspect("f1/1").await.unwrap().status,
        ReviewStatus::Open
    );
    // Asking again closes the item to match the journal, running nothing.
    log.take();
    let info = sagas.retry_review("f1/1").await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    assert!(log.take().is_empty());
    assert_eq!(
        queue.inspect("f1/1").await.unwrap().status,
        ReviewStatus::Retried
    );

    // A discard whose item update fails after the saga ended: asking again closes the item.
    let sagas = Sagas::builder(faulty.clone())
        .define(definition(&log, Act::Fail("400 bad")))
        .build()
        .unwrap();
    assert_eq!(
        sagas.run("t", "f2", json!(2)).await.unwrap().state,
        SagaState::Escalated
    );
    *faulty.fail_review.lock().unwrap() = Some("discarded");
    faulty.claims.lock().unwrap().clear();
    assert!(queue.discard("f2/1", "done by hand").await.is_err());
    // The discard held the saga under a lease of a minute while it wrote (no other process
    // could take it meanwhile, and one that died would hold it no longer).
    let claims = faulty.claims.lock().unwrap().clone();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].only.as_deref(), Some("f2"));
    assert_eq!(claims[0].lease_until_ms - claims[0].now_ms, 60_000);
    assert_eq!(sagas.inspect("f2").await.unwrap().state, SagaState::Failed);
    let err = queue.discard("f2/1", "done by hand").await.unwrap_err();
    assert!(matches!(err, SagaError::WrongState { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"saga "f2" is failed; only the review item of an escalated saga can be discarded"#
    );
    assert_eq!(
        queue.inspect("f2/1").await.unwrap().status,
        ReviewStatus::Discarded
    );
}

/// The service dies between writing a review item and journaling the escalation that parks
/// the saga; a person asks for a retry before it restarts. The restarted service's recovery
/// escalates again, to the same item, and must keep the request (and run it), not reset the
/// item to open; a request the saga already used is not run twice.
pub(crate) async fn a_retry_requested_before_the_escalation_was_journaled_is_kept(
    store: Arc<dyn Store>,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let engine = |undo_b: Act| {
        Sagas::builder(faulty.clone())
            .define(definition(&log, undo_b))
            .build()
            .unwrap()
    };
    let queue = palisade_durable::ReviewQueue::new(store.clone());
    let undone_b = |log: &Calls| {
        log.take()
            .iter()
            .filter(|l| l.starts_with("undo b"))
            .count()
    };

    // First escalation: b's compensation refuses once (not retryable), then works.
    let sagas = engine(Act::FailFirst(1, "400 bad"));
    *faulty.fail_append.lock().unwrap() = Some("escalated");
    assert!(sagas.run("t", "f1", json!(1)).await.is_err());
    assert_eq!(
        sagas.inspect("f1").await.unwrap().state,
        SagaState::Compensating
    );
    let item = queue.request_retry("f1/1").await.unwrap();
    assert_eq!(item.status, ReviewStatus::RetryRequested);
    assert_eq!(undone_b(&log), 1);
    super::sagas::restart_later().await;
    let r = engine(Act::FailFirst(1, "400 bad"))
        .recover()
        .await
        .unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        r.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("f1", SagaState::Compensated)],
        "escalated again, then retried as asked"
    );
    assert_eq!(undone_b(&log), 1, "the retry ran");
    let item = queue.inspect("f1/1").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Retried, 1));

    // A later escalation: b's compensation always refuses.
    let sagas = engine(Act::Fail("400 bad"));
    assert_eq!(
        sagas.run("t", "f2", json!(2)).await.unwrap().state,
        SagaState::Escalated
    );
    queue.request_retry("f2/1").await.unwrap();
    // The retry fails again; the service dies as it escalates again.
    *faulty.fail_append.lock().unwrap() = Some("escalated");
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    let item = queue.inspect("f2/1").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 2));
    assert_eq!(undone_b(&log), 2);
    // A person asks again before the restart: the request is kept, and run.
    queue.request_retry("f2/1").await.unwrap();
    super::sagas::restart_later().await;
    let r = engine(Act::Fail("400 bad")).recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.resumed.len(), 1, "{:?}", r.resumed);
    assert_eq!(r.resumed[0].state, SagaState::Escalated);
    assert_eq!(undone_b(&log), 1, "the second request ran");
    // It failed again: open for a person, once more, and nothing more runs by itself.
    let item = queue.inspect("f2/1").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 3));
    assert_eq!(item.errors.len(), 3);
    assert!(sagas.recover().await.unwrap().resumed.is_empty());
    assert_eq!(undone_b(&log), 0);
}

/// A retried item whose saga escalated another step, where the service died before closing
/// the retried item (here: the item's update fails): the stale request neither runs the new
/// escalation's compensation on recovery nor discards it; each closes the old item.
pub(crate) async fn a_stale_review_item_acts_on_no_other_escalation(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let sagas = Sagas::builder(faulty.clone())
        .define(saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Fail("400 bad request")),
                undoable("b", &log, Act::Ok, Act::Ok),
                step("c", &log, Act::Fail("HTTP 502")),
            ],
        ))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(store.clone());
    // Two sagas end escalated on a's compensation (s1/0, s2/0) with the item of an earlier
    // retry, of b's compensation, left pending: as if b's compensation had been escalated,
    // retried, and the service died before closing that item.
    for id in ["s1", "s2"] {
        assert_eq!(
            sagas.run("t", id, json!(1)).await.unwrap().state,
            SagaState::Escalated
        );
        let mut stale = queue.inspect(&format!("{id}/0")).await.unwrap();
        stale.id = format!("{id}/1");
        stale.step = 1;
        // s2's was retried at once (`Sagas::retry_review` on an open item): still open.
        stale.status = if id == "s1" {
            ReviewStatus::RetryRequested
        } else {
            ReviewStatus::Open
        };
        store
            .review_put(StoredReview {
                id: stale.id.clone(),
                workflow_id: stale.saga_id.clone(),
                status: stale.status.as_str().into(),
                updated_ms: stale.updated_ms,
                body: serde_json::to_value(&stale).unwrap(),
            })
            .await
            .unwrap();
    }
    log.take();
    // Recovery takes the stale request as no leave to retry s1/0: nothing runs.
    let r = sagas.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert!(log.take().is_empty(), "nothing ran");
    let info = sagas.inspect("s1").await.unwrap();
    assert_eq!(
        (info.state, info.steps[0].compensation_attempts),
        (SagaState::Escalated, 1)
    );
    assert_eq!(
        queue.inspect("s1/1").await.unwrap().status,
        ReviewStatus::Retried
    );
    assert_eq!(
        queue.inspect("s1/0").await.unwrap().status,
        ReviewStatus::Open
    );
    // Discarding a stale item would abandon a's compensation, which nobody has looked at.
    let err = queue.discard("s2/1", "oops").await.unwrap_err();
    assert!(matches!(err, SagaError::WrongState { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"saga "s2" is escalated to review item "s2/0"; only its latest review item can be discarded"#
    );
    assert_eq!(
        sagas.inspect("s2").await.unwrap().state,
        SagaState::Escalated
    );
    assert_eq!(
        queue.inspect("s2/1").await.unwrap().status,
        ReviewStatus::Retried
    );
    assert_eq!(
        queue.inspect("s2/0").await.unwrap().status,
        ReviewStatus::Open
    );
}

/// A retry asked for on a stale item (its retry ran and the saga escalated another step, but
/// the store failed the item's closing, so it is still open) is refused as a discard of it is,
/// and the item closed: nothing would run it, yet the request was accepted (`review retry`
/// printed that the service runs it) and recovery then closed the item as retried without
/// running anything, while the saga waited at the other item.
pub(crate) async fn a_retry_request_of_a_stale_item_is_refused(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let sagas = Sagas::builder(faulty.clone())
        .define(saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Fail("400 bad request")),
                undoable("b", &log, Act::Ok, Act::FailFirst(1, "400 bad request")),
                step("c", &log, Act::Fail("HTTP 502")),
            ],
        ))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(store.clone());
    assert_eq!(
        sagas.run("t", "s", json!(1)).await.unwrap().state,
        SagaState::Escalated
    );
    // The retry undoes b, escalates a's compensation to s/0, and fails to close s/1.
    *faulty.fail_review.lock().unwrap() = Some("retried");
    let err = sagas.retry_review("s/1").await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    let info = sagas.inspect("s").await.unwrap();
    assert_eq!(
        (info.state, info.review.as_deref()),
        (SagaState::Escalated, Some("s/0"))
    );
    assert_eq!(
        queue.inspect("s/1").await.unwrap().status,
        ReviewStatus::Open
    );
    log.take();
    let err = queue.request_retry("s/1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"saga "s" is escalated to review item "s/0"; only its latest review item can be retried"#
    );
    assert_eq!(
        queue.inspect("s/1").await.unwrap().status,
        ReviewStatus::Retried
    );
    let r = sagas.recover().await.unwrap();
    assert!(r.failed.is_empty() && r.resumed.is_empty(), "{r:?}");
    assert!(log.take().is_empty(), "nothing ran");
    assert_eq!(
        queue.inspect("s/0").await.unwrap().status,
        ReviewStatus::Open
    );
}

/// Pruning old checkpoints fails (the disk is full, the database busy) after the new one was
/// saved: the save succeeded and says so; the next save prunes. An error here told the caller
/// the checkpoint was not saved when it was: a lifecycle kept its old phase in memory while
/// its store (and a restart) had the new one.
pub(crate) async fn a_failed_prune_does_not_undo_a_saved_checkpoint(store: Arc<dyn Store>) {
    use palisade_durable::checkpoint::Checkpoints;
    use palisade_durable::lifecycle::{Lifecycle, Phase};
    let faulty = Arc::new(Faulty::new(store.clone()));
    let cps = Checkpoints::new(faulty.clone()).keep_last(2).unwrap();
    let mut agent = Lifecycle::start(cps.clone(), "crawler").await.unwrap();
    agent.transition(Phase::Waiting, json!(null)).await.unwrap();
    faulty.fail_prune.store(true, Ordering::Relaxed);
    let meta = agent.transition(Phase::Processing, json!(1)).await.unwrap();
    assert_eq!(meta.version, 3);
    assert_eq!(agent.phase(), Phase::Processing);
    let resumed = Lifecycle::resume(cps.clone(), "crawler").await.unwrap();
    assert_eq!(resumed.phase(), agent.phase(), "memory and store agree");
    assert_eq!(
        cps.versions("crawler").await.unwrap().len(),
        3,
        "not pruned yet"
    );
    faulty.fail_prune.store(false, Ordering::Relaxed);
    agent.transition(Phase::Completed, json!(2)).await.unwrap();
    let versions: Vec<u64> = cps
        .versions("crawler")
        .await
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, [4, 3], "the next save pruned");
}

/// A discard cut off by a store failure, then a retry a person asks for on the item: the
/// retry either runs (the compensation is called) or is refused, never turned into a discard
/// (the saga `failed`, the item `retried`, nothing run). A discard is one journal entry, so
/// the cut cannot come between the discard and the saga's end; a journal an earlier version
/// left half-written (the discard journaled, the saga's end not) reads as failed, a retry of
/// its item is refused, and the saga's record is finished too.
pub(crate) async fn an_interrupted_discard_is_not_turned_into_a_retry(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let sagas = Sagas::builder(faulty.clone())
        .define(definition(&log, Act::FailFirst(1, "400 bad")))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    let undone_b = |log: &Calls| {
        log.take()
            .iter()
            .filter(|l| l.starts_with("undo b"))
            .count()
    };
    assert_eq!(
        sagas.run("t", "d1", json!(1)).await.unwrap().state,
        SagaState::Escalated
    );
    undone_b(&log);
    // The store fails the saga's end, should the discard write one.
    *faulty.fail_append.lock().unwrap() = Some("saga_finished");
    let discarded = queue.discard("d1/1", "refunded by hand").await;
    *faulty.fail_append.lock().unwrap() = None;
    let retry = queue.request_retry("d1/1").await;
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    let r = sagas.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let item = queue.inspect("d1/1").await.unwrap();
    let undone = undone_b(&log);
    assert!(
        undone > 0 || item.status != ReviewStatus::Retried,
        "the retry was turned into a discard: item {}, compensation not called",
        item.status
    );
    // The discard is one entry, which the failure did not touch: it took effect, and the
    // retry was refused.
    assert_eq!(discarded.unwrap().status, ReviewStatus::Discarded);
    let err = retry.unwrap_err();
    assert!(matches!(err, SagaError::WrongState { .. }), "{err:?}");
    assert_eq!(item.status, ReviewStatus::Discarded);
    assert_eq!(undone, 0);
    let rec = store.workflow("d1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("failed", None));

    // An earlier version's discard, cut between its two entries.
    let log = Arc::new(Calls::default());
    let sagas = Sagas::builder(faulty.clone())
        .define(definition(&log, Act::FailFirst(1, "400 bad")))
        .build()
        .unwrap();
    assert_eq!(
        sagas.run("t", "d2", json!(2)).await.unwrap().state,
        SagaState::Escalated
    );
    undone_b(&log);
    let next = store.journal("d2").await.unwrap().len() as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let claim = Claim::new("saga", &["escalated"], "review-queue", now, now + 60_000, 1);
    assert_eq!(store.claim(claim.only("d2")).await.unwrap(), ["d2"]);
    store
        .append(Append::new(
            "d2",
            "saga",
            "t",
            next,
            now,
            json!({"type": "review_discarded", "review": "d2/1", "note": "by hand"}),
            "escalated",
            "review-queue",
            now + 60_000,
        ))
        .await
        .unwrap();
    let info = sagas.inspect("d2").await.unwrap();
    assert_eq!((info.state, info.discarded), (SagaState::Failed, true));
    assert_eq!(
        queue.inspect("d2/1").await.unwrap().status,
        ReviewStatus::Open
    );
    faulty.claims.lock().unwrap().clear();
    let err = queue.request_retry("d2/1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"saga "d2" is failed; only the review item of an unfinished saga can be retried"#
    );
    // The queue claimed the saga to finish it, for a minute's lease: time for its one entry,
    // and a saga freed soon if the process stops between the claim and the entry.
    let claims = faulty.claims.lock().unwrap().clone();
    let [claim] = &claims[..] else {
        panic!("one claim: {claims:?}")
    };
    assert_eq!(
        (claim.only.as_deref(), claim.owner.as_str()),
        (Some("d2"), "review-queue")
    );
    assert_eq!(claim.lease_until_ms - claim.now_ms, 60_000);
    assert_eq!(
        queue.inspect("d2/1").await.unwrap().status,
        ReviewStatus::Discarded
    );
    // The saga's record is finished too: failed, held by nobody, its journal as an earlier
    // version's complete discard.
    let rec = store.workflow("d2").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("failed", None));
    let journal = store.journal("d2").await.unwrap();
    assert_eq!(journal.len() as u64, next + 2);
    assert_eq!(journal.last().unwrap().event["type"], "saga_finished");
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    let r = sagas.recover().await.unwrap();
    assert!(r.failed.is_empty() && r.resumed.is_empty(), "{r:?}");
    assert_eq!(undone_b(&log), 0);
    assert_eq!(sagas.inspect("d2").await.unwrap().state, SagaState::Failed);
}

/// A retry a person requested runs once, whichever processes recover: a recovery that read
/// the queue before another process's recovery ran the retry (which failed again and
/// escalated to the same item, open again) finds the request used once it holds the claim,
/// writes nothing, and gives the claim back. It used to run the retry a second time, with
/// nobody asking.
pub(crate) async fn a_requested_retry_runs_once_across_recoveries(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let def = || undo_of_a_fails(&log);
    let build = |owner: &str| {
        Sagas::builder(faulty.clone())
            .define(def())
            .owner(owner)
            .compensation_attempts(1)
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    let run = a.run("t", "q1", json!(1)).await.unwrap();
    assert_eq!(
        (run.state, run.review.as_deref()),
        (SagaState::Escalated, Some("q1/0"))
    );
    // The compensations of `a` since the last look.
    let undone = |log: &Calls| {
        log.take()
            .iter()
            .filter(|l| l.starts_with("undo a"))
            .count()
    };
    assert_eq!(undone(&log), 1);
    queue.request_retry("q1/0").await.unwrap();
    // Between b's read of the item and its claim, a's recovery runs the retry.
    let other = a.clone();
    *faulty.before_claim.0.lock().unwrap() = Some(Box::pin(async move {
        let r = other.recover().await.unwrap();
        assert_eq!(r.resumed.len(), 1, "{r:?}");
    }));
    let r = b.recover().await.unwrap();
    assert!(
        faulty.before_claim.0.lock().unwrap().is_none(),
        "a's recovery ran"
    );
    assert!(r.failed.is_empty() && r.resumed.is_empty(), "{r:?}");
    assert_eq!(undone(&log), 1, "one retry for one request");
    let journal = store.journal("q1").await.unwrap();
    let retried = journal
        .iter()
        .filter(|e| e.event["type"] == "review_retried")
        .count();
    assert_eq!(retried, 1);
    let item = queue.inspect("q1/0").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 2));
    let rec = store.workflow("q1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("escalated", None));
    // A retry asked now on the item as it was read before another retry ran is refused with
    // the saga as it stands, and the claim given back (to this process after a lease, as a
    // release does); asked again then, it runs.
    let other = a.clone();
    let requeue = palisade_durable::ReviewQueue::new(faulty.clone());
    *faulty.before_claim.0.lock().unwrap() = Some(Box::pin(async move {
        requeue.request_retry("q1/0").await.unwrap();
        other.recover().await.unwrap();
    }));
    let err = b.retry_review("q1/0").await.unwrap_err();
    assert!(
        matches!(&err, SagaError::WrongState { what: "saga", .. }),
        "{err:?}"
    );
    assert_eq!(undone(&log), 1, "the other process's retry alone");
    let rec = store.workflow("q1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("escalated", None));
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    let info = b.retry_review("q1/0").await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    assert_eq!(undone(&log), 1);
    assert_eq!(queue.inspect("q1/0").await.unwrap().escalations, 4);
}

/// A discard whose saga changes between the queue's first read and its claim: a person asked
/// for a retry of the item meanwhile, and the retry escalated the saga again at another step,
/// to another item. The discard reads the journal again once it holds the claim, writes
/// nothing and gives the claim back: the new item's work is left for someone to look at.
pub(crate) async fn a_discard_of_an_item_retried_meanwhile_writes_nothing(store: Arc<dyn Store>) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let def = saga(
        "t",
        vec![
            undoable("a", &log, Act::Ok, Act::FailFirst(1, "400 bad")),
            undoable("b", &log, Act::Ok, Act::FailFirst(1, "400 bad")),
            step("c", &log, Act::Fail("HTTP 503")),
        ],
    );
    let sagas = Sagas::builder(faulty.clone()).define(def).build().unwrap();
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    let run = sagas.run("t", "r1", json!(1)).await.unwrap();
    assert_eq!(
        (run.state, run.review.as_deref()),
        (SagaState::Escalated, Some("r1/1"))
    );
    // Between the discard's first read and its claim: the retry runs, b's compensation
    // succeeds, a's fails, and the saga is escalated to item r1/0.
    let (other, retried) = (
        sagas.clone(),
        palisade_durable::ReviewQueue::new(faulty.clone()),
    );
    *faulty.before_claim.0.lock().unwrap() = Some(Box::pin(async move {
        retried.request_retry("r1/1").await.unwrap();
        let r = other.recover().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
    }));
    let err = queue.discard("r1/1", "refunded by hand").await.unwrap_err();
    assert!(
        faulty.before_claim.0.lock().unwrap().is_none(),
        "the retry ran"
    );
    // Where the saga stands, and why the item cannot be discarded: it said "saga "r1" is
    // escalated; only the review item of an escalated saga can be discarded".
    assert_eq!(
        err.to_string(),
        r#"saga "r1" is escalated at review item "r1/0"; a discard is for the escalation its item was read at, and the saga changed since: read the item again"#
    );
    let info = sagas.inspect("r1").await.unwrap();
    assert_eq!(
        (info.state, info.review.as_deref(), info.discarded),
        (SagaState::Escalated, Some("r1/0"), false)
    );
    assert!(
        !store
            .journal("r1")
            .await
            .unwrap()
            .iter()
            .any(|e| e.event["type"] == "review_discarded"),
        "nothing discarded"
    );
    // The claim was given back, and the new item is open.
    let rec = store.workflow("r1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("escalated", None));
    assert_eq!(
        queue.inspect("r1/0").await.unwrap().status,
        ReviewStatus::Open
    );
}

/// A retry asked now of an item whose saga changes between the first reads and the claim:
/// another process ran the item's retry meanwhile, and the saga escalated again at another
/// step, to another item, while the escalations to this item stayed as they were read. The
/// retry reads the journal again once it holds the claim, writes nothing and gives the claim
/// back: the new item's compensation is not run on this item's account.
pub(crate) async fn a_retry_of_an_item_retried_meanwhile_to_another_item_writes_nothing(
    store: Arc<dyn Store>,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let build = |owner: &str| {
        Sagas::builder(faulty.clone())
            .define(saga(
                "t",
                vec![
                    undoable("a", &log, Act::Ok, Act::FailFirst(1, "400 bad")),
                    undoable("b", &log, Act::Ok, Act::FailFirst(1, "400 bad")),
                    step("c", &log, Act::Fail("HTTP 503")),
                ],
            ))
            .owner(owner)
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let run = a.run("t", "s1", json!(1)).await.unwrap();
    assert_eq!(
        (run.state, run.review.as_deref()),
        (SagaState::Escalated, Some("s1/1"))
    );
    log.take();
    // Between b's first reads and its claim: a person asks for the retry and a's recovery runs
    // it; b's compensation succeeds, a's fails, and the saga is escalated to item s1/0.
    let (other, queue) = (
        a.clone(),
        palisade_durable::ReviewQueue::new(faulty.clone()),
    );
    *faulty.before_claim.0.lock().unwrap() = Some(Box::pin(async move {
        queue.request_retry("s1/1").await.unwrap();
        let r = other.recover().await.unwrap();
        assert_eq!(r.resumed.len(), 1, "{r:?}");
    }));
    let err = b.retry_review("s1/1").await.unwrap_err();
    assert!(
        faulty.before_claim.0.lock().unwrap().is_none(),
        "a's retry ran"
    );
    assert!(
        matches!(
            &err,
            SagaError::WrongState { what: "saga", state, .. }
                if state == r#"escalated at review item "s1/0""#
        ),
        "{err:?}"
    );
    let undone = log.take();
    assert_eq!(
        undone.iter().filter(|l| l.starts_with("undo a")).count(),
        1,
        "a's compensation ran once, in a's retry: {undone:?}"
    );
    let journal = store.journal("s1").await.unwrap();
    let retried = journal
        .iter()
        .filter(|e| e.event["type"] == "review_retried")
        .count();
    assert_eq!(retried, 1, "a's retry alone");
    let info = b.inspect("s1").await.unwrap();
    assert_eq!(
        (info.state, info.review.as_deref()),
        (SagaState::Escalated, Some("s1/0"))
    );
    let rec = store.workflow("s1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("escalated", None));
}

/// A discard of an item whose saga was retried meanwhile and escalated again *to the same
/// item* (the same compensation failed again, with a new error): between the discard's first
/// read and its claim, the item the person read went stale. As for a retry (which is "for the
/// escalation its item was read at"), the discard writes nothing and gives the claim back; it
/// must not abandon the saga on the strength of the older escalation, nor write the stale item
/// (one escalation, one error) over the newer one (two, two).
pub(crate) async fn a_discard_of_an_item_escalated_again_meanwhile_writes_nothing(
    store: Arc<dyn Store>,
) {
    let (_log, faulty, sagas, queue) = escalated_once(store.clone(), "d1").await;
    // Between the discard's first read and its claim: another process retries the item; a's
    // compensation fails again and the saga is escalated again, to the same item.
    let other = sagas.clone();
    *faulty.before_claim.0.lock().unwrap() = Some(Box::pin(async move {
        let info = other.retry_review("d1/0").await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
    }));
    let err = queue.discard("d1/0", "refunded by hand").await.unwrap_err();
    assert!(
        faulty.before_claim.0.lock().unwrap().is_none(),
        "the retry ran"
    );
    assert_eq!(
        err.to_string(),
        r#"saga "d1" is escalated at review item "d1/0"; a discard is for the escalation its item was read at, and the saga changed since: read the item again"#
    );
    let info = sagas.inspect("d1").await.unwrap();
    assert_eq!(
        (info.state, info.discarded),
        (SagaState::Escalated, false),
        "nothing discarded"
    );
    // The item says what the journal says: two escalations, two errors, open.
    let item = queue.inspect("d1/0").await.unwrap();
    assert_eq!(
        (item.status, item.escalations, item.errors.len()),
        (ReviewStatus::Open, 2, 2)
    );
    // The claim was given back: once the lease the queue held has ended (a release keeps
    // the releasing owner off for that long), a discard of the item as it is now goes through.
    let rec = store.workflow("d1").await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.owner), ("escalated", None));
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    let item = queue.discard("d1/0", "refunded by hand").await.unwrap();
    assert_eq!(
        (item.status, item.escalations, item.errors.len()),
        (ReviewStatus::Discarded, 2, 2)
    );
    assert_eq!(sagas.inspect("d1").await.unwrap().state, SagaState::Failed);
}

/// A request for a retry of an item whose saga another process retried meanwhile, and
/// escalated again *to the same item* (the same compensation failed again, with a new error):
/// between the request's read of the item and its write, the item went stale. The request
/// must not write the item as it read it (one escalation, one error, retry requested) over
/// the newer one (two, two, open): every recovery then skipped the request (its escalation
/// count disagreed with the journal), a retry of the item was refused, and only a discard
/// ended it. It writes nothing and says the item changed; asked again, it stands, and the next
/// recovery runs it.
pub(crate) async fn a_retry_request_of_an_item_escalated_again_meanwhile_writes_nothing(
    store: Arc<dyn Store>,
) {
    let (log, faulty, sagas, queue) = escalated_once(store, "e1").await;
    let undone = |log: &Calls| {
        log.take()
            .iter()
            .filter(|l| l.starts_with("undo a"))
            .count()
    };
    assert_eq!(undone(&log), 1);
    // Between the request's read of the item and its write: another process retries the item;
    // a's compensation fails again and the saga is escalated again, to the same item.
    let other = sagas.clone();
    *faulty.after_review_get.0.lock().unwrap() = Some(Box::pin(async move {
        let info = other.retry_review("e1/0").await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
    }));
    let asked = queue.request_retry("e1/0").await;
    assert!(
        faulty.after_review_get.0.lock().unwrap().is_none(),
        "the retry ran"
    );
    assert_eq!(undone(&log), 1, "the other process's retry");
    // The item says what the journal says: two escalations, two errors, open.
    let item = queue.inspect("e1/0").await.unwrap();
    assert_eq!(
        (item.status, item.escalations, item.errors.len()),
        (ReviewStatus::Open, 2, 2),
        "the request wrote the item it read over the newer one: {asked:?}"
    );
    let err = asked.unwrap_err();
    assert!(
        matches!(
            &err,
            SagaError::WrongState {
                what: "review item",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"review item "e1/0" is open at escalation 2; it changed while the retry was being requested (a request is for the escalation its item was read at): read it again"#
    );
    // Asked again, the request stands, and the next recovery runs it (once).
    let item = queue.request_retry("e1/0").await.unwrap();
    assert_eq!(
        (item.status, item.escalations),
        (ReviewStatus::RetryRequested, 2)
    );
    let r = sagas.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        r.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("e1", SagaState::Escalated)]
    );
    assert_eq!(undone(&log), 1, "the requested retry ran");
    let item = queue.inspect("e1/0").await.unwrap();
    assert_eq!(
        (item.status, item.escalations, item.errors.len()),
        (ReviewStatus::Open, 3, 3)
    );
}

/// An item closed because its saga ended, by a caller that read it before another process's
/// discard wrote its note into it: a request for a retry (the queue closes the item as the
/// journal says, `close_after_the_saga`), a discard (the same), a retry asked now (the
/// engine's `close_settled`). Each read the item open, then the journal, which the discard
/// had ended, and wrote the item as it read it, closed, over the discarded one: the person's
/// note was gone from the item. Each now writes only over the item it read, and finds it
/// closed.
pub(crate) async fn an_item_closed_after_its_saga_ended_keeps_the_discard_s_note(
    store: Arc<dyn Store>,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let sagas = Sagas::builder(faulty.clone())
        .define(undo_of_a_fails(&log))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    let mut closed = Vec::new();
    for (saga, by) in [("n1", "request"), ("n2", "discard"), ("n3", "retry")] {
        let run = sagas.run("t", saga, json!(1)).await.unwrap();
        assert_eq!(run.state, SagaState::Escalated);
        let item = format!("{saga}/0");
        // Between the caller's read of the item and its write: a person discards the item
        // in another process, with a note.
        let (other, id) = (
            palisade_durable::ReviewQueue::new(faulty.clone()),
            item.clone(),
        );
        *faulty.after_review_get.0.lock().unwrap() = Some(Box::pin(async move {
            let item = other.discard(&id, "refunded by hand").await.unwrap();
            assert_eq!(item.note.as_deref(), Some("refunded by hand"));
        }));
        let refused = match by {
            "request" => queue.request_retry(&item).await.map(drop),
            "discard" => queue.discard(&item, "no, by me").await.map(drop),
            _ => {
                let info = sagas.retry_review(&item).await.unwrap();
                assert_eq!(info.state, SagaState::Failed);
                Err(SagaError::NoReviewItem("none: the saga is returned".into()))
            }
        };
        assert!(
            faulty.after_review_get.0.lock().unwrap().is_none(),
            "{by}: the discard ran"
        );
        let err = refused.unwrap_err();
        assert!(
            matches!(&err, SagaError::WrongState { what: "saga", state, .. } if state == "failed")
                || by == "retry",
            "{by}: {err:?}"
        );
        let stored = queue.inspect(&item).await.unwrap();
        closed.push((by, stored.status, stored.note));
        assert_eq!(sagas.inspect(saga).await.unwrap().state, SagaState::Failed);
    }
    let note = Some("refunded by hand".to_owned());
    assert_eq!(
        closed,
        [
            ("request", ReviewStatus::Discarded, note.clone()),
            ("discard", ReviewStatus::Discarded, note.clone()),
            ("retry", ReviewStatus::Discarded, note),
        ]
    );
    let undone = log.take();
    assert_eq!(
        undone.iter().filter(|l| l.starts_with("undo a")).count(),
        3,
        "a's compensation ran once per saga, before its escalation: {undone:?}"
    );
}

/// A discard whose saga is ended (its entry journaled) but whose item is not yet written,
/// when another person's retry request comes in between: the request reads the item open and
/// the journal ended, and closes the item as the journal says (discarded), without a note,
/// which it does not know. The discard's write then finds the item changed, reads it again,
/// closed, and must still write its note into it: closed already is not enough when the note
/// is not there (it was written only when the closed item held the same note already, the
/// opposite, and the note was lost).
pub(crate) async fn a_discard_writes_its_note_into_an_item_another_process_closed_meanwhile(
    store: Arc<dyn Store>,
) {
    let (_log, faulty, sagas, queue) = escalated_once(store, "m1").await;
    // Between the discard's journal entry and its write of the item: another person's
    // request, refused, closes the item as the journal says.
    let (asked, asker) = (
        Arc::new(Mutex::new(None)),
        palisade_durable::ReviewQueue::new(faulty.clone()),
    );
    let answer = asked.clone();
    *faulty.before_review_put_if.0.lock().unwrap() = Some(Box::pin(async move {
        *answer.lock().unwrap() = Some(asker.request_retry("m1/0").await);
    }));
    let item = queue.discard("m1/0", "refunded by hand").await.unwrap();
    let asked = asked.lock().unwrap().take().expect("the request was made");
    assert!(
        matches!(&asked, Err(SagaError::WrongState { what: "saga", state, .. }) if state == "failed"),
        "{asked:?}"
    );
    let stored = queue.inspect("m1/0").await.unwrap();
    assert_eq!(
        (stored.status, stored.note.as_deref()),
        (ReviewStatus::Discarded, Some("refunded by hand")),
        "the discard's note was lost"
    );
    assert_eq!(item.note, stored.note);
    assert_eq!(sagas.inspect("m1").await.unwrap().state, SagaState::Failed);
}

/// Recovery escalates again a saga whose escalation was not journaled (the store failed the
/// entry after the item was written), and a person asks for the item's retry while it does:
/// between recovery's read of the item (open) and its write, the request is written. Recovery
/// wrote the item as open over it: the request the person was told was taken was gone, and
/// nothing ran. The escalation now writes only over the item it read; it reads the request
/// and keeps it, and the same recovery runs it.
pub(crate) async fn a_retry_requested_while_recovery_escalates_again_is_kept(
    store: Arc<dyn Store>,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let sagas = Sagas::builder(faulty.clone())
        .define(definition(&log, Act::FailFirst(1, "400 bad")))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    *faulty.fail_append.lock().unwrap() = Some("escalated");
    assert!(sagas.run("t", "k1", json!(1)).await.is_err());
    assert_eq!(
        sagas.inspect("k1").await.unwrap().state,
        SagaState::Compensating
    );
    let item = queue.inspect("k1/1").await.unwrap();
    assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 1));
    log.take();
    // Between recovery's read of the item and its write: the person's request.
    let (requested, asker) = (
        Arc::new(Mutex::new(None)),
        palisade_durable::ReviewQueue::new(faulty.clone()),
    );
    let answer = requested.clone();
    *faulty.after_review_get.0.lock().unwrap() = Some(Box::pin(async move {
        *answer.lock().unwrap() = Some(asker.request_retry("k1/1").await.map(|i| i.status));
    }));
    let r = sagas.recover().await.unwrap();
    assert!(
        faulty.after_review_get.0.lock().unwrap().is_none(),
        "the request was made"
    );
    let requested = requested.lock().unwrap().take().unwrap();
    assert_eq!(requested.unwrap(), ReviewStatus::RetryRequested);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let undone = log.take();
    assert_eq!(
        (
            sagas.inspect("k1").await.unwrap().state,
            queue.inspect("k1/1").await.unwrap().status,
            undone.iter().filter(|l| l.starts_with("undo b")).count(),
        ),
        (SagaState::Compensated, ReviewStatus::Retried, 1),
        "the request taken was run: {undone:?}"
    );
}

/// A process stalls (a long pause, a partition) after its compensation failed and before it
/// writes the review item; its lease runs out, another process takes the saga over, escalates
/// it, and a person's retry fails again: the item is at its second escalation. The stalled
/// process then wrote the item as it saw the saga (first escalation, one error) over the newer
/// one, before its journal entry was refused: item and journal disagreed, and the item could
/// not be retried. The write is fenced by the claim now: the stalled process finds it lost the
/// saga, writes nothing, and stops with `LeaseLost`.
pub(crate) async fn a_stalled_process_does_not_write_an_older_escalation_over_a_newer_one(
    store: Arc<dyn Store>,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store.clone()));
    let build = |owner: &str| {
        Sagas::builder(faulty.clone())
            .define(undo_of_a_fails(&log))
            .owner(owner)
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    // a stalls between its read of the item (there is none yet) and its write; meanwhile its
    // lease runs out and b takes the saga over, escalates it, and retries it for a person.
    let other = b.clone();
    *faulty.after_review_get.0.lock().unwrap() = Some(Box::pin(async move {
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        let r = other.recover().await.unwrap();
        assert_eq!(
            r.resumed.iter().map(|i| i.state).collect::<Vec<_>>(),
            [SagaState::Escalated]
        );
        let info = other.retry_review("z1/0").await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
    }));
    let stalled = a.run("t", "z1", json!(1)).await;
    assert!(
        faulty.after_review_get.0.lock().unwrap().is_none(),
        "b took over"
    );
    let undone = |log: &Calls| {
        log.take()
            .iter()
            .filter(|l| l.starts_with("undo a"))
            .count()
    };
    assert_eq!(undone(&log), 2, "a's, then b's retry");
    // The item says what the journal says: two escalations, two errors.
    let item = queue.inspect("z1/0").await.unwrap();
    let info = b.inspect("z1").await.unwrap();
    assert_eq!(info.steps[0].compensation_errors.len(), 2);
    assert_eq!(
        (item.status, item.escalations, item.errors.len()),
        (ReviewStatus::Open, 2, 2),
        "the stalled process wrote its escalation over the newer one: {stalled:?}"
    );
    assert!(
        matches!(&stalled, Err(SagaError::LeaseLost(id)) if id == "z1"),
        "{stalled:?}"
    );
    // The item can be retried as it stands.
    queue.request_retry("z1/0").await.unwrap();
    let r = b.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.resumed.len(), 1, "{r:?}");
    assert_eq!(undone(&log), 1);
    assert_eq!(queue.inspect("z1/0").await.unwrap().escalations, 3);
}

/// Saga "t": step `a` done and not undoable (its compensation answers 400), then step `b`
/// failing (503): every run of it ends escalated for a person, at item `<id>/0`.
fn undo_of_a_fails(log: &Arc<Calls>) -> SagaDefinition {
    saga(
        "t",
        vec![
            undoable("a", log, Act::Ok, Act::Fail("400 bad")),
            step("b", log, Act::Fail("HTTP 503")),
        ],
    )
}

/// [`undo_of_a_fails`] run once as `id` over a [`Faulty`] `store`: the call log, the store,
/// the engine and a review queue, with the saga escalated at item `<id>/0` (one escalation,
/// one error).
async fn escalated_once(
    store: Arc<dyn Store>,
    id: &str,
) -> (
    Arc<Calls>,
    Arc<Faulty>,
    Sagas,
    palisade_durable::ReviewQueue,
) {
    let log = Arc::new(Calls::default());
    let faulty = Arc::new(Faulty::new(store));
    let sagas = Sagas::builder(faulty.clone())
        .define(undo_of_a_fails(&log))
        .build()
        .unwrap();
    let queue = palisade_durable::ReviewQueue::new(faulty.clone());
    let run = sagas.run("t", id, json!(1)).await.unwrap();
    let item = format!("{id}/0");
    assert_eq!(
        (run.state, run.review.as_deref()),
        (SagaState::Escalated, Some(item.as_str()))
    );
    let read = queue.inspect(&item).await.unwrap();
    assert_eq!((read.escalations, read.errors.len()), (1, 1));
    (log, faulty, sagas, queue)
}
