//! The heartbeat: a claim renewed while a step, a compensation or a two-phase-commit phase is
//! in flight, so that work longer than a lease is not taken over by another process.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Poll, ready};
use std::time::Duration;

use crate::engine::now_ms;
use crate::error::StoreError;
use crate::store::{BoxFuture, Store};

/// The claim was lost while the work was in flight: another process holds the workflow now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lost;

/// Runs `work` to its end while renewing `owner`'s claim on workflow `id` every third of
/// `lease` ([`Store::renew`]), so the claim never runs out while this process is alive.
///
/// The renewals race the work inside this one future: no task is spawned, nothing is locked,
/// and until the first third of the lease has passed the only cost is one timer. The work is
/// polled first, so work that is done is returned even if a renewal was under way (the
/// renewal is dropped; the caller's next journal entry renews the claim anyway, or is refused
/// if it was lost).
///
/// A renewal that reports the claim lost ([`StoreError::Conflict`]) ends the heartbeat and
/// drops `work` unfinished, as a crash would: the process that took the workflow over now
/// decides what became of it, and this one must not journal the outcome. Any other store
/// error is logged and the renewal is tried again a third of a lease later (the lease has
/// two more thirds to go; a claim whose lease ran out still counts until another process
/// takes it).
pub(crate) async fn renewing<F: Future>(
    store: &dyn Store,
    id: &str,
    owner: &str,
    lease: Duration,
    work: F,
) -> Result<F::Output, Lost> {
    let period = lease / 3;
    let lease_ms = crate::settings::millis(lease);
    let mut work = pin!(work);
    let mut tick = pin!(tokio::time::sleep(period));
    let mut renewal: Option<BoxFuture<'_, Result<(), StoreError>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            if let Some(r) = renewal.as_mut() {
                let result = ready!(r.as_mut().poll(cx));
                renewal = None;
                match result {
                    Ok(()) => {}
                    Err(StoreError::Conflict(reason)) => {
                        tracing::warn!(workflow = id, owner, %reason,
                            "claim lost while work was in flight; abandoning the work");
                        return Poll::Ready(Err(Lost));
                    }
                    Err(e) => tracing::warn!(workflow = id, owner, error = %e,
                        "lease renewal failed; trying again in a third of a lease"),
                }
                tick.as_mut().reset(tokio::time::Instant::now() + period);
            }
            ready!(tick.as_mut().poll(cx));
            renewal = Some(store.renew(id, owner, now_ms().saturating_add(lease_ms)));
        }
    })
    .await
}
