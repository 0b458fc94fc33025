//! Finagle's retry budget: retries as a fraction of requests, plus a reserve.

use std::fmt;
use std::time::Duration;

use palisade_core::ConfigError;
use tokio::time::Instant;

use palisade_core::sync::CachePadded;
use palisade_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Budget, Millionths, Rebalanced, Withdrawal, stripe};
use crate::window::{self, Clock, SLOTS, Take, pack, unpack};

const MICRO: u64 = 1_000_000;

/// One thread stripe of the request counters (kept on its own cache lines, in a
/// [`CachePadded`]).
struct Stripe {
    slots: [AtomicU64; SLOTS],
    /// The sampled clock: `(epoch, shift)` packed. Deposits through
    /// [`Budget::on_request`] read the clock every `2^shift`-th request of this stripe and use
    /// `epoch` in between.
    clock: AtomicU64,
    /// Nanoseconds since the origin at the last clock read.
    read_at: AtomicU64,
}

impl Stripe {
    fn new() -> Self {
        Stripe {
            slots: window::ring(),
            clock: AtomicU64::new(0),
            read_at: AtomicU64::new(0),
        }
    }
}

/// The largest sampling shift: the clock is read at least every 64th request of a stripe.
const MAX_SHIFT: u32 = 6;

/// Finagle's retry budget: over a sliding window of `ttl`, retries may not exceed
/// `ratio` × requests + `min_per_second` × `ttl`, nor, when that is less, a floor of
/// `floor_per_second` × `ttl`.
///
/// Every request deposits `ratio` of a retry; every retry withdraws one. Both expire after
/// `ttl`. The reserve (`min_per_second` × `ttl`) lets a client that sends few requests, or has
/// just started, retry at all. Defaults ([`RatioBudget::new`]): `ttl` 10 s, `min_per_second`
/// 10, `ratio` 0.2, no floor; other settings through [`RatioBudget::builder`]. (Finagle calls
/// the ratio `percentCanRetry`, although it is a fraction: 0.2 there too.)
///
/// The reserve is added at every request rate, so it is also extra load when the client is
/// busy: Finagle's 10 a second is another 10 % of retries at 100 requests a second. The floor
/// (`floor_per_second`, 0 by default) is the other way to let a quiet client retry: a window
/// always allows at least `floor_per_second` × `ttl` retries, and once `ratio` × requests is
/// above that the floor adds nothing, as Envoy's retry budget allows `budget_percent` of the
/// active requests but never fewer than `min_retry_concurrency`. With `ratio` 0.12 and a floor
/// of 8 a second, a client sending 10 requests a second may retry 8 of them a second, one
/// sending 100 may retry 12.
///
/// # Exact arithmetic
///
/// Amounts are counted in millionths of a retry, so `ratio` is exact to six decimals:
/// 10 000 requests at `ratio = 0.6` with no reserve allow exactly 6 000 retries (tower's
/// `TpsBudget` rounds `1 / 0.6` down to one withdrawal unit per deposit and allows 10 000,
/// tower issue 857). A retry is allowed when
/// `retries_in_window + 1 ≤ max(⌊ratio × requests_in_window + min_per_second × ttl⌋,
/// floor_per_second × ttl)`.
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
/// # Clock
///
/// [`deposit_at`](RatioBudget::deposit_at) and the `*_at` methods take the time as an argument
/// and are exact. [`Budget::on_request`] (what the retry layer calls on every request) reads
/// the clock only every 2^k-th request of a thread's stripe, with k adapting between 0 and 6 so
/// that the sampled requests span less than 1/256 of a slot (a clock read costs about as much
/// as the rest of the layer). Requests are counted in the slot of the last clock read, never a
/// later one, so sampling can only make the budget stricter: a request may expire from the
/// window up to one sampling interval early, and after a busy burst followed by a long silence
/// up to 63 requests per stripe may land in an already expired slot.
/// [`Budget::try_withdraw`] reads the clock every time and re-synchronises all stripes.
///
/// # Example
/// ```
/// use palisade_retry::budget::{Budget, RatioBudget};
///
/// let budget = RatioBudget::builder()
///     .min_per_second(0)
///     .ratio(0.5)
///     .build()
///     .unwrap();
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
    /// The settings below change in place ([`RatioBudget::reconfigure`]); only withdrawals and
    /// reads of the balance load them, never a request.
    min_per_second: AtomicU32,
    /// Millionths of a retry earned by one request.
    per_request: AtomicU64,
    /// Millionths of a retry always available in a window.
    reserve: AtomicU64,
    /// The floor rate, as given.
    floor_per_second: AtomicU32,
    /// Millionths of a retry a window allows at least, whatever it earned.
    floor: AtomicU64,
    stripes: Box<[CachePadded<Stripe>]>,
    retries: [AtomicU64; SLOTS],
}

