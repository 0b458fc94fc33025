//! Where journals, review items and checkpoints live: the [`Store`] trait and its
//! implementations.
//!
//! | store | for | durability |
//! |---|---|---|
//! | [`MemoryStore`] | tests, examples | none: gone with the process |
//! | [`SqliteStore`] (feature `sqlite`, default) | one machine; the embedded default, no server | a file on local disk, WAL mode, one transaction per append |
//! | `PostgresStore` (feature `postgres`) | several processes or machines sharing one journal | a PostgreSQL database |
//!
//! # Why one object-safe trait
//!
//! [`Store`] is object-safe: its methods return a boxed future ([`BoxFuture`]) so that an
//! engine, a checkpoint store and the command-line tool can all hold an `Arc<dyn Store>` chosen
//! at run time (from a config file or a URL) without making every type generic over the
//! backend. The box costs one allocation per store operation, which is noise next to the
//! `fsync` or the network round trip each operation already pays; the request path of
//! palisade's middleware never touches a store.
//!
//! # The model
//!
//! A *workflow* (a saga, a two-phase commit) has an id, a kind, a name, a state string, and a
//! journal: entries numbered `0, 1, 2, ...` that are only ever appended. [`Store::append`]
//! writes one entry and the workflow's new state in one transaction, and only for the process
//! that holds the workflow's *claim* (its owner): a second writer gets
//! [`StoreError::Conflict`] instead of interleaving its entries. A claim is a lease: it lasts
//! until `lease_until_ms`, each append renews it and so does [`Store::renew`] (the heartbeat
//! while a long step runs); [`Store::claim`] hands unowned or expired workflows (and a
//! restarted owner's own) to a process.
//!
//! # Owners and instances
//!
//! A claim names its holder twice: the *owner* (the name a process claims under, kept across
//! restarts) and the *instance* (a token each engine draws when it is built, new at every
//! start: [`Append::with_instance`], [`Claim::with_instance`]). Appends, renewals
//! ([`Store::renew_instance`]) and releases ([`Store::release_instance`]) must come from the
//! instance that holds the claim, so two live engines that share an owner name do not write
//! over each other. A claim of the same owner under another instance takes a workflow whose
//! lease still runs only once its holder visibly stopped its heartbeat (see [`Store::claim`]):
//! a restarted process resumes its own work after a fraction of a lease, and never takes the
//! work of a live engine that happens to have its name.
//!
//! The empty instance (what [`Append::new`], [`Claim::new`], [`Store::renew`] and
//! [`Store::release`] use) is the behaviour from before instances: it matches any instance of
//! its owner.
//!
//! A process that holds a claim it cannot use (the workflow's definition is not in its version
//! of the binary, during a rolling deploy) gives it back with [`Store::release`], so that a
//! process that can drive the workflow gets it at once. Finished workflows are never deleted
//! by the engines; [`Store::purge`] deletes them, with their journals and review items, when
//! the user asks
//! ([`Sagas::purge_finished`](crate::Sagas::purge_finished),
//! [`Coordinator::purge_finished`](crate::twopc::Coordinator::purge_finished)).
//!
//! # Stores of other crates
//!
//! [`Store::release`] and [`Store::purge`] came after the first release of this trait and have
//! default implementations, so that a store written against the earlier trait still compiles:
//! both fail with [`StoreError::Unsupported`] and change nothing. Recovery then keeps a claim
//! it cannot use, as it did before (the workflow waits until that process's next version, or
//! until it stops recovering for a lease); `purge_finished` reports the error. Implement both
//! to get the full behaviour; the crate's store test suite (`tests/suite`) states it.
//! [`Store::checkpoint_put_next`] came later too: its default implementation works over the
//! other checkpoint methods, retrying when concurrent saves for one agent collide; a store that
//! can allocate the version in the same transaction as the insert should implement it.
//! [`Store::renew_instance`] and [`Store::release_instance`] came next: their defaults call
//! [`Store::renew`] and [`Store::release`], ignoring the instance. Such a store fences claims
//! by owner name only, as before: two live engines under one name there still take each
//! other's work. [`Store::review_put_if`] came last: its default compares and writes in two
//! steps, so a review item another process writes in between can still be lost there, as
//! before.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
#[cfg(test)]
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[cfg(test)]
pub(crate) mod losing;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStore};

/// A time (ms since the Unix epoch), a sequence number or a version as the databases store
/// it, a signed 64-bit integer: one beyond `i64::MAX` (a lease of `u64::MAX`, which a
/// caller may ask for) is stored as `i64::MAX`, not wrapped to a negative number that would
/// make a claim expired at once or a time precede the epoch.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The other way: a stored integer read back as a `u64`; a negative one (never written by
/// this version) reads as 0.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn from_sql_int(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The version of `agent`'s next checkpoint, after `newest`, in a store that holds versions up
/// to `max`: a [`StoreError::Conflict`] if there is none (a version at the end of the range was
/// written by hand), never an overflow.
pub(crate) fn next_checkpoint_version(
    agent: &str,
    newest: u64,
    max: u64,
) -> Result<u64, StoreError> {
    newest.checked_add(1).filter(|v| *v <= max).ok_or_else(|| {
        StoreError::Conflict(format!(
            "checkpoint {agent} version {newest} is the last the store can hold"
        ))
    })
}

