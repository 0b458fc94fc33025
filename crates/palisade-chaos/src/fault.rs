//! What to inject: an [`Effect`], applied by a [`Fault`] to a share of the calls or by a
//! [`Capacity`] to the calls beyond it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Class, ConfigError};

use crate::bucket::Rate;
use crate::{Latency, Schedule};

/// What a fault does to a call.
pub enum Effect<Res> {
    /// Fails the call with an [`Injected`](crate::error::Injected) error of this class, without
    /// calling the inner service. [`class_of`](palisade_core::class_of) reads the class.
    Fail(Class),
    /// Answers with a response built for each call (an HTTP 429 with a hint, a 503, ...),
    /// without calling the inner service.
    Respond(Arc<dyn Fn() -> Res + Send + Sync>),
    /// Adds latency, then lets the inner service answer.
    Delay(Latency),
    /// Never answers: the call stays pending until the caller drops it (for example when an
    /// outer timeout fires). The inner service is not called, unless
    /// [`ChaosHandle::disable`](crate::ChaosHandle::disable) ends the hang: then the call is
    /// passed to it.
    Hang,
}

impl<Res> Effect<Res> {
    /// [`Effect::Respond`] with the response `f` builds for each call.
    pub fn respond(f: impl Fn() -> Res + Send + Sync + 'static) -> Self {
        Effect::Respond(Arc::new(f))
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Effect::Delay(latency) => latency.validate(&format!("{field}.latency")),
            _ => Ok(()),
        }
    }
}

impl<Res> Clone for Effect<Res> {
    fn clone(&self) -> Self {
        match self {
            Effect::Fail(class) => Effect::Fail(*class),
            Effect::Respond(f) => Effect::Respond(f.clone()),
            Effect::Delay(latency) => Effect::Delay(latency.clone()),
            Effect::Hang => Effect::Hang,
        }
    }
}

impl<Res> fmt::Debug for Effect<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Fail(class) => f.debug_tuple("Fail").field(class).finish(),
            Effect::Respond(_) => f.write_str("Respond(..)"),
            Effect::Delay(latency) => f.debug_tuple("Delay").field(latency).finish(),
            Effect::Hang => f.write_str("Hang"),
        }
    }
}

/// One fault: an [`Effect`] applied to a `rate` share of the calls its [`Schedule`] covers.
///
/// Every constructor starts at rate 1 (every call) and [`Schedule::Always`].
///
/// ```
/// use palisade_chaos::{Fault, Latency, Schedule};
/// use palisade_core::{Category, Class};
/// use std::time::Duration;
///
/// // A quarter of the calls between 10 s and 20 s fail with a 5xx, after 200 ms.
/// let outage: Fault<()> = Fault::fail(Class::new(Category::ServerError))
///     .rate(0.25)
///     .during(Schedule::window(Duration::from_secs(10), Duration::from_secs(20)))
///     .after(Latency::Fixed(Duration::from_millis(200)));
/// ```
pub struct Fault<Res> {
    pub(crate) effect: Effect<Res>,
    pub(crate) rate: f64,
    pub(crate) schedule: Schedule,
    pub(crate) after: Option<Latency>,
}

impl<Res> Fault<Res> {
    /// A fault with `effect`, on every call, always.
    pub fn new(effect: Effect<Res>) -> Self {
        Fault {
            effect,
            rate: 1.0,
            schedule: Schedule::Always,
            after: None,
        }
    }

    /// Fails calls with an [`Injected`](crate::error::Injected) error of `class`.
    pub fn fail(class: Class) -> Self {
        Fault::new(Effect::Fail(class))
    }

    /// Answers calls with the response `f` builds, without calling the inner service.
    pub fn respond(f: impl Fn() -> Res + Send + Sync + 'static) -> Self {
        Fault::new(Effect::respond(f))
    }

    /// Adds `latency` before calls proceed.
    pub fn delay(latency: Latency) -> Self {
        Fault::new(Effect::Delay(latency))
    }

    /// Makes calls hang: they never answer, until the caller drops them or the layer is
    /// disabled.
    pub fn hang() -> Self {
        Fault::new(Effect::Hang)
    }

    /// The share of covered calls the fault hits, in `0..=1` (checked by
    /// [`build`](crate::ChaosBuilder::build)).
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// When the fault applies.
    pub fn during(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// For a failure or a response: waits this long before answering (a slow failure). Only
    /// [`Effect::Fail`] and [`Effect::Respond`] take it; [`build`](crate::ChaosBuilder::build)
    /// refuses it on the others. If the layer is disabled during the wait, the call is passed
    /// to the inner service instead.
    pub fn after(mut self, latency: Latency) -> Self {
        self.after = Some(latency);
        self
    }

    /// The fault's effect.
    pub fn effect(&self) -> &Effect<Res> {
        &self.effect
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(ConfigError::new(
                format!("{field}.rate"),
                "must be a number in 0..=1",
            ));
        }
        self.effect.validate(field)?;
        self.schedule.validate(&format!("{field}.schedule"))?;
        if let Some(after) = &self.after {
            if !matches!(self.effect, Effect::Fail(_) | Effect::Respond(_)) {
                return Err(ConfigError::new(
                    format!("{field}.after"),
                    "applies only to failures and responses",
                ));
            }
            after.validate(&format!("{field}.after"))?;
        }
        Ok(())
    }
}

