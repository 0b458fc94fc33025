//! The in-memory store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Append, BoxFuture, CheckpointMeta, Claim, JournalEntry, Purge, Store, StoredCheckpoint,
    StoredReview, WorkflowRecord, checkpoint_conflict, next_checkpoint_version, same_instance,
};
use crate::error::StoreError;

/// A store in memory, for tests and examples: everything is lost with the process.
///
/// Clones share the same data, so a test can "restart" an engine on a clone of the store it
/// crashed. Operations take a short mutex and never wait on I/O.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    order: Vec<String>,
    workflows: HashMap<String, (WorkflowRecord, Vec<JournalEntry>)>,
    /// Who gave each released workflow back ([`Store::release`]), until it is claimed or
    /// appended to.
    released_by: HashMap<String, String>,
    /// Which instance of its owner holds each workflow's claim, and when it was last renewed
    /// (see [`Store::claim`]); meaningless while nobody holds it.
    held: HashMap<String, Held>,
    reviews: BTreeMap<String, (u64, StoredReview)>,
    review_seq: u64,
    checkpoints: HashMap<String, BTreeMap<u64, StoredCheckpoint>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the store would, so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The instance holding a claim, and when the claim was last renewed (`None`: unknown, after
/// a [`Store::renew`] that does not say).
#[derive(Debug, Default)]
struct Held {
    instance: String,
    renewed: Option<u64>,
}

impl Held {
    fn new(instance: &str, renewed: u64) -> Self {
        Held {
            instance: instance.to_owned(),
            renewed: Some(renewed),
        }
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl Inner {
    fn append(&mut self, a: Append) -> Result<(), StoreError> {
        let entry = JournalEntry {
            seq: a.seq,
            at_ms: a.at_ms,
            event: a.event,
        };
        let owner = (!a.release).then(|| a.owner.clone());
        if a.seq == 0 {
            if self.workflows.contains_key(&a.id) {
                return Err(StoreError::Conflict(format!(
                    "workflow {} exists already",
                    a.id
                )));
            }
            let rec = WorkflowRecord {
                id: a.id.clone(),
                kind: a.kind,
                name: a.name,
                state: a.state,
                owner,
                lease_until_ms: a.lease_until_ms,
                created_ms: a.at_ms,
                updated_ms: a.at_ms,
                entries: 1,
            };
            self.order.push(a.id.clone());
            self.held
                .insert(a.id.clone(), Held::new(&a.instance, a.at_ms));
            self.workflows.insert(a.id, (rec, vec![entry]));
            return Ok(());
        }
        let Some((rec, journal)) = self.workflows.get_mut(&a.id) else {
            return Err(StoreError::Conflict(format!(
                "workflow {} does not exist",
                a.id
            )));
        };
        let held = self.held.entry(a.id.clone()).or_default();
        check_append(rec, &held.instance, &a.owner, &a.instance, a.seq)?;
        *held = Held::new(&a.instance, a.at_ms);
        self.released_by.remove(&a.id);
        journal.push(entry);
        rec.state = a.state;
        rec.owner = owner;
        rec.lease_until_ms = a.lease_until_ms;
        rec.updated_ms = a.at_ms;
        rec.entries += 1;
        Ok(())
    }
}

impl Inner {
    /// [`Store::renew_instance`]; with `now_ms` `None` ([`Store::renew`]), the renewal time
    /// becomes unknown.
    fn renew(
        &mut self,
        id: &str,
        owner: &str,
        instance: &str,
        now_ms: Option<u64>,
        lease_until_ms: u64,
    ) -> Result<(), StoreError> {
        let Some((rec, _)) = self.workflows.get_mut(id) else {
            return Err(lost(id, owner));
        };
        let held = self.held.entry(id.to_owned()).or_default();
        if rec.owner.as_deref() != Some(owner) || !same_instance(instance, &held.instance) {
            return Err(lost(id, owner));
        }
        rec.lease_until_ms = rec.lease_until_ms.max(lease_until_ms);
        held.renewed = now_ms.map(|now| held.renewed.map_or(now, |r| r.max(now)));
        Ok(())
    }
}

/// What [`Store::renew`] reports when `owner` does not hold workflow `id`.
pub(crate) fn lost(id: &str, owner: &str) -> StoreError {
    StoreError::Conflict(format!(
        "workflow {id} is not claimed by {owner}: it was taken over, released, or never existed"
    ))
}

/// The checks every store makes before appending entry `seq` for instance `instance` of
/// `owner`, to workflow `rec` whose claim instance `held` of its owner holds.
pub(crate) fn check_append(
    rec: &WorkflowRecord,
    held: &str,
    owner: &str,
    instance: &str,
    seq: u64,
) -> Result<(), StoreError> {
    if rec.owner.as_deref() != Some(owner) {
        return Err(StoreError::Conflict(format!(
            "workflow {} is claimed by {}, not {owner}",
            rec.id,
            rec.owner.as_deref().unwrap_or("nobody")
        )));
    }
    if !same_instance(instance, held) {
        return Err(StoreError::Conflict(format!(
            "workflow {} is claimed by another engine instance of {owner} ({held:?}, not \
             {instance:?}): it was taken over",
            rec.id
        )));
    }
    if seq < rec.entries {
        return Err(StoreError::Conflict(format!(
            "workflow {}: entry {seq} is already written ({} entries): another engine under the \
             owner name {owner} wrote to it (one that claimed with no instance)",
            rec.id, rec.entries
        )));
    }
    if seq > rec.entries {
        return Err(StoreError::Conflict(format!(
            "workflow {}: entry {seq} would leave a gap after entry {}",
            rec.id,
            rec.entries.wrapping_sub(1)
        )));
    }
    Ok(())
}

impl Store for MemoryStore {
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        ready(self.lock().append(append))
    }

    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        let inner = self.lock();
        ready(Ok(inner
            .workflows
            .get(id)
            .map(|(_, j)| j.clone())
            .unwrap_or_default()))
    }

    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
        let inner = self.lock();
        ready(Ok(inner
            .order
            .iter()
            .filter_map(|id| inner.workflows.get(id))
            .map(|(r, _)| r)
            .filter(|r| kind.is_none_or(|k| k == r.kind))
            .cloned()
            .collect()))
    }

    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
        ready(Ok(self.lock().workflows.get(id).map(|(r, _)| r.clone())))
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut inner = self.lock();
        let Inner {
            order,
            workflows,
            released_by,
            held,
            ..
        } = &mut *inner;
        let mut got = Vec::new();
        for id in order.iter() {
            if got.len() >= claim.limit {
                break;
            }
            let h = held.entry(id.clone()).or_default();
            if let Some((rec, _)) = workflows.get_mut(id)
                && claim.may_take(
                    rec,
                    released_by.get(id).map(String::as_str),
                    &h.instance,
                    h.renewed,
                )
            {
                rec.owner = Some(claim.owner.clone());
                rec.lease_until_ms = claim.lease_until_ms;
                *h = Held::new(&claim.instance, claim.now_ms);
                released_by.remove(id);
                got.push(id.clone());
            }
        }
        ready(Ok(got))
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.release_instance(id, owner, "")
    }

    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        let Inner {
            workflows,
            released_by,
            held,
            ..
        } = &mut *inner;
        let held = held.get(id).map_or("", |h| h.instance.as_str());
        ready(match workflows.get_mut(id) {
            Some((rec, _))
                if rec.owner.as_deref() == Some(owner) && same_instance(instance, held) =>
            {
                rec.owner = None;
                released_by.insert(id.to_owned(), owner.to_owned());
                Ok(())
            }
            _ => Err(lost(id, owner)),
        })
    }

    fn purge(&self, purge: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let Inner {
            order,
            workflows,
            released_by,
            held,
            reviews,
            ..
        } = &mut *inner;
        let mut gone = Vec::new();
        for id in order.iter() {
            if gone.len() >= purge.limit {
                break;
            }
            if workflows
                .get(id)
                .is_some_and(|(rec, _)| purge.may_delete(rec))
            {
                gone.push(id.clone());
            }
        }
        for id in &gone {
            workflows.remove(id);
            released_by.remove(id);
            held.remove(id);
        }
        if !gone.is_empty() {
            order.retain(|id| workflows.contains_key(id));
            // Their review items go with them (see `Store::purge`).
            let gone: HashSet<&String> = gone.iter().collect();
            reviews.retain(|_, (_, r)| !gone.contains(&r.workflow_id));
        }
        ready(Ok(gone.len() as u64))
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.lock().renew(id, owner, "", None, lease_until_ms))
    }

    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(
            self.lock()
                .renew(id, owner, instance, Some(now_ms), lease_until_ms),
        )
    }

    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut inner = self.lock();
        let n = match inner.reviews.get(&item.id) {
            Some((n, _)) => *n,
            None => {
                inner.review_seq += 1;
                inner.review_seq
            }
        };
        inner.reviews.insert(item.id.clone(), (n, item));
        ready(Ok(()))
    }

    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut inner = self.lock();
        let n = match (inner.reviews.get(&item.id), expected) {
            (Some((n, stored)), Some(expected)) if *stored == expected => *n,
            (None, None) => {
                inner.review_seq += 1;
                inner.review_seq
            }
            _ => return ready(Ok(false)),
        };
        inner.reviews.insert(item.id.clone(), (n, item));
        ready(Ok(true))
    }

    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
        ready(Ok(self.lock().reviews.get(id).map(|(_, r)| r.clone())))
    }

    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
        let inner = self.lock();
        let mut all: Vec<_> = inner.reviews.values().cloned().collect();
        all.sort_by_key(|(n, _)| *n);
        ready(Ok(all.into_iter().map(|(_, r)| r).collect()))
    }

    fn checkpoint_put(
        &self,
        checkpoint: StoredCheckpoint,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut inner = self.lock();
        let versions = inner
            .checkpoints
            .entry(checkpoint.agent.clone())
            .or_default();
        if let Some(newest) = versions.range(checkpoint.version..).next_back() {
            return ready(Err(checkpoint_conflict(
                &checkpoint.agent,
                checkpoint.version,
                *newest.0,
            )));
        }
        versions.insert(checkpoint.version, checkpoint);
        ready(Ok(()))
    }

    fn checkpoint_put_next(
        &self,
        mut checkpoint: StoredCheckpoint,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let versions = inner
            .checkpoints
            .entry(checkpoint.agent.clone())
            .or_default();
        let newest = versions.keys().next_back().map_or(0, |v| *v);
        let version = match next_checkpoint_version(&checkpoint.agent, newest, u64::MAX) {
            Ok(v) => v,
            Err(e) => return ready(Err(e)),
        };
        checkpoint.version = version;
        versions.insert(version, checkpoint);
        ready(Ok(version))
    }

    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
        ready(Ok(self
            .lock()
            .checkpoints
            .get(agent)
            .and_then(|v| v.get(&version))
            .cloned()))
    }

    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
        ready(Ok(self
            .lock()
            .checkpoints
            .get(agent)
            .map(|v| {
                v.values()
                    .rev()
                    .map(|c| CheckpointMeta {
                        version: c.version,
                        at_ms: c.at_ms,
                        checksum: c.checksum.clone(),
                        len: c.data.len() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default()))
    }

    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut inner = self.lock();
        let Some(v) = inner.checkpoints.get_mut(agent) else {
            return ready(Ok(0));
        };
        let drop_n = v.len().saturating_sub(keep);
        let old: Vec<u64> = v.keys().take(drop_n).copied().collect();
        for k in &old {
            v.remove(k);
        }
        ready(Ok(old.len() as u64))
    }
}

impl MemoryStore {
    /// Overwrites the data of a stored checkpoint without updating its checksum: a test hook
    /// that simulates corruption on disk.
    pub fn corrupt_checkpoint(&self, agent: &str, version: u64, data: Vec<u8>) -> bool {
        match self
            .lock()
            .checkpoints
            .get_mut(agent)
            .and_then(|v| v.get_mut(&version))
        {
            Some(c) => {
                c.data = data;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod append_checks {
    use super::*;

    /// A journal entry written twice says another engine under the same name wrote it; one
    /// past the end says it would leave a gap.
    #[test]
    fn an_append_out_of_turn_says_why() {
        let rec = WorkflowRecord {
            id: "s1".to_owned(),
            kind: "saga".to_owned(),
            name: "pipeline".to_owned(),
            state: "running".to_owned(),
            owner: Some("local".to_owned()),
            lease_until_ms: 0,
            created_ms: 0,
            updated_ms: 0,
            entries: 3,
        };
        assert!(check_append(&rec, "", "local", "", 3).is_ok());
        let twice = check_append(&rec, "", "local", "", 2)
            .unwrap_err()
            .to_string();
        assert!(
            twice.contains("entry 2 is already written (3 entries)"),
            "{twice}"
        );
        assert!(
            twice.contains("another engine under the owner name local"),
            "{twice}"
        );
        let gap = check_append(&rec, "", "local", "", 5)
            .unwrap_err()
            .to_string();
        assert!(
            gap.contains("entry 5 would leave a gap after entry 2"),
            "{gap}"
        );
        let theirs = check_append(&rec, "", "other", "", 3)
            .unwrap_err()
            .to_string();
        assert!(theirs.contains("claimed by local, not other"), "{theirs}");
        // Another instance of the same owner holds it: refused; the empty instance matches any.
        let taken = check_append(&rec, "i1", "local", "i2", 3)
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains("claimed by another engine instance of local (\"i1\", not \"i2\")"),
            "{taken}"
        );
        assert!(check_append(&rec, "i1", "local", "i1", 3).is_ok());
        assert!(check_append(&rec, "i1", "local", "", 3).is_ok());
    }
}
