//! The review queue: escalated work waiting for a person, who may retry or discard it.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use palisade_core::{Category, Class};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{Writer, now_ms};
use crate::error::{SagaError, StoreError};
use crate::journal::{
    CompensationStatus, ErrorRecord, EscalationReason, Event, KIND, SagaInfo, SagaState,
};
use crate::store::{Claim, Store, StoredReview, UNREADABLE_BODY};

/// Where a review item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReviewStatus {
    /// Waiting for a person.
    Open,
    /// A person asked for a retry; the next [`recover`](crate::Sagas::recover) of a process
    /// that has the saga's definition runs it.
    RetryRequested,
    /// Retried, and the saga went on.
    Retried,
    /// A person discarded it; the saga ended `Failed`.
    Discarded,
}

impl ReviewStatus {
    /// The snake-case name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::RetryRequested => "retry_requested",
            ReviewStatus::Retried => "retried",
            ReviewStatus::Discarded => "discarded",
        }
    }

    /// Whether a person still has to act (`Open`) or a process has to (`RetryRequested`).
    pub const fn is_pending(self) -> bool {
        matches!(self, ReviewStatus::Open | ReviewStatus::RetryRequested)
    }
}

/// Its [`as_str`](ReviewStatus::as_str) name; width and alignment apply (`{:<16}`).
impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Work escalated to a person, with the context needed to decide: the saga, its input (the
/// request), the step, why, and every error on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// Its id: `"{saga_id}/{step}"`.
    pub id: String,
    /// The saga.
    pub saga_id: String,
    /// The saga's definition.
    pub saga_name: String,
    /// The step whose compensation (or outcome) is in question.
    pub step: usize,
    /// That step's name.
    pub step_name: String,
    /// Why it was escalated.
    pub reason: EscalationReason,
    /// Where it stands.
    pub status: ReviewStatus,
    /// The saga's input: the request that started it.
    pub input: Value,
    /// What the step returned, if it completed.
    pub output: Option<Value>,
    /// The failure that made the saga compensate.
    pub cause: Option<ErrorRecord>,
    /// Every failure of this step's compensation, oldest first. When its latest attempt left
    /// no outcome (it took the process down every time, until its attempts were spent), the
    /// last record says so.
    pub errors: Vec<ErrorRecord>,
    /// How many times it was escalated (a retry that fails again escalates again; an
    /// escalation repeated by recovery after a crash counts once).
    pub escalations: u32,
    /// What the person said when discarding it.
    pub note: Option<String>,
    /// When it was first escalated (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
}

impl ReviewItem {
    /// The item escalating step `step` of saga `info` (whose journal does not have this
    /// escalation yet), over `previous`, the item of the same id if there is one.
    ///
    /// It is open, unless `previous` was written for this very escalation (the process died
    /// before journaling it, and recovery escalates again) and a person asked for a retry
    /// meanwhile: that request is kept, for [`Sagas::recover`](crate::Sagas::recover) to run
    /// once the escalation is journaled. A request made for an earlier escalation was used
    /// by the retry that led here ([`Event::ReviewRetried`]), so the item opens again.
    /// `escalations` counts the escalations the journal has, this one included, so an
    /// escalation repeated after a crash counts once; it also tells the two apart.
    pub(crate) fn from_saga(
        info: &SagaInfo,
        step: usize,
        reason: EscalationReason,
        previous: Option<ReviewItem>,
        now: u64,
    ) -> Self {
        let id = crate::saga::step_key(&info.id, step);
        let escalations = info.escalations_to(&id).saturating_add(1);
        let status = match &previous {
            Some(p) if p.status == ReviewStatus::RetryRequested && p.escalations == escalations => {
                ReviewStatus::RetryRequested
            }
            _ => ReviewStatus::Open,
        };
        let s = &info.steps[step];
        let cause = info
            .steps
            .iter()
            .filter_map(|s| s.error.clone())
            .next_back();
        let mut errors = s.compensation_errors.clone();
        if s.compensation == CompensationStatus::Started {
            // Its latest attempt left no outcome: it took the process down, or the process
            // died meanwhile. Said here, so that the person sees why it was escalated.
            let at_ms = info
                .journal
                .iter()
                .rev()
                .find(
                    |r| matches!(r.event, Event::CompensationStarted { step: s, .. } if s == step),
                )
                .map_or(now, |r| r.at_ms);
            errors.push(ErrorRecord {
                message: format!(
                    "attempt {} left no outcome: the process stopped (crashed, was killed, or \
                     lost its claim) while the compensation ran",
                    s.compensation_attempts
                ),
                class: Class::new(Category::Unknown),
                at_ms,
            });
        }
        ReviewItem {
            id,
            saga_id: info.id.clone(),
            saga_name: info.name.clone(),
            step,
            step_name: s.name.clone(),
            reason,
            status,
            input: info.input.clone(),
            output: s.output.clone(),
            cause,
            errors,
            escalations,
            note: None,
            created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
            updated_ms: now,
        }
    }

