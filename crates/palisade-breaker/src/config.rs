//! [`BreakerConfig`]: when the breaker trips, how long it stays open, how it probes.

use std::time::Duration;

use palisade_core::ConfigError;

/// Where a rate is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` outcomes (slides one outcome at a time; 1 to 65536, as every window: each
    /// outcome is a slot the breaker allocates when it is built).
    Count(u32),
    /// The outcomes of the last `span`, in `buckets` fixed buckets.
    Time {
        /// How far back: a whole number of milliseconds per bucket (`span / buckets`), at
        /// least 1.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
        span: Duration,
        /// How many buckets divide it (1 to 65536).
        buckets: u32,
    },
    /// The last `calls` outcomes, judged as a count window; and, where they reach back
    /// further than `within` (calls come slower than `calls` per `within`), the outcomes of
    /// the last `within` alone, when there are at least `min_calls` of them: the rates trip
    /// on either. The default, `Recent { calls: 30, within: 1 s, min_calls: 10 }`.
    ///
    /// A count window reaches back as far as its calls do: 30 calls span 0.3 s at 100 a
    /// second but 3 s at 10, and a dependency down for 2 s (flapping, or a short outage)
    /// never fails 95 % of them, so every call goes to it and every failed request needs a
    /// retry. At 100 a second this window is that count window: its 30 calls are all of the
    /// last second, and a rate still needs its own `min_calls` of them (30 by default), so
    /// a breaker just closed is not re-opened by a few failures in a row while a dependency
    /// recovers. At 10 a second, once its calls reach back past a second, the last second's
    /// 10 decide: the breaker opens when 95 % of them failed. Both Resilience4j and Finagle
    /// offer a count and a time window, each alone; a time window alone would be slow at a
    /// high rate (95 % of a whole second's calls must fail before it opens).
    ///
    /// A success the breaker does not record (while the window holds only successes, it
    /// reads no clock for them) is taken as seen when the next failure comes.
    Recent {
        /// How many outcomes, at most (1 to 65536).
        calls: u32,
        /// How far back the last span reaches (1 ms to 1 h).
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
        within: Duration,
        /// Outcomes the last span needs before a rate can trip on it alone (1 to `calls`).
        min_calls: u32,
    },
}

/// A rate rule: it trips the breaker once at least `min_calls` outcomes are in the window and
/// at least `ratio` of them are failures (or slow calls, for a slow-call rate).
///
/// ```
/// use palisade_breaker::Rate;
///
/// // Half of at least 20 calls.
/// let rate = Rate::new(0.5, 20);
/// assert_eq!((rate.ratio, rate.min_calls), (0.5, 20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct Rate {
    /// The fraction of the window's outcomes that trips it, in `(0, 1]` (0.9 is 90 %).
    pub ratio: f64,
    /// Outcomes the window needs before the rate can trip it (at least 1; at most the window's
    /// size for a count or recent window).
    pub min_calls: u32,
}

impl Rate {
    /// A rule that trips at `ratio` (a fraction in `(0, 1]`) of at least `min_calls` outcomes.
    /// [`BreakerConfig::validate`] checks both.
    pub const fn new(ratio: f64, min_calls: u32) -> Self {
        Rate { ratio, min_calls }
    }
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
/// throttled by its first two failures, and only once the dependency has answered a call
/// since the breaker was made (a close counts: its probes answered). A dependency that has
/// answered nothing, one down when the service starts, is left to the failure rate: a
/// throttle refusing most requests would starve the rate of the outcomes it needs, keep the
/// breaker closed while almost every call is refused locally, and find the recovery only
/// when one request in a hundred got through, seconds later at a few requests a second,
/// where the open breaker probes twice a second. For the same reason, once the throttle's
/// window has held no accepted request for the longest open period (`max_open_duration`,
/// 750 ms by default), as when a dependency fails everything again just after the breaker
/// closed, the breaker opens rather than refuse almost everything.
///
/// Outcomes that do not count against the dependency's health (a rate limit's 429, a
/// caller's own fault, a cancellation) count neither as requests nor as accepts. The SRE
/// book counts a backend's refusal for quota as a non-accept; here a dependency that paces
/// its callers is not failing, the retry layer waits for its hints, and a throttle that
/// counted its 429s would refuse calls locally that its limit would still have admitted (the
/// limit is the dependency's to enforce; `palisade-sim`'s `rate-limit` scenario checks that no
/// request is refused locally).
///
/// The default is `k` = 3 over the last 100 requests (see [`BreakerConfig`]'s *Defaults, and
/// why*).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Throttle {
    /// How many times what the dependency accepts is still sent (at least 1; 2 in the SRE
    /// book; 3 by default).
    pub k: f64,
    /// How many of the latest requests are counted (1 to 65536; 100 by default).
    pub window: u32,
}

impl Throttle {
    /// A throttle that sends `k` times what the dependency accepts over the last `window`
    /// requests. [`BreakerConfig::validate`] checks both.
    pub const fn new(k: f64, window: u32) -> Self {
        Throttle { k, window }
    }
}