impl RatioBudget {
    /// A budget with Finagle's defaults: over a window (`ttl`) of 10 s, retries up to a
    /// `ratio` of 0.2 of the requests (one retry per five requests) plus a reserve of 10 per
    /// second (`min_per_second`); the window's time slots are aligned on the current instant.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults of [`RatioBudget::new`].
    ///
    /// ```
    /// use palisade_retry::budget::RatioBudget;
    /// use std::time::Duration;
    ///
    /// let budget = RatioBudget::builder()
    ///     .ttl(Duration::from_secs(30))
    ///     .min_per_second(1)
    ///     .ratio(0.1)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(budget.ratio(), 0.1);
    /// assert_eq!(
    ///     RatioBudget::builder().ratio(-0.5).build().unwrap_err().field(),
    ///     "ratio"
    /// );
    /// ```
    pub fn builder() -> RatioBudgetBuilder {
        RatioBudgetBuilder {
            ttl: DEFAULT_TTL,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            floor_per_second: 0,
            ratio: DEFAULT_RATIO,
            origin: None,
            stripes: None,
        }
    }

    /// The window.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The reserve rate.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second.load(Ordering::Relaxed)
    }

    /// The floor rate: retries per second a window allows at least (0: no floor).
    pub fn floor_per_second(&self) -> u32 {
        self.floor_per_second.load(Ordering::Relaxed)
    }

    /// The retries each request earns (0.2 = one retry per five requests), as given (rounded
    /// to millionths).
    pub fn ratio(&self) -> f64 {
        self.per_request.load(Ordering::Relaxed) as f64 / MICRO as f64
    }

    /// Changes `ratio`, `min_per_second` and `floor_per_second` in place, keeping the requests
    /// and retries counted in the window: the balance is recomputed from them under the new
    /// settings (see the result). `f` gets a builder holding the current settings and returns
    /// the new ones; they are checked as [`build`](RatioBudgetBuilder::build) checks them, and
    /// nothing changes if one is refused. Requests and withdrawals racing the change are
    /// counted, never lost (a withdrawal at that very instant may be judged by part of each).
    /// One `tracing` event (target `palisade_retry`, `retry budget reconfigured`) gives the
    /// balance before and after.
    ///
    /// The window (`ttl`) cannot change in place: the counts are kept in slots of `ttl / 10`;
    /// build a new budget for another window.
    ///
    /// ```
    /// use palisade_retry::budget::{Budget, RatioBudget};
    ///
    /// let budget = RatioBudget::builder().min_per_second(0).ratio(0.5).build().unwrap();
    /// for _ in 0..10 {
    ///     budget.on_request();
    /// }
    /// assert!(budget.try_withdraw().is_some()); // 1 of 5 retries spent
    /// // A stricter ratio: the 10 requests counted now earn 2 retries, one is spent.
    /// let done = budget.reconfigure(|b| b.ratio(0.2)).unwrap();
    /// assert_eq!((done.balance_before, done.balance_after), (4, 1));
    /// assert_eq!(budget.ratio(), 0.2);
    /// // Refused settings change nothing.
    /// let err = budget.reconfigure(|b| b.ratio(-1.0)).unwrap_err();
    /// assert_eq!(err.field(), "ratio");
    /// assert_eq!(budget.ratio(), 0.2);
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: those of [`build`](RatioBudgetBuilder::build), and
    /// `ttl` or `origin` when `f` changes them (they cannot change in place).
    pub fn reconfigure(
        &self,
        f: impl FnOnce(RatioBudgetBuilder) -> RatioBudgetBuilder,
    ) -> Result<Rebalanced, ConfigError> {
        let current = RatioBudgetBuilder {
            ttl: self.ttl,
            min_per_second: self.min_per_second(),
            floor_per_second: self.floor_per_second(),
            ratio: self.ratio(),
            origin: None,
            stripes: None,
        };
        let next = f(current);
        let (per_request, reserve, floor) = next.check()?;
        if next.ttl != self.ttl {
            return Err(ConfigError::new(
                "ttl",
                "cannot change on a live budget (its counts are kept in slots of ttl / 10): build a new one",
            ));
        }
        if next.origin.is_some() {
            return Err(ConfigError::new(
                "origin",
                "cannot change on a live budget: build a new one",
            ));
        }
        let now = Instant::now();
        let before = self.balance_at(now);
        self.per_request.store(per_request, Ordering::Relaxed);
        self.reserve.store(reserve, Ordering::Relaxed);
        self.min_per_second
            .store(next.min_per_second, Ordering::Relaxed);
        self.floor.store(floor, Ordering::Relaxed);
        self.floor_per_second
            .store(next.floor_per_second, Ordering::Relaxed);
        let done = Rebalanced {
            balance_before: before,
            balance_after: self.balance_at(now),
            clamped: None,
        };
        done.announce("ratio");
        Ok(done)
    }

    /// Counts one request at `now`.
    pub fn deposit_at(&self, now: Instant) {
        self.deposit_on(stripe::current(), now)
    }

    pub(crate) fn deposit_on(&self, stripe: usize, now: Instant) {
        let epoch = self.clock.epoch(now);
        let stripe = self.stripe(stripe);
        window::add(&stripe.slots[epoch as usize % SLOTS], epoch, 1);
    }

    #[inline]
    fn stripe(&self, stripe: usize) -> &Stripe {
        // The stripe count is a power of two: mask, do not divide.
        &self.stripes[stripe & (self.stripes.len() - 1)]
    }

    /// Counts one request now, reading the clock only when this stripe's sample is due.
    ///
    /// Each stripe remembers the epoch of its last clock read and a sampling interval of
    /// 2^shift requests. The interval doubles (up to 64) while that many requests take less
    /// than 1/1024 of a slot, and drops back to 1 as soon as they take more than 1/256 of it,
    /// so a busy stripe reads the clock rarely and a quiet one on every request. A request is
    /// counted in the slot of the last clock read, never a later one: the error is on the safe
    /// side (a deposit may expire up to one sampling interval early). After a busy burst and a
    /// long silence, up to 63 requests of a stripe may so be counted in an expired slot;
    /// [`try_withdraw`](Budget::try_withdraw) re-synchronises every stripe with the clock.
    #[inline]
    pub(crate) fn deposit_sampled(&self, stripe: usize) {
        let stripe = self.stripe(stripe);
        let (epoch, shift) = unpack(stripe.clock.load(Ordering::Relaxed));
        let slot = &stripe.slots[epoch as usize % SLOTS];
        let (tag, count) = unpack(slot.load(Ordering::Relaxed));
        let due = tag != epoch || count.wrapping_add(1) & ((1 << shift) - 1) == 0;
        if due {
            self.deposit_reading_clock(stripe, Instant::now());
        } else {
            window::add(slot, epoch, 1);
        }
    }

    #[cold]
    #[inline(never)]
    fn deposit_reading_clock(&self, stripe: &Stripe, now: Instant) {
        let nanos = self.clock.nanos(now);
        let epoch = self.clock.epoch_of(nanos);
        let elapsed = nanos.saturating_sub(stripe.read_at.swap(nanos, Ordering::Relaxed));
        let slot = self.clock.slot_nanos();
        let _ = stripe
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let (cached, shift) = unpack(word);
                if window::age(cached, epoch) > 0 {
                    // Another thread on this stripe read a later clock: keep it.
                    return None;
                }
                let shift = if elapsed > slot / 256 {
                    0
                } else if elapsed < slot / 1024 {
                    (shift + 1).min(MAX_SHIFT)
                } else {
                    shift
                };
                Some(pack(epoch, shift))
            });
        window::add(&stripe.slots[epoch as usize % SLOTS], epoch, 1);
    }

    /// Moves every stripe's sampled clock to `epoch` (and to sampling every request) if it is
    /// behind.
    fn resync(&self, epoch: u32) {
        for stripe in self.stripes.iter() {
            let word = stripe.clock.load(Ordering::Relaxed);
            if window::age(epoch, unpack(word).0) > 0 {
                let _ = stripe.clock.compare_exchange(
                    word,
                    pack(epoch, 0),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    fn requests_in(&self, epoch: u32) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| window::sum(&stripe.slots, epoch))
            .sum()
    }

    /// Retries allowed by `requests` in a window, before subtracting those already sent.
    fn earned(&self, requests: u64) -> u64 {
        let micro = (requests as u128 * self.per_request.load(Ordering::Relaxed) as u128
            + self.reserve.load(Ordering::Relaxed) as u128)
            .max(self.floor.load(Ordering::Relaxed) as u128);
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
    /// [`RatioBudget::new`]: Finagle's defaults, `ttl` 10 s, `min_per_second` 10, `ratio` 0.2.
    fn default() -> Self {
        Self::new()
    }
}

/// The default window of a [`RatioBudget`]: 10 s (Finagle's).
const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The default reserve of a [`RatioBudget`]: 10 retries per second (Finagle's).
const DEFAULT_MIN_PER_SECOND: u32 = 10;
/// The default ratio of a [`RatioBudget`]: 0.2 retries per request (Finagle's).
const DEFAULT_RATIO: f64 = 0.2;

/// Builds a [`RatioBudget`]; made by [`RatioBudget::builder`], every setting starts at the
/// default of [`RatioBudget::new`]. [`build`](RatioBudgetBuilder::build) checks them all.
#[derive(Clone, Debug)]
pub struct RatioBudgetBuilder {
    ttl: Duration,
    min_per_second: u32,
    floor_per_second: u32,
    ratio: f64,
    origin: Option<Instant>,
    stripes: Option<usize>,
}

impl RatioBudgetBuilder {
    /// The sliding window over which requests and retries are counted (1 to 60 seconds, as in
    /// Finagle; 10 s by default).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The reserve: retries per second allowed whatever the request rate, so that a client
    /// that sends few requests, or has just started, can retry at all (10 by default; 0 for
    /// none).
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// The floor: retries per second a window allows at least, however few requests it
    /// counted (0, no floor, by default). Unlike the reserve it adds nothing once
    /// `ratio` × requests is above it, so it lets a quiet client retry without adding load
    /// to a busy one (see [`RatioBudget`]).
    pub fn floor_per_second(mut self, floor_per_second: u32) -> Self {
        self.floor_per_second = floor_per_second;
        self
    }

    /// The retries each request earns: 0.2 (the default) allows one retry per five requests,
    /// 1.0 one per request (0.0 to 1000.0, as in Finagle; kept to six decimals).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Aligns the window's time slots on `origin` rather than on the instant
    /// [`build`](Self::build) runs (for simulators that run their own clock).
    pub fn origin(mut self, origin: Instant) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The number of request-counting stripes (rounded up to a power of two), instead of one
    /// per expected thread.
    #[cfg(test)]
    pub(crate) fn stripes(mut self, stripes: usize) -> Self {
        self.stripes = Some(stripes);
        self
    }

    /// Checks the settings and builds the budget.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: `ttl` outside 1 to 60 seconds, `ratio` outside
    /// 0.0 to 1000.0 or not finite.
    pub fn build(self) -> Result<RatioBudget, ConfigError> {
        let (per_request, reserve, floor) = self.check()?;
        let ttl = self.ttl;
        let stripes = self.stripes.unwrap_or_else(stripe::count);
        Ok(RatioBudget {
            clock: Clock::new(self.origin.unwrap_or_else(Instant::now), ttl),
            ttl,
            min_per_second: AtomicU32::new(self.min_per_second),
            per_request: AtomicU64::new(per_request),
            reserve: AtomicU64::new(reserve),
            floor_per_second: AtomicU32::new(self.floor_per_second),
            floor: AtomicU64::new(floor),
            stripes: (0..stripes.max(1).next_power_of_two())
                .map(|_| CachePadded::new(Stripe::new()))
                .collect(),
            retries: window::ring(),
        })
    }
}

impl RatioBudgetBuilder {
    /// Checks the settings: the millionths of a retry per request, of the reserve and of the
    /// floor.
    fn check(&self) -> Result<(u64, u64, u64), ConfigError> {
        let ttl = self.ttl;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new("ttl", "must be between 1 and 60 seconds"));
        }
        if !self.ratio.is_finite() || !(0.0..=1000.0).contains(&self.ratio) {
            return Err(ConfigError::new("ratio", "must be between 0.0 and 1000.0"));
        }
        let per_request = (self.ratio * MICRO as f64).round() as u64;
        // min_per_second × ttl retries, in millionths: min_per_second × ttl in microseconds.
        let reserve = (self.min_per_second as u64).saturating_mul(ttl.as_micros() as u64);
        let floor = (self.floor_per_second as u64).saturating_mul(ttl.as_micros() as u64);
        Ok((per_request, reserve, floor))
    }
}

impl fmt::Debug for RatioBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatioBudget")
            .field("ttl", &self.ttl)
            .field("min_per_second", &self.min_per_second())
            .field("floor_per_second", &self.floor_per_second())
            .field(
                "ratio",
                &Millionths(self.per_request.load(Ordering::Relaxed)),
            )
            .field("balance", &self.balance_at(Instant::now()))
            .finish()
    }
}

