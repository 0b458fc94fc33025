//! An agent's lifecycle, checkpointed at every transition.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::Checkpoints;
use crate::engine::now_ms;
use crate::error::{CheckpointError, LifecycleError, StoreError};
use crate::store::CheckpointMeta;

/// Where an agent is in its lifecycle.
///
/// ```text
/// initialized ──▶ waiting ──▶ processing ──▶ completed
///      │             ▲  │          │
///      │             └──┼──────────┘ (waits for more input)
///      └─────────────┴──┴──────────────▶ failed
/// ```
/// `completed` and `failed` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Created, not yet given work.
    Initialized,
    /// Waiting for input.
    Waiting,
    /// Working on its input.
    Processing,
    /// Done: final.
    Completed,
    /// Gave up: final.
    Failed,
}

impl Phase {
    /// The snake-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Initialized => "initialized",
            Phase::Waiting => "waiting",
            Phase::Processing => "processing",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }

    /// Whether the lifecycle may go from `self` to `to`.
    pub const fn can_go_to(self, to: Phase) -> bool {
        matches!(
            (self, to),
            (Phase::Initialized, Phase::Waiting)
                | (Phase::Waiting, Phase::Processing)
                | (Phase::Processing, Phase::Waiting)
                | (Phase::Processing, Phase::Completed)
                | (
                    Phase::Initialized | Phase::Waiting | Phase::Processing,
                    Phase::Failed
                )
        )
    }

    /// Whether this phase is final.
    pub const fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed)
    }
}