/// The [`StoreError::Conflict`] of a [`Store::checkpoint_put`] of `agent`'s `version` when
/// the store holds `newest`, that version or a newer one.
pub(crate) fn checkpoint_conflict(agent: &str, version: u64, newest: u64) -> StoreError {
    StoreError::Conflict(if newest == version {
        format!("checkpoint {agent} version {version} exists already")
    } else {
        format!("checkpoint {agent} has version {newest}, newer than the version {version} written")
    })
}

/// The future a [`Store`] method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One journal entry to write, with the workflow's state after it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Append {
    /// The workflow's id.
    pub id: String,
    /// The workflow's kind (`"saga"`, `"2pc"`); stored when `seq` is 0.
    pub kind: String,
    /// The workflow's name (a saga definition's name); stored when `seq` is 0.
    pub name: String,
    /// The entry's number: 0 creates the workflow, then one more than the last entry.
    pub seq: u64,
    /// When the entry was written, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The entry itself.
    pub event: serde_json::Value,
    /// The workflow's state after this entry.
    pub state: String,
    /// The process writing it; must hold the workflow's claim (or create it).
    pub owner: String,
    /// The claim is renewed until then (milliseconds since the Unix epoch). The SQL stores
    /// keep at most `i64::MAX`: a later time (`u64::MAX`) is stored as that, never wrapped.
    pub lease_until_ms: u64,
    /// Give up the claim with this entry (the workflow finished, or waits for a person).
    pub release: bool,
    /// The engine instance writing it, with `owner` (see *Owners and instances* in the
    /// [module docs](self)); empty (the default) matches any instance of `owner`. The claim
    /// is then held by this instance, renewed at `at_ms`.
    pub instance: String,
}

impl Append {
    /// An entry to append; the claim is kept (set [`Append::release`] to give it up).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: impl Into<String>,
        kind: impl Into<String>,
        name: impl Into<String>,
        seq: u64,
        at_ms: u64,
        event: serde_json::Value,
        state: impl Into<String>,
        owner: impl Into<String>,
        lease_until_ms: u64,
    ) -> Self {
        Append {
            id: id.into(),
            kind: kind.into(),
            name: name.into(),
            seq,
            at_ms,
            event,
            state: state.into(),
            owner: owner.into(),
            lease_until_ms,
            release: false,
            instance: String::new(),
        }
    }

    /// The same entry, giving up the claim or not.
    pub fn with_release(mut self, release: bool) -> Self {
        self.release = release;
        self
    }

    /// The same entry, written by engine instance `instance` of its owner.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }
}

/// One entry of a workflow's journal, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Its number, from 0.
    pub seq: u64,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: u64,
    /// The entry.
    pub event: serde_json::Value,
}

/// A workflow as the store knows it: the latest state and who holds its claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// Its id.
    pub id: String,
    /// `"saga"`, `"2pc"`, ...
    pub kind: String,
    /// The definition's name.
    pub name: String,
    /// The state after the latest entry.
    pub state: String,
    /// The process holding the claim, if any.
    pub owner: Option<String>,
    /// When the claim expires (ms since the Unix epoch; meaningless without an owner).
    pub lease_until_ms: u64,
    /// When the first entry was written.
    pub created_ms: u64,
    /// When the latest entry was written.
    pub updated_ms: u64,
    /// The number of entries.
    pub entries: u64,
}

/// A request to claim workflows: those of `kind` in one of `states` that nobody holds, whose
/// claim expired before `now_ms`, that `owner` itself holds under the same `instance`, or
/// under another instance that stopped renewing it (a restarted process takes its own work
/// back after a fraction of a lease); one that `owner` gave back ([`Store::release`]) only
/// once the lease it held has ended, unless it is another instance than the one that gave it
/// back (see [`Store::claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim {
    /// The workflow kind.
    pub kind: String,
    /// The states that may be claimed.
    pub states: Vec<String>,
    /// Who claims.
    pub owner: String,
    /// Now, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The claim lasts until then.
    pub lease_until_ms: u64,
    /// At most this many.
    pub limit: usize,
    /// Only this workflow, if set.
    pub only: Option<String>,
    /// The engine instance claiming, with `owner` (see *Owners and instances* in the
    /// [module docs](self)); empty (the default) matches any instance of `owner`.
    pub instance: String,
}

