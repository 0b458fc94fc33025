//! Retry budgets: how many retries the whole system may send, whatever each request's own
//! attempt limit says.
//!
//! A budget is shared: by every clone of a [`RetryLayer`](crate::RetryLayer) and its services,
//! and by any layers handed the same `Arc`. Three models are provided, all lock-free over
//! atomics (no mutex, no allocation after construction):
//!
//! | budget | model | a retry is allowed when |
//! |---|---|---|
//! | [`RatioBudget`] | Finagle's `RetryBudget` | retries in the last `ttl` < `ratio` × requests in the last `ttl` + `min_per_second` × `ttl`, or < `floor_per_second` × `ttl` (the last `ttl` read in ten slots: 0.9 × `ttl` to `ttl`) |
//! | [`TokenBucket`] | gRPC's retry throttling | the bucket holds more than half of `max_tokens` (a failure costs one token, a success gives back `token_ratio`) |
//! | [`RateCap`] | a fixed system-wide rate | fewer than `per_second` × `window` retries were sent in the window's ten slots (the last 0.9 × `window` to `window`) |
//! | [`Throttled`] (the default of [`RetryLayer::new`](crate::RetryLayer::new)) | a budget (12 % of requests, at least 8 a second) behind gRPC's throttling | the throttle holds more than half its tokens **and** the budget allows one |
//!
//! # One budget per failure domain
//!
//! A budget judges everything that shares it as one dependency: every failed attempt counts,
//! retried or not, and gRPC's throttle ([`TokenBucket`], in the default [`Throttled`]) stops
//! all retries once failures outweigh successes. Where one layer serves callers whose calls
//! fail independently (tenants of a gateway, each with its own upstream account or quota;
//! models with their own limits), one caller whose calls all fail spends the budget for the
//! others: in a trial, a tenant sending 10 requests a second, 30 % of which fail once and then
//! succeed, kept 100 % of its answers alone and 70.3 % beside a tenant whose every call
//! failed, with that tenant at 20 or 100 requests a second, even with
//! [`max_attempts_fn`](crate::RetryBuilder::max_attempts_fn) giving the failing tenant a
//! single attempt (its failures still count). Give each failure domain its own layer and
//! budget (a `RetryLayer` built per tenant, in front of whatever routes to it): the same
//! trial then kept 100 %. Share a budget where the callers share the dependency's health,
//! which is what it protects.
//!
//! [`Unlimited`] never refuses. Each budget also implements tower's
//! [`tower::retry::budget::Budget`], so it plugs into `tower::retry` policies as well.
//!
//! Each is built the way the layers are: `X::new()` (or `X::default()`) with documented
//! defaults, or `X::builder()` with a setter per setting and a `build()` that checks them all
//! and names the field it refuses in its [`ConfigError`](palisade_core::ConfigError).
//! [`Throttled::new`] puts any budget behind a [`TokenBucket`].
//!
//! # Fixed point
//!
//! Fractions are kept as integers: [`RatioBudget`] counts in millionths of a retry, so a
//! `ratio` of `0.6` allows exactly 6 retries per 10 requests (tower's `TpsBudget` rounds
//! `1 / 0.6` down to 1 and allows one retry per request, tower issue 857);
//! [`TokenBucket`] counts in thousandths of a token, as gRPC specifies.
//!
//! # Changing settings in place
//!
//! [`RatioBudget::reconfigure`], [`TokenBucket::reconfigure`] and [`RateCap::reconfigure`]
//! change a live budget's settings (the ratio and reserve; the bucket's size and refill; the
//! rate) without losing what it counted: the window of requests and retries, or the tokens
//! (cut to a smaller bucket's size, and said). The [`Rebalanced`] result and a `tracing` event
//! give the balance before and after. A [`Throttled`] budget changes each part through
//! [`budget`](Throttled::budget) and [`throttle`](Throttled::throttle). The window itself
//! (`ttl`, `window`) cannot change in place: its counts live in slots a tenth of it wide.
//!
//! # Reservations
//!
//! [`Budget::try_withdraw`] returns a [`Withdrawal`]. The retry layer holds it while it sleeps
//! before the retry and gives it back with [`Budget::refund`] when the retry is never sent (the
//! caller dropped the future, the inner service failed to become ready), so a cancelled call
//! leaves the budget as it found it.

use std::fmt;
use std::sync::Arc;

