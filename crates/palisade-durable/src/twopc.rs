//! Two-phase commit on the saga journal: all participants commit, or none does.
//!
//! # Saga or two-phase commit?
//!
//! A [saga](crate::Sagas) lets each step commit on its own and undoes it afterwards if a later
//! step fails; in between, others can see the partial result. Two-phase commit hides it: every
//! participant first *prepares* (does the work, holds it undecided, and promises it can
//! commit), and only when all said yes does the coordinator tell them to commit; otherwise all
//! abort. The price is that a prepared participant must hold its state (locks, reserved
//! stock, a pending transaction) until the decision arrives, however long the coordinator
//! takes, even across a coordinator crash.
//!
//! Use two-phase commit for short operations on participants that can hold a prepared state
//! cheaply: databases (PostgreSQL's `PREPARE TRANSACTION`), ledgers, inventory reservations
//! with a hold. Use a saga when a participant cannot hold a prepared state: an LLM call or
//! an email cannot be "prepared" and released later, it happens or it does not; when steps
//! take long (minutes of agent work would hold every other participant's locks); or when
//! each step's effect is fine to show before the whole is done and can be compensated.
//!
//! # Protocol
//!
//! [`Coordinator::run`] journals the transaction, asks each participant to prepare (in order;
//! a `No`, an error or a participant that fails is a no, and the remaining ones are not
//! asked), journals each vote, then journals the **decision** (commit on unanimous yes, abort
//! otherwise) *before* sending it to anyone. It then delivers the decision to every
//! participant, retrying a failed delivery with backoff, and journals each acknowledgement.
//! A participant still unreachable after its attempts does not hold up the others: they are
//! told (and release what they prepared) while it waits for the next recovery.
//!
//! # Recovery: presumed abort
//!
//! [`Coordinator::recover`] takes the unfinished transactions this process may claim (the
//! same claims and leases as sagas, renewed by a heartbeat while a participant is asked
//! anything, so a slow participant does not let another process take the transaction over;
//! a coordinator that learns from a renewal that it lost the transaction drops the call in
//! flight and returns [`SagaError::LeaseLost`]). One with no decision in its journal is **aborted**:
//! some participants may have prepared, none can have been told to commit, so aborting is
//! always safe. One with a decision has it delivered again to the participants that did not
//! acknowledge it. Participants must therefore accept a repeated commit or abort (they get
//! the same idempotency key each time) and treat an abort of something they never prepared as
//! done, and remember it: a prepare of that transaction that arrives afterwards must be
//! refused (vote no, hold nothing). A coordinator that lost its claim drops its call, but the
//! prepare it had sent may still be on the way (a slow network, a message queue) and reach the
//! participant after the coordinator that took over presumed the abort and delivered it;
//! prepared then, the participant would hold its work for a decision that never comes, since
//! the transaction is over and nobody will ask it again.
//!
//! A key names the transaction, the participant and the phase, and no two transactions or
//! participants share one ([`PhaseRequest::idempotency_key`]). How a transaction's keys are
//! built is journaled when it starts ([`KeyFormat`]): a transaction that an earlier version
//! started, whose participants may already hold its keys, keeps them after an upgrade.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, ConfigError};
use palisade_retry::{Backoff, Jitter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::engine::{enter, now_ms};
use crate::error::{SagaError, StoreError};
use crate::journal::{ErrorRecord, UnknownState, WorkflowSummary, summaries};
use crate::lease;
use crate::settings::{Settings, by_name, workflow_setters};
use crate::store::{Append, Claim, Store};

/// The workflow kind transactions are stored under.
const KIND: &str = "2pc";

/// Mixed into the seed of delivery delays.
const DELAY_SALT: u64 = 0x2FC0_2FC0_2FC0_2FC0;

/// Which phase a participant is asked to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Do the work, hold it undecided, and vote.
    Prepare,
    /// Make the prepared work final.
    Commit,
    /// Drop the prepared work (or nothing, if there is none, remembering that the transaction
    /// was aborted: see *Recovery: presumed abort* in the [module docs](self)).
    Abort,
}

/// What a participant's service receives.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PhaseRequest {
    /// The transaction's id.
    pub tx_id: String,
    /// This participant's name.
    pub participant: String,
    /// The phase.
    pub phase: Phase,
    /// `"{tx_id}/{participant}/{phase}"`, the same every time this phase is sent again
    /// (`phase` is `prepare`, `commit` or `abort`). A participant name holding a `/` or a
    /// `%` is percent-escaped in it (`%` as `%25`, `/` as `%2F`), so that no two
    /// transactions or participants share a key: transaction `a/b` with participant `c`
    /// gets `a/b/c/commit`, transaction `a` with participant `b/c` gets `a/b%2Fc/commit`.
    /// Every other name is as it is, as the transaction id always is. A transaction started
    /// by an earlier version of this crate keeps the keys it started with, the name as it is
    /// ([`KeyFormat`]).
    pub idempotency_key: String,
    /// The transaction's payload.
    pub payload: Value,
}

/// How a transaction's idempotency keys ([`PhaseRequest::idempotency_key`]) are built:
/// journaled with its start ([`TxEvent::TxStarted`]), so that the participants of a transaction
/// hear the same key for a phase sent again after the coordinator restarted, whichever version
/// of this crate sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyFormat {
    /// `"{tx_id}/{participant}/{phase}"`, the name as it is: the keys of the transactions
    /// that earlier versions started (their journals do not say). Ambiguous when a
    /// participant's name holds a `/`: transaction `a/b` with participant `c` and transaction
    /// `a` with participant `b/c` both get `a/b/c/commit`.
    Joined,
    /// The same, with the participant's name percent-escaped when it holds a `/` or a `%`:
    /// unambiguous (the phase is the key's last `/`-separated part, the escaped name the one
    /// before, the transaction id the rest), and the same keys as [`Joined`](Self::Joined)
    /// for every other name. What this version starts transactions with.
    Escaped,
}

