//! What a saga's journal says: its [`Event`]s, and the [`SagaInfo`] they fold into.

use std::fmt;
use std::str::FromStr;

use palisade_core::{BoxError, Class, class_of};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SagaError;
use crate::store::{JournalEntry, Store};

/// The workflow kind sagas are stored under.
pub(crate) const KIND: &str = "saga";

/// How deep a saga's input, a step's output or a transaction's payload may nest (arrays and
/// objects inside each other). The stores read entries back with `serde_json`, which stops at
/// 128 levels, and an entry wraps the value in a level or two of its own: a deeper value could
/// be written but never read back. Deeper input is refused
/// ([`SagaError::InvalidInput`]); a deeper step output is not journaled, and the step is
/// treated as interrupted (see [`Sagas`](crate::Sagas)). A deeper checkpoint state is
/// refused too ([`Checkpoints::save`](crate::checkpoint::Checkpoints::save)).
pub const MAX_DEPTH: usize = 100;

/// Whether `value` nests more than `max` arrays and objects inside each other (without
/// recursion, so any value can be checked).
pub(crate) fn nests_deeper_than(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        let inner: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(inner.map(|i| (i, depth + 1)));
    }
    false
}

/// Whether the JSON text `json` nests more than `max` arrays and objects inside each other:
/// [`nests_deeper_than`] of the value it holds, counted on the text (without decoding it,
/// which `serde_json` refuses beyond 128 levels). `json` must be valid JSON, as `serde_json`
/// writes it; brackets inside strings do not count.
pub(crate) fn text_nests_deeper_than(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether `id` may name a saga or a transaction: 1 to 200 bytes, without a NUL character
/// (which PostgreSQL cannot store in text; refused on every store, so that they agree).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && !id.contains('\0')
}

/// [`SagaError::InvalidInput`] if `value`, the input of workflow `id`, nests deeper than
/// [`MAX_DEPTH`].
pub(crate) fn check_depth(id: &str, value: &Value) -> Result<(), SagaError> {
    if nests_deeper_than(value, MAX_DEPTH) {
        return Err(SagaError::InvalidInput {
            saga: id.to_owned(),
            reason: format!(
                "it nests arrays and objects deeper than {MAX_DEPTH} levels, which the journal \
                 could not read back"
            ),
        });
    }
    Ok(())
}

/// Where a saga is.
///
/// | state | meaning | what happens next |
/// |---|---|---|
/// | `Running` | steps are being run | the next step, or recovery resumes it |
/// | `Compensating` | a step failed; completed steps are being undone, newest first | the next compensation |
/// | `Completed` | every step succeeded | nothing: final |
/// | `Compensated` | a step failed and every compensation that was needed ran | nothing: final |
/// | `Failed` | a step failed and nothing was undone: no completed step had a compensation, or a person discarded the escalated work | nothing: final |
/// | `Escalated` | a compensation kept failing (or an interrupted step could not be settled); a review item waits for a person | retry or discard from the review queue |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaState {
    /// Steps are running.
    Running,
    /// Completed steps are being compensated.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed; every needed compensation ran.
    Compensated,
    /// A step failed; nothing was undone.
    Failed,
    /// Waiting for a person in the review queue.
    Escalated,
}

impl SagaState {
    /// Every state.
    pub const ALL: [SagaState; 6] = [
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::Failed,
        SagaState::Escalated,
    ];

    /// The snake-case name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::Failed => "failed",
            SagaState::Escalated => "escalated",
        }
    }

    /// Whether the saga is over (`Completed`, `Compensated`, `Failed`).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            SagaState::Completed | SagaState::Compensated | SagaState::Failed
        )
    }
}

/// Its [`as_str`](SagaState::as_str) name; width and alignment apply (`{:<13}`).
impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that names no [`SagaState`] (or no [`TxState`](crate::twopc::TxState)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for SagaState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A failure as the journal keeps it: the message and the class
/// [`class_of`] gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The error's message (with its sources, `: `-separated).
    pub message: String,
    /// Its class.
    pub class: Class,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: u64,
}

impl ErrorRecord {
    /// The record of `err`, classified with [`class_of`].
    pub fn of(err: &BoxError, at_ms: u64) -> Self {
        ErrorRecord {
            message: crate::error::with_sources(&**err),
            class: class_of(err),
            at_ms,
        }
    }
}