mod rate;
mod ratio;
mod throttled;
mod token;

pub use rate::{RateCap, RateCapBuilder};
pub use ratio::{RatioBudget, RatioBudgetBuilder};
pub use throttled::Throttled;
pub use token::{TokenBucket, TokenBucketBuilder};

/// A permission for one retry, returned by [`Budget::try_withdraw`].
///
/// Give it back with [`Budget::refund`] if the retry is not sent after all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a withdrawal is either spent on a retry or refunded"]
pub struct Withdrawal {
    tag: u64,
}

impl Withdrawal {
    /// A withdrawal carrying `tag`, whatever a budget needs to undo it (for palisade's
    /// windowed budgets, the time slot it was recorded in).
    pub const fn new(tag: u64) -> Self {
        Withdrawal { tag }
    }

    /// The tag given to [`Withdrawal::new`].
    pub const fn tag(&self) -> u64 {
        self.tag
    }
}

/// A retry budget: decides whether one more retry may be sent, system-wide.
///
/// The retry layer calls [`on_request`](Budget::on_request) once per request (not per attempt),
/// [`on_success`](Budget::on_success) when a request succeeds (or ends in an error classified
/// `Ignored`, which says nothing about the dependency), [`on_failure`](Budget::on_failure)
/// for every failed attempt whose class is retryable, except a rate limit the server paced
/// with a hint and a protecting layer's refusal (`Rejected`: it never reached the
/// dependency), and [`try_withdraw`](Budget::try_withdraw) before each retry. Every method has a default that does nothing (and `try_withdraw` allows),
/// so a budget implements only what its model counts.
///
/// Budgets read the time themselves (from `tokio::time`) so that layers that do not need the
/// clock never read it; palisade's budgets have `*_at(now)` twins for tests and simulators.
///
/// The trait is dyn-compatible: layers can hold an `Arc<dyn Budget>`.
pub trait Budget: Send + Sync {
    /// Whether [`on_request`](Budget::on_request) counts anything. When `false`, the retry layer
    /// skips the call on its happy path. (A method rather than a constant so that
    /// `Arc<dyn Budget>` works; with a concrete type it folds to a constant.)
    fn counts_requests(&self) -> bool {
        false
    }

    /// Whether [`on_success`](Budget::on_success) counts anything.
    fn counts_successes(&self) -> bool {
        false
    }

    /// A request entered the retry layer (called once, before its first attempt).
    fn on_request(&self) {}

    /// A request ended in success.
    fn on_success(&self) {}

    /// An attempt failed with a retryable class (whether or not it will be retried).
    fn on_failure(&self) {}

    /// Asks for one retry. `None` means the budget is exhausted.
    fn try_withdraw(&self) -> Option<Withdrawal> {
        Some(Withdrawal::new(0))
    }

    /// Asks for one retry as a probe of the dependency, after
    /// [`try_withdraw`](Budget::try_withdraw) refused it. `None` (the default): a probe is
    /// refused like any retry.
    ///
    /// A budget that comes back only with the dependency's successes (gRPC's throttle,
    /// [`TokenBucket`]) cannot tell that the dependency recovered while nothing reaches it.
    /// Callers that send their next request only once the last one is answered (an agent's
    /// loop, a pool of workers) send nothing while their retries wait for the budget
    /// ([`RetryBuilder::wait_for_budget`](crate::RetryBuilder::wait_for_budget)), so such a
    /// budget would hold them until their deadlines. The retry layer therefore lets one held
    /// retry ask this every 250 ms (per layer, not per request); a budget that comes back
    /// with time alone ([`RatioBudget`], [`RateCap`]) refuses, and a retry it holds goes out
    /// once its window allows. The withdrawal is given back with [`refund`](Budget::refund)
    /// like any other.
    fn try_probe(&self) -> Option<Withdrawal> {
        None
    }

    /// Gives back a withdrawal whose retry was never sent.
    fn refund(&self, withdrawal: Withdrawal) {
        let _ = withdrawal;
    }

    /// How many retries the budget would allow right now (for tracing and metrics; may be
    /// negative when more was spent than is currently earned).
    fn balance(&self) -> i64 {
        i64::MAX
    }
}

