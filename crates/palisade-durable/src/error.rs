//! Errors: each names what happened.

use std::path::PathBuf;

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
    ///
    /// The message says why in full: it is the backend error's message followed by its
    /// sources' (`store backend failed: error connecting to server: Connection refused (os
    /// error 111)`, where the PostgreSQL driver's own message stops at "error connecting to
    /// server"). The backend error itself is the [source](std::error::Error::source), to
    /// downcast (to `rusqlite::Error`, `tokio_postgres::Error`).
    #[error("store backend failed: {}", with_sources(&**.0))]
    Backend(#[source] BoxError),
    /// The store's file could not be opened or set up ([`SqliteStore::open`]): it is not a
    /// SQLite database, its directory does not exist, another process holds it locked, ...
    /// The message names the file and says why, as [`StoreError::Backend`]'s does; the
    /// database's error is the [source](std::error::Error::source).
    ///
    /// [`SqliteStore::open`]: crate::store::SqliteStore::open
    #[error("cannot open the store at {}: {}", path.display(), with_sources(&**source))]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
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

/// `err`'s message followed by each of its sources' messages, `: `-separated; a source whose
/// message is already in the text (a wrapper that repeats its source's message) is not
/// repeated.
pub(crate) fn with_sources(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        source = s.source();
    }
    message
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
    /// was asked for ([`Journal::inspect`](crate::journal::Journal::inspect), or
    /// [`Sagas::run`](crate::Sagas::run) with a transaction's id), or a saga where a
    /// transaction was ([`Transactions`](crate::twopc::Transactions),
    /// [`Coordinator::run`](crate::twopc::Coordinator::run) with a saga's id). Nothing was
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
    /// A saga (or transaction) id that is empty, longer than 200 bytes, or holds a NUL
    /// character (which PostgreSQL cannot store; refused on every store alike). Nothing was
    /// written.
    #[error("invalid id {0:?}: must be 1 to 200 bytes, without a NUL character")]
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
    /// A workflow of the same kind with that id exists already: a saga, for
    /// [`Sagas::run`](crate::Sagas::run); a transaction, for
    /// [`Coordinator::run`](crate::twopc::Coordinator::run). (An id of the other kind is a
    /// [`SagaError::WrongKind`].) Nothing was written or run.
    #[error("{} {id:?} exists already", kind_noun(kind))]
    AlreadyExists {
        /// The id.
        id: String,
        /// The kind of workflow it is: `"saga"`, `"2pc"`.
        kind: &'static str,
    },
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
    /// A review item, a saga or a transaction is not in a state that allows what was asked
    /// (retrying a review item that is not open, resolving a transaction decided already,
    /// ...). Nothing was changed. The message says what is and what would be allowed:
    /// `review item "trip-1/0" is retry_requested; only an open item can be retried`.
    #[error("{what} {id:?} is {state}; {rule}")]
    WrongState {
        /// What was acted on: `"review item"`, `"saga"`, `"transaction"`.
        what: &'static str,
        /// Its id.
        id: String,
        /// Where it stands (`retry_requested`, `failed`, ...).
        state: String,
        /// What would be allowed: `only an open item can be retried`.
        rule: &'static str,
    },
    /// Another process holds the claim on this saga or two-phase-commit transaction (its id;
    /// the message names no kind, since both use it).
    #[error("{0:?} is claimed by another process")]
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
    format!("a {}", kind_noun(kind))
}