/// Why work was escalated to a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EscalationReason {
    /// A compensation failed with an error that retrying cannot fix, or failed every attempt.
    CompensationFailed,
    /// A step may or may not have taken effect (a crash interrupted it and it is not
    /// idempotent, it timed out, or its repeat after a crash failed: see
    /// [`StepStatus::Uncertain`]), and it has no compensation to undo it if it did.
    UncertainStep,
}

/// A short phrase; width and alignment apply (`{:<22}`).
impl fmt::Display for EscalationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            EscalationReason::CompensationFailed => "compensation failed",
            EscalationReason::UncertainStep => "interrupted step with no compensation",
        })
    }
}

/// One journal entry of a saga. Each is written (durably) before the engine acts on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The saga was started with this input.
    SagaStarted {
        /// The definition's name.
        name: String,
        /// The step names, in order.
        steps: Vec<String>,
        /// The saga's input, given to every step.
        input: Value,
    },
    /// Step `step` is about to be called (attempt 2 and up only after a crash, for an
    /// idempotent step).
    StepStarted {
        /// The step's index.
        step: usize,
        /// Its attempt number, from 1.
        attempt: u32,
    },
    /// Step `step` succeeded with `output`.
    StepCompleted {
        /// The step's index.
        step: usize,
        /// What it returned.
        output: Value,
    },
    /// Step `step` failed (or was interrupted by a crash and cannot be repeated, or timed out,
    /// or failed when repeated after a crash: `interrupted`).
    StepFailed {
        /// The step's index.
        step: usize,
        /// The failure.
        error: ErrorRecord,
        /// Whether the step may have taken effect ([`StepStatus::Uncertain`]): it was
        /// interrupted by a crash, or timed out, or it is a repeat after a crash.
        interrupted: bool,
    },
    /// The compensation of step `step` is about to be called.
    CompensationStarted {
        /// The step's index.
        step: usize,
        /// Its attempt number, from 1.
        attempt: u32,
    },
    /// The compensation of step `step` succeeded.
    CompensationCompleted {
        /// The step's index.
        step: usize,
    },
    /// The compensation of step `step` failed.
    CompensationFailed {
        /// The step's index.
        step: usize,
        /// Its attempt number.
        attempt: u32,
        /// The failure.
        error: ErrorRecord,
    },
    /// Work on step `step` was handed to a person: review item `review`.
    Escalated {
        /// The step's index.
        step: usize,
        /// The review item's id.
        review: String,
        /// Why.
        reason: EscalationReason,
    },
    /// A person asked to retry the escalated work.
    ReviewRetried {
        /// The review item's id.
        review: String,
    },
    /// A person discarded the escalated work: it will not be done, and the saga ends
    /// [`Failed`](SagaState::Failed) with this entry (one entry, so that no crash can come
    /// between the discard and the saga's end).
    ///
    /// Earlier versions of this crate wrote a [`SagaFinished`](Event::SagaFinished) after it;
    /// journals with both read the same. One that stopped between the two (the discard
    /// journaled, the saga's record still `escalated`) reads as failed too, and is finished in
    /// the store by the next [`ReviewQueue`](crate::ReviewQueue) or
    /// [`Sagas::retry_review`](crate::Sagas::retry_review) call on its item, which refuses a
    /// retry of it.
    ReviewDiscarded {
        /// The review item's id.
        review: String,
        /// What they said.
        note: String,
    },
    /// The saga is over.
    SagaFinished {
        /// Its final state.
        state: SagaState,
    },
}

impl Event {
    /// The saga's state once this event is written (whatever it was before).
    pub(crate) fn state_after(&self) -> SagaState {
        match self {
            Event::SagaStarted { .. } | Event::StepStarted { .. } | Event::StepCompleted { .. } => {
                SagaState::Running
            }
            Event::StepFailed { .. }
            | Event::CompensationStarted { .. }
            | Event::CompensationCompleted { .. }
            | Event::CompensationFailed { .. }
            | Event::ReviewRetried { .. } => SagaState::Compensating,
            Event::Escalated { .. } => SagaState::Escalated,
            // Final at once: a discard is one entry. An earlier version's `SagaFinished`
            // after it says the same again.
            Event::ReviewDiscarded { .. } => SagaState::Failed,
            Event::SagaFinished { state } => *state,
        }
    }
}