/// The result of changing a budget's settings in place ([`RatioBudget::reconfigure`],
/// [`TokenBucket::reconfigure`], [`RateCap::reconfigure`]): the budget kept its counts (its
/// window of requests and retries, or its tokens), and its balance ([`Budget::balance`]) moved
/// from `balance_before` to `balance_after` because the new settings value those counts
/// differently. `#[non_exhaustive]`: a field may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rebalanced {
    /// The balance just before the change.
    pub balance_before: i64,
    /// The balance just after it.
    pub balance_after: i64,
    /// For a [`TokenBucket`] whose new `max_tokens` is below the tokens it held: the tokens
    /// before and after they were cut to the new size, in thousandths (the only count a
    /// change can lose).
    pub clamped: Option<(u64, u64)>,
}

impl Rebalanced {
    /// Logs the change (target `palisade_retry`).
    fn announce(&self, budget: &'static str) {
        tracing::info!(
            target: "palisade_retry",
            budget,
            balance_before = self.balance_before,
            balance_after = self.balance_after,
            reset = %self,
            "retry budget reconfigured"
        );
    }
}

impl fmt::Display for Rebalanced {
    /// `balance 4 → 1`, and the tokens cut if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "balance {} → {}",
            self.balance_before, self.balance_after
        )?;
        if let Some((from, to)) = self.clamped {
            write!(
                f,
                "; tokens {} → {}: cut to the new max_tokens",
                from as f64 / 1000.0,
                to as f64 / 1000.0
            )?;
        }
        Ok(())
    }
}

/// What [`RetryBuilder::budget`](crate::RetryBuilder::budget) accepts: a budget (wrapped in a
/// new `Arc`, owned by that layer alone) or an `Arc` of one (shared with whoever else holds it,
/// `Arc<dyn Budget>` included).
pub trait IntoShared<B: ?Sized> {
    /// The shared budget.
    fn into_shared(self) -> Arc<B>;
}

impl<B: Budget> IntoShared<B> for B {
    fn into_shared(self) -> Arc<B> {
        Arc::new(self)
    }
}

impl<B: Budget + ?Sized> IntoShared<B> for Arc<B> {
    fn into_shared(self) -> Arc<B> {
        self
    }
}

/// A budget that never refuses: only the per-request attempt limit bounds retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unlimited;

impl Budget for Unlimited {}

impl tower::retry::budget::Budget for Unlimited {
    fn deposit(&self) {}

    fn withdraw(&self) -> bool {
        true
    }
}

/// Stripes for per-thread counters: each thread picks one at first use, round robin.
pub(crate) use palisade_core::stripe;

/// Formats a fixed-point number of millionths as a decimal for `Debug` output.
pub(crate) struct Millionths(pub(crate) u64);

impl fmt::Debug for Millionths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            write!(f, "{}", self.0 / 1_000_000)
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{}.{}", self.0 / 1_000_000, digits.trim_end_matches('0'))
        }
    }
}

/// Budgets with given settings, for the tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{RateCap, RatioBudget, TokenBucket};

    /// A ratio budget whose slots are aligned on `origin`.
    pub(crate) fn ratio_at(
        origin: Instant,
        ttl: Duration,
        min_per_second: u32,
        ratio: f64,
    ) -> RatioBudget {
        RatioBudget::builder()
            .origin(origin)
            .ttl(ttl)
            .min_per_second(min_per_second)
            .ratio(ratio)
            .build()
            .unwrap()
    }

    /// A ratio budget whose slots are aligned on now.
    pub(crate) fn ratio_budget(ttl: Duration, min_per_second: u32, ratio: f64) -> RatioBudget {
        ratio_at(Instant::now(), ttl, min_per_second, ratio)
    }

    /// A rate cap whose slots are aligned on `origin`.
    pub(crate) fn cap_at(origin: Instant, per_second: u32, window: Duration) -> RateCap {
        RateCap::builder()
            .origin(origin)
            .per_second(per_second)
            .window(window)
            .build()
            .unwrap()
    }

    /// A rate cap whose slots are aligned on now.
    pub(crate) fn rate_cap(per_second: u32, window: Duration) -> RateCap {
        cap_at(Instant::now(), per_second, window)
    }

    /// A full token bucket.
    pub(crate) fn bucket(max_tokens: u32, token_ratio: f64) -> TokenBucket {
        TokenBucket::builder()
            .max_tokens(max_tokens)
            .token_ratio(token_ratio)
            .build()
            .unwrap()
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
