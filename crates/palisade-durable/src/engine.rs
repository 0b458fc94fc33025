//! The saga engine: runs sagas, writes every transition ahead, recovers after a crash.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use palisade_core::{BoxError, Category, Class, ConfigError};
use palisade_retry::{Backoff, Jitter};
use tower::ServiceExt;

use crate::error::{SagaError, StoreError};
use crate::journal::{
    CompensationStatus, ErrorRecord, EscalationReason, Event, Journal, KIND, MAX_DEPTH, SagaInfo,
    SagaState, SagaSummary, StepStatus, nests_deeper_than,
};
use crate::lease;
use crate::review::{ReviewItem, ReviewQueue, ReviewStatus};
use crate::saga::{CompensationRequest, SagaDefinition, StepRequest, compensation_key, step_key};
use crate::settings::{Settings, by_name, workflow_setters};
use crate::store::{Append, Claim, Store, StoredReview};

/// Mixed into the seed of compensation delays.
const DELAY_SALT: u64 = 0xcbf2_9ce4_8422_2325;

/// Now, in ms since the Unix epoch.
///
/// Wall time, not `tokio::time::Instant`, because it is persisted: journal and review
/// timestamps and claim leases are read back after a restart and by other processes, on other
/// machines. It is read through [`wall_clock`](palisade_core::hint::wall_clock), which moves
/// with tokio's clock, so paused-clock tests move it too.
pub(crate) fn now_ms() -> u64 {
    palisade_core::hint::wall_clock()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends a saga's events for one owner, keeping its [`SagaInfo`] in step.
pub(crate) struct Writer {
    store: Arc<dyn Store>,
    owner: String,
    /// The engine instance of `owner` writing (empty: any; see [`Store::claim`]).
    instance: String,
    lease: Duration,
    /// When the claim was last secured, by tokio's clock: when the claim, the renewal or this
    /// writer's latest journal entry that set it was *sent* (the store sets the lease from the
    /// sender's clock then), never later: the heartbeat's deadline counts from it.
    secured: tokio::time::Instant,
    pub(crate) info: SagaInfo,
}

impl Writer {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        owner: String,
        instance: String,
        lease: Duration,
        secured: tokio::time::Instant,
        info: SagaInfo,
    ) -> Self {
        Writer {
            store,
            owner,
            instance,
            lease,
            secured,
            info,
        }
    }

    /// Runs `work` (a step, a compensation) while renewing the claim on the saga; a
    /// [`SagaError::LeaseLost`] if another process took the saga over meanwhile (the work is
    /// then dropped, its outcome not journaled).
    async fn renewing<F: std::future::Future>(&self, work: F) -> Result<F::Output, SagaError> {
        lease::renewing(
            &*self.store,
            &self.info.id,
            &self.owner,
            &self.instance,
            self.lease,
            self.secured,
            work,
        )
        .await
        .map_err(|lease::Lost| SagaError::LeaseLost(self.info.id.clone()))
    }

    /// Writes `event` to the journal (durably), then applies it.
    pub(crate) async fn log(&mut self, event: Event) -> Result<(), SagaError> {
        let state = event.state_after();
        // Taken before the append: the lease the entry sets runs from when it was sent, not
        // from when the store answered (a slow write must not stretch the heartbeat's deadline).
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let append = Append::new(
            self.info.id.clone(),
            KIND,
            self.info.name.clone(),
            self.info.next_seq(),
            now,
            serde_json::to_value(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            state.as_str(),
            self.owner.clone(),
            now.saturating_add(crate::settings::millis(self.lease)),
        )
        .with_instance(self.instance.clone())
        .with_release(state.is_final() || matches!(event, Event::Escalated { .. }));
        self.store.append(append).await?;
        self.secured = sent;
        self.info
            .apply(&event)
            .map_err(|reason| SagaError::Inconsistent {
                saga: self.info.id.clone(),
                reason,
            })?;
        self.info.journal.push(crate::journal::Record {
            seq: self.info.next_seq(),
            at_ms: now,
            event,
        });
        Ok(())
    }
}

/// The saga engine: definitions, a store, and how compensations are retried.
///
/// Cloning is cheap and clones share everything; run sagas concurrently from as many tasks
/// as needed.
///
/// # Write-ahead
///
/// Every transition (step started, step completed with its output, step failed with its class,
/// compensation started, completed or failed, escalation, saga finished) is appended to the
/// saga's journal, durably, *before* the engine acts on it. A process killed at any instant
/// therefore leaves a journal that says exactly what may have happened, and
/// [`recover`](Sagas::recover) resumes from there:
///
/// * a completed step is never run again: its output is in the journal;
/// * a step that was started but has no outcome is repeated if it is
///   [idempotent](crate::saga::Step::idempotent) (with the same idempotency key); otherwise
///   it may have taken effect, so it fails as *interrupted* and is compensated like a
///   completed step (its compensation gets `output: None`), or escalated if it has no
///   compensation. An idempotent step is repeated only until
///   [`compensation_attempts`](SagasBuilder::compensation_attempts) of its attempts (default
///   5) have started with no outcome: one that takes the process down every time (a panic on
///   a poisonous input, an out-of-memory kill) then fails as interrupted too, and is
///   compensated or escalated, instead of being run by every recovery forever;
/// * a step that fails with an error of class [`Category::Timeout`] (as
///   [`class_of`](palisade_core::class_of) reads it: the error of palisade's timeout layer,
///   or any error that says it is a timeout) fails as *interrupted* too, idempotent or not: a
///   call cut off by a timeout may have reached the other side and taken effect there, only
///   its answer was late, so its outcome is unknown, exactly as with a crash. It is
///   compensated (with `output: None`), or escalated if it has no compensation. A timeout
///   anywhere in the error's chain counts (a wrapper of the step's own does not hide it), and
///   so does a timed-out *earlier* attempt of a retry: palisade-retry wraps the final error
///   of a request some of whose earlier attempts timed out in
///   [`AfterTimeouts`](palisade_core::failure::AfterTimeouts), so a non-idempotent step
///   behind palisade's retry (a preset) whose first attempt timed out and whose last answered
///   HTTP 500 is uncertain too, not failed: a retry around a non-idempotent step keeps this
///   guarantee, also under layers that wrap the retry's error again (a classify layer's
///   [`Classified`](palisade_core::Classified), an `io::Error` a transport made of it), since
///   the mark is looked for along the whole chain ([`palisade_core::error::chain`]). (A retry layer of another crate must not retry a non-idempotent step after a
///   timeout, or must say so in its error likewise.) Any other error says the step failed
///   before taking effect: it is not compensated;
/// * an idempotent step repeated after a crash whose repeat fails fails as *interrupted*,
///   whatever the repeat's error: the attempt the crash cut off may have taken effect, and
///   the repeat's failure does not say it did not. It is compensated, or escalated;
/// * a step whose output nests deeper than [`MAX_DEPTH`] took
///   effect, but its output cannot be journaled (the journal could not read it back): it
///   fails as interrupted too (idempotent or not: a repeat would return the same), and is
///   compensated with `output: None` or escalated;
/// * a compensation that was started but has no outcome is called again (compensations must
///   be idempotent; they get a stable key), and a compensation whose success is journaled is
///   never called again, so each completed step is compensated exactly once. Such an attempt
///   counts as a failed one: a compensation that takes the process down every time (a
///   panic, an out-of-memory kill) is escalated once its attempts are spent, not called by
///   every recovery forever.
///
/// # Compensation
///
/// When a step fails, the completed steps are compensated newest first. A compensation that
/// fails is retried after a backoff ([`Backoff`] and [`Jitter`] from `palisade-retry`,
/// default 100 ms doubling to 10 s, ±10 %, drawn from a seeded rng so that a seed gives the
/// same delays) up to [`compensation_attempts`](SagasBuilder::compensation_attempts) times
/// (default 5; an attempt that left no outcome, because the process stopped while it ran,
/// counts), unless its class says retrying cannot help (not retryable: a validation error,
/// refused credentials); then the saga is escalated to the [review queue](ReviewQueue) and
/// stops there: earlier compensations wait, in order, for a person to retry or discard it.
/// Nothing is dropped silently.
///
/// # Claims
///
/// Each saga is claimed by one engine with a lease ([`lease`](SagasBuilder::lease), default
/// 60 s, 1 s to 1 day) renewed by every journal entry and, while a step or a compensation
/// runs (or waits for its backoff), by a heartbeat every third of the lease, so a step may
/// take longer than a lease. The claim names the engine twice: by its owner name
/// ([`owner`](SagasBuilder::owner), default `"local"`, kept across restarts) and by an
/// instance token the engine draws when it is built (new for every engine, and at every
/// start). The store accepts journal entries, heartbeats and releases only from the instance
/// that holds the claim.
///
/// A process that recovers takes the unfinished sagas:
///
/// * that nobody holds, or whose lease expired (the holder stopped renewing it for a whole
///   lease);
/// * that this very engine holds (those it is running in another task it leaves alone);
/// * that another engine under the same owner name holds but whose claim it last renewed
///   more than seven twelfths of the lease ago (35 s of the default 60 s).
///
/// The last rule is why a restart under the same name resumes its sagas soon, without waiting
/// a whole lease, and yet two live engines under one name (two engines of one process, two
/// replicas of a service both left at `"local"`) never take each other's sagas: a live
/// engine renews its claim every third of the lease while it works, so its claim never looks
/// that old, and one that can no longer renew drops its step half a lease after it last
/// secured the claim (see [`lease`](SagasBuilder::lease)), before the other may take it.
/// Only a claim that has visibly missed its heartbeat is taken. The twelfth of a lease
/// between the two is the margin for a renewal that answers late and for clocks out of step.
/// An engine under another owner name waits for the whole lease, as it always did.
///
/// A lease runs out only when its holder stops renewing it: the process died or stalled, or
/// the store was unreachable. Another engine may then take the saga over. The first holder
/// learns it from its next renewal, drops the step in flight (as a crash would) and returns
/// [`SagaError::LeaseLost`], or from its next journal entry, which is refused
/// ([`StoreError::Conflict`]); either way it stops touching the saga and never journals an
/// outcome over the new holder's.
///
/// Sagas journaled by an earlier version of this crate carry no instance nor renewal time:
/// another engine under their owner's name takes them once their lease has run out, as one
/// under another name does.
#[derive(Clone)]
pub struct Sagas {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    defs: HashMap<String, SagaDefinition>,
    settings: Settings,
    active: Mutex<HashSet<String>>,
}

impl fmt::Debug for Sagas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.inner.defs.keys().collect();
        names.sort();
        f.debug_struct("Sagas")
            .field("store", &self.inner.store)
            .field("definitions", &names)
            .field("owner", &self.inner.settings.owner)
            .field("lease", &self.inner.settings.lease)
            .field("compensation_attempts", &self.inner.settings.attempts)
            .finish()
    }
}