/// Where one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started, no outcome written yet (running now, or interrupted by a crash).
    Started,
    /// Succeeded.
    Completed,
    /// Failed before taking effect: it returned an error that is not a timeout, on its first
    /// attempt.
    Failed,
    /// Failed in a way that leaves its outcome unknown, so it may have taken effect: it is
    /// compensated (its compensation gets `output: None`), or escalated without one. It was
    /// interrupted by a crash and is not idempotent; or it failed with an error of class
    /// [`Category::Timeout`](palisade_core::Category::Timeout) (a call cut off by a timeout
    /// may have done its work, only the answer was late); or it was repeated after a crash
    /// (idempotent) and the repeat failed (the interrupted attempt may have done its work); or
    /// its output nested too deep to journal.
    Uncertain,
}

/// Where the compensation of one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompensationStatus {
    /// Not needed (yet): the step has not taken effect, the saga has not failed, or the step
    /// has no compensation (its turn came and went without one).
    NotNeeded,
    /// Started, no outcome written yet.
    Started,
    /// Its latest attempt failed.
    Failed,
    /// It ran.
    Completed,
    /// Handed to a person.
    Escalated,
    /// A person settled it (retried past it, or discarded it).
    Settled,
    /// Given up: the step took effect and its turn to be undone had not come when a person
    /// discarded the saga's escalated work (a later step's compensation), so it will never
    /// be undone ([`SagaInfo::discarded`]). Nothing was run for it. A step without a
    /// compensation, which would have had nothing to run, reads so too: the journal does not
    /// say which steps have one.
    Abandoned,
}

/// One step of a saga, as its journal tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// The step's name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// How many times it was started.
    pub attempts: u32,
    /// What it returned, once completed.
    pub output: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<ErrorRecord>,
    /// Where its compensation stands.
    pub compensation: CompensationStatus,
    /// How many times its compensation was started (in all).
    pub compensation_attempts: u32,
    /// Compensation attempts since the last retry asked by a person.
    pub(crate) attempts_since_review: u32,
    /// Every failure of its compensation, oldest first.
    pub compensation_errors: Vec<ErrorRecord>,
}

/// A saga as its journal tells it: the result of [`inspect`](crate::Sagas::inspect), and the
/// outcome of [`run`](crate::Sagas::run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaInfo {
    /// Its id.
    pub id: String,
    /// Its definition's name.
    pub name: String,
    /// Its input.
    pub input: Value,
    /// Where it is.
    pub state: SagaState,
    /// Its steps, in order.
    pub steps: Vec<StepInfo>,
    /// The open or latest review item, if it was escalated.
    pub review: Option<String>,
    /// Whether a person discarded escalated work.
    pub discarded: bool,
    /// The journal, oldest first.
    pub journal: Vec<Record>,
}

/// One decoded journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its number.
    pub seq: u64,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: u64,
    /// The event.
    pub event: Event,
}

