//! A fixed system-wide budget: at most N retries per second over a window.

use std::fmt;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::time::Instant;

use super::{Budget, Rebalanced, Withdrawal};
use crate::window::{self, Clock, SLOTS, Take};

/// A fixed system-wide retry budget: at most `per_second` × `window` retries in the window's
/// ten slots (defaults, [`RateCap::new`]: 10 per second over 10 s, so 100 retries per 10 s;
/// other settings through [`RateCap::builder`]).
///
/// It does not depend on the request rate: it caps retry load absolutely, which suits a
/// dependency with a known capacity. A fixed ring of ten slots of `window / 10`; withdrawals are
/// serialised by a compare-and-swap on the current slot (see [`RatioBudget`](super::RatioBudget)
/// for the guarantees at slot boundaries). A retry stops counting when its slot leaves the
/// ring, between 0.9 × `window` and `window` after it was sent: any span of 0.9 × `window`
/// holds at most the limit, while a span of a whole `window` may hold up to twice it (a burst
/// at the end of one slot and another ten slots later).
///
/// # Example
/// ```
/// use palisade_retry::budget::{Budget, RateCap};
/// use std::time::Duration;
///
/// let cap = RateCap::builder()
///     .per_second(1)
///     .window(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert!(cap.try_withdraw().is_some());
/// assert!(cap.try_withdraw().is_some());
/// assert!(cap.try_withdraw().is_none()); // 1 per second over 2 seconds
/// ```
pub struct RateCap {
    clock: Clock,
    window: Duration,
    /// Changed in place by [`RateCap::reconfigure`], with `limit`.
    per_second: AtomicU32,
    limit: AtomicU64,
    retries: [AtomicU64; SLOTS],
}

impl RateCap {
    /// At most 10 retries per second (`per_second`) on average over a sliding window of 10 s
    /// (`window`), so 100 retries per 10 s; the window's time slots are aligned on the current
    /// instant.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults of [`RateCap::new`].
    pub fn builder() -> RateCapBuilder {
        RateCapBuilder {
            per_second: 10,
            window: Duration::from_secs(10),
            origin: None,
        }
    }

    /// Retries allowed per window.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Retries allowed per second, on average over the window.
    pub fn per_second(&self) -> u32 {
        self.per_second.load(Ordering::Relaxed)
    }

    /// Changes `per_second` in place, keeping the retries counted in the window: the balance
    /// is the new limit minus them. `f` gets a builder holding the current settings and
    /// returns the new ones; nothing changes if one is refused. One `tracing` event (target
    /// `palisade_retry`, `retry budget reconfigured`) gives the balance before and after.
    ///
    /// The window cannot change in place (the counts are kept in slots of `window / 10`):
    /// build a new cap for another window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_retry::budget::{Budget, RateCap};
    ///
    /// let cap = RateCap::builder().per_second(1).window(Duration::from_secs(4)).build().unwrap();
    /// assert!(cap.try_withdraw().is_some());
    /// let done = cap.reconfigure(|b| b.per_second(2)).unwrap();
    /// assert_eq!((done.balance_before, done.balance_after), (3, 7));
    /// assert_eq!(cap.reconfigure(|b| b.window(Duration::from_secs(8))).unwrap_err().field(), "window");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: `window` or `origin` when `f` changes them.
    pub fn reconfigure(
        &self,
        f: impl FnOnce(RateCapBuilder) -> RateCapBuilder,
    ) -> Result<Rebalanced, ConfigError> {
        let next = f(RateCapBuilder {
            per_second: self.per_second(),
            window: self.window,
            origin: None,
        });
        let limit = next.check()?;
        if next.window != self.window {
            return Err(ConfigError::new(
                "window",
                "cannot change on a live cap (its counts are kept in slots of window / 10): build a new one",
            ));
        }
        if next.origin.is_some() {
            return Err(ConfigError::new(
                "origin",
                "cannot change on a live cap: build a new one",
            ));
        }
        let now = Instant::now();
        let before = self.balance_at(now);
        self.limit.store(limit, Ordering::Relaxed);
        self.per_second.store(next.per_second, Ordering::Relaxed);
        let done = Rebalanced {
            balance_before: before,
            balance_after: self.balance_at(now),
            clamped: None,
        };
        done.announce("rate_cap");
        Ok(done)
    }

    /// Asks for one retry at `now`.
    pub fn try_withdraw_at(&self, now: Instant) -> Option<Withdrawal> {
        let limit = self.limit();
        match window::try_take(&self.retries, self.clock.epoch(now), |_| limit) {
            Take::Taken(epoch) => Some(Withdrawal::new(epoch as u64)),
            Take::Refused => None,
        }
    }

    /// Gives back a withdrawal whose retry was never sent.
    pub fn refund_withdrawal(&self, withdrawal: Withdrawal) {
        let epoch = withdrawal.tag() as u32;
        window::sub_one(&self.retries[epoch as usize % SLOTS], epoch);
    }

    /// Retries counted in the window ending at `now`.
    pub fn retries_at(&self, now: Instant) -> u64 {
        window::sum(&self.retries, self.clock.epoch(now))
    }

    /// Retries still allowed at `now`.
    pub fn balance_at(&self, now: Instant) -> i64 {
        self.limit() as i64 - self.retries_at(now) as i64
    }
}

impl Default for RateCap {
    /// [`RateCap::new`]: 10 retries per second over 10 seconds.
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`RateCap`]; made by [`RateCap::builder`], every setting starts at the default of
/// [`RateCap::new`]. [`build`](RateCapBuilder::build) checks them all.
#[derive(Clone, Debug)]
pub struct RateCapBuilder {
    per_second: u32,
    window: Duration,
    origin: Option<Instant>,
}

impl RateCapBuilder {
    /// Retries allowed per second, on average over the window (10 by default; 0 allows
    /// none).
    pub fn per_second(mut self, per_second: u32) -> Self {
        self.per_second = per_second;
        self
    }

    /// The sliding window (1 second to 1 hour; 10 s by default): `⌊per_second × window⌋`
    /// retries per window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Aligns the window's time slots on `origin` rather than on the instant
    /// [`build`](Self::build) runs.
    pub fn origin(mut self, origin: Instant) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Checks the settings and builds the budget.
    ///
    /// # Errors
    /// A [`ConfigError`] for `window` outside 1 second to 1 hour.
    pub fn build(self) -> Result<RateCap, ConfigError> {
        let limit = self.check()?;
        let window = self.window;
        Ok(RateCap {
            clock: Clock::new(self.origin.unwrap_or_else(Instant::now), window),
            window,
            per_second: AtomicU32::new(self.per_second),
            limit: AtomicU64::new(limit),
            retries: window::ring(),
        })
    }
}

impl RateCapBuilder {
    /// Checks the settings: the retries allowed per window.
    fn check(&self) -> Result<u64, ConfigError> {
        let window = self.window;
        if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "window",
                "must be between 1 second and 1 hour",
            ));
        }
        Ok((self.per_second as u128 * window.as_millis() / 1000) as u64)
    }
}

impl fmt::Debug for RateCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateCap")
            .field("per_second", &self.per_second())
            .field("window", &self.window)
            .field("balance", &self.balance_at(Instant::now()))
            .finish()
    }
}

impl Budget for RateCap {
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

impl tower::retry::budget::Budget for RateCap {
    /// Does nothing: the cap does not depend on the request rate.
    fn deposit(&self) {}

    fn withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now()).is_some()
    }
}
