//! Errors: each names what happened.

use palisade_core::{BoxError, ConfigError};

/// A store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer got there first: the workflow or entry exists, or another process holds
    /// the workflow's claim. The caller must stop writing to that workflow.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed (I/O, SQL, connection).
    #[error("store backend failed: {0}")]
    Backend(#[source] BoxError),
    /// Data read back could not be decoded (a journal entry that is not valid JSON, ...).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store's options are invalid (a [`SqliteOptions::busy_timeout`] longer than an
    /// hour, ...): the error names the option and the rule. Nothing was opened.
    ///
    /// [`SqliteOptions::busy_timeout`]: crate::store::SqliteOptions::busy_timeout
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store does not implement this operation (a store of another crate, written before
    /// the operation was added to [`Store`](crate::store::Store)): nothing was changed. Holds
    /// the operation's name (`"release"`, `"purge"`).
    #[error("the store does not support {0}")]
    Unsupported(&'static str),
    /// The store's connection is gone, or the blocking task running the operation was lost
    /// (the runtime is shutting down).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// A backend failure from any error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        StoreError::Backend(e.into())
    }
}

/// A saga could not be defined, started, recovered or inspected.
///
/// A saga whose *steps* fail is not an error of the engine: it ends in a failed state, reported
/// in its outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The store failed; the saga stays as its journal says and is resumed by a later recovery.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No definition of that name was registered with the engine.
    #[error("no saga definition named {0:?}")]
    UnknownDefinition(String),
    /// No saga (or two-phase-commit transaction) with that id.
    #[error("no saga or transaction {0:?}")]
    NotFound(String),
    /// The id names a workflow of another kind: a two-phase-commit transaction where a saga
    /// was asked for ([`Journal::inspect`](crate::journal::Journal::inspect)), or a saga
    /// where a transaction was ([`Transactions`](crate::twopc::Transactions)). Nothing was
    /// read or written.
    #[error("{id:?} is {}, not {}", kind_name(kind), kind_name(expected))]
    WrongKind {
        /// The id asked for.
        id: String,
        /// The kind of workflow it is, as stored: `"saga"`, `"2pc"`.
        kind: String,
        /// The kind that was asked for.
        expected: &'static str,
    },
    /// A saga id that is empty or longer than 200 bytes.
    #[error("invalid saga id {0:?}: must be 1 to 200 bytes")]
    InvalidId(String),
    /// The saga's input (or the transaction's payload) cannot be journaled: it nests deeper
    /// than [`MAX_DEPTH`](crate::journal::MAX_DEPTH) levels. Nothing was written or run.
    #[error("input of {saga:?} cannot be journaled: {reason}")]
    InvalidInput {
        /// The saga (or transaction).
        saga: String,
        /// What is wrong.
        reason: String,
    },
    /// A saga with that id exists already.
    #[error("saga {0:?} exists already")]
    AlreadyExists(String),
    /// The journal contradicts the definition (the saga was started with other steps, or the
    /// transaction with other participants, than the definition registered now has), or
    /// itself (an entry that cannot be decoded, entries out of order).
    #[error("journal of saga {saga:?} is inconsistent: {reason}")]
    Inconsistent {
        /// The saga.
        saga: String,
        /// What is wrong.
        reason: String,
    },
    /// The saga is not in a state that allows this (retrying a review item of a saga that is
    /// not escalated, ...).
    #[error("saga {saga:?} is {state}, cannot {action}")]
    WrongState {
        /// The saga.
        saga: String,
        /// Its state.
        state: String,
        /// What was asked.
        action: &'static str,
    },
    /// Another process holds the saga's claim.
    #[error("saga {0:?} is claimed by another process")]
    Claimed(String),
    /// This process lost its claim on the saga (or transaction) while a step, a compensation
    /// or a phase was in flight: its lease ran out (the store could not be reached to renew
    /// it, or the process stalled) and another process took the work over. The work in
    /// flight was dropped and its outcome not journaled; the other process finishes the saga.
    #[error("lost the claim on {0:?} while work was in flight: another process took it over")]
    LeaseLost(String),
    /// A review item was not found.
    #[error("no review item {0:?}")]
    NoReviewItem(String),
}

/// A workflow kind as a person reads it: `"2pc"` is "a two-phase-commit transaction".
fn kind_name(kind: &str) -> String {
    match kind {
        "saga" => "a saga".into(),
        "2pc" => "a two-phase-commit transaction".into(),
        other => format!("a workflow of kind {other:?}"),
    }
}

/// A checkpoint could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The agent has no checkpoint (or none of that version).
    #[error("no checkpoint for agent {agent:?}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NotFound {
        /// The agent.
        agent: String,
        /// The version asked for, if one was.
        version: Option<u64>,
    },
    /// A checkpoint's data does not match its recorded checksum.
    #[error(
        "checkpoint {agent:?} version {version} is corrupt: checksum {actual} instead of {expected}"
    )]
    Corrupt {
        /// The agent.
        agent: String,
        /// The version.
        version: u64,
        /// The checksum recorded when it was saved.
        expected: String,
        /// The checksum of the data read back.
        actual: String,
    },
    /// Every stored version is corrupt.
    #[error("no good checkpoint for agent {agent:?}: all {corrupt} stored versions are corrupt")]
    NoGoodVersion {
        /// The agent.
        agent: String,
        /// How many versions were tried.
        corrupt: usize,
    },
    /// The state cannot be saved: it nests deeper than
    /// [`MAX_DEPTH`](crate::journal::MAX_DEPTH) levels, so it could not be loaded back.
    /// Nothing was written.
    #[error("checkpoint state of agent {agent:?} cannot be saved: {reason}")]
    InvalidState {
        /// The agent.
        agent: String,
        /// What is wrong.
        reason: String,
    },
    /// The state could not be serialized or deserialized.
    #[error("checkpoint state could not be (de)serialized: {0}")]
    Serde(#[from] serde_json::Error),
}

/// An agent lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The transition is not allowed; nothing was saved.
    #[error(transparent)]
    InvalidTransition(crate::lifecycle::InvalidTransition),
    /// Saving or loading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(CheckpointError),
}