/// A workflow kind as the subject of a sentence: `"2pc"` is "two-phase-commit transaction".
fn kind_noun(kind: &str) -> String {
    match kind {
        "saga" => "saga".into(),
        "2pc" => "two-phase-commit transaction".into(),
        other => format!("workflow of kind {other:?}"),
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
    /// The state cannot be saved because it could not be loaded back: it nests deeper than
    /// [`MAX_DEPTH`](crate::journal::MAX_DEPTH) levels, or it holds a NaN or infinite float
    /// (which JSON writes as `null`; `reason` says where). Nothing was written.
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
    /// An agent name longer than [`MAX_AGENT_LEN`](crate::checkpoint::MAX_AGENT_LEN) (200)
    /// bytes or holding a NUL character (which PostgreSQL cannot store or index; refused on
    /// every store alike). Nothing was written.
    #[error("invalid agent name {0:?}: must be at most 200 bytes, without a NUL character")]
    InvalidAgent(String),
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
    /// This handle is stale: another handle of the same agent (another process, or another
    /// [`resume`](crate::lifecycle::Lifecycle::resume)) saved a newer checkpoint since this
    /// one last read or wrote (`known`, its newest version). Nothing was saved, and this
    /// handle is left as it was: [`resume`](crate::lifecycle::Lifecycle::resume) the agent
    /// again to go on from its newest state, which may be final.
    #[error(
        "agent {agent:?}: this lifecycle handle is stale (it knows version {known}, and another \
         handle has saved a newer one); nothing was saved: resume the agent to go on"
    )]
    Stale {
        /// The agent.
        agent: String,
        /// The newest version this handle knew of.
        known: u64,
    },
    /// [`Lifecycle::start`](crate::lifecycle::Lifecycle::start) of an agent that has
    /// checkpoints already. Nothing was saved or deleted:
    /// [`resume`](crate::lifecycle::Lifecycle::resume) it instead.
    #[error("agent {0:?} exists already (it has checkpoints): resume it instead of starting it")]
    Exists(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    fn refused() -> Chain {
        Chain(
            "error connecting to server",
            Some(Box::new(Chain("Connection refused (os error 111)", None))),
        )
    }

    /// A backend error whose own message stops short (the PostgreSQL driver's "error
    /// connecting to server") is shown with its sources; it stays the source, to downcast.
    #[test]
    fn a_backend_failure_says_why_in_full() {
        let e = StoreError::backend(refused());
        assert_eq!(
            e.to_string(),
            "store backend failed: error connecting to server: Connection refused (os error 111)"
        );
        let source = e.source().unwrap();
        assert_eq!(source.to_string(), "error connecting to server");
        assert!(source.downcast_ref::<Chain>().is_some());

        let e = StoreError::Open {
            path: PathBuf::from("/data/journal.db"),
            source: Box::new(refused()),
        };
        assert_eq!(
            e.to_string(),
            "cannot open the store at /data/journal.db: error connecting to server: \
             Connection refused (os error 111)"
        );
        assert!(e.source().unwrap().downcast_ref::<Chain>().is_some());
        // A source the message already says is not said twice.
        let repeats = Chain(
            "disk full: disk full",
            Some(Box::new(Chain("disk full", None))),
        );
        assert_eq!(with_sources(&repeats), "disk full: disk full");
    }

    /// A claim held elsewhere is reported for sagas and two-phase-commit transactions alike:
    /// the message names the id, not a kind it may not be (it said "saga" for both).
    #[test]
    fn a_claim_held_elsewhere_names_no_kind() {
        assert_eq!(
            SagaError::Claimed("tx-7".into()).to_string(),
            "\"tx-7\" is claimed by another process"
        );
    }

    #[test]
    fn each_message_names_the_kind_and_the_rule() {
        let exists = |kind| SagaError::AlreadyExists {
            id: "shared-id".into(),
            kind,
        };
        assert_eq!(
            exists("saga").to_string(),
            r#"saga "shared-id" exists already"#
        );
        assert_eq!(
            exists("2pc").to_string(),
            r#"two-phase-commit transaction "shared-id" exists already"#
        );
        assert_eq!(
            exists("cron").to_string(),
            r#"workflow of kind "cron" "shared-id" exists already"#
        );
        let wrong = SagaError::WrongKind {
            id: "w".into(),
            kind: "cron".into(),
            expected: "2pc",
        };
        assert_eq!(
            wrong.to_string(),
            r#""w" is a workflow of kind "cron", not a two-phase-commit transaction"#
        );
        let state = SagaError::WrongState {
            what: "review item",
            id: "trip-bad/1".into(),
            state: "retry_requested".into(),
            rule: "only an open item can be retried",
        };
        assert_eq!(
            state.to_string(),
            r#"review item "trip-bad/1" is retry_requested; only an open item can be retried"#
        );
    }
}