/// Its [`as_str`](Phase::as_str) name; width and alignment apply (`{:<10}`).
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The state saved at each transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentState {
    /// The agent.
    pub agent: String,
    /// Its phase.
    pub phase: Phase,
    /// Its data: input, output, quality metrics, validation status... as the agent sees fit.
    pub data: Value,
    /// The agent whose output this one works on, if any.
    pub source: Option<String>,
    /// The agent to notify when this one is done, if any.
    pub next: Option<String>,
    /// When the phase last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// An agent's lifecycle: each transition is checked, then checkpointed (a new version, with
/// its SHA-256) before it counts.
///
/// # One agent, several handles
///
/// A handle writes each transition as exactly the version after the newest it knows of (the
/// one it started, resumed or last wrote; a corrupt newer version [`resume`](Lifecycle::resume)
/// skipped counts too), and only if no newer version is stored. If another handle of the same
/// agent moved it on meanwhile (a process that resumed it while this one still ran, or a
/// second `resume` in one process), the transition is refused with
/// [`LifecycleError::Stale`] and nothing is saved: a stale handle's check against its own
/// phase cannot undo what the other did (reopen a completed agent). Resume the agent again to
/// go on from its newest state.
///
/// ```
/// use std::sync::Arc;
/// use palisade_durable::checkpoint::Checkpoints;
/// use palisade_durable::lifecycle::{Lifecycle, Phase};
/// use palisade_durable::store::MemoryStore;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cps = Checkpoints::new(Arc::new(MemoryStore::new()));
/// let mut crawler = Lifecycle::start(cps.clone(), "crawler").await.unwrap();
/// crawler.transition(Phase::Waiting, json!(null)).await.unwrap();
/// crawler.transition(Phase::Processing, json!({"url": "https://example.com"})).await.unwrap();
/// // Not allowed: a typed error, nothing saved.
/// assert!(crawler.transition(Phase::Initialized, json!(null)).await.is_err());
///
/// // After a restart: back where it was.
/// let resumed = Lifecycle::resume(cps, "crawler").await.unwrap();
/// assert_eq!(resumed.phase(), Phase::Processing);
/// # }
/// ```
#[derive(Debug)]
pub struct Lifecycle {
    checkpoints: Checkpoints,
    state: AgentState,
    version: u64,
    /// The newest version of the agent this handle knows of (read or written): its next
    /// transition is written as the one after it, and only if none newer is stored.
    newest: u64,
}

impl Lifecycle {
    /// A new agent, `initialized`, checkpointed as its version 1.
    ///
    /// An agent that has checkpoints already is refused with [`LifecycleError::Exists`], and
    /// nothing is saved or deleted: [`resume`](Lifecycle::resume) it (starting it again would
    /// hide its state behind a new `initialized` one, and with
    /// [`keep_last`](Checkpoints::keep_last) delete it). Two starts of one agent at once: one
    /// succeeds, the other gets [`LifecycleError::Exists`].
    pub async fn start(checkpoints: Checkpoints, agent: &str) -> Result<Self, LifecycleError> {
        if !checkpoints
            .versions(agent)
            .await
            .map_err(CheckpointError::from)?
            .is_empty()
        {
            return Err(LifecycleError::Exists(agent.to_owned()));
        }
        let state = AgentState {
            agent: agent.to_owned(),
            phase: Phase::Initialized,
            data: Value::Null,
            source: None,
            next: None,
            updated_ms: now_ms(),
        };
        let meta = match checkpoints.save_at(agent, &state, 1).await {
            Err(CheckpointError::Store(StoreError::Conflict(_))) => {
                return Err(LifecycleError::Exists(agent.to_owned()));
            }
            saved => saved?,
        };
        Ok(Lifecycle {
            checkpoints,
            state,
            version: meta.version,
            newest: meta.version,
        })
    }

    /// The agent as its newest good checkpoint left it (corrupt newer versions are skipped and
    /// logged).
    pub async fn resume(checkpoints: Checkpoints, agent: &str) -> Result<Self, LifecycleError> {
        let loaded = checkpoints.load_latest::<AgentState>(agent).await?;
        let mut newest = loaded.version;
        for c in &loaded.corrupt {
            tracing::warn!(agent, error = %c, "skipped a corrupt checkpoint");
            if let CheckpointError::Corrupt { version, .. } = c {
                newest = newest.max(*version);
            }
        }
        Ok(Lifecycle {
            checkpoints,
            state: loaded.state,
            version: loaded.version,
            newest,
        })
    }

    /// Moves to `to` with `data`, and checkpoints it. An invalid transition is
    /// [`LifecycleError::InvalidTransition`] and changes nothing; a failed save changes nothing
    /// either. If another handle of the agent saved a newer version since this one last read
    /// or wrote, the transition is [`LifecycleError::Stale`] and nothing is saved (see *One
    /// agent, several handles*).
    pub async fn transition(
        &mut self,
        to: Phase,
        data: Value,
    ) -> Result<CheckpointMeta, LifecycleError> {
        if !self.state.phase.can_go_to(to) {
            return Err(InvalidTransition {
                agent: self.state.agent.clone(),
                from: self.state.phase,
                to,
            }
            .into());
        }
        let mut next = self.state.clone();
        next.phase = to;
        next.data = data;
        next.updated_ms = now_ms();
        let stale = || LifecycleError::Stale {
            agent: next.agent.clone(),
            known: self.newest,
        };
        // Checked first, then fenced by the write itself: the store refuses a version that
        // exists or has a newer one (the version after ours written by another handle, then
        // pruned by `keep_last`). The check here only spares a write to a store that does not.
        let stored = self
            .checkpoints
            .versions(&next.agent)
            .await
            .map_err(CheckpointError::from)?;
        let version = match self.newest.checked_add(1) {
            Some(v) if stored.iter().all(|m| m.version <= self.newest) => v,
            _ => return Err(stale()),
        };
        let meta = match self.checkpoints.save_at(&next.agent, &next, version).await {
            Err(CheckpointError::Store(StoreError::Conflict(_))) => return Err(stale()),
            saved => saved?,
        };
        self.state = next;
        self.version = meta.version;
        self.newest = meta.version;
        Ok(meta)
    }

    /// Sets where the agent's input comes from and whom to notify next (saved with the next
    /// transition).
    pub fn route(&mut self, source: Option<String>, next: Option<String>) {
        self.state.source = source;
        self.state.next = next;
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// The whole state.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// The checkpoint version of the current state.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// A lifecycle transition that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent {agent:?}: cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The agent.
    pub agent: String,
    /// Its phase.
    pub from: Phase,
    /// The phase asked for.
    pub to: Phase,
}

impl From<InvalidTransition> for LifecycleError {
    fn from(e: InvalidTransition) -> Self {
        LifecycleError::InvalidTransition(e)
    }
}

impl From<CheckpointError> for LifecycleError {
    fn from(e: CheckpointError) -> Self {
        LifecycleError::Checkpoint(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;
    use std::sync::Arc;

    const ALL: [Phase; 5] = [
        Phase::Initialized,
        Phase::Waiting,
        Phase::Processing,
        Phase::Completed,
        Phase::Failed,
    ];

    #[test]
    fn transition_table() {
        let allowed: Vec<(Phase, Phase)> = ALL
            .iter()
            .flat_map(|a| ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_go_to(*b))
            .collect();
        use Phase::*;
        assert_eq!(
            allowed,
            [
                (Initialized, Waiting),
                (Initialized, Failed),
                (Waiting, Processing),
                (Waiting, Failed),
                (Processing, Waiting),
                (Processing, Completed),
                (Processing, Failed),
            ]
        );
        assert!(ALL.iter().filter(|p| p.is_final()).count() == 2);
    }

    #[tokio::test]
    async fn every_transition_is_checkpointed_and_invalid_ones_are_not() {
        let store = MemoryStore::new();
        let cps = Checkpoints::new(Arc::new(store.clone()));
        let mut a = Lifecycle::start(cps.clone(), "classifier").await.unwrap();
        a.route(Some("crawler".into()), Some("reporter".into()));
        a.transition(Phase::Waiting, json!(null)).await.unwrap();
        a.transition(Phase::Processing, json!({"doc": 1}))
            .await
            .unwrap();
        let err = a
            .transition(Phase::Initialized, json!(null))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            LifecycleError::InvalidTransition(InvalidTransition {
                from: Phase::Processing,
                to: Phase::Initialized,
                ..
            })
        ));
        assert_eq!(a.version(), 3);
        assert_eq!(cps.versions("classifier").await.unwrap().len(), 3);
        a.transition(Phase::Completed, json!({"label": "spam"}))
            .await
            .unwrap();
        assert!(
            a.transition(Phase::Failed, json!(null)).await.is_err(),
            "final"
        );

        // A restart after the newest checkpoint was corrupted: back one version.
        store.corrupt_checkpoint("classifier", 4, b"{}".to_vec());
        let mut b = Lifecycle::resume(cps, "classifier").await.unwrap();
        assert_eq!((b.phase(), b.version()), (Phase::Processing, 3));
        assert_eq!(b.state().data, json!({"doc": 1}));
        assert_eq!(b.state().next.as_deref(), Some("reporter"));
        // It goes on after the corrupt version, which it knows of: not a stale handle.
        let meta = b.transition(Phase::Waiting, json!(null)).await.unwrap();
        assert_eq!((meta.version, b.version()), (5, 5));
    }
}