impl Claim {
    /// A claim of up to `limit` workflows of `kind` in `states`.
    pub fn new(
        kind: impl Into<String>,
        states: &[&str],
        owner: impl Into<String>,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Self {
        Claim {
            kind: kind.into(),
            states: states.iter().map(|s| s.to_string()).collect(),
            owner: owner.into(),
            now_ms,
            lease_until_ms,
            limit,
            only: None,
            instance: String::new(),
        }
    }

    /// The same claim, for workflow `id` only.
    pub fn only(mut self, id: impl Into<String>) -> Self {
        self.only = Some(id.into());
        self
    }

    /// The same claim, by engine instance `instance` of its owner.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// Whether this claim may take `rec`, which `released_by` gave back with
    /// [`Store::release`] (and nobody claimed or appended to since), and whose claim is held
    /// (or, given back, was last held) by instance `instance` of its owner, last renewed at
    /// `renewed_ms` (if known): see [`Store::claim`].
    pub(crate) fn may_take(
        &self,
        rec: &WorkflowRecord,
        released_by: Option<&str>,
        instance: &str,
        renewed_ms: Option<u64>,
    ) -> bool {
        let expired = rec.lease_until_ms < self.now_ms;
        rec.kind == self.kind
            && self.states.contains(&rec.state)
            && self.only.as_ref().is_none_or(|id| *id == rec.id)
            && match &rec.owner {
                None => {
                    released_by != Some(&*self.owner)
                        || expired
                        || other_instance(&self.instance, instance)
                }
                Some(o) if *o == self.owner => {
                    same_instance(&self.instance, instance)
                        || expired
                        || renewed_ms.is_some_and(|r| stale(r, rec.lease_until_ms, self.now_ms))
                }
                Some(_) => expired,
            }
    }
}

/// Whether instance `asked` (of a claim, an append, a renewal, a release) acts for the
/// holder's instance `held`, of the same owner: the same one, or the empty instance, which
/// matches any (the behaviour from before instances).
pub(crate) fn same_instance(asked: &str, held: &str) -> bool {
    asked.is_empty() || asked == held
}

/// Whether instance `asked` of an owner (claiming) is known to be another engine than instance
/// `held` of the same owner (which held the claim): both named, and not the same. The empty
/// instance is any instance, so it is never known to be another.
pub(crate) fn other_instance(asked: &str, held: &str) -> bool {
    !asked.is_empty() && !held.is_empty() && asked != held
}

/// Whether a claim renewed at `renewed_ms` until `lease_until_ms` has visibly missed its
/// heartbeat at `now_ms`: it was last renewed more than seven twelfths of the lease it then
/// took ago (a third, the heartbeat's period, plus a quarter as margin), in whole
/// milliseconds, rounding the lease's twelfth down. The SQL stores compute the same in their
/// claim queries. See [`Store::claim`].
pub(crate) fn stale(renewed_ms: u64, lease_until_ms: u64, now_ms: u64) -> bool {
    now_ms > renewed_ms && now_ms - renewed_ms > lease_until_ms.saturating_sub(renewed_ms) / 12 * 7
}

/// A request to delete finished workflows and their journals ([`Store::purge`]): those of
/// `kind` in one of `states` that nobody holds and whose latest entry was written before
/// `updated_before_ms`, at most `limit` of them, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purge {
    /// The workflow kind.
    pub kind: String,
    /// The states that may be deleted: final ones only (the engines pass
    /// [`SagaState::is_final`](crate::SagaState::is_final) states).
    pub states: Vec<String>,
    /// Only workflows whose latest entry was written before then (ms since the Unix epoch).
    pub updated_before_ms: u64,
    /// At most this many in one call (one transaction).
    pub limit: usize,
}

impl Purge {
    /// A purge of up to `limit` workflows of `kind` in `states`, last written before
    /// `updated_before_ms`.
    pub fn new(
        kind: impl Into<String>,
        states: &[&str],
        updated_before_ms: u64,
        limit: usize,
    ) -> Self {
        Purge {
            kind: kind.into(),
            states: states.iter().map(|s| s.to_string()).collect(),
            updated_before_ms,
            limit,
        }
    }

    /// Whether this purge deletes `rec`.
    pub(crate) fn may_delete(&self, rec: &WorkflowRecord) -> bool {
        rec.kind == self.kind
            && self.states.contains(&rec.state)
            && rec.owner.is_none()
            && rec.updated_ms < self.updated_before_ms
    }
}

/// The one key of the [`body`](StoredReview::body) a store hands over for a review item whose
/// stored body it cannot parse as JSON (a row edited by hand, a torn write):
/// `{"$unreadable": "<why>"}`. Only that item then fails to decode (a
/// [`StoreError::Corrupt`] naming it, from [`ReviewQueue`](crate::ReviewQueue) and
/// [`ReviewItem::try_from`](crate::review::ReviewItem)), instead of every listing of the queue
/// failing ([`Store::review_list`]) with an error that does not say which item it is. The
/// SQLite store does this; the memory and PostgreSQL stores hold parsed JSON only.
pub const UNREADABLE_BODY: &str = "$unreadable";