impl KeyFormat {
    /// The format of a journal that does not say: one an earlier version wrote.
    fn of_earlier_versions() -> Self {
        KeyFormat::Joined
    }

    /// The idempotency key of `phase` for `participant` of transaction `tx`.
    fn key(self, tx: &str, participant: &str, phase: &str) -> String {
        match self {
            KeyFormat::Escaped if participant.contains(['/', '%']) => {
                let escaped = participant.replace('%', "%25").replace('/', "%2F");
                format!("{tx}/{escaped}/{phase}")
            }
            _ => format!("{tx}/{participant}/{phase}"),
        }
    }
}

/// A participant's answer to `Prepare` (its answer to `Commit` and `Abort` is ignored: `Ok`
/// acknowledges).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// Prepared: it can commit.
    Yes,
    /// It cannot commit, and why.
    No(String),
}

type ParticipantService = BoxCloneSyncService<PhaseRequest, Vote, BoxError>;

/// One participant: a name and the service that runs its phases.
pub struct Participant {
    name: String,
    service: ParticipantService,
}

impl fmt::Debug for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant")
            .field("name", &self.name)
            .finish()
    }
}

impl Participant {
    /// A participant named `name` served by `service` (cloned for each call).
    pub fn new<S, E>(name: impl Into<String>, service: S) -> Self
    where
        S: Service<PhaseRequest, Response = Vote, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Participant {
            name: name.into(),
            service: BoxCloneSyncService::new(service.map_err(Into::into)),
        }
    }
}

/// A named list of participants.
#[derive(Debug)]
pub struct TransactionDefinition {
    name: String,
    participants: Vec<Participant>,
}

impl TransactionDefinition {
    /// A definition named `name`: a non-empty name without a NUL character (which PostgreSQL
    /// cannot store), at least one participant, unique non-empty participant names.
    pub fn new(
        name: impl Into<String>,
        participants: Vec<Participant>,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ConfigError::new("transaction.name", "must not be empty"));
        }
        // Stored in a text column: PostgreSQL cannot hold a NUL character.
        if name.contains('\0') {
            return Err(ConfigError::new(
                "transaction.name",
                "must not hold a NUL character",
            ));
        }
        if participants.is_empty() {
            return Err(ConfigError::new(
                "transaction.participants",
                "must hold at least one participant",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &participants {
            if p.name.is_empty() || !seen.insert(p.name.as_str()) {
                return Err(ConfigError::new(
                    "transaction.participants",
                    format!("participant name {:?} is empty or used twice", p.name),
                ));
            }
        }
        Ok(TransactionDefinition { name, participants })
    }
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every participant voted yes.
    Commit,
    /// Someone voted no, failed, or the coordinator restarted before deciding.
    Abort,
}

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxState {
    /// Asking participants to prepare; no decision yet.
    Preparing,
    /// Decided to commit; delivering.
    Committing,
    /// Decided to abort; delivering.
    Aborting,
    /// Every participant committed.
    Committed,
    /// Every participant was told to abort.
    Aborted,
}

impl TxState {
    /// Every state.
    pub const ALL: [TxState; 5] = [
        TxState::Preparing,
        TxState::Committing,
        TxState::Aborting,
        TxState::Committed,
        TxState::Aborted,
    ];

    /// The snake-case name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            TxState::Preparing => "preparing",
            TxState::Committing => "committing",
            TxState::Aborting => "aborting",
            TxState::Committed => "committed",
            TxState::Aborted => "aborted",
        }
    }

    /// Whether it is over.
    pub const fn is_final(self) -> bool {
        matches!(self, TxState::Committed | TxState::Aborted)
    }

    /// The state once `decision` is journaled.
    const fn deciding(decision: Decision) -> Self {
        match decision {
            Decision::Commit => TxState::Committing,
            Decision::Abort => TxState::Aborting,
        }
    }
}

/// Its [`as_str`](TxState::as_str) name; width and alignment apply (`{:<13}`).
impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for TxState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// One journal entry of a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxEvent {
    /// The transaction started.
    TxStarted {
        /// The definition's name.
        name: String,
        /// The participants, in order.
        participants: Vec<String>,
        /// The payload.
        payload: Value,
        /// How its idempotency keys are built; [`KeyFormat::Joined`] in a journal that does
        /// not say (one an earlier version wrote).
        #[serde(default = "KeyFormat::of_earlier_versions")]
        keys: KeyFormat,
    },
    /// A participant voted (an error is a `No` with its record).
    Voted {
        /// The participant's index.
        participant: usize,
        /// Its vote.
        vote: Vote,
        /// The error, if preparing failed.
        error: Option<ErrorRecord>,
    },
    /// The decision, journaled before any participant hears it.
    Decided {
        /// Commit or abort.
        decision: Decision,
        /// Whether recovery presumed the abort (no decision had been journaled).
        presumed: bool,
    },
    /// A participant acknowledged the decision.
    Acknowledged {
        /// The participant's index.
        participant: usize,
    },
    /// Delivering the decision to a participant failed.
    DeliveryFailed {
        /// The participant's index.
        participant: usize,
        /// The attempt, from 1.
        attempt: u32,
        /// The failure.
        error: ErrorRecord,
    },
    /// A person decided a transaction left undecided (its coordinator gone) through
    /// [`Transactions::resolve`] or the command-line tool; it counts as the decision, and the
    /// next [`Coordinator::recover`] delivers it.
    Resolved {
        /// Commit (only when every participant voted yes) or abort.
        decision: Decision,
        /// What the person said.
        note: String,
    },
    /// Every participant acknowledged.
    TxFinished {
        /// `Committed` or `Aborted`.
        state: TxState,
    },
}