impl SagaInfo {
    /// How many times the journal escalated the saga to review item `review`.
    pub(crate) fn escalations_to(&self, review: &str) -> u32 {
        let n = self
            .journal
            .iter()
            .filter(|r| matches!(&r.event, Event::Escalated { review: to, .. } if to == review))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Folds a saga's journal.
    pub fn from_journal(id: &str, entries: Vec<JournalEntry>) -> Result<Self, SagaError> {
        let bad = |reason: String| SagaError::Inconsistent {
            saga: id.to_owned(),
            reason,
        };
        let mut it = entries.into_iter();
        let first = it
            .next()
            .ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        let event: Event = serde_json::from_value(first.event)
            .map_err(|e| bad(format!("entry 0 cannot be decoded: {e}")))?;
        let Event::SagaStarted { name, steps, input } = event.clone() else {
            return Err(bad("entry 0 does not start the saga".into()));
        };
        let mut info = SagaInfo {
            id: id.to_owned(),
            name,
            input,
            state: SagaState::Running,
            steps: steps
                .into_iter()
                .map(|name| StepInfo {
                    name,
                    status: StepStatus::Pending,
                    attempts: 0,
                    output: None,
                    error: None,
                    compensation: CompensationStatus::NotNeeded,
                    compensation_attempts: 0,
                    attempts_since_review: 0,
                    compensation_errors: Vec::new(),
                })
                .collect(),
            review: None,
            discarded: false,
            journal: vec![Record {
                seq: first.seq,
                at_ms: first.at_ms,
                event,
            }],
        };
        for (n, e) in it.enumerate() {
            if e.seq != n as u64 + 1 {
                return Err(bad(format!("entry {} follows entry {n}", e.seq)));
            }
            let event: Event = serde_json::from_value(e.event)
                .map_err(|err| bad(format!("entry {} cannot be decoded: {err}", e.seq)))?;
            info.apply(&event)
                .map_err(|reason| bad(format!("entry {}: {reason}", e.seq)))?;
            info.journal.push(Record {
                seq: e.seq,
                at_ms: e.at_ms,
                event,
            });
        }
        Ok(info)
    }

    /// The number of the next journal entry.
    pub(crate) fn next_seq(&self) -> u64 {
        self.journal.len() as u64
    }

    fn step_mut(&mut self, step: usize) -> Result<&mut StepInfo, String> {
        let n = self.steps.len();
        self.steps
            .get_mut(step)
            .ok_or_else(|| format!("step {step} of {n}"))
    }

    /// Applies one event (already written) to the view.
    pub(crate) fn apply(&mut self, event: &Event) -> Result<(), String> {
        self.state = event.state_after();
        match event {
            Event::SagaStarted { .. } => return Err("a second start".into()),
            Event::StepStarted { step, attempt } => {
                let s = self.step_mut(*step)?;
                s.status = StepStatus::Started;
                s.attempts = *attempt;
            }
            Event::StepCompleted { step, output } => {
                let s = self.step_mut(*step)?;
                s.status = StepStatus::Completed;
                s.output = Some(output.clone());
            }
            Event::StepFailed {
                step,
                error,
                interrupted,
            } => {
                let s = self.step_mut(*step)?;
                s.status = if *interrupted {
                    StepStatus::Uncertain
                } else {
                    StepStatus::Failed
                };
                s.error = Some(error.clone());
            }
            Event::CompensationStarted { step, .. } => {
                let s = self.step_mut(*step)?;
                s.compensation = CompensationStatus::Started;
                let overflow =
                    || format!("the compensation of step {step} counts too many attempts");
                s.compensation_attempts = s
                    .compensation_attempts
                    .checked_add(1)
                    .ok_or_else(overflow)?;
                s.attempts_since_review = s
                    .attempts_since_review
                    .checked_add(1)
                    .ok_or_else(overflow)?;
            }
            Event::CompensationCompleted { step } => {
                self.step_mut(*step)?.compensation = CompensationStatus::Completed;
            }
            Event::CompensationFailed { step, error, .. } => {
                let s = self.step_mut(*step)?;
                s.compensation = CompensationStatus::Failed;
                s.compensation_errors.push(error.clone());
            }
            Event::Escalated { step, review, .. } => {
                self.step_mut(*step)?.compensation = CompensationStatus::Escalated;
                self.review = Some(review.clone());
            }
            Event::ReviewRetried { .. } => {
                for s in &mut self.steps {
                    if s.compensation == CompensationStatus::Escalated {
                        s.attempts_since_review = 0;
                        s.compensation =
                            if s.status == StepStatus::Uncertain && s.compensation_attempts == 0 {
                                // Nothing to run again: the person vouched for the step.
                                CompensationStatus::Settled
                            } else {
                                CompensationStatus::Failed
                            };
                    }
                }
            }
            Event::ReviewDiscarded { .. } => {
                self.discarded = true;
                // Compensation goes newest first and stops at the escalated step: the steps
                // before it that took effect were still waiting their turn, which will not come.
                let mut waiting = false;
                for s in self.steps.iter_mut().rev() {
                    if s.compensation == CompensationStatus::Escalated {
                        s.compensation = CompensationStatus::Settled;
                        waiting = true;
                    } else if waiting
                        && matches!(s.status, StepStatus::Completed | StepStatus::Uncertain)
                        && s.compensation == CompensationStatus::NotNeeded
                    {
                        s.compensation = CompensationStatus::Abandoned;
                    }
                }
            }
            Event::SagaFinished { .. } => {}
        }
        Ok(())
    }
}

/// Read-only access to the sagas of a store, without their definitions: what the command-line
/// tool and dashboards use.
#[derive(Clone, Debug)]
pub struct Journal {
    store: std::sync::Arc<dyn Store>,
}

/// One line of a list of workflows: [`SagaSummary`] from [`Journal::list`],
/// [`TxSummary`](crate::twopc::TxSummary) from
/// [`Transactions::list`](crate::twopc::Transactions::list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSummary<S> {
    /// Its id.
    pub id: String,
    /// Its definition's name.
    pub name: String,
    /// Where it is.
    pub state: S,
    /// The process holding its claim, if any.
    pub owner: Option<String>,
    /// When it started (ms since the Unix epoch).
    pub created_ms: u64,
    /// When its journal last grew.
    pub updated_ms: u64,
}

