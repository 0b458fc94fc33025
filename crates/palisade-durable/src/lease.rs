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

/// How long this process relies on a claim secured for `lease`: three quarters of it. The
/// quarter left is the safety margin (see [`renewing`]).
pub(crate) fn relied_on(lease: Duration) -> Duration {
    lease - lease / 4
}

/// Runs `work` to its end while renewing `owner`'s claim on workflow `id` every third of
/// `lease` ([`Store::renew`]), so the claim never runs out while this process is alive and
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
/// error is logged and the renewal is tried again a third of a lease later.
///
/// # The deadline
///
/// A process that cannot reach the store never hears [`StoreError::Conflict`], yet once its
/// lease has run out another process may take the workflow over and, say, compensate the
/// step this one is still running. So the work is also dropped (with [`Lost`]) once the
/// claim last secured is about to run out: [`relied_on`] (three quarters of `lease`) after
/// it was secured, by tokio's clock, unless a renewal secured it further meanwhile. The work
/// is not polled again once that time has passed, even if it could finish.
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
/// The margin (a quarter of the lease, 15 s of the default 60 s) is what that assumes about
/// clocks: the store judges expiry by the wall clock of the process that takes over, this
/// process its deadline by its own monotonic clock, so the takeover's wall clock must not run
/// ahead of this process's by a quarter of a lease. That is within the third of a lease to which the
/// builders' `lease` documentation asks processes to keep their clocks in step (NTP). Two
/// renewals are tried before the deadline (at one and two thirds of the lease); if both fail,
/// or the second has not answered by the deadline, the work is dropped even though the claim
/// may still be this process's, which is the price of never driving a saga another process
/// may have taken.
pub(crate) async fn renewing<F: Future>(
    store: &dyn Store,
    id: &str,
    owner: &str,
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
                match result {
                    Ok(()) => deadline.as_mut().reset(sent + relied),
                    Err(StoreError::Conflict(reason)) => {
                        tracing::warn!(workflow = id, owner, %reason,
                            "claim lost while work was in flight; abandoning the work");
                        return Poll::Ready(Err(Lost));
                    }
                    Err(e) => tracing::warn!(workflow = id, owner, error = %e,
                        "lease renewal failed; trying again in a third of a lease"),
                }
                tick.as_mut().reset(Instant::now() + period);
            }
            if tick.as_mut().poll(cx).is_pending() {
                break;
            }
            renewal = Some((
                Instant::now(),
                store.renew(id, owner, now_ms().saturating_add(lease_ms)),
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