/// Builds a [`Sagas`] engine.
#[derive(Debug)]
pub struct SagasBuilder {
    store: Arc<dyn Store>,
    defs: Vec<SagaDefinition>,
    settings: Settings,
}

impl SagasBuilder {
    workflow_setters! {
        definition: SagaDefinition,
        what: "sagas",
        work: "a step or a compensation runs",
        /// How many times a compensation is tried before it is escalated (default 5, at
        /// least 1). It also bounds how many attempts of an idempotent step are started
        /// with no outcome (each one interrupted by a crash) before the step is treated as
        /// possibly done (see *Write-ahead*).
        attempts: compensation_attempts,
        /// The delay between compensation attempts (default: 100 ms doubling to 10 s,
        /// ±10 %).
        backoff: compensation_backoff,
    }

    /// Checks every option and builds the engine.
    pub fn build(self) -> Result<Sagas, ConfigError> {
        let settings = self.settings.built("compensation_attempts")?;
        Ok(Sagas {
            inner: Arc::new(Inner {
                store: self.store,
                defs: by_name(self.defs, |d| &d.name)?,
                settings,
                active: Mutex::new(HashSet::new()),
            }),
        })
    }
}

/// What [`Sagas::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// The sagas it resumed or retried, as they ended (or parked, escalated).
    pub resumed: Vec<SagaInfo>,
    /// The sagas it could not resume or retry, and why. They stay as their journal says.
    ///
    /// A review item that cannot be read (written by a later version, edited by hand) is
    /// reported here too, under its saga's id, with a [`StoreError::Corrupt`] that names the
    /// item; the other items are read and their requested retries run all the same. Closed
    /// items (retried, discarded) are not read: recovery has nothing to do with them.
    pub failed: Vec<(String, SagaError)>,
    /// Why the review queue could not be read, if it could not (the store failed): the retries
    /// a person requested did not run this time; the next recovery runs them. The sagas in
    /// [`resumed`](Recovery::resumed) and [`failed`](Recovery::failed) were resumed (or not)
    /// before, and are reported as usual.
    pub review_error: Option<SagaError>,
}

/// Whether a step whose attempt `attempt` failed with `error` may have taken effect all the
/// same, and so must be journaled as interrupted (compensated, or escalated without a
/// compensation) rather than as failed before taking effect:
///
/// * its class is [`Category::Timeout`]: the call was cut off while the other side may have
///   done the work, only the answer was late, exactly as with a crash;
/// * an error anywhere in its chain (`err` itself or a source) is of class
///   [`Category::Timeout`]: a wrapper of the step's own does not hide a timeout below it;
/// * it is the final error of a retry some of whose earlier attempts timed out
///   ([`AfterTimeouts`](palisade_core::failure::AfterTimeouts), which palisade-retry wraps it
///   in, found under any wrapper along [`palisade_core::error::chain`], such as a classify
///   layer's [`Classified`](palisade_core::Classified) over the retry): the attempt the timeout
///   cut off may have taken effect, whatever the last attempt (an HTTP 500, say) answered;
/// * it is a repeat (`attempt` above 1: an idempotent step repeated because a crash
///   interrupted the attempt before it): whatever the repeat says, the interrupted attempt
///   may have taken effect, and a failing repeat does not say it did not.
fn may_have_taken_effect(error: &ErrorRecord, err: &BoxError, attempt: u32) -> bool {
    if error.class.category == Category::Timeout || attempt > 1 {
        return true;
    }
    palisade_core::failure::AfterTimeouts::find(&**err).is_some()
        || palisade_core::error::chain(&**err)
            .any(|e| palisade_core::class_of_dyn(e).category == Category::Timeout)
}