/// One line of [`Journal::list`].
pub type SagaSummary = WorkflowSummary<SagaState>;

/// Checks that workflow `id` exists and is of `kind` ([`SagaError::NotFound`],
/// [`SagaError::WrongKind`]), before its journal is read as that kind's.
pub(crate) async fn of_kind(
    store: &dyn Store,
    id: &str,
    kind: &'static str,
) -> Result<(), SagaError> {
    match store.workflow(id).await? {
        None => Err(SagaError::NotFound(id.to_owned())),
        Some(w) if w.kind != kind => Err(SagaError::WrongKind {
            id: id.to_owned(),
            kind: w.kind,
            expected: kind,
        }),
        Some(_) => Ok(()),
    }
}

/// The error for starting workflow `id` as a `kind` when the store says the id is taken: a
/// [`SagaError::WrongKind`] if it is a workflow of another kind, else
/// [`SagaError::AlreadyExists`] (a store failure while looking is that failure).
pub(crate) async fn taken(store: &dyn Store, id: &str, kind: &'static str) -> SagaError {
    match store.workflow(id).await {
        Ok(Some(w)) if w.kind != kind => SagaError::WrongKind {
            id: id.to_owned(),
            kind: w.kind,
            expected: kind,
        },
        Ok(_) => SagaError::AlreadyExists {
            id: id.to_owned(),
            kind,
        },
        Err(e) => e.into(),
    }
}

/// Every workflow of `kind` in `store`, oldest first, with its state read as an `S`.
pub(crate) async fn summaries<S: FromStr<Err = UnknownState>>(
    store: &dyn Store,
    kind: &str,
) -> Result<Vec<WorkflowSummary<S>>, SagaError> {
    store
        .workflows(Some(kind))
        .await?
        .into_iter()
        .map(|w| {
            let state = w
                .state
                .parse()
                .map_err(|e: UnknownState| SagaError::Inconsistent {
                    saga: w.id.clone(),
                    reason: e.to_string(),
                })?;
            Ok(WorkflowSummary {
                id: w.id,
                name: w.name,
                state,
                owner: w.owner,
                created_ms: w.created_ms,
                updated_ms: w.updated_ms,
            })
        })
        .collect()
}

impl Journal {
    /// Reads the sagas of `store`.
    pub fn new(store: std::sync::Arc<dyn Store>) -> Self {
        Journal { store }
    }

    /// Every saga, oldest first, with its state.
    pub async fn list(&self) -> Result<Vec<SagaSummary>, SagaError> {
        summaries(&*self.store, KIND).await
    }

