//! Finagle's retry budget: retries as a fraction of requests, plus a reserve.

use std::fmt;
use std::time::Duration;

use palisade_classify::ConfigError;
use tokio::time::Instant;

use super::{Budget, Millionths, Withdrawal, stripe};
use crate::sync::AtomicU64;
use crate::window::{self, Clock, SLOTS, Take};

const MICRO: u64 = 1_000_000;

/// One thread stripe of the request counters, on its own cache lines.
#[repr(align(128))]
struct Stripe([AtomicU64; SLOTS]);

/// Finagle's retry budget: over a sliding window of `ttl`, retries may not exceed
/// `percent` × requests + `min_per_second` × `ttl`.
///
/// Every request deposits `percent` of a retry; every retry withdraws one. Both expire after
/// `ttl`. The reserve (`min_per_second` × `ttl`) lets a client that sends few requests, or has
/// just started, retry at all. Defaults: `ttl` 10 s, `min_per_second` 10, `percent` 0.2.
///
/// # Exact arithmetic
///
/// Amounts are counted in millionths of a retry, so `percent` is exact to six decimals:
/// 10 000 requests at `percent = 0.6` with no reserve allow exactly 6 000 retries (tower's
/// `TpsBudget` rounds `1 / 0.6` down to one withdrawal unit per deposit and allows 10 000,
/// tower issue 857). A retry is allowed when
/// `retries_in_window + 1 ≤ ⌊percent × requests_in_window + min_per_second × ttl⌋`.
///
/// # Concurrency
///
/// Requests are counted in per-thread stripes of a fixed ring of ten time slots (`ttl / 10`
/// each), so the per-request deposit is one uncontended compare-and-swap. Withdrawals are
/// serialised by a compare-and-swap on the current retry slot: within one slot, concurrent
/// callers can never take more than the formula allows; two callers whose clock reads straddle a
/// slot boundary may each take the last retry. A slot's counts leave the window between
/// `ttl − ttl/10` and `ttl` after they were made.
///
/// # Example
/// ```
/// use palisade_retry::budget::{Budget, RatioBudget};
/// use std::time::Duration;
///
/// let budget = RatioBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
/// for _ in 0..4 {
///     budget.on_request();
/// }
/// assert!(budget.try_withdraw().is_some());
/// assert!(budget.try_withdraw().is_some());
/// assert!(budget.try_withdraw().is_none()); // 50 % of 4 requests
/// ```
pub struct RatioBudget {
    clock: Clock,
    ttl: Duration,
    min_per_second: u32,
    /// Millionths of a retry earned by one request.
    per_request: u64,
    /// Millionths of a retry always available in a window.
    reserve: u64,
    stripes: Box<[Stripe]>,
    retries: [AtomicU64; SLOTS],
}

impl RatioBudget {
    /// A budget allowing `percent` retries per request (0.2 = one retry per five requests; at
    /// most 1000.0) plus `min_per_second` × `ttl`, over a sliding window of `ttl` (1 to 60
    /// seconds, as in Finagle).
    pub fn new(ttl: Duration, min_per_second: u32, percent: f64) -> Result<Self, ConfigError> {
        Self::with_origin(Instant::now(), ttl, min_per_second, percent)
    }

    /// [`RatioBudget::new`] with the window's time slots aligned on `origin` rather than on
    /// the current instant (for simulators that run their own clock).
    pub fn with_origin(
        origin: Instant,
        ttl: Duration,
        min_per_second: u32,
        percent: f64,
    ) -> Result<Self, ConfigError> {
        Self::build(origin, ttl, min_per_second, percent, stripe::count())
    }