/// Who asks for a review item's retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// A caller of [`Sagas::retry_review`], now, on an item open or with a retry requested.
    Now,
    /// Recovery, for the retry requested on the item: only while that request stands.
    ByRequest,
}

/// What to do next, decided from the journal alone.
#[derive(Debug, PartialEq)]
enum Action {
    Run(usize, u32),
    /// Step `.0` was started and has no outcome: it may have taken effect. `.1`: it is
    /// idempotent, but its repeats after crashes are spent.
    Interrupt(usize, bool),
    Compensate(usize, u32),
    Escalate(usize, EscalationReason),
    Finish(SagaState),
    Park,
}

/// The number after `n`, the latest attempt journaled for step `step` of saga `info` (of its
/// compensation, if `compensation`); a [`SagaError::Inconsistent`] naming the entry that gave
/// it if there is none (a journal edited by hand, or corrupt: the engine counts attempts one
/// by one from 1).
fn next_attempt(
    info: &SagaInfo,
    step: usize,
    n: u32,
    compensation: bool,
) -> Result<u32, SagaError> {
    n.checked_add(1).ok_or_else(|| {
        let (what, entry) = if compensation {
            let entry = info.journal.iter().rev().find(
                |r| matches!(r.event, Event::CompensationStarted { step: s, .. } if s == step),
            );
            ("the compensation of step", entry)
        } else {
            let entry = info
                .journal
                .iter()
                .rev()
                .find(|r| matches!(r.event, Event::StepStarted { step: s, .. } if s == step));
            ("step", entry)
        };
        let entry = entry.map_or_else(|| "an entry".to_owned(), |r| format!("entry {}", r.seq));
        SagaError::Inconsistent {
            saga: info.id.clone(),
            reason: format!(
                "{entry} puts {what} {step} at attempt {n}, which leaves no next attempt \
                 (attempts count from 1, one at a time)"
            ),
        }
    })
}

fn next_action(
    info: &SagaInfo,
    def: &SagaDefinition,
    max_attempts: u32,
) -> Result<Action, SagaError> {
    if info.state.is_final() || info.state == SagaState::Escalated {
        return Ok(Action::Park);
    }
    if info.discarded {
        return Ok(Action::Finish(SagaState::Failed));
    }
    let failed = info
        .steps
        .iter()
        .any(|s| matches!(s.status, StepStatus::Failed | StepStatus::Uncertain));
    if !failed {
        for (i, s) in info.steps.iter().enumerate() {
            match s.status {
                StepStatus::Completed => continue,
                // An attempt with no outcome journaled took the process down (or the process
                // died of something else meanwhile): an idempotent step is repeated, but only
                // until `max_attempts` attempts have started, so that one that crashes the
                // process every time (a panic on a poisonous input) is not run by every
                // recovery forever. Then it is treated as possibly done.
                StepStatus::Started if def.steps[i].idempotent && s.attempts < max_attempts => {
                    return Ok(Action::Run(i, next_attempt(info, i, s.attempts, false)?));
                }
                StepStatus::Started => {
                    return Ok(Action::Interrupt(i, def.steps[i].idempotent));
                }
                _ => return Ok(Action::Run(i, 1)),
            }
        }
        return Ok(Action::Finish(SagaState::Completed));
    }
    for (i, s) in info.steps.iter().enumerate().rev() {
        if !matches!(s.status, StepStatus::Completed | StepStatus::Uncertain) {
            continue;
        }
        match s.compensation {
            CompensationStatus::Completed | CompensationStatus::Settled => continue,
            CompensationStatus::Escalated => return Ok(Action::Park),
            _ => {}
        }
        if def.steps[i].compensation.is_none() {
            if s.status == StepStatus::Uncertain {
                return Ok(Action::Escalate(i, EscalationReason::UncertainStep));
            }
            continue;
        }
        // A compensation started with no outcome journaled took the process down (or the
        // process died of something else meanwhile): it counts as a failed attempt, so one that
        // crashes the process every time is escalated once its attempts are spent instead of
        // being called again by every recovery, forever.
        let no_outcome = s.compensation == CompensationStatus::Started;
        if (s.compensation == CompensationStatus::Failed || no_outcome)
            && s.attempts_since_review > 0
        {
            let hopeless = !no_outcome
                && s.compensation_errors
                    .last()
                    .is_some_and(|e| !e.class.retryable);
            if hopeless || s.attempts_since_review >= max_attempts {
                return Ok(Action::Escalate(i, EscalationReason::CompensationFailed));
            }
        }
        return Ok(Action::Compensate(
            i,
            next_attempt(info, i, s.compensation_attempts, true)?,
        ));
    }
    let undone = info
        .steps
        .iter()
        .any(|s| s.compensation == CompensationStatus::Completed);
    Ok(Action::Finish(if undone {
        SagaState::Compensated
    } else {
        SagaState::Failed
    }))
}

/// Checks that saga `info` was started with definition `def`: the same steps, in the same
/// order. Driven by another definition (a deploy that removed, added, renamed or reordered
/// steps while the saga waited), it would index past the steps or undo one step with
/// another's compensation; it is left as journaled instead, for a process that has its
/// definition.
fn started_with(info: &SagaInfo, def: &SagaDefinition) -> Result<(), SagaError> {
    let journaled = info.steps.iter().map(|s| s.name.as_str());
    if journaled.eq(def.steps.iter().map(|s| s.name.as_str())) {
        return Ok(());
    }
    Err(SagaError::Inconsistent {
        saga: info.id.clone(),
        reason: format!(
            "it was started with steps {:?}, definition {:?} now has {:?}",
            info.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            def.name,
            def.step_names()
        ),
    })
}

/// Marks workflow `id` as driven by this process while it lives (see [`enter`]).
pub(crate) struct ActiveGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