    /// Saga `id`, step by step, with its whole journal.
    ///
    /// [`SagaError::NotFound`] if there is no workflow of that id, and
    /// [`SagaError::WrongKind`] if it is not a saga (a two-phase-commit transaction: see
    /// [`Transactions::inspect`](crate::twopc::Transactions::inspect)); its journal is not
    /// read as a saga's, which it is not.
    pub async fn inspect(&self, id: &str) -> Result<SagaInfo, SagaError> {
        of_kind(&*self.store, id, KIND).await?;
        SagaInfo::from_journal(id, self.store.journal(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn a_record_keeps_each_source_s_message_once() {
        let err: BoxError = Box::new(Wrapper("calling the tool", "503 overloaded".into()));
        let record = ErrorRecord::of(&err, 42);
        assert_eq!(record.message, "calling the tool: 503 overloaded");
        assert_eq!(record.at_ms, 42);
        // A wrapper that already says its source's message does not repeat it.
        let err: BoxError = Box::new(Wrapper("tool: 503 overloaded", "503 overloaded".into()));
        assert_eq!(ErrorRecord::of(&err, 0).message, "tool: 503 overloaded");
    }

    /// The saga `events` (after its start, three steps `a`, `b`, `c`) fold into.
    fn fold(events: &[Event]) -> SagaInfo {
        let start = Event::SagaStarted {
            name: "order".into(),
            steps: vec!["a".into(), "b".into(), "c".into()],
            input: Value::Null,
        };
        let entries = std::iter::once(&start)
            .chain(events)
            .enumerate()
            .map(|(seq, e)| JournalEntry {
                seq: seq as u64,
                at_ms: 0,
                event: serde_json::to_value(e).unwrap(),
            })
            .collect();
        SagaInfo::from_journal("s1", entries).unwrap()
    }

    fn failure() -> ErrorRecord {
        ErrorRecord {
            message: "down".into(),
            class: Class::new(palisade_core::Category::ServerError),
            at_ms: 0,
        }
    }

    /// Step `a` completed, step `b` was interrupted (it may have taken effect), and the
    /// compensations of `b` then `a` were attempted.
    fn interrupted_then_compensated(b_compensated: bool) -> Vec<Event> {
        let mut events = vec![
            Event::StepStarted {
                step: 0,
                attempt: 1,
            },
            Event::StepCompleted {
                step: 0,
                output: Value::Null,
            },
            Event::StepStarted {
                step: 1,
                attempt: 1,
            },
            Event::StepFailed {
                step: 1,
                error: failure(),
                interrupted: true,
            },
        ];
        if b_compensated {
            events.push(Event::CompensationStarted {
                step: 1,
                attempt: 1,
            });
            events.push(Event::CompensationFailed {
                step: 1,
                attempt: 1,
                error: failure(),
            });
        }
        events
    }

    #[test]
    fn a_retried_review_runs_an_attempted_compensation_again_even_for_an_interrupted_step() {
        // The interrupted step's compensation was tried and kept failing: a person's retry
        // means "try it again", not "I vouch for it".
        let mut events = interrupted_then_compensated(true);
        events.push(Event::Escalated {
            step: 1,
            review: "r1".into(),
            reason: EscalationReason::CompensationFailed,
        });
        let escalated = fold(&events);
        assert_eq!(escalated.state, SagaState::Escalated);
        assert_eq!(escalated.steps[1].status, StepStatus::Uncertain);
        assert_eq!(
            escalated.steps[1].compensation,
            CompensationStatus::Escalated
        );
        events.push(Event::ReviewRetried {
            review: "r1".into(),
        });
        let info = fold(&events);
        assert_eq!(info.state, SagaState::Compensating);
        assert_eq!(info.steps[1].compensation, CompensationStatus::Failed);
        assert_eq!(info.steps[1].compensation_attempts, 1);
        assert_eq!(info.steps[1].attempts_since_review, 0);
        // The other steps are left as they were.
        assert_eq!(info.steps[0].compensation, CompensationStatus::NotNeeded);
        assert_eq!(info.steps[2].status, StepStatus::Pending);
        assert!(!info.discarded);
    }

    #[test]
    fn a_retried_review_settles_an_interrupted_step_nothing_was_run_for() {
        let mut events = interrupted_then_compensated(false);
        events.push(Event::Escalated {
            step: 1,
            review: "r1".into(),
            reason: EscalationReason::UncertainStep,
        });
        events.push(Event::ReviewRetried {
            review: "r1".into(),
        });
        let info = fold(&events);
        assert_eq!(info.steps[1].compensation, CompensationStatus::Settled);
        assert_eq!(info.steps[0].compensation, CompensationStatus::NotNeeded);
    }

    #[test]
    fn a_discarded_review_settles_only_the_escalated_step() {
        // `c` failed; `b`'s compensation ran, `a`'s kept failing and was escalated.
        let events = vec![
            Event::StepStarted {
                step: 0,
                attempt: 1,
            },
            Event::StepCompleted {
                step: 0,
                output: Value::Null,
            },
            Event::StepStarted {
                step: 1,
                attempt: 1,
            },
            Event::StepCompleted {
                step: 1,
                output: Value::Null,
            },
            Event::StepStarted {
                step: 2,
                attempt: 1,
            },
            Event::StepFailed {
                step: 2,
                error: failure(),
                interrupted: false,
            },
            Event::CompensationStarted {
                step: 1,
                attempt: 1,
            },
            Event::CompensationCompleted { step: 1 },
            Event::CompensationStarted {
                step: 0,
                attempt: 1,
            },
            Event::CompensationFailed {
                step: 0,
                attempt: 1,
                error: failure(),
            },
            Event::Escalated {
                step: 0,
                review: "r1".into(),
                reason: EscalationReason::CompensationFailed,
            },
            Event::ReviewDiscarded {
                review: "r1".into(),
                note: "refunded by hand".into(),
            },
        ];
        let info = fold(&events);
        assert!(info.discarded);
        // One entry ends the saga: no crash can leave it discarded but escalated.
        assert_eq!(info.state, SagaState::Failed);
        assert_eq!(info.review.as_deref(), Some("r1"));
        assert_eq!(info.steps[0].compensation, CompensationStatus::Settled);
        assert_eq!(info.steps[1].compensation, CompensationStatus::Completed);
        assert_eq!(info.steps[2].compensation, CompensationStatus::NotNeeded);
        // An earlier version's journal, with the saga's end written after the discard, reads
        // the same.
        let mut old = events.clone();
        old.push(Event::SagaFinished {
            state: SagaState::Failed,
        });
        let old = fold(&old);
        assert_eq!(old.state, SagaState::Failed);
        assert!(old.discarded);
        assert_eq!(old.steps, info.steps);
        assert_eq!(old.journal.len(), info.journal.len() + 1);
        // The discard's entry is final, so writing it gives the claim back.
        let discard = events.last().unwrap();
        assert!(discard.state_after().is_final());
    }

    /// Steps `ran` run (step `uncertain`, if any, interrupted rather than completed), the
    /// step after them fails, and the compensation of step `escalated` is escalated and
    /// discarded; the compensations of `compensated` ran before it.
    fn discarded(
        ran: std::ops::Range<usize>,
        uncertain: Option<usize>,
        compensated: &[usize],
        escalated: usize,
    ) -> SagaInfo {
        let mut events = Vec::new();
        let done = ran.end;
        for step in ran {
            events.push(Event::StepStarted { step, attempt: 1 });
            events.push(if uncertain == Some(step) {
                Event::StepFailed {
                    step,
                    error: failure(),
                    interrupted: true,
                }
            } else {
                Event::StepCompleted {
                    step,
                    output: Value::Null,
                }
            });
        }
        events.push(Event::StepStarted {
            step: done,
            attempt: 1,
        });
        events.push(Event::StepFailed {
            step: done,
            error: failure(),
            interrupted: false,
        });
        for &step in compensated {
            events.push(Event::CompensationStarted { step, attempt: 1 });
            events.push(Event::CompensationCompleted { step });
        }
        events.push(Event::CompensationStarted {
            step: escalated,
            attempt: 1,
        });
        events.push(Event::CompensationFailed {
            step: escalated,
            attempt: 1,
            error: failure(),
        });
        events.push(Event::Escalated {
            step: escalated,
            review: "r1".into(),
            reason: EscalationReason::CompensationFailed,
        });
        events.push(Event::ReviewDiscarded {
            review: "r1".into(),
            note: "done by hand".into(),
        });
        fold(&events)
    }

    fn compensations(info: &SagaInfo) -> Vec<CompensationStatus> {
        info.steps.iter().map(|s| s.compensation).collect()
    }

    /// A discard gives up the compensations whose turn had not come: those of the steps before
    /// the escalated one that took effect. They read as abandoned, not as not needed.
    #[test]
    fn a_discard_abandons_the_earlier_steps_compensations() {
        use CompensationStatus::*;
        // a and b completed, c failed; b's compensation was escalated, a's never ran.
        let info = discarded(0..2, None, &[], 1);
        assert_eq!(compensations(&info), [Abandoned, Settled, NotNeeded]);
        assert_eq!(info.steps[0].compensation_attempts, 0);
        assert_eq!(
            serde_json::to_value(&info.steps[0]).unwrap()["compensation"],
            "abandoned"
        );
        // Step a was interrupted (it may have taken effect): abandoned too.
        let info = discarded(0..2, Some(0), &[], 1);
        assert_eq!(compensations(&info), [Abandoned, Settled, NotNeeded]);
        // Nothing before the escalated step: nothing abandoned; a later step that took
        // effect and had its turn (no compensation to run) stays as it was.
        let info = discarded(0..2, None, &[], 0);
        assert_eq!(compensations(&info), [Settled, NotNeeded, NotNeeded]);
        // Only a step that ran: one that never started (in a journal written by hand) has
        // nothing to undo.
        let info = discarded(1..2, None, &[], 1);
        assert_eq!(compensations(&info), [NotNeeded, Settled, NotNeeded]);
        // A compensation that ran stays run, wherever it is.
        let info = discarded(0..2, None, &[0], 1);
        assert_eq!(compensations(&info), [Completed, Settled, NotNeeded]);
    }

    /// States, reasons and review statuses are shown in padded columns.
    #[test]
    fn displays_honour_width_and_alignment() {
        assert_eq!(format!("[{:<13}]", SagaState::Failed), "[failed       ]");
        assert_eq!(format!("[{:>8}]", SagaState::Running), "[ running]");
        assert_eq!(
            format!("[{:<22}]", EscalationReason::CompensationFailed),
            "[compensation failed   ]"
        );
        assert_eq!(
            format!("[{:<16}]", crate::review::ReviewStatus::Open),
            "[open            ]"
        );
        assert_eq!(
            format!("[{:<13}]", crate::twopc::TxState::Committed),
            "[committed    ]"
        );
        assert_eq!(
            format!("[{:<12}]", crate::lifecycle::Phase::Waiting),
            "[waiting     ]"
        );
    }

    #[test]
    fn depth_counts_arrays_and_objects_inside_each_other() {
        let nested = |depth: usize| (0..depth).fold(Value::from(1), |v, _| Value::from(vec![v]));
        assert!(!nests_deeper_than(&Value::Null, 0));
        assert!(nests_deeper_than(&serde_json::json!([]), 0));
        assert!(!nests_deeper_than(&serde_json::json!([]), 1));
        for max in [1, 5, MAX_DEPTH] {
            assert!(!nests_deeper_than(&nested(max), max), "{max}");
            assert!(nests_deeper_than(&nested(max + 1), max), "{max}");
        }
        // Width does not count; the deepest branch does, wherever it is.
        let wide = serde_json::json!({"a": [1, 2, 3], "b": {"c": [[]], "d": null}, "e": []});
        assert!(!nests_deeper_than(&wide, 4));
        assert!(nests_deeper_than(&wide, 3));
        assert!(check_depth("s", &nested(MAX_DEPTH)).is_ok());
        let err = check_depth("s", &nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(
            matches!(err, SagaError::InvalidInput { ref saga, .. } if saga == "s"),
            "{err}"
        );
    }

    /// Counted on the text, depth is what it is on the value: brackets and quotes inside
    /// strings (escaped or not) do not count.
    #[test]
    fn depth_on_the_text_is_depth_on_the_value() {
        let nested = |depth: usize| (0..depth).fold(Value::from(1), |v, _| Value::from(vec![v]));
        let tricky = serde_json::json!({
            "a": "[[[{{{", "b\"[": ["]]]\\", {"c": "\\\"{{"}], "d": [[], {}], "e": "\u{1F600}["
        });
        let values = [
            Value::Null,
            serde_json::json!("[[["),
            serde_json::json!([]),
            nested(1),
            nested(5),
            nested(MAX_DEPTH),
            nested(MAX_DEPTH + 1),
            nested(200),
            tricky,
        ];
        for v in &values {
            let text = serde_json::to_vec(v).unwrap();
            for max in [0, 1, 2, 3, 4, 5, MAX_DEPTH, MAX_DEPTH + 1] {
                assert_eq!(
                    text_nests_deeper_than(&text, max),
                    nests_deeper_than(v, max),
                    "{max}: {}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn escalation_reasons_read_as_sentences() {
        assert_eq!(
            EscalationReason::CompensationFailed.to_string(),
            "compensation failed"
        );
        assert_eq!(
            EscalationReason::UncertainStep.to_string(),
            "interrupted step with no compensation"
        );
    }
}