/// A stored review item: an id, the saga it belongs to, its status, and its body (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredReview {
    /// Its id.
    pub id: String,
    /// The workflow it concerns.
    pub workflow_id: String,
    /// `open`, `retry_requested`, `retried`, `discarded`.
    pub status: String,
    /// When it last changed (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Everything else, as JSON (a review item's details); `{"$unreadable": "<why>"}`
    /// ([`UNREADABLE_BODY`]) for one the store could not parse.
    pub body: serde_json::Value,
}

/// A stored checkpoint: an agent's state at one version.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// Whose state.
    pub agent: String,
    /// Its version, from 1.
    pub version: u64,
    /// When it was saved (ms since the Unix epoch).
    pub at_ms: u64,
    /// The SHA-256 of `data`, lower-case hex.
    pub checksum: String,
    /// The state.
    pub data: Vec<u8>,
}

impl fmt::Debug for StoredCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCheckpoint")
            .field("agent", &self.agent)
            .field("version", &self.version)
            .field("at_ms", &self.at_ms)
            .field("checksum", &self.checksum)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A checkpoint without its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Its version.
    pub version: u64,
    /// When it was saved.
    pub at_ms: u64,
    /// The checksum recorded when it was saved.
    pub checksum: String,
    /// The length of its data in bytes.
    pub len: u64,
}

/// How many times the default [`Store::checkpoint_put_next`] tries to write the next version
/// when other writers keep taking it first.
const CHECKPOINT_PUT_ATTEMPTS: usize = 64;