/// Marks workflow `id` as driven by this process, in `set`; `None` if it is already. An
/// engine's recovery claims its own workflows back at once, those it is running included:
/// this is how it tells them apart.
pub(crate) fn enter<'a>(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<ActiveGuard<'a>> {
    let mut active = set.lock().unwrap_or_else(|p| p.into_inner());
    active.insert(id.to_owned()).then(|| ActiveGuard {
        set,
        id: id.to_owned(),
    })
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Sagas {
    /// An engine over `store`; register definitions with [`SagasBuilder::define`].
    pub fn builder(store: Arc<dyn Store>) -> SagasBuilder {
        SagasBuilder {
            store,
            defs: Vec::new(),
            settings: Settings::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Read-only access to the journal.
    pub fn journal(&self) -> Journal {
        Journal::new(self.inner.store.clone())
    }

    /// The review queue.
    pub fn review_queue(&self) -> ReviewQueue {
        ReviewQueue::new(self.inner.store.clone())
    }

    /// Every saga with its state, oldest first.
    pub async fn list(&self) -> Result<Vec<SagaSummary>, SagaError> {
        self.journal().list().await
    }

    /// Saga `id`, step by step (see [`Journal::inspect`]).
    pub async fn inspect(&self, id: &str) -> Result<SagaInfo, SagaError> {
        self.journal().inspect(id).await
    }

    fn enter(&self, id: &str) -> Option<ActiveGuard<'_>> {
        enter(&self.inner.active, id)
    }

    /// A writer for `info`, whose claim was secured at `secured` (when the write that set it
    /// was sent).
    fn writer(&self, info: SagaInfo, secured: tokio::time::Instant) -> Writer {
        Writer::new(
            self.inner.store.clone(),
            self.inner.settings.owner.clone(),
            self.inner.settings.instance.clone(),
            self.inner.settings.lease,
            secured,
            info,
        )
    }

    fn definition(&self, name: &str) -> Result<&SagaDefinition, SagaError> {
        self.inner
            .defs
            .get(name)
            .ok_or_else(|| SagaError::UnknownDefinition(name.to_owned()))
    }

    /// Starts saga `id` of definition `name` with `input` and drives it to its end: every step
    /// completed, or the completed ones compensated, or escalated to the review queue.
    ///
    /// A failing step is not an error here: the returned [`SagaInfo`] says how the saga ended.
    /// Errors are the engine's: an unknown definition, an id that exists
    /// ([`SagaError::AlreadyExists`]; [`SagaError::WrongKind`] if it is a two-phase-commit
    /// transaction's), an id that is empty or longer than 200 bytes
    /// ([`SagaError::InvalidId`]), an input nested deeper than
    /// [`MAX_DEPTH`] ([`SagaError::InvalidInput`]; nothing is
    /// written), a store failure (the saga then stays as journaled and the next
    /// [`recover`](Sagas::recover) resumes it).
    pub async fn run(
        &self,
        name: &str,
        id: &str,
        input: serde_json::Value,
    ) -> Result<SagaInfo, SagaError> {
        if !crate::journal::valid_id(id) {
            return Err(SagaError::InvalidId(id.to_owned()));
        }
        let def = self.definition(name)?;
        crate::journal::check_depth(id, &input)?;
        let _guard = self.enter(id).ok_or_else(|| SagaError::AlreadyExists {
            id: id.to_owned(),
            kind: KIND,
        })?;
        let start = Event::SagaStarted {
            name: name.to_owned(),
            steps: def.step_names(),
            input,
        };
        let event = serde_json::to_value(&start).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let append = Append::new(
            id,
            KIND,
            name,
            0,
            now,
            event.clone(),
            SagaState::Running.as_str(),
            self.inner.settings.owner.clone(),
            self.inner.settings.lease_until(now),
        )
        .with_instance(self.inner.settings.instance.clone());
        match self.inner.store.append(append).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(crate::journal::taken(&*self.inner.store, id, KIND).await);
            }
            Err(e) => return Err(e.into()),
        }
        let info = SagaInfo::from_journal(
            id,
            vec![crate::store::JournalEntry {
                seq: 0,
                at_ms: now,
                event,
            }],
        )?;
        self.drive(def, self.writer(info, sent)).await
    }

    /// Resumes every unfinished saga this process may claim (see *Claims*), then runs the
    /// review items a person asked to retry. Call it when a process starts, before running
    /// new sagas, and from time to time in a fleet (to take over the sagas of dead processes).
    ///
    /// A retry asked for while the service was down between writing a review item and
    /// journaling the escalation (the saga was still `compensating`) is not lost: resuming
    /// escalates the saga again, to the same item, keeping the request, which then runs. A
    /// saga resumed and then retried is reported once, as it ended.
    ///
    /// Sagas are claimed four at a time and resumed one after another, in the order they were
    /// started, until none is left to claim. A claimed saga whose lease ran out while it
    /// waited its turn (the sagas before it took long) and that another process took over
    /// meanwhile is left to that process. One that cannot be resumed (its definition is not
    /// registered here, or has other steps than the saga was started with; the store fails)
    /// is reported in [`Recovery::failed`] and left as it is; the others go on.
    ///
    /// The review queue is read item by item: an item that cannot be decoded (written by a
    /// later version, edited by hand) is reported in [`Recovery::failed`], naming it, and the
    /// retries requested on the others run. A queue that cannot be read at all (the store
    /// fails) is reported in [`Recovery::review_error`]; the sagas resumed before are
    /// reported as usual, and the requested retries run on the next recovery.
    ///
    /// # Rolling deploys
    ///
    /// A saga this process cannot resume because of its definition (not registered in this
    /// version of the binary, or registered with other steps) or its journal (an entry it
    /// cannot read) may be resumable by a process running another version. Its claim is
    /// given back at once ([`Store::release`]): any other process's next recovery takes it,
    /// and this process's own recoveries leave it alone for a lease (then, if nobody else
    /// took it, they claim it again and report it again). A saga is never stranded on a
    /// process that recovers often but cannot resume it. With a store that cannot release
    /// claims ([`StoreError::Unsupported`], a store of another crate written before
    /// `release`), the claim is kept as before: the saga waits until this process stops
    /// recovering it for a lease.
    pub async fn recover(&self) -> Result<Recovery, SagaError> {
        let mut report = Recovery::default();
        let states = [
            SagaState::Running.as_str(),
            SagaState::Compensating.as_str(),
        ];
        let recovered = self
            .inner
            .settings
            .recover_each(&*self.inner.store, KIND, &states, |id| async move {
                self.resume(&id).await
            })
            .await?;
        report.resumed.extend(recovered.done);
        report.failed.extend(recovered.failed);
        // After resuming: a saga whose escalation a crash interrupted is escalated again
        // above, and a retry a person asked for meanwhile is kept on its item; it runs here.
        // Item by item: one that cannot be read is reported and the others go on, and a
        // queue that cannot be read loses none of what was resumed above.
        let stored = match self.inner.store.review_list().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot read the review queue; requested retries wait for the next recovery");
                report.review_error = Some(e.into());
                return Ok(report);
            }
        };
        let closed = [
            ReviewStatus::Retried.as_str(),
            ReviewStatus::Discarded.as_str(),
        ];
        for s in stored {
            if closed.contains(&s.status.as_str()) {
                continue;
            }
            let saga = s.workflow_id.clone();
            let item = match ReviewItem::from_stored(s) {
                Ok(item) => item,
                Err(e) => {
                    tracing::warn!(saga = %saga, error = %e, "cannot read a review item; skipped");
                    report.failed.push((saga, e.into()));
                    continue;
                }
            };
            if item.status == ReviewStatus::RetryRequested {
                match self.retry(&item.id, Asked::ByRequest).await {
                    Ok(info) => {
                        report.resumed.retain(|r| r.id != info.id);
                        report.resumed.push(info);
                    }
                    Err(SagaError::Claimed(_)) => {}
                    Err(e) => report.failed.push((item.saga_id.clone(), e)),
                }
            }
        }
        Ok(report)
    }

    /// Resumes one claimed saga; `None` if this process is running it already, or if another
    /// process took it over while it waited its turn.
    async fn resume(&self, id: &str) -> Result<Option<SagaInfo>, SagaError> {
        let Some(_guard) = self.enter(id) else {
            return Ok(None);
        };
        // The claim is secured when the renewal is sent: the journal's read after it, however
        // slow, does not move the heartbeat's deadline past the lease the store holds.
        let sent = tokio::time::Instant::now();
        if !self.inner.settings.renew(&*self.inner.store, id).await? {
            return Ok(None);
        }
        let journal = self.inner.store.journal(id).await?;
        let resumable = SagaInfo::from_journal(id, journal).and_then(|info| {
            let def = self.definition(&info.name)?;
            started_with(&info, def)?;
            // A journal the engine cannot go on from (an attempt number edited by hand) is
            // found before anything is written, and given back as an unreadable one is.
            next_action(&info, def, self.inner.settings.attempts)?;
            Ok((info, def))
        });
        let (info, def) = match resumable {
            Ok(found) => found,
            Err(e) => {
                let store = &*self.inner.store;
                self.inner.settings.give_back(store, id, &e).await;
                return Err(e);
            }
        };
        tracing::info!(saga = id, state = %info.state, "resuming saga");
        self.drive(def, self.writer(info, sent)).await.map(Some)
    }

    /// Deletes the finished sagas (completed, compensated or failed:
    /// [`SagaState::is_final`]) whose latest journal entry is older than `older_than`, with
    /// their journals and their review items; returns how many sagas went.
    ///
    /// Nothing deletes finished sagas otherwise: the journal grows with every saga run. Call
    /// this from time to time (a daily job; any process of a fleet may) with the age past
    /// which a finished saga is no longer worth inspecting (`Duration::ZERO`: every saga
    /// that finished before this millisecond).
    ///
    /// Only finished sagas that no process holds are deleted, in the same store transaction
    /// as the check: never one that is running, compensating, or escalated (waiting for a
    /// person, however old), so nothing [`recover`](Sagas::recover) or a review retry could
    /// still act on. Two-phase-commit transactions are left alone
    /// ([`Coordinator::purge_finished`](crate::twopc::Coordinator::purge_finished) deletes
    /// those), and so are checkpoints.
    ///
    /// A deleted saga's review items go with it, in the same store transaction, whatever
    /// their status: the closed ones are history its journal holds too, and that goes; a
    /// pending one on a finished saga is what a crash left between the saga's last entry and
    /// the item's update, which only the journal can settle (see [`Store::purge`]). The
    /// items of sagas that are kept, an escalated one's above all, stay. If you want the closed
    /// items longer than the sagas, export them first (`palisade-durable review list
    /// --json`). A deleted saga's id is free again: [`run`](Sagas::run) with it starts a new
    /// saga, with review items of its own (none of the old saga's carries over), whose steps
    /// get the same idempotency keys as the old one's; keep ids unique if your tools remember
    /// keys longer than `older_than`.
    ///
    /// # Errors
    ///
    /// A store failure ([`SagaError::Store`]); with a store that cannot delete workflows,
    /// [`StoreError::Unsupported`]. Sagas are deleted in batches of 500 per store transaction:
    /// after a failure, the batches before it stay deleted and the rest stay whole.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<u64, SagaError> {
        let states = SagaState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(SagaState::as_str)
            .collect::<Vec<_>>();
        Settings::purge_finished(&*self.inner.store, KIND, &states, older_than).await
    }

    /// Retries review item `id` now: the escalated compensation gets a fresh set of attempts
    /// (an interrupted step the person vouched for is taken as settled), and the saga's
    /// compensation goes on from there. If it fails again it is escalated again, to the same
    /// item, with the new errors added.
    ///
    /// A [`SagaError::Inconsistent`] if the definition registered here has other steps than
    /// the saga was started with; the saga and the item are then left as they are.
    ///
    /// An item that is still pending but whose retry already ran (the saga then escalated
    /// another step, to another item, or finished) is closed as it ended, and the saga is
    /// returned as it stands: a request is used once, never for another item.
    ///
    /// The saga is read again once this process holds its claim: if it changed since the item
    /// was read (another process ran a retry meanwhile, and the saga escalated again, to this
    /// item or another), nothing is written, the claim is given back (this process may claim
    /// the saga again once a lease has passed, any other process at once, as after
    /// [`Store::release`]) and a [`SagaError::WrongState`] says where the saga stands.
    /// A retry is for the escalation its item was read at.
    pub async fn retry_review(&self, id: &str) -> Result<SagaInfo, SagaError> {
        self.retry(id, Asked::Now).await
    }

    /// [`retry_review`](Self::retry_review), now or for a request on the item.
    async fn retry(&self, id: &str, asked: Asked) -> Result<SagaInfo, SagaError> {
        let queue = self.review_queue();
        let (item, read) = queue.read(id).await?;
        if asked == Asked::ByRequest && item.status != ReviewStatus::RetryRequested {
            // The request was used meanwhile (by another process's recovery, which read the
            // queue after this one): the item is open again if the retry escalated to it
            // again, and only a person's new request retries it.
            return Err(SagaError::Claimed(item.saga_id));
        }
        if !item.status.is_pending() {
            return Err(SagaError::WrongState {
                what: "review item",
                id: item.id,
                state: item.status.to_string(),
                rule: "only an open item or one whose retry was requested can be retried",
            });
        }
        let def = self.definition(&item.saga_name)?;
        let Some(_guard) = self.enter(&item.saga_id) else {
            return Err(SagaError::Claimed(item.saga_id));
        };
        let info = self.inspect(&item.saga_id).await?;
        if info.state.is_final() {
            return self.close_settled(read, info).await;
        }
        if info.state == SagaState::Escalated && info.review.as_deref() != Some(id) {
            // This item's retry ran already, and the saga went on to escalate another step
            // (whose item nobody has looked at): the request is used up, not leave to retry
            // that one.
            return self.close_settled(read, info).await;
        }
        // Before the claim: a saga of another definition is left as it is, free for a
        // process that has the right one (or for a person to discard).
        started_with(&info, def)?;
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let claimed = self
            .inner
            .store
            .claim(
                Claim::new(
                    KIND,
                    &[SagaState::Escalated.as_str()],
                    self.inner.settings.owner.clone(),
                    now,
                    self.inner.settings.lease_until(now),
                    1,
                )
                .with_instance(self.inner.settings.instance.clone())
                .only(item.saga_id.clone()),
            )
            .await?;
        if claimed.is_empty() {
            return Err(SagaError::Claimed(item.saga_id));
        }
        let info = SagaInfo::from_journal(
            &item.saga_id,
            self.inner.store.journal(&item.saga_id).await?,
        )?;
        // Read again with the claim held: between the first reads and the claim, another
        // process may have run this retry (the saga then escalated again, to this item or to
        // another) or a person may have used the request. Then nothing is written here: the
        // claim is given back, and the saga and its items are left as they are now.
        let used = if asked == Asked::ByRequest {
            queue.inspect(id).await?.status != ReviewStatus::RetryRequested
        } else {
            false
        };
        // The escalation the item was read at: a retry is for the escalation its asker saw,
        // not for one that a retry run meanwhile led to.
        let escalations = info.escalations_to(id);
        if used
            || info.state != SagaState::Escalated
            || info.review.as_deref() != Some(id)
            || escalations != item.escalations
        {
            self.inner
                .store
                .release(&item.saga_id, &self.inner.settings.owner)
                .await
                .ok();
            if asked == Asked::ByRequest {
                // Used by another process: nothing left to do here.
                return Err(SagaError::Claimed(item.saga_id));
            }
            return Err(SagaError::WrongState {
                what: "saga",
                id: item.saga_id,
                state: match info.review {
                    Some(review) => format!("{} at review item {review:?}", info.state),
                    None => info.state.to_string(),
                },
                rule: "a retry is for the escalation its item was read at, and the saga changed since: read the item again",
            });
        }
        let mut w = self.writer(info, sent);
        w.log(Event::ReviewRetried {
            review: id.to_owned(),
        })
        .await?;
        self.drive(def, w).await
    }

    fn delay(&self, saga: &str, step: usize, retry: u32) -> Duration {
        self.inner.settings.delay(DELAY_SALT, saga, step, retry)
    }

    async fn drive(&self, def: &SagaDefinition, mut w: Writer) -> Result<SagaInfo, SagaError> {
        loop {
            let action = next_action(&w.info, def, self.inner.settings.attempts)?;
            let id = w.info.id.clone();
            match action {
                Action::Park => return Ok(w.info),
                Action::Run(i, attempt) => {
                    w.log(Event::StepStarted { step: i, attempt }).await?;
                    let req = StepRequest {
                        saga_id: id.clone(),
                        step: i,
                        name: def.steps[i].name.clone(),
                        idempotency_key: step_key(&id, i),
                        attempt,
                        input: w.info.input.clone(),
                        previous: w.info.steps[..i]
                            .iter()
                            .map(|s| s.output.clone().unwrap_or_default())
                            .collect(),
                    };
                    tracing::debug!(saga = %id, step = i, attempt, "step started");
                    let call = def.steps[i].service.clone().oneshot(req);
                    match w.renewing(call).await? {
                        Ok(output) if nests_deeper_than(&output, MAX_DEPTH) => {
                            tracing::warn!(saga = %id, step = i,
                                "step output too deep to journal; the step may have taken effect");
                            w.log(Event::StepFailed {
                                step: i,
                                error: ErrorRecord {
                                    message: format!(
                                        "the step's output nests deeper than {MAX_DEPTH} levels, \
                                         which the journal could not read back: it was not kept, \
                                         and the step is treated as possibly done"
                                    ),
                                    class: Class::new(Category::Unknown).with_retryable(false),
                                    at_ms: now_ms(),
                                },
                                interrupted: true,
                            })
                            .await?
                        }
                        Ok(output) => w.log(Event::StepCompleted { step: i, output }).await?,
                        Err(e) => {
                            let error = ErrorRecord::of(&e, now_ms());
                            let interrupted = may_have_taken_effect(&error, &e, attempt);
                            if interrupted {
                                tracing::warn!(saga = %id, step = i, attempt, class = %error.class,
                                    error = %error.message,
                                    "step failed but may have taken effect; compensating");
                            } else {
                                tracing::warn!(saga = %id, step = i, class = %error.class,
                                    error = %error.message, "step failed; compensating");
                            }
                            w.log(Event::StepFailed {
                                step: i,
                                error,
                                interrupted,
                            })
                            .await?
                        }
                    }
                }
                Action::Interrupt(i, repeats_spent) => {
                    let message = if repeats_spent {
                        tracing::warn!(saga = %id, step = i, attempts = w.info.steps[i].attempts,
                            "idempotent step interrupted on every attempt; treating it as \
                             possibly done");
                        format!(
                            "interrupted: the process stopped before the step's outcome was \
                             journaled on each of its {} attempts (the step may take the process \
                             down), and it is not repeated again",
                            w.info.steps[i].attempts
                        )
                    } else {
                        tracing::warn!(saga = %id, step = i,
                            "step was interrupted and is not idempotent; treating it as possibly done");
                        "interrupted: the process stopped before the step's outcome was \
                         journaled, and the step is not idempotent"
                            .to_owned()
                    };
                    w.log(Event::StepFailed {
                        step: i,
                        error: ErrorRecord {
                            message,
                            class: Class::new(Category::Unknown).with_retryable(false),
                            at_ms: now_ms(),
                        },
                        interrupted: true,
                    })
                    .await?;
                }
                Action::Compensate(i, attempt) => {
                    let Some(comp) = def.steps[i].compensation.clone() else {
                        continue;
                    };
                    let s = &w.info.steps[i];
                    if s.compensation == CompensationStatus::Failed && s.attempts_since_review > 0 {
                        let d = self.delay(&id, i, s.attempts_since_review);
                        w.renewing(tokio::time::sleep(d)).await?;
                    }
                    w.log(Event::CompensationStarted { step: i, attempt })
                        .await?;
                    let s = &w.info.steps[i];
                    let req = CompensationRequest {
                        saga_id: id.clone(),
                        step: i,
                        name: s.name.clone(),
                        idempotency_key: compensation_key(&id, i),
                        step_key: step_key(&id, i),
                        attempt,
                        input: w.info.input.clone(),
                        output: s.output.clone(),
                        cause: w
                            .info
                            .steps
                            .iter()
                            .filter_map(|s| s.error.as_ref())
                            .next_back()
                            .map(|e| e.message.clone()),
                    };
                    match w.renewing(comp.oneshot(req)).await? {
                        Ok(()) => w.log(Event::CompensationCompleted { step: i }).await?,
                        Err(e) => {
                            let error = ErrorRecord::of(&e, now_ms());
                            tracing::warn!(saga = %id, step = i, attempt, class = %error.class,
                                error = %error.message, "compensation failed");
                            w.log(Event::CompensationFailed {
                                step: i,
                                attempt,
                                error,
                            })
                            .await?
                        }
                    }
                }
                Action::Escalate(i, reason) => {
                    let review = step_key(&id, i);
                    tracing::error!(saga = %id, step = i, %reason, review = %review,
                        "escalated to the review queue");
                    // The item first, then the entry that parks the saga: a crash between
                    // them leaves the saga compensating, and recovery escalates it again to
                    // the same item (keeping a retry a person asked for in between; see
                    // `ReviewItem::from_saga`). The other order could park a saga with no
                    // item to wake it.
                    let previous = w.info.review.clone();
                    self.put_review(&w.info, i, reason).await?;
                    w.log(Event::Escalated {
                        step: i,
                        review: review.clone(),
                        reason,
                    })
                    .await?;
                    // A retry of another item led here: that item is done with.
                    if let Some(previous) = previous.filter(|p| *p != review) {
                        self.close_retried(&previous).await?;
                    }
                }
                Action::Finish(state) => {
                    w.log(Event::SagaFinished { state }).await?;
                    tracing::info!(saga = %id, %state, "saga finished");
                    if let Some(review) = w.info.review.clone() {
                        self.close_retried(&review).await?;
                    }
                    return Ok(w.info);
                }
            }
        }
    }

    /// Marks review item `review` retried if it is still pending: its saga went on past it.
    async fn close_retried(&self, review: &str) -> Result<(), SagaError> {
        let queue = self.review_queue();
        if let Ok((item, read)) = queue.read(review).await
            && item.status.is_pending()
        {
            queue.close(read, ReviewStatus::Retried, None).await?;
        }
        Ok(())
    }

    /// Closes item `read`, pending when read, of saga `info`, which has gone past it (a crash
    /// came between the saga's last entry and the item's update, or another process is about
    /// to update it): as the journal says, over the item as it is now
    /// ([`ReviewQueue::close`]); returns the saga.
    async fn close_settled(
        &self,
        read: StoredReview,
        info: SagaInfo,
    ) -> Result<SagaInfo, SagaError> {
        let queue = self.review_queue();
        // A discard an earlier version left half-written is finished first.
        queue.finish_interrupted_discard(&info).await?;
        queue
            .close(read, crate::review::closed_as(&info), None)
            .await?;
        Ok(info)
    }

    /// Writes the review item escalating step `step` of saga `info`, whose claim this engine
    /// holds, before the escalation is journaled.
    ///
    /// Over the item of that id as read ([`Store::review_put_if`]): if it changed meanwhile
    /// (a person asked for its retry, which [`ReviewItem::from_saga`] keeps when it is for
    /// this escalation), it is read again and the item made anew. And fenced by the claim:
    /// the claim is renewed between the read and the write, and a [`SagaError::LeaseLost`]
    /// (nothing written) says another process took the saga over, after this one stalled
    /// past its lease. That process may have escalated the saga further, to this item, and
    /// the journal this one holds would write an older escalation over the newer one. (Had
    /// the other process written the item after the renewal, the write finds it changed,
    /// reads again and renews again, which fails then.)
    async fn put_review(
        &self,
        info: &SagaInfo,
        step: usize,
        reason: EscalationReason,
    ) -> Result<(), SagaError> {
        let id = &step_key(&info.id, step);
        crate::review::write_over_other_writers(id, "write it", (), |()| async move {
            let read = self.inner.store.review_get(id).await?;
            let previous = read.clone().map(ReviewItem::from_stored).transpose()?;
            let item = ReviewItem::from_saga(info, step, reason, previous, now_ms());
            if !self
                .inner
                .settings
                .renew(&*self.inner.store, &info.id)
                .await?
            {
                tracing::warn!(saga = %info.id, review = %id,
                    "claim lost before the review item was written; writing nothing");
                return Err(SagaError::LeaseLost(info.id.clone()));
            }
            let put = self.inner.store.review_put_if(read, item.to_stored());
            Ok(if put.await? {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::Step;
    use crate::store::MemoryStore;
    use palisade_core::BoxError;
    use serde_json::Value;
    use tower::service_fn;

    fn ok_step(name: &str) -> Step {
        Step::new(
            name.to_owned(),
            service_fn(|_req: StepRequest| async { Ok::<_, BoxError>(serde_json::Value::Null) }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_1_to_200_bytes() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let sagas = Sagas::builder(store.clone())
            .define(SagaDefinition::new("d", vec![ok_step("a")]).unwrap())
            .build()
            .unwrap();
        let longest = "x".repeat(200);
        let info = sagas.run("d", &longest, Value::Null).await.unwrap();
        assert_eq!(info.state, SagaState::Completed);
        let participant = crate::twopc::Participant::new(
            "p",
            service_fn(|_r: crate::twopc::PhaseRequest| async {
                Ok::<_, BoxError>(crate::twopc::Vote::Yes)
            }),
        );
        let coordinator = crate::twopc::Coordinator::builder(store)
            .define(crate::twopc::TransactionDefinition::new("t", vec![participant]).unwrap())
            .build()
            .unwrap();
        let tx = coordinator.run("t", &"t".repeat(200), Value::Null).await;
        assert_eq!(tx.unwrap().state, crate::twopc::TxState::Committed);
        // PostgreSQL cannot store a NUL character: refused on every store alike.
        for bad in [
            String::new(),
            "y".repeat(201),
            "crawl-\0-1".into(),
            "\0".into(),
        ] {
            let r = sagas.run("d", &bad, Value::Null).await;
            assert!(
                matches!(r, Err(SagaError::InvalidId(ref id)) if *id == bad),
                "{r:?}"
            );
            let r = coordinator.run("t", &bad, Value::Null).await;
            assert!(
                matches!(r, Err(SagaError::InvalidId(ref id)) if *id == bad),
                "{r:?}"
            );
        }
    }

    /// The journal of a saga of steps `a`, `b` (no compensations) with `events` after its
    /// start.
    fn folded(events: Vec<Event>) -> SagaInfo {
        let mut all = vec![Event::SagaStarted {
            name: "d".into(),
            steps: vec!["a".into(), "b".into()],
            input: serde_json::Value::Null,
        }];
        all.extend(events);
        let entries = all
            .into_iter()
            .enumerate()
            .map(|(n, e)| crate::store::JournalEntry {
                seq: n as u64,
                at_ms: 0,
                event: serde_json::to_value(e).unwrap(),
            })
            .collect();
        SagaInfo::from_journal("s", entries).unwrap()
    }

    #[test]
    fn a_saga_that_is_over_or_waits_for_a_person_is_left_alone() {
        let def = SagaDefinition::new("d", vec![ok_step("a"), ok_step("b")]).unwrap();
        let done = |step| {
            [
                Event::StepStarted { step, attempt: 1 },
                Event::StepCompleted {
                    step,
                    output: serde_json::Value::Null,
                },
            ]
        };
        let mut completed: Vec<Event> = done(0).into_iter().chain(done(1)).collect();
        completed.push(Event::SagaFinished {
            state: SagaState::Completed,
        });
        assert_eq!(
            next_action(&folded(completed), &def, 5).unwrap(),
            Action::Park
        );
        let failed = vec![
            Event::StepStarted {
                step: 0,
                attempt: 1,
            },
            Event::StepFailed {
                step: 0,
                error: ErrorRecord {
                    message: "HTTP 500".into(),
                    class: Class::new(Category::ServerError),
                    at_ms: 0,
                },
                interrupted: false,
            },
        ];
        let mut over = failed.clone();
        over.push(Event::SagaFinished {
            state: SagaState::Failed,
        });
        assert_eq!(
            next_action(&folded(failed), &def, 5).unwrap(),
            Action::Finish(SagaState::Failed)
        );
        assert_eq!(next_action(&folded(over), &def, 5).unwrap(), Action::Park);
        // Only step a is done: b is next.
        let half: Vec<Event> = done(0).into_iter().collect();
        assert_eq!(
            next_action(&folded(half), &def, 5).unwrap(),
            Action::Run(1, 1)
        );
    }

    #[test]
    fn debug_shows_the_settings() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let sagas = Sagas::builder(store.clone())
            .owner("w1")
            .define(SagaDefinition::new("d", vec![ok_step("a")]).unwrap())
            .define(SagaDefinition::new("c", vec![ok_step("a")]).unwrap())
            .build()
            .unwrap();
        let s = format!("{sagas:?}");
        for part in [
            "Sagas {",
            r#"definitions: ["c", "d"]"#,
            r#"owner: "w1""#,
            "lease: 60s",
            "compensation_attempts: 5",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
        let coordinator = crate::twopc::Coordinator::builder(store)
            .owner("w2")
            .build()
            .unwrap();
        let s = format!("{coordinator:?}");
        assert!(
            s.contains(r#"owner: "w2""#) && s.contains("definitions: 0"),
            "{s}"
        );
    }

    #[test]
    fn builder_checks_every_option() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let field = |b: SagasBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(field(Sagas::builder(store.clone()).owner("")), "owner");
        assert_eq!(
            field(Sagas::builder(store.clone()).lease(Duration::from_millis(10))),
            "lease"
        );
        assert_eq!(
            field(Sagas::builder(store.clone()).lease(Duration::MAX)),
            "lease"
        );
        let coordinator = crate::twopc::Coordinator::builder(store.clone()).lease(Duration::MAX);
        assert_eq!(coordinator.build().unwrap_err().field(), "lease");
        assert_eq!(
            field(Sagas::builder(store.clone()).compensation_attempts(0)),
            "compensation_attempts"
        );
        assert_eq!(
            field(Sagas::builder(store.clone()).compensation_backoff(
                Backoff::exponential(Duration::from_millis(1), 0.5),
                Jitter::None
            )),
            "backoff.factor"
        );
        let def = || SagaDefinition::new("d", vec![ok_step("a")]).unwrap();
        assert_eq!(
            field(Sagas::builder(store.clone()).define(def()).define(def())),
            "define"
        );
        assert!(Sagas::builder(store).define(def()).build().is_ok());
    }

    #[test]
    fn definitions_are_checked() {
        let err = |r: Result<SagaDefinition, ConfigError>| r.unwrap_err().field().to_owned();
        assert_eq!(
            err(SagaDefinition::new("", vec![ok_step("a")])),
            "saga.name"
        );
        assert_eq!(err(SagaDefinition::new("d", vec![])), "saga.steps");
        assert_eq!(
            err(SagaDefinition::new("d", vec![ok_step("a"), ok_step("a")])),
            "saga.steps"
        );
        assert_eq!(
            err(SagaDefinition::new("d", vec![ok_step("")])),
            "saga.steps"
        );
    }

    #[test]
    fn jitter_is_seeded_per_saga_step_and_attempt() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let sagas = |seed| Sagas::builder(store.clone()).seed(seed).build().unwrap();
        let (a, b) = (sagas(1), sagas(1));
        let delays = |s: &Sagas| (1..=5).map(|n| s.delay("x", 2, n)).collect::<Vec<_>>();
        assert_eq!(delays(&a), delays(&b));
        assert_ne!(delays(&a), delays(&sagas(2)));
        for (n, d) in delays(&a).into_iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(10));
            assert!(
                d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1),
                "{n}: {d:?}"
            );
        }
    }

    /// A saga whose step `a` is undone by a compensation that fails with an error retrying
    /// cannot fix, and whose step `b` fails: it escalates step `a` at once, to item `s/0`.
    async fn escalate_over(
        store: &Arc<crate::store::losing::Losing>,
    ) -> Result<SagaInfo, SagaError> {
        let undo = service_fn(|_req: CompensationRequest| async {
            Err::<(), BoxError>("401 unauthorized".into())
        });
        let fails = Step::new(
            "b",
            service_fn(|_req: StepRequest| async { Err::<Value, BoxError>("HTTP 502".into()) }),
        );
        let sagas = Sagas::builder(store.clone())
            .define(SagaDefinition::new("d", vec![ok_step("a").compensate(undo), fails]).unwrap())
            .build()
            .unwrap();
        sagas.run("d", "s", Value::Null).await
    }

    /// An escalation whose every write of its review item loses (a store whose
    /// `review_put_if` is broken): it gives up after 16 writes with a conflict naming the
    /// item, writes no item and does not journal the escalation (recovery escalates again).
    #[tokio::test(start_paused = true)]
    async fn an_escalation_gives_up_after_16_lost_writes_of_its_item() {
        let store = Arc::new(crate::store::losing::Losing::default());
        store.lose(usize::MAX);
        match escalate_over(&store).await {
            Err(SagaError::Store(StoreError::Conflict(m))) => assert_eq!(
                m,
                "review item s/0: changed by another writer at each of 16 attempts to write it"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.asked(), 16);
        assert_eq!(store.review_get("s/0").await.unwrap(), None);
        let info = SagaInfo::from_journal("s", store.journal("s").await.unwrap()).unwrap();
        assert_eq!((info.state, info.review), (SagaState::Compensating, None));
    }

    /// The same with 15 writes lost: the 16th writes the item and the escalation is journaled.
    #[tokio::test(start_paused = true)]
    async fn an_escalation_writes_its_item_at_the_16th_attempt() {
        let store = Arc::new(crate::store::losing::Losing::default());
        store.lose(15);
        let info = escalate_over(&store).await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
        assert_eq!(info.review.as_deref(), Some("s/0"));
        assert_eq!(store.asked(), 16);
        let item = ReviewItem::from_stored(store.review_get("s/0").await.unwrap().unwrap());
        let item = item.unwrap();
        assert_eq!((item.status, item.escalations), (ReviewStatus::Open, 1));
    }

    #[test]
    fn states_round_trip_and_events_keep_their_shape() {
        for s in SagaState::ALL {
            assert_eq!(s.as_str().parse::<SagaState>().unwrap(), s);
        }
        assert!("nope".parse::<SagaState>().is_err());
        // The journal format is a stored format: these shapes must not change.
        let e = Event::StepStarted {
            step: 2,
            attempt: 1,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "step_started", "step": 2, "attempt": 1})
        );
        let f = Event::SagaFinished {
            state: SagaState::Compensated,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"saga_finished","state":"compensated"}"#
        );
    }
}