    pub(crate) fn to_stored(&self) -> StoredReview {
        StoredReview {
            id: self.id.clone(),
            workflow_id: self.saga_id.clone(),
            status: self.status.as_str().to_owned(),
            updated_ms: self.updated_ms,
            body: serde_json::to_value(self).unwrap_or(Value::Null),
        }
    }

    pub(crate) fn from_stored(s: StoredReview) -> Result<Self, StoreError> {
        // A body the store could not parse (see `UNREADABLE_BODY`) says why itself.
        if let Some(why) = s
            .body
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get(UNREADABLE_BODY))
            .and_then(Value::as_str)
        {
            return Err(StoreError::Corrupt(format!("review item {}: {why}", s.id)));
        }
        serde_json::from_value(s.body)
            .map_err(|e| StoreError::Corrupt(format!("review item {}: {e}", s.id)))
    }
}

/// Decodes a stored item ([`Store::review_list`], [`Store::review_get`]); a
/// [`StoreError::Corrupt`] naming it if it cannot be decoded (written by a later version,
/// edited by hand, a body the store could not parse: [`UNREADABLE_BODY`]). For a listing that
/// goes on past such an item, where [`ReviewQueue::list`] stops.
impl TryFrom<StoredReview> for ReviewItem {
    type Error = StoreError;
    fn try_from(s: StoredReview) -> Result<Self, StoreError> {
        ReviewItem::from_stored(s)
    }
}

/// The status a pending item of saga `info`, which is over, is closed with: what its journal
/// says happened.
pub(crate) fn closed_as(info: &SagaInfo) -> ReviewStatus {
    if info.discarded {
        ReviewStatus::Discarded
    } else {
        ReviewStatus::Retried
    }
}

/// How many times an item that other writers keep changing is written (closed by
/// [`ReviewQueue::close`], escalated to by `Sagas::put_review`) before the writer gives up.
const WRITE_ATTEMPTS: usize = 16;

/// Writes review item `id` with `attempt`, one compare-and-set ([`Store::review_put_if`])
/// and the reads it needs, until an attempt is done ([`Break`](ControlFlow::Break)) or
/// fails. Each [`Continue`](ControlFlow::Continue) is a write lost to another writer; it
/// carries what the next attempt starts from (the item read again, if the attempt read it).
/// After [`WRITE_ATTEMPTS`] lost writes it gives up with a [`StoreError::Conflict`] naming
/// the item and `to`, what the writes were for (`"close it"`).
pub(crate) async fn write_over_other_writers<S, T, F>(
    id: &str,
    to: &str,
    mut from: S,
    mut attempt: impl FnMut(S) -> F,
) -> Result<T, SagaError>
where
    F: Future<Output = Result<ControlFlow<T, S>, SagaError>>,
{
    for _ in 0..WRITE_ATTEMPTS {
        match attempt(from).await? {
            ControlFlow::Break(done) => return Ok(done),
            ControlFlow::Continue(next) => from = next,
        }
    }
    Err(StoreError::Conflict(format!(
        "review item {id}: changed by another writer at each of {WRITE_ATTEMPTS} attempts to {to}"
    ))
    .into())
}