/// The storage behind journals, the review queue and checkpoints.
///
/// Implementations must make [`append`](Store::append) atomic (the entry and the state, or
/// neither) and durable before its future resolves, and must refuse an append that does not
/// follow the journal's last entry or comes from a process that does not hold the claim. All
/// methods may be called concurrently.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Appends one entry and sets the workflow's state, in one transaction.
    ///
    /// `seq` 0 creates the workflow (with `owner` and `instance` holding the claim); a workflow
    /// that exists already is a [`StoreError::Conflict`]. Any other `seq` must be one more than
    /// the last entry's, and `owner` must hold the claim, under `instance` unless that is empty
    /// (an expired lease still counts while nobody else has claimed the workflow); otherwise
    /// [`StoreError::Conflict`]. The claim is then `instance`'s, renewed at `at_ms` until
    /// `lease_until_ms`.
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The journal of workflow `id`, oldest first (empty if there is none).
    fn journal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>>;

    /// Every workflow of `kind` (all kinds with `None`), oldest first.
    fn workflows<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>>;

    /// Workflow `id`, if it exists.
    fn workflow<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>>;

    /// Claims workflows for `claim.owner`; returns their ids. Two processes claiming at once
    /// never get the same workflow.
    ///
    /// A workflow may be claimed if it is of `claim.kind`, in one of `claim.states` (and is
    /// `claim.only`, if set), and:
    ///
    /// * `claim.owner` holds it already under `claim.instance` (or `claim.instance` is empty);
    /// * or `claim.owner` holds it under another instance that has visibly missed its
    ///   heartbeat: the claim was last renewed (by the append, claim or
    ///   [`renew_instance`](Store::renew_instance) that set it, at `renewed`) more than seven
    ///   twelfths of the lease it then took ago, `now_ms - renewed > (lease_until_ms -
    ///   renewed) / 12 * 7` in whole milliseconds (the engines renew every third of a lease
    ///   while they work, so a live holder never looks like that; the rest is margin for a
    ///   slow renewal and for clocks). A claim renewed by [`renew`](Store::renew), or written
    ///   by an earlier version of the store, has no known renewal time and waits for its
    ///   lease to end;
    /// * or its lease ended before `claim.now_ms`;
    /// * or nobody holds it, unless `claim.owner` itself gave it back with
    ///   [`release`](Store::release) (and nobody claimed or appended to it since), in which
    ///   case `claim.owner` may take it again only once the lease it held has ended; but
    ///   another engine instance of `claim.owner` than the one that held it may take it at
    ///   once (`claim.instance` and the instance that held the claim both not empty, and
    ///   different): the instance gives the workflow back, not every process under its name.
    ///
    /// At most `claim.limit`, oldest first; each gets owner `claim.owner`, instance
    /// `claim.instance`, lease `claim.lease_until_ms`, renewed at `claim.now_ms`.
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Extends the claim `owner` holds on workflow `id` (under any instance) to
    /// `lease_until_ms` (a lease never shrinks: a renewal earlier than the current end changes
    /// nothing), without writing an entry: the heartbeat of a process whose step runs longer
    /// than a lease. The engines call [`renew_instance`](Store::renew_instance) instead; this
    /// one records no renewal time, so the claim waits for its lease to end before another
    /// instance of `owner` may take it.
    ///
    /// A [`StoreError::Conflict`] if `owner` does not hold the claim: another process took it
    /// over, it was released, or the workflow does not exist. The caller has then lost the
    /// workflow and must stop working on it.
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`renew`](Store::renew) for one engine instance: extends the claim `owner` holds on
    /// workflow `id` under `instance` (any instance, if empty) to `lease_until_ms`, and records
    /// that it was renewed at `now_ms` (a renewal time never goes back), which tells the other
    /// instances of `owner` that this one is alive (see [`claim`](Store::claim)).
    ///
    /// A [`StoreError::Conflict`] if `owner` does not hold the claim under `instance`: another
    /// instance or process took it over, it was released, or the workflow does not exist.
    ///
    /// The default implementation, for stores written before this method existed, calls
    /// [`renew`](Store::renew), ignoring `instance` and `now_ms`.
    fn renew_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (instance, now_ms);
        self.renew(id, owner, lease_until_ms)
    }

    /// Gives back the claim `owner` holds on workflow `id` (under any instance; see
    /// [`release_instance`](Store::release_instance)), without writing an entry: the
    /// workflow then has no owner, and any *other* process may claim it at once. `owner`
    /// itself may claim it again only once the lease it held has ended (so that a process that
    /// cannot drive the workflow does not take it straight back on its next recovery, and does
    /// take it back if no other process did within a lease), except from another engine
    /// instance than the one that held the claim (see [`claim`](Store::claim)): another
    /// process under the same owner name takes it at once too. State, journal and lease end
    /// are unchanged.
    ///
    /// Fenced like [`renew`](Store::renew): a [`StoreError::Conflict`] if `owner` does not
    /// hold the claim (another process took it over, it was released, or the workflow does
    /// not exist); nothing changes then. An expired lease still counts while nobody else has
    /// claimed the workflow. After a release, `owner`'s appends and renewals are refused.
    ///
    /// The default implementation, for stores written before this method existed, changes
    /// nothing and fails with [`StoreError::Unsupported`]; recovery then keeps the claim (see
    /// the [module docs](self)).
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (id, owner);
        Box::pin(std::future::ready(Err(StoreError::Unsupported("release"))))
    }

    /// [`release`](Store::release) for one engine instance: gives back the claim `owner` holds
    /// on workflow `id` under `instance` (any instance, if empty); a
    /// [`StoreError::Conflict`] if another instance holds it.
    ///
    /// The default implementation, for stores written before this method existed, calls
    /// [`release`](Store::release), ignoring `instance`.
    fn release_instance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = instance;
        self.release(id, owner)
    }

    /// Deletes the workflows `purge` selects, with their journals and their review items
    /// (those whose [`workflow_id`](StoredReview::workflow_id) is one of them, whatever
    /// their status), in one transaction; returns how many workflows went.
    ///
    /// Fenced: a workflow that someone holds (owner set, even with an expired lease) is never
    /// deleted, nor one that is not of `purge.kind`, not in one of `purge.states`, or last
    /// written at or after `purge.updated_before_ms`; the check and the delete are one
    /// transaction, so a claim or an append that comes first keeps its workflow. A deleted
    /// workflow's id is free again, and so are its review items' ids.
    ///
    /// Why the review items go too: a finished workflow's items are closed (`retried`,
    /// `discarded`), their history being the journal's (the escalations, the retries, a
    /// discard's note), which goes with them; or still pending because a crash came between
    /// the workflow's last entry and the item's update, where the journal overrules the item,
    /// and without the journal nothing could close it. Kept, they would outlive what they are
    /// about, and an item id (`"{saga_id}/{step}"`) used again by a new workflow with the
    /// freed id would take the old item over (its age, a request for a retry that nobody made
    /// for the new workflow). Nothing else deletes review items. The items of workflows not
    /// deleted, and items of no workflow this purge deletes, are not touched; nor are
    /// checkpoints.
    ///
    /// The default implementation, for stores written before this method existed, deletes
    /// nothing and fails with [`StoreError::Unsupported`].
    fn purge(&self, purge: Purge) -> BoxFuture<'_, Result<u64, StoreError>> {
        let _ = purge;
        Box::pin(std::future::ready(Err(StoreError::Unsupported("purge"))))
    }

    /// Inserts or replaces a review item.
    fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Writes review item `item` only if the item stored under its id is still `expected`,
    /// as [`review_get`](Store::review_get) returned it (every field equal), or, with
    /// `expected` `None`, only if there is none; returns whether it wrote. The comparison and
    /// the write are one atomic step.
    ///
    /// This is how the review queue and the engines write an item they read and changed (a
    /// retry requested, an item closed, an escalation over the item before it): a process
    /// whose read went stale meanwhile (another process escalated the saga again to the
    /// item, asked for its retry, discarded it with a note) writes nothing, and reads again,
    /// instead of writing the item as it read it over the newer one.
    ///
    /// The default implementation, for stores written before this method existed, reads the
    /// item, compares, and writes with [`review_put`](Store::review_put): it refuses an item
    /// that changed before its read, but not one changed between its read and its write, which
    /// is then lost as it was before this method existed. Implement it atomically (a
    /// transaction that locks the row, a conditional update) to close that window.
    fn review_put_if(
        &self,
        expected: Option<StoredReview>,
        item: StoredReview,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            if self.review_get(&item.id).await? != expected {
                return Ok(false);
            }
            self.review_put(item).await?;
            Ok(true)
        })
    }

    /// Review item `id`.
    fn review_get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>>;

    /// Every review item, oldest first.
    fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>>;

    /// Saves a checkpoint at exactly `checkpoint.version`. If that version, or any newer
    /// one, exists already for the agent, nothing is written and the answer is a
    /// [`StoreError::Conflict`].
    ///
    /// Newer counts too, and the check and the insert are one atomic step: this is the fence
    /// of a [`Lifecycle`](crate::lifecycle::Lifecycle)'s transition. A handle that knows
    /// version `n` writes `n + 1`; if another handle has meanwhile written `n + 1` and
    /// `n + 2`, and `keep_last` pruned `n + 1`, the slot is free again, but the write must
    /// still be refused, or the stale handle's state would sit below a newer one it never
    /// saw (and a second `Lifecycle::start` of the same agent would succeed). A store that
    /// checks only the exact version lets that through.
    fn checkpoint_put(&self, checkpoint: StoredCheckpoint)
    -> BoxFuture<'_, Result<(), StoreError>>;

    /// Saves a checkpoint as the next version of its agent, one more than the newest stored
    /// (1 if there is none), whatever `checkpoint.version` says; returns that version.
    ///
    /// Atomic: callers saving for the same agent at once (in one process or several) each
    /// get a version of their own, consecutive, and none of them fails because another
    /// took the version it was about to write.
    ///
    /// The default implementation, for stores written before this method existed, reads the
    /// newest version and [`checkpoint_put`](Store::checkpoint_put)s the next, reading again
    /// when another writer took that version first: each such conflict means another save
    /// succeeded. After 64 conflicts in a row it gives up with the last
    /// [`StoreError::Conflict`]. The stores of this crate allocate the version in the
    /// database instead, in the same statement or transaction as the insert, and never
    /// give up.
    fn checkpoint_put_next(
        &self,
        checkpoint: StoredCheckpoint,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut checkpoint = checkpoint;
            let mut attempts = 0;
            loop {
                let newest = self
                    .checkpoint_versions(&checkpoint.agent)
                    .await?
                    .first()
                    .map_or(0, |m| m.version);
                checkpoint.version = next_checkpoint_version(&checkpoint.agent, newest, u64::MAX)?;
                match self.checkpoint_put(checkpoint.clone()).await {
                    Ok(()) => return Ok(checkpoint.version),
                    Err(StoreError::Conflict(_)) if attempts + 1 < CHECKPOINT_PUT_ATTEMPTS => {
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// Checkpoint `version` of `agent`.
    fn checkpoint_get<'a>(
        &'a self,
        agent: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>>;

    /// The checkpoints of `agent`, newest first.
    fn checkpoint_versions<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>>;

    /// Deletes all but the newest `keep` checkpoints of `agent`; returns how many went.
    fn checkpoint_prune<'a>(
        &'a self,
        agent: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// For the SQL stores' migration tests: workflow `w`, a running saga that `a` holds, is not
/// `b`'s to claim; once `a` releases it, `a` may not take it straight back and `b` gets it.
#[cfg(test)]
pub(crate) async fn release_hands_w_from_a_to_b(store: &dyn Store) {
    let claim = |owner: &str| Claim::new("saga", &["running"], owner, 5, 6, 10);
    assert!(
        store.claim(claim("b")).await.unwrap().is_empty(),
        "a holds it"
    );
    store.release("w", "a").await.unwrap();
    assert!(store.claim(claim("a")).await.unwrap().is_empty());
    assert_eq!(store.claim(claim("b")).await.unwrap(), ["w"]);
}

/// For the SQL stores' migration tests: workflow `v`, a compensating saga that `a` holds
/// until 10 000 in a row of a version before instances (no instance, no renewal time). An
/// engine instance of `a` takes it only once its lease has run out (nothing says when it was
/// last renewed), not before; an old process (the empty instance) still renews it; once taken,
/// only that instance writes, and another instance takes it from that one by the new rule.
#[cfg(test)]
pub(crate) async fn an_old_claim_waits_its_lease_for_an_instance(store: &dyn Store) {
    let claim = |instance: &str, now: u64| {
        Claim::new("saga", &["compensating"], "a", now, now + 12_000, 10).with_instance(instance)
    };
    let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
    assert!(store.claim(claim("x", 9_999)).await.unwrap().is_empty());
    assert!(conflict(
        store.renew_instance("v", "a", "x", 5, 10_000).await
    ));
    store.renew("v", "a", 10_000).await.unwrap();
    assert!(store.claim(claim("x", 10_000)).await.unwrap().is_empty());
    assert_eq!(store.claim(claim("x", 10_001)).await.unwrap(), ["v"]);
    let append = |instance: &str| {
        Append::new(
            "v",
            "saga",
            "d",
            1,
            10_002,
            serde_json::json!({}),
            "compensating",
            "a",
            22_002,
        )
        .with_instance(instance)
    };
    assert!(conflict(store.append(append("y")).await));
    store.append(append("x")).await.unwrap();
    // Renewed at 10 002 for 12 s: another instance waits seven twelfths of it (7 s).
    assert!(store.claim(claim("y", 17_002)).await.unwrap().is_empty());
    assert_eq!(store.claim(claim("y", 17_003)).await.unwrap(), ["v"]);
    let v = store.workflow("v").await.unwrap().unwrap();
    assert_eq!((v.owner.as_deref(), v.entries), (Some("a"), 2));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written against the trait before `release`, `purge` and `checkpoint_put_next`:
    /// it implements only the other methods (delegating to a memory store). Its checkpoint
    /// writes let other tasks run first (as a networked store's would), and count.
    #[derive(Debug, Default)]
    struct Legacy(MemoryStore, Puts);

    #[derive(Debug, Default)]
    struct Puts {
        /// Checkpoint writes asked.
        asked: std::sync::atomic::AtomicUsize,
        /// While set, every checkpoint write finds its version taken.
        taken: std::sync::atomic::AtomicBool,
    }

    impl Store for Legacy {
        fn append(&self, a: Append) -> BoxFuture<'_, Result<(), StoreError>> {
            self.0.append(a)
        }
        fn journal<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
            self.0.journal(id)
        }
        fn workflows<'a>(
            &'a self,
            kind: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<WorkflowRecord>, StoreError>> {
            self.0.workflows(kind)
        }
        fn workflow<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<WorkflowRecord>, StoreError>> {
            self.0.workflow(id)
        }
        fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
            self.0.claim(claim)
        }
        fn renew<'a>(
            &'a self,
            id: &'a str,
            owner: &'a str,
            lease_until_ms: u64,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            self.0.renew(id, owner, lease_until_ms)
        }
        fn review_put(&self, item: StoredReview) -> BoxFuture<'_, Result<(), StoreError>> {
            self.0.review_put(item)
        }
        fn review_get<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<StoredReview>, StoreError>> {
            self.0.review_get(id)
        }
        fn review_list(&self) -> BoxFuture<'_, Result<Vec<StoredReview>, StoreError>> {
            self.0.review_list()
        }
        fn checkpoint_put(&self, cp: StoredCheckpoint) -> BoxFuture<'_, Result<(), StoreError>> {
            use std::sync::atomic::Ordering::Relaxed;
            Box::pin(async move {
                // A caller that never gives up fails here, rather than hanging its test.
                if self.1.asked.fetch_add(1, Relaxed) >= 1_000 {
                    return Err(StoreError::backend("asked a thousand times"));
                }
                tokio::task::yield_now().await;
                if self.1.taken.load(Relaxed) {
                    return Err(StoreError::Conflict("taken".into()));
                }
                self.0.checkpoint_put(cp).await
            })
        }
        fn checkpoint_get<'a>(
            &'a self,
            agent: &'a str,
            version: u64,
        ) -> BoxFuture<'a, Result<Option<StoredCheckpoint>, StoreError>> {
            self.0.checkpoint_get(agent, version)
        }
        fn checkpoint_versions<'a>(
            &'a self,
            agent: &'a str,
        ) -> BoxFuture<'a, Result<Vec<CheckpointMeta>, StoreError>> {
            self.0.checkpoint_versions(agent)
        }
        fn checkpoint_prune<'a>(
            &'a self,
            agent: &'a str,
            keep: usize,
        ) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.0.checkpoint_prune(agent, keep)
        }
    }

    /// The default `release` and `purge` change nothing and say the store cannot do them;
    /// recovery over such a store reports what it cannot resume and keeps the claim, as before
    /// `release` existed.
    #[tokio::test(start_paused = true)]
    async fn a_store_without_release_and_purge_still_works() {
        let store = Arc::new(Legacy::default());
        let started = crate::journal::Event::SagaStarted {
            name: "gone".into(),
            steps: vec!["x".into()],
            input: serde_json::Value::Null,
        };
        let append = Append::new(
            "w",
            "saga",
            "gone",
            0,
            1,
            serde_json::to_value(started).unwrap(),
            "running",
            "a",
            10,
        );
        store.append(append).await.unwrap();
        let r = store.release("w", "a").await;
        assert!(
            matches!(r, Err(StoreError::Unsupported("release"))),
            "{r:?}"
        );
        let r = store
            .purge(Purge::new("saga", &["running"], u64::MAX, 10))
            .await;
        assert!(matches!(r, Err(StoreError::Unsupported("purge"))), "{r:?}");
        assert_eq!(
            r.unwrap_err().to_string(),
            "the store does not support purge"
        );
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!(w.owner.as_deref(), Some("a"));

        let sagas = crate::Sagas::builder(store.clone())
            .owner("a")
            .build()
            .unwrap();
        for _ in 0..2 {
            let r = sagas.recover().await.unwrap();
            assert!(
                matches!(&r.failed[..], [(id, crate::error::SagaError::UnknownDefinition(_))] if id == "w"),
                "{r:?}"
            );
        }
        let w = store.workflow("w").await.unwrap().unwrap();
        assert_eq!(w.owner.as_deref(), Some("a"), "the claim is kept");
    }

    fn checkpoint(agent: &str, n: u8) -> StoredCheckpoint {
        StoredCheckpoint {
            agent: agent.into(),
            version: 0,
            at_ms: u64::from(n),
            checksum: format!("sum{n}"),
            data: vec![n],
        }
    }

    /// The default `checkpoint_put_next`, saving at once from several tasks on a store where
    /// they interleave: each write that finds its version taken reads again and takes the
    /// next, so all succeed, with versions 1 to n, each holding what its caller wrote.
    #[tokio::test(start_paused = true)]
    async fn the_default_put_next_takes_the_next_version_when_one_is_taken() {
        let store = Arc::new(Legacy::default());
        let tasks: Vec<_> = (1..=8u8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let v = store.checkpoint_put_next(checkpoint("a", n)).await;
                    (n, v)
                })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            let (n, v) = t.await.unwrap();
            let v = v.unwrap();
            let stored = store.checkpoint_get("a", v).await.unwrap().unwrap();
            assert_eq!((stored.version, stored.data), (v, vec![n]));
            versions.push(v);
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
        let asked = store.1.asked.load(std::sync::atomic::Ordering::Relaxed);
        assert!(asked > 8, "the writes collided: {asked}");
        // An agent of its own starts at 1.
        assert_eq!(
            store.checkpoint_put_next(checkpoint("b", 1)).await.unwrap(),
            1
        );
    }

    /// When every write finds its version taken, the default `checkpoint_put_next` gives up
    /// after 64 writes with the conflict, instead of looping for ever.
    #[tokio::test(start_paused = true)]
    async fn the_default_put_next_gives_up_after_64_conflicts() {
        use std::sync::atomic::Ordering::Relaxed;
        let store = Legacy::default();
        store.1.taken.store(true, Relaxed);
        let r = store.checkpoint_put_next(checkpoint("a", 1)).await;
        assert!(
            matches!(&r, Err(StoreError::Conflict(m)) if m == "taken"),
            "{r:?}"
        );
        assert_eq!(store.1.asked.load(Relaxed), 64);
        assert!(store.checkpoint_versions("a").await.unwrap().is_empty());
    }

    /// The default `review_put_if`, for a store written before it: it writes only over the
    /// item expected (or where there is none, expecting none), and says whether it wrote.
    #[tokio::test(start_paused = true)]
    async fn the_default_review_put_if_writes_only_over_the_item_expected() {
        let store = Legacy::default();
        let item = |status: &str| StoredReview {
            id: "w/0".into(),
            workflow_id: "w".into(),
            status: status.into(),
            updated_ms: 1,
            body: serde_json::json!({ "status": status }),
        };
        assert!(
            !store
                .review_put_if(Some(item("open")), item("retried"))
                .await
                .unwrap()
        );
        assert_eq!(store.review_get("w/0").await.unwrap(), None);
        assert!(store.review_put_if(None, item("open")).await.unwrap());
        assert!(!store.review_put_if(None, item("retried")).await.unwrap());
        let put = store.review_put_if(Some(item("retry_requested")), item("retried"));
        assert!(!put.await.unwrap());
        assert_eq!(store.review_get("w/0").await.unwrap(), Some(item("open")));
        let put = store.review_put_if(Some(item("open")), item("retry_requested"));
        assert!(put.await.unwrap());
        assert_eq!(
            store.review_get("w/0").await.unwrap(),
            Some(item("retry_requested"))
        );
    }

    #[test]
    fn there_is_no_checkpoint_version_after_the_last() {
        assert_eq!(next_checkpoint_version("a", 0, 5).unwrap(), 1);
        assert_eq!(next_checkpoint_version("a", 4, 5).unwrap(), 5);
        let err = next_checkpoint_version("a", 5, 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conflict: checkpoint a version 5 is the last the store can hold"
        );
        assert!(next_checkpoint_version("a", u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn a_checkpoint_prints_its_length_not_its_data() {
        let cp = StoredCheckpoint {
            agent: "crawler".into(),
            version: 3,
            at_ms: 300,
            checksum: "abc".into(),
            data: b"secret state".to_vec(),
        };
        assert_eq!(
            format!("{cp:?}"),
            r#"StoredCheckpoint { agent: "crawler", version: 3, at_ms: 300, checksum: "abc", len: 12 }"#
        );
    }
}