impl Budget for RatioBudget {
    #[inline]
    fn counts_requests(&self) -> bool {
        true
    }

    /// Counts one request, reading the clock only every so often on a busy thread (see
    /// [`RatioBudget`]'s "Clock" section).
    #[inline]
    fn on_request(&self) {
        self.deposit_sampled(stripe::current())
    }

    fn try_withdraw(&self) -> Option<Withdrawal> {
        let now = Instant::now();
        self.resync(self.clock.epoch(now));
        self.try_withdraw_at(now)
    }

    fn refund(&self, withdrawal: Withdrawal) {
        self.refund_withdrawal(withdrawal)
    }

    fn balance(&self) -> i64 {
        self.balance_at(Instant::now())
    }
}

impl tower::retry::budget::Budget for RatioBudget {
    /// Counts one request (Finagle deposits once per request, not per retry), as
    /// [`Budget::on_request`] does.
    fn deposit(&self) {
        self.deposit_sampled(stripe::current())
    }

    fn withdraw(&self) -> bool {
        Budget::try_withdraw(self).is_some()
    }
}

/// The sampled clock, white-box: which requests read the clock, and what a read does.
#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use tokio::time::advance;

    use super::*;

    const SLOT: Duration = Duration::from_secs(1);

    impl RatioBudget {
        /// `stripe`'s sampled clock: the epoch of its last clock read and its sampling shift.
        fn sampling(&self, stripe: usize) -> (u32, u32) {
            unpack(self.stripe(stripe).clock.load(Ordering::Relaxed))
        }
    }

    /// A budget of `stripes` stripes whose slots (1 s) start now.
    fn budget(stripes: usize) -> RatioBudget {
        RatioBudget::builder()
            .min_per_second(0)
            .ratio(1.0)
            .stripes(stripes)
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stripe_reads_the_clock_ever_more_rarely() {
        let b = budget(1);
        // Requests 1, 2, 4, 8, ... read the clock; each read that finds the requests since the
        // last one took less than 1/1024 of a slot (none: the clock is frozen) doubles the
        // interval, up to 64.
        let mut shifts = Vec::new();
        for n in 1..=200u32 {
            b.deposit_sampled(0);
            if n.is_power_of_two() || n == 3 || n == 63 {
                shifts.push((n, b.sampling(0).1));
            }
        }
        assert_eq!(
            shifts,
            [
                (1, 1),
                (2, 2),
                (3, 2),
                (4, 3),
                (8, 4),
                (16, 5),
                (32, 6),
                (63, 6),
                (64, 6),
                (128, 6)
            ]
        );
        assert_eq!(b.requests_at(Instant::now()), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_further_apart_than_a_256th_of_a_slot_sample_every_request() {
        let b = budget(1);
        b.deposit_sampled(0); // read at 0: interval 2
        assert_eq!(b.sampling(0), (0, 1));
        // Exactly 1/256 of a slot between two reads keeps the interval...
        advance(SLOT / 256).await;
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (0, 1));
        // ...a nanosecond more drops it to every request.
        advance(SLOT / 256 + Duration::from_nanos(1)).await;
        b.deposit_sampled(0); // not a read: the third request of an interval of 2
        assert_eq!(b.sampling(0), (0, 1));
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (0, 0));
        // Exactly 1/1024 of a slot keeps it too; a nanosecond less doubles it.
        advance(SLOT / 1024).await;
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (0, 0));
        advance(SLOT / 1024 - Duration::from_nanos(1)).await;
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (0, 1));
        assert_eq!(b.requests_at(Instant::now()), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn between_reads_requests_count_in_the_slot_of_the_last_read() {
        let b = budget(1);
        for _ in 0..40 {
            b.deposit_sampled(0);
        }
        assert_eq!(b.sampling(0), (0, 6));
        // A slot later, the 41st request is not due for a read: it counts in slot 0, the safe
        // side (it expires with the others, up to a slot early).
        advance(SLOT).await;
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (0, 6));
        let now = Instant::now();
        assert_eq!(b.requests_at(now), 41);
        assert_eq!(b.requests_at(now + SLOT * 9), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_slot_a_later_one_took_reads_the_clock_at_once() {
        let b = budget(1);
        for _ in 0..40 {
            b.deposit_sampled(0);
        }
        // Ten slots later an exact deposit on the same stripe reuses slot 0 for epoch 10.
        advance(SLOT * 10).await;
        b.deposit_on(0, Instant::now());
        // The next sampled request finds its slot taken: it reads the clock and counts.
        b.deposit_sampled(0);
        assert_eq!(b.sampling(0), (10, 0));
        assert_eq!(b.requests_at(Instant::now()), 2);
    }

    #[test]
    fn a_late_clock_read_leaves_a_later_one_in_place() {
        let t0 = Instant::now();
        let b = RatioBudget::builder()
            .origin(t0)
            .min_per_second(0)
            .ratio(1.0)
            .stripes(1)
            .build()
            .unwrap();
        b.deposit_reading_clock(b.stripe(0), t0 + SLOT * 5);
        assert_eq!(b.sampling(0).0, 5);
        // A thread on the same stripe that read the clock before the other did.
        b.deposit_reading_clock(b.stripe(0), t0 + SLOT * 3);
        assert_eq!(b.sampling(0).0, 5);
        assert_eq!(b.requests_at(t0 + SLOT * 5), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_withdrawal_puts_stripes_of_an_older_slot_back_on_the_clock() {
        let b = budget(2);
        for _ in 0..40 {
            b.deposit_sampled(0);
        }
        assert_eq!((b.sampling(0), b.sampling(1)), ((0, 6), (0, 0)));
        // In the same slot, a withdrawal leaves the sampling as it is.
        assert!(Budget::try_withdraw(&b).is_some());
        assert_eq!((b.sampling(0), b.sampling(1)), ((0, 6), (0, 0)));
        advance(SLOT * 3 + SLOT / 2).await;
        assert!(Budget::try_withdraw(&b).is_some());
        assert_eq!((b.sampling(0), b.sampling(1)), ((3, 0), (3, 0)));
    }

    #[test]
    fn any_stripe_number_lands_on_one_of_the_stripes() {
        let t0 = Instant::now();
        let b = RatioBudget::builder()
            .origin(t0)
            .stripes(2)
            .build()
            .unwrap();
        for stripe in [5, 2, 3, usize::MAX >> 1] {
            b.deposit_on(stripe, t0);
        }
        assert_eq!(window::sum(&b.stripe(1).slots, 0), 3);
        assert_eq!(window::sum(&b.stripe(0).slots, 0), 1);
        assert_eq!(b.requests_at(t0), 4);
    }
}