impl Default for Throttle {
    /// `k` = 3 over the last 100 requests.
    fn default() -> Self {
        Throttle::new(3.0, 100)
    }
}

/// What a dropped call (the caller's own cancellation, an outer timeout) means for the breaker.
///
/// A call that fails with
/// [`DeadlineExceeded`](palisade_core::failure::DeadlineExceeded) from a layer below is judged
/// the same way: the caller's deadline ended it (palisade-timeout's per-attempt timeout fails a
/// call so when the deadline ends first, in the same timer tick or earlier), as the deadline's
/// drop of the call from above would have.
///
/// A half-open probe that is dropped gives its probe slot back, and is judged by this policy
/// like any other call; one that ran for
/// [`probe_timeout`](crate::BreakerConfig::probe_timeout) or longer is a failure whatever the
/// policy.
///
/// # Panics in the inner service
/// A panic unwinding through a call counts as a drop:
///
/// - **In the call's future** (the inner service's future panicked while polled): the future
///   is dropped as the panic unwinds (a runtime drops the future of a task that panicked),
///   and the call is a cancellation, judged by this policy; a probe gives its slot back.
/// - **In the inner service's `call`**, before it returned a future: the call never started,
///   as for an admission that no call used. A probe gives its slot back and nothing is
///   counted, whatever the policy.
///
/// Either way a panic never holds a probe slot, so it cannot keep the breaker half-open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CancelPolicy {
    /// Nothing: the caller gave up, the dependency did nothing wrong (the default).
    #[default]
    Ignore,
    /// A failure.
    Failure,
    /// A failure when the call had run at least this long: a hung backend under an outer
    /// timeout is still seen, an impatient caller is not blamed on it.
    FailureAfter(
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))] Duration,
    ),
}

/// The default [`BreakerConfig::max_hint`]: 60 s.
pub const DEFAULT_MAX_HINT: Duration = Duration::from_secs(60);