    pub(crate) fn build(
        origin: Instant,
        ttl: Duration,
        min_per_second: u32,
        percent: f64,
        stripes: usize,
    ) -> Result<Self, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new("ttl", "must be between 1 and 60 seconds"));
        }
        if !percent.is_finite() || !(0.0..=1000.0).contains(&percent) {
            return Err(ConfigError::new(
                "percent",
                "must be between 0.0 and 1000.0",
            ));
        }
        let per_request = (percent * MICRO as f64).round() as u64;
        // min_per_second × ttl retries, in millionths: min_per_second × ttl in microseconds.
        let reserve = (min_per_second as u64).saturating_mul(ttl.as_micros() as u64);
        Ok(RatioBudget {
            clock: Clock::new(origin, ttl),
            ttl,
            min_per_second,
            per_request,
            reserve,
            stripes: (0..stripes.max(1))
                .map(|_| Stripe(window::ring()))
                .collect(),
            retries: window::ring(),
        })
    }

    /// The window.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The reserve rate.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The fraction of requests that may be retried, as given (rounded to millionths).
    pub fn percent(&self) -> f64 {
        self.per_request as f64 / MICRO as f64
    }

    /// Counts one request at `now`.
    pub fn deposit_at(&self, now: Instant) {
        self.deposit_on(stripe::current(), now)
    }

    pub(crate) fn deposit_on(&self, stripe: usize, now: Instant) {
        let epoch = self.clock.epoch(now);
        let stripe = &self.stripes[stripe % self.stripes.len()];
        window::add(&stripe.0[epoch as usize % SLOTS], epoch, 1);
    }

    fn requests_in(&self, epoch: u32) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| window::sum(&stripe.0, epoch))
            .sum()
    }

    /// Retries allowed by `requests` in a window, before subtracting those already sent.
    fn earned(&self, requests: u64) -> u64 {
        let micro = requests as u128 * self.per_request as u128 + self.reserve as u128;
        (micro / MICRO as u128).min(u64::MAX as u128) as u64
    }

    /// Asks for one retry at `now`.
    pub fn try_withdraw_at(&self, now: Instant) -> Option<Withdrawal> {
        let epoch = self.clock.epoch(now);
        match window::try_take(&self.retries, epoch, |e| self.earned(self.requests_in(e))) {
            Take::Taken(epoch) => Some(Withdrawal::new(epoch as u64)),
            Take::Refused => None,
        }
    }

    /// Gives back a withdrawal whose retry was never sent. A withdrawal older than the window
    /// has expired already and changes nothing.
    pub fn refund_withdrawal(&self, withdrawal: Withdrawal) {
        let epoch = withdrawal.tag() as u32;
        window::sub_one(&self.retries[epoch as usize % SLOTS], epoch);
    }

    /// Requests counted in the window ending at `now`.
    pub fn requests_at(&self, now: Instant) -> u64 {
        self.requests_in(self.clock.epoch(now))
    }

    /// Retries counted in the window ending at `now`.
    pub fn retries_at(&self, now: Instant) -> u64 {
        window::sum(&self.retries, self.clock.epoch(now))
    }

    /// Retries that would be allowed at `now`.
    pub fn balance_at(&self, now: Instant) -> i64 {
        let epoch = self.clock.epoch(now);
        let earned = self.earned(self.requests_in(epoch)).min(i64::MAX as u64) as i64;
        earned - window::sum(&self.retries, epoch) as i64
    }
}

impl Default for RatioBudget {
    /// Finagle's defaults: `ttl` 10 s, `min_per_second` 10, `percent` 0.2.
    fn default() -> Self {
        RatioBudget::new(Duration::from_secs(10), 10, 0.2).expect("valid defaults")
    }
}

impl fmt::Debug for RatioBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatioBudget")
            .field("ttl", &self.ttl)
            .field("min_per_second", &self.min_per_second)
            .field("percent", &Millionths(self.per_request))
            .field("balance", &self.balance_at(Instant::now()))
            .finish()
    }
}

impl Budget for RatioBudget {
    #[inline]
    fn counts_requests(&self) -> bool {
        true
    }

    #[inline]
    fn on_request(&self) {
        self.deposit_at(Instant::now())
    }

    fn try_withdraw(&self) -> Option<Withdrawal> {
        self.try_withdraw_at(Instant::now())
    }

    fn refund(&self, withdrawal: Withdrawal) {
        self.refund_withdrawal(withdrawal)
    }

    fn balance(&self) -> i64 {
        self.balance_at(Instant::now())
    }
}

impl tower::retry::budget::Budget for RatioBudget {
    /// Counts one request (Finagle deposits once per request, not per retry).
    fn deposit(&self) {
        self.deposit_at(Instant::now())
    }

    fn withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now()).is_some()
    }
}
