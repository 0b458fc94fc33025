//! The heartbeat: a claim renewed while a step, a compensation or a two-phase-commit phase is
//! in flight, so that work longer than a lease is not taken over by another process.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::now_ms;
use crate::error::StoreError;
use crate::store::{BoxFuture, Store};

/// The claim was lost while the work was in flight: another process holds the workflow now,
/// or may, since this one could not renew its claim in time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lost;

/// How long this process relies on a claim secured for `lease`: half of it. Another process
/// may take the workflow over once the lease has run out; another engine instance under the
/// same owner name once the claim was last renewed more than seven twelfths of the lease ago
/// ([`Store::claim`]). The twelfth left before the earlier of the two is the safety margin
/// (see [`renewing`]).
pub(crate) fn relied_on(lease: Duration) -> Duration {
    lease / 2
}

/// How long after a renewal that failed (not a lost claim: the store could not be reached)
/// the next is sent: a twelfth of the lease, so that a second one is tried before the
/// deadline ([`relied_on`]).
fn retry_after(lease: Duration) -> Duration {
    lease / 12
}

/// Runs `work` to its end while renewing the claim instance `instance` of `owner` holds on
/// workflow `id` every third of `lease` ([`Store::renew_instance`]), so the claim never runs
/// out, nor looks abandoned to another instance of `owner`, while this process is alive and
/// can reach the store.
///
/// The renewals race the work inside this one future: no task is spawned, nothing is locked,
/// and until the first third of the lease has passed the only cost is two timers. The work is
/// polled before a renewal's outcome is looked at, so work that is done is returned even if a
/// renewal was under way (the renewal is dropped; the caller's next journal entry renews the
/// claim anyway, or is refused if it was lost).
///
/// A renewal that reports the claim lost ([`StoreError::Conflict`]) ends the heartbeat and
/// drops `work` unfinished, as a crash would: the process that took the workflow over now
/// decides what became of it, and this one must not journal the outcome. Any other store
/// error is logged and the renewal is tried again a twelfth of a lease later (then every
/// third of a lease once one succeeds).
///
/// # The deadline
///
/// A process that cannot reach the store never hears [`StoreError::Conflict`], yet once its
/// lease has run out another process may take the workflow over and, say, compensate the
/// step this one is still running; and another engine instance under the same owner name
/// (this process restarted, or a replica left at the same name) may do so sooner, once the
/// claim was last renewed more than seven twelfths of a lease ago. So the work is also
/// dropped (with [`Lost`]) before either can happen: [`relied_on`] (half of `lease`) after
/// the claim was secured, by tokio's clock, unless a renewal secured it further meanwhile.
/// The work is not polled again once that time has passed, even if it could finish.
///
/// A claim counts as secured when the renewal that extended it was *sent* (the store sets its
/// end to the sender's `now + lease`), whatever time the answer took. The claim held when
/// `renewing` is called was secured at `secured`: when the caller's journal entry or claim
/// that set a whole lease from the sender's clock was *sent* (as the engine and the
/// coordinator do before every step, compensation, backoff and phase), not when the store
/// acknowledged it, so a slow write does not push the deadline past the lease the store
/// holds. The first renewal is sent a third of a lease after `secured`, the deadline is
/// [`relied_on`] after it.
///
/// The margin is what that assumes about clocks: the store judges expiry and staleness by
/// the wall clock of the process that takes over, this process its deadline by its own
/// monotonic clock, so the takeover's wall clock must not run ahead of this process's by a
/// twelfth of a lease (5 s of the default 60 s) when both share an owner name, or by half a
/// lease otherwise. The builders' `lease` documentation asks processes to keep their clocks
/// in step (NTP). A renewal is sent a third of a lease after the claim was last secured (the
/// sending of the last renewal that succeeded, or of the caller's write), and, if that one
/// fails, again a twelfth later, before the deadline; if none succeeds, or the last has not answered by the
/// deadline, the work is dropped even though the claim may still be this process's, which is
/// the price of never driving a saga another process may have taken.
pub(crate) async fn renewing<F: Future>(
    store: &dyn Store,
    id: &str,
    owner: &str,
    instance: &str,
    lease: Duration,
    secured: Instant,
    work: F,
) -> Result<F::Output, Lost> {
    let period = lease / 3;
    let lease_ms = crate::settings::millis(lease);
    let relied = relied_on(lease);
    let mut work = pin!(work);
    let mut tick = pin!(tokio::time::sleep_until(secured + period));
    let mut deadline = pin!(tokio::time::sleep_until(secured + relied));
    // The renewal in flight, and when it was sent.
    let mut renewal: Option<(Instant, BoxFuture<'_, Result<(), StoreError>>)> = None;
    let past_deadline = || {
        tracing::warn!(workflow = id, owner, lease = ?lease,
            "could not renew the claim before it was about to run out; abandoning the work, \
             as another process may take the workflow over");
        Poll::Ready(Err(Lost))
    };
    poll_fn(|cx| {
        if deadline.as_mut().poll(cx).is_ready() {
            return past_deadline();
        }
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            if let Some((sent, r)) = renewal.as_mut() {
                let Poll::Ready(result) = r.as_mut().poll(cx) else {
                    break;
                };
                let sent = *sent;
                renewal = None;
                // After a renewal, the next one is due a third of a lease after this one was
                // sent, as the deadline counts from its sending: counted from its answer, each
                // round's latency came off the margin, and two renewals answering in a twelfth
                // of a lease each lost a long step its claim.
                let next = match result {
                    Ok(()) => {
                        deadline.as_mut().reset(sent + relied);
                        sent + period
                    }
                    Err(StoreError::Conflict(reason)) => {
                        tracing::warn!(workflow = id, owner, %reason,
                            "claim lost while work was in flight; abandoning the work");
                        return Poll::Ready(Err(Lost));
                    }
                    Err(e) => {
                        tracing::warn!(workflow = id, owner, error = %e,
                            "lease renewal failed; trying again in a twelfth of a lease");
                        Instant::now() + retry_after(lease)
                    }
                };
                tick.as_mut().reset(next);
            }
            if tick.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = now_ms();
            renewal = Some((
                Instant::now(),
                store.renew_instance(id, owner, instance, now, now.saturating_add(lease_ms)),
            ));
        }
        // A renewal may have moved the deadline: poll it again to be woken at the new one.
        if deadline.as_mut().poll(cx).is_ready() {
            return past_deadline();
        }
        Poll::Pending
    })
    .await
}