/// A transaction as its journal tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxInfo {
    /// Its id.
    pub id: String,
    /// Its definition.
    pub name: String,
    /// Its payload.
    pub payload: Value,
    /// Where it is.
    pub state: TxState,
    /// The participants' names.
    pub participants: Vec<String>,
    /// Each participant's vote, if it was asked.
    pub votes: Vec<Option<Vote>>,
    /// The decision, once journaled.
    pub decision: Option<Decision>,
    /// Whether each participant acknowledged the decision.
    pub acknowledged: Vec<bool>,
    /// Failed deliveries per participant.
    pub delivery_failures: Vec<u32>,
    /// The journal, oldest first.
    pub journal: Vec<TxEvent>,
}

impl TxInfo {
    fn from_events(id: &str, events: Vec<TxEvent>) -> Result<Self, SagaError> {
        let bad = |reason: String| SagaError::Inconsistent {
            saga: id.to_owned(),
            reason,
        };
        let Some(TxEvent::TxStarted {
            name,
            participants,
            payload,
            ..
        }) = events.first().cloned()
        else {
            return Err(bad("entry 0 does not start a transaction".into()));
        };
        let mut info = TxInfo::fresh(id, name, participants, payload);
        for e in events {
            info.apply(e).map_err(bad)?;
        }
        Ok(info)
    }

    fn fresh(id: &str, name: String, participants: Vec<String>, payload: Value) -> Self {
        let n = participants.len();
        TxInfo {
            id: id.to_owned(),
            name,
            payload,
            state: TxState::Preparing,
            participants,
            votes: vec![None; n],
            decision: None,
            acknowledged: vec![false; n],
            delivery_failures: vec![0; n],
            journal: Vec::new(),
        }
    }

    fn apply(&mut self, e: TxEvent) -> Result<(), String> {
        let n = self.participants.len();
        let check = |i: usize| {
            if i < n {
                Ok(i)
            } else {
                Err(format!("participant {i} of {n}"))
            }
        };
        match &e {
            TxEvent::TxStarted { .. } => {
                if !self.journal.is_empty() {
                    return Err("a second start".into());
                }
            }
            TxEvent::Voted {
                participant, vote, ..
            } => self.votes[check(*participant)?] = Some(vote.clone()),
            TxEvent::Decided { decision, .. } | TxEvent::Resolved { decision, .. } => {
                if self.decision.is_some() {
                    return Err("a second decision".into());
                }
                self.decision = Some(*decision);
                self.state = TxState::deciding(*decision);
            }
            TxEvent::Acknowledged { participant } => {
                self.acknowledged[check(*participant)?] = true;
            }
            TxEvent::DeliveryFailed { participant, .. } => {
                self.delivery_failures[check(*participant)?] += 1;
            }
            TxEvent::TxFinished { state } => self.state = *state,
        }
        self.journal.push(e);
        Ok(())
    }
}

/// The two-phase commit coordinator.
///
/// ```
/// use std::sync::Arc;
/// use palisade_core::BoxError;
/// use palisade_durable::store::MemoryStore;
/// use palisade_durable::twopc::{Coordinator, Participant, PhaseRequest, TransactionDefinition,
///     TxState, Vote};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ledger = |balance: i64| service_fn(move |req: PhaseRequest| async move {
///     let amount = req.payload["amount"].as_i64().unwrap_or(0);
///     Ok::<_, BoxError>(if balance >= amount { Vote::Yes } else { Vote::No("funds".into()) })
/// });
/// let transfer = TransactionDefinition::new("transfer", vec![
///     Participant::new("debit", ledger(100)),
///     Participant::new("credit", ledger(i64::MAX)),
/// ]).unwrap();
/// let coordinator = Coordinator::builder(Arc::new(MemoryStore::new()))
///     .define(transfer)
///     .build()
///     .unwrap();
///
/// let ok = coordinator.run("transfer", "t1", serde_json::json!({"amount": 60})).await.unwrap();
/// assert_eq!(ok.state, TxState::Committed);
/// let no = coordinator.run("transfer", "t2", serde_json::json!({"amount": 600})).await.unwrap();
/// assert_eq!(no.state, TxState::Aborted);
/// # }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<CoordInner>,
}

struct CoordInner {
    store: Arc<dyn Store>,
    defs: HashMap<String, TransactionDefinition>,
    settings: Settings,
    /// The transactions this process is running: recovery leaves them alone.
    active: Mutex<HashSet<String>>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.inner.store)
            .field("owner", &self.inner.settings.owner)
            .field("definitions", &self.inner.defs.len())
            .finish()
    }
}

/// Builds a [`Coordinator`].
#[derive(Debug)]
pub struct CoordinatorBuilder {
    store: Arc<dyn Store>,
    defs: Vec<TransactionDefinition>,
    settings: Settings,
}

impl CoordinatorBuilder {
    workflow_setters! {
        definition: TransactionDefinition,
        what: "transactions",
        work: "a participant is asked anything (or waits to be asked again)",
        /// How many times a decision is sent to a participant before [`Coordinator::run`]
        /// gives up on it for now (default 5, at least 1) and goes on to the next one; the
        /// transaction stays undelivered and the next [`Coordinator::recover`] tries the
        /// participants that have not acknowledged again.
        attempts: delivery_attempts,
        /// The delay between deliveries (default 100 ms doubling to 10 s, ±10 %, seeded).
        backoff: delivery_backoff,
    }

    /// Checks the options and builds the coordinator.
    pub fn build(self) -> Result<Coordinator, ConfigError> {
        let settings = self.settings.built("delivery_attempts")?;
        Ok(Coordinator {
            inner: Arc::new(CoordInner {
                store: self.store,
                defs: by_name(self.defs, |d| &d.name)?,
                settings,
                active: Mutex::new(HashSet::new()),
            }),
        })
    }
}

struct TxWriter<'a> {
    c: &'a CoordInner,
    info: TxInfo,
    /// When the claim was last secured, by tokio's clock: when the claim, the renewal or this
    /// writer's latest journal entry that set it was *sent*, never later.
    secured: tokio::time::Instant,
}