/// The configuration of a breaker.
///
/// # Defaults, and why
///
/// The defaults open the breaker only on a dependency that fails almost everything, shed load
/// in proportion to what a struggling dependency still accepts, and find out quickly when it
/// is back:
///
/// - **A failure rate, not a streak**: at least 95 % of the last 30 calls failed
///   (`failure_rate` over `Window::Recent { calls: 30, within: 1 s, min_calls: 10 }`;
///   `consecutive_failures` is off), so two successes in 30 keep it closed (one in 30 is 97 %
///   failed, at least 95 %: it opens). Where 30 calls
///   reach back further than a second (below 30 requests a second), 95 % of the last
///   second's calls, if there are at least 10, open it too: see [`Window::Recent`]. A dependency that still answers some of its calls (one
///   failing half of them, one whose capacity is coming back) is better served by retries
///   within a budget and by the throttle below than by rejecting everything; a streak of five
///   is common in such a dependency and would re-open the breaker again and again.
///   Resilience4j and Polly trip on a failure rate over a minimum number of calls for the same
///   reason. The rate is high because an open breaker sends a dependency under two probes a
///   second: one whose capacity is coming back after an outage, answering a few calls in a
///   hundred, is better served by the throttle, which keeps sending it a few times what it
///   answers. With 90 %, the requests that waited out the outage came back together as the
///   breaker closed, three answers in 30 tripped it again, and each open period wasted the
///   capacity that had returned: in the simulator's brownout, with a capacity returning to
///   100 calls a second, 92 % of what it could serve was served at two seeds of ten, against
///   at least 95 % with 95 % (`cargo run --release -p palisade-sim -- -s brownout --capacity
///   100 --seed 8`). The rate leaves partial failure to the throttle: a breaker built without
///   one (`throttle: None`) should trip lower, as Resilience4j's default of 50 % does. A count
///   window reads no clock, and while it holds only successes a call writes nothing to it.
/// - **Adaptive throttling while closed** ([`Throttle`], `k` = 3 over the last 100 requests),
///   after the Google SRE book: a dependency that accepts only part of what it is sent keeps
///   getting three times what it accepts, so its returning capacity is used as it returns and
///   the breaker sees about two thirds of failures, not the whole overload, and stays closed.
///   `k` = 2, the book's value, also throttles a dependency that fails half its calls at
///   random; 3 leaves such a dependency to the retry budget.
/// - **A short open period that probes often**: 500 ms, ×1.5 after each failed probe, at most
///   750 ms, ±10 % jitter (712.5 to 750 ms once at the cap), one probe at a time, two successes in a row close it. While open
///   the breaker costs the dependency under two probes a second, and it closes within about
///   three quarters of a second of the dependency's recovery. A long open period (the classic
///   30 s, see [`BreakerConfig::classic`]) turns a 10 s outage into 30 s of failures. A
///   server's hint on the tripping failure lengthens the period, up to a minute (`max_hint`).
/// - **A probe gets a minute** (`probe_timeout`, 60 s): with one probe at a time, a probe that
///   never answers would otherwise keep the breaker half-open, refusing everything, for as
///   long as it hangs. A minute is longer than most calls legitimately take (LLM completions
///   included), so a slow but healthy dependency still closes the breaker; a timeout layer
///   below the breaker, where there is one, usually ends a hung probe sooner.
///
/// `palisade-sim` (`cargo run --release -p palisade-sim`) shows the effect of each choice in
/// its `outage`, `brownout`, `flapping` and `degraded` scenarios.
///
/// # Building one
///
/// The type is `#[non_exhaustive]` (a field may be added without breaking anyone): start from
/// [`BreakerConfig::default`] or [`BreakerConfig::classic`] and change fields, or set them
/// through [`BreakerLayer::builder`](crate::BreakerLayer::builder)'s setters.
///
/// ```
/// use std::time::Duration;
/// use palisade_breaker::{BreakerConfig, Rate};
///
/// let mut config = BreakerConfig::default();
/// config.failure_rate = Some(Rate::new(0.5, 20));
/// config.open_duration = Duration::from_secs(1);
/// config.max_open_duration = Duration::from_secs(10);
/// assert!(config.validate().is_ok());
/// ```
///
/// A rule is turned off with `None` and only with `None` (written `"off"` in a configuration
/// file, with the `serde` feature): a value that would make a rule meaningless (0 failures in
/// a row, a ratio of 0 or above 1, a minimum number of calls larger than the window) is a
/// [`ConfigError`], not a way to switch it off.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open it, at least 1 (`None`, the default, turns the rule
    /// off).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub consecutive_failures: Option<u32>,
    /// The window the rates are measured over (`Window::Recent { calls: 30, within: 1 s,
    /// min_calls: 10 }`: the last 30 calls, and the last second's where those reach back
    /// further).
    pub window: Window,
    /// A failure rate that opens it (`Rate::new(0.95, 30)`: 95 % of at least 30 calls; `None`
    /// turns the rule off).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub failure_rate: Option<Rate>,
    /// Calls that take this long or longer are slow (`None` by default: no clock read per
    /// call). Greater than zero.
    #[cfg_attr(
        feature = "serde",
        serde(with = "palisade_core::serde_duration::option")
    )]
    pub slow_call_duration: Option<Duration>,
    /// A slow-call rate that opens it (`None` by default; needs `slow_call_duration`). With
    /// it, a half-open probe that succeeds but is slow counts as a failed probe (it re-opens
    /// the breaker): the dependency is still too slow.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub slow_call_rate: Option<Rate>,
    /// The first open period (500 ms; at least 1 ms, and at most
    /// [`max_open_duration`](Self::max_open_duration), 750 ms by default). The builders'
    /// [`open_duration`](crate::BreakerBuilder::open_duration) setter, like the `palisade`
    /// facade's configuration file (`palisade::config`) when it sets `open_duration` alone,
    /// raises a `max_open_duration` nobody set to match (the breaker then opens for about that
    /// long each time, within its jitter); one set explicitly, or written in a whole
    /// `BreakerConfig`, is kept and checked. A `BreakerConfig` read on its own with this
    /// crate's `serde` feature has no such rule: a field it leaves out takes its default, so
    /// `open_duration = "5s"` alone fails [`validate`](Self::validate) on
    /// `max_open_duration`, naming it.
    ///
    /// ```
    /// use palisade_breaker::{BreakerConfig, BreakerLayer};
    /// use std::time::Duration;
    ///
    /// // Alone: about 5 s each time it opens (its jitter spreads it by up to 10 %).
    /// assert!(BreakerLayer::builder("llm").open_duration(Duration::from_secs(5)).build().is_ok());
    /// // 5 s, growing by half after each failed probe up to a minute.
    /// let breaker = BreakerLayer::builder("llm")
    ///     .open_duration(Duration::from_secs(5))
    ///     .max_open_duration(Duration::from_secs(60))
    ///     .build();
    /// assert!(breaker.is_ok());
    /// // A cap under the first period is refused, naming the field.
    /// let err = BreakerLayer::builder("llm")
    ///     .open_duration(Duration::from_secs(5))
    ///     .max_open_duration(Duration::from_secs(1))
    ///     .build();
    /// assert_eq!(err.unwrap_err().field(), "max_open_duration");
    /// let mut config = BreakerConfig::default();
    /// config.open_duration = Duration::from_secs(5);
    /// assert_eq!(config.validate().unwrap_err().field(), "max_open_duration");
    /// ```
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub open_duration: Duration,
    /// Each consecutive re-open (a failed probe) multiplies the open period by this (1.5; a
    /// finite number, at least 1).
    pub open_backoff: f64,
    /// The longest open period (750 ms; at least `open_duration`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub max_open_duration: Duration,
    /// The longest a server's hint keeps the breaker open (60 s; `Duration::ZERO` ignores
    /// hints). The failure that trips the breaker may say how long the dependency wants to be
    /// left alone (a 503's `Retry-After`, a gRPC pushback, read by the classifier into
    /// [`Class::retry_after`](palisade_core::Class::retry_after)): the open period is then
    /// at least that long, up to this. A longer hint opens it for this long, and the probe
    /// that follows asks again: one call a minute, by default, rather than none for as long as
    /// a misconfigured proxy's `Retry-After: 86400` says. (palisade-retry waits for hints up
    /// to the same 60 s by default, its `max_retry_after`.)
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub max_hint: Duration,
    /// Spread of the open period, as a fraction of it: ±10 % by default (0.1; within
    /// `0.0..1.0`, 0 for none). Where that spread would reach past `max_open_duration`, capping
    /// the draw would put half of them on the cap itself, and breakers opened together would
    /// probe in the same millisecond: the period is drawn evenly from the upper half of the
    /// range below the cap instead (with the defaults, every re-opening after a failed probe:
    /// 712.5 to 750 ms). For a period grown to the cap that keeps the capped draws' mean; for
    /// one just below the cap the mean is a little higher (about 2 % at 95 % of the cap).
    pub jitter_ratio: f64,
    /// Probes admitted at once while half-open (1; at least 1).
    pub half_open_probes: u32,
    /// Successful probes that close it (2; at least 1): not slow ones, under a slow-call
    /// rate (see [`slow_call_rate`](Self::slow_call_rate)).
    pub success_threshold: u32,
    /// The longest a half-open probe may take (60 s; at least 1 ms). Once every probe slot has
    /// been held this long (from the probe's admission), the next call that finds no slot free
    /// counts the probes as failed and re-opens the breaker, as a failed probe does; a probe
    /// that ends after running this long counts as a failure however it ends (success, error
    /// or drop). It bounds probes even with no timeout layer below the breaker. Set it above
    /// the slowest call the dependency makes when healthy: a probe slower than this never
    /// closes the breaker.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_duration"))]
    pub probe_timeout: Duration,
    /// What a dropped call means (`CancelPolicy::Ignore`).
    pub cancel: CancelPolicy,
    /// Adaptive throttling while closed (`Throttle::default()`: `k` 3, over the last 100
    /// requests; `None` turns it off).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_off"))]
    pub throttle: Option<Throttle>,
    /// The seed of the jitter and of the throttle's draws (`0x0b4e_a4e5`). In a
    /// configuration file any `u64`: one above 9223372036854775807, TOML's largest integer,
    /// is written as a string of digits (`palisade_core::serde_seed`).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::serde_seed"))]
    pub seed: u64,
}