impl<Res> Clone for Fault<Res> {
    fn clone(&self) -> Self {
        Fault {
            effect: self.effect.clone(),
            rate: self.rate,
            schedule: self.schedule.clone(),
            after: self.after.clone(),
        }
    }
}

impl<Res> fmt::Debug for Fault<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("effect", &self.effect)
            .field("rate", &self.rate)
            .field("schedule", &self.schedule)
            .field("after", &self.after)
            .finish()
    }
}

/// A capacity: how many calls per second the dependency admits. Calls beyond it get the `over`
/// effect, typically [`Effect::Fail`] with a `RateLimited` class and a retry hint, or a
/// `ServerError` / `ResourceExhausted` class for an overloaded server.
///
/// Admission is a token bucket refilled continuously at the current rate; it starts full. By
/// default the bucket holds a tenth of a second of calls (rounded up, at least 1 while the rate is
/// above zero); [`burst`](Capacity::burst) sets it. A call refused by the capacity takes no
/// token of it. With several capacities, each is asked in turn, as limits in series are: a
/// call one admits has taken its token even if a later one refuses it, or a fault then fails
/// it. Every clone of the layer and its services shares the bucket.
///
/// ```
/// use palisade_chaos::{Capacity, Effect};
/// use palisade_core::{Category, Class};
/// use std::time::Duration;
///
/// let throttled = Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(1));
/// // 100 calls/s; beyond that, a 429-like failure.
/// let limit: Capacity<()> = Capacity::fixed(100.0, Effect::Fail(throttled));
/// // Recovering: 10 calls/s at 30 s, rising to 100 calls/s at 60 s.
/// let recovery: Capacity<()> = Capacity::ramp(
///     10.0,
///     100.0,
///     Duration::from_secs(30),
///     Duration::from_secs(30),
///     Effect::Fail(Class::new(Category::ResourceExhausted)),
/// );
/// ```
pub struct Capacity<Res> {
    pub(crate) rate: Rate,
    pub(crate) over: Effect<Res>,
    pub(crate) schedule: Schedule,
    pub(crate) burst: Option<f64>,
}

impl<Res> Capacity<Res> {
    /// A fixed capacity of `per_second` calls per second.
    pub fn fixed(per_second: f64, over: Effect<Res>) -> Self {
        Capacity {
            rate: Rate::Fixed(per_second),
            over,
            schedule: Schedule::Always,
            burst: None,
        }
    }

    /// A capacity of `from` calls per second before `start` (since the epoch), rising linearly
    /// to `to` over `[start, start + ramp)`, and `to` afterwards.
    pub fn ramp(from: f64, to: f64, start: Duration, ramp: Duration, over: Effect<Res>) -> Self {
        Capacity {
            rate: Rate::Ramp {
                from,
                to,
                start,
                ramp,
            },
            over,
            schedule: Schedule::Always,
            burst: None,
        }
    }

    /// When the capacity applies (default: always); outside the schedule calls are unlimited.
    pub fn during(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// How many calls the bucket holds: the largest burst admitted at once after a quiet
    /// period. At least 1 (checked by [`build`](crate::ChaosBuilder::build)). While the rate
    /// is zero (a ramp's `from` of 0 before it starts, say) the bucket holds nothing, whatever
    /// the burst: a capacity of 0 calls a second admits no call.
    pub fn burst(mut self, n: f64) -> Self {
        self.burst = Some(n);
        self
    }

    /// The calls per second admitted at `since_epoch`.
    pub fn rate_at(&self, since_epoch: Duration) -> f64 {
        self.rate.at(since_epoch)
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let rate = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::new(
                    format!("{field}.{name}"),
                    "must be a finite, non-negative number of calls per second",
                ))
            }
        };
        match self.rate {
            Rate::Fixed(per_second) => rate("per_second", per_second)?,
            Rate::Ramp { from, to, .. } => {
                rate("from", from)?;
                rate("to", to)?;
            }
        }
        if let Some(burst) = self.burst
            && !(burst.is_finite() && burst >= 1.0)
        {
            return Err(ConfigError::new(
                format!("{field}.burst"),
                "must be a finite number of at least 1",
            ));
        }
        self.over.validate(&format!("{field}.over"))?;
        self.schedule.validate(&format!("{field}.schedule"))
    }
}

impl<Res> Clone for Capacity<Res> {
    fn clone(&self) -> Self {
        Capacity {
            rate: self.rate,
            over: self.over.clone(),
            schedule: self.schedule.clone(),
            burst: self.burst,
        }
    }
}

impl<Res> fmt::Debug for Capacity<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capacity")
            .field("rate", &self.rate)
            .field("over", &self.over)
            .field("schedule", &self.schedule)
            .field("burst", &self.burst)
            .finish()
    }
}