impl TxWriter<'_> {
    /// Runs `work` (a phase sent to a participant) while renewing the claim on the
    /// transaction; a [`SagaError::LeaseLost`] if another process took it over meanwhile.
    async fn renewing<F: std::future::Future>(&self, work: F) -> Result<F::Output, SagaError> {
        let s = &self.c.settings;
        let secured = self.secured;
        lease::renewing(
            &*self.c.store,
            &self.info.id,
            &s.owner,
            &s.instance,
            s.lease,
            secured,
            work,
        )
        .await
        .map_err(|lease::Lost| SagaError::LeaseLost(self.info.id.clone()))
    }

    /// Applies `event` and writes it to the journal. On an error the writer is spent: every
    /// caller returns it with `?` and drops the writer, so its view is never read again and
    /// applying in place (rather than to a copy of the whole transaction) is safe.
    async fn log(&mut self, event: TxEvent) -> Result<(), SagaError> {
        let json = serde_json::to_value(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let seq = self.info.journal.len() as u64;
        self.info
            .apply(event)
            .map_err(|reason| SagaError::Inconsistent {
                saga: self.info.id.clone(),
                reason,
            })?;
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let state = self.info.state;
        let append = Append::new(
            self.info.id.clone(),
            KIND,
            self.info.name.clone(),
            seq,
            now,
            json,
            state.as_str(),
            self.c.settings.owner.clone(),
            self.c.settings.lease_until(now),
        )
        .with_instance(self.c.settings.instance.clone())
        .with_release(state.is_final());
        match self.c.store.append(append).await {
            Ok(()) => {
                self.secured = sent;
                Ok(())
            }
            Err(StoreError::Conflict(_)) if seq == 0 => {
                Err(crate::journal::taken(&*self.c.store, &self.info.id, KIND).await)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Coordinator {
    /// A coordinator over `store`.
    pub fn builder(store: Arc<dyn Store>) -> CoordinatorBuilder {
        CoordinatorBuilder {
            store,
            defs: Vec::new(),
            settings: Settings::default(),
        }
    }

    /// Runs transaction `id` of definition `name`: prepare all, decide, deliver. Returns the
    /// transaction as it stands: `Committed` or `Aborted`, or still `Committing`/`Aborting`
    /// if a participant could not be reached (the next [`recover`](Coordinator::recover)
    /// goes on delivering).
    ///
    /// Errors are the coordinator's: an unknown definition, an id that exists
    /// ([`SagaError::AlreadyExists`]; [`SagaError::WrongKind`] if it is a saga's) or is empty or longer than 200 bytes
    /// ([`SagaError::InvalidId`]), a payload nested deeper than
    /// [`MAX_DEPTH`](crate::journal::MAX_DEPTH) ([`SagaError::InvalidInput`]), a store failure.
    pub async fn run(&self, name: &str, id: &str, payload: Value) -> Result<TxInfo, SagaError> {
        if !crate::journal::valid_id(id) {
            return Err(SagaError::InvalidId(id.to_owned()));
        }
        let def = self
            .inner
            .defs
            .get(name)
            .ok_or_else(|| SagaError::UnknownDefinition(name.to_owned()))?;
        crate::journal::check_depth(id, &payload)?;
        let _guard = enter(&self.inner.active, id).ok_or_else(|| SagaError::AlreadyExists {
            id: id.to_owned(),
            kind: KIND,
        })?;
        let participants: Vec<String> = def.participants.iter().map(|p| p.name.clone()).collect();
        let start = TxEvent::TxStarted {
            name: name.to_owned(),
            participants: participants.clone(),
            payload: payload.clone(),
            keys: KeyFormat::Escaped,
        };
        // Nothing is claimed until the start is journaled, which sets `secured` again.
        let mut w = TxWriter {
            c: &self.inner,
            info: TxInfo::fresh(id, name.to_owned(), participants, payload),
            secured: tokio::time::Instant::now(),
        };
        w.log(start).await?;

        for (i, p) in def.participants.iter().enumerate() {
            let req = request(&w.info, i, Phase::Prepare);
            let (vote, error) = match w.renewing(p.service.clone().oneshot(req)).await? {
                Ok(v) => (v, None),
                Err(e) => {
                    let rec = ErrorRecord::of(&e, now_ms());
                    (Vote::No(rec.message.clone()), Some(rec))
                }
            };
            let no = vote != Vote::Yes;
            w.log(TxEvent::Voted {
                participant: i,
                vote,
                error,
            })
            .await?;
            if no {
                break;
            }
        }
        let decision = if w.info.votes.iter().all(|v| v.as_ref() == Some(&Vote::Yes)) {
            Decision::Commit
        } else {
            Decision::Abort
        };
        w.log(TxEvent::Decided {
            decision,
            presumed: false,
        })
        .await?;
        self.deliver(def, w).await
    }

    async fn deliver(
        &self,
        def: &TransactionDefinition,
        mut w: TxWriter<'_>,
    ) -> Result<TxInfo, SagaError> {
        let Some(decision) = w.info.decision else {
            return Ok(w.info);
        };
        let phase = match decision {
            Decision::Commit => Phase::Commit,
            Decision::Abort => Phase::Abort,
        };
        // Each participant gets its attempts whatever became of the ones before it: one that
        // stays unreachable must not keep the others holding their prepared state (their
        // locks) until it is back.
        let mut undelivered = false;
        for (i, p) in def.participants.iter().enumerate() {
            let mut tries = 0;
            while !w.info.acknowledged[i] {
                if tries == self.inner.settings.attempts {
                    tracing::warn!(tx = %w.info.id, participant = %p.name,
                        "decision not delivered; recovery will go on");
                    undelivered = true;
                    break;
                }
                let pause = (tries > 0)
                    .then(|| self.inner.settings.delay(DELAY_SALT, &w.info.id, i, tries));
                tries += 1;
                let call = p.service.clone().oneshot(request(&w.info, i, phase));
                let sent = w.renewing(async move {
                    if let Some(d) = pause {
                        tokio::time::sleep(d).await;
                    }
                    call.await
                });
                match sent.await? {
                    Ok(_) => w.log(TxEvent::Acknowledged { participant: i }).await?,
                    Err(e) => {
                        let attempt = w.info.delivery_failures[i] + 1;
                        w.log(TxEvent::DeliveryFailed {
                            participant: i,
                            attempt,
                            error: ErrorRecord::of(&e, now_ms()),
                        })
                        .await?
                    }
                }
            }
        }
        if undelivered {
            return Ok(w.info);
        }
        let state = match decision {
            Decision::Commit => TxState::Committed,
            Decision::Abort => TxState::Aborted,
        };
        w.log(TxEvent::TxFinished { state }).await?;
        Ok(w.info)
    }

    /// Transaction `id`, from its journal (see [`Transactions::inspect`]).
    pub async fn inspect(&self, id: &str) -> Result<TxInfo, SagaError> {
        Transactions::new(self.inner.store.clone())
            .inspect(id)
            .await
    }

    /// Finishes every unfinished transaction this process may claim: those without a decision
    /// are aborted (presumed abort), the others get their decision delivered again. Those
    /// this process is running itself ([`run`](Coordinator::run) in another task) are left
    /// to it: recovery claims this engine's transactions back at once (another engine under
    /// the same owner name takes them only once their heartbeat stopped, as for
    /// [sagas](crate::Sagas#claims)). One that
    /// cannot be finished (its definition is not registered here, or has other participants
    /// than the transaction was started with; the store fails) is reported in
    /// [`TxRecovery::failed`] and left as journaled; the others go on.
    ///
    /// One that cannot be finished because of its definition or its journal (another version
    /// of the binary may have what this one lacks) is given back at once, as
    /// [`Sagas::recover`](crate::Sagas::recover) does (see *Rolling deploys* there): another
    /// process's next recovery takes it, this one's leave it alone for a lease.
    pub async fn recover(&self) -> Result<TxRecovery, SagaError> {
        let states = [
            TxState::Preparing.as_str(),
            TxState::Committing.as_str(),
            TxState::Aborting.as_str(),
        ];
        let recovered = self
            .inner
            .settings
            .recover_each(&*self.inner.store, KIND, &states, |id| async move {
                self.finish(&id).await
            })
            .await?;
        Ok(TxRecovery {
            finished: recovered.done,
            failed: recovered.failed,
        })
    }

    /// Deletes the finished transactions (committed or aborted: [`TxState::is_final`]) whose
    /// latest journal entry is older than `older_than`, with their journals; returns how many
    /// went.
    ///
    /// The counterpart of [`Sagas::purge_finished`](crate::Sagas::purge_finished), with the
    /// same guarantees: only finished transactions that no process holds are deleted (never
    /// one preparing, committing or aborting, whatever its age); sagas and checkpoints are
    /// left alone; a deleted transaction's id is free again. (Transactions have no review
    /// items; [`Store::purge`] would delete those of the workflows it deletes.)
    ///
    /// # Errors
    ///
    /// A store failure ([`SagaError::Store`]); with a store that cannot delete workflows,
    /// [`StoreError::Unsupported`]. Deleted in batches of 500 per store transaction.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<u64, SagaError> {
        let states = TxState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(TxState::as_str)
            .collect::<Vec<_>>();
        Settings::purge_finished(&*self.inner.store, KIND, &states, older_than).await
    }

    /// Finishes one claimed transaction; `None` if this process is running it already, or if
    /// another process took it over while it waited its turn.
    async fn finish(&self, id: &str) -> Result<Option<TxInfo>, SagaError> {
        let Some(_guard) = enter(&self.inner.active, id) else {
            return Ok(None);
        };
        // The claim is secured when the renewal is sent: the journal's reads after it, however
        // slow, do not move the heartbeat's deadline past the lease the store holds.
        let secured = tokio::time::Instant::now();
        if !self.inner.settings.renew(&*self.inner.store, id).await? {
            return Ok(None);
        }
        let (info, def) = match self.finishable(id).await {
            Ok(found) => found,
            Err(e) => {
                let store = &*self.inner.store;
                self.inner.settings.give_back(store, id, &e).await;
                return Err(e);
            }
        };
        let mut w = TxWriter {
            c: &self.inner,
            info,
            secured,
        };
        if w.info.decision.is_none() {
            tracing::warn!(tx = %id, "no decision journaled: presumed abort");
            w.log(TxEvent::Decided {
                decision: Decision::Abort,
                presumed: true,
            })
            .await?;
        }
        self.deliver(def, w).await.map(Some)
    }
}

impl Coordinator {
    /// Transaction `id` and the definition it was started with, if this process has it.
    async fn finishable(&self, id: &str) -> Result<(TxInfo, &TransactionDefinition), SagaError> {
        let info = self.inspect(id).await?;
        let def = self
            .inner
            .defs
            .get(&info.name)
            .ok_or_else(|| SagaError::UnknownDefinition(info.name.clone()))?;
        // A transaction is delivered only by the definition it was started with: another
        // one (a deploy that added, removed or reordered participants) would index past the
        // journal's participants, or decide without telling a participant that may hold
        // prepared work.
        let defined = def.participants.iter().map(|p| p.name.as_str());
        if !defined.eq(info.participants.iter().map(String::as_str)) {
            return Err(SagaError::Inconsistent {
                saga: id.to_owned(),
                reason: format!(
                    "it was started with participants {:?}, definition {:?} now has {:?}",
                    info.participants,
                    def.name,
                    def.participants.iter().map(|p| &p.name).collect::<Vec<_>>()
                ),
            });
        }
        Ok((info, def))
    }
}

/// What [`Coordinator::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct TxRecovery {
    /// The transactions it finished (or left still delivering, if a participant stayed
    /// unreachable).
    pub finished: Vec<TxInfo>,
    /// The transactions it could not finish, and why.
    pub failed: Vec<(String, SagaError)>,
}

fn request(info: &TxInfo, participant: usize, phase: Phase) -> PhaseRequest {
    let name = info.participants[participant].clone();
    let p = match phase {
        Phase::Prepare => "prepare",
        Phase::Commit => "commit",
        Phase::Abort => "abort",
    };
    // As the transaction started: its participants may hold the keys of phases sent before
    // this process (of another version) took it over.
    let keys = match info.journal.first() {
        Some(TxEvent::TxStarted { keys, .. }) => *keys,
        _ => KeyFormat::of_earlier_versions(),
    };
    PhaseRequest {
        tx_id: info.id.clone(),
        idempotency_key: keys.key(&info.id, &name, p),
        participant: name,
        phase,
        payload: info.payload.clone(),
    }
}

/// The transactions of a store, without their definitions: list them, inspect them, and
/// resolve one left undecided. What the command-line tool and dashboards use.
#[derive(Clone, Debug)]
pub struct Transactions {
    store: Arc<dyn Store>,
}

/// One line of [`Transactions::list`].
pub type TxSummary = WorkflowSummary<TxState>;

/// The owner [`Transactions::resolve`] claims a transaction under.
const OPERATOR: &str = "operator";

impl Transactions {
    /// Reads the transactions of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Transactions { store }
    }

    /// Every transaction, oldest first, with its state.
    pub async fn list(&self) -> Result<Vec<TxSummary>, SagaError> {
        summaries(&*self.store, KIND).await
    }

    /// Transaction `id`, from its journal ([`SagaError::NotFound`] if there is no workflow
    /// of that id, [`SagaError::WrongKind`] if it is a saga).
    pub async fn inspect(&self, id: &str) -> Result<TxInfo, SagaError> {
        crate::journal::of_kind(&*self.store, id, KIND).await?;
        let events = self
            .store
            .journal(id)
            .await?
            .into_iter()
            .map(|e| {
                serde_json::from_value(e.event).map_err(|err| SagaError::Inconsistent {
                    saga: id.to_owned(),
                    reason: format!("entry {} cannot be decoded: {err}", e.seq),
                })
            })
            .collect::<Result<Vec<TxEvent>, _>>()?;
        TxInfo::from_events(id, events)
    }

    /// Decides transaction `id`, which has no decision yet and whose coordinator is gone (its
    /// claim ran out or was given up): journals `decision` with `note` as
    /// [`TxEvent::Resolved`] and leaves the delivery to the next [`Coordinator::recover`] of
    /// a process that has the definition.
    ///
    /// Without a person, recovery would presume an abort; this lets a person abort at once,
    /// or commit when every participant voted yes (all of them hold prepared work that only
    /// a commit completes).
    ///
    /// # Errors
    ///
    /// * [`SagaError::NotFound`]: no such transaction; [`SagaError::WrongKind`]: `id` is a
    ///   saga's;
    /// * [`SagaError::WrongState`]: it is decided already, or `decision` is commit and not
    ///   every participant voted yes;
    /// * [`SagaError::Claimed`]: a coordinator holds it (its lease has not run out): it will
    ///   decide itself. Also for a minute after a resolve of it that failed to journal its
    ///   decision (a store failure): that resolve gave its claim back at once, so that the
    ///   coordinator's next recovery decides the transaction (presuming an abort) without
    ///   waiting, and a claim given back is kept from the one that gave it (the operator)
    ///   until the lease it held, one minute, has ended ([`Store::release`]).
    pub async fn resolve(
        &self,
        id: &str,
        decision: Decision,
        note: &str,
    ) -> Result<TxInfo, SagaError> {
        resolvable(&self.inspect(id).await?, decision)?;
        let now = now_ms();
        let lease_until = now.saturating_add(60_000);
        let claim = Claim::new(
            KIND,
            &[TxState::Preparing.as_str()],
            OPERATOR,
            now,
            lease_until,
            1,
        )
        .only(id);
        if self.store.claim(claim).await?.is_empty() {
            return Err(SagaError::Claimed(id.to_owned()));
        }
        let resolved = self
            .resolve_claimed(id, decision, note, now, lease_until)
            .await;
        if resolved.is_err() {
            // Nothing was decided (or the store cannot tell): give the claim back, so that
            // the coordinator's next recovery does not wait out the operator's lease. (Another
            // try by a person does: a release keeps its owner off for the lease it held.) A
            // claim the entry already released, or that another process holds, is not this
            // call's to give back: that refusal says nothing new.
            let _ = self.store.release(id, OPERATOR).await;
        }
        resolved
    }

    /// [`resolve`](Self::resolve)'s work once the operator holds transaction `id`'s claim
    /// (taken at `now`, until `lease_until`).
    async fn resolve_claimed(
        &self,
        id: &str,
        decision: Decision,
        note: &str,
        now: u64,
        lease_until: u64,
    ) -> Result<TxInfo, SagaError> {
        // Read again under the claim: the coordinator may have written a vote in between.
        let mut info = self.inspect(id).await?;
        resolvable(&info, decision)?;
        let event = TxEvent::Resolved {
            decision,
            note: note.to_owned(),
        };
        let append = Append::new(
            id,
            KIND,
            info.name.clone(),
            info.journal.len() as u64,
            now,
            serde_json::to_value(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            TxState::deciding(decision).as_str(),
            OPERATOR,
            lease_until,
        )
        .with_release(true);
        self.store.append(append).await?;
        info.apply(event)
            .map_err(|reason| SagaError::Inconsistent {
                saga: id.to_owned(),
                reason,
            })?;
        tracing::warn!(tx = id, ?decision, note, "transaction resolved by a person");
        Ok(info)
    }
}

/// Whether a person may decide `info` so.
fn resolvable(info: &TxInfo, decision: Decision) -> Result<(), SagaError> {
    {
        if info.decision.is_some() {
            return Err(SagaError::WrongState {
                what: "transaction",
                id: info.id.clone(),
                state: format!("{} (decided already)", info.state),
                rule: "only an undecided transaction can be resolved",
            });
        }
        let all_yes = info.votes.iter().all(|v| v.as_ref() == Some(&Vote::Yes));
        if decision == Decision::Commit && !all_yes {
            return Err(SagaError::WrongState {
                what: "transaction",
                id: info.id.clone(),
                state: format!("{} without a yes from every participant", info.state),
                rule: "only a transaction every participant voted yes in can be committed",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> TxEvent {
        TxEvent::TxStarted {
            name: "transfer".into(),
            participants: vec!["debit".into(), "credit".into()],
            payload: Value::Null,
            keys: KeyFormat::Escaped,
        }
    }

    /// A participant that votes yes, and records the idempotency key of every phase it hears.
    fn recorder(name: &str, keys: &Arc<Mutex<Vec<String>>>) -> Participant {
        let keys = keys.clone();
        Participant::new(
            name,
            tower::service_fn(move |req: PhaseRequest| {
                keys.lock().unwrap().push(req.idempotency_key);
                async { Ok::<_, BoxError>(Vote::Yes) }
            }),
        )
    }

    /// Transaction "a/b" with participant "c", and transaction "a" with participant "b/c": the
    /// keys joined with `/` were the same ("a/b/c/prepare", "a/b/c/commit"), and a participant
    /// that remembers keys took the second transaction for a repeat of the first. A name
    /// without a `/` or a `%` keeps the keys it had.
    #[tokio::test(start_paused = true)]
    async fn two_transactions_never_share_an_idempotency_key() {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let c = Coordinator::builder(Arc::new(crate::store::MemoryStore::new()))
            .define(TransactionDefinition::new("x", vec![recorder("c", &keys)]).unwrap())
            .define(TransactionDefinition::new("y", vec![recorder("b/c", &keys)]).unwrap())
            .build()
            .unwrap();
        let mut heard = Vec::new();
        for (def, tx) in [("x", "a/b"), ("y", "a")] {
            let info = c.run(def, tx, Value::Null).await.unwrap();
            assert_eq!(info.state, TxState::Committed);
            heard.push(std::mem::take(&mut *keys.lock().unwrap()));
        }
        assert_eq!(heard[0], ["a/b/c/prepare", "a/b/c/commit"]);
        assert!(
            heard[1].iter().all(|k| !heard[0].contains(k)),
            "shared keys: {heard:?}"
        );
    }

    /// A transaction an earlier version started, and left deciding: its journal does not say
    /// how its keys are built. Recovery delivers its decision under the keys it started with
    /// (participant `b/c` as it is), which its participants may hold from before the restart;
    /// a transaction started now gets the escaped name.
    #[tokio::test(start_paused = true)]
    async fn a_transaction_started_by_an_earlier_version_keeps_its_keys() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let journal = [
            (
                serde_json::json!({"type": "tx_started", "name": "y", "participants": ["b/c"],
                    "payload": null}),
                "preparing",
            ),
            (
                serde_json::json!({"type": "voted", "participant": 0, "vote": "yes",
                    "error": null}),
                "preparing",
            ),
            (
                serde_json::json!({"type": "decided", "decision": "commit", "presumed": false}),
                "committing",
            ),
        ];
        for (seq, (event, state)) in journal.into_iter().enumerate() {
            let append = Append::new("a", KIND, "y", seq as u64, 1, event, state, "old", 2);
            store.append(append).await.unwrap();
        }
        let keys = Arc::new(Mutex::new(Vec::new()));
        let c = Coordinator::builder(store.clone())
            .define(TransactionDefinition::new("y", vec![recorder("b/c", &keys)]).unwrap())
            .build()
            .unwrap();
        let r = c.recover().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.finished[0].state, TxState::Committed);
        assert_eq!(*keys.lock().unwrap(), ["a/b/c/commit"]);
        keys.lock().unwrap().clear();
        c.run("y", "a2", Value::Null).await.unwrap();
        assert_eq!(
            *keys.lock().unwrap(),
            ["a2/b%2Fc/prepare", "a2/b%2Fc/commit"]
        );
    }

    /// The transaction, participant and phase an escaped key was built from: the phase is
    /// its last `/`-separated part, the escaped name the one before, the transaction the rest.
    fn read_key(key: &str) -> (String, String, String) {
        let mut parts = key.rsplitn(3, '/');
        let (phase, escaped, tx) = (parts.next(), parts.next(), parts.next());
        let (Some(phase), Some(escaped), Some(tx)) = (phase, escaped, tx) else {
            panic!("not a key: {key:?}");
        };
        let mut name = String::new();
        let mut rest = escaped;
        while let Some(at) = rest.find('%') {
            name.push_str(&rest[..at]);
            match rest.get(at..at + 3) {
                Some("%25") => name.push('%'),
                Some("%2F") => name.push('/'),
                other => panic!("{other:?} in {key:?}"),
            }
            rest = &rest[at + 3..];
        }
        name.push_str(rest);
        (tx.to_owned(), name, phase.to_owned())
    }

    proptest::proptest! {
        /// An escaped key says which transaction, participant and phase it is for, so no two
        /// share one; a name without a `/` or a `%` has the key it had, joined.
        #[test]
        fn an_escaped_key_names_its_transaction_participant_and_phase(
            tx in "[ab/%25F]{1,8}",
            name in "[ab/%25F]{1,8}",
            phase in proptest::sample::select(vec!["prepare", "commit", "abort"]),
        ) {
            let key = KeyFormat::Escaped.key(&tx, &name, phase);
            proptest::prop_assert_eq!(
                read_key(&key),
                (tx.clone(), name.clone(), phase.to_owned())
            );
            if !name.contains(['/', '%']) {
                proptest::prop_assert_eq!(key, KeyFormat::Joined.key(&tx, &name, phase));
            }
        }
    }

    #[test]
    fn a_journal_folds_and_its_inconsistencies_are_named() {
        let info = TxInfo::from_events(
            "t1",
            vec![
                started(),
                TxEvent::Voted {
                    participant: 1,
                    vote: Vote::Yes,
                    error: None,
                },
                TxEvent::Decided {
                    decision: Decision::Abort,
                    presumed: true,
                },
                TxEvent::DeliveryFailed {
                    participant: 1,
                    attempt: 1,
                    error: ErrorRecord {
                        message: "down".into(),
                        class: palisade_core::Class::new(palisade_core::Category::Network),
                        at_ms: 0,
                    },
                },
                TxEvent::Acknowledged { participant: 0 },
            ],
        )
        .unwrap();
        assert_eq!(info.state, TxState::Aborting);
        assert_eq!(info.votes, [None, Some(Vote::Yes)]);
        assert_eq!(info.acknowledged, [true, false]);
        assert_eq!(info.delivery_failures, [0, 1]);
        assert_eq!(info.journal.len(), 5);

        let bad = |events: Vec<TxEvent>| match TxInfo::from_events("t1", events) {
            Err(SagaError::Inconsistent { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let vote = |participant| TxEvent::Voted {
            participant,
            vote: Vote::Yes,
            error: None,
        };
        assert_eq!(bad(vec![started(), vote(2)]), "participant 2 of 2");
        assert_eq!(
            bad(vec![started(), TxEvent::Acknowledged { participant: 2 }]),
            "participant 2 of 2"
        );
        assert_eq!(bad(vec![started(), started()]), "a second start");
        let decided = || TxEvent::Decided {
            decision: Decision::Commit,
            presumed: false,
        };
        assert_eq!(
            bad(vec![started(), decided(), decided()]),
            "a second decision"
        );
        assert_eq!(bad(vec![vote(0)]), "entry 0 does not start a transaction");
    }

    #[test]
    fn participants_and_coordinators_say_what_they_are_in_debug() {
        let p = Participant::new(
            "debit",
            tower::service_fn(|_: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) }),
        );
        assert_eq!(format!("{p:?}"), "Participant { name: \"debit\" }");
        let c = Coordinator::builder(Arc::new(crate::store::MemoryStore::new()))
            .define(TransactionDefinition::new("transfer", vec![p]).unwrap())
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.starts_with("Coordinator { store: "), "{shown}");
        assert!(shown.ends_with(", definitions: 1 }"), "{shown}");
        assert!(shown.contains("owner: "), "{shown}");
    }

    #[test]
    fn only_committed_and_aborted_are_final() {
        let finals: Vec<_> = TxState::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [TxState::Committed, TxState::Aborted]);
        for s in TxState::ALL {
            assert_eq!(s.as_str().parse::<TxState>(), Ok(s));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_transaction_is_released_and_listed() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let yes = tower::service_fn(|_: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) });
        let c = Coordinator::builder(store.clone())
            .define(
                TransactionDefinition::new("transfer", vec![Participant::new("debit", yes)])
                    .unwrap(),
            )
            .build()
            .unwrap();
        let tx = c.run("transfer", "t1", Value::Null).await.unwrap();
        assert_eq!(tx.state, TxState::Committed);
        let listed = Transactions::new(store.clone()).list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].id.as_str(),
                listed[0].state,
                listed[0].owner.as_deref()
            ),
            ("t1", TxState::Committed, None)
        );
        assert_eq!(Transactions::new(store).inspect("t1").await.unwrap(), tx);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_taken_is_already_there_and_a_later_conflict_is_the_store_s() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        // The participant writes entry 1 itself while it prepares (as a second coordinator
        // of the same name would): the coordinator's own entry 1 then conflicts.
        let s = store.clone();
        let meddler = tower::service_fn(move |req: PhaseRequest| {
            let s = s.clone();
            async move {
                if req.tx_id == "t2" {
                    let vote = TxEvent::Voted {
                        participant: 0,
                        vote: Vote::Yes,
                        error: None,
                    };
                    s.append(Append::new(
                        "t2",
                        KIND,
                        "transfer",
                        1,
                        now_ms(),
                        serde_json::to_value(vote).unwrap(),
                        "preparing",
                        "o1",
                        now_ms() + 60_000,
                    ))
                    .await?;
                }
                Ok::<_, BoxError>(Vote::Yes)
            }
        });
        let c = Coordinator::builder(store)
            .owner("o1")
            .define(
                TransactionDefinition::new("transfer", vec![Participant::new("debit", meddler)])
                    .unwrap(),
            )
            .build()
            .unwrap();
        c.run("transfer", "t1", Value::Null).await.unwrap();
        match c.run("transfer", "t1", Value::Null).await {
            Err(SagaError::AlreadyExists { id, kind }) => assert_eq!((&*id, kind), ("t1", KIND)),
            other => panic!("{other:?}"),
        }
        match c.run("transfer", "t2", Value::Null).await {
            Err(SagaError::Store(StoreError::Conflict(_))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_deliveries_are_numbered_from_1() {
        let fails = Arc::new(std::sync::atomic::AtomicU32::new(2));
        let flaky = tower::service_fn(move |req: PhaseRequest| {
            let fails = fails.clone();
            async move {
                if req.phase == Phase::Commit
                    && fails
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok()
                {
                    return Err::<Vote, BoxError>("HTTP 503".into());
                }
                Ok(Vote::Yes)
            }
        });
        let c = Coordinator::builder(Arc::new(crate::store::MemoryStore::new()))
            .define(
                TransactionDefinition::new("transfer", vec![Participant::new("credit", flaky)])
                    .unwrap(),
            )
            .build()
            .unwrap();
        let tx = c.run("transfer", "t1", Value::Null).await.unwrap();
        assert_eq!(tx.state, TxState::Committed);
        assert_eq!(tx.delivery_failures, [2]);
        let attempts: Vec<u32> = tx
            .journal
            .iter()
            .filter_map(|e| match e {
                TxEvent::DeliveryFailed { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, [1, 2]);
    }
}