impl Default for BreakerConfig {
    /// The defaults listed on each field; see *Defaults, and why* above.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: None,
            window: Window::Recent {
                calls: 30,
                within: Duration::from_secs(1),
                min_calls: 10,
            },
            failure_rate: Some(Rate::new(0.95, 30)),
            slow_call_duration: None,
            slow_call_rate: None,
            open_duration: Duration::from_millis(500),
            open_backoff: 1.5,
            max_open_duration: Duration::from_millis(750),
            max_hint: DEFAULT_MAX_HINT,
            jitter_ratio: 0.1,
            half_open_probes: 1,
            success_threshold: 2,
            probe_timeout: Duration::from_secs(60),
            cancel: CancelPolicy::Ignore,
            throttle: Some(Throttle::default()),
            seed: 0x0b4e_a4e5,
        }
    }
}

impl BreakerConfig {
    /// The classic breaker of Nygard's *Release It!* and Hystrix-era libraries: 5 consecutive
    /// failures open it for 30 s, doubling after each failed probe up to 5 min; 3 probes,
    /// 3 successes close it; no failure rate, no throttle; a rate rule added to it is measured
    /// over the last 100 calls. The other fields are the defaults.
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

    /// Checks every field against the rule its documentation states.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that breaks its rule (`failure_rate.ratio`,
    /// `throttle.window`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1 (None, \"off\" in a configuration file, turns the rule off)",
            ));
        }
        let window_size = match self.window {
            Window::Count(0) => {
                return Err(ConfigError::new(
                    "window",
                    "a count window must hold at least 1 outcome",
                ));
            }
            // Each outcome is a slot allocated up front: a typo of a few more digits would
            // otherwise allocate gigabytes per breaker.
            Window::Count(n) if n > 65_536 => {
                return Err(ConfigError::new(
                    "window",
                    "a count window holds at most 65536 outcomes",
                ));
            }
            Window::Count(n) => n,
            Window::Recent {
                calls,
                within,
                min_calls,
            } => {
                if calls == 0 || calls > 65_536 {
                    return Err(ConfigError::new(
                        "window.calls",
                        "must be between 1 and 65536",
                    ));
                }
                if within < Duration::from_millis(1) || within > Duration::from_secs(3600) {
                    return Err(ConfigError::new(
                        "window.within",
                        "must be between 1 ms and 1 h",
                    ));
                }
                if min_calls == 0 || min_calls > calls {
                    return Err(ConfigError::new(
                        "window.min_calls",
                        "must be at least 1 and at most window.calls",
                    ));
                }
                calls
            }
            Window::Time { span, buckets } => {
                if buckets == 0 || buckets > 65_536 {
                    return Err(ConfigError::new(
                        "window.buckets",
                        "must be between 1 and 65536",
                    ));
                }
                // A bucket is a whole number of milliseconds wide (the window keys buckets by
                // `now_ms / width`): a span that does not divide into whole milliseconds per
                // bucket would have its width rounded down, and cover less than it says
                // (1999 ms in 1000 buckets, about 1000 ms).
                let per_bucket = u128::from(buckets) * 1_000_000;
                if span.as_nanos() < per_bucket || span.as_nanos() % per_bucket != 0 {
                    return Err(ConfigError::new(
                        "window.span",
                        "must be a whole number of milliseconds per bucket (span / buckets), at least 1",
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
                if !(r.ratio > 0.0 && r.ratio <= 1.0) {
                    return Err(ConfigError::new(
                        format!("{name}.ratio"),
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
        if self.slow_call_duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be greater than zero (None, or no such key in a configuration file, sets no threshold)",
            ));
        }
        if self.slow_call_rate.is_some() && self.slow_call_duration.is_none() {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be set when slow_call_rate is",
            ));
        }
        // The breaker keeps time in whole milliseconds: an open period under one would round
        // to none (`max_open_duration`, at least this, follows).
        if self.open_duration < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "open_duration",
                "must be at least one millisecond",
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
        if !(0.0..1.0).contains(&self.jitter_ratio) {
            return Err(ConfigError::new("jitter_ratio", "must be within 0.0..1.0"));
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

/// The setters of a builder that holds a `config: BreakerConfig`, one per field, each with the
/// field's documented default and rule ([`BreakerConfig::validate`] checks them at `build`).
macro_rules! config_setters {
    () => {
        /// The whole configuration at once (replacing what earlier setters set), taken as
        /// written; the setters below change one field of it.
        pub fn config(mut self, config: $crate::BreakerConfig) -> Self {
            self.config = config;
            self.max_open_set = true;
            self
        }

        /// Changes the configuration in place (several fields at once, or one relative to
        /// another), taken as written.
        pub fn configure(mut self, f: impl FnOnce(&mut $crate::BreakerConfig)) -> Self {
            f(&mut self.config);
            self.max_open_set = true;
            self
        }

        /// The configuration to build with: a `max_open_duration` nobody set is raised to
        /// the first open period (see [`open_duration`](Self::open_duration)).
        fn settled(&self) -> $crate::BreakerConfig {
            let mut config = self.config.clone();
            if !self.max_open_set {
                config.max_open_duration = config.max_open_duration.max(config.open_duration);
            }
            config
        }

        /// Consecutive failures that open the breaker, at least 1; `None` (the default) turns
        /// the rule off. See [`BreakerConfig::consecutive_failures`](crate::BreakerConfig::consecutive_failures).
        pub fn consecutive_failures(mut self, n: impl Into<Option<u32>>) -> Self {
            self.config.consecutive_failures = n.into();
            self
        }

        /// The window the rates are measured over (the last 30 calls, and the last second's
        /// where those reach back further). See
        /// [`BreakerConfig::window`](crate::BreakerConfig::window).
        pub fn window(mut self, window: $crate::Window) -> Self {
            self.config.window = window;
            self
        }

        /// The failure rate that opens the breaker (95 % of at least 30 calls); `None` turns
        /// the rule off. See [`BreakerConfig::failure_rate`](crate::BreakerConfig::failure_rate).
        pub fn failure_rate(mut self, rate: impl Into<Option<$crate::Rate>>) -> Self {
            self.config.failure_rate = rate.into();
            self
        }

        /// Calls this long or longer are slow (`None` by default). See
        /// [`BreakerConfig::slow_call_duration`](crate::BreakerConfig::slow_call_duration).
        pub fn slow_call_duration(mut self, d: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.slow_call_duration = d.into();
            self
        }

        /// The slow-call rate that opens the breaker (`None` by default; needs
        /// `slow_call_duration`). See [`BreakerConfig::slow_call_rate`](crate::BreakerConfig::slow_call_rate).
        pub fn slow_call_rate(mut self, rate: impl Into<Option<$crate::Rate>>) -> Self {
            self.config.slow_call_rate = rate.into();
            self
        }

        /// The first open period (500 ms; at least 1 ms). Unless
        /// [`max_open_duration`](Self::max_open_duration) is set too (or came with
        /// [`config`](Self::config) or [`configure`](Self::configure)), a longer one raises
        /// it to match, so the breaker opens for about this long each time; set it to let the
        /// period grow. See [`BreakerConfig::open_duration`](crate::BreakerConfig::open_duration).
        pub fn open_duration(mut self, d: std::time::Duration) -> Self {
            self.config.open_duration = d;
            self
        }

        /// The open period's growth per failed probe (1.5). See
        /// [`BreakerConfig::open_backoff`](crate::BreakerConfig::open_backoff).
        pub fn open_backoff(mut self, factor: f64) -> Self {
            self.config.open_backoff = factor;
            self
        }

        /// The longest open period (750 ms, or the first open period where that is longer;
        /// at least the first). See
        /// [`BreakerConfig::max_open_duration`](crate::BreakerConfig::max_open_duration).
        pub fn max_open_duration(mut self, d: std::time::Duration) -> Self {
            self.config.max_open_duration = d;
            self.max_open_set = true;
            self
        }

        /// The longest a server's hint keeps the breaker open (60 s). See
        /// [`BreakerConfig::max_hint`](crate::BreakerConfig::max_hint).
        pub fn max_hint(mut self, d: std::time::Duration) -> Self {
            self.config.max_hint = d;
            self
        }

        /// The open period's spread, a fraction of it (0.1: ±10 %). See
        /// [`BreakerConfig::jitter_ratio`](crate::BreakerConfig::jitter_ratio).
        pub fn jitter_ratio(mut self, ratio: f64) -> Self {
            self.config.jitter_ratio = ratio;
            self
        }

        /// Probes admitted at once while half-open (1). See
        /// [`BreakerConfig::half_open_probes`](crate::BreakerConfig::half_open_probes).
        pub fn half_open_probes(mut self, n: u32) -> Self {
            self.config.half_open_probes = n;
            self
        }

        /// Successful probes that close the breaker (2). See
        /// [`BreakerConfig::success_threshold`](crate::BreakerConfig::success_threshold).
        pub fn success_threshold(mut self, n: u32) -> Self {
            self.config.success_threshold = n;
            self
        }

        /// The longest a half-open probe may take (60 s). See
        /// [`BreakerConfig::probe_timeout`](crate::BreakerConfig::probe_timeout).
        pub fn probe_timeout(mut self, d: std::time::Duration) -> Self {
            self.config.probe_timeout = d;
            self
        }

        /// What a dropped call means (`CancelPolicy::Ignore`). See
        /// [`BreakerConfig::cancel`](crate::BreakerConfig::cancel).
        pub fn cancel(mut self, policy: $crate::CancelPolicy) -> Self {
            self.config.cancel = policy;
            self
        }

        /// Adaptive throttling while closed (`Throttle::default()`); `None` turns it off. See
        /// [`BreakerConfig::throttle`](crate::BreakerConfig::throttle).
        pub fn throttle(mut self, throttle: impl Into<Option<$crate::Throttle>>) -> Self {
            self.config.throttle = throttle.into();
            self
        }

        /// The seed of the jitter and of the throttle's draws. See
        /// [`BreakerConfig::seed`](crate::BreakerConfig::seed).
        pub fn seed(mut self, seed: u64) -> Self {
            self.config.seed = seed;
            self
        }
    };
}

pub(crate) use config_setters;

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests {
    use super::*;

    /// The default configuration changed by `f`: `Ok` or the field its error names.
    fn check(f: impl FnOnce(&mut BreakerConfig)) -> Result<(), String> {
        let mut c = BreakerConfig::default();
        f(&mut c);
        c.validate().map_err(|e| e.field().to_owned())
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_defaults_and_the_classic_configuration_are_what_their_docs_say() {
        let d = BreakerConfig::default();
        assert_eq!(d.consecutive_failures, None);
        assert_eq!(
            d.window,
            Window::Recent {
                calls: 30,
                within: Duration::from_secs(1),
                min_calls: 10
            }
        );
        assert_eq!(d.failure_rate, Some(Rate::new(0.95, 30)));
        assert_eq!((d.slow_call_duration, d.slow_call_rate), (None, None));
        assert_eq!(d.open_duration, 500 * MS);
        assert_eq!(d.open_backoff, 1.5);
        assert_eq!(d.max_open_duration, 750 * MS);
        assert_eq!(d.jitter_ratio, 0.1);
        assert_eq!((d.half_open_probes, d.success_threshold), (1, 2));
        assert_eq!(d.probe_timeout, Duration::from_secs(60));
        assert_eq!(d.cancel, CancelPolicy::Ignore);
        assert_eq!(d.throttle, Some(Throttle::new(3.0, 100)));
        assert_eq!(Throttle::default(), Throttle::new(3.0, 100));
        let c = BreakerConfig::classic();
        assert_eq!(c.consecutive_failures, Some(5));
        assert_eq!(c.window, Window::Count(100));
        assert_eq!((c.failure_rate, c.throttle), (None, None));
        assert_eq!(c.open_duration, Duration::from_secs(30));
        assert_eq!(c.open_backoff, 2.0);
        assert_eq!(c.max_open_duration, Duration::from_secs(300));
        assert_eq!((c.half_open_probes, c.success_threshold), (3, 3));
        assert_eq!(
            (c.jitter_ratio, c.probe_timeout, c.seed),
            (d.jitter_ratio, d.probe_timeout, d.seed)
        );
        d.validate().unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn each_limit_is_accepted_and_the_value_just_past_it_is_not() {
        let err = |field: &str| Err(field.to_owned());
        assert_eq!(check(|c| c.consecutive_failures = Some(1)), Ok(()));
        assert_eq!(
            check(|c| c.consecutive_failures = Some(0)),
            err("consecutive_failures")
        );
        // Windows.
        assert_eq!(
            check(|c| {
                c.window = Window::Count(1);
                c.failure_rate = Some(Rate::new(0.5, 1));
            }),
            Ok(())
        );
        assert_eq!(check(|c| c.window = Window::Count(0)), err("window"));
        assert_eq!(check(|c| c.window = Window::Count(65_536)), Ok(()));
        assert_eq!(check(|c| c.window = Window::Count(65_537)), err("window"));
        assert_eq!(check(|c| c.window = Window::Count(u32::MAX)), err("window"));
        let recent = |calls: u32, within: Duration| {
            check(|c| {
                c.window = Window::Recent {
                    calls,
                    within,
                    min_calls: 1,
                };
                c.failure_rate = Some(Rate::new(0.95, 1));
            })
        };
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        assert_eq!(recent(1, ms), Ok(()));
        assert_eq!(recent(65_536, hour), Ok(()));
        assert_eq!(recent(0, ms), err("window.calls"));
        assert_eq!(recent(65_537, ms), err("window.calls"));
        assert_eq!(
            recent(30, ms - Duration::from_nanos(1)),
            err("window.within")
        );
        assert_eq!(recent(30, hour + ms), err("window.within"));
        // min_calls counts against the window's calls, as for a count window.
        assert_eq!(
            check(|c| {
                c.window = Window::Recent {
                    calls: 30,
                    within: hour,
                    min_calls: 10,
                };
                c.failure_rate = Some(Rate::new(0.95, 31));
            }),
            err("failure_rate.min_calls")
        );
        let recent_min = |min_calls: u32| {
            check(|c| {
                c.window = Window::Recent {
                    calls: 30,
                    within: hour,
                    min_calls,
                };
            })
        };
        assert_eq!(recent_min(1), Ok(()));
        assert_eq!(recent_min(30), Ok(()));
        assert_eq!(recent_min(0), err("window.min_calls"));
        assert_eq!(recent_min(31), err("window.min_calls"));
        let time = |span_ms: u64, buckets: u32| {
            check(move |c| {
                c.window = Window::Time {
                    span: Duration::from_millis(span_ms),
                    buckets,
                };
                c.failure_rate = Some(Rate::new(0.5, u32::MAX));
            })
        };
        assert_eq!(time(1, 1), Ok(()));
        assert_eq!(time(65_536, 65_536), Ok(()));
        assert_eq!(time(1_000_000, 65_537), err("window.buckets"));
        assert_eq!(time(1_000, 0), err("window.buckets"));
        assert_eq!(time(9, 10), err("window.span"));
        assert_eq!(time(10, 10), Ok(()));
        // A bucket is whole milliseconds wide: 1999 ms do not divide into 1000 of them.
        assert_eq!(time(1_999, 1_000), err("window.span"));
        assert_eq!(time(2_000, 1_000), Ok(()));
        assert_eq!(
            check(|c| c.window = Window::Time {
                span: Duration::from_micros(10_500),
                buckets: 1,
            }),
            err("window.span")
        );
        // Rates: a ratio in (0, 1], at least one call and no more than a count window holds.
        for (name, set) in [
            (
                "failure_rate",
                (|c: &mut BreakerConfig, r| c.failure_rate = Some(r))
                    as fn(&mut BreakerConfig, Rate),
            ),
            ("slow_call_rate", |c: &mut BreakerConfig, r| {
                c.slow_call_duration = Some(MS);
                c.slow_call_rate = Some(r);
            }),
        ] {
            let rate = |ratio, min_calls| check(|c| set(c, Rate::new(ratio, min_calls)));
            assert_eq!(rate(1.0, 30), Ok(()), "{name}");
            assert_eq!(rate(f64::MIN_POSITIVE, 1), Ok(()), "{name}");
            assert_eq!(rate(0.0, 30), err(&format!("{name}.ratio")));
            assert_eq!(rate(1.0 + f64::EPSILON, 30), err(&format!("{name}.ratio")));
            assert_eq!(rate(f64::NAN, 30), err(&format!("{name}.ratio")));
            assert_eq!(rate(0.5, 0), err(&format!("{name}.min_calls")));
            assert_eq!(rate(0.5, 31), err(&format!("{name}.min_calls")));
        }
        assert_eq!(
            check(|c| c.slow_call_duration = Some(Duration::from_nanos(1))),
            Ok(())
        );
        assert_eq!(
            check(|c| c.slow_call_duration = Some(Duration::ZERO)),
            err("slow_call_duration")
        );
        assert_eq!(
            check(|c| c.slow_call_rate = Some(Rate::new(0.5, 1))),
            err("slow_call_duration")
        );
        // The open period.
        assert_eq!(check(|c| c.open_duration = MS), Ok(()));
        assert_eq!(
            check(|c| c.open_duration = Duration::ZERO),
            err("open_duration")
        );
        assert_eq!(
            check(|c| c.open_duration = MS - Duration::from_nanos(1)),
            err("open_duration")
        );
        assert_eq!(check(|c| c.open_backoff = 1.0), Ok(()));
        assert_eq!(
            check(|c| c.open_backoff = 1.0 - f64::EPSILON),
            err("open_backoff")
        );
        assert_eq!(
            check(|c| c.open_backoff = f64::INFINITY),
            err("open_backoff")
        );
        assert_eq!(check(|c| c.max_open_duration = c.open_duration), Ok(()));
        assert_eq!(
            check(|c| c.max_open_duration = c.open_duration - Duration::from_nanos(1)),
            err("max_open_duration")
        );
        assert_eq!(check(|c| c.jitter_ratio = 0.0), Ok(()));
        assert_eq!(check(|c| c.jitter_ratio = 1.0 - f64::EPSILON), Ok(()));
        assert_eq!(check(|c| c.jitter_ratio = 1.0), err("jitter_ratio"));
        assert_eq!(
            check(|c| c.jitter_ratio = -f64::EPSILON),
            err("jitter_ratio")
        );
        // Probing.
        assert_eq!(check(|c| c.half_open_probes = 1), Ok(()));
        assert_eq!(check(|c| c.half_open_probes = 0), err("half_open_probes"));
        assert_eq!(check(|c| c.success_threshold = 1), Ok(()));
        assert_eq!(check(|c| c.success_threshold = 0), err("success_threshold"));
        assert_eq!(check(|c| c.probe_timeout = MS), Ok(()));
        assert_eq!(
            check(|c| c.probe_timeout = MS - Duration::from_nanos(1)),
            err("probe_timeout")
        );
        // The throttle.
        let throttle = |k, window| check(|c| c.throttle = Some(Throttle::new(k, window)));
        assert_eq!(throttle(1.0, 1), Ok(()));
        assert_eq!(throttle(1.0, 65_536), Ok(()));
        assert_eq!(throttle(1.0 - f64::EPSILON, 100), err("throttle.k"));
        assert_eq!(throttle(f64::INFINITY, 100), err("throttle.k"));
        assert_eq!(throttle(3.0, 0), err("throttle.window"));
        assert_eq!(throttle(3.0, 65_537), err("throttle.window"));
        assert_eq!(check(|c| c.throttle = None), Ok(()));
    }
}

#[cfg(test)]
#[cfg(all(feature = "serde", not(palisade_loom)))]
mod serde_tests {
    use super::*;

    #[test]
    fn reads_a_configuration_file_with_human_durations() {
        let cfg: BreakerConfig = toml::from_str(
            r#"
            consecutive_failures = 5
            window = { time = { span = "60s", buckets = 12 } }
            failure_rate = { ratio = 0.5, min_calls = 20 }
            slow_call_duration = "2s"
            open_duration = "30s"
            max_open_duration = "5m"
            cancel = { failure_after = "250ms" }
            "#,
        )
        .unwrap();
        let want = BreakerConfig {
            consecutive_failures: Some(5),
            window: Window::Time {
                span: Duration::from_secs(60),
                buckets: 12,
            },
            failure_rate: Some(Rate::new(0.5, 20)),
            slow_call_duration: Some(Duration::from_secs(2)),
            open_duration: Duration::from_secs(30),
            max_open_duration: Duration::from_secs(300),
            cancel: CancelPolicy::FailureAfter(Duration::from_millis(250)),
            ..BreakerConfig::default()
        };
        assert_eq!(cfg, want);
        cfg.validate().unwrap();
        // What is not in the file keeps its default; a round trip keeps everything.
        assert_eq!(
            toml::from_str::<BreakerConfig>("").unwrap(),
            BreakerConfig::default()
        );
        let text = toml::to_string(&want).unwrap();
        assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), want);
    }

    #[test]
    fn a_recent_window_reads_from_toml() {
        let cfg: BreakerConfig = toml::from_str(
            r#"
            window = { recent = { calls = 30, within = "1s", min_calls = 10 } }
            failure_rate = { ratio = 0.95, min_calls = 30 }
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.window,
            Window::Recent {
                calls: 30,
                within: Duration::from_secs(1),
                min_calls: 10
            }
        );
        cfg.validate().unwrap();
        let back: BreakerConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_say_where() {
        let err = toml::from_str::<BreakerConfig>("open_durration = \"1s\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `open_durration`"),
            "{err}"
        );
        let err = toml::from_str::<BreakerConfig>("open_duration = \"soon\"").unwrap_err();
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
        let err = toml::from_str::<BreakerConfig>("failure_rate = { ratio = 0.5 }").unwrap_err();
        assert!(
            err.to_string().contains("missing field `min_calls`"),
            "{err}"
        );
    }
}
