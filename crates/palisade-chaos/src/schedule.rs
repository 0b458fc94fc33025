//! When a fault applies ([`Schedule`]) and how long it waits ([`Latency`]).

use std::time::Duration;

use palisade_core::ConfigError;

use crate::rng::Draws;

/// When a fault or a capacity applies, in time since the layer's epoch
/// ([`ChaosLayer::epoch`](crate::ChaosLayer::epoch), by default the instant the layer was built).
///
/// Times before the epoch count as the epoch itself: a schedule that applies at 0
/// ([`Schedule::Always`], a window or a flapping schedule from 0, which starts down) applies
/// for the whole wait before an epoch set in the future, and one that starts later waits for
/// its start after the epoch. To keep a fault away until the epoch, start its window after 0.
///
/// [`build`](crate::ChaosBuilder::build) refuses a schedule that can never apply, naming the
/// field: a window (alone, in a list, or the span of a flapping schedule) must end after it
/// starts, a list of windows must not be empty, and a flapping schedule's `down` and `up` must
/// be longer than zero. To switch a fault off, leave it out, give it a rate of 0, or disable
/// the layer.
///
/// ```
/// use palisade_chaos::Schedule;
/// use std::time::Duration;
///
/// let s = |secs| Duration::from_secs(secs);
/// let outage = Schedule::window(s(10), s(20));
/// assert!(!outage.contains(s(9)));
/// assert!(outage.contains(s(10)));
/// assert!(!outage.contains(s(20)));
///
/// // Down 2 s, up 3 s, from 10 s to 30 s.
/// let flapping = Schedule::flapping(s(10), s(30), s(2), s(3));
/// assert!(flapping.contains(s(11)));
/// assert!(!flapping.contains(s(12)));
/// assert!(flapping.contains(s(15)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// Always (the default).
    #[default]
    Always,
    /// During `[start, end)`; `start` must be before `end`.
    Window {
        /// The first instant covered.
        start: Duration,
        /// The first instant no longer covered.
        end: Duration,
    },
    /// During any of several `[start, end)` windows: at least one, each ending after it
    /// starts. They may overlap and come in any order.
    Windows(Vec<(Duration, Duration)>),
    /// From `start` until `end`, alternately `down` long (the fault applies) then `up` long (it
    /// does not), starting down. `start` must be before `end`; `down` and `up` must be longer
    /// than zero.
    Flapping {
        /// When the first down period begins.
        start: Duration,
        /// When flapping stops (the fault no longer applies from here on).
        end: Duration,
        /// How long each down period lasts.
        down: Duration,
        /// How long each up period lasts.
        up: Duration,
    },
}

impl Schedule {
    /// During `[start, end)`; [`build`](crate::ChaosBuilder::build) refuses a window that does
    /// not end after it starts.
    pub fn window(start: Duration, end: Duration) -> Self {
        Schedule::Window { start, end }
    }

    /// From `start` until `end`, `down` long on, then `up` long off, starting on;
    /// [`build`](crate::ChaosBuilder::build) refuses an empty span or a zero `down` or `up`.
    pub fn flapping(start: Duration, end: Duration, down: Duration, up: Duration) -> Self {
        Schedule::Flapping {
            start,
            end,
            down,
            up,
        }
    }

    /// Whether the schedule covers the instant `since_epoch` after the epoch.
    pub fn contains(&self, since_epoch: Duration) -> bool {
        let t = since_epoch;
        match self {
            Schedule::Always => true,
            Schedule::Window { start, end } => *start <= t && t < *end,
            Schedule::Windows(windows) => windows.iter().any(|(s, e)| *s <= t && t < *e),
            Schedule::Flapping {
                start,
                end,
                down,
                up,
            } => {
                if t < *start || t >= *end {
                    return false;
                }
                let period = down.as_nanos().saturating_add(up.as_nanos());
                if period == 0 {
                    return false;
                }
                (t - *start).as_nanos() % period < down.as_nanos()
            }
        }
    }

    /// Refuses a schedule that can never apply: a fault or capacity on it would silently do
    /// nothing.
    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        const EMPTY: &str = "must be before `end`: an empty window never applies";
        match self {
            Schedule::Always => Ok(()),
            Schedule::Window { start, end } => {
                if start < end {
                    Ok(())
                } else {
                    Err(ConfigError::new(format!("{field}.start"), EMPTY))
                }
            }
            Schedule::Windows(windows) => {
                if windows.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.windows"),
                        "must not be empty: a schedule with no window never applies",
                    ));
                }
                for (i, (start, end)) in windows.iter().enumerate() {
                    if start >= end {
                        return Err(ConfigError::new(
                            format!("{field}.windows[{i}]"),
                            "must end after it starts: an empty window never applies",
                        ));
                    }
                }
                Ok(())
            }
            Schedule::Flapping {
                start,
                end,
                down,
                up,
            } => {
                if start >= end {
                    return Err(ConfigError::new(format!("{field}.start"), EMPTY));
                }
                if down.is_zero() {
                    return Err(ConfigError::new(
                        format!("{field}.down"),
                        "must be greater than zero",
                    ));
                }
                if up.is_zero() {
                    return Err(ConfigError::new(
                        format!("{field}.up"),
                        "must be greater than zero",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Latency added before a call proceeds, or before an injected outcome is returned.
///
/// The wait is a `tokio::time` sleep, whose timer counts whole milliseconds and rounds a
/// deadline up to the next one: a latency below a millisecond waits one, a uniform latency
/// within one millisecond (`10 ms` to `11 ms`) waits its `max`, and a random latency waits
/// about half a millisecond longer than drawn, on average. Give latencies of a few
/// milliseconds or more where their exact spread matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed in `[min, max)` (`min` itself when they are equal).
    Uniform {
        /// The shortest latency.
        min: Duration,
        /// The longest latency.
        max: Duration,
    },
    /// Exponentially distributed with this mean, capped at `max`: mostly short, with a long tail.
    Exponential {
        /// The mean of the uncapped distribution.
        mean: Duration,
        /// The cap.
        max: Duration,
    },
}

impl Latency {
    /// One sample, drawn from `draws` when the latency is random.
    pub(crate) fn sample(&self, draws: &mut Draws<'_>) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::Uniform { min, max } => {
                if min >= max {
                    return *min;
                }
                let span = (*max - *min).as_secs_f64() * draws.unit();
                // Rounded to the nearest nanosecond, the top of the span would reach `max`:
                // kept below it, `[min, max)` as documented (`max` is at least 1 ns here).
                min.saturating_add(Duration::try_from_secs_f64(span).unwrap_or(*max - *min))
                    .min(*max - Duration::from_nanos(1))
            }
            Latency::Exponential { mean, max } => {
                // `unit()` is in [0, 1), so `1 - u` is in (0, 1] and its logarithm is finite.
                let secs = -mean.as_secs_f64() * (1.0 - draws.unit()).ln();
                match Duration::try_from_secs_f64(secs) {
                    Ok(d) => d.min(*max),
                    Err(_) => *max,
                }
            }
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Latency::Uniform { min, max } if min > max => Err(ConfigError::new(
                format!("{field}.min"),
                "must not be greater than max",
            )),
            _ => Ok(()),
        }
    }
}
