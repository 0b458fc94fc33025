//! For the tests of the review items' compare-and-set loops: a store whose
//! [`review_put_if`](Store::review_put_if) loses its first writes.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, MemoryStore, Purge, Store,
    StoredCheckpoint, StoredReview, WorkflowRecord,
};
use crate::error::StoreError;

/// A memory store whose `review_put_if` answers that the item changed (writing nothing) to
/// its first `losses` calls, as if another writer got there first each time, and then
/// compares and writes as the memory store does. Every other method is the memory store's.
#[derive(Debug, Default)]
pub(crate) struct Losing {
    inner: MemoryStore,
    /// Writes still to lose.
    losses: AtomicUsize,
    /// `review_put_if` calls, lost or not.
    asked: AtomicUsize,
}

impl Losing {
    /// Sets how many of the next `review_put_if` calls lose (`usize::MAX`: all of them).
    pub(crate) fn lose(&self, losses: usize) {
        self.losses.store(losses, Ordering::Relaxed);
    }

    /// How many times `review_put_if` was called.
    pub(crate) fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Store for Losing {
    fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.append(a)
    }
    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        self.inner.journal(id)
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
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.inner.claim(claim)
    }
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.renew(id, owner, lease_until_ms)
    }
    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner
            .renew_instance(id, owner, instance, now_ms, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, owner)
    }
    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release_instance(id, owner, instance)
    }
    fn purge(&self, purge: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge(purge)
    }
    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.review_put(item)
    }
    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let lost = self
            .losses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Box::pin(std::future::ready(Ok(false)));
        }
        self.inner.review_put_if(expected, item)
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
    fn checkpoint_put(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.checkpoint_put(cp)
    }
    fn checkpoint_put_next(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.checkpoint_put_next(cp)
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
