//! [`BreakerConfig`]: when the breaker trips, how long it stays open, how it probes.

use std::time::Duration;

use palisade_classify::ConfigError;

/// Where a rate is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` outcomes (slides one outcome at a time).
    Count(u32),
    /// The outcomes of the last `span`, in `buckets` fixed buckets.
    Time {
        /// How far back.
        span: Duration,
        /// How many buckets divide it.
        buckets: u32,
    },
}

/// A rate that trips the breaker once at least `min_calls` outcomes are in the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// The rate that trips it, in `(0, 1]`.
    pub threshold: f64,
    /// Outcomes the window needs before the rate can trip it (at least 1; at most the window's
    /// size for a count window).
    pub min_calls: u32,
}

/// Client-side adaptive throttling, from the Google SRE book (*Handling Overload*): while the
/// breaker is closed, it refuses each request locally with probability
/// `max(0, (requests − k × accepts) / (requests + 1))`, counted over the last `window`
/// requests (refused ones included).
///
/// A dependency that accepts only part of what it is sent (its capacity is returning after an
/// outage, it is overloaded) keeps getting about `k` times what it accepts: enough to use all
/// of its capacity and to notice when it grows, without the rest of the traffic piling onto
/// it. The breaker's trip rule then sees about `1 − 1/k` of failures (50 % with `k` = 2)
/// rather than the dependency's whole overload, and stays closed. A healthy dependency
/// (`accepts` = `requests`) is never throttled, and while the window holds no refusal a call
/// costs the throttle three shared loads and no write. The throttle acts only once its window
/// holds at least a fifth of `window` requests, so a client that sends little is not
/// throttled by its first two failures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// How many times what the dependency accepts is still sent (at least 1; 2 in the SRE
    /// book).
    pub k: f64,
    /// How many of the latest requests are counted (1 to 65536).
    pub window: u32,
}

/// What a dropped call (the caller's own cancellation, an outer timeout) means for the breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CancelPolicy {
    /// Nothing: the caller gave up, the dependency did nothing wrong (the default).
    #[default]
    Ignore,
    /// A failure.
    Failure,
    /// A failure when the call had run at least this long: a hung backend under an outer
    /// timeout is still seen, an impatient caller is not blamed on it.
    FailureAfter(Duration),
}

/// The configuration of a breaker.
///
/// # Defaults, and why
///
/// The defaults open the breaker only on a dependency that fails almost everything, shed load
/// in proportion to what a struggling dependency still accepts, and find out quickly when it
/// is back:
///
/// - **A failure rate, not a streak**: at least 90 % of the last 30 calls failed
///   (`failure_rate`, over `Window::Count(30)`; `consecutive_failures` is off). A dependency
///   that still answers some of its calls (one failing half of them, one whose capacity is
///   coming back) is better served by retries within a budget than by rejecting everything;
///   a streak of five is common in such a dependency and would re-open the breaker again and
///   again. Resilience4j and Polly trip on a failure rate over a minimum number of calls for
///   the same reason. A count window reads no clock, and while it holds only successes a call
///   writes nothing to it.
/// - **Adaptive throttling while closed** ([`Throttle`], `k` = 3 over the last 100 requests),
///   after the Google SRE book: a dependency that accepts only part of what it is sent keeps
///   getting three times what it accepts, so its returning capacity is used as it returns and
///   the breaker sees about two thirds of failures, not the whole overload, and stays closed.
///   `k` = 2, the book's value, also throttles a dependency that fails half its calls at
///   random; 3 leaves such a dependency to the retry budget.
/// - **A short open period that probes often**: 500 ms, ×1.5 after each failed probe, at most
///   750 ms, ±10 % jitter, one probe at a time, two successes in a row close it. While open
///   the breaker costs the dependency under two probes a second, and it closes within about
///   three quarters of a second of the dependency's recovery. A long open period (the classic
///   30 s, see [`BreakerConfig::classic`]) turns a 10 s outage into 30 s of failures.
/// - **A probe gets a minute** (`probe_timeout`, 60 s): with one probe at a time, a probe that
///   never answers would otherwise keep the breaker half-open, refusing everything, for as
///   long as it hangs. A minute is longer than most calls legitimately take (LLM completions
///   included), so a slow but healthy dependency still closes the breaker; a timeout layer
///   below the breaker, where there is one, usually ends a hung probe sooner.
///
/// `palisade-sim` (`cargo run --release -p palisade-sim`) shows the effect of each choice in
/// its `outage`, `brownout`, `flapping` and `degraded` scenarios.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open it (`None`, the default, disables the rule).
    pub consecutive_failures: Option<u32>,
    /// The window the rates are measured over (`Count(30)`).
    pub window: Window,
    /// A failure rate that opens it (90 % of at least 30 calls by default).
    pub failure_rate: Option<Rate>,
    /// Calls slower than this are slow (`None` by default: no clock reads per call).
    pub slow_call_duration: Option<Duration>,
    /// A slow-call rate that opens it (`None` by default; needs `slow_call_duration`).
    pub slow_call_rate: Option<Rate>,
    /// The first open period (500 ms).
    pub open_duration: Duration,
    /// Each consecutive re-open (a failed probe) multiplies the open period by this (1.5).
    pub open_backoff: f64,
    /// The longest open period (750 ms).
    pub max_open_duration: Duration,
    /// Spread of the open period, as a fraction: ±10 % by default (0.1).
    pub jitter: f64,
    /// Probes admitted at once while half-open (1).
    pub half_open_probes: u32,
    /// Successful probes that close it (2).
    pub success_threshold: u32,
    /// The longest a half-open probe may take (60 s). Once every probe slot has been held this
    /// long (from the probe's admission), the next call that finds no slot free counts the
    /// probes as failed and re-opens the breaker, as a failed probe does; a probe that ends
    /// after running this long counts as a failure however it ends (success, error or drop).
    /// It bounds probes even with no timeout layer below the breaker. Set it above the slowest
    /// call the dependency makes when healthy: a probe slower than this never closes the
    /// breaker.
    pub probe_timeout: Duration,
    /// What a dropped call means.
    pub cancel: CancelPolicy,
    /// Adaptive throttling while closed (`k` 3, over the last 100 requests; `None` disables it).
    pub throttle: Option<Throttle>,
    /// The seed of the jitter.
    pub seed: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: None,
            window: Window::Count(30),
            failure_rate: Some(Rate {
                threshold: 0.9,
                min_calls: 30,
            }),
            slow_call_duration: None,
            slow_call_rate: None,
            open_duration: Duration::from_millis(500),
            open_backoff: 1.5,
            max_open_duration: Duration::from_millis(750),
            jitter: 0.1,
            half_open_probes: 1,
            success_threshold: 2,
            probe_timeout: Duration::from_secs(60),
            cancel: CancelPolicy::Ignore,
            throttle: Some(Throttle {
                k: 3.0,
                window: 100,
            }),
            seed: 0x0b4e_a4e5,
        }
    }
}

