//! What the edge tests share: a memory store with faults to inject.
#![allow(dead_code)] // Each test binary uses part of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use palisade_durable::error::StoreError;
use palisade_durable::store::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, MemoryStore, Purge, Store,
    StoredCheckpoint, StoredReview, WorkflowRecord,
};

/// What a hook does to the store, given the store it wraps (as another process would).
pub(crate) type Hook = Box<dyn Fn(MemoryStore) -> BoxFuture<'static, ()> + Send + Sync>;

/// A memory store with faults: renewals that fail (the heartbeat cannot reach the store), a
/// review queue that cannot be read, and a hook run after each listing of an agent's
/// checkpoint versions, before it is returned.
#[derive(Default)]
pub(crate) struct Edgy {
    pub(crate) inner: MemoryStore,
    /// Every renewal fails while set.
    pub(crate) partitioned: AtomicBool,
    /// The next this many renewals fail.
    pub(crate) fail_renewals: AtomicU32,
    /// Renewals asked, failed or not.
    pub(crate) renewals: AtomicU32,
    /// Runs after each listing of checkpoint versions.
    pub(crate) after_versions: Mutex<Option<Hook>>,
    /// Listings of checkpoint versions.
    pub(crate) listings: AtomicU32,
    /// Every listing of the review queue fails while set.
    pub(crate) fail_review_list: AtomicBool,
    /// Each append is acknowledged this many ms after it was written (a busy database file, a
    /// slow network): the lease it sets runs from when it was sent.
    pub(crate) slow_appends_ms: AtomicU32,
    /// Each renewal is acknowledged this many ms after it took effect.
    pub(crate) slow_renewals_ms: AtomicU32,
    /// The next journal read takes this many ms (then none).
    pub(crate) slow_journal_ms: AtomicU32,
    /// Once that slow journal read is done, the instance of the latest renewal is cut off.
    pub(crate) cut_after_journal: AtomicBool,
    /// The engine instance cut off from the store: its claims, renewals and releases fail.
    pub(crate) cut: Mutex<Option<String>>,
    /// The instance of the latest renewal.
    pub(crate) last_instance: Mutex<String>,
    /// Each renewal of an instance: when it was sent, and whether it succeeded.
    pub(crate) renewals_sent: Mutex<Vec<(tokio::time::Instant, bool)>>,
}

impl Edgy {
    /// Whether `instance` is cut off from the store.
    fn is_cut(&self, instance: &str) -> bool {
        self.cut.lock().unwrap().as_deref() == Some(instance)
    }
}

fn network_down<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async { Err(StoreError::backend("network down")) })
}

impl std::fmt::Debug for Edgy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Edgy")
    }
}

impl Store for Edgy {
    fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        let slow = self.slow_appends_ms.load(Ordering::SeqCst);
        if slow == 0 {
            return self.inner.append(a);
        }
        Box::pin(async move {
            let r = self.inner.append(a).await;
            tokio::time::sleep(std::time::Duration::from_millis(slow.into())).await;
            r
        })
    }
    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let slow = self.slow_journal_ms.swap(0, Ordering::SeqCst);
        if slow == 0 {
            return self.inner.journal(id);
        }
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(slow.into())).await;
            if self.cut_after_journal.swap(false, Ordering::SeqCst) {
                *self.cut.lock().unwrap() = Some(self.last_instance.lock().unwrap().clone());
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
        if self.is_cut(&c.instance) {
            return network_down();
        }
        self.inner.claim(c)
    }
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_renewals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing || self.partitioned.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::backend("network down")) });
        }
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
        self.renewals.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_renewals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let sent = tokio::time::Instant::now();
        *self.last_instance.lock().unwrap() = instance.to_owned();
        if failing || self.partitioned.load(Ordering::SeqCst) || self.is_cut(instance) {
            self.renewals_sent.lock().unwrap().push((sent, false));
            return network_down();
        }
        let slow = self.slow_renewals_ms.load(Ordering::SeqCst);
        Box::pin(async move {
            let r = self
                .inner
                .renew_instance(id, owner, instance, now_ms, until)
                .await;
            self.renewals_sent.lock().unwrap().push((sent, r.is_ok()));
            tokio::time::sleep(std::time::Duration::from_millis(slow.into())).await;
            r
        })
    }
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        // A release that names no instance, while one is cut off, is taken to be that one's.
        if self.cut.lock().unwrap().is_some() {
            return network_down();
        }
        self.inner.release(id, owner)
    }
    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.is_cut(instance) {
            return network_down();
        }
        self.inner.release_instance(id, owner, instance)
    }
    fn purge(&self, p: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge(p)
    }
    fn review_put(&self, r: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.review_put(r)
    }
    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        r: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.review_put_if(expected, r)
    }
    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        self.inner.review_get(id)
    }
    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        if self.fail_review_list.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::backend("injected: connection reset")) });
        }
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
        Box::pin(async move {
            let listed = self.inner.checkpoint_versions(agent).await;
            self.listings.fetch_add(1, Ordering::SeqCst);
            let run = self
                .after_versions
                .lock()
                .unwrap()
                .as_ref()
                .map(|hook| hook(self.inner.clone()));
            if let Some(run) = run {
                run.await;
            }
            listed
        })
    }
    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.checkpoint_prune(agent, keep)
    }
}