/// The review queue of a store: list, inspect, ask for a retry, discard.
///
/// It needs no saga definitions, so the command-line tool can use it on the store's file
/// while the service runs. A retry asked for here is *requested*: the work runs in the next
/// [`Sagas::recover`](crate::Sagas::recover) of a process that has the saga's definition
/// (or at once with [`Sagas::retry_review`](crate::Sagas::retry_review)). A discard takes
/// effect at once: the saga's remaining compensations are abandoned, written as such in its
/// journal, and the saga ends `Failed`.
#[derive(Clone, Debug)]
pub struct ReviewQueue {
    store: Arc<dyn Store>,
    owner: String,
}

impl ReviewQueue {
    /// The review queue of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ReviewQueue {
            store,
            owner: "review-queue".into(),
        }
    }

    /// Finishes in the store a discard an earlier version of this crate left half-written:
    /// it journaled a discard as two entries ([`Event::ReviewDiscarded`], then
    /// [`Event::SagaFinished`]), and a crash (or a store failure) between them left the
    /// discard journaled and the saga's record `escalated`, held by the queue. Saga `info`
    /// reads as failed (the discard is final); this writes the missing end, so that its
    /// record says `failed` too (listed so, purged in time) and its claim is given back.
    ///
    /// Anything else is left alone, as is a saga another process holds (the next call on its
    /// item finishes it).
    pub(crate) async fn finish_interrupted_discard(
        &self,
        info: &SagaInfo,
    ) -> Result<(), SagaError> {
        if !matches!(
            info.journal.last().map(|r| &r.event),
            Some(Event::ReviewDiscarded { .. })
        ) {
            return Ok(());
        }
        let escalated = SagaState::Escalated.as_str();
        match self.store.workflow(&info.id).await? {
            Some(rec) if rec.state == escalated => {}
            _ => return Ok(()),
        }
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let claimed = self
            .store
            .claim(
                Claim::new(KIND, &[escalated], self.owner.clone(), now, now + 60_000, 1)
                    .only(info.id.clone()),
            )
            .await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let info = SagaInfo::from_journal(&info.id, self.store.journal(&info.id).await?)?;
        let mut w = Writer::new(
            self.store.clone(),
            self.owner.clone(),
            String::new(),
            std::time::Duration::from_secs(60),
            sent,
            info,
        );
        if matches!(
            w.info.journal.last().map(|r| &r.event),
            Some(Event::ReviewDiscarded { .. })
        ) {
            tracing::info!(saga = %w.info.id, "finishing a discard an earlier version left half-written");
            w.log(Event::SagaFinished {
                state: SagaState::Failed,
            })
            .await?;
        } else {
            self.store.release(&w.info.id, &self.owner).await.ok();
        }
        Ok(())
    }

    /// Every item, oldest first (pending and closed). A saga's items go when the saga is
    /// purged ([`Sagas::purge_finished`](crate::Sagas::purge_finished)), with its journal.
    ///
    /// An item that cannot be decoded (written by a later version of this crate, edited by
    /// hand) fails the whole list with a [`StoreError::Corrupt`] that names it, rather than
    /// leaving it out of a list that would then look complete: inspect the others one by one
    /// ([`inspect`](ReviewQueue::inspect)). [`Sagas::recover`](crate::Sagas::recover) does not
    /// stop there: it reads the items one by one, reports an unreadable one in
    /// [`Recovery::failed`](crate::Recovery::failed) and runs the retries requested on the
    /// others.
    pub async fn list(&self) -> Result<Vec<ReviewItem>, SagaError> {
        self.store
            .review_list()
            .await?
            .into_iter()
            .map(|s| ReviewItem::from_stored(s).map_err(SagaError::from))
            .collect()
    }

    /// Item `id`.
    pub async fn inspect(&self, id: &str) -> Result<ReviewItem, SagaError> {
        Ok(self.read(id).await?.0)
    }

    /// Item `id`, and the stored item it was decoded from: what a write of the item changed
    /// ([`Store::review_put_if`]) expects to find still stored.
    pub(crate) async fn read(&self, id: &str) -> Result<(ReviewItem, StoredReview), SagaError> {
        let stored = self
            .store
            .review_get(id)
            .await?
            .ok_or_else(|| SagaError::NoReviewItem(id.to_owned()))?;
        Ok((ReviewItem::from_stored(stored.clone())?, stored))
    }

    /// Asks for item `id` to be retried by the next recovery.
    ///
    /// Only an open item can be retried. If the service died between writing the item and
    /// journaling the escalation (the saga is still `compensating`), the request is kept all
    /// the same: the restarted service's recovery escalates the saga again, to this item,
    /// keeps the request, and runs it.
    ///
    /// An open item whose saga is over (a crash came between the saga's last entry and the
    /// item's update: a discard, or a retry that ran) is closed as the journal says, and the
    /// request refused with a [`SagaError::WrongState`]: there is nothing left to retry. So is
    /// an open item whose retry ran and whose saga then escalated another step, to another
    /// item (a crash came before this one was closed): it is closed as retried, and the
    /// request refused with a [`SagaError::WrongState`] naming the saga's latest item, the one
    /// to retry.
    ///
    /// The request is for the item as this call read it, as a retry is for the escalation its
    /// item was read at, and it is written only over that item ([`Store::review_put_if`]):
    /// if the item changed in between (another process retried the saga and it was escalated
    /// again, to this item, with new errors; another person asked first; the saga ended and
    /// its item was closed), nothing is written and a [`SagaError::WrongState`] says where the
    /// item stands now (a [`SagaError::NoReviewItem`] if it is gone): read it and ask again.
    /// Written as it was read, the item would go back to an escalation the journal has
    /// passed, and no recovery would ever run the request. No claim is taken, so a request
    /// is still accepted while the saga is held (still compensating, as above, or being
    /// retried by another process).
    pub async fn request_retry(&self, id: &str) -> Result<ReviewItem, SagaError> {
        let (mut item, read) = self.read(id).await?;
        if item.status != ReviewStatus::Open {
            return Err(SagaError::WrongState {
                what: "review item",
                id: item.id,
                state: item.status.to_string(),
                rule: "only an open item can be retried",
            });
        }
        let info = SagaInfo::from_journal(&item.saga_id, self.store.journal(&item.saga_id).await?)?;
        if info.state.is_final() {
            let rule = "only the review item of an unfinished saga can be retried";
            return Err(self.close_after_the_saga(read, &info, rule).await?);
        }
        if info.state == SagaState::Escalated && info.review.as_deref() != Some(id) {
            // No recovery would run a request for this item (it closes the item), so it is
            // closed now and the request refused, as a discard is.
            let rule = "only its latest review item can be retried";
            return Err(self.close_behind_the_saga(read, &info, rule).await?);
        }
        item.status = ReviewStatus::RetryRequested;
        item.updated_ms = now_ms();
        if self
            .store
            .review_put_if(Some(read), item.to_stored())
            .await?
        {
            return Ok(item);
        }
        let now = self.inspect(id).await?;
        Err(SagaError::WrongState {
            what: "review item",
            id: now.id,
            state: format!("{} at escalation {}", now.status, now.escalations),
            rule: "it changed while the retry was being requested (a request is for the \
                   escalation its item was read at): read it again",
        })
    }

    /// Item `read`, still pending when read, of a saga that `info` says has finished: a crash
    /// came between the saga's last entry and the item's update, or another process is about
    /// to update it. The journal is right, so the item follows it (closed as the saga ended,
    /// by [`close`](Self::close); a discard an earlier version left half-written is finished
    /// first), and the person's request is refused with `rule`: the error returned.
    async fn close_after_the_saga(
        &self,
        read: StoredReview,
        info: &SagaInfo,
        rule: &'static str,
    ) -> Result<SagaError, SagaError> {
        self.finish_interrupted_discard(info).await?;
        self.close(read, closed_as(info), None).await?;
        Ok(SagaError::WrongState {
            what: "saga",
            id: info.id.clone(),
            state: info.state.to_string(),
            rule,
        })
    }

    /// Item `read`, still pending when read, of a saga that `info` says is escalated to another
    /// item: this one was retried and the saga escalated another step since (a crash came
    /// before this item was closed). It is closed as retried, and the person's request
    /// refused with `rule`, naming the saga's latest item: the error returned.
    async fn close_behind_the_saga(
        &self,
        read: StoredReview,
        info: &SagaInfo,
        rule: &'static str,
    ) -> Result<SagaError, SagaError> {
        self.close(read, ReviewStatus::Retried, None).await?;
        Ok(SagaError::WrongState {
            what: "saga",
            id: info.id.clone(),
            state: format!(
                "escalated to review item {:?}",
                info.review.as_deref().unwrap_or_default()
            ),
            rule,
        })
    }

    /// Closes the item read as `read` with `status` (and `note`, a discard's), where the
    /// journal says its saga went past it; returns the item as it is then.
    ///
    /// Written only over the item as read ([`Store::review_put_if`]). If another process
    /// wrote it meanwhile, the item as it is now is closed instead (keeping what that process
    /// wrote: a discard's note, the errors of a newer escalation), unless it is closed already
    /// and there is no `note` to add to it; then it is left alone. Each write this loses to
    /// was another process's, so it ends; a store that keeps refusing (one of another crate
    /// whose `review_put_if` is broken) gets a [`StoreError::Conflict`] after
    /// [`WRITE_ATTEMPTS`] tries. An item that is gone (its saga purged) is returned as it
    /// would have been written.
    pub(crate) async fn close(
        &self,
        read: StoredReview,
        status: ReviewStatus,
        note: Option<&str>,
    ) -> Result<ReviewItem, SagaError> {
        let id = read.id.clone();
        write_over_other_writers(&id, "close it", read, |read| async move {
            let mut item = ReviewItem::from_stored(read.clone())?;
            if !item.status.is_pending() && note.is_none_or(|n| item.note.as_deref() == Some(n)) {
                return Ok(ControlFlow::Break(item));
            }
            item.status = status;
            if let Some(note) = note {
                item.note = Some(note.to_owned());
            }
            item.updated_ms = now_ms();
            if self
                .store
                .review_put_if(Some(read), item.to_stored())
                .await?
            {
                return Ok(ControlFlow::Break(item));
            }
            Ok(match self.store.review_get(&item.id).await? {
                Some(now) => ControlFlow::Continue(now),
                None => ControlFlow::Break(item),
            })
        })
        .await
    }

    /// Discards item `id`: its saga's remaining compensations will not run, and the saga ends
    /// `Failed`. `note` is kept with the item and in the journal. In the saga's
    /// [`SagaInfo`], the escalated compensation then reads
    /// [`Settled`](crate::journal::CompensationStatus::Settled), and those of the earlier steps,
    /// whose turn will not come,
    /// [`Abandoned`](crate::journal::CompensationStatus::Abandoned).
    ///
    /// The item is written only over the item as read ([`Store::review_put_if`]): what
    /// another process wrote meanwhile (a retry request, a closing without the note) is read
    /// again and the note written into that.
    pub async fn discard(&self, id: &str, note: &str) -> Result<ReviewItem, SagaError> {
        let (item, read) = self.read(id).await?;
        if !item.status.is_pending() {
            return Err(SagaError::WrongState {
                what: "review item",
                id: item.id,
                state: item.status.to_string(),
                rule: "only an open item or one whose retry was requested can be discarded",
            });
        }
        let info = SagaInfo::from_journal(&item.saga_id, self.store.journal(&item.saga_id).await?)?;
        if info.state.is_final() {
            let rule = "only the review item of an escalated saga can be discarded";
            return Err(self.close_after_the_saga(read, &info, rule).await?);
        }
        if info.state == SagaState::Escalated && info.review.as_deref() != Some(id) {
            // Discarding it would discard the other item's work, which nobody has looked at.
            let rule = "only its latest review item can be discarded";
            return Err(self.close_behind_the_saga(read, &info, rule).await?);
        }
        let sent = tokio::time::Instant::now();
        let now = now_ms();
        let claimed = self
            .store
            .claim(
                Claim::new(
                    KIND,
                    &[SagaState::Escalated.as_str()],
                    self.owner.clone(),
                    now,
                    now + 60_000,
                    1,
                )
                .only(item.saga_id.clone()),
            )
            .await?;
        if claimed.is_empty() {
            return Err(SagaError::Claimed(item.saga_id));
        }
        let info = SagaInfo::from_journal(&item.saga_id, self.store.journal(&item.saga_id).await?)?;
        // The item read again too, with the claim held (no engine can escalate the saga
        // now): a retry that ran meanwhile and escalated the saga again, to this very item,
        // rewrote it with new errors the person has not seen.
        let (fresh, read) = self.read(id).await?;
        if info.state != SagaState::Escalated
            || info.review.as_deref() != Some(id)
            || fresh.escalations != item.escalations
        {
            // It changed between the first read and the claim (a retry ran, another process
            // finished it or escalated it again): nothing is written, not even the item as
            // it was read over the newer one; asking again reads it as it is now.
            self.store.release(&item.saga_id, &self.owner).await.ok();
            return Err(SagaError::WrongState {
                what: "saga",
                id: item.saga_id,
                state: match info.review {
                    Some(review) => format!("{} at review item {review:?}", info.state),
                    None => info.state.to_string(),
                },
                rule: "a discard is for the escalation its item was read at, and the saga \
                       changed since: read the item again",
            });
        }
        let mut w = Writer::new(
            self.store.clone(),
            self.owner.clone(),
            String::new(),
            std::time::Duration::from_secs(60),
            sent,
            info,
        );
        // One entry ends the saga `Failed` and gives the claim back: no crash can come
        // between the discard and the saga's end.
        w.log(Event::ReviewDiscarded {
            review: id.to_owned(),
            note: note.to_owned(),
        })
        .await?;
        self.close(read, ReviewStatus::Discarded, Some(note)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::losing::Losing;

    /// A queue over a store holding open item `s/1`, whose next `losses` conditional writes
    /// lose; and the item as stored.
    async fn queue_over_an_open_item(losses: usize) -> (Arc<Losing>, ReviewQueue, StoredReview) {
        let item = ReviewItem {
            id: "s/1".into(),
            saga_id: "s".into(),
            saga_name: "d".into(),
            step: 1,
            step_name: "b".into(),
            reason: EscalationReason::CompensationFailed,
            status: ReviewStatus::Open,
            input: Value::Null,
            output: None,
            cause: None,
            errors: Vec::new(),
            escalations: 1,
            note: None,
            created_ms: 1,
            updated_ms: 1,
        };
        let store = Arc::new(Losing::default());
        store.review_put(item.to_stored()).await.unwrap();
        store.lose(losses);
        (store.clone(), ReviewQueue::new(store), item.to_stored())
    }

    /// Closing an item over a store whose every write of it loses (its `review_put_if`
    /// broken): `close` gives up after 16 writes with a conflict naming the item, and the
    /// item is left as it was.
    #[tokio::test(start_paused = true)]
    async fn close_gives_up_after_16_lost_writes() {
        let (store, queue, read) = queue_over_an_open_item(usize::MAX).await;
        let closed = queue
            .close(read.clone(), ReviewStatus::Discarded, Some("refunded"))
            .await;
        match closed {
            Err(SagaError::Store(StoreError::Conflict(m))) => assert_eq!(
                m,
                "review item s/1: changed by another writer at each of 16 attempts to close it"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.asked(), 16);
        assert_eq!(store.review_get("s/1").await.unwrap(), Some(read));
    }

    /// The same with 15 writes lost: the 16th closes the item.
    #[tokio::test(start_paused = true)]
    async fn close_writes_at_the_16th_attempt() {
        let (store, queue, read) = queue_over_an_open_item(15).await;
        let item = queue
            .close(read, ReviewStatus::Discarded, Some("refunded"))
            .await
            .unwrap();
        assert_eq!(item.status, ReviewStatus::Discarded);
        assert_eq!(item.note.as_deref(), Some("refunded"));
        assert_eq!(store.asked(), 16);
        assert_eq!(
            store.review_get("s/1").await.unwrap(),
            Some(item.to_stored())
        );
    }
}