impl BreakerConfig {
    /// The classic breaker of Nygard's *Release It!* and Hystrix-era libraries: 5 consecutive
    /// failures open it for 30 s, doubling after each failed probe up to 5 min; 3 probes,
    /// 3 successes close it.
    ///
    /// It is not the default because of what it does to a dependency that fails for a while and
    /// comes back: a 10 s outage becomes 30 s of rejections, and a dependency whose capacity
    /// returns gradually re-trips it on every overloaded moment (both measured by `palisade-sim`'s
    /// `outage` and `brownout` scenarios). Use it where a long, fixed back-off is wanted.
    pub fn classic() -> Self {
        BreakerConfig {
            consecutive_failures: Some(5),
            window: Window::Count(100),
            failure_rate: None,
            open_duration: Duration::from_secs(30),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            success_threshold: 3,
            throttle: None,
            ..BreakerConfig::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1 (or None)",
            ));
        }
        let window_size = match self.window {
            Window::Count(0) => {
                return Err(ConfigError::new(
                    "window",
                    "a count window must hold at least 1 outcome",
                ));
            }
            Window::Count(n) => n,
            Window::Time { span, buckets } => {
                if buckets == 0 || buckets > 65_536 {
                    return Err(ConfigError::new(
                        "window.buckets",
                        "must be between 1 and 65536",
                    ));
                }
                if span.as_millis() < u128::from(buckets) {
                    return Err(ConfigError::new(
                        "window.span",
                        "must be at least one millisecond per bucket",
                    ));
                }
                u32::MAX
            }
        };
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if let Some(r) = rate {
                if !(r.threshold > 0.0 && r.threshold <= 1.0) {
                    return Err(ConfigError::new(
                        format!("{name}.threshold"),
                        "must be greater than 0 and at most 1",
                    ));
                }
                if r.min_calls == 0 || r.min_calls > window_size {
                    return Err(ConfigError::new(
                        format!("{name}.min_calls"),
                        "must be at least 1 and at most the window's size",
                    ));
                }
            }
        }
        if self.slow_call_rate.is_some() && self.slow_call_duration.is_none() {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be set when slow_call_rate is",
            ));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::new(
                "open_duration",
                "must be greater than zero",
            ));
        }
        if !(self.open_backoff.is_finite() && self.open_backoff >= 1.0) {
            return Err(ConfigError::new(
                "open_backoff",
                "must be a finite number, at least 1",
            ));
        }
        if self.max_open_duration < self.open_duration {
            return Err(ConfigError::new(
                "max_open_duration",
                "must be at least open_duration",
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::new("jitter", "must be within 0.0..1.0"));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new("half_open_probes", "must be at least 1"));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::new("success_threshold", "must be at least 1"));
        }
        if self.probe_timeout < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "probe_timeout",
                "must be at least one millisecond",
            ));
        }
        if let Some(t) = self.throttle {
            if !(t.k.is_finite() && t.k >= 1.0) {
                return Err(ConfigError::new(
                    "throttle.k",
                    "must be a finite number, at least 1",
                ));
            }
            if t.window == 0 || t.window > 65_536 {
                return Err(ConfigError::new(
                    "throttle.window",
                    "must be between 1 and 65536",
                ));
            }
        }
        Ok(())
    }
}
